"""Measurement helpers shared by the benchmark scripts (ppo_bench.py, train_bench.py).

Standard library only (torch is imported inside the CPU probe), so the same file works in the
project's venv and in the TRL environments; each script imports it from its own folder.
"""

from __future__ import annotations

import resource
import time


# ----------------------------------------------------------------------------- memory
def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_mb() -> float:
    kb = _status_kb("VmRSS")
    if kb is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return kb / 1024


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_mb(reset_ok: bool) -> float:
    kb = _status_kb("VmHWM") if reset_ok else None
    if kb is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return kb / 1024


def cpu_speed_gflops(n: int = 1024, repeats: int = 3) -> float:
    """A ~50 ms fp32 matmul probe: how fast the (possibly shared) CPU is right now."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def proc_usage() -> tuple[float, float, int]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime, r.ru_minflt
