"""A stand-in for ``pytc-infer`` in pytc-launch's Slurm tests (until the real one lands).

``--input RAW --output OUT [--blocks i/n]``: writes ``sigmoid(raw / 64 - 2)`` in three
channels, block by block (16³ blocks of one ``plan_blocks`` plan; ``--blocks i/n`` takes
task i's share through core's ``select_share``), into OUT (created if missing, reopened
when it exists). Prints OUT.
"""

import argparse

import numpy as np

from pytc_core import BBox, create_volume, open_volume, plan_blocks, select_share

p = argparse.ArgumentParser()
p.add_argument("--input", required=True)
p.add_argument("--output", "-o", required=True)
p.add_argument("--blocks", default=None)
a = p.parse_args()
raw = open_volume(a.input)
shape = raw.shape[-3:]
out = create_volume(a.output, (3, *shape), np.float32, chunk_size=(16, 16, 16), exist_ok=True)
blocks = plan_blocks(BBox((0, 0, 0), shape), 16)
for block in select_share(blocks, a.blocks) if a.blocks else blocks:
    data = raw.read(block).astype(np.float32)
    aff = 1.0 / (1.0 + np.exp(-(data / 64.0 - 2.0)))
    out.write(np.stack([aff, aff * 0.5, aff * 0.25]), block.start)
print(a.output)
