"""Benchmark GRPO and RLOO training steps: TRL 1.16 vs rlhfkit, same model, data, reward and settings.

The modern trainer API on both sides; only the import changes::

    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer                       # --impl trl
    from rlhfkit.trainers.grpo import GRPOConfig, GRPOTrainer  (rloo: RLOOConfig, ...)      # --impl rlhfkit

    benchmarks/.trl116-env/bin/python benchmarks/online_bench.py --impl trl --algo grpo --shape small --out r.json
    .venv/bin/python benchmarks/online_bench.py --impl rlhfkit --algo grpo --shape small --out o.json
    python benchmarks/online_bench.py --summarise r.json o.json ...

(``benchmarks/run_online_bench.sh`` runs all of it, ours and TRL's interleaved.)

Workload
  Model: GPT-2 shaped, 4 layers x 256 hidden, 4 heads, 256 positions, dropout off, random
  weights (``torch.manual_seed(0)``), saved once to a temporary folder; both trainers get
  ``model=<that folder>`` (a path, so TRL 1.16 can load its reference from it as rlhfkit
  copies its own). Shapes: ``small`` = vocabulary 4096, ``large`` = 50257 (GPT-2's).
  Tokenizer: ``train_bench.build_tokenizer`` (word level, exactly ``vocab`` entries, eos last).
  Prompts: 64 rows of 32 random words (32 tokens each). Reward: the same Python function on
  both sides (fraction of completion words starting with "w1"), TRL's contract.
  Config (both): num_generations=4, per_device_train_batch_size=8 (2 prompts x 4 completions
  per optimiser step), gradient_accumulation_steps=1, max_completion_length=32 with
  ``generation_kwargs={"min_new_tokens": 32}`` (every completion is exactly 32 tokens: equal
  work), temperature 1, top_p 1, top_k 0, learning_rate 1e-6, bf16 off, logging_steps=10
  (TRL's default; ``--logging-steps``: on logging steps rlhfkit scores the generation once more
  in eval mode for ``sampling/logprob_diff_*``, one no-grad forward), report_to none, seed 0. GRPO: beta=0 (TRL's default: no reference), loss_type dapo; RLOO:
  beta=0.05 (TRL's default: a frozen reference and the KL in the reward). TRL also
  ``save_strategy="no"``. Gradient checkpointing is the one default the two sides do not
  share: TRL 1.16 turns it on (the backward recomputes the forward), rlhfkit leaves it off.
  ``--gradient-checkpointing off`` gives TRL rlhfkit's computation (the equal-work
  comparison); ``default`` keeps each side's default (the effective setting is recorded).
  ``run_online_bench.sh`` runs both. A field one config rejects is dropped for that side
  with a printed note.

Timing and memory
  As ``train_bench.py``: fresh trainers with ``max_steps=K1`` and ``K2`` (default 2 and 6);
  per-step time = (t(K2) - t(K1)) / (K2 - K1) cancels set-up and the final save; one warm-up
  ``train(max_steps=2)`` first; ``--repeats`` pairs; before each pair it waits (up to
  ``--wait-max`` s) for other work to use <= ``--max-others`` cores and records how many
  cores other work took during each phase (``others_cores``; a busy machine inflates times);
  a pair where that exceeded ``--max-others`` is redone (up to ``--max-retries`` times; the
  last attempt is kept and flagged ``disturbed``).
  The process's own CPU time (user + sys) is differenced the same way (``cpu_step_s``): on
  a shared machine, with ``--threads 1``, it measures the work done even when wall time is
  inflated by other processes. Peak RSS (VmHWM, reset per phase) minus the RSS before the trainer is built: the warm-up
  phase (a fresh process) is the headline.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from measure import cpu_speed_gflops, peak_mb, proc_usage, reset_peak, rss_mb  # benchmarks/measure.py
from train_bench import build_tokenizer, loadavg, machine_cpu, others_cores, wait_for_idle_cores

SHAPES = {"small": 4096, "large": 50257}


def reward_w1(prompts, completions, **columns):
    """Fraction of completion words that start with "w1" (cheap, deterministic, same for both)."""
    return [sum(w.startswith("w1") for w in c.split()) / max(1, len(c.split())) for c in completions]


def import_impl(impl: str, algo: str):
    names = {"grpo": ("GRPOConfig", "GRPOTrainer"), "rloo": ("RLOOConfig", "RLOOTrainer")}[algo]
    if impl == "trl":
        import trl as lib
    else:
        import importlib
        lib = importlib.import_module(f"rlhfkit.trainers.{algo}")
    return getattr(lib, names[0]), getattr(lib, names[1])


def build_model_dir(args, tokenizer, folder: Path) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=len(tokenizer), n_positions=256, n_embd=args.n_embd, n_layer=args.n_layer,
                        n_head=args.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(args.seed)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_config(ConfigCls, args, output_dir: str, max_steps: int):
    fields = dict(output_dir=output_dir, num_generations=4, per_device_train_batch_size=8,
                  gradient_accumulation_steps=1, max_completion_length=args.completion_len,
                  generation_kwargs={"min_new_tokens": args.completion_len}, temperature=1.0, top_p=1.0, top_k=0,
                  learning_rate=1e-6, bf16=False, logging_steps=args.logging_steps, report_to="none", seed=args.seed,
                  max_steps=max_steps, disable_tqdm=True, beta=0.0 if args.algo == "grpo" else 0.05)
    if args.algo == "grpo":
        fields["loss_type"] = "dapo"
    if args.impl == "trl":
        fields.update(save_strategy="no")
    else:
        fields.update(save_steps=0)
    if args.gradient_checkpointing != "default":
        fields["gradient_checkpointing"] = args.gradient_checkpointing == "on"
    dropped = []
    while True:
        try:
            return ConfigCls(**fields), fields, dropped
        except TypeError as err:  # an unknown keyword for this implementation
            bad = next((k for k in fields if f"'{k}'" in str(err)), None)
            if bad is None:
                raise
            print(f"[online_bench] {args.impl} {ConfigCls.__name__} has no field {bad!r}: dropped", flush=True)
            dropped.append(bad)
            fields.pop(bad)


def run(args) -> dict:
    import datasets
    import torch

    torch.set_num_threads(args.threads)
    ConfigCls, TrainerCls = import_impl(args.impl, args.algo)
    tokenizer, n_words = build_tokenizer(SHAPES[args.shape])
    rng = random.Random(args.seed)
    rows = [{"prompt": " ".join(f"w{rng.randrange(n_words)}" for _ in range(args.prompt_len))} for _ in range(64)]
    work = Path(tempfile.mkdtemp(prefix="online_bench-"))
    model_dir = build_model_dir(args, tokenizer, work / "model")
    phases = []

    def phase(name: str, steps: int) -> dict:
        gc.collect()
        ok = reset_peak()
        base = rss_mb()
        c0, u0, t0 = machine_cpu(), proc_usage(), time.perf_counter()
        config, fields, dropped = make_config(ConfigCls, args, str(work / f"out-{name}"), steps)
        trainer = TrainerCls(model=str(model_dir), reward_funcs=reward_w1, args=config,
                             train_dataset=datasets.Dataset.from_list(rows), processing_class=tokenizer)
        t_built = time.perf_counter()
        trainer.train()
        t1, c1, u1 = time.perf_counter(), machine_cpu(), proc_usage()
        own = u1[0] - u0[0] + u1[1] - u0[1]
        out = {"name": name, "steps": steps, "wall_s": t1 - t0, "train_s": t1 - t_built, "rss_before_mb": base,
               "peak_mb": peak_mb(ok), "peak_delta_mb": peak_mb(ok) - base, "own_cpu_s": own,
               "others_cores": others_cores(c0, c1, own, t1 - t0), "loadavg": loadavg(),
               "gradient_checkpointing": bool(getattr(config, "gradient_checkpointing", False)),
               "dropped_fields": dropped}
        del trainer
        shutil.rmtree(work / f"out-{name}", ignore_errors=True)
        print(f"[online_bench] {args.impl} {args.algo} {args.shape} {name}: {out['train_s']:.2f}s train, peak +"
              f"{out['peak_delta_mb']:.0f} MB, others {out['others_cores']:.2f} cores", flush=True)
        return out

    phases.append(phase("warmup", 2))
    pairs = []
    for r in range(args.repeats):
        for attempt in range(args.max_retries + 1):  # a pair that other work disturbed is redone
            wait_for_idle_cores(args.max_others, args.wait_max)
            a, b = phase(f"k1-{r}-{attempt}", args.k1), phase(f"k2-{r}-{attempt}", args.k2)
            phases += [a, b]
            others = max(a["others_cores"], b["others_cores"])
            if others <= args.max_others or attempt == args.max_retries:
                break
        pairs.append({"step_s": (b["train_s"] - a["train_s"]) / (args.k2 - args.k1),
                      "cpu_step_s": (b["own_cpu_s"] - a["own_cpu_s"]) / (args.k2 - args.k1), "others_cores": others,
                      "attempts": attempt + 1, "disturbed": others > args.max_others})
    shutil.rmtree(work, ignore_errors=True)
    import transformers
    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    if args.impl == "trl":
        import trl
        versions["trl"] = trl.__version__
    steps = [p["step_s"] for p in pairs]
    return {"impl": args.impl, "algo": args.algo, "shape": args.shape, "vocab": SHAPES[args.shape],
            "step_s_min": min(steps), "step_s_mean": sum(steps) / len(steps), "pairs": pairs,
            "cpu_step_s_min": min(p["cpu_step_s"] for p in pairs),
            "peak_delta_mb": phases[0]["peak_delta_mb"], "peak_delta_any_phase_max": max(p["peak_delta_mb"] for p in phases),
            "gradient_checkpointing": phases[0]["gradient_checkpointing"], "phases": phases, "versions": versions,
            "cpu_probe_gflops": cpu_speed_gflops(), "args": vars(args)}


def cpu_steps(result: dict) -> list[float]:
    """Own CPU seconds per step of every (K1, K2) pair run, retries included (the wall time of a
    disturbed pair is not comparable, its CPU time at one thread nearly is)."""
    ph = [p for p in result["phases"] if p["name"] != "warmup"]
    k = result["args"]["k2"] - result["args"]["k1"]
    return [(b["own_cpu_s"] - a["own_cpu_s"]) / k for a, b in zip(ph[::2], ph[1::2])]


def summarise(paths: list[str]) -> str:
    results = [json.loads(Path(p).read_text()) for p in paths]
    lines = ["| algo | vocab | run | rlhfkit step (s) | TRL 1.16 step (s) | speed-up | rlhfkit CPU s/step (min / "
             "median) | TRL CPU s/step (min / median) | CPU ratio (min / median) | rlhfkit peak +MB | TRL peak +MB | memory ratio | others (cores) |",
             "|" + " --- |" * 13]
    groups: dict = {}

    def cpu(r):
        return f"{min(cpu_steps(r)):.3f} / {statistics.median(cpu_steps(r)):.3f}"

    def row(algo, vocab, run, ours, trl):
        others = max(p["others_cores"] for p in ours["pairs"] + trl["pairs"])
        return (f"| {algo} | {vocab} | {run} | {ours['step_s_min']:.3f} | {trl['step_s_min']:.3f} | "
                f"{trl['step_s_min'] / ours['step_s_min']:.2f}x | {cpu(ours)} | {cpu(trl)} | "
                f"{min(cpu_steps(trl)) / min(cpu_steps(ours)):.2f}x / "
                f"{statistics.median(cpu_steps(trl)) / statistics.median(cpu_steps(ours)):.2f}x | "
                f"{ours['peak_delta_mb']:.0f} | "
                f"{trl['peak_delta_mb']:.0f} | {trl['peak_delta_mb'] / max(ours['peak_delta_mb'], 1):.2f} | "
                f"{others:.2f} |")

    for r in results:  # TRL runs grouped by their effective gradient checkpointing
        side = "rlhfkit" if r["impl"] == "rlhfkit" else f"TRL, checkpointing {'on' if r['gradient_checkpointing'] else 'off'}"
        groups.setdefault((r["algo"], r["vocab"]), {}).setdefault(side, []).append(r)
    for (algo, vocab), g in sorted(groups.items()):
        for side in sorted(k for k in g if k != "rlhfkit"):
            for i, (ours, trl) in enumerate(zip(g.get("rlhfkit", []), g[side])):
                lines.append(row(algo, vocab, f"{i + 1}, {side}", ours, trl))
    lines.append("")
    lines.append("speed-up = TRL step / rlhfkit step (> 1: rlhfkit faster); memory ratio = TRL peak / rlhfkit peak "
                 "(> 1: rlhfkit smaller); step = min over pairs of (t(K2) - t(K1)) / (K2 - K1); CPU s/step: the "
                 "same difference of the process's own CPU time (user + sys), which a busy machine disturbs less "
                 "than wall time (with --threads 1 it is the work done).")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--impl", choices=["trl", "rlhfkit"])
    p.add_argument("--algo", choices=["grpo", "rloo"], default="grpo")
    p.add_argument("--shape", choices=sorted(SHAPES), default="small")
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=256)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--completion-len", type=int, default=32)
    p.add_argument("--logging-steps", type=int, default=10)
    p.add_argument("--k1", type=int, default=2)
    p.add_argument("--k2", type=int, default=6)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--gradient-checkpointing", choices=["default", "on", "off"], default="default")
    p.add_argument("--max-others", type=float, default=0.3)
    p.add_argument("--max-retries", type=int, default=3)
    p.add_argument("--wait-max", type=float, default=60.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out")
    p.add_argument("--summarise", nargs="+")
    args = p.parse_args(argv)
    if args.summarise:
        print(summarise(args.summarise))
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    result = run(args)
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    print(json.dumps({k: result[k] for k in ("impl", "algo", "shape", "step_s_min", "peak_delta_mb")}))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
