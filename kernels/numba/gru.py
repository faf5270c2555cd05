"""GRU forward and BPTT kernels (Numba, CPU). Gate order (r, z, n), as torch.

Dimension legend: T steps, B batch, H hidden, G = 3H. ``xproj`` [T, B, G] is
W_ih x + b_ih + [b_hr, b_hz, 0], one GEMM outside; b_hn stays inside the
r-product. Per step, for the running rows of a chunk:

    hp = h @ W_hh^T                         [nb, G]   (one step GEMM)
    r = sig(x_r + hp_r), z = sig(x_z + hp_z), a = hp_n + b_hn
    n = tanh(x_n + r * a),  h' = (1 - z) * n + z * h

``gates`` [T, B, 4H] keeps (r, z, n, a) for BPTT. Parallel plan, variable lengths
and the reverse direction are those of rnn.py.
"""
import numpy as np
from numba import njit, prange
from numba.extending import register_jitable

from .. import gru_bwd_outputs, gru_fwd_outputs
from ._common import (KERNEL, ROW, as_numpy, batch_plan, copy_row, gemm_step, running, states_out,
                      step_time, zero_tail)
from ._panels import gemm_packed, pack
from .activations import sigmoid, tanh


@register_jitable(inline="always")
def _fwd_cell(x, p, b_hn, h, o, j, H):
    # feature j of one row: x = xproj[t, b], p = hp[r] ([G]); updates h[j], writes
    # o[j] = out[t, b, j] and returns r, z, n and a = (W_hn h + b_hn)_j for saving
    rg = sigmoid(x[j] + p[j])
    zg = sigmoid(x[H + j] + p[H + j])
    a = p[2 * H + j] + b_hn[j]
    ng = tanh(x[2 * H + j] + rg * a)
    v = (h.dtype.type(1) - zg) * ng + zg * h[j]
    h[j] = v
    o[j] = v
    return rg, zg, ng, a


# per-row loops as functions of their own: see lstm.py
@njit(**ROW)
def _fwd_row_save(x, p, b_hn, h, o, g, H):
    for j in range(H):
        g[j], g[H + j], g[2 * H + j], g[3 * H + j] = _fwd_cell(x, p, b_hn, h, o, j, H)


@njit(**ROW)
def _fwd_row(x, p, b_hn, h, o, H):
    for j in range(H):
        _fwd_cell(x, p, b_hn, h, o, j, H)


@njit(**KERNEL)
def gru_fwd_kernel(xproj, h0, w_hh, b_hn, lengths, rows, bounds, reverse, save, out, h_n, gates):
    # the weights arrive packed (_panels.pack of the product's right operand [K, M]):
    # w_hh = W_hh^T, w_hr = W_hr^T forward; w_hh_t = W_hh, w_hr_t = W_hr in BPTT
    T, B, H = out.shape
    for c in prange(bounds.shape[0] - 1):
        b0, b1 = bounds[c], bounds[c + 1]
        nb = b1 - b0
        if nb == 0:
            continue
        h = np.empty((nb, H), out.dtype)            # [nb, H] running state
        hp = np.empty((nb, 3 * H), out.dtype)       # [nb, G] h @ W_hh^T
        for r in range(nb):
            copy_row(h[r], h0[rows[b0 + r]])
        nact = nb
        for s in range(lengths[rows[b0]]):
            nact = running(lengths, rows, b0, nb, nact, s)
            gemm_packed(h, w_hh, hp, nact)
            for r in range(nact):
                b = rows[b0 + r]
                t = step_time(s, lengths[b], reverse)
                x, p, hr, o = xproj[t, b], hp[r], h[r], out[t, b]
                if save:        # two row functions: see lstm.py's forward
                    _fwd_row_save(x, p, b_hn, hr, o, gates[t, b], H)
                else:
                    _fwd_row(x, p, b_hn, hr, o, H)
        for r in range(nb):
            b = rows[b0 + r]
            copy_row(h_n[b], h[r])
            zero_tail(out, lengths, b)


