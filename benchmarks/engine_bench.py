"""Seconds per optimiser step of every trainer, for two rlhfkit checkouts side by side (a before/after check).

    python benchmarks/engine_bench.py --before /path/to/old/checkout [--repeats 3] [--steps 6]

Each (trainer, checkout, repeat) is one fresh subprocess with that checkout first on ``PYTHONPATH``;
checkouts alternate inside each repeat, so a slow minute of a busy machine hits both. The same
workload for both: a GPT-2-shaped model of 4 layers x 256 hidden (vocabulary of
``rlhfkit.testing.tiny_tokenizer``), dropout 0, fp32, ``--threads`` torch threads (1 by default), one warm-up step then ``--steps``
timed steps (from the log row of optimiser step 1 to that of the last step: set-up, the final save
and the learning-curve figure are not timed). Small on purpose: per-step overhead of the engine (logging, bookkeeping,
accumulation) is then a visible share of a step. Trainers: sft, reward, dpo, kto (the training
loop), grpo, rloo (the online loop: 8 completions of 8 tokens per step), ppo (classic ``step`` on
fixed rollouts of batch 8, mini-batch 4, 2 PPO epochs). ``--clock cpu`` (the default) counts the
process's CPU seconds, which other work on a shared machine barely moves; ``--clock wall`` counts elapsed
seconds. Prints the median seconds per step of each
side, the range, and after / before (> 1: the current checkout is slower).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAINERS = ("sft", "reward", "dpo", "kto", "grpo", "rloo", "ppo")
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
CLOCK = CLOCKS["cpu"]
THREADS = 1
MODEL = dict(n_layer=4, n_embd=256, n_head=4, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)


def child(trainer: str, steps: int) -> float:
    """One run in this process: seconds per optimiser step after the first."""
    import torch

    torch.set_num_threads(THREADS)
    from rlhfkit.testing import hidden_rule_preferences, tiny_causal_lm, tiny_reward_model, tiny_tokenizer

    tok = tiny_tokenizer()
    out = tempfile.mkdtemp(prefix=f"engine-bench-{trainer}-")
    total = steps + 1
    common = dict(output_dir=out, max_steps=total, per_device_train_batch_size=8, learning_rate=1e-4,
                  report_to="none", disable_tqdm=True, seed=0, logging_steps=1)
    lm = lambda: tiny_causal_lm("gpt2", tok, **MODEL)  # noqa: E731
    if trainer == "ppo":
        return _ppo(tok, lm(), steps)
    if trainer == "sft":
        from rlhfkit import SFTConfig, SFTTrainer

        rows = [{"prompt": " ".join(f"w{(i * 7 + j) % 300}" for j in range(24)),
                 "completion": " " + " ".join(f"w{(i * 5 + j) % 300}" for j in range(24))} for i in range(256)]
        t = SFTTrainer(model=lm(), args=SFTConfig(**common), train_dataset=rows, processing_class=tok)
    elif trainer == "reward":
        from rlhfkit import RewardConfig, RewardTrainer

        t = RewardTrainer(model=tiny_reward_model("gpt2", tok, **MODEL), args=RewardConfig(max_length=64, **common),
                          train_dataset=hidden_rule_preferences(256, 0), processing_class=tok)
    elif trainer == "dpo":
        from rlhfkit import DPOConfig, DPOTrainer

        t = DPOTrainer(model=lm(), args=DPOConfig(max_length=64, **common), train_dataset=hidden_rule_preferences(256, 0),
                       processing_class=tok)
    elif trainer == "kto":
        from rlhfkit import KTOConfig, KTOTrainer

        t = KTOTrainer(model=lm(), args=KTOConfig(max_length=64, max_prompt_length=32, **common),
                       train_dataset=hidden_rule_preferences(256, 0), processing_class=tok)
    else:
        from rlhfkit import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

        config, trainer_cls = (GRPOConfig, GRPOTrainer) if trainer == "grpo" else (RLOOConfig, RLOOTrainer)
        prompts = [{"prompt": " ".join(f"w{(i * 3 + j) % 300}" for j in range(12))} for i in range(64)]
        args = config(num_generations=4, max_completion_length=8, generation_kwargs={"min_new_tokens": 8}, **common)
        t = trainer_cls(model=lm(), reward_funcs=lambda prompts, completions, **_: [len(c) / 50 for c in completions],
                        args=args, train_dataset=prompts, processing_class=tok)
    clock = {}
    log = t.loop.mechanics.log

    def timed_log(row, step):  # from the log row of optimiser step 1 to that of the last step
        if any(k.startswith("train/") for k in row):
            clock.setdefault(step, CLOCK())
        log(row, step)

    t.loop.mechanics.log = timed_log
    t.train()
    return (clock[total] - clock[1]) / steps


def _ppo(tok, model, steps: int) -> float:
    import torch

    from rlhfkit import AutoModelForCausalLMWithValueHead, PPOConfig, PPOTrainer

    policy = AutoModelForCausalLMWithValueHead(model)
    trainer = PPOTrainer(PPOConfig(batch_size=8, mini_batch_size=4, ppo_epochs=2, seed=0), policy, tokenizer=tok)
    gen = torch.Generator().manual_seed(1)
    queries = [torch.randint(10, 300, (16,), generator=gen) for _ in range(8)]
    responses = [torch.randint(10, 300, (16,), generator=gen) for _ in range(8)]
    scores = [torch.randn((), generator=gen) for _ in range(8)]
    trainer.step(queries, responses, scores)  # warm-up
    start = CLOCK()
    for _ in range(steps):
        trainer.step(queries, responses, scores)
    return (CLOCK() - start) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", help="the other checkout (its repository root)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--trainers", default=",".join(TRAINERS))
    p.add_argument("--clock", choices=sorted(CLOCKS), default="cpu",
                   help="cpu: the process's CPU seconds (all its threads), steady on a machine shared with other "
                        "work; wall: elapsed seconds, right on an idle machine")
    p.add_argument("--threads", type=int, default=1, help="torch threads of each run (the same for both checkouts)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    global CLOCK, THREADS
    CLOCK, THREADS = CLOCKS[args.clock], args.threads
    if args.child:
        print(json.dumps({"seconds_per_step": child(args.child, args.steps)}))
        return
    if not args.before:
        p.error("--before is required")
    sides = {"before": Path(args.before).resolve(), "after": ROOT}
    times = {(t, s): [] for t in args.trainers.split(",") for s in sides}
    for repeat in range(args.repeats):
        for trainer in args.trainers.split(","):
            order = list(sides) if repeat % 2 == 0 else list(sides)[::-1]
            for side in order:
                env = {**os.environ, "PYTHONPATH": str(sides[side]), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads),
                       "TOKENIZERS_PARALLELISM": "false"}
                done = subprocess.run([sys.executable, __file__, "--child", trainer, "--steps", str(args.steps),
                                       "--clock", args.clock, "--threads", str(args.threads)],
                                      env=env, capture_output=True, text=True, cwd=sides[side])
                if done.returncode:
                    raise SystemExit(f"{side} {trainer} failed:\n{done.stderr[-3000:]}")
                value = json.loads(done.stdout.strip().splitlines()[-1])["seconds_per_step"]
                times[(trainer, side)].append(value)
                print(f"repeat {repeat + 1} {trainer:6s} {side:6s} {value * 1000:8.1f} ms/step", file=sys.stderr)
    print(f"{args.clock} clock, {args.threads} thread(s), {args.repeats} repeats x {args.steps} steps")
    print(f"| trainer | before ms/step (median, range) | after ms/step (median, range) | after / before |")
    print("|---|---|---|---|")
    for trainer in args.trainers.split(","):
        b, a = times[(trainer, "before")], times[(trainer, "after")]
        mb, ma = statistics.median(b), statistics.median(a)
        print(f"| {trainer} | {mb * 1000:.1f} ({min(b) * 1000:.1f}-{max(b) * 1000:.1f}) | "
              f"{ma * 1000:.1f} ({min(a) * 1000:.1f}-{max(a) * 1000:.1f}) | {ma / mb:.3f} |")


if __name__ == "__main__":
    main()
