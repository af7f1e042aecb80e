#!/usr/bin/env bash
# The GPU checks in one go, for a machine with a CUDA GPU (written on a CPU-only machine:
# the CUDA and vLLM paths are UNTESTED ON HARDWARE until this script has been run and its output recorded).
#
#   bash benchmarks/gpu_check.sh              # ~5-8 min on one H100/H200-class GPU
#   SIZES="gpt2" SKIP_VLLM=1 bash benchmarks/gpu_check.sh
#
# Needs a Python environment with CUDA torch and rlhfkit's dependencies (VENV, default .venv); vLLM is
# optional (pip install vllm; the vLLM parts report "skipped" without it). Nothing is downloaded:
# every model is random-init from a config.
# 1. the device: nvidia-smi, torch.cuda;
# 2. tests: tests/trainers/test_ppo_cuda.py (fp32 and bf16 PPO on the GPU, fp32 GPU == CPU) and
#    tests/rollout/test_vllm.py and tests/rollout/test_sampling.py (the fake-engine glue for PPO,
#    GRPO and RLOO; with vLLM installed also the import check);
# 3. timings (benchmarks/gpu_bench.py -> benchmarks/results/gpu.json): HF generate in bf16 against the
#    weight-read bound, vLLM generate + one weight sync, one PPO iteration fp32 vs bf16, for a
#    GPT-2-size and a 0.5B-size model.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${VENV:-.venv}/bin/python"
OUT=benchmarks/results
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
status=0

echo "== device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "!! nvidia-smi failed"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available()); assert torch.cuda.is_available()" || { echo "!! no CUDA in $PY"; exit 1; }
"$PY" -c "import vllm; print('vllm', vllm.__version__)" 2>/dev/null || echo "vllm: not installed (its timings will be skipped)"

echo "== tests"
SERVICES=0 "$PY" -m pytest -q -p no:cacheprovider -rs tests/trainers/test_ppo_cuda.py tests/rollout/test_vllm.py \
  tests/rollout/test_sampling.py \
  tests/models/test_fused_attention.py || status=1

echo "== timings"
sizes=(${SIZES:-gpt2 0.5b})
extra=()
[[ "${SKIP_VLLM:-0}" == 1 ]] && extra+=(--skip-vllm)
(cd benchmarks && "../$PY" gpu_bench.py --sizes "${sizes[@]}" "${extra[@]}" --out "results/gpu.json") || status=1
echo "results: $OUT/gpu.json"
exit $status