@njit(**KERNEL)
def gru_bwd_kernel(grad_out, grad_hn, out, h0, gates, w_hh_t, lengths, rows, bounds, reverse,
                   uniform, keep, grad_x, grad_hp, grad_h0, grad_states):
    # the weights arrive packed (_panels.pack of the product's right operand [K, M]):
    # w_hh = W_hh^T, w_hr = W_hr^T forward; w_hh_t = W_hh, w_hr_t = W_hr in BPTT
    # writes grad_x = dL/d xproj and grad_hp = dL/d hp (differs in the n part:
    # dL/d a = dL/d n_pre * r), both [T, B, G] and zero past each length; grad_h0;
    # with ``keep``, grad_states [T, B, H] = dL/dh_t
    T, B, H = out.shape
    one = grad_out.dtype.type(1)
    for c in prange(bounds.shape[0] - 1):
        b0, b1 = bounds[c], bounds[c + 1]
        nb = b1 - b0
        if nb == 0:
            continue
        dh = np.empty((nb, H), out.dtype)           # [nb, H] dL/dh carried back
        dz_h = np.empty((nb, H), out.dtype)         # [nb, H] the direct path d * z
        g = np.empty((nb, 3 * H), out.dtype)        # [nb, G] gathered grad_hp rows (varlen)
        back = np.empty((nb, H), out.dtype)         # [nb, H] g @ W_hh
        for r in range(nb):
            copy_row(dh[r], grad_hn[rows[b0 + r]])
        nact = 0
        for s in range(lengths[rows[b0]] - 1, -1, -1):
            nact = running(lengths, rows, b0, nb, nact, s)
            for r in range(nact):
                b = rows[b0 + r]
                L = lengths[b]
                t = step_time(s, L, reverse)
                tp = step_time(s - 1, L, reverse)
                for j in range(H):
                    hprev = out[tp, b, j] if s > 0 else h0[b, j]
                    d = grad_out[t, b, j] + dh[r, j]
                    if keep:
                        grad_states[t, b, j] = d
                    rg = gates[t, b, j]
                    zg = gates[t, b, H + j]
                    ng = gates[t, b, 2 * H + j]
                    a = gates[t, b, 3 * H + j]
                    dn = d * (one - zg) * (one - ng * ng)          # dL/d n_pre
                    dzp = d * (hprev - ng) * zg * (one - zg)
                    drp = dn * a * rg * (one - rg)
                    grad_x[t, b, j] = drp
                    grad_x[t, b, H + j] = dzp
                    grad_x[t, b, 2 * H + j] = dn
                    grad_hp[t, b, j] = drp
                    grad_hp[t, b, H + j] = dzp
                    grad_hp[t, b, 2 * H + j] = dn * rg
                    dz_h[r, j] = d * zg
            # back = grad_hp[t] @ W_hh
            gemm_step(grad_hp, lengths, rows, b0, nact, s, reverse, uniform, g, w_hh_t, back)
            for r in range(nact):
                for j in range(H):
                    dh[r, j] = back[r, j] + dz_h[r, j]
        for r in range(nb):
            b = rows[b0 + r]
            copy_row(grad_h0[b], dh[r])
            zero_tail(grad_x, lengths, b)
            zero_tail(grad_hp, lengths, b)
            if keep:
                zero_tail(grad_states, lengths, b)


# ----------------------------------------------------------------- launchers
def gru_fwd(*, xproj, h0, w_hh, b_hn, lengths, reverse, save=True):
    """xproj [T, B, 3H], h0 [B, H], w_hh [3H, H], b_hn [H] or None
    -> (out [T, B, H], h_n [B, H], gates [T, B, 4H] saved for gru_bwd, empty unless save)."""
    T, B, G = xproj.shape
    H = G // 3
    out, h_n, gates = gru_fwd_outputs(xproj, save)
    if B == 0:
        return out, h_n, gates
    if b_hn is None:
        b_hn = xproj.new_zeros(H)
    lens, rows, bounds = batch_plan(lengths, B, T)
    gru_fwd_kernel(as_numpy(xproj), as_numpy(h0), pack(w_hh.t()), as_numpy(b_hn), lens, rows,
                   bounds, reverse, save, out.numpy(), h_n.numpy(), gates.numpy())
    return out, h_n, gates


def gru_bwd(*, grad_out, grad_hn, out, h0, gates, w_hh, lengths, reverse, grad_states=None):
    """-> (grad_x [T, B, 3H] = dL/d xproj, grad_hp [T, B, 3H] = dL/d (h @ W_hh^T + [0, 0, b_hn]),
    grad_h0 [B, H]); fills the optional output grad_states [T, B, H] with dL/dh_t if given."""
    T, B, H = out.shape
    grad_x, grad_hp, grad_h0 = gru_bwd_outputs(out)
    if B == 0:
        return grad_x, grad_hp, grad_h0
    lens, rows, bounds = batch_plan(lengths, B, T)
    gru_bwd_kernel(as_numpy(grad_out), as_numpy(grad_hn), as_numpy(out), as_numpy(h0),
                   as_numpy(gates), pack(w_hh), lens, rows, bounds, reverse,
                   lengths is None, grad_states is not None, grad_x.numpy(), grad_hp.numpy(),
                   grad_h0.numpy(), states_out(grad_states, out))
    return grad_x, grad_hp, grad_h0
