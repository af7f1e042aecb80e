"""GPU timings: HF generate vs vLLM rollouts, weight sync, and a PPO iteration, fp32 vs bf16.

    python benchmarks/gpu_bench.py --out benchmarks/results/gpu.json [--sizes gpt2 0.5b] [--skip-vllm]

Random-init models built from configs (nothing downloaded): ``gpt2`` = GPT-2 small shape
(12 x 768, vocabulary 50257, 124 M parameters), ``0.5b`` = a Qwen2-0.5B-shaped Llama-family
model (24 x 896, 14 heads / 2 KV heads, MLP 4864, vocabulary 151936, ~0.5 B parameters).
Per size: (1) HF ``generate`` in bf16, batch 64, 64-token prompts, exactly 128 sampled tokens,
with the weight-read bound ``128 * weight_bytes / HBM read bandwidth`` (bandwidth measured
on the spot); (2) the same with vLLM (``rlhfkit.rollout.vllm.VLLMRollout``, colocated,
``gpu_memory_utilization=0.35``) when vllm is importable, plus the time of one full-weight
``sync_weights``; (3) one classic PPO iteration (batch 16, mini-batch 4, 4 epochs, 16 + 32
tokens; generate + step) with ``mixed_precision`` "no" and "bf16". Written by a CPU-only
session: UNTESTED ON HARDWARE until a GPU session runs ``benchmarks/gpu_check.sh``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings


def build(size: str, folder: str) -> None:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if size == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(bos_token_id=0, eos_token_id=0))
    else:  # Qwen2-0.5B's shape in a Llama config (same kernels, loads in every vLLM)
        model = LlamaForCausalLM(LlamaConfig(vocab_size=151936, hidden_size=896, intermediate_size=4864,
                                             num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                                             max_position_embeddings=4096, tie_word_embeddings=True,
                                             bos_token_id=0, eos_token_id=0, pad_token_id=0))
    model.save_pretrained(folder)
    from ppo_bench import build_tokenizer  # a tiny word-level tokenizer: eos = pad = 0
    build_tokenizer().save_pretrained(folder)


def hbm_read_gbs() -> float:
    import torch

    x = torch.ones(2**28, device="cuda")  # 1 GiB
    x.sum()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        x.sum()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return x.numel() * 4 / best / 1e9


def time_hf_generate(folder: str, B=64, P=64, G=128) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).cuda().eval()
    n_params = sum(p.numel() for p in model.parameters())
    V = model.config.vocab_size
    ids = torch.randint(2, V, (B, P), device="cuda")
    kw = dict(do_sample=True, top_k=0, top_p=1.0, min_new_tokens=G, max_new_tokens=G, pad_token_id=0)
    model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **dict(kw, max_new_tokens=4, min_new_tokens=4))
    torch.cuda.synchronize()
    times = []
    for _ in range(3):
        t = time.perf_counter()
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kw)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    bw = hbm_read_gbs()
    bound = G * n_params * 2 / (bw * 1e9)
    del model
    torch.cuda.empty_cache()
    return {"params": n_params, "batch": B, "prompt": P, "new_tokens": G, "times_s": times, "best_s": min(times),
            "tokens_per_s": B * G / min(times), "hbm_read_gbs": bw, "weight_read_bound_s": bound,
            "vs_bound": min(times) / bound}


def time_vllm(folder: str, B=64, P=64, G=128) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from rlhfkit.rollout.vllm import SamplingSettings, VLLMRollout

    engine = VLLMRollout.from_pretrained(folder, gpu_memory_utilization=0.35, dtype="bfloat16", sync_timeout_s=120)
    prompts = torch.randint(2, 1000, (B, P)).tolist()
    settings = SamplingSettings(max_new_tokens=G, min_new_tokens=G)
    engine.generate(prompts[:2], SamplingSettings(max_new_tokens=4))
    times = []
    for _ in range(3):
        t = time.perf_counter()
        out = engine.generate(prompts, settings)
        times.append(time.perf_counter() - t)
    lens = sorted({len(r) for r in out.response_ids})
    policy = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).cuda()
    t = time.perf_counter()
    engine.sync_weights(policy)
    sync_s = time.perf_counter() - t
    return {"times_s": times, "best_s": min(times), "tokens_per_s": B * G / min(times), "response_lengths": lens,
            "sync_weights_s": sync_s}


def time_ppo(folder: str, precision: str) -> dict:
    import torch
    from transformers import AutoTokenizer

    from rlhfkit import AutoModelForCausalLMWithValueHead, PPOConfig, PPOTrainer

    tok = AutoTokenizer.from_pretrained(folder)
    policy = AutoModelForCausalLMWithValueHead.from_pretrained(folder)
    ref = AutoModelForCausalLMWithValueHead.from_pretrained(folder)
    trainer = PPOTrainer(PPOConfig(batch_size=16, mini_batch_size=4, ppo_epochs=4, learning_rate=1.41e-5,
                                   mixed_precision=precision), policy, ref, tok)
    V = policy.config.vocab_size
    kw = dict(do_sample=True, top_k=0, top_p=1.0, min_new_tokens=32, max_new_tokens=32, pad_token_id=0)
    rows = []
    for it in range(3):
        q = [torch.randint(2, V, (16,)) for _ in range(16)]
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        r = trainer.generate(q, return_prompt=False, batch_size=16, **kw)
        torch.cuda.synchronize()
        t1 = time.perf_counter()
        stats = trainer.step(q, list(r), [torch.randn(()) for _ in range(16)])
        torch.cuda.synchronize()
        t2 = time.perf_counter()
        rows.append({"generate_s": t1 - t0, "step_s": t2 - t1, "forward_s": stats["time/ppo/forward_pass"],
                     "optimise_s": stats["time/ppo/optimize_step"]})
    return {"iterations": rows[1:], "warmup": rows[0], "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=["gpt2", "0.5b"], choices=["gpt2", "0.5b"])
    p.add_argument("--skip-vllm", action="store_true")
    p.add_argument("--skip-ppo", action="store_true")
    p.add_argument("--out")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("gpu_bench.py needs a CUDA GPU (torch.cuda.is_available() is False)")
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "sizes": {}}
    for size in args.sizes:
        r = result["sizes"][size] = {}
        with tempfile.TemporaryDirectory() as folder:
            build(size, folder)
            r["hf_generate_bf16"] = time_hf_generate(folder)
            print(size, "HF generate", json.dumps(r["hf_generate_bf16"]), flush=True)
            if not args.skip_vllm:
                try:
                    r["vllm"] = time_vllm(folder)
                except ImportError as err:
                    r["vllm"] = {"skipped": str(err)}
                print(size, "vLLM", json.dumps(r["vllm"]), flush=True)
            if not args.skip_ppo:
                for precision in ("no", "bf16"):
                    r[f"ppo_{precision}"] = time_ppo(folder, precision)
                    print(size, "PPO", precision, json.dumps(r[f"ppo_{precision}"]), flush=True)
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
