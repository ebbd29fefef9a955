#!/usr/bin/env bash
# GPU check of issue 13 / 16, prepared for a lent GPU machine (one GPU, 16 CPU cores), < 8 min end to end:
#   1. pretraining throughput of all 7 methods, resnet50, 256x256, batch 64, AMP (bench/throughput.py);
#   2. the same in fp32, for the AMP speed-up;
#   3. inference of the `nuclei` default on a 1000x1000 field (bench/inference.py, when present).
# The device image has its own python3 with torch/torchvision/lightning/scikit-image; sslzoo's other needs
# (segmentation-models-pytorch, albumentations, ...) travel as wheels in .whl (see /work/.library/device/README.md:
# `pip download --no-deps --only-binary=:all: --python-version 3.12 ... -d .whl NAME==VERSION` here, `carry: [.whl]`).
# Run from the repository root:   bash bench/gpu.sh [OUT_DIR]
set -uo pipefail
out=${1:-${OUT:-runs/gpu}}
mkdir -p "$out"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD || exit 1
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1 NO_ALBUMENTATIONS_UPDATE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$out/gpu.txt"
timeout 200 python3 bench/throughput.py --device cuda --amp --backbone resnet50 --size 256 --batch-size 64 \
  --steps 10 --warmup 3 | tee "$out/throughput_amp.md"
timeout 150 python3 bench/throughput.py --device cuda --backbone resnet50 --size 256 --batch-size 64 \
  --steps 5 --warmup 2 | tee "$out/throughput_fp32.md"
if [ -f bench/inference.py ]; then
  timeout 90 python3 bench/inference.py --help >/dev/null 2>&1 && \
    timeout 90 python3 bench/inference.py --device cuda 2>&1 | tee "$out/inference.txt"
fi
echo "results in $out"
