"""pytc-eval view in a real browser (issue 26): Debian's chromium driven by selenium under
``xvfb-run`` (headless Chrome's software WebGL is unreliable, as Neuroglancer's own suite
notes). Run: ``tests/browser/install-browser.sh && xvfb-run -a uv run pytest -m browser``.

The page is the printed URL; the check reads pixels of Neuroglancer's own screenshot (taken
once every visible chunk is loaded): the first error's annotation colour at the centre, the
segmentation drawn around it, and the view moved after pressing ``n``.
"""

import concurrent.futures
import os
import shutil
import time

import numpy as np
import pytest

from pytc_core import create_volume
from pytc_eval.view import ERROR_COLORS, start_view

pytestmark = pytest.mark.browser

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SIZE = (480, 480)


def _require_browser():
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
    if missing or shutil.which("xvfb-run") is None:
        pytest.fail(f"the browser tests need chromium, chromium-driver and xvfb "
                    f"(missing: {', '.join(missing) or 'xvfb-run'}): run "
                    "tests/browser/install-browser.sh, then xvfb-run -a uv run pytest -m browser")
    if not os.environ.get("DISPLAY"):
        pytest.fail("no X display: run the browser tests under xvfb-run -a "
                    "(xvfb-run -a uv run pytest -m browser)")


@pytest.fixture
def driver():
    _require_browser()
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--no-sandbox", "--disable-dev-shm-usage", "--window-size=900,700",
                "--disable-gpu-sandbox", "--use-gl=angle", "--use-angle=swiftshader",
                "--enable-unsafe-swiftshader", "--no-first-run"):
        options.add_argument(arg)
    drv = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    yield drv
    drv.quit()


@pytest.fixture(autouse=True)
def stop_server():
    yield
    import neuroglancer

    neuroglancer.stop()


OFFSET = (10, 16, 8)  # z, y, x voxels: a layer placed without it would show shifted


def write(uri, array, **kw):
    vol = create_volume(str(uri), array.shape, array.dtype, voxel_size=(8, 8, 8),
                        offset=OFFSET, **kw)
    vol.write(array)
    return str(uri)


def scene(tmp_path, fmt):
    """A 20 x 96 x 96 volume at OFFSET: segment 1 left of global x=48, 2 right of it; the
    errors at global (20, 64, 30) (merge, on segment 1) and (25, 40, 70) (split)."""
    seg = np.ones((20, 96, 96), np.uint32)
    seg[:, :, 48 - OFFSET[2]:] = 2
    raw = (np.indices((20, 96, 96)).sum(0) % 200).astype(np.uint8)
    uri = {"h5": "seg.h5:seg", "precomputed": "seg", "zarr": "seg.zarr"}[fmt]
    kw = {"layer_type": "segmentation"} if fmt == "precomputed" else {}
    if fmt == "zarr":
        kw = {"chunk_size": (8, 32, 32)}
    seg_uri = write(tmp_path / uri, seg, **kw)
    raw_uri = write(tmp_path / "raw.npy", raw)
    errors = tmp_path / "errors.csv"
    errors.write_text(
        "segmentation,kind,segments,skeletons,edges,length_nm,z,y,x,view,neuroglancer\n"
        f"{seg_uri},merge,1,1;2,3,24.0,20,64,30,,\n"
        f"{seg_uri},split,1;2,2,1,8.0,25,40,70,,\n")
    return seg_uri, raw_uri, str(errors)


def screenshot(viewer, timeout=60.0):
    """Neuroglancer's screenshot once all visible data is loaded (RGBA pixels)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        reply = pool.submit(viewer.screenshot, list(SIZE)).result(timeout=timeout)
    return reply.screenshot.image_pixels


def near(pixels, color, tol=40):
    rgb = np.array([int(color[i:i + 2], 16) for i in (1, 3, 5)])
    return np.all(np.abs(pixels[..., :3].astype(int) - rgb) <= tol, axis=-1)


def open_page(driver, url, viewer, tries=3):
    """Load the page, retrying a flaky first load; returns the first frame's pixels and the
    seconds from loading the page to that frame."""
    last = None
    for _ in range(tries):
        start = time.perf_counter()
        driver.get(url)
        try:
            pixels = screenshot(viewer)
            return pixels, time.perf_counter() - start
        except concurrent.futures.TimeoutError as exc:
            last = exc
    raise AssertionError(f"the viewer page did not draw after {tries} loads: {last!r}")


@pytest.mark.parametrize("fmt", ["h5", "precomputed", "zarr"])
def test_first_error_drawn_and_stepping_moves_the_view(tmp_path, driver, fmt):
    """h5: read lazily by LocalVolume; precomputed (gzip chunks) and OME-Zarr (an explicit
    transform): served as files and decoded by the browser."""
    seg, raw, errors = scene(tmp_path, fmt)
    lines = []
    view = start_view([seg], raw=raw, errors=errors, layout="xy", announce=lines.append)
    pixels, seconds = open_page(driver, view.url, view.viewer)
    print(f"time to the first drawn frame: {seconds:.2f} s")
    if os.environ.get("PYTC_VIEW_SCREENSHOT"):
        from PIL import Image

        Image.fromarray(pixels).save(os.environ["PYTC_VIEW_SCREENSHOT"].replace(".png",
                                                                               f"_{fmt}.png"))
    h, w = pixels.shape[:2]
    centre = pixels[h // 2 - 4: h // 2 + 5, w // 2 - 4: w // 2 + 5]
    assert near(centre, ERROR_COLORS["merge"]).sum() >= 20, centre[..., :3].reshape(-1, 3)[:10]
    # the segmentation is drawn where pytc places it: segment 1 (selected) colours global
    # x 8..48, the centre is x=30 (2 pixels a voxel); right of x=48 only the grey raw shows
    left = pixels[h // 2 + 15: h // 2 + 60, w // 2 - 40: w // 2 - 10, :3].astype(int)
    right = pixels[h // 2 + 15: h // 2 + 60, w // 2 + 45: w // 2 + 110, :3].astype(int)
    spread = lambda p: np.abs(p - p.mean(-1, keepdims=True)).mean()  # noqa: E731 - colour vs grey
    assert spread(left) > 10 and spread(right) < 3, (spread(left), spread(right))
    assert lines[-1].startswith("error 1 (2 in all): merge")

    from selenium.webdriver.common.action_chains import ActionChains

    for _ in range(3):  # a key press lost while the page takes focus is retried
        ActionChains(driver).move_to_element(
            driver.find_element("css selector", ".neuroglancer-rendered-data-panel")
        ).click().send_keys("n").perform()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and view.current != 1:
            time.sleep(0.1)
        if view.current == 1:
            break
    assert view.current == 1 and lines[-1].startswith("error 2 (2 in all): split")
    assert view.viewer.state.position.tolist() == [70.5, 40.5, 25.5]
    moved = screenshot(view.viewer)
    centre = moved[h // 2 - 4: h // 2 + 5, w // 2 - 4: w // 2 + 5]
    assert near(centre, ERROR_COLORS["split"]).sum() >= 20
    assert not np.array_equal(moved, pixels)


def test_missing_browser_fails_with_the_install_hint(monkeypatch):
    monkeypatch.setattr(f"{__name__}.CHROMIUM", "/nonexistent/chromium")
    with pytest.raises(pytest.fail.Exception, match="tests/browser/install-browser.sh"):
        _require_browser()


