#!/usr/bin/env bash
# GRPO and RLOO training steps: TRL 1.16 vs rlhfkit on the same workload
# (see benchmarks/online_bench.py for the workload, timing and memory method).
#
#   bash benchmarks/run_online_bench.sh
#   ROUNDS=3 REPEATS=2 bash benchmarks/run_online_bench.sh
#   ALGOS=grpo SHAPES=large bash benchmarks/run_online_bench.sh
#   THREADS=1 bash benchmarks/run_online_bench.sh   # one thread: CPU s/step is the work done (busy machine)
#   LOGGING_STEPS=1 bash benchmarks/run_online_bench.sh   # log (and score the sampling log-probs) every step
#   TRL_GC=off bash benchmarks/run_online_bench.sh   # TRL only with gradient checkpointing off
#
# 1. sets up benchmarks/.trl116-env if needed (setup_trl116_env.sh),
# 2. per algorithm (grpo, rloo) and shape (small: vocabulary 4096, large: 50257), ROUNDS (default 2)
#    rounds of: rlhfkit, TRL 1.16 with gradient checkpointing off (the same computation as rlhfkit,
#    whose default is off: the equal-work comparison), then TRL 1.16 with its default (checkpointing
#    on: defaults against defaults), each in its own process: interleaved, so a machine that gets
#    busier or quieter affects every side alike (TRL_GC="off default" by default),
# 3. prints one table with every round's numbers and the ratios (TRL / rlhfkit: > 1 means rlhfkit is
#    faster / smaller). Results (JSON + the table) go to benchmarks/results/ (gitignored).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${VENV:-.venv}/bin/python"
TRL_PY="benchmarks/.trl116-env/bin/python"
OUT=benchmarks/results
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
bash benchmarks/setup_trl116_env.sh || exit 1
common=(--threads "${THREADS:-2}" --logging-steps "${LOGGING_STEPS:-10}" --repeats "${REPEATS:-1}" --k1 "${K1:-2}" --k2 "${K2:-6}" --wait-max "${WAIT_MAX:-120}")
files=()
status=0
for algo in ${ALGOS:-grpo rloo}; do
  for shape in ${SHAPES:-small large}; do
    for round in $(seq 1 "${ROUNDS:-2}"); do
      for impl in rlhfkit $(for gc in ${TRL_GC:-off default}; do echo "trl-gc-$gc"; done); do
        py="$PY"; extra=(--impl rlhfkit)
        if [[ "$impl" == trl-gc-* ]]; then py="$TRL_PY"; extra=(--impl trl --gradient-checkpointing "${impl#trl-gc-}"); fi
        out="$OUT/online_${algo}_${shape}_${impl}_${round}${TAG:-}.json"
        echo "== $algo $shape $impl round $round"
        if "$py" benchmarks/online_bench.py --algo "$algo" --shape "$shape" "${extra[@]}" \
             "${common[@]}" --out "$out" 2>&1 | grep -E '^\[online_bench\]|^\{"impl"|Error|error'; then
          [[ -f "$out" ]] && files+=("$out") || status=1
        else
          echo "!! $algo $shape $impl failed"; status=1
        fi
      done
    done
  done
done
"$PY" benchmarks/online_bench.py --summarise "${files[@]}" | tee "$OUT/online_summary.txt"
exit $status
