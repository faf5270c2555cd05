"""Where a layer's time goes (``--sections phases``): each cell's fwd and fwd+bwd split
into phases, each timed on its own in this process beside the whole layer.

Phases (float32, I = H, every thread torch and Numba have):

- input projection: the one GEMM x @ W_ih^T + b of all steps (the layer's GEMM:
  fastrnn.gemm_layout._mm, the backend's own where it measured faster, else torch's);
- step products: the recurrent products of all steps, as the kernel runs them (the
  same row or column plan, _panels.gemm_packed on packed panels), forward
  h @ W_hh^T and, with the backward, dL/da @ W_hh; nothing else;
- pointwise: the Numba launchers' time (fwd, and BPTT with the backward) less the
  step products and the weight packing: the gates, the state updates, the
  bookkeeping of the time loop;
- weight gradients: the backward's three GEMMs over all steps, dW_ih, dW_hh and dx
  (the same GEMM as the layer's);
- weight packing: W_hh^T (and with the backward W_hh) into panels, once a call;
- rest: the layer's time less all the above (autograd, bias sums, allocations, the
  Python around the calls).

Each GEMM phase has its GFLOP/s, its share of the FMA peak of all cores
(bench/peak.py, measured in the same run) and torch.mm's rate on the same shapes
in the same run (for the step products: one torch.mm a step, as a per-step loop
in PyTorch would run them).
"""
import statistics
import time

import numpy as np
import torch
from numba import njit, prange

from fastrnn import backends
from fastrnn.gemm_layout import _mm
from fastrnn.kernels.numba._panels import gemm_packed

from .cases import GATES

SHAPES = [(100, 8, 32), (100, 32, 128), (256, 64, 512), (100, 32, 1024)]
QUICK_SHAPES = [(100, 8, 32), (100, 32, 128)]
CELLS = list(GATES)             # every sequence cell of fastrnn.cells, by its bench name
PHASES = ["input projection", "step products", "pointwise", "weight packing",
          "weight gradients", "rest"]


def _median_ms(fn, repeats):
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(ts)


@njit(parallel=True, cache=True)
def _rows(a, panels, out, bounds, T):
    # the row plan: each chunk of rows multiplies by the whole weight, T times
    for c in prange(bounds.shape[0] - 1):
        b0, b1 = bounds[c], bounds[c + 1]
        for _ in range(T):
            gemm_packed(a[b0:b1], panels, out[b0:b1], b1 - b0)


@njit(parallel=True, cache=True)
def _columns(a, panels, pofs, cols, out, T):
    # the column plan: a parallel region a step, each slice its own panels
    for _ in range(T):
        for p in prange(pofs.shape[0] - 1):
            gemm_packed(a, panels[pofs[p]:pofs[p + 1]], out[:, cols[p]:cols[p + 1]],
                        a.shape[0])


def _kernel_name(cell):
    # the Numba launchers' cell name for a bench name (rnn_tanh is the RNN)
    return "rnn" if cell == "rnn_tanh" else cell


def _units(cell, B, H, G):
    """The column plan's unit bounds for this call, or None: only a cell whose Numba
    kernels have a column plan (a ``<cell>_fwd_cols_kernel``) takes it, as its launcher."""
    import importlib

    from fastrnn.kernels.numba import _common
    name = _kernel_name(cell)
    module = importlib.import_module(f"fastrnn.kernels.numba.{name}")
    return _common.column_units(B, H, G) if hasattr(module, f"{name}_fwd_cols_kernel") \
        else None


def _packing(w, cell, B, forward):
    """-> a callable packing W_hh [G, H] as the launcher of that call does."""
    from fastrnn.kernels.numba import _common
    from fastrnn.kernels.numba._panels import pack, pack_groups
    G, H = w.shape
    units = _units(cell, B, H, G)
    if units is None:
        return lambda: pack(w.t() if forward else w)
    groups = _common.gate_columns(units, H, GATES[cell]) if forward else \
        _common.unit_slices(units)
    return lambda: pack_groups(w.t() if forward else w, groups)


