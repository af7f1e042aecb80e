"""Benchmark SFT, reward-model and DPO training steps: TRL 1.16 vs rlhfkit, same workload.

One script, the modern trainer API on both sides; only the import changes::

    from trl import SFTConfig, SFTTrainer, RewardConfig, RewardTrainer, DPOConfig, DPOTrainer      # --impl trl
    from rlhfkit import SFTConfig, SFTTrainer, RewardConfig, RewardTrainer, DPOConfig, DPOTrainer  # --impl rlhfkit

    benchmarks/.trl116-env/bin/python benchmarks/train_bench.py --impl trl --task sft --out results/train_trl_sft_fp32.json
    .venv/bin/python benchmarks/train_bench.py --impl rlhfkit --task sft --out results/train_rlhfkit_sft_fp32.json [--dtype bf16]
    python benchmarks/train_bench.py --summarise results/train_trl_sft_fp32.json results/train_rlhfkit_sft_fp32.json ...

(``benchmarks/run_train_bench.sh`` does all of it; ``benchmarks/setup_trl116_env.sh`` builds the TRL env.)

Workload
  Model: GPT-2 shaped, 6 layers x 384 hidden, 6 heads, vocabulary 50257, 1024 positions,
  built from ``GPT2Config`` with ``torch.manual_seed(0)`` (random weights, nothing
  downloaded). Dropout is DISABLED (resid/embd/attn pdrop = 0, summary_first_dropout = 0)
  for both implementations: TRL's RewardTrainer disables dropout by default
  (``disable_dropout=True``) but its SFTTrainer does not, so zeroing it in the config makes
  both trainers run the same arithmetic. SFT uses ``GPT2LMHeadModel``; the reward model is
  ``AutoModelForSequenceClassification`` (``GPT2ForSequenceClassification``, num_labels=1,
  pad_token_id set) from the same config.
  Tokenizer: a word-level fast tokenizer (``tokenizers`` WordLevel, WhitespaceSplit) whose
  vocabulary has exactly 50257 entries: ``w0`` .. ``w50252`` -> ids 0 .. 50252, then
  ``<|unk|>`` 50253, ``<|pad|>`` 50254, ``<|startoftext|>`` 50255, ``<|endoftext|>`` 50256
  (eos; pad is a separate token so the reward model's "last non-pad token" is the eos).
  Texts are random words, so every text tokenizes to exactly the intended number of ids,
  all random ids < 50253 (never a special token).
  SFT: 512 prompt-completion rows (``prompt``, ``completion`` columns): prompt = 64 words,
  completion = " " + 63 words + " <|endoftext|>" = 64 tokens ending in eos, so each
  sequence is 128 tokens whether or not the trainer appends an eos itself (TRL appends one
  only if the completion does not already end with it). Loss on the completion only
  (``completion_only_loss=True``), ``max_length=160``, ``packing=False``.
  Reward: 512 explicit-prompt preference rows (``prompt``, ``chosen``, ``rejected``):
  prompt = 64 words, chosen / rejected = " " + 63 words + " <|endoftext|>" -> 128-token
  sequences; ``max_length=160``.
  DPO: the reward rows with ``GPT2LMHeadModel``; both trainers get the same explicit frozen
  reference (a second identically seeded model: TRL 1.16 would otherwise reload
  ``model.name_or_path``), ``beta=0.1``, sigmoid loss; ``--precompute-ref`` sets
  ``precompute_ref_log_probs=True`` on both (the reference scores the dataset once and is
  dropped). The reference is built before the RSS baseline, so compare ``peak RSS total``.
  Both: ``per_device_train_batch_size=8``, ``gradient_accumulation_steps=1``,
  ``learning_rate=1e-5``, default AdamW, ``logging_steps=1``, ``report_to="none"``,
  ``seed=0``, ``bf16`` = (--dtype bf16); TRL also ``save_strategy="no"``,
  ``disable_tqdm=True``; rlhfkit ``save_steps=0``, ``disable_tqdm=True``. Any field the
  rlhfkit config rejects is dropped for rlhfkit with a printed note (kept in the JSON).
  NOTE TRL 1.16 defaults that matter: ``gradient_checkpointing=True`` and ``bf16=True``
  (when fp16 is unset). bf16 is always passed explicitly; gradient checkpointing is left at
  each implementation's default unless ``--gradient-checkpointing on|off`` is given (the
  effective setting is recorded).

Timing
  ``trainer.train()`` is wall-clocked (``time.perf_counter``) on fresh trainers with
  ``max_steps=K1`` and ``max_steps=K2`` (defaults 3 and 13; each trainer gets a freshly
  built, identically seeded model); per-step time = (t(K2) - t(K1)) / (K2 - K1), which
  cancels the fixed cost of ``train()`` (optimizer / dataloader set-up, first-step
  warm-up, a final save). One discarded warm-up ``train(max_steps=2)`` runs first, then
  ``--repeats`` (default 3) pairs; min and mean are reported.
  The 2 cores are shared with other work, and two OpenMP threads stall whenever one is
  descheduled (a step easily takes 2-4x longer), so: before timing the script waits (up to
  ``--wait-max`` s) until the 1-minute load average is below ``--wait-load``; before each
  pair it waits until other processes use <= ``--max-others`` cores (from /proc/stat minus
  this process's own CPU time over a 3 s sample); during each phase it measures the cores
  other work took, and a pair where that exceeded ``--max-others`` is redone (up to
  ``--max-retries`` times; the last attempt is kept but flagged, and the step statistics
  use only unflagged pairs when there are any).
  Cross-check that survives a busy machine: a forward pre-hook on the backbone stamps every
  forward call (one per optimizer step in both trainers, checked), so consecutive stamps
  bound one whole step; ``step_interval_s`` is the median / min over the intervals (after
  each run's first step) during which other work took <= ``--max-others`` cores. The hook
  also records every input shape (the real batch each implementation runs). Loadavg, a
  ~50 ms matmul probe (``cpu_probe_gflops``) and own CPU / wall are recorded per phase.

Memory
  Peak RSS from /proc/self/status VmHWM, reset before each phase by writing "5" to
  /proc/self/clear_refs (falls back to ru_maxrss where not allowed). Per phase:
  ``rss_after_model`` (after building the model and touching every weight), peak during
  trainer construction + train(), and ``peak_delta`` = peak - rss_after_model. Headline:
  the first (warm-up, 2 steps: optimizer state exists from step 1) phase, the only one
  that starts in a fresh process; later phases start with memory glibc kept mapped after
  the previous trainer was freed, so their baselines are higher and their deltas smaller.
  All phases are kept in ``phases``; ``*_any_phase_max`` summarise them.
"""

