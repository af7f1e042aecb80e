"""Resume sweep: how often does an interrupted run end exactly as the uninterrupted one?

    .venv/bin/python benchmarks/resume_trials.py --trials 5 --kills write,sigkill,sigint

Per trainer (``--trainers``, default all eight of ``tests/trainers/test_resume_kill.py``: sft,
reward, dpo with LoRA, kto, ppo (``PPOTrainer.train``), rlhfkit-ppo (LoRA), grpo, rloo with LoRA):
one uninterrupted run, then ``--trials`` runs, each interrupted once per entry of ``--kills``, in
order, restarted after each (resuming from ``latest`` when a checkpoint is complete), then run to
the end:

- ``write``: the process SIGKILLs itself inside its 1st or 2nd checkpoint write (after the
  model files, or after the whole folder but before its rename);
- ``sigkill`` / ``sigint``: that signal from this process a random 0-0.06 s after the run logged
  step 3 or 4 (of 6, a checkpoint every 2); a run that gets to step 5 first waits there for it.
  The run must die of the signal (return code -9 / -2) before its last step, and after a
  SIGINT its newest checkpoint must be the last logged step's.

A trial is exact when every tensor of the final weights is ``torch.equal`` to the uninterrupted
run's and every logged metric but timings is identical, with one row per step. Prints per
trainer: trials, exact trials, trials whose checks failed (an interruption that did not land as
above, a run that crashed), tensors that differed in the worst trial and the largest difference,
and where the signals landed. Uses the harness of ``tests/trainers/test_resume_kill.py``: its
trainer settings, its fork server (the runs are forked, one process each, one thread each) and
its checks. Uninterrupted runs come from a server with another ``PYTHONHASHSEED`` than the rest.
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

from tests.trainers.test_resume_kill import (TRAINERS, assert_exact, compare, finish, fork_servers,  # noqa: E402
                                             interrupted_run, make_inputs, start)


def sweep(servers, inputs: dict, trainer: str, trials: int, kills: list[str], work: Path, seed: int) -> dict:
    reference = work / trainer / "reference"
    finish(start(servers[0], inputs, trainer, reference), reference)
    rng = random.Random(f"{seed}-{trainer}")
    exact, failed, worst, landed = 0, 0, {"unequal": 0, "max_abs_diff": 0.0}, []
    for trial in range(trials):
        out = work / trainer / f"trial-{trial}"
        try:
            events = interrupted_run(servers[1], inputs, trainer, out, rng, kills)
        except AssertionError as err:  # an interruption that did not land as it must, a run that crashed
            failed += 1
            print(f"  {trainer} trial {trial}: CHECK FAILED: {str(err)[:600]}", flush=True)
            continue
        result = compare(reference, out, trainer)
        try:
            assert_exact(result, events)
            exact += 1
            note = "exact"
        except AssertionError as err:
            note = f"NOT EXACT: {str(err)[:400]}"
        if len(result["unequal"]) > worst["unequal"]:
            worst = {"unequal": len(result["unequal"]), "max_abs_diff": result["max_abs_diff"]}
        landed += [f"{e['signal']}@{e['last_logged_step']}{'(gate)' if e['at_gate'] else ''}" for e in events
                   if "signal" in e]
        print(f"  {trainer} trial {trial}: {note} events={events}", flush=True)
    return {"trainer": trainer, "trials": trials, "exact": exact, "failed_checks": failed, **worst,
            "landed": landed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=5, help="interrupted runs per trainer")
    parser.add_argument("--trainers", default=",".join(TRAINERS))
    parser.add_argument("--kills", default="write,sigkill,sigint",
                        help="interruptions per trial, in order: write, sigkill, sigint")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work_dir", default=None, help="where the runs go (default: a temporary folder)")
    args = parser.parse_args()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="resume-trials-"))
    inputs = make_inputs(work / "inputs")
    servers = fork_servers(inputs["driver"], work)
    start_time, rows = time.time(), []
    try:
        for trainer in args.trainers.split(","):
            rows.append(sweep(servers, inputs, trainer, args.trials, args.kills.split(","), work, args.seed))
    finally:
        for server in servers:
            server.close()
    print("\n| trainer | trials | exact | failed checks | unequal tensors (worst) | max abs diff | signals landed "
          "(at step) |\n| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['trainer']} | {r['trials']} | {r['exact']} | {r['failed_checks']} | {r['unequal']} | "
              f"{r['max_abs_diff']:.3g} | {' '.join(r['landed'])} |")
    print(json.dumps({"seconds": round(time.time() - start_time), "work_dir": str(work), "rows": rows}))
    return 0 if all(r["exact"] == r["trials"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
