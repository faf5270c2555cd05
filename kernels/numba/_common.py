"""Thread ownership and the batch plan shared by every Numba launcher.

Cores: this backend runs one Numba thread per core over batch chunks; each thread
does its own step products (``_panels.gemm_packed``), so the kernels call no BLAS and wake
no third thread pool beside Numba's and torch's (numpy's bundled OpenBLAS is loaded
with numpy but never called by fastrnn; SciPy's is no longer loaded by us). The
GEMMs outside the kernels (input projection, dx, weight gradients) are this
backend's own ``mm`` (matmul.py, the same micro-kernel on Numba's threads) where they
are large enough to gain, else torch's, on torch's pool. Numba's threading layer is left to its default priority
(Numba's default order picks its OpenMP layer where libgomp exists: the calling
thread works too, and in measurements it handed the cores to and from torch's
own OpenMP pool faster than 'workqueue'). Measured against a thread-per-chunk
design (serial nogil kernels on a Python thread pool), which compiles twice as fast
cold (4.7 s against ~10 s for an LSTM forward+backward): right after one of torch's
OpenMP ops, whose workers keep spinning, the two Python threads ran no faster than
one (LSTM T=100, B=32, H=128: forward 6.9 ms on two threads, 6.6 on one), while
Numba's OpenMP threads keep the 2x.
"""
import ctypes
import functools

import numpy as np
import torch

import numba
from numba import njit

from ..._alloc import keep_freed_memory
from ._panels import gemm_packed


keep_freed_memory()


# How every recurrent kernel is compiled (one place, so the kernels agree):
# - KERNEL: parallel, a prange over batch chunks (or a level's rows); ROW: a serial
#   helper called per row or per chunk;
# - error_model="numpy": division without a ZeroDivisionError branch, which would
#   stop LLVM from vectorising the elementwise loops;
# - fastmath "contract" only: a*b + c may become one FMA (fewer instructions and
#   one rounding instead of two); no NaN/inf or reassociation assumptions, so the
#   results stay IEEE-clean. Measured: float64 exp 2.3 -> 1.4 ns per element.
ROW = dict(cache=True, error_model="numpy", fastmath={"contract"})
KERNEL = dict(ROW, parallel=True)


def num_threads():
    """The threads a launcher runs on: torch's count, at most NUMBA_NUM_THREADS (the
    package's launcher wrapper sets Numba's to it). Read from torch: 0.07 us, where
    numba.get_num_threads() costs 0.8 (a decoding step asked twice)."""
    return max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))


_VIEWS = {}


def weight_view(t, shape=None):
    """A numpy view of a weight (a parameter, read-only to the kernel), cached by its
    address, shape, strides and dtype: a decoding step passes the same weights every
    call, and ``Tensor.numpy`` costs ~1 us each. The view does not own or keep the
    memory: it is used only inside the call, while the caller's tensor holds it, and a
    tensor with that address, layout and dtype is that memory. ``shape``: a view of
    that shape (of a contiguous t) instead."""
    key = (t.data_ptr(), t.shape, t.stride(), t.dtype, shape)
    v = _VIEWS.get(key)
    if v is None:
        if len(_VIEWS) >= 256:
            _VIEWS.clear()
        a = as_numpy(t)
        if a.size == 0 or a.ctypes.data != t.data_ptr():    # empty, or a copy: not cached
            return a if shape is None else a.reshape(shape)
        raw = (ctypes.c_char * a.nbytes).from_address(a.ctypes.data)
        v = np.frombuffer(raw, a.dtype).reshape(a.shape if shape is None else shape)
        _VIEWS[key] = v
    return v


