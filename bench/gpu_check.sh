#!/usr/bin/env bash
# GPU checks in one short run, for a CUDA machine with torch + transformers already installed and no
# network (e.g. a lent accelerator): the `gpu`-marked tests (every hashing method trains on CUDA,
# memory banks follow the device, CUDA extraction matches the CPU, DP-SGD heads train on CUDA and
# account like the CPU). Packages the machine lacks (opacus) can be carried in .carry/ (git-ignored).
#   OUT=/tmp/gpu bash bench/gpu_check.sh        # results land in $OUT
#   FULL=1 ...                                  # also the extraction and training-grid benchmarks
set -uo pipefail
OUT=${OUT:-/tmp/hashaudit-gpu}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD:$PWD/.carry HF_HUB_OFFLINE=1 HASHAUDIT_TRACKING=0 \
  MLFLOW_DISABLE_TELEMETRY=true DVC_NO_ANALYTICS=1
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  nproc
  $PY -c "import torch, transformers, numpy; print('torch', torch.__version__, '| transformers', transformers.__version__, '| numpy', numpy.__version__)"
  $PY -c "import opacus; print('opacus', opacus.__version__)"
} 2>&1 | tee "$OUT/machine.txt"
timeout 200 $PY -m pytest -q -p no:cacheprovider -m gpu -o addopts="" \
  tests/hashers/test_gpu.py tests/privacy/test_gpu_dp.py tests/pipeline/test_backbones.py \
  tests/pipeline/test_extract.py tests/test_cuda_paths.py 2>&1 | tee "$OUT/gpu-tests.log"
[[ -n ${FULL:-} ]] || exit 0
timeout 90 $PY bench/bench_extract.py --arch base --device cuda --n 2048 --batch-size 256 \
  --repeats 2 2>&1 | tee "$OUT/extract-gpu.md"
GRID=(--device cuda --n 90000 --dim 768 --classes 9 --test-queries 1000
  --methods dsh cnnh dpsh dhn hashnet dsdh dnnh dshgan tcl csq)
timeout 150 $PY bench/bench_train.py "${GRID[@]}" --bits 48 --out "$OUT/train-gpu-48.md" \
  2>&1 | tail -5
