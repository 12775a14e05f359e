#!/bin/bash
# The checks that need a GPU, for a lent CUDA machine (no network there; PyTorch, ONNX Runtime, pytest preinstalled).
# Before calling it, here: mkdir -p .whl && pip download --no-deps -d .whl torch-pruning==1.6.1 (py3-none-any),
# with /.whl/ in .git/info/exclude; then run it there with `.whl` carried. Logs go to $OUT (or /tmp/device-check).
set -o pipefail
OUT=${OUT:-/tmp/device-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target /tmp/site .whl/*.whl . \
    ./plugins/torch ./plugins/tensorrt > "$OUT/install.log" 2>&1 || { tail -20 "$OUT/install.log"; exit 1; }
export PYTHONPATH=/tmp/site
nvidia-smi -L
python3 -c "import torch, onnxruntime; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'ort', onnxruntime.__version__)"

# 1. The CUDA tests (skipped on CPU machines): supernet on a GPU, extraction, resume, torchrun backends;
#    the torch runtime's CUDA-event timing; TensorRT's tests skip or state its absence.
TESTS=${*:-tests/test_cuda.py tests/test_runtime_plugins.py tests/test_export_tensorrt.py}
timeout 330 python3 -m pytest -q -rA -p no:cacheprovider $TESTS 2>&1 | tee "$OUT/pytest.log" | grep -E "PASSED|FAILED|ERROR|SKIPPED|passed|failed|Error" | head -60

# 2. compress end to end with latency measured on the GPU (torch runtime, CUDA events); a large batch, since
#    at batch 64 this model is launch-bound on an H100 (its floor measured 0.886x of the original).
timeout 140 python3 -m slimdeploy compress slimdeploy.models:cifar_resnet20 --input-shape 512,3,32,32 --data digits \
    --latency 0.7x --runtime torch --runtime-option device=cuda --samples 8 \
    --out /tmp/compress-cuda > "$OUT/compress.log" 2>&1
echo "compress on cuda: exit $?"; tail -25 "$OUT/compress.log"
cp /tmp/compress-cuda/report.json "$OUT/compress-report.json" 2>/dev/null
exit 0
