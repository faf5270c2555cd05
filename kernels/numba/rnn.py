"""Elman RNN forward and BPTT kernels (Numba, CPU).

Dimension legend: T steps, B batch, H hidden; ``xproj`` is the input projection
W_ih x_t + b_ih + b_hh of every step, computed outside as one GEMM.

Parallel plan: batch rows never interact, so each thread takes a chunk of rows
and runs the *whole* time loop for it with no synchronisation between steps. The
per-step product h @ W_hh^T of a chunk is ``_gemm.gemm_nt``, a register-blocked
loop on the thread itself (no BLAS call per step; see _gemm.py for why).

Variable lengths: ``rows`` lists the batch rows of every chunk, longest first
(chunk c owns ``rows[bounds[c]:bounds[c+1]]``), so the rows still running at
processing step s are a prefix of the chunk and the GEMM shrinks with them; no
work is done past a row's length. Row b at processing step s sits at time
``t = s`` (forward) or ``t = len_b - 1 - s`` (reverse: each row starts at its own
last step).
"""
import numpy as np
from numba import njit, prange

from .. import rnn_bwd_outputs, rnn_fwd_outputs
from ._common import (KERNEL, as_numpy, batch_plan, copy_row, gemm_step, running, states_out,
                      step_time, zero_tail)
from ._panels import gemm_packed, pack
from .activations import tanh


@njit(**KERNEL)
def rnn_fwd_kernel(xproj, h0, w_hh, lengths, rows, bounds, reverse, relu, out, h_n):
    # the weights arrive packed (_panels.pack of the product's right operand [K, M]):
    # w_hh = W_hh^T, w_hr = W_hr^T forward; w_hh_t = W_hh, w_hr_t = W_hr in BPTT
    # xproj [T, B, H], h0 [B, H], w_hh [H, H], lengths/rows [B],
    # bounds [C+1]; writes out [T, B, H] (zero past each length) and h_n [B, H]
    T, B, H = xproj.shape
    zero = xproj.dtype.type(0)
    for c in prange(bounds.shape[0] - 1):
        b0, b1 = bounds[c], bounds[c + 1]
        nb = b1 - b0
        if nb == 0:
            continue
        h = np.empty((nb, H), xproj.dtype)          # [nb, H] running state
        acc = np.empty((nb, H), xproj.dtype)        # [nb, H] h @ W_hh^T
        for r in range(nb):
            copy_row(h[r], h0[rows[b0 + r]])
        nact = nb
        for s in range(lengths[rows[b0]]):
            nact = running(lengths, rows, b0, nb, nact, s)
            gemm_packed(h, w_hh, acc, nact)
            for r in range(nact):
                b = rows[b0 + r]
                t = step_time(s, lengths[b], reverse)
                if relu:
                    for j in range(H):
                        v = max(acc[r, j] + xproj[t, b, j], zero)
                        h[r, j] = v
                        out[t, b, j] = v
                else:
                    for j in range(H):
                        v = tanh(acc[r, j] + xproj[t, b, j])
                        h[r, j] = v
                        out[t, b, j] = v
        for r in range(nb):
            b = rows[b0 + r]
            copy_row(h_n[b], h[r])
            zero_tail(out, lengths, b)


@njit(**KERNEL)
def rnn_bwd_kernel(grad_out, grad_hn, out, w_hh_t, lengths, rows, bounds, reverse, uniform,
                   relu, keep, grad_pre, grad_h0, grad_states):
    # the weights arrive packed (_panels.pack of the product's right operand [K, M]):
    # w_hh = W_hh^T, w_hr = W_hr^T forward; w_hh_t = W_hh, w_hr_t = W_hr in BPTT
    # grad_out/out [T, B, H], grad_hn [B, H], w_hh_t = W_hh^T [H, H]; writes the
    # pre-activation gradients grad_pre [T, B, H] (zero past each length) and
    # grad_h0 [B, H]; with ``keep``, grad_states [T, B, H] = dL/dh_t too
    T, B, H = out.shape
    zero, one = grad_out.dtype.type(0), grad_out.dtype.type(1)
    for c in prange(bounds.shape[0] - 1):
        b0, b1 = bounds[c], bounds[c + 1]
        nb = b1 - b0
        if nb == 0:
            continue
        dh = np.empty((nb, H), out.dtype)           # [nb, H] dL/dh carried back
        g = np.empty((nb, H), out.dtype)            # [nb, H] gathered grad_pre rows (varlen)
        for r in range(nb):
            copy_row(dh[r], grad_hn[rows[b0 + r]])
        nact = 0
        for s in range(lengths[rows[b0]] - 1, -1, -1):
            # rows join when s reaches their last step; they start from grad_hn
            nact = running(lengths, rows, b0, nb, nact, s)
            for r in range(nact):
                b = rows[b0 + r]
                t = step_time(s, lengths[b], reverse)
                if relu:
                    for j in range(H):
                        d = grad_out[t, b, j] + dh[r, j]
                        if keep:                    # loop-invariant: LLVM unswitches it
                            grad_states[t, b, j] = d
                        v = d if out[t, b, j] > zero else zero
                        grad_pre[t, b, j] = v
                else:
                    for j in range(H):
                        y = out[t, b, j]
                        d = grad_out[t, b, j] + dh[r, j]
                        if keep:
                            grad_states[t, b, j] = d
                        grad_pre[t, b, j] = d * (one - y * y)
            # dh = grad_pre[t] @ W_hh
            gemm_step(grad_pre, lengths, rows, b0, nact, s, reverse, uniform, g, w_hh_t, dh)
        for r in range(nb):
            b = rows[b0 + r]
            copy_row(grad_h0[b], dh[r])
            zero_tail(grad_pre, lengths, b)
            if keep:
                zero_tail(grad_states, lengths, b)


# ----------------------------------------------------------------- launchers
def rnn_fwd(*, xproj, h0, w_hh, lengths, reverse, nonlinearity, save=True):
    """xproj [T, B, H], h0 [B, H], w_hh [H, H] -> (out [T, B, H], h_n [B, H]).
    ``save`` is part of the launcher contract; an RNN saves nothing beyond ``out``."""
    T, B, H = xproj.shape
    out, h_n = rnn_fwd_outputs(xproj)
    if B == 0:
        return out, h_n
    lens, rows, bounds = batch_plan(lengths, B, T)
    rnn_fwd_kernel(as_numpy(xproj), as_numpy(h0), pack(w_hh.t()), lens, rows, bounds, reverse,
                   nonlinearity == "relu", out.numpy(), h_n.numpy())
    return out, h_n


def rnn_bwd(*, grad_out, grad_hn, out, w_hh, lengths, reverse, nonlinearity, grad_states=None):
    """-> (grad_pre [T, B, H] = dL/d(xproj) per step, grad_h0 [B, H]); fills the optional
    output grad_states [T, B, H] with dL/dh_t if given."""
    T, B, H = out.shape
    grad_pre, grad_h0 = rnn_bwd_outputs(out)
    if B == 0:
        return grad_pre, grad_h0
    lens, rows, bounds = batch_plan(lengths, B, T)
    rnn_bwd_kernel(as_numpy(grad_out), as_numpy(grad_hn), as_numpy(out), pack(w_hh),
                   lens, rows, bounds, reverse, lengths is None, nonlinearity == "relu",
                   grad_states is not None, grad_pre.numpy(), grad_h0.numpy(),
                   states_out(grad_states, out))
    return grad_pre, grad_h0
