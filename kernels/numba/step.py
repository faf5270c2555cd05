"""One time step of each cell with no autograd: the decoding path of the *Cell modules.

Autoregressive decoding calls a cell once per token under ``torch.no_grad()``;
there the cost is per-call overhead, not FLOPs (the sequence path took ~300 µs for
an 8x32 RNNCell step, against ~50 µs for torch.nn.RNNCell). These kernels do the
whole step in one call: both products (x @ W_ih^T and h @ W_hh^T), the biases, the
gates and the state update, with no intermediate torch tensors. Exception: a large
step (``TORCH_GEMM_WORK``) on a CPU where torch's GEMM beats this package's
(``matmul.OWN`` false, e.g. Intel's Sapphire Rapids) gets its two products from
torch.mm and the kernel does the rest (``_given``).

Rows are split across threads only for large steps (``PARALLEL_WORK``); small
ones run as one chunk (a prange of one iteration measured 6.3 µs against 4.9 for
a serial build of the same kernel, so one build serves both). Products use
``gemm_nt`` on the weights as they are (no transposed copy per call). Measured on 2
Sapphire Rapids cores, no_grad, against torch's cells: GRU (B, I, H) = (320, 160, 128)
528 -> 311 us with torch's products (torch 330), (64, 512, 512) 1251 -> 915 (947); LSTM
(64, 512, 512) 1672 -> 1330 (1383); RNN 437 -> 349 (318).
"""
import functools

import numpy as np
import torch
from numba import njit, prange

from ... import kernels
from . import matmul
from ._common import KERNEL, as_numpy, num_threads, weight_view
from ._gemm import gemm_nt
from .activations import sigmoid, tanh

PARALLEL_WORK = 1 << 19     # B * G * (I + H) above which the rows are split across threads
TORCH_GEMM_WORK = 1 << 22   # ... and above which torch's GEMM may form the products (_given)
_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}


@njit(cache=True)
def _products(x, h, w_ih, w_hh, given, xw, hw, r0, r1, G):
    # rows r0..r1-1 of x W_ih^T and h W_hh^T: views of the given ones, or formed here
    if given:
        return xw[r0:r1], hw[r0:r1]
    a = np.empty((r1 - r0, G), xw.dtype)
    p = np.empty((r1 - r0, G), xw.dtype)
    gemm_nt(x[r0:r1], w_ih, a, r1 - r0)
    gemm_nt(h[r0:r1], w_hh, p, r1 - r0)
    return a, p


@njit(**KERNEL)
def rnn_step_kernel(x, h, w_ih, w_hh, b_ih, b_hh, relu, chunks, given, xw, hw, out):
    # given: the products x W_ih^T and h W_hh^T come in as xw, hw [B, G] (torch's GEMM:
    # _given), else _products forms them here
    B, H = out.shape
    for c in prange(chunks):
        r0, r1 = c * B // chunks, (c + 1) * B // chunks
        a, p = _products(x, h, w_ih, w_hh, given, xw, hw, r0, r1, H)
        for r in range(r1 - r0):
            rb = r0 + r if b_ih.shape[0] > 1 else 0     # b_ih: [1, G] shared or [B, G] per row
            for j in range(H):
                v = a[r, j] + p[r, j] + b_ih[rb, j] + b_hh[j]
                out[r0 + r, j] = max(v, 0.0) if relu else tanh(v)


@njit(**KERNEL)
def gru_step_kernel(x, h, w_ih, w_hh, b_ih, b_hh, chunks, given, xw, hw, out):
    B, H = out.shape
    for c in prange(chunks):
        r0, r1 = c * B // chunks, (c + 1) * B // chunks
        gi, gh = _products(x, h, w_ih, w_hh, given, xw, hw, r0, r1, 3 * H)
        for r in range(r1 - r0):
            rb = r0 + r if b_ih.shape[0] > 1 else 0     # b_ih: [1, G] shared or [B, G] per row
            for j in range(H):
                rg = sigmoid(gi[r, j] + b_ih[rb, j] + gh[r, j] + b_hh[j])
                zg = sigmoid(gi[r, H + j] + b_ih[rb, H + j] + gh[r, H + j] + b_hh[H + j])
                ng = tanh(gi[r, 2 * H + j] + b_ih[rb, 2 * H + j] + rg * (gh[r, 2 * H + j] + b_hh[2 * H + j]))
                out[r0 + r, j] = (1.0 - zg) * ng + zg * h[r0 + r, j]


@njit(**KERNEL)
def lstm_step_kernel(x, h, c, w_ih, w_hh, b_ih, b_hh, w_hr, proj, chunks, given, xw, hw,
                     h_out, c_out):
    # h [B, P], c [B, H]; with a projection h' = (o * tanh(c')) @ W_hr^T, W_hr [P, H]
    B, H = c_out.shape
    for k in prange(chunks):
        r0, r1 = k * B // chunks, (k + 1) * B // chunks
        a, p = _products(x, h, w_ih, w_hh, given, xw, hw, r0, r1, 4 * H)
        m = np.empty((r1 - r0, H), c_out.dtype)
        for r in range(r1 - r0):
            rb = r0 + r if b_ih.shape[0] > 1 else 0     # b_ih: [1, G] shared or [B, G] per row
            for j in range(H):
                ig = sigmoid(a[r, j] + p[r, j] + b_ih[rb, j] + b_hh[j])
                fg = sigmoid(a[r, H + j] + p[r, H + j] + b_ih[rb, H + j] + b_hh[H + j])
                gg = tanh(a[r, 2 * H + j] + p[r, 2 * H + j] + b_ih[rb, 2 * H + j] + b_hh[2 * H + j])
                og = sigmoid(a[r, 3 * H + j] + p[r, 3 * H + j] + b_ih[rb, 3 * H + j] + b_hh[3 * H + j])
                cv = fg * c[r0 + r, j] + ig * gg
                c_out[r0 + r, j] = cv
                m[r, j] = og * tanh(cv)
        if proj:
            gemm_nt(m, w_hr, h_out[r0:r1], r1 - r0)
        else:
            h_out[r0:r1] = m


