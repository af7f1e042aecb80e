"""The same GRPO run with synchronous and with asynchronous generation: samples per second and reward.

    .venv/bin/python benchmarks/async_bench.py                          # 30 steps, 3 repeats each
    .venv/bin/python benchmarks/async_bench.py --steps 20 --repeats 2 --out async.json

Task: the online learning test's rule reward (the share of completion tokens whose id is a
multiple of 4; a random policy scores about 0.25) on a tiny random GPT-2 (2 layers x 64),
4 prompts x 4 completions of ``--tokens`` tokens per optimiser step, learning rate 1e-2, seed 0.
Variants: ``sync`` (async_generation=False), ``async`` (queue 1, max_staleness 2) and
``async-q2`` (queue 2, max_staleness 3). They run interleaved (repeat 1 of each, then repeat 2,
...), each a fresh trainer in this process with ``--threads`` torch threads. A run's time is
``train()``'s wall clock (model save included); samples/s = steps * 16 / seconds; reward: the
mean ``train/reward`` of the last 5 steps. The table lists the median over repeats and every
repeat; async also reports its mean staleness and dropped rollouts.

Threads: the default is 1. With ``--threads 2`` on a 2-core machine that other processes share,
the synchronous run's 2-thread OpenMP team waits on cores it does not get and slows down many
times over, while the producer thread's kernels run on fewer threads; that measures contention,
not the overlap.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rlhfkit.testing import tiny_causal_lm, tiny_tokenizer  # noqa: E402
from rlhfkit.trainers.grpo import GRPOConfig, GRPOTrainer  # noqa: E402

VARIANTS = {"sync": {}, "async": dict(async_generation=True, async_queue_size=1, max_staleness=2),
            "async-q2": dict(async_generation=True, async_queue_size=2, max_staleness=3)}
WORDS = "the cat a dog my friend sings we walk they band plays robot river moon night".split()


def in_target(prompts, completions, completion_ids, **columns):
    return [sum(i % 4 == 0 for i in ids) / max(1, len(ids)) for ids in completion_ids]


def run(variant: str, tokenizer, steps: int, tokens: int, hidden: int) -> dict:
    prompts = [{"prompt": " ".join(WORDS[(7 * i + j) % len(WORDS)] for j in range(3))} for i in range(64)]
    with tempfile.TemporaryDirectory() as out:
        args = GRPOConfig(output_dir=out, num_generations=4, per_device_train_batch_size=16, max_completion_length=tokens,
                          generation_kwargs={"min_new_tokens": tokens}, max_steps=steps, logging_steps=1,
                          learning_rate=1e-2, report_to="none", disable_tqdm=True, seed=0, **VARIANTS[variant])
        trainer = GRPOTrainer(model=tiny_causal_lm("gpt2", tokenizer, hidden_size=hidden), reward_funcs=in_target,
                              args=args, train_dataset=prompts, processing_class=tokenizer)
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    history = trainer.loop.history
    rewards = [r["train/reward"] for r in history if "train/reward" in r]
    stale = [r["train/async/staleness_mean"] for r in history if "train/async/staleness_mean" in r]
    dropped = sum(r.get("train/async/dropped", 0.0) for r in history)
    return {"seconds": seconds, "samples_per_s": steps * 16 / seconds, "reward_last5": sum(rewards[-5:]) / 5,
            "staleness_mean": sum(stale) / len(stale) if stale else 0.0, "dropped": dropped}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=16, help="completion length (min_new_tokens = max)")
    parser.add_argument("--hidden", type=int, default=64, help="hidden size of the tiny GPT-2")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (see the module docstring)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--out", type=Path, help="write every repeat as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tokenizer = tiny_tokenizer()
    results = {v: [] for v in args.variants}
    for _ in range(args.repeats):
        for variant in args.variants:
            results[variant].append(run(variant, tokenizer, args.steps, args.tokens, args.hidden))
    print(f"GRPO, {args.steps} steps x 16 completions of {args.tokens} tokens, hidden {args.hidden}, "
          f"{args.threads} threads, {args.repeats} repeats (median; every repeat in brackets)")
    print(f"{'variant':<10} {'samples/s':>10} {'seconds':>8} {'reward (last 5)':>16} {'staleness':>10} "
          f"{'dropped':>8}  repeats (samples/s)")
    for variant, rows in results.items():
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        every = ", ".join(f"{r['samples_per_s']:.1f}" for r in rows)
        print(f"{variant:<10} {med['samples_per_s']:>10.1f} {med['seconds']:>8.2f} {med['reward_last5']:>16.3f} "
              f"{med['staleness_mean']:>10.2f} {med['dropped']:>8.0f}  [{every}]")
    if args.out:
        args.out.write_text(json.dumps({"args": vars(args) | {"out": str(args.out)}, "results": results}, indent=2))


if __name__ == "__main__":
    main()
