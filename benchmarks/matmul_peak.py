"""Measure this machine's dense matmul peak (GFLOP/s) for fp32 and bf16, printed as JSON.

    python benchmarks/matmul_peak.py [--sizes 1024 2048 4096] [--repeats 10] [--threads N] [--out peak.json]

The peak is the best of ``--repeats`` timings of ``torch.mm`` on square matrices
(2 * n**3 FLOPs each) over all sizes; it is the denominator of MFU in ppo_bench.py.
Works in any environment with torch (the project's .venv or benchmarks/.trl-env).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def measure(n: int, dtype: torch.dtype, repeats: int, device: str) -> dict:
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    torch.mm(a, b)  # warm-up (allocations, kernel selection)
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        times.append(time.perf_counter() - t0)
    flops = 2.0 * n**3
    return {"n": n, "best_s": min(times), "gflops_best": flops / min(times) / 1e9,
            "gflops_median": flops / sorted(times)[len(times) // 2] / 1e9}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    result = {
        "device": args.device,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "peak_gflops": {},
        "runs": {},
    }
    for name in args.dtypes:
        runs = [measure(n, dtypes[name], args.repeats, args.device) for n in args.sizes]
        result["runs"][name] = runs
        result["peak_gflops"][name] = max(r["gflops_best"] for r in runs)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return result


if __name__ == "__main__":
    main()
