"""Benchmark one classic PPO iteration (generate + step) on TRL 0.11.4 or rlhfkit.

The same script, using only the classic API, runs on both implementations; only the
import changes (``from trl import ...`` vs ``from rlhfkit import ...``):

    benchmarks/.trl-env/bin/python benchmarks/ppo_bench.py --impl trl --out results/trl_fp32.json \\
        --peak results/peak.json
    .venv/bin/python benchmarks/ppo_bench.py --impl rlhfkit --out results/rlhfkit_fp32.json \\
        --peak results/peak.json [--dtype bf16]
    python benchmarks/ppo_bench.py --summarise results/trl_fp32.json results/rlhfkit_fp32.json ...

(``benchmarks/run_ppo_bench.sh`` does all of it.)

Workload (the project's issue): batch_size=16, mini_batch_size=4, ppo_epochs=4 (16
optimizer steps per ``step()``), queries of exactly 16 random token ids, exactly 32 new
tokens sampled (do_sample, top_k=0, top_p=1.0, min_new_tokens=max_new_tokens=32), a
GPT-2-shaped model with 6 layers x 384 hidden, 6 heads, GPT-2's vocabulary (50257) and
1024 positions, random weights from ``torch.manual_seed(0)``, and dropout 0 everywhere
(``--dropout``, default 0: GPT-2's resid/embd/attn dropout and the value head's
``summary_dropout_prob``, which both implementations read from the config). With dropout
both sides would do different work: rlhfkit samples in eval mode (dropout off) while TRL
0.11.4 samples with the model in train mode (dropout on). The model is saved with
``GPT2LMHeadModel.save_pretrained`` to a temporary folder and loaded twice with the
implementation's ``AutoModelForCausalLMWithValueHead.from_pretrained`` (policy and reference).

Algorithmic differences that remain (both run the same PPO objective on the same batch):
rlhfkit reuses the log-probs and values computed while sampling as the old policy's (fp32,
checked against a recomputation on the first step) where TRL runs a second no-grad policy
forward; rlhfkit runs the LM head only over response positions (``logits_to_keep``) where TRL
computes logits at every position; rlhfkit's Adam is the fused kernel.

Timing: ``time.perf_counter`` around ``trainer.generate(...)`` and ``trainer.step(...)``
separately, ``--warmup`` iterations (default 1) then ``--iters`` (default 3). The step's own
``time/*`` stats are averaged too where the implementation returns them. Before each phase
(and after the step) a ~50 ms fp32 matmul probe records how fast the CPU is at that moment
(``cpu_probe_gflops``), and ``process_usage`` keeps each phase's user/sys CPU seconds and
minor page faults: on a shared machine other work can slow a phase several-fold (two
OpenMP threads stall whenever one is descheduled), so compare min times and check the
probes before trusting a ratio.

Memory: peak RSS of the process. ``rss_after_models`` is the RSS once policy and
reference are built and every weight has been read once (safetensors maps files lazily); the peak is read from /proc/self/status VmHWM (reset with
/proc/self/clear_refs before the measured phases where the kernel allows it), falling back
to ``resource.getrusage(...).ru_maxrss``. ``peak_delta_mb`` = peak - rss_after_models.

FLOPs (model FLOPs, matmuls only, per iteration; B batch, P query tokens, G new tokens,
T = P + G, L layers, d hidden, V vocab, Nb = parameters of the transformer blocks, i.e.
all parameters except the token/position embeddings and the LM head):

    F_fwd(T)  = 2*Nb*T + 2*d*V*T + 4*L*d*T*(T+1)/2   one sequence, logits at every position,
                                                     causal attention (QK^T and AV)
    generate  = B * (2*Nb*(P+G-1) + 2*d*V*G + 4*L*d*(P*(P+1)/2 + sum_{p=P}^{P+G-2} (p+1)))
                (prefill of P tokens + G-1 cached decode steps; LM head only where a token
                is sampled; the value head is ignored, 2*d per token)
    step      = B * (2 + 3*ppo_epochs) * F_fwd(T)
                (no-grad forward of policy and reference, then ppo_epochs passes of
                forward + backward = 3x forward over all B sequences)

Generation bounds (reported as ``generate_bounds``): generation reads every weight of the
model body and LM head once per forward call (prefill + G-1 cached steps, per generate
chunk), so ``weight_read_s = G * (Nb + d*V) * bytes_per_weight / read_bandwidth`` with the
read bandwidth measured on the spot (``read_bandwidth_gbs``: best of a few sums over a
256 MB float32 array) and 4 bytes per weight (fp32 weights; under bf16 autocast the casts
still read the fp32 master weights); ``compute_s = generate FLOPs / matmul peak``. The
bound is the larger of the two; ``generate_vs_bound`` = measured generate time / bound.

Phases: ``generate`` and ``step`` are timed outside; inside the step both implementations
report ``time/ppo/forward_pass`` (the no-grad rollout forward of policy and reference) and
``time/ppo/optimize_step`` (the ppo_epochs minibatch updates). ``--table`` groups many
result files by (vocabulary, dtype, implementation), takes medians over every timed
iteration of every repeat, and prints TRL / rlhfkit ratios side by side.

MFU = FLOPs / measured seconds / matmul peak (fp32 or bf16 peak from ``--peak``, a JSON
written by benchmarks/matmul_peak.py; measured on the spot if not given).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from measure import cpu_speed_gflops, peak_mb, proc_usage, reset_peak, rss_mb  # benchmarks/measure.py

HERE = Path(__file__).resolve().parent


# ----------------------------------------------------------------------------- flops
def count_flops(n_block: int, L: int, d: int, V: int, B: int, P: int, G: int, ppo_epochs: int) -> dict:
    T = P + G
    f_fwd = 2 * n_block * T + 2 * d * V * T + 4 * L * d * T * (T + 1) / 2
    attn_gen = P * (P + 1) / 2 + sum(p + 1 for p in range(P, P + G - 1))
    gen = B * (2 * n_block * (P + G - 1) + 2 * d * V * G + 4 * L * d * attn_gen)
    step = B * (2 + 3 * ppo_epochs) * f_fwd
    return {"generate": gen, "step": step, "total": gen + step, "forward_one_sequence": f_fwd}


# ----------------------------------------------------------------------------- set-up
def import_impl(impl: str):
    if impl == "trl":
        import trl
        from trl import AutoModelForCausalLMWithValueHead, PPOConfig, PPOTrainer
        return trl, PPOConfig, PPOTrainer, AutoModelForCausalLMWithValueHead
    import rlhfkit
    from rlhfkit import AutoModelForCausalLMWithValueHead, PPOConfig, PPOTrainer
    return rlhfkit, PPOConfig, PPOTrainer, AutoModelForCausalLMWithValueHead


def build_tokenizer():
    """A tiny word-level fast tokenizer: eos = pad = id 0 (< vocab). Token ids fed are random."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<|endoftext|>": 0, "<|unk|>": 1}
    vocab.update({f"w{i}": i + 2 for i in range(64)})
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|unk|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", unk_token="<|unk|>")
    fast.pad_token = fast.eos_token  # as in TRL's quickstart
    return fast