@functools.lru_cache(maxsize=64)
def _full_plan(B, T, C):
    lens = np.full(B, T, dtype=np.int64)
    rows = np.arange(B, dtype=np.int64)
    bounds = np.array([c * B // C for c in range(C + 1)], dtype=np.int64)
    for a in (lens, rows, bounds):
        a.setflags(write=False)
    return lens, rows, bounds


def batch_plan(lengths, B, T, chunks=None):
    """Split B rows into per-thread chunks (or ``chunks`` of them), each listing its rows
    longest first.

    Returns (lengths [B] int64, rows [B] int64, bounds [C+1] int64) as numpy arrays.
    Rows are dealt round-robin after sorting by length, so chunks get equal work.
    """
    C = max(1, min(chunks or num_threads(), B))
    if lengths is None:
        return _full_plan(B, T, C)          # equal lengths: contiguous chunks, cached
    lens = np.ascontiguousarray(lengths.cpu().numpy(), dtype=np.int64)
    order = np.argsort(-lens, kind="stable")
    rows = np.concatenate([order[c::C] for c in range(C)]).astype(np.int64)
    sizes = [len(range(c, B, C)) for c in range(C)]
    bounds = np.zeros(C + 1, dtype=np.int64)
    bounds[1:] = np.cumsum(sizes)
    return lens, rows, bounds


# The column plan (issue 35, item 4). The row plan gives each thread whole batch rows
# for the whole sequence: no synchronisation, but at B=1 one core idles, and a thread
# with one row runs its product at half the FMA peak whatever its tile (each panel
# load feeds one FMA: L1 loads, not FMAs, are the limit). The column plan keeps
# every row in one chunk and splits the hidden units into one slice per thread:
# each step is a parallel region (1.7 us to enter on Numba's OpenMP layer, Zen 4),
# where each slice multiplies all rows by its own columns of the weight (so streams
# 1/S of it) and runs the pointwise work of its units. Results are deterministic for
# a split on any thread count; against the row plan they differ by float32 rounding
# (a slice's own loops may contract a*b + c the other way).
COLUMNS = None              # None: chosen per call; False: rows; an int S: S slices (tests)
SLICE_ALIGN = 8             # units per slice a multiple of this where H allows
MIN_SLICE_FLOPS = 2e5       # a slice's product per step: ~2 us of a core, above the region's cost


def column_units(B, H, G, proj=False):
    """Unit bounds [S + 1] int64 of the column plan for a call, or None for the row plan.

    Chosen when a thread of the row plan would get fewer rows than half a tile (the
    product's efficiency falls with them) and each slice's product per step is big
    enough to pay for a parallel region. Not with a projection (its second product
    would need a second region a step)."""
    force = COLUMNS
    if proj or H < 2 or force is False:
        return None
    S = force
    if force is None:
        S = num_threads()
        if S == 1 or B >= 4 * S or 2.0 * B * H * G / S < MIN_SLICE_FLOPS:
            return None
    S = min(S, H)
    align = SLICE_ALIGN if H >= S * SLICE_ALIGN else 1
    bounds = [(p * H // S) // align * align for p in range(S)] + [H]
    return np.array(sorted(set(bounds)), dtype=np.int64)


def gate_columns(units, H, gates):
    """Column indices of each unit slice in a weight of ``gates`` blocks of H columns
    (W_hh^T: the slice's units in every gate, gate-major), for _panels.pack_groups."""
    return [np.concatenate([np.arange(g * H + u0, g * H + u1) for g in range(gates)])
            for u0, u1 in zip(units[:-1], units[1:])]


def unit_slices(units):
    """The unit slices of a column plan as slices (BPTT packs W_hh's columns u0:u1)."""
    return [slice(int(u0), int(u1)) for u0, u1 in zip(units[:-1], units[1:])]


def as_numpy(t):
    """Zero-copy numpy view of a CPU tensor (detached; copied only if not contiguous).
    ``force=True`` detaches inside torch: 1.35 instead of 1.77 us for a parameter,
    which a decoding step pays for each of its weights."""
    return (t if t.is_contiguous() else t.contiguous()).numpy(force=True)



# ------------------------------------------------- helpers called by the kernels
@njit(cache=True)
def step_time(s, length, reverse):
    # time index of a row at processing step s: reverse rows start at their own end
    return length - 1 - s if reverse else s


@njit(cache=True)
def running(lengths, rows, b0, nb, nact, s):
    # a chunk lists its rows longest first, so the rows still running at step s are
    # a prefix: it shrinks going forward in s and grows going backward
    while nact > 0 and lengths[rows[b0 + nact - 1]] <= s:
        nact -= 1
    while nact < nb and lengths[rows[b0 + nact]] > s:
        nact += 1
    return nact


def states_out(grad_states, like):
    """The kernels' view of a launcher's optional grad_states output (dL/dh_t of every
    step, for fastrnn.diagnostics), or a [0, 0, 0] stand-in the kernel never writes."""
    if grad_states is None:
        return np.empty((0, 0, 0), as_numpy(like).dtype)
    if not grad_states.is_contiguous() or grad_states.dtype != like.dtype:
        raise ValueError("grad_states must be a contiguous tensor of the gradients' dtype")
    return grad_states.numpy()


@njit(cache=True)
def copy_row(dst, src):
    # dst[:] = src (1-D, same length) as a loop: an array assignment compiles Numba's
    # shape-mismatch error message with it (string formatting), 2.6 s of a cold LSTM
    for k in range(dst.shape[0]):
        dst[k] = src[k]


@njit(cache=True)
def zero_tail(a, lengths, b):
    # a [T, B, *]: positions past row b's length are zeros, like pad_packed_sequence
    for t in range(lengths[b], a.shape[0]):
        a[t, b, :] = 0.0


@njit(cache=True)
def gemm_step(src, lengths, rows, b0, nact, s, reverse, uniform, buf, w, out):
    # out[:nact] = the chunk's running rows of src [T, B, K] at step s, @ the weight
    # packed in ``w`` (_panels.pack).
    # BPTT kernels write each step's gradient straight into their [T, B, *] output and
    # multiply from there: with equal lengths (uniform) the rows are b0, b0+1, ... at
    # one time index, a contiguous block. Writing a second copy into a per-thread
    # buffer inside the gate loop made that loop 2-3x slower (LSTM, 2.5 vs 1.3 ms at
    # T=100, B=32, H=128, float32); with variable lengths rows differ in time index
    # and order, so they are gathered into ``buf`` first.
    if uniform:
        gemm_packed(src[step_time(s, lengths[rows[b0]], reverse), b0:b0 + nact], w, out, nact)
        return
    for r in range(nact):
        b = rows[b0 + r]
        copy_row(buf[r], src[step_time(s, lengths[b], reverse), b])
    gemm_packed(buf, w, out, nact)
