#!/usr/bin/env bash
# bench_recipe.py on a lent GPU machine (python3.12 image with torch/lightning; the other
# dependencies carried as cp312 wheels in .whl/): every variant x seed side by side, one
# process each on the one GPU. Usage (from the repository root there):
#   bash bench/device/recipe_gpu.sh OUT_DIR [bench_recipe options]
# .whl/ (ignored through .git/info/exclude, carried to the machine) holds cp312 manylinux
# wheels, fetched here with `python3 -m pip download --no-deps --only-binary=:all:
# --python-version 3.12 --platform manylinux_2_28_x86_64 ...`, of what the image lacks:
# cyclopts docstring-parser rich-rst monai tomli-w zarr numcodecs donfig google-crc32c crc32c
# jsonschema jsonschema-specifications referencing rpds-py brotli chardet zstandard dill
# pysocks kimimaro connected-components-3d dijkstra3d edt fastremap fill-voids osteoid xs3d
# pathos multiprocess pox ppft crackle-codec posix-ipc (the versions of uv.lock).
set -uo pipefail
out=$1; shift
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:packages/pytc-core/src:packages/pytc-train/src:packages/pytc-infer/src:packages/pytc-decode/src:packages/pytc-eval/src
export PYTHONUNBUFFERED=1
nproc; nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import pytc_train.train, pytc_eval, pytc_decode, pytc_infer, kimimaro, monai, cyclopts, zarr; print('imports ok')" || exit 1
python3 bench/bench_recipe.py --accelerator gpu --out /tmp/recipe_runs "$@" 2>&1 | tee "$out/recipe.log"