def save_base_model(folder: str, args, eos_id: int) -> None:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    # One dropout for body and value head (both implementations read summary_dropout_prob from the
    # config). eos/bos = the tokenizer's eos so that min_new_tokens really suppresses it and every
    # response has exactly G tokens.
    d = args.dropout
    config = GPT2Config(vocab_size=args.vocab, n_positions=args.n_positions, n_embd=args.n_embd,
                        n_layer=args.n_layer, n_head=args.n_head, bos_token_id=eos_id, eos_token_id=eos_id,
                        resid_pdrop=d, embd_pdrop=d, attn_pdrop=d, summary_dropout_prob=d)
    torch.manual_seed(args.seed)
    GPT2LMHeadModel(config).save_pretrained(folder)


def make_config(PPOConfig, args) -> tuple[object, str]:
    base = dict(batch_size=args.batch_size, mini_batch_size=args.mini_batch_size, ppo_epochs=args.ppo_epochs,
                learning_rate=1.41e-5, seed=args.seed)
    if args.dtype == "fp32":
        return PPOConfig(**base), "fp32 (no mixed precision)"
    if args.impl == "rlhfkit":
        try:
            return PPOConfig(**base, mixed_precision="bf16"), "PPOConfig(mixed_precision='bf16')"
        except TypeError as e:
            print(f"[ppo_bench] rlhfkit PPOConfig has no mixed_precision field ({e}); "
                  "FALLING BACK to accelerator_kwargs={'mixed_precision': 'bf16'}", file=sys.stderr)
    return (PPOConfig(**base, accelerator_kwargs={"mixed_precision": "bf16"}),
            "PPOConfig(accelerator_kwargs={'mixed_precision': 'bf16'})")


