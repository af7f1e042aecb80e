"""Kill -9 / resume sweep: how often does a resumed run reproduce the uninterrupted one exactly?

    .venv/bin/python benchmarks/resume_trials.py --trials 5 --trainers sft,reward,dpo,ppo

Per trainer: one uninterrupted run, then ``--trials`` runs, each killed with SIGKILL once
inside a checkpoint write (random write, after the model files or before the rename) and
once at a random moment from outside, resumed from ``latest`` after each kill. Prints,
per trainer: trials, exact matches (final weights within 1e-6 and every logged metric but
timings identical, one row per step), the largest weight difference, and the kills that
landed. Uses the harness of ``tests/trainers/test_resume_kill.py`` (12 steps, checkpoint
every 2, tiny GPT-2 models with dropout 0.1, one thread per process).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.trainers.test_resume_kill import STEPS, compare, finish, interrupted_run, make_inputs, start  # noqa: E402


def sweep(trainer: str, trials: int, kills: list[str], work: Path, seed: int) -> dict:
    inputs = make_inputs(work / "inputs") if not (work / "inputs" / "driver.py").exists() else \
        {"dir": work / "inputs", "driver": work / "inputs" / "driver.py"}
    reference = work / trainer / "reference"
    finish(start(inputs, trainer, reference), reference)
    rng = random.Random(f"{seed}-{trainer}")
    exact, worst, events = 0, 0.0, []
    for trial in range(trials):
        out = work / trainer / f"trial-{trial}"
        events.append(interrupted_run(inputs, trainer, out, rng, kills))
        result = compare(reference, out, trainer)
        ok = (result["rows_equal"] and result["max_abs_diff"] <= 1e-6
              and result["steps"] == list(range(1, STEPS + 1)))
        exact += ok
        worst = max(worst, result["max_abs_diff"])
        print(f"  {trainer} trial {trial}: exact={ok} max_abs_diff={result['max_abs_diff']:.3g} "
              f"events={events[-1]}", flush=True)
    killed = sum(e.count("rc=-9") for e in map(" ".join, events))
    return {"trainer": trainer, "trials": trials, "exact": exact, "max_abs_diff": worst, "kills_landed": killed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=5, help="interrupted runs per trainer")
    parser.add_argument("--trainers", default="sft,reward,dpo,ppo")
    parser.add_argument("--kills", default="write,random", help="kill kinds per trial, in order: write, random")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work_dir", default=None, help="where the runs go (default: a temporary folder)")
    args = parser.parse_args()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="resume-trials-"))
    start_time, rows = time.time(), []
    for trainer in args.trainers.split(","):
        rows.append(sweep(trainer, args.trials, args.kills.split(","), work, args.seed))
    print("\n| trainer | trials | exact | max abs diff | kills landed |\n| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['trainer']} | {r['trials']} | {r['exact']} | {r['max_abs_diff']:.3g} | {r['kills_landed']} |")
    print(json.dumps({"seconds": round(time.time() - start_time), "work_dir": str(work), "rows": rows}))
    return 0 if all(r["exact"] == r["trials"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
