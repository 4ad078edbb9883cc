#!/usr/bin/env bash
# The GPU checks, in one go, on a machine with one CUDA GPU (under 8 minutes on an H100-class
# GPU): the GPU tests (fp16 and bf16 training), the accelerate configs that fit one GPU, then
# training throughput of ResNet-50 and ViT-B/16, medft end to end against the model alone.
# Run from the repository root, in the environment of `pip install -e ".[dev]"`.
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

echo "== GPU tests (fp16 / bf16 training) and the single-GPU accelerate config"
python -m pytest -q -p no:cacheprovider tests/test_training.py \
    -k "mixed_precision or accelerate_configs"
work=$(mktemp -d)
python -m medft.cli synthesize brain-tumor-44c "$work/raw" --per-class 6 --image-size 64 >/dev/null
python -m medft.cli prepare brain-tumor-44c --source "$work/raw" --output "$work/data" >/dev/null
accelerate launch --config_file accelerate_configs/single_gpu.yaml src/finetune.py \
    tests/fixtures/tiny_timm.yaml --dataset_name "$work/data" --output_dir "$work/single_gpu" \
    --bf16 true | tail -n 4

echo "== Training throughput: medft end to end against the model alone"
python benchmarks/gpu_throughput.py --device cuda "$@"