from __future__ import annotations

import argparse
import importlib
import gc
import json
import os
import platform
import random
import re
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

from measure import cpu_speed_gflops, peak_mb, proc_usage, reset_peak, rss_mb  # benchmarks/measure.py

SPECIALS = ("<|unk|>", "<|pad|>", "<|startoftext|>", "<|endoftext|>")


# ----------------------------------------------------------------------------- machine state
def loadavg() -> list[float]:
    try:
        with open("/proc/loadavg") as f:
            return [float(x) for x in f.read().split()[:3]]
    except OSError:
        return [float("nan")] * 3


def wait_for_quiet(threshold: float, max_wait: float, poll: float = 10.0) -> dict:
    t0 = time.time()
    start = loadavg()
    while loadavg()[0] >= threshold and time.time() - t0 < max_wait:
        time.sleep(poll)
    end = loadavg()
    waited = time.time() - t0
    ok = end[0] < threshold
    msg = f"[train_bench] load {start[0]:.2f} -> {end[0]:.2f} after waiting {waited:.0f}s"
    print(msg + ("" if ok else f" (STILL >= {threshold}: timings may be contended)"), flush=True)
    return {"threshold": threshold, "load_before_wait": start, "load_after_wait": end, "waited_s": waited,
            "quiet": ok}


