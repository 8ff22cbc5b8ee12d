"""Speed measured on the machine at hand: the practical matmul peak, and model FLOPs utilisation (MFU).

MFU = (useful FLOPs per second of the training run) / (peak FLOPs per second of the hardware). A GPU's data
sheet gives its peak; a CPU has none worth quoting, so the denominator here is *measured*: the best rate of a
large square matrix multiply in the same dtype, on the same threads.
"""

from __future__ import annotations

import functools
import time

import torch


def matmul_peak_gflops(n: int = 1024, repeats: int = 8, dtype: torch.dtype = torch.float32,
                       device: str = "cpu") -> float:
    """The best observed rate of ``(n, n) @ (n, n)`` matmuls, in GFLOP/s (10^9 floating-point operations per
    second; one multiply-add counts as 2), on torch's current number of threads. Best of ``repeats`` timings
    after one warm-up. Cached per process and thread count: the first call costs about
    ``repeats * 2 n^3 / peak`` seconds (0.3 s for n = 1024 at 50 GFLOP/s).

    On a machine shared with other work, the best of several timings is the closest to what the hardware
    can do; the training run it is compared with shares the same machine, so the ratio stays meaningful.
    """
    return _cached_peak(n, repeats, dtype, device, torch.get_num_threads())


@functools.lru_cache(maxsize=16)
def _cached_peak(n: int, repeats: int, dtype: torch.dtype, device: str, threads: int) -> float:
    # the thread count is part of the key: 2 threads do not run at 1 thread's rate
    return measure_matmul_peak(n, repeats, dtype, device)


def measure_matmul_peak(n: int = 1024, repeats: int = 8, dtype: torch.dtype = torch.float32,
                        device: str = "cpu") -> float:
    """``matmul_peak_gflops`` measured now, never cached (for benchmarks that re-measure it)."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=generator).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=generator).to(device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    a @ b  # warm-up (thread pool, caches)
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def mfu(units_per_s: float, flops_per_unit: float, peak_gflops: float) -> float:
    """Model FLOPs utilisation, a fraction in [0, 1] (can exceed 1 only if the peak was under-measured).

    units_per_s: tokens (or examples) processed per second by training (forward + backward + update);
    flops_per_unit: training FLOPs per token (for a transformer about ``6 N + 12 L T d``, see
    ``utils.gpt.flops_per_token``); peak_gflops: from ``matmul_peak_gflops``.
    """
    return units_per_s * flops_per_unit / (peak_gflops * 1e9)


@functools.lru_cache(maxsize=8)
def bf16_autocast_supported(device: str = "cpu") -> bool:
    """Whether ``device`` computes bf16 natively: CUDA GPUs that support bf16; CPUs whose instruction set
    has native bf16 (``avx512_bf16`` or AMX). Elsewhere torch emulates bf16 on CPU. A capability, not a
    speed: with small matrices the casts autocast adds can cost more than bf16 saves, even where bf16 is
    native (chapter 5 measures both and picks the faster). ``TrainConfig(autocast="auto")`` uses bf16
    where this is true."""
    if device.startswith("mps"):
        return False  # bf16 autocast on Apple GPUs is recent and partial; fp16 is their fast type
    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device != "cpu":
        raise ValueError(f"unknown device {device!r}: expected 'cpu', 'cuda[:n]' or 'mps'")
    try:
        with open("/proc/cpuinfo") as handle:
            flags = handle.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
