"""Padded against padding-free (packed) training steps of DPO and of the GRPO update, same model and data.

    .venv/bin/python benchmarks/packing_bench.py                        # every shape, 3 repeats
    .venv/bin/python benchmarks/packing_bench.py --shapes small-vary --repeats 2 --out r.json

One process runs every variant of a shape on the same weights, the same batches, the same threads and
fp32, interleaved: repeat 1 of every variant, then repeat 2, ... so a slow phase of a shared
machine hits all of them. A variant's time is the mean of ``--steps`` timed steps after one
warm-up step; the table lists every repeat and the median. ``--clock cpu`` (the default) counts the
process's CPU seconds, which other work on a shared machine barely moves (with ``--threads 1``, the
default, that is the step's own work); ``--clock wall`` counts elapsed seconds, for a quiet machine.

What a step is
  DPO: ``DPOTrainer._losses`` on one collated batch of ``--pairs`` pairs (policy forward of the
  2B sequences, the frozen reference's forward without grad), backward, one Adam step:
  everything of a training step but the data loader and the logging.
  GRPO: the update of one chunk of ``--completions`` completions: the frozen reference's
  log-probs without grad (beta 0.04), the policy's forward and backward (``OnlineRun._update``,
  loss_type dapo) and one Adam step. Generation and scoring are left out: packing does not
  touch them.

Variants: ``padded`` (the default layout; DPO with ``share_prompt=False``, the same concatenated
forward packing replaces), ``padded+share_prompt`` (DPO's default: each prompt once, completions on
its cache), ``packed`` (``padding_free=True``, one packed row) and ``packed-256``
(``max_packed_length=256``).

Shapes: GPT-2 shaped random models (dropout off). Prompts are 8-24 tokens; completions are
uniform 4..128 tokens (``-vary``) or all 64 (``-equal``: nothing to save, what packing costs).
``small`` = 6 layers x 384 hidden, 6 heads, vocabulary 4096; ``tiny`` = 2 x 64, 4 heads,
vocabulary 512 (attention is a large share of its work).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rlhfkit import DPOConfig, DPOTrainer  # noqa: E402
from rlhfkit.rollout import build_batch  # noqa: E402
from rlhfkit.testing import tiny_causal_lm, tiny_tokenizer  # noqa: E402
from rlhfkit.trainers.grpo import GRPOConfig, GRPOTrainer  # noqa: E402
from rlhfkit.trainers.online import Rollout  # noqa: E402

MODELS = {"small": dict(num_layers=6, hidden_size=384, num_heads=6, vocab_size=4096),
          "tiny": dict(num_layers=2, hidden_size=64, num_heads=4, vocab_size=512)}
SHAPES = {f"{m}-{c}": (m, c) for m in MODELS for c in ("vary", "equal")}
VARIANTS = {"dpo": ["padded", "padded+share_prompt", "packed", "packed-256"],
            "grpo": ["padded", "packed", "packed-256"]}


def completion_lengths(kind: str, n: int, rng: random.Random) -> list[int]:
    return [rng.randint(4, 128) if kind == "vary" else 64 for _ in range(n)]


def _settings(variant: str) -> dict:
    return {"padded": {}, "padded+share_prompt": {"share_prompt": True}, "packed": {"padding_free": True},
            "packed-256": {"padding_free": True, "max_packed_length": 256}}[variant]


def dpo_trainer(model_kw, variant, tok, out):
    args = DPOConfig(output_dir=str(out), per_device_train_batch_size=8, max_length=160, report_to="jsonl",
                     disable_tqdm=True, learning_rate=1e-6, **{"share_prompt": False, **_settings(variant)})
    model = tiny_causal_lm("gpt2", tok, seed=0, max_positions=256, **model_kw)
    pairs = [{"prompt": "a ", "chosen": "b", "rejected": "c"}] * 8
    return DPOTrainer(model=model, args=args, train_dataset=pairs, processing_class=tok)


def dpo_rows(kind, pairs, vocab, seed=0):
    rng = random.Random(seed)
    tokens = lambda k: [rng.randrange(4, vocab) for _ in range(k)]  # noqa: E731
    rows = []
    for c, r in zip(completion_lengths(kind, pairs, rng), completion_lengths(kind, pairs, rng)):
        prompt = tokens(rng.randint(8, 24))
        rows.append({"chosen_input_ids": prompt + tokens(c), "rejected_input_ids": prompt + tokens(r),
                     "prompt_length": len(prompt)})
    return rows


def dpo_step(trainer, optimizer, batch):
    loss, _ = trainer._losses(trainer.model, batch)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def grpo_trainer(model_kw, variant, tok, out):
    settings = {k: v for k, v in _settings(variant).items() if k != "share_prompt"}
    args = GRPOConfig(output_dir=str(out), num_generations=4, per_device_train_batch_size=16, beta=0.04,
                      max_prompt_length=24, max_completion_length=128, report_to="jsonl", disable_tqdm=True,
                      learning_rate=1e-6, **settings)
    model = tiny_causal_lm("gpt2", tok, seed=0, max_positions=256, **model_kw)
    return GRPOTrainer(model=model, reward_funcs=lambda prompts, completions, **kw: [0.0] * len(completions),
                       args=args, train_dataset=[{"prompt": "a b c"}] * 8, processing_class=tok)


def grpo_rollout(kind, n, vocab, pad_id, seed=0):
    rng = random.Random(seed)
    queries = [torch.tensor([rng.randrange(4, vocab) for _ in range(rng.randint(8, 24))]) for _ in range(n)]
    responses = [torch.tensor([rng.randrange(4, vocab) for _ in range(c)]) for c in completion_lengths(kind, n, rng)]
    return build_batch(queries, responses, None, pad_id), torch.randn(n, generator=torch.Generator().manual_seed(seed))


def grpo_step(trainer, batch, advantages):
    run = trainer.loop
    with torch.no_grad():
        ref = run._forward_logprobs(run.ref_model, batch, len(advantages))
    rollout = Rollout(batch, advantages, None, ref, {})
    loss, _ = run._update(run.model, rollout.chunk(torch.arange(len(advantages))),
                          num_items=float(batch.mask.sum()), first_pass=True)
    loss.backward()
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)


CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
CLOCK = time.process_time


def measure(args) -> list[dict]:
    torch.set_num_threads(args.threads)
    tok = tiny_tokenizer()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for shape in args.shapes:
            model_name, kind = SHAPES[shape]
            model_kw = MODELS[model_name]
            vocab = model_kw["vocab_size"]
            for algo in args.algos:
                steps = {}
                for variant in VARIANTS[algo]:
                    out = Path(tmp) / f"{shape}-{algo}-{variant}"
                    if algo == "dpo":
                        trainer = dpo_trainer(model_kw, variant, tok, out)
                        batch = trainer._collate(dpo_rows(kind, args.pairs, vocab))
                        optimizer = torch.optim.AdamW(trainer.model.parameters(), lr=1e-6)
                        steps[variant] = (lambda t=trainer, o=optimizer, b=batch: dpo_step(t, o, b), batch)
                    else:
                        trainer = grpo_trainer(model_kw, variant, tok, out)
                        batch, adv = grpo_rollout(kind, args.completions, vocab, tok.pad_token_id)
                        steps[variant] = (lambda t=trainer, b=batch, a=adv: grpo_step(t, b, a), batch)
                    trainer.model.train()
                    steps[variant][0]()  # warm-up
                times = {v: [] for v in steps}
                for _ in range(args.repeats):
                    for variant, (step, _) in steps.items():
                        t0 = CLOCK()
                        for _ in range(args.steps):
                            step()
                        times[variant].append((CLOCK() - t0) / args.steps)
                some_batch = next(iter(steps.values()))[1]
                mask = some_batch["attention_mask"] if algo == "dpo" else some_batch.attention_mask
                for variant, ts in times.items():
                    row = {"shape": shape, "algo": algo, "variant": variant, "seconds": ts,
                           "median": statistics.median(ts), "real_tokens": int(mask.sum()),
                           "padded_tokens": int(mask.numel())}
                    results.append(row)
                    print(json.dumps(row), flush=True)
    return results


def table(results: list[dict]) -> str:
    lines = ["| shape | algo | variant | s/step, each repeat | median s/step | padded / packed |",
             "| --- | --- | --- | --- | --- | --- |"]
    base = {(r["shape"], r["algo"]): r["median"] for r in results if r["variant"] == "padded"}
    for r in results:
        ratio = base[(r["shape"], r["algo"])] / r["median"]
        each = ", ".join(f"{t:.3f}" for t in r["seconds"])
        shown = "-" if r["variant"] == "padded" else f"{ratio:.2f}x"
        lines.append(f"| {r['shape']} | {r['algo']} | {r['variant']} | {each} | {r['median']:.3f} | {shown} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", nargs="+", default=["small-vary", "small-equal", "tiny-vary", "tiny-equal"],
                   choices=sorted(SHAPES))
    p.add_argument("--algos", nargs="+", default=["dpo", "grpo"], choices=sorted(VARIANTS))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=2, help="timed steps per repeat")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--clock", choices=sorted(CLOCKS), default="cpu",
                   help="cpu: the process's CPU seconds (default); wall: elapsed seconds")
    p.add_argument("--pairs", type=int, default=8, help="DPO pairs per step (2x sequences)")
    p.add_argument("--completions", type=int, default=16, help="GRPO completions per update chunk")
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args(argv)
    global CLOCK
    CLOCK = CLOCKS[args.clock]
    results = measure(args)
    print(f"{args.clock} clock, {args.threads} thread(s), {args.repeats} repeats x {args.steps} steps")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    print(table(results))
    print(f"(padded / packed > 1: packing faster; ratios of the medians; real/padded tokens: "
          + ", ".join(f"{r['shape']} {r['algo']} {r['real_tokens']}/{r['padded_tokens']}"
                      for r in results if r["variant"] == "padded") + ")")


if __name__ == "__main__":
    main()