def machine_cpu() -> tuple[float, float]:
    """(busy seconds excluding steal, steal seconds) summed over all CPUs, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return float("nan"), float("nan")
    hz = os.sysconf("SC_CLK_TCK")
    user, nice, system, idle, iowait, irq, softirq = v[:7]
    steal = v[7] if len(v) > 7 else 0
    return (user + nice + system + irq + softirq) / hz, steal / hz


def others_cores(c0, c1, own_cpu_s: float, wall_s: float) -> float:
    """Average number of cores other processes (and the hypervisor's steal) took while we ran."""
    busy = c1[0] - c0[0] - own_cpu_s
    return max(0.0, busy + (c1[1] - c0[1])) / max(wall_s, 1e-9)


def wait_for_idle_cores(max_others: float, max_wait: float, window: float = 3.0) -> float:
    """Sleep until other work uses at most ``max_others`` cores over a ``window``-second sample."""
    t0 = time.time()
    while True:
        c0, u0 = machine_cpu(), proc_usage()
        time.sleep(window)
        c1, u1 = machine_cpu(), proc_usage()
        others = others_cores(c0, c1, u1[0] - u0[0] + u1[1] - u0[1], window)
        if others <= max_others or time.time() - t0 > max_wait:
            print(f"[train_bench] other work: {others:.2f} cores after waiting {time.time() - t0:.0f}s", flush=True)
            return others


# ----------------------------------------------------------------------------- workload
def import_impl(impl: str, task: str):
    """(library, Config class, Trainer class) for the task; the only difference between the two runs."""
    names = {"sft": ("SFTConfig", "SFTTrainer"), "reward": ("RewardConfig", "RewardTrainer"),
             "dpo": ("DPOConfig", "DPOTrainer")}[task]
    lib = importlib.import_module("trl" if impl == "trl" else "rlhfkit")
    return lib, getattr(lib, names[0]), getattr(lib, names[1])


def build_tokenizer(vocab_size: int):
    """Word-level fast tokenizer with exactly ``vocab_size`` entries; see the module docstring."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    n_words = vocab_size - len(SPECIALS)
    vocab = {f"w{i}": i for i in range(n_words)}
    vocab.update({s: n_words + j for j, s in enumerate(SPECIALS)})
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|unk|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<|unk|>", pad_token="<|pad|>",
                                   bos_token="<|startoftext|>", eos_token="<|endoftext|>")
    assert len(fast) == vocab_size and fast.eos_token_id == vocab_size - 1, (len(fast), fast.eos_token_id)
    return fast, n_words


def make_rows(args, n_words: int, eos: str) -> list[dict]:
    rng = random.Random(args.seed)

    def words(n):
        return " ".join(f"w{rng.randrange(n_words)}" for _ in range(n))

    def completion():
        # leading space: trainers concatenate prompt + completion as strings
        return " " + words(args.completion_len - 1) + " " + eos

    rows = []
    for _ in range(args.rows):
        if args.task == "sft":
            rows.append({"prompt": words(args.prompt_len), "completion": completion()})
        else:
            rows.append({"prompt": words(args.prompt_len), "chosen": completion(), "rejected": completion()})
    return rows


def check_rows(rows, tokenizer, args) -> None:
    """Every text must tokenize to the intended count of non-special ids (+ the final eos)."""
    second = "completion" if args.task == "sft" else "chosen"
    for r in rows[:16]:
        p = tokenizer(r["prompt"], add_special_tokens=False)["input_ids"]
        pc = tokenizer(r["prompt"] + r[second], add_special_tokens=False)["input_ids"]
        assert len(p) == args.prompt_len and max(p) < len(tokenizer) - len(SPECIALS), len(p)
        assert len(pc) == args.prompt_len + args.completion_len and pc[-1] == tokenizer.eos_token_id, len(pc)
        assert pc[: args.prompt_len] == p


def model_config(args, pad_id: int, eos_id: int, bos_id: int):
    from transformers import GPT2Config

    return GPT2Config(vocab_size=args.vocab, n_positions=args.n_positions, n_embd=args.n_embd, n_layer=args.n_layer,
                      n_head=args.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, summary_first_dropout=0.0,
                      bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=pad_id, num_labels=1)


def build_model(args, config):
    import torch
    from transformers import AutoModelForSequenceClassification, GPT2LMHeadModel

    torch.manual_seed(args.seed)
    if args.task in ("sft", "dpo"):
        model = GPT2LMHeadModel(config)
    else:
        model = AutoModelForSequenceClassification.from_config(config)
    with torch.no_grad():  # touch every weight so the RSS baseline really holds the model
        for t in list(model.parameters()) + list(model.buffers()):
            t.sum()
    return model


def make_config(ConfigCls, args, output_dir: str, max_steps: int) -> tuple[object, dict, list[str]]:
    """Build the trainer config; rlhfkit drops (and reports) any field it does not accept."""
    fields = dict(output_dir=output_dir, per_device_train_batch_size=args.batch_size, gradient_accumulation_steps=1,
                  learning_rate=args.lr, max_steps=max_steps, max_length=args.max_length, logging_steps=1,
                  report_to="none", seed=args.seed, bf16=(args.dtype == "bf16"), disable_tqdm=True)
    if args.task == "sft":
        fields.update(completion_only_loss=True, packing=False)
    if args.task == "dpo":
        fields.update(beta=0.1, loss_type="sigmoid" if args.impl == "rlhfkit" else ["sigmoid"],
                      precompute_ref_log_probs=args.precompute_ref)
    fields.update(save_strategy="no") if args.impl == "trl" else fields.update(save_steps=0)
    if args.gradient_checkpointing != "default":
        fields["gradient_checkpointing"] = args.gradient_checkpointing == "on"
    dropped: list[str] = []
    while True:
        try:
            return ConfigCls(**fields), fields, dropped
        except TypeError as e:
            m = re.search(r"unexpected keyword argument '(\w+)'", str(e))
            if args.impl == "trl" or not m or m.group(1) not in fields:
                raise
            name = m.group(1)
            print(f"[train_bench] NOTE: {ConfigCls.__module__}.{ConfigCls.__name__} has no field "
                  f"{name!r}; dropped it for rlhfkit (wanted {name}={fields[name]!r})", file=sys.stderr, flush=True)
            dropped.append(name)
            fields.pop(name)


class ShapeRecorder:
    """Forward pre-hook on the backbone: the (rows, length) of every forward call, and when it started.

    TRL runs one backbone forward per optimizer step here, rlhfkit one or two (checked: forward_calls is a
    multiple of max_steps), so the time between the first calls of consecutive steps is one whole training step (forward, backward,
    optimizer, logging, next batch). The machine's and this process's CPU counters are sampled too, so each
    interval knows how many cores other work took during it.
    """

    def __init__(self):
        self.calls: list[tuple[int, ...]] = []
        self.stamps: list[tuple[float, tuple[float, float], float]] = []

    def __call__(self, module, args, kwargs):
        x = kwargs.get("input_ids")
        if x is None and args:
            x = args[0]
        if x is None:
            x = kwargs.get("inputs_embeds")
        self.calls.append(tuple(x.shape[:2]) if x is not None else ())
        u = proc_usage()
        self.stamps.append((time.perf_counter(), machine_cpu(), u[0] + u[1]))

    def intervals(self, steps: int, skip: int = 1) -> list[dict]:
        """Step intervals after the first ``skip`` steps (the first one creates the optimizer state).

        When an implementation runs k backbone forwards per step (rlhfkit's prompt-once reward pass: k = 2,
        prompts then completions), every k-th stamp starts a step.
        """
        per_step = max(1, len(self.stamps) // max(1, steps))
        stamps = self.stamps[::per_step]
        out = []
        for (t0, c0, o0), (t1, c1, o1) in zip(stamps[skip:], stamps[skip + 1:]):
            dt = t1 - t0
            out.append({"s": dt, "others_cores": others_cores(c0, c1, o1 - o0, dt), "own_cpu_s": o1 - o0})
        return out


def backbone(model):
    return getattr(model, "base_model", None) or getattr(model, "transformer", model)


def optimizer_info(trainer) -> dict | None:
    opt = getattr(trainer, "optimizer", None) or getattr(getattr(trainer, "loop", None), "optimizer", None)
    for _ in range(3):  # accelerate's AcceleratedOptimizer wraps the torch one
        inner = getattr(opt, "optimizer", None)
        if inner is not None and hasattr(inner, "defaults"):
            opt = inner
    if opt is None or not hasattr(opt, "defaults"):
        return None
    keep = ("lr", "betas", "eps", "weight_decay", "fused", "foreach", "amsgrad")
    return {"class": type(opt).__module__ + "." + type(opt).__name__,
            **{k: v for k, v in opt.defaults.items() if k in keep}}


def training_losses(trainer, out) -> list[float]:
    """Per-step training losses from the trainer's log history or train()'s return value."""
    def pick(rows):
        vals = []
        for h in rows or []:
            key = next((k for k in ("loss", "train/loss", "train_loss") if isinstance(h, dict) and k in h), None)
            if key is not None and key != "train_loss":
                vals.append(float(h[key]))
        return vals

    losses = pick(getattr(getattr(trainer, "state", None), "log_history", None))
    if not losses and isinstance(out, list):
        losses = pick(out)
    if not losses and getattr(out, "training_loss", None) is not None:
        losses = [float(out.training_loss)]
    return losses


def step_stats(phases: list[dict], k1: int, k2: int, max_others: float = 0.15) -> dict:
    """Per-step wall and CPU seconds from the accepted (K1, K2) pairs; only uncontended pairs if any."""
    pairs = {}
    for p in phases:
        if p.get("accepted"):
            pairs.setdefault(p["phase"], {})[p["max_steps"]] = p
    pairs = [(v[k1], v[k2]) for v in pairs.values() if k1 in v and k2 in v]
    clean = [pp for pp in pairs if not pp[0].get("contended") and not pp[1].get("contended")]
    use = clean or pairs
    wall = [(b["train_s"] - a["train_s"]) / (k2 - k1) for a, b in use]
    cpu = [(b["user_s"] + b["sys_s"] - a["user_s"] - a["sys_s"]) / (k2 - k1) for a, b in use]
    iv = [i for p in phases for i in p.get("step_intervals", [])]
    iv_clean = sorted(i["s"] for i in iv if i["others_cores"] <= max_others)
    iv_cpu = sorted(i["own_cpu_s"] for i in iv if i["others_cores"] <= max_others)
    intervals = ({"min": iv_clean[0], "median": iv_clean[len(iv_clean) // 2], "n_clean": len(iv_clean),
                  "n_all": len(iv), "own_cpu_s_median": iv_cpu[len(iv_cpu) // 2]} if iv_clean else
                 {"n_clean": 0, "n_all": len(iv)})
    return {"step_s": {"min": min(wall), "mean": sum(wall) / len(wall), "max": max(wall), "all": wall,
                       "repeats_used": len(use), "only_uncontended": bool(clean),
                       "others_cores_max": max(p["others_cores"] for pp in use for p in pp)},
            "step_interval_s": intervals,
            "cpu_s_per_step": {"min": min(cpu), "mean": sum(cpu) / len(cpu), "all": cpu},
            "cpu_busy_over_wall_min": min(p["cpu_util"] for pp in use for p in pp)}


def memory_stats(phases: list[dict], reset_ok: bool = True) -> dict:
    """Headline memory from the first (warm-up) phase: the only one that starts in a fresh process.

    Later phases start after glibc has kept freed memory mapped, so their baselines are higher and their deltas
    smaller (and noisy); they are kept in ``phases`` and summarised as ``*_any_phase``.
    """
    first = phases[0]
    return {"peak_delta": first["peak_delta_mb"], "peak_rss_total": first["peak_rss_mb"],
            "rss_after_model": first["rss_after_model_mb"],
            "peak_delta_any_phase_max": max(p["peak_delta_mb"] for p in phases),
            "peak_rss_total_any_phase_max": max(p["peak_rss_mb"] for p in phases),
            "peak_source": "VmHWM (reset per phase), first phase" if reset_ok else "ru_maxrss (process lifetime)"}


# ----------------------------------------------------------------------------- run
def run(args) -> dict:
    warnings.filterwarnings("ignore")
    for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(k, "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    lib, ConfigCls, TrainerCls = import_impl(args.impl, args.task)
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()

    tokenizer, n_words = build_tokenizer(args.vocab)
    rows = make_rows(args, n_words, tokenizer.eos_token)
    check_rows(rows, tokenizer, args)
    config = model_config(args, tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id)
    reset_ok = reset_peak()

    phases, dropped_fields, used_fields = [], [], None
    gc_info, opt_info, max_grad_norm = {}, None, None

    def run_phase(name: str, steps: int, attempt: int = 0) -> dict:
        nonlocal used_fields, dropped_fields, gc_info, opt_info, max_grad_norm
        gc.collect()
        model = build_model(args, config)
        # DPO: both trainers get the same explicit frozen reference (TRL 1.16 would reload model.name_or_path)
        extra = {"ref_model": build_model(args, config)} if args.task == "dpo" else {}
        ds = datasets.Dataset.from_list(rows)  # fresh: TRL maps the dataset in place of its own copy
        tokenizer_i = build_tokenizer(args.vocab)[0]
        gc.collect()
        rss_after_model = rss_mb()
        rec = ShapeRecorder()
        handle = backbone(model).register_forward_pre_hook(rec, with_kwargs=True)
        out_dir = tempfile.mkdtemp(prefix="train_bench_")
        load = loadavg()
        probe = cpu_speed_gflops()
        reset_peak()
        c0, u0 = machine_cpu(), proc_usage()
        t_init = time.perf_counter()
        cfg, used_fields, dropped_fields = make_config(ConfigCls, args, out_dir, steps)
        trainer = TrainerCls(model=model, args=cfg, train_dataset=ds, processing_class=tokenizer_i, **extra)
        extra.clear()  # the trainer owns the reference now (and may free it after precomputing)
        t0 = time.perf_counter()
        out = trainer.train()
        t_train = time.perf_counter() - t0
        c1, u1 = machine_cpu(), proc_usage()
        peak = peak_mb(reset_ok)
        probe_after = cpu_speed_gflops()
        handle.remove()
        gc_info = {"config_gradient_checkpointing": getattr(cfg, "gradient_checkpointing", None),
                   "model_is_gradient_checkpointing": bool(getattr(model, "is_gradient_checkpointing", False))}
        opt_info = optimizer_info(trainer)
        max_grad_norm = getattr(cfg, "max_grad_norm", None)
        losses = training_losses(trainer, out)
        shapes = sorted(set(rec.calls))
        wall = t_train + t0 - t_init
        own = u1[0] - u0[0] + u1[1] - u0[1]
        ph = {"phase": name, "attempt": attempt, "max_steps": steps, "train_s": t_train, "init_s": t0 - t_init,
              "forward_calls": len(rec.calls), "forward_shapes": [list(x) for x in shapes],
              "step_intervals": rec.intervals(steps),
              "losses": losses, "loadavg_before": load, "cpu_probe_gflops": [probe, probe_after],
              "user_s": u1[0] - u0[0], "sys_s": u1[1] - u0[1], "minor_faults": u1[2] - u0[2],
              "cpu_util": own / wall, "others_cores": others_cores(c0, c1, own, wall),
              "rss_after_model_mb": rss_after_model, "peak_rss_mb": peak, "peak_delta_mb": peak - rss_after_model}
        phases.append(ph)
        print(f"[train_bench] {args.impl} {args.task} {args.dtype} {name}.{attempt} max_steps={steps}: "
              f"train {t_train:.2f}s (init {ph['init_s']:.2f}s) fwd calls {len(rec.calls)} shapes {shapes} loss "
              f"{losses[0] if losses else float('nan'):.3f}->{losses[-1] if losses else float('nan'):.3f} "
              f"peak {peak:.0f}MB (+{peak - rss_after_model:.0f}) load {load[0]:.2f} "
              f"probe {probe:.0f}/{probe_after:.0f} GFLOP/s own cpu/wall {ph['cpu_util']:.2f} "
              f"others {ph['others_cores']:.2f} cores", flush=True)
        del trainer, model, ds, out, tokenizer_i
        shutil.rmtree(out_dir, ignore_errors=True)
        return ph

    quiet = wait_for_quiet(args.wait_load, args.wait_max)
    run_phase("warmup", args.warmup_steps)
    accepted = []
    for r in range(args.repeats):
        for attempt in range(args.max_retries + 1):
            wait_for_idle_cores(args.max_others, args.wait_max if attempt else 60.0)
            p1 = run_phase(f"rep{r}", args.k1, attempt)
            p2 = run_phase(f"rep{r}", args.k2, attempt)
            clean = max(p1["others_cores"], p2["others_cores"]) <= args.max_others
            if clean or attempt == args.max_retries:
                p1["accepted"] = p2["accepted"] = True
                p1["contended"] = p2["contended"] = not clean
                accepted.append((p1, p2))
                break
            print(f"[train_bench] rep{r}: other work used {max(p1['others_cores'], p2['others_cores']):.2f} "
                  f"cores (> {args.max_others}); repeating it", flush=True)

    stats = step_stats(phases, args.k1, args.k2, args.max_others)
    per_step = stats["step_s"]["all"]
    tokens_per_step = args.batch_size * (args.prompt_len + args.completion_len) * (1 if args.task == "sft" else 2)

    import accelerate
    return {
        "impl": args.impl,
        "impl_version": getattr(lib, "__version__", "unknown"),
        "task": args.task,
        "precompute_ref": bool(getattr(args, "precompute_ref", False)),
        "dtype": args.dtype,
        "gradient_checkpointing_option": args.gradient_checkpointing,
        "gradient_checkpointing_effective": gc_info,
        "config_fields": used_fields,
        "optimizer": opt_info,
        "max_grad_norm": max_grad_norm,
        "config_fields_dropped": dropped_fields,
        "workload": {k: getattr(args, k) for k in ("task", "rows", "prompt_len", "completion_len", "max_length",
                                                  "batch_size", "lr", "n_layer", "n_embd", "n_head", "vocab",
                                                  "n_positions", "seed", "k1", "k2", "repeats", "warmup_steps",
                                                  "threads")},
        "tokens_per_step": tokens_per_step,
        "step_s": stats["step_s"],
        # one step = time between consecutive backbone forwards, uncontended intervals only (a cross-check that
        # survives a busy machine: each interval is judged on its own)
        "step_interval_s": stats["step_interval_s"],
        "tokens_per_s_best": tokens_per_step / min(per_step),
        # CPU seconds (user + sys, all threads) per step, same K2 - K1 difference: less sensitive to other work
        # taking cores than wall time, though OpenMP spinning still inflates it somewhat under contention.
        "cpu_s_per_step": stats["cpu_s_per_step"],
        # with T threads on an idle machine, own CPU / wall is close to T; much less means other work took cores
        "cpu_busy_over_wall_min": stats["cpu_busy_over_wall_min"],
        "memory_mb": memory_stats(phases, reset_ok),
        "load": {"wait": quiet, "max_during_phases": max(p["loadavg_before"][0] for p in phases)},
        "contention": {"others_cores_max_accepted": max(p["others_cores"] for pair in accepted for p in pair),
                       "repeats_contended": sum(pair[0]["contended"] for pair in accepted),
                       "phases_run": len(phases), "max_others": args.max_others},
        "cpu_probe_gflops": {"min": min(min(p["cpu_probe_gflops"]) for p in phases),
                             "max": max(max(p["cpu_probe_gflops"]) for p in phases)},
        "phases": phases,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "accelerate": accelerate.__version__,
                     "datasets": datasets.__version__, args.impl: getattr(lib, "__version__", "unknown")},
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "platform": platform.platform()},
    }


# ----------------------------------------------------------------------------- summary
def summarise(paths: list[str]) -> str:
    runs = []
    for p in paths:
        with open(p) as f:
            r = json.load(f)
        if any("accepted" in ph for ph in r["phases"]):  # recompute: older files kept contended repeats
            r.update(step_stats(r["phases"], r["workload"]["k1"], r["workload"]["k2"],
                                r.get("contention", {}).get("max_others", 0.15)))
            r["tokens_per_s_best"] = r["tokens_per_step"] / r["step_s"]["min"]
            r["memory_mb"] = memory_stats(r["phases"])
        runs.append(r)
    names = [f"{r['impl']}-{r['task']}-{r['dtype']}" + ("-precomp" if r.get("precompute_ref") else "")
             + ("" if r.get("gradient_checkpointing_option", "default") == "default"
                else f"-gc{r['gradient_checkpointing_option']}") for r in runs]

    def row(label, get, fmt="{:.3f}", ratio=False):
        vals = [get(r) for r in runs]
        cells = [fmt.format(v) if v is not None else "-" for v in vals]
        for v in vals[1:]:
            b = vals[0]
            cells.append(f"{b / v:.2f}x" if ratio and b and v else "")
        return [label] + cells

    def shapes(r):
        ph = next(p for p in r["phases"] if p["phase"] == "rep0" and p["max_steps"] == r["workload"]["k2"])
        return "{}/{}st {}".format(ph["forward_calls"], ph["max_steps"],
                                   ",".join("x".join(map(str, s)) for s in ph["forward_shapes"]))

    hdr = ["metric"] + names + [f"{names[0]}/{n}" for n in names[1:]]
    rows = [
        row("step min (s)", lambda r: r["step_s"]["min"], ratio=True),
        row("step mean (s)", lambda r: r["step_s"]["mean"], ratio=True),
        row("step interval median (s)", lambda r: r.get("step_interval_s", {}).get("median"), ratio=True),
        row("step interval min (s)", lambda r: r.get("step_interval_s", {}).get("min"), ratio=True),
        row("clean intervals / all", lambda r: "{}/{}".format(r.get("step_interval_s", {}).get("n_clean", "-"),
                                                              r.get("step_interval_s", {}).get("n_all", "-")), "{}"),
        row("tokens/s (best)", lambda r: r["tokens_per_s_best"], "{:.0f}"),
        row("CPU s / step (min)", lambda r: r.get("cpu_s_per_step", {}).get("min"), ratio=True),
        row("peak RSS - model (MB)", lambda r: r["memory_mb"]["peak_delta"], "{:.0f}", ratio=True),
        row("peak RSS total (MB)", lambda r: r["memory_mb"]["peak_rss_total"], "{:.0f}", ratio=True),
        row("peak RSS total, any phase", lambda r: r["memory_mb"]["peak_rss_total_any_phase_max"], "{:.0f}"),
        row("grad checkpointing", lambda r: str(r["gradient_checkpointing_effective"].get(
            "model_is_gradient_checkpointing")), "{}"),
        row("forward calls, shapes", shapes, "{}"),
        row("first loss", lambda r: (r["phases"][-1]["losses"] or [None])[0], "{}"),
        row("others' cores (max, used)", lambda r: r["step_s"].get("others_cores_max"), "{:.2f}"),
        row("repeats used (clean?)", lambda r: "{} ({})".format(r["step_s"].get("repeats_used", "?"), "yes" if
            r["step_s"].get("only_uncontended") else "NO"), "{}"),
        row("load 1m max", lambda r: r["load"]["max_during_phases"], "{:.2f}"),
        row("own CPU / wall (min)", lambda r: r.get("cpu_busy_over_wall_min"), "{:.2f}"),
        row("CPU probe min (GFLOP/s)", lambda r: r["cpu_probe_gflops"]["min"], "{:.0f}"),
        row("CPU probe max (GFLOP/s)", lambda r: r["cpu_probe_gflops"]["max"], "{:.0f}"),
    ]
    for r in rows:
        r[:] = [c if not isinstance(c, float) else f"{c:.3f}" for c in r]
        if r[0] == "first loss":
            r[1:1 + len(runs)] = [c if c == "-" else f"{float(c):.3f}" for c in r[1:1 + len(runs)]]
    widths = [max(len(str(x[i])) for x in [hdr] + rows) for i in range(len(hdr))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in [hdr] + rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"ratios: {names[0]} / other for step time and memory (> 1: the other is faster / smaller). "
                 "Step time = (t(K2) - t(K1)) / (K2 - K1) per repeat.")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--impl", choices=["trl", "rlhfkit"])
    p.add_argument("--task", choices=["sft", "reward", "dpo"])
    p.add_argument("--precompute-ref", dest="precompute_ref", action="store_true",
                   help="dpo: score the dataset with the reference once before training and drop the reference model")
    p.add_argument("--out", help="write the result JSON here")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--steps", type=int, default=None, help="K2 (default 13); K1 stays --k1")
    p.add_argument("--k1", type=int, default=3)
    p.add_argument("--k2", type=int, default=13)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup-steps", dest="warmup_steps", type=int, default=2)
    p.add_argument("--gradient-checkpointing", dest="gradient_checkpointing", choices=["default", "on", "off"],
                   default="default", help="default: do not pass the field (TRL 1.16 defaults to True)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--wait-load", dest="wait_load", type=float, default=0.5,
                   help="wait until the 1-minute load average is below this before timing")
    p.add_argument("--wait-max", dest="wait_max", type=float, default=300.0, help="give up waiting after (s)")
    p.add_argument("--max-others", dest="max_others", type=float, default=0.15,
                   help="a repeat is redone when other processes took more than this many cores on average "
                        "during it (measured from /proc/stat minus this process)")
    p.add_argument("--max-retries", dest="max_retries", type=int, default=2,
                   help="redo a contended repeat at most this many times (the last attempt is kept, flagged)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rows", type=int, default=512)
    p.add_argument("--prompt-len", dest="prompt_len", type=int, default=64)
    p.add_argument("--completion-len", dest="completion_len", type=int, default=64,
                   help="completion / chosen / rejected tokens, including the final eos")
    p.add_argument("--max-length", dest="max_length", type=int, default=160)
    p.add_argument("--batch-size", dest="batch_size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--n-layer", dest="n_layer", type=int, default=6)
    p.add_argument("--n-embd", dest="n_embd", type=int, default=384)
    p.add_argument("--n-head", dest="n_head", type=int, default=6)
    p.add_argument("--vocab", type=int, default=50257)
    p.add_argument("--n-positions", dest="n_positions", type=int, default=1024)
    p.add_argument("--summarise", nargs="+", metavar="RESULT_JSON",
                   help="print a side-by-side table of result files (the first is the baseline) and exit")
    args = p.parse_args(argv)
    if args.summarise:
        print(summarise(args.summarise))
        return
    if not args.impl or not args.task:
        p.error("--impl and --task are required (or use --summarise)")
    if args.steps is not None:
        args.k2 = args.steps
    if args.k2 <= args.k1:
        p.error("K2 (--steps/--k2) must be larger than --k1")
    result = run(args)
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(json.dumps({k: result[k] for k in ("impl", "task", "dtype", "step_s", "memory_mb")}, indent=1))


if __name__ == "__main__":
    main()
