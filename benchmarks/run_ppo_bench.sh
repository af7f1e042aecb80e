#!/usr/bin/env bash
# Classic-PPO benchmark: TRL 0.11.4 vs rlhfkit on the same workload (see ppo_bench.py), one command.
#
#   bash benchmarks/run_ppo_bench.sh            # or: make bench
#   REPEATS=3 ITERS=3 bash benchmarks/run_ppo_bench.sh
#   VOCABS="4096" DTYPES="bf16" bash benchmarks/run_ppo_bench.sh
#   THREADS=1 bash benchmarks/run_ppo_bench.sh  # one thread: less sensitive to other processes
#
# Runtime on the 2-core development machine, defaults (REPEATS=2, ITERS=3,
# WARMUP=1, both vocabularies, fp32 and bf16, both implementations = 16 runs): ~15 min estimated when
# quiet (a 50257-vocabulary run ~60 s, a 4096 one ~30 s); measured 44 min with THREADS=1 under load 7-9.
#
# 1. sets up benchmarks/.trl-env if needed (setup_trl_env.sh),
# 2. measures the matmul peak once (matmul_peak.py -> results/peak.json),
# 3. for each repeat, vocabulary and dtype runs rlhfkit then TRL back to back (interleaved:
#    ours, TRL, ours, TRL, ...), so a busy spell on a shared machine hits both,
# 4. prints medians over every timed iteration per (vocab, dtype, impl), per phase (generate,
#    rollout forward, optimise), CPU seconds, peak RSS, and TRL / rlhfkit ratios
#    (ppo_bench.py --table); results/summary.txt keeps it.
# TRL's bf16 is accelerate's autocast (PPOConfig(accelerator_kwargs={'mixed_precision': 'bf16'})).
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
REPEATS="${REPEATS:-2}"
VOCABS="${VOCABS:-4096 50257}"
DTYPES="${DTYPES:-fp32 bf16}"
THREADS="${THREADS:-$(nproc)}"
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

if [[ "${SKIP_TRL:-0}" != 1 ]]; then
  bash benchmarks/setup_trl_env.sh
fi

echo "== matmul peak"
"$PY" benchmarks/matmul_peak.py --out "$OUT/peak.json" >/dev/null
"$PY" -c "import json; r=json.load(open('$OUT/peak.json')); print('peak GFLOP/s', {k: round(v) for k, v in r['peak_gflops'].items()})"

common=(--iters "$ITERS" --warmup "$WARMUP" --peak "$OUT/peak.json" --threads "$THREADS")
files=()
status=0
start=$SECONDS
for rep in $(seq 1 "$REPEATS"); do
  for vocab in $VOCABS; do
    for dtype in $DTYPES; do
      impls=(rlhfkit)
      [[ "${SKIP_TRL:-0}" != 1 ]] && impls+=(trl)
      for impl in "${impls[@]}"; do
        py="$PY"; [[ $impl == trl ]] && py="$TRL_PY"
        f="$OUT/${impl}_${dtype}_v${vocab}_r${rep}.json"
        echo "== repeat $rep vocab $vocab $impl $dtype ($((SECONDS - start)) s so far)"
        if "$py" benchmarks/ppo_bench.py --impl "$impl" --dtype "$dtype" --vocab "$vocab" --out "$f" "${common[@]}" \
            > "$OUT/${impl}_${dtype}_v${vocab}_r${rep}.log" 2>&1; then
          grep '^\[ppo_bench\]' "$OUT/${impl}_${dtype}_v${vocab}_r${rep}.log" || true
          files+=("$f")
        else
          echo "!! $impl $dtype vocab $vocab failed (see $OUT/${impl}_${dtype}_v${vocab}_r${rep}.log)"; status=1
        fi
      done
    done
  done
done

echo
echo "total $((SECONDS - start)) s"
"$PY" benchmarks/ppo_bench.py --table "${files[@]}" | tee "$OUT/summary.txt"
exit $status
