"""Measures ``pytc-eval view`` (issue 26): time from the command to the printed URL, peak
memory serving a 512³ HDF5 volume, and time to the first drawn frame in chromium.

Run: ``uv run python bench/bench_view.py [--size 512] [--browser]`` (``--browser`` needs
``tests/browser/install-browser.sh`` and a display: ``xvfb-run -a uv run python
bench/bench_view.py --browser``; ``--screenshot docs/view.png`` saves that frame).

- URL: the real command in a subprocess, from its start to its one stdout line, and within
  it the time after the imports (``start_view`` alone, measured in this process).
- Memory: a child process opens the volume, starts the viewer and answers the chunk
  requests a browser makes for one 2D cross-section at full resolution plus a 3D ring of
  64³ chunks (over HTTP, Neuroglancer's npz endpoint); its peak RSS is compared with the
  volume's size.
- Frame: selenium + chromium, from loading the page to Neuroglancer's screenshot of the
  fully loaded view (the bundled FlyEM volume, an errors table from pytc-eval on it).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PYTC_EVAL = str(Path(sys.executable).parent / "pytc-eval")


def make_h5(path: Path, size: int) -> str:
    import h5py

    with h5py.File(path, "w") as f:
        ds = f.create_dataset("raw", (size, size, size), np.uint8, chunks=(64, 64, 64))
        for z in range(0, size, 64):
            ds[z:z + 64] = (np.arange(size, dtype=np.uint16)[None, None, :] + z) % 251
    return f"{path}:raw"


def time_to_url(uri: str) -> tuple[float, float]:
    """(seconds from starting the command to its URL line, seconds of start_view alone)."""
    start = time.perf_counter()
    proc = subprocess.Popen([PYTC_EVAL, "view", uri], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    url = proc.stdout.readline()
    command = time.perf_counter() - start
    proc.terminate()
    proc.communicate(timeout=30)
    assert url.startswith("http://127.0.0.1:"), url
    import neuroglancer

    from pytc_eval.view import start_view

    start = time.perf_counter()
    start_view([uri])
    after_imports = time.perf_counter() - start
    neuroglancer.stop()
    return command, after_imports


def child_memory(uri: str) -> None:
    """In a child: serve ``uri``, fetch what a browser fetches, print peak RSS (bytes)."""
    from pytc_eval.view import start_view

    view = start_view([uri])
    name = next(iter(view.viewer.state.layers)).name
    source = view.viewer.state.layers[name].source[0].url
    key = source.rstrip("/").rsplit("/", 1)[1]
    base = view.url.split("/v/")[0]
    shape = view.layers[0].volume.shape  # type: ignore[union-attr]
    n = 0
    z = shape[0] // 2
    for y in range(0, shape[1], 64):  # the xy cross-section through the centre
        for x in range(0, shape[2], 64):
            url = f"{base}/neuroglancer/npz/{key}/1,1,1/{z},{y},{x}/{z + 1},{y + 64},{x + 64}"
            urllib.request.urlopen(url, timeout=60).read()
            n += 1
    c = shape[1] // 2
    for dz in (-64, 0, 64):  # 3D chunks around the centre
        for dy in (-64, 0):
            zz, yy = z + dz, c + dy
            url = (f"{base}/neuroglancer/npz/{key}/1,1,1/{zz},{yy},{c}/"
                   f"{zz + 64},{yy + 64},{c + 64}")
            urllib.request.urlopen(url, timeout=60).read()
            n += 1
    from pytc_core.memory import peak_rss_bytes

    print(json.dumps({"requests": n, "peak_rss": peak_rss_bytes()}))


def first_frame(screenshot: str | None) -> float:
    """Seconds from loading the page to Neuroglancer's fully loaded screenshot."""
    import concurrent.futures

    import neuroglancer
    from selenium import webdriver

    from pytc_eval.cli import app  # noqa: F401 - the same imports as the command
    from pytc_eval.eval import EvalConfig, run_eval
    from pytc_eval.view import start_view

    data = ROOT / "examples" / "data" / "flyem_medulla_250.h5"
    tmp = Path(tempfile.mkdtemp())
    from pytc_core import create_volume, open_volume
    from pytc_core.bbox import BBox

    box = BBox((200, 0, 0), (225, 250, 250))
    gt = open_volume(f"{data}:labels").read(box)
    seg = gt.astype(np.uint32)
    values, counts = np.unique(gt[gt > 0], return_counts=True)
    ids = [int(i) for i in values[np.argsort(-counts)]]  # largest first
    seg[seg == ids[1]] = ids[0]  # one merge
    seg[(seg == ids[2]) & (np.arange(250)[None, None, :] > 125)] = 10**6  # one split
    vol = create_volume(str(tmp / "seg"), seg.shape, seg.dtype, offset=box.start,
                        voxel_size=open_volume(f"{data}:labels").voxel_size,
                        layer_type="segmentation")
    vol.write(seg)
    errors = tmp / "errors.csv"
    run_eval([str(tmp / "seg")], f"{data}:labels", EvalConfig(skeletons="kimimaro",
                                                              bbox=(*box.start, *box.stop)),
             errors=str(errors), raw=f"{data}:raw")
    from pytc_eval.view import read_errors_csv

    sites = read_errors_csv(str(errors))  # show the error nearest the centre of the section
    k = min(sites, key=lambda s: abs(s.zyx[1] - 125) + abs(s.zyx[2] - 125)).row
    view = start_view([str(tmp / "seg")], raw=f"{data}:raw", gt=f"{data}:labels",
                      errors=str(errors), error=k, layout="xy")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--no-sandbox", "--disable-dev-shm-usage", "--window-size=1000,800",
                "--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options,
                              service=webdriver.ChromeService("/usr/bin/chromedriver"))
    try:
        start = time.perf_counter()
        driver.get(view.url)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            reply = pool.submit(view.viewer.screenshot, [720, 540]).result(timeout=120)
        seconds = time.perf_counter() - start
        if screenshot:
            from PIL import Image

            Image.fromarray(reply.screenshot.image_pixels).convert("RGB").save(
                screenshot, optimize=True)
    finally:
        driver.quit()
        neuroglancer.stop()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--browser", action="store_true")
    parser.add_argument("--browser-only", action="store_true", help="skip URL and memory")
    parser.add_argument("--screenshot", default=None)
    parser.add_argument("--child-memory", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_memory:
        child_memory(args.child_memory)
        return
    if args.browser_only:
        print(f"time to the first drawn frame in chromium: {first_frame(args.screenshot):.2f} s")
        return
    with tempfile.TemporaryDirectory() as tmp:
        uri = make_h5(Path(tmp) / "big.h5", args.size)
        command, after = time_to_url(uri)
        print(f"time to the URL: {command:.2f} s for the command, {after:.2f} s after imports")
        out = subprocess.run([sys.executable, __file__, "--child-memory", uri],
                             capture_output=True, text=True, check=True)
        mem = json.loads(out.stdout.strip().splitlines()[-1])
        volume = args.size ** 3
        print(f"peak memory serving a {args.size}^3 uint8 HDF5 volume ({volume / 2**20:.0f} "
              f"MiB), {mem['requests']} chunk requests: {mem['peak_rss'] / 2**20:.0f} MiB "
              f"RSS (the whole process)")
    if args.browser:
        print(f"time to the first drawn frame in chromium: {first_frame(args.screenshot):.2f} s")


if __name__ == "__main__":
    main()
