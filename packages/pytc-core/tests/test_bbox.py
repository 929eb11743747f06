"""parse_bbox: the one parser behind every --bbox flag and bbox key."""

from __future__ import annotations

import numpy as np
import pytest

from pytc_core import BBox, UserError
from pytc_core.bbox import parse_bbox


def test_text_and_sequences():
    assert parse_bbox("175,0,0,250,250,250") == BBox((175, 0, 0), (250, 250, 250))
    assert parse_bbox(" -4, 0,2 ,5,6,7,", "--val-bbox") == BBox((-4, 0, 2), (5, 6, 7))
    assert parse_bbox([0, 1, 2, 3, 4, 5]) == BBox((0, 1, 2), (3, 4, 5))
    assert parse_bbox(np.array([0, 1, 2, 3, 4, 5])) == BBox((0, 1, 2), (3, 4, 5))


@pytest.mark.parametrize(("value", "flag", "what", "fix"), [
    ("1,2,3", "--bbox", "bad --bbox '1,2,3'", "e.g. --bbox 0,0,0,175,250,250"),
    ("0,0,0,a,1,1", "--bbox", "bad --bbox '0,0,0,a,1,1'", "z0,y0,x0,z1,y1,x1"),
    ([0, 0, 0, 1.5, 1, 1], "data.bbox", "bad data.bbox '[0, 0, 0, 1.5, 1, 1]'",
     "e.g. [0, 0, 0, 175, 250, 250]"),
    ("5,0,0,5,8,8", "--bbox", "--bbox [5, 0, 0, 5, 8, 8] is empty or malformed",
     "each stop above its start"),
    ([0, 9, 0, 1, 8, 1], "data.val_bbox", "data.val_bbox [0, 9, 0, 1, 8, 1] is empty or "
     "malformed", "each stop above its start"),
])
def test_errors_name_the_flag(value, flag, what, fix):
    with pytest.raises(UserError) as info:
        parse_bbox(value, flag)
    assert info.value.what == what and fix in (info.value.fix or "")