def _products(w, cell, T, B, forward):
    """-> a callable running one direction's step products of all T steps as the
    kernel plans them (rows or columns), on packed W_hh [G, H]; nothing else."""
    from fastrnn.kernels.numba import _common
    G, H = w.shape
    K, M = (H, G) if forward else (G, H)
    a = torch.randn(B, K, generator=torch.Generator().manual_seed(0)).numpy()
    out = np.empty((B, M), np.float32)
    packed = _packing(w, cell, B, forward)()
    units = _units(cell, B, H, G)
    if units is None:
        bounds = _common.batch_plan(None, B, T)[2]
        return lambda: _rows(a, packed, out, bounds, T)
    cols = units * GATES[cell] if forward else units    # slice p's first output column
    return lambda: _columns(a, packed[0], packed[1], cols, out, T)


def _torch_steps(T, B, K, M):
    g = torch.Generator().manual_seed(0)
    a, b, out = torch.randn(B, K, generator=g), torch.randn(K, M, generator=g), torch.empty(B, M)

    def run():
        for _ in range(T):
            torch.mm(a, b, out=out)
    return run


def _launchers(cell, module, x, save):
    """(forward launcher call, BPTT launcher call) of ``module``'s one layer on x; the
    forward saves for BPTT if ``save`` (as under autograd), else not (no_grad)."""
    from fastrnn.kernels import numba as kernels
    T, B, H = x.shape
    with torch.no_grad():
        xproj = torch.addmm(module.bias_ih_l0 + module.bias_hh_l0, x.reshape(T * B, H),
                            module.weight_ih_l0.t()).reshape(T, B, -1)
    w = module.weight_hh_l0.detach()
    h0, go = torch.zeros(B, H), torch.randn(T, B, H)
    common = dict(lengths=None, reverse=False)
    if cell == "lstm":
        f = dict(xproj=xproj, h0=h0, c0=h0, w_hh=w, w_hr=None, **common)
        res = kernels.lstm_fwd(**f)
        b = dict(grad_out=go, grad_hn=h0, grad_cn=h0, c0=h0, gates=res[3], cells=res[4],
                 w_hh=w, w_hr=None, **common)
    elif cell == "gru":
        f = dict(xproj=xproj, h0=h0, w_hh=w, b_hn=module.bias_hh_l0.detach()[2 * H:], **common)
        res = kernels.gru_fwd(**f)
        b = dict(grad_out=go, grad_hn=h0, out=res[0], h0=h0, gates=res[2], w_hh=w, **common)
    else:
        f = dict(xproj=xproj, h0=h0, w_hh=w, nonlinearity="tanh", **common)
        res = kernels.rnn_fwd(**f)
        b = dict(grad_out=go, grad_hn=h0, out=res[0], w_hh=w, nonlinearity="tanh", **common)
    name = _kernel_name(cell)
    fwd, bwd = getattr(kernels, f"{name}_fwd"), getattr(kernels, f"{name}_bwd")
    return (lambda: fwd(**f, save=save)), (lambda: bwd(**b))


