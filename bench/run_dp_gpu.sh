#!/usr/bin/env bash
# bench_dp.py on a lent GPU in one short run: four processes side by side (one GPU, 16 cores).
# Needs opacus and the MedMNIST files under .carry/ (copied there, git-ignored):
#   .carry/opacus (site-packages copy), .carry/medmnist/{breastmnist,retinamnist}.npz
set -uo pipefail
OUT=${OUT:-/tmp/dp-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD:$PWD/.carry HASHAUDIT_TRACKING=0 OMP_NUM_THREADS=4
LIMIT=${LIMIT:-500}
B=(python3 bench/bench_dp.py --root .carry/medmnist --device cuda)
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT/audit.log"
python3 -c "import torch, opacus; print('torch', torch.__version__, 'opacus', opacus.__version__)" >> "$OUT/audit.log" 2>&1
timeout "$LIMIT" "${B[@]}" --datasets breastmnist --sections dp --bits 12 --out "$OUT/dp-breastmnist.md" > "$OUT/dp-breastmnist.log" 2>&1 &
timeout "$LIMIT" "${B[@]}" --datasets retinamnist --sections dp --bits 12 --out "$OUT/dp-retinamnist.md" > "$OUT/dp-retinamnist.log" 2>&1 &
timeout "$LIMIT" "${B[@]}" --datasets breastmnist retinamnist --sections audit --out "$OUT/audit.md" >> "$OUT/audit.log" 2>&1 &
timeout "$LIMIT" "${B[@]}" --datasets breastmnist retinamnist --sections ldp kanon --bits 12 48 --out "$OUT/release.md" > "$OUT/release.log" 2>&1 &
wait
