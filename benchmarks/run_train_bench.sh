#!/usr/bin/env bash
# SFT and reward-model training steps: TRL 1.16 vs rlhfkit on the same workload
# (see benchmarks/train_bench.py for the workload, timing and memory method).
#
#   bash benchmarks/run_train_bench.sh
#   REPEATS=2 K2=9 bash benchmarks/run_train_bench.sh
#   SKIP_TRL=1 bash benchmarks/run_train_bench.sh   # reuse benchmarks/results/train_trl_*.json
#   TRL_BF16=1 bash benchmarks/run_train_bench.sh   # also TRL with bf16=True (autocast)
#   TRL_NOGC=0 bash benchmarks/run_train_bench.sh   # skip the extra TRL run with gradient checkpointing off
#   TASKS=sft bash benchmarks/run_train_bench.sh
#   TASKS=dpo bash benchmarks/run_train_bench.sh    # DPO: shorter defaults (K1=2, K2=6, 2 repeats; TRL is slow)
#
# 1. sets up benchmarks/.trl116-env if needed (setup_trl116_env.sh),
# 2. per task (sft, reward, dpo), sequentially: TRL 1.16 fp32 with its defaults (gradient
#    checkpointing ON, TRL's default), TRL 1.16 fp32 with gradient checkpointing off,
#    rlhfkit fp32 and rlhfkit bf16 (${VENV:-.venv}); each run first waits (up to WAIT_MAX s)
#    for the 1-minute load average to fall below WAIT_LOAD; DPO adds TRL and rlhfkit with
#    precompute_ref_log_probs=True (reference scored once, then dropped),
# 3. prints one table per task, TRL (defaults) first, with ratios TRL time / other time and
#    TRL memory / other memory (> 1: the other is faster / smaller).
# Results (JSON + the tables) go to benchmarks/results/ (gitignored).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${VENV:-.venv}"
PY="$VENV/bin/python"
TRL_PY="benchmarks/.trl116-env/bin/python"
OUT=benchmarks/results
TASKS="${TASKS:-sft reward dpo}"
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
set_common() {  # task
  if [[ "$1" == dpo ]]; then
    common=(--k1 "${K1:-2}" --k2 "${K2:-6}" --repeats "${REPEATS:-2}")
  else
    common=(--k1 "${K1:-3}" --k2 "${K2:-13}" --repeats "${REPEATS:-3}")
  fi
  common+=(--wait-load "${WAIT_LOAD:-0.5}" --wait-max "${WAIT_MAX:-300}")
}

if [[ "${SKIP_TRL:-0}" != 1 ]]; then
  bash benchmarks/setup_trl116_env.sh || exit 1
fi

status=0
bench() {  # name python args...
  local name="$1" py="$2"; shift 2
  echo "== $name"
  if "$py" benchmarks/train_bench.py "$@" "${common[@]}" --out "$OUT/train_$name.json"; then
    files+=("$OUT/train_$name.json")
  else
    echo "!! $name failed (see above)"; status=1
  fi
}

for task in $TASKS; do
  files=()
  set_common "$task"
  if [[ "${SKIP_TRL:-0}" != 1 ]]; then
    bench "trl_${task}_fp32" "$TRL_PY" --impl trl --task "$task" --dtype fp32
    if [[ "${TRL_NOGC:-1}" == 1 ]]; then
      bench "trl_${task}_fp32_nogc" "$TRL_PY" --impl trl --task "$task" --dtype fp32 --gradient-checkpointing off
    fi
    if [[ "${TRL_BF16:-0}" == 1 ]]; then
      bench "trl_${task}_bf16" "$TRL_PY" --impl trl --task "$task" --dtype bf16
    fi
    if [[ "$task" == dpo ]]; then
      bench "trl_dpo_fp32_precomp" "$TRL_PY" --impl trl --task dpo --dtype fp32 --precompute-ref
    fi
  else
    for f in "$OUT/train_trl_${task}_fp32.json" "$OUT/train_trl_${task}_fp32_nogc.json" "$OUT/train_trl_${task}_bf16.json" \
             "$OUT/train_trl_${task}_fp32_precomp.json"; do
      [[ -f "$f" ]] && files+=("$f")
    done
  fi
  for dtype in fp32 bf16; do
    bench "rlhfkit_${task}_${dtype}" "$PY" --impl rlhfkit --task "$task" --dtype "$dtype"
  done
  if [[ "$task" == dpo ]]; then
    bench "rlhfkit_dpo_fp32_precomp" "$PY" --impl rlhfkit --task dpo --dtype fp32 --precompute-ref
  fi
  echo
  if (( ${#files[@]} )); then
    "$PY" benchmarks/train_bench.py --summarise "${files[@]}" | tee "$OUT/train_summary_$task.txt"
  fi
  echo
done
exit $status