def measure(cell, T, B, H, quick=False):
    """{mode: {phase: (ms, FLOPs of the phase or None, torch.mm GFLOP/s on its shapes or
    None)}}, and the layer's own time under the phase "layer"."""
    from . import cases
    reps = 5 if quick else 15
    G = GATES[cell] * H
    case = lambda mode: cases.name(cell, "f32", mode, T, B, H)      # noqa: E731
    module = cases.modules(case("fwd"), ["fastrnn-numba"])["fastrnn-numba"]
    layer = {m: _median_ms(cases.make_step(module, case(m)), reps) for m in ("fwd", "fwdbwd")}
    g = torch.Generator().manual_seed(1)
    x = torch.randn(T, B, H, generator=g)
    w_ih, bias, w = (module.weight_ih_l0.detach(), module.bias_ih_l0.detach(),
                     module.weight_hh_l0.detach())
    gp, x2 = torch.randn(T * B, G, generator=g), x.reshape(T * B, H)
    fl = 2 * T * B * H * G              # one product over all steps (I = H)
    be = backends.REGISTRY["numba"]      # its GEMM or torch's, as the layer picks (_mm)
    proj = _median_ms(lambda: _mm(x2, w_ih.t(), bias, be), reps)
    wgrad = _median_ms(lambda: (_mm(gp.t(), x2, None, be), _mm(gp.t(), x2, None, be),
                                _mm(gp, w_ih, None, be)), reps)
    step = {d: _median_ms(_products(w, cell, T, B, d), reps) for d in (True, False)}
    mm = {d: _median_ms(_torch_steps(T, B, *((H, G) if d else (G, H))), reps)
          for d in (True, False)}
    packing = {d: _median_ms(_packing(w, cell, B, d), reps) for d in (True, False)}
    kernel = {"fwd": _median_ms(_launchers(cell, module, x, False)[0], reps)}
    fwd, bwd = _launchers(cell, module, x, True)
    kernel["fwdbwd"] = _median_ms(fwd, reps) + _median_ms(bwd, reps)
    out = {}
    for mode in ("fwd", "fwdbwd"):
        dirs = (True, False) if mode == "fwdbwd" else (True,)
        steps, packs = sum(step[d] for d in dirs), sum(packing[d] for d in dirs)
        ph = {"input projection": (proj, fl, fl / proj / 1e6),
              "step products": (steps, fl * len(dirs), fl * len(dirs) / sum(mm[d] for d in dirs)
                                / 1e6),
              "pointwise": (max(kernel[mode] - steps - packs, 0.0), None, None),
              "weight packing": (packs, None, None)}
        if mode == "fwdbwd":
            ph["weight gradients"] = (wgrad, 3 * fl, 3 * fl / wgrad / 1e6)
        ph["rest"] = (max(layer[mode] - sum(v[0] for v in ph.values()), 0.0), None, None)
        ph["layer"] = (layer[mode], 2 * fl * (3 if mode == "fwdbwd" else 1), None)
        out[mode] = ph
    return out


THREADS_SHAPE = (100, 1, 512)       # (T, B, H): one row, so only the column plan uses a core
QUICK_THREADS_SHAPE = (100, 1, 128)


def threads(quick=False):
    """((T, B, H), ms on one thread, ms on all threads) of an LSTM fwd+bwd at
    THREADS_SHAPE: what the threads gain where the batch gives them nothing."""
    import fastrnn
    T, B, H = QUICK_THREADS_SHAPE if quick else THREADS_SHAPE
    torch.manual_seed(0)
    m = fastrnn.LSTM(H, H)
    x = torch.randn(T, B, H, requires_grad=True)

    def step():
        out, _ = m(x)
        out.sum().backward()
    n, ms = torch.get_num_threads(), []
    try:
        for k in (1, n):
            torch.set_num_threads(k)        # the launchers run Numba on torch's count
            ms.append(_median_ms(step, 5 if quick else 15))
    finally:
        torch.set_num_threads(n)
    return (T, B, H), ms[0], ms[1]


def run(quick=False):
    """-> (peak dict of bench/peak.run, [(cell, T, B, H, mode, phase, ms, GFLOP/s or None,
    torch.mm GFLOP/s or None)])."""
    import os

    from . import peak
    top = peak.run(os.cpu_count(), quick)
    rows = []
    for cell in CELLS:
        for T, B, H in (QUICK_SHAPES if quick else SHAPES):
            for mode, phases in measure(cell, T, B, H, quick).items():
                for ph, (ms, fl, mm) in phases.items():
                    rows.append((cell, T, B, H, mode, ph, ms,
                                 None if fl is None else fl / ms / 1e6, mm))
    return top, rows
