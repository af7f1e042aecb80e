#!/usr/bin/env bash
# Classic-PPO benchmark: TRL 0.11.4 vs rlhfkit on the same workload (see ppo_bench.py).
#
#   bash benchmarks/run_ppo_bench.sh            # or: make bench
#   ITERS=5 WARMUP=1 bash benchmarks/run_ppo_bench.sh
#   SKIP_TRL=1 bash benchmarks/run_ppo_bench.sh  # reuse benchmarks/results/trl_fp32.json
#   TRL_BF16=1 bash benchmarks/run_ppo_bench.sh  # also TRL with accelerate's bf16 autocast
#
# 1. sets up benchmarks/.trl-env if needed (setup_trl_env.sh),
# 2. measures the matmul peak once (matmul_peak.py -> results/peak.json),
# 3. runs ppo_bench.py sequentially: TRL fp32 (TRL env), rlhfkit fp32 and bf16 (${VENV:-.venv}),
# 4. prints a side-by-side table with ratios (TRL time / rlhfkit time, TRL memory / rlhfkit memory).
# Results (JSON + the table) go to benchmarks/results/ (gitignored).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${VENV:-.venv}"
PY="$VENV/bin/python"
TRL_PY="benchmarks/.trl-env/bin/python"
OUT=benchmarks/results
ITERS="${ITERS:-3}"
WARMUP="${WARMUP:-1}"
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

if [[ "${SKIP_TRL:-0}" != 1 ]]; then
  bash benchmarks/setup_trl_env.sh
fi

echo "== matmul peak"
"$PY" benchmarks/matmul_peak.py --out "$OUT/peak.json" >/dev/null
"$PY" -c "import json; r=json.load(open('$OUT/peak.json')); print('peak GFLOP/s', {k: round(v) for k, v in r['peak_gflops'].items()})"

common=(--iters "$ITERS" --warmup "$WARMUP" --peak "$OUT/peak.json")
files=()
if [[ "${SKIP_TRL:-0}" != 1 ]]; then
  echo "== TRL 0.11.4 fp32"
  "$TRL_PY" benchmarks/ppo_bench.py --impl trl --dtype fp32 --out "$OUT/trl_fp32.json" "${common[@]}"
fi
[[ -f "$OUT/trl_fp32.json" ]] && files+=("$OUT/trl_fp32.json")
if [[ "${TRL_BF16:-0}" == 1 ]]; then
  echo "== TRL 0.11.4 bf16 (accelerator_kwargs mixed_precision)"
  "$TRL_PY" benchmarks/ppo_bench.py --impl trl --dtype bf16 --out "$OUT/trl_bf16.json" "${common[@]}" \
    && files+=("$OUT/trl_bf16.json")
fi

status=0
for dtype in fp32 bf16; do
  echo "== rlhfkit $dtype"
  if "$PY" benchmarks/ppo_bench.py --impl rlhfkit --dtype "$dtype" --out "$OUT/rlhfkit_$dtype.json" "${common[@]}"; then
    files+=("$OUT/rlhfkit_$dtype.json")
  else
    echo "!! rlhfkit $dtype run failed (see above)"; status=1
  fi
done

echo
"$PY" benchmarks/ppo_bench.py --summarise "${files[@]}" | tee "$OUT/summary.txt"
exit $status