def peak_gflops(args, dtype: str) -> tuple[float, str]:
    if args.peak and Path(args.peak).exists():
        with open(args.peak) as f:
            return float(json.load(f)["peak_gflops"][dtype]), args.peak
    sys.path.insert(0, str(HERE))
    import matmul_peak
    res = matmul_peak.main(["--sizes", "2048", "--repeats", "3", "--dtypes", dtype])
    return float(res["peak_gflops"][dtype]), "measured now (matmul_peak.py --sizes 2048)"


def usage_delta(a, b) -> dict:
    return {"user_s": b[0] - a[0], "sys_s": b[1] - a[1], "minor_faults": b[2] - a[2]}


def median(xs: list[float]) -> float:
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def summarise_times(xs: list[float]) -> dict:
    return {"mean_s": sum(xs) / len(xs), "median_s": median(xs), "min_s": min(xs), "max_s": max(xs), "all_s": xs}


def read_bandwidth_gbs(mb: int = 256, repeats: int = 5) -> float:
    """Best-of-``repeats`` read bandwidth (GB/s) of a float32 sum over ``mb`` MB."""
    import torch

    x = torch.ones(mb * 2**20 // 4)
    x.sum()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        x.sum()
        best = min(best, time.perf_counter() - t0)
    return x.numel() * 4 / best / 1e9


# ----------------------------------------------------------------------------- run
def run(args) -> dict:
    warnings.filterwarnings("ignore")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    lib, PPOConfig, PPOTrainer, ValueHeadModel = import_impl(args.impl)

    rss_start = rss_mb()
    tokenizer = build_tokenizer()
    eos = tokenizer.eos_token_id
    with tempfile.TemporaryDirectory() as tmp:
        # built in a child process so that its freed memory does not blur the RSS baseline
        cmd = [sys.executable, __file__, "--save-base-model", tmp, "--eos-id", str(eos)] + [
            f"--{k.replace('_', '-')}={getattr(args, k)}" for k in ("seed", "n_layer", "n_embd", "n_head", "vocab",
                                                                    "n_positions", "dropout")]
        subprocess.run(cmd, check=True)
        gc.collect()
        rss_before_models = rss_mb()
        policy = ValueHeadModel.from_pretrained(tmp)
        ref = ValueHeadModel.from_pretrained(tmp)
    # safetensors loads lazily (mmap): read every weight once so the baseline really holds both models
    with torch.no_grad():
        for m in (policy, ref):
            for t in list(m.parameters()) + list(m.buffers()):
                t.sum()
    gc.collect()
    rss_after_models = rss_mb()
    config, precision = make_config(PPOConfig, args)
    trainer = PPOTrainer(config, policy, ref, tokenizer)
    gc.collect()
    rss_after_trainer = rss_mb()

    inner = getattr(policy, "pretrained_model", policy)
    named = dict(inner.named_parameters())
    n_total = sum(p.numel() for p in named.values())
    n_embed = sum(p.numel() for n, p in named.items() if n.endswith(("wte.weight", "wpe.weight", "lm_head.weight")))
    n_block = n_total - n_embed  # lm_head is tied to wte
    flops = count_flops(n_block, args.n_layer, args.n_embd, args.vocab, args.batch_size, args.query_len,
                        args.new_tokens, args.ppo_epochs)

    gen_kwargs = dict(do_sample=True, top_k=0, top_p=1.0, min_new_tokens=args.new_tokens,
                      max_new_tokens=args.new_tokens, pad_token_id=eos)
    g = torch.Generator().manual_seed(args.seed + 1)
    allowed_low = 2  # ids 0 (eos/pad) and 1 (unk) are never fed

    reset_ok = reset_peak()
    gen_t, step_t, gen_peak, step_peak, resp_lens, speed, usage = [], [], [], [], [], [], []
    step_stats_t: dict[str, list[float]] = {}
    bandwidth = read_bandwidth_gbs()
    for it in range(args.warmup + args.iters):
        queries = [torch.randint(allowed_low, args.vocab, (args.query_len,), generator=g)
                   for _ in range(args.batch_size)]
        speed_gen = cpu_speed_gflops()
        torch.manual_seed(args.seed + 100 + it)  # sampling
        reset_peak()
        u0 = proc_usage()
        t0 = time.perf_counter()
        responses = trainer.generate(queries, return_prompt=False, batch_size=args.batch_size, **gen_kwargs)
        t_gen = time.perf_counter() - t0
        u_gen = usage_delta(u0, proc_usage())
        p_gen = peak_mb(reset_ok)
        scores = [torch.randn((), generator=g) for _ in range(args.batch_size)]
        speed_step = cpu_speed_gflops()
        reset_peak()
        u0 = proc_usage()
        t0 = time.perf_counter()
        stats = trainer.step(queries, list(responses), scores)
        t_step = time.perf_counter() - t0
        u_step = usage_delta(u0, proc_usage())
        speed_after = cpu_speed_gflops()
        p_step = peak_mb(reset_ok)
        lens = [int(r.shape[-1]) for r in responses]
        tag = "warmup" if it < args.warmup else "iter"
        print(f"[ppo_bench] {args.impl} {args.dtype} {tag} {it}: generate {t_gen:.2f}s step {t_step:.2f}s "
              f"resp_len {min(lens)}-{max(lens)} peak_rss gen {p_gen:.0f}MB step {p_step:.0f}MB "
              f"cpu probe {speed_gen:.0f}/{speed_step:.0f}/{speed_after:.0f} GFLOP/s "
              f"step user {u_step['user_s']:.1f}s sys {u_step['sys_s']:.1f}s faults {u_step['minor_faults']}",
              flush=True)
        gen_peak.append(p_gen)
        step_peak.append(p_step)
        if it < args.warmup:
            continue
        gen_t.append(t_gen)
        step_t.append(t_step)
        speed.append({"before_generate": speed_gen, "before_step": speed_step, "after_step": speed_after})
        usage.append({"generate": u_gen, "step": u_step})
        resp_lens.extend(lens)
        for k, v in stats.items():
            if k.startswith("time/"):
                try:
                    step_stats_t.setdefault(k, []).append(float(v))
                except (TypeError, ValueError):
                    pass

    peak_all = max(gen_peak + step_peak) if reset_ok else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak_dtype = "bf16" if args.dtype == "bf16" else "fp32"
    peak, peak_src = peak_gflops(args, peak_dtype)
    gen_mean, step_mean = sum(gen_t) / len(gen_t), sum(step_t) / len(step_t)
    timing_stats = {k: sum(v) / len(v) for k, v in step_stats_t.items()}
    phases = {"generate": summarise_times(gen_t), "step": summarise_times(step_t),
              "iteration": summarise_times([a + b for a, b in zip(gen_t, step_t)])}
    for key, name in (("time/ppo/forward_pass", "rollout_forward"), ("time/ppo/optimize_step", "optimise")):
        if len(step_stats_t.get(key, [])) == len(step_t):
            phases[name] = summarise_times(step_stats_t[key])
    weight_bytes = (n_block + args.n_embd * args.vocab) * 4
    chunks = -(-args.batch_size // args.batch_size)  # generate(batch_size=B): one chunk
    weight_read_s = chunks * args.new_tokens * weight_bytes / (bandwidth * 1e9)
    opt = timing_stats.get("time/ppo/optimize_step")
    tot = timing_stats.get("time/ppo/total")

    def mfu(fl, s):
        return fl / s / (peak * 1e9)

    import accelerate
    return {
        "impl": args.impl,
        "impl_version": getattr(lib, "__version__", "unknown"),
        "dtype": args.dtype,
        "precision_option": precision,
        "workload": {k: getattr(args, k) for k in ("batch_size", "mini_batch_size", "ppo_epochs", "query_len",
                                                  "new_tokens", "n_layer", "n_embd", "n_head", "vocab",
                                                  "n_positions", "dropout", "seed", "iters", "warmup", "threads")},
        "response_lengths": {"min": min(resp_lens), "max": max(resp_lens)},
        "params": {"total_without_v_head": n_total, "blocks": n_block, "embeddings_and_tied_lm_head": n_embed},
        "generate": summarise_times(gen_t),
        "step": summarise_times(step_t),
        "iteration_mean_s": gen_mean + step_mean,
        "phases": phases,
        "read_bandwidth_gbs": bandwidth,
        "generate_bounds": {"weight_read_s": weight_read_s, "compute_s": flops["generate"] / (peak * 1e9),
                            "bound_s": max(weight_read_s, flops["generate"] / (peak * 1e9)),
                            "generate_vs_bound": phases["generate"]["median_s"]
                            / max(weight_read_s, flops["generate"] / (peak * 1e9))},
        "step_time_stats_mean": timing_stats,
        "cpu_probe_gflops": speed,
        "process_usage": usage,
        "optimize_fraction_of_step": (opt / tot) if opt and tot else None,
        "flops": flops,
        "peak_gflops": peak,
        "peak_gflops_dtype": peak_dtype,
        "peak_source": peak_src,
        "achieved_gflops": {"generate": flops["generate"] / gen_mean / 1e9, "step": flops["step"] / step_mean / 1e9,
                            "total": flops["total"] / (gen_mean + step_mean) / 1e9},
        "mfu": {"generate": mfu(flops["generate"], gen_mean), "step": mfu(flops["step"], step_mean),
                "total": mfu(flops["total"], gen_mean + step_mean)},
        "memory_mb": {
            "rss_start": rss_start,
            "rss_before_models": rss_before_models,
            "rss_after_models": rss_after_models,
            "rss_after_trainer": rss_after_trainer,
            "peak_rss_total": peak_all,
            "peak_rss_generate": max(gen_peak),
            "peak_rss_step": max(step_peak),
            "peak_delta": peak_all - rss_after_models,
            "peak_source": "VmHWM (reset per phase)" if reset_ok else "ru_maxrss (process lifetime)",
        },
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "accelerate": accelerate.__version__,
                     args.impl: getattr(lib, "__version__", "unknown")},
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "platform": platform.platform()},
    }


