#!/usr/bin/env bash
# The GPU benchmark for a single-GPU machine (H100/H200 class) with JAX but no TensorFlow and
# no network. Wheels of the pure-Python packages it lacks lie in .whl/ beside the project
# (keras, namex, optree, and this project's other pure-Python needs); fetch them on a
# machine with network access:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl keras==3.15.1 namex optree
# Then, on the GPU machine, from the project root:  bash benchmarks/gpu.sh
# It prints the engine benchmark JSON (benchmarks/run.py on JAX) and the MNIST CNN
# connectivity JSON, and writes both to ${OUT:-gpu-results}/.
set -euo pipefail
cd "$(dirname "$0")/.."
results="${OUT:-gpu-results}"
mkdir -p "$results"
site=/tmp/klandscape-site
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" .whl/*.whl
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile \
    --target "$site" .
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" KERAS_BACKEND=jax PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$results/gpu.txt" || true
python3 benchmarks/run.py --backend jax --out "$results/bench_jax_gpu.json"
data="${MNIST:-../shared/data/mnist.npz}"
[ -f "$data" ] || data=shared/data/mnist.npz
python3 benchmarks/mnist_connectivity.py --data "npz:$data" --epochs 3 --out "$results/mnist" \
    | tee "$results/mnist_connectivity.json"