# ----------------------------------------------------------------- launchers
# A decoding step's cost is its Python: per call, each ``Tensor.numpy`` was ~1 us (ten
# of them), each torch.empty 1.4 us, numba.get_num_threads 0.8 us. So the weights'
# views are cached (_common.weight_view), the outputs are numpy arrays wrapped by
# torch.from_numpy (0.9 us for both), and the absent weights are cached zeros.
def _chunks(B, G, I, H):
    """How many row chunks (threads) a step of this size is split into."""
    return min(B, num_threads()) if B * G * (I + H) >= PARALLEL_WORK else 1


def _given(x, h, w_ih, w_hh, G):
    """(given, xw, hw): x W_ih^T and h W_hh^T by torch's GEMM for a large step on a CPU
    where that GEMM beats this package's (matmul.OWN false: gemm_nt ran the large steps
    at 30-45% of a Sapphire Rapids core's peak, 0.67-0.73x torch's cells), else
    (False, 1x1 stand-ins) and the kernel forms them with gemm_nt."""
    B, I = x.shape
    if matmul.OWN or B * G * (I + h.shape[1]) < TORCH_GEMM_WORK:
        return _NOT_GIVEN[h.dtype]
    return True, torch.mm(x, w_ih.t()).numpy(), torch.mm(h, w_hh.t()).numpy()



def _output(shape, like):
    """(torch tensor, its numpy array) of ``shape`` and like's dtype: a launcher output."""
    a = np.empty(shape, _DTYPES[like.dtype])
    if kernels.POISON:
        a.fill(np.nan)
    return torch.from_numpy(a), a


@functools.lru_cache(maxsize=64)
def _zeros(shape, dtype):
    return np.zeros(shape, dtype)


_NOT_GIVEN = {t: (False, _zeros((1, 1), d), _zeros((1, 1), d)) for t, d in _DTYPES.items()}


def _bias(b, G, like):
    return weight_view(b) if b is not None else _zeros((G,), _DTYPES[like.dtype])


def _input_bias(b, G, like):
    # b_ih as [1, G] (shared) or [B, G] (per row: an input part projected once, e.g. a
    # decoder's context), so one kernel build reads both
    if b is None:
        return _zeros((1, G), _DTYPES[like.dtype])
    return weight_view(b, (1, G)) if b.dim() == 1 else as_numpy(b)


def rnn_step(*, x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity):
    """x [B, I], h [B, H], w_ih [H, I], w_hh [H, H], b_ih [H] or [B, H] or None, b_hh [H] or
    None -> h' [B, H]."""
    B, H = h.shape
    out, o = _output((B, H), h)
    if B:
        chunks = _chunks(B, H, x.shape[1], H)
        rnn_step_kernel(
            as_numpy(x), as_numpy(h), weight_view(w_ih), weight_view(w_hh),
            _input_bias(b_ih, H, h), _bias(b_hh, H, h), nonlinearity == "relu", chunks,
            *_given(x, h, w_ih, w_hh, H), o)
    return out


def gru_step(*, x, h, w_ih, w_hh, b_ih, b_hh):
    """x [B, I], h [B, H], w_ih [3H, I], w_hh [3H, H], b_ih [3H] or [B, 3H] or None, b_hh [3H]
    or None -> h' [B, H]."""
    B, H = h.shape
    out, o = _output((B, H), h)
    if B:
        chunks = _chunks(B, 3 * H, x.shape[1], H)
        gru_step_kernel(
            as_numpy(x), as_numpy(h), weight_view(w_ih), weight_view(w_hh),
            _input_bias(b_ih, 3 * H, h), _bias(b_hh, 3 * H, h), chunks,
            *_given(x, h, w_ih, w_hh, 3 * H), o)
    return out


def lstm_step(*, x, h, c, w_ih, w_hh, b_ih, b_hh, w_hr=None):
    """x [B, I], h [B, P], c [B, H], w_ih [4H, I], w_hh [4H, P], b_ih [4H] or [B, 4H] or None,
    b_hh [4H] or None,
    w_hr [P, H] or None (P = H) -> (h' [B, P], c' [B, H])."""
    (B, P), H = h.shape, c.shape[1]
    (h_out, ho), (c_out, co) = _output((B, P), h), _output((B, H), h)
    if B:
        chunks = _chunks(B, 4 * H, x.shape[1], max(H, P))
        lstm_step_kernel(
            as_numpy(x), as_numpy(h), as_numpy(c), weight_view(w_ih), weight_view(w_hh),
            _input_bias(b_ih, 4 * H, h), _bias(b_hh, 4 * H, h),
            weight_view(w_hr) if w_hr is not None else _zeros((1, 1), _DTYPES[h.dtype]),
            w_hr is not None, chunks, *_given(x, h, w_ih, w_hh, 4 * H), ho, co)
    return h_out, c_out