# ----------------------------------------------------------------------------- summary
def summarise(paths: list[str]) -> str:
    runs = []
    for p in paths:
        with open(p) as f:
            runs.append(json.load(f))
    base = runs[0]
    names = [f"{r['impl']}-{r['dtype']}" for r in runs]

    def row(label, get, fmt="{:.2f}", ratio=None):
        vals = [get(r) for r in runs]
        cells = [fmt.format(v) if v is not None else "-" for v in vals]
        for v in vals[1:]:
            b = vals[0]
            cells.append(f"{(b / v if ratio == 'base/run' else v / b):.2f}x" if ratio and b and v else "")
        return [label] + cells

    hdr = ["metric"] + names + [f"{names[0]}/{n}" for n in names[1:]]
    rows = [
        row("generate mean (s)", lambda r: r["generate"]["mean_s"], ratio="base/run"),
        row("generate min (s)", lambda r: r["generate"]["min_s"], ratio="base/run"),
        row("step mean (s)", lambda r: r["step"]["mean_s"], ratio="base/run"),
        row("step min (s)", lambda r: r["step"]["min_s"], ratio="base/run"),
        row("iteration mean (s)", lambda r: r["iteration_mean_s"], ratio="base/run"),
        row("optimize / step", lambda r: r.get("optimize_fraction_of_step")),
        row("MFU generate (%)", lambda r: 100 * r["mfu"]["generate"]),
        row("MFU step (%)", lambda r: 100 * r["mfu"]["step"]),
        row("MFU total (%)", lambda r: 100 * r["mfu"]["total"]),
        row("CPU probe min (GFLOP/s)", lambda r: min(min(x.values()) for x in r["cpu_probe_gflops"]), "{:.0f}"),
        row("CPU probe max (GFLOP/s)", lambda r: max(max(x.values()) for x in r["cpu_probe_gflops"]), "{:.0f}"),
        row("peak RSS - models (MB)", lambda r: r["memory_mb"]["peak_delta"], "{:.0f}", ratio="base/run"),
        row("peak RSS total (MB)", lambda r: r["memory_mb"]["peak_rss_total"], "{:.0f}", ratio="base/run"),
    ]
    widths = [max(len(str(x[i])) for x in [hdr] + rows) for i in range(len(hdr))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in [hdr] + rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"ratios are {names[0]} / other for times and memory (> 1: the other is faster / smaller); "
                 f"MFU against each run's own dtype peak ({base['peak_gflops_dtype']}: {base['peak_gflops']:.0f} "
                 f"GFLOP/s for {names[0]}).")
    return "\n".join(lines)


