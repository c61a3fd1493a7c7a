#!/usr/bin/env bash
# Every GPU figure of issue #8 in one run, on one H100 or H200 (the short parts first: on 2026-12-04
# the training table alone took more than 9 minutes of an H200 and the parts after it never ran):
#   bash bench/gpu.sh [LOG_DIR]        (LOG_DIR: default $OUT, else gpu-logs)
# The training table and targets, where epoch 1's extra time goes, the GPU-only tests, then CUDA
# latency at batch 1. Each log is written as it runs, so a run cut short keeps what it measured.
set -uo pipefail
logs=${1:-${OUT:-gpu-logs}}
mkdir -p "$logs" && logs=$(cd "$logs" && pwd)
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$logs/gpu.txt"
python -m pytest -q -p no:cacheprovider tests/test_graph.py 2>&1 | tee "$logs/test_graph.txt"
python bench/latency.py --device cuda --resolutions 224 2>&1 | tee "$logs/latency.txt"
python bench/first_epoch.py 2>&1 | tee "$logs/first_epoch.txt"
python bench/train_gpu.py 2>&1 | tee "$logs/train_gpu.txt"
