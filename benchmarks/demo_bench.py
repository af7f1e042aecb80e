"""The full demo, timed, over one or more seeds: does PPO / DPO beat SFT on the hidden quality?

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/demo_bench.py             # seed 0 (about 3-5 min on 2 cores)
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/demo_bench.py --seeds 0 1 2

Each seed runs ``rlhfkit demo`` at its default sizes into ``runs/demo-bench/seed-<s>``;
the per-seed tables and a summary (mean hidden quality, KL and wall time) go to
``benchmarks/results/demo_bench.json`` and are printed as Markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from rlhfkit.eval.report import markdown_table  # noqa: E402
from rlhfkit.pipeline import PipelineConfig, run_demo  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--output_root", default="runs/demo-bench")
    parser.add_argument("--results", default="benchmarks/results/demo_bench.json")
    args = parser.parse_args()
    runs = []
    for seed in args.seeds:
        start = time.time()
        summary = run_demo(PipelineConfig(output_dir=f"{args.output_root}/seed-{seed}", seed=seed), progress=False)
        wall = time.time() - start
        rows = {r["policy"]: r for r in summary["table"]}
        runs.append({"seed": seed, "wall_seconds": wall, "table": summary["table"],
                     "rm_heldout_accuracy": summary["reward_model"]["pairwise_accuracy"],
                     "rm_accuracy_vs_truth": summary["reward_model"]["accuracy_vs_truth"],
                     "offset_mae": summary["feedback"]["offset_mae"],
                     "agreement_raw": summary["feedback"]["agreement_raw"],
                     "agreement_calibrated": summary["feedback"]["agreement_calibrated"],
                     "beats_sft": {m: rows[m]["hidden quality"] > rows["SFT"]["hidden quality"]
                                   for m in ("PPO", "DPO")}})
        print(f"\nseed {seed}: {wall / 60:.1f} min", flush=True)
        print(markdown_table(summary["table"]), flush=True)
    overview = []
    for policy in ("base", "SFT", "PPO", "DPO"):
        pick = [next(r for r in run["table"] if r["policy"] == policy) for run in runs]
        overview.append({"policy": policy, **{k: statistics.mean(r[k] for r in pick) for k in (
            "reward", "hidden quality", "KL", "win vs SFT (hidden quality)", "length", "train time (s)")}})
    print(f"\nmean over seeds {args.seeds}; wall time per run "
          f"{statistics.mean(r['wall_seconds'] for r in runs) / 60:.1f} min")
    print(markdown_table(overview))
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps({"runs": runs, "mean": overview}, indent=2, default=str))


if __name__ == "__main__":
    main()