def table(paths: list[str]) -> str:
    """Medians over every timed iteration of every repeat, per (vocab, dtype, impl); TRL / rlhfkit ratios."""
    groups: dict[tuple, list[dict]] = {}
    for p in paths:
        with open(p) as f:
            r = json.load(f)
        groups.setdefault((r["workload"]["vocab"], r["dtype"], r["impl"]), []).append(r)

    def cpu(u, phase):  # user + sys CPU seconds of a phase (robust to other processes on a shared machine)
        parts = ("generate", "step") if phase == "iteration CPU" else (phase.split()[0],)
        return sum(u[p]["user_s"] + u[p]["sys_s"] for p in parts)

    def med(runs, phase):
        if phase.endswith(" CPU"):
            xs = [cpu(u, phase) for r in runs for u in r.get("process_usage", [])]
        else:
            xs = [x for r in runs for x in r.get("phases", {}).get(phase, {}).get("all_s", [])]
        return median(xs) if xs else None

    cols = ["iteration", "generate", "rollout_forward", "optimise", "step", "iteration CPU", "generate CPU",
            "step CPU"]
    hdr = ["vocab", "dtype", "impl", "runs"] + [f"{c} (s)" for c in cols] + ["peak RSS (MB)", "gen / bound"]
    rows, ratios = [], []
    for (vocab, dtype, impl), runs in sorted(groups.items()):
        peak = median([r["memory_mb"]["peak_rss_total"] for r in runs])
        bound = median([r["generate_bounds"]["generate_vs_bound"] for r in runs if "generate_bounds" in r] or [0])
        vals = [med(runs, c) for c in cols]
        rows.append([str(vocab), dtype, impl, str(len(runs))] + [f"{v:.2f}" if v is not None else "-" for v in vals]
                    + [f"{peak:.0f}", f"{bound:.1f}x"])
        groups[(vocab, dtype, impl)] = [dict(vals=vals, peak=peak)]
    for (vocab, dtype, impl), (g,) in sorted(groups.items()):
        if impl != "rlhfkit":
            continue
        for base_dtype in ("fp32", dtype) if dtype != "fp32" else ("fp32",):
            base = groups.get((vocab, base_dtype, "trl"))
            if not base:
                continue
            b = base[0]
            cells = [f"{bv / v:.2f}x" if bv and v else "-" for bv, v in zip(b["vals"], g["vals"])]
            ratios.append([str(vocab), f"TRL {base_dtype} / rlhfkit {dtype}"] + cells + [f"{b['peak'] / g['peak']:.2f}x"])

    def render(rows_):
        widths = [max(len(r[i]) for r in rows_) for i in range(len(rows_[0]))]
        out = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows_]
        out.insert(1, "  ".join("-" * w for w in widths))
        return out

    lines = render([hdr] + rows)
    if ratios:
        lines += ["", "ratios, TRL / rlhfkit (> 1: rlhfkit faster / smaller):"]
        lines += render([["vocab", "ratio"] + [f"{c} (s)" for c in cols] + ["peak RSS"]] + ratios)
    lines.append("medians over every timed iteration of every run; gen / bound = generate time over "
                 "max(weight-read, compute) bound (see the docstring)")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--impl", choices=["trl", "rlhfkit"])
    p.add_argument("--out", help="write the result JSON here")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--peak", help="JSON from matmul_peak.py (measured on the spot if missing)")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", dest="batch_size", type=int, default=16)
    p.add_argument("--mini-batch-size", dest="mini_batch_size", type=int, default=4)
    p.add_argument("--ppo-epochs", dest="ppo_epochs", type=int, default=4)
    p.add_argument("--query-len", dest="query_len", type=int, default=16)
    p.add_argument("--new-tokens", dest="new_tokens", type=int, default=32)
    p.add_argument("--n-layer", dest="n_layer", type=int, default=6)
    p.add_argument("--n-embd", dest="n_embd", type=int, default=384)
    p.add_argument("--n-head", dest="n_head", type=int, default=6)
    p.add_argument("--vocab", type=int, default=50257)
    p.add_argument("--n-positions", dest="n_positions", type=int, default=1024)
    p.add_argument("--dropout", type=float, default=0.0,
                   help="dropout of the body and the value head (0: both sides do the same work)")
    p.add_argument("--summarise", nargs="+", metavar="RESULT_JSON",
                   help="print a side-by-side table of result files (the first is the baseline) and exit")
    p.add_argument("--table", nargs="+", metavar="RESULT_JSON",
                   help="medians per (vocab, dtype, impl) over many result files, with TRL / rlhfkit ratios, and exit")
    p.add_argument("--save-base-model", dest="save_base_model", help=argparse.SUPPRESS)
    p.add_argument("--eos-id", dest="eos_id", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.save_base_model:
        save_base_model(args.save_base_model, args, args.eos_id)
        return
    if args.summarise:
        print(summarise(args.summarise))
        return
    if args.table:
        print(table(args.table))
        return
    if not args.impl:
        p.error("--impl is required (or use --summarise)")
    result = run(args)
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(json.dumps({k: result[k] for k in ("impl", "dtype", "generate", "step", "mfu", "memory_mb")}, indent=1))


if __name__ == "__main__":
    main()
