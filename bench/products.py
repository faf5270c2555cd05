"""The step products against the FMA peak and torch.mm, one thread (``--sections peak``).

A thread of a recurrent kernel multiplies its share of the batch (n rows) by the
recurrent weight at every step, in two orientations: forward h [n, H] @ W_hh^T
[H, G] and backward dgates [n, G] @ W_hh [G, H] (G = 4H for the LSTM). Each is timed
single-threaded, float32, three ways: the packed-panel product the sequence kernels
use (``_panels.gemm_packed``, packing excluded: a launcher packs once per call), the
dot-product form it replaced (``_gemm.gemm_nt``, still used by the step and tree
kernels) and torch.mm on one thread. Rates are set against bench/peak.py's per-core
FMA peak measured in the same run.
"""
import time

import numpy as np
import torch

TARGET_SHAPES = [(32, 512, 2048), (16, 128, 512)]       # (n, K, M): the targets


def shapes(quick=False):
    """[(orientation, n, K, M)]: rows 1..64 a thread, H from 128 to 1024 (LSTM, G = 4H)."""
    out = [("forward", n, K, M) for n, K, M in TARGET_SHAPES]
    for H in ((128, 512) if quick else (128, 512, 1024)):
        for n in ((1, 16) if quick else (1, 4, 16, 32, 64)):
            out += [("forward", n, H, 4 * H), ("backward", n, 4 * H, H)]
    return list(dict.fromkeys(out))


def _best(fn, flops, quick):
    reps = max(1, int((2e7 if quick else 2e8) / flops))
    fn()
    times = []
    for _ in range(3 if quick else 7):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        times.append(time.perf_counter() - t0)
    return flops * reps / min(times) / 1e9


def measure(n, K, M, quick=False):
    """{provider: GFLOP/s} for out [n, M] = a [n, K] @ b [K, M], one thread."""
    from fastrnn.kernels.numba._gemm import gemm_nt
    from fastrnn.kernels.numba._panels import gemm_packed, pack
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, K, generator=g)
    b = torch.randn(K, M, generator=g)
    out = torch.empty(n, M)
    an, outn, bt = a.numpy(), out.numpy(), b.t().contiguous()
    panels, wt = pack(b), bt.numpy()
    flops = 2 * n * K * M
    return {"fastrnn panels": _best(lambda: gemm_packed(an, panels, outn, n), flops, quick),
            "fastrnn dot (gemm_nt)": _best(lambda: gemm_nt(an, wt, outn, n), flops, quick),
            "torch.mm": _best(lambda: torch.mm(a, b, out=out), flops, quick)}


def run(quick=False):
    """-> (peak dict of bench/peak.run, [(orientation, n, K, M, {provider: GFLOP/s})])."""
    import os

    import numba

    from . import peak
    threads = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    try:
        top = peak.run(os.cpu_count(), quick)
        return top, [(o, n, K, M, measure(n, K, M, quick)) for o, n, K, M in shapes(quick)]
    finally:
        torch.set_num_threads(threads[0])
        numba.set_num_threads(threads[1])
