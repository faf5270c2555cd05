"""LSTM forward and BPTT kernels (Numba, CPU), optional projection. Gate order (i, f, g, o).

Dimension legend: T steps, B batch, H hidden (cell) size, P state size
(proj_size, or H without projection), G = 4H. ``xproj`` [T, B, G] is
W_ih x + b_ih + b_hh, one GEMM outside. Per step, for the running rows of a chunk:

    a = xproj[t] + h @ W_hh^T                [nb, G]   (step GEMM, W_hh [G, P])
    i, f, g, o = sig(a_i), sig(a_f), tanh(a_g), sig(a_o)
    c' = f * c + i * g,  m = o * tanh(c'),  h' = m (or m @ W_hr^T, W_hr [P, H])

Saved for BPTT: ``gates`` [T, B, G] (activations), ``cells`` [T, B, H] (c' of
every step) and, with a projection, ``mids`` [T, B, H] (m). Parallel plan,
variable lengths and the reverse direction are those of rnn.py.
"""
import numpy as np
from numba import njit, prange
from numba.extending import register_jitable

from .. import lstm_bwd_outputs, lstm_fwd_outputs
from ._common import (KERNEL, ROW, as_numpy, batch_plan, column_units, copy_row, gate_columns,
                      gemm_step, running, states_out, step_time, unit_slices, zero_tail)
from ._panels import gemm_packed, pack, pack_groups
from .activations import sigmoid, tanh


@register_jitable(inline="always")
def _fwd_cell(x, a, c, m, k, H):
    # feature k of one row: x = xproj[t, b], a = acc[r] ([G]); updates c[k] and m[k] and
    # returns the four gate activations and c' for saving
    ig = sigmoid(x[k] + a[k])
    fg = sigmoid(x[H + k] + a[H + k])
    gg = tanh(x[2 * H + k] + a[2 * H + k])
    og = sigmoid(x[3 * H + k] + a[3 * H + k])
    cv = fg * c[k] + ig * gg
    c[k] = cv
    m[k] = og * tanh(cv)
    return ig, fg, gg, og, cv


# The per-row loops are functions of their own, called once per row: the cell is
# inlined (at Numba's IR level) into these small functions, not into the kernel, which
# Numba re-types whole for each inlined copy (seconds of a cold start); LLVM vectorises
# the loop over k either way. Two of them: with the save branch inside, the loop ran
# 1.7x slower.
# The row plan's loops run k < H, the stride of the gates: so LLVM sees that the four
# gate blocks of a row never overlap, and vectorises the loop. With a bound other than
# the stride (a column slice's A units) it does not: sharing such a loop made the row
# plan 1.4-2x slower (LSTM fwd T=100, B=32, H=128: 7.6 ms against 3.5), so the column
# plan has its own (_fwd_slice).
@njit(**ROW)
def _fwd_row_save(x, a, c, m, g, cl, H):
    for k in range(H):
        g[k], g[H + k], g[2 * H + k], g[3 * H + k], cl[k] = _fwd_cell(x, a, c, m, k, H)


@njit(**ROW)
def _fwd_row(x, a, c, m, H):
    for k in range(H):
        _fwd_cell(x, a, c, m, k, H)


@njit(**ROW)
def _fwd_slice(x, a, c, m, g, cl, H, A, save):
    # the column plan's row: one loop a gate, each over two arrays (a, this slice's
    # [i | f | g | o] products, becomes the activations in place), so that every loop
    # can vectorise; the row plan's one loop does not at a bound other than its stride
    for k in range(A):
        a[k] = sigmoid(x[k] + a[k])
    for k in range(A):
        a[A + k] = sigmoid(x[H + k] + a[A + k])
    for k in range(A):
        a[2 * A + k] = tanh(x[2 * H + k] + a[2 * A + k])
    for k in range(A):
        a[3 * A + k] = sigmoid(x[3 * H + k] + a[3 * A + k])
    for k in range(A):
        cv = a[A + k] * c[k] + a[k] * a[2 * A + k]
        c[k] = cv
        m[k] = a[3 * A + k] * tanh(cv)
    if save:
        for q in range(4):
            for k in range(A):
                g[q * H + k] = a[q * A + k]
        for k in range(A):
            cl[k] = c[k]


@njit(**KERNEL)
def lstm_fwd_kernel(xproj, h0, c0, w_hh, w_hr, lengths, rows, bounds, reverse, proj, save, out,
                    h_n, c_n, gates, cells, mids):
    # the weights arrive packed (_panels.pack of the product's right operand [K, M]):
    # w_hh = W_hh^T, w_hr = W_hr^T forward; w_hh_t = W_hh, w_hr_t = W_hr in BPTT
    T, B, P = out.shape
    H = c0.shape[1]
    for ch in prange(bounds.shape[0] - 1):
        b0, b1 = bounds[ch], bounds[ch + 1]
        nb = b1 - b0
        if nb == 0:
            continue
        h = np.empty((nb, P), out.dtype)            # [nb, P] running output state
        c = np.empty((nb, H), out.dtype)            # [nb, H] running cell state
        acc = np.empty((nb, 4 * H), out.dtype)      # [nb, G] h @ W_hh^T
        m = np.empty((nb, H), out.dtype)            # [nb, H] o * tanh(c) before projection
        for r in range(nb):
            copy_row(h[r], h0[rows[b0 + r]])
            copy_row(c[r], c0[rows[b0 + r]])
        nact = nb
        for s in range(lengths[rows[b0]]):
            nact = running(lengths, rows, b0, nb, nact, s)
            gemm_packed(h, w_hh, acc, nact)
            for r in range(nact):
                b = rows[b0 + r]
                t = step_time(s, lengths[b], reverse)
                x, a, cr, mr = xproj[t, b], acc[r], c[r], m[r]
                if save:
                    _fwd_row_save(x, a, cr, mr, gates[t, b], cells[t, b], H)
                else:
                    _fwd_row(x, a, cr, mr, H)
            if proj:
                gemm_packed(m, w_hr, h, nact)
            for r in range(nact):
                b = rows[b0 + r]
                t = step_time(s, lengths[b], reverse)
                if proj:
                    if save:
                        copy_row(mids[t, b], m[r])
                else:
                    copy_row(h[r], m[r])
                copy_row(out[t, b], h[r])
        for r in range(nb):
            b = rows[b0 + r]
            copy_row(h_n[b], h[r])
            copy_row(c_n[b], c[r])
            zero_tail(out, lengths, b)
            if proj and save:
                zero_tail(mids, lengths, b)     # finite, so dW_hr's GEMM over all steps is clean


@register_jitable(inline="always")
def _bwd_cell(grad_out, gates, cells, c0, dh, dc, dm, grad_pre, grad_h, t, tp, b, r, s, k, keep,
              proj, H):
    # BPTT of unit k of row b (chunk row r) at step s (time t, the step before at tp):
    # updates dc[r, k], writes grad_pre[t, b] at the four gates of k and, with ``keep``,
    # grad_h[t, b, k]. Whole arrays, indexed here: as views passed to a row function,
    # nine arrays' runtime alias checks stopped LLVM vectorising the loop (2x slower).
    one = grad_out.dtype.type(1)
    ig = gates[t, b, k]
    fg = gates[t, b, H + k]
    gg = gates[t, b, 2 * H + k]
    og = gates[t, b, 3 * H + k]
    tc = tanh(cells[t, b, k])
    cprev = cells[tp, b, k] if s > 0 else c0[b, k]
    dmk = dm[r, k] if proj else grad_out[t, b, k] + dh[r, k]
    if keep:
        grad_h[t, b, k] = dmk
    dct = dc[r, k] + dmk * og * (one - tc * tc)
    dc[r, k] = dct * fg
    grad_pre[t, b, k] = dct * gg * ig * (one - ig)
    grad_pre[t, b, H + k] = dct * cprev * fg * (one - fg)
    grad_pre[t, b, 2 * H + k] = dct * ig * (one - gg * gg)
    grad_pre[t, b, 3 * H + k] = dmk * tc * og * (one - og)


@njit(**KERNEL)
def lstm_bwd_kernel(grad_out, grad_hn, grad_cn, c0, gates, cells, w_hh_t, w_hr_t, lengths, rows,
                    bounds, reverse, uniform, proj, keep, grad_pre, grad_h, grad_h0, grad_c0):
    # the weights arrive packed (_panels.pack of the product's right operand [K, M]):
    # w_hh = W_hh^T, w_hr = W_hr^T forward; w_hh_t = W_hh, w_hr_t = W_hr in BPTT
    # writes grad_pre = dL/d a [T, B, G] and, with a projection, grad_h = dL/d h_t
    # [T, B, P] (for dW_hr), both zero past each length, and grad_h0 [B, P], grad_c0 [B, H].
    # Without a projection dL/dm is grad_out[t] + dh, formed inside the gate loop: no
    # grad_h and no extra pass over the rows (grad_h is then empty, unless ``keep`` asks
    # for dL/dh_t there: the launcher's optional grad_states).
    T, B, P = grad_out.shape
    H = c0.shape[1]
    for ch in prange(bounds.shape[0] - 1):
        b0, b1 = bounds[ch], bounds[ch + 1]
        nb = b1 - b0
        if nb == 0:
            continue
        dh = np.empty((nb, P), grad_out.dtype)      # [nb, P] dL/dh carried back
        dc = np.empty((nb, H), grad_out.dtype)      # [nb, H] dL/dc carried back
        d = np.empty((nb, P), grad_out.dtype)       # [nb, P] gathered grad_h rows (varlen)
        dm = np.empty((nb, H), grad_out.dtype)      # [nb, H] dL/dm
        g = np.empty((nb, 4 * H), grad_out.dtype)   # [nb, G] gathered grad_pre rows (varlen)
        for r in range(nb):
            copy_row(dh[r], grad_hn[rows[b0 + r]])
            copy_row(dc[r], grad_cn[rows[b0 + r]])
        nact = 0
        for s in range(lengths[rows[b0]] - 1, -1, -1):
            nact = running(lengths, rows, b0, nb, nact, s)
            if proj:
                for r in range(nact):
                    b = rows[b0 + r]
                    t = step_time(s, lengths[b], reverse)
                    for j in range(P):
                        grad_h[t, b, j] = grad_out[t, b, j] + dh[r, j]
                # dm = grad_h[t] @ W_hr
                gemm_step(grad_h, lengths, rows, b0, nact, s, reverse, uniform, d, w_hr_t, dm)
            for r in range(nact):
                b = rows[b0 + r]
                L = lengths[b]
                t = step_time(s, L, reverse)
                tp = step_time(s - 1, L, reverse)
                for k in range(H):
                    _bwd_cell(grad_out, gates, cells, c0, dh, dc, dm, grad_pre, grad_h, t, tp,
                              b, r, s, k, keep and not proj, proj, H)
            # dh = grad_pre[t] @ W_hh
            gemm_step(grad_pre, lengths, rows, b0, nact, s, reverse, uniform, g, w_hh_t, dh)
        for r in range(nb):
            b = rows[b0 + r]
            copy_row(grad_h0[b], dh[r])
            copy_row(grad_c0[b], dc[r])
            zero_tail(grad_pre, lengths, b)
            if proj or keep:
                zero_tail(grad_h, lengths, b)


# The column plan (_common.column_units): all B rows in one chunk, longest first; each
# step is one parallel region over S unit slices. Slice p owns units u0 = units[p] to
# u1 = units[p + 1] with all four of their gates: forward, panels[pofs[p]:pofs[p + 1]]
# packs W_hh^T's columns [i | f | g | o] of its units and its product fills acc[:, 4 u0:
# 4 u1] in that order; BPTT, they pack W_hh[:, u0:u1] and its product fills dh[:, u0:u1].
@njit(**KERNEL)
def lstm_fwd_cols_kernel(xproj, h0, c0, panels, pofs, units, lengths, rows, reverse, save, out,
                         h_n, c_n, gates, cells):
    # h is double-buffered: each slice reads all of step s-1's h and writes its units of
    # step s. A row that stops keeps its last h in buffer (its length) % 2.
    T, B, H = out.shape
    hb = np.empty((2, B, H), out.dtype)             # [2, B, H] h of even and odd steps
    c = np.empty((B, H), out.dtype)                 # [B, H] running cell state
    acc = np.empty((B, 4 * H), out.dtype)           # [B, G] slice-major h @ W_hh^T
    for r in range(B):
        copy_row(hb[0, r], h0[rows[r]])
        copy_row(c[r], c0[rows[r]])
    nact = B
    for s in range(lengths[rows[0]]):
        nact = running(lengths, rows, 0, B, nact, s)
        hi, ho = hb[s % 2], hb[1 - s % 2]
        for p in prange(units.shape[0] - 1):
            u0, u1 = units[p], units[p + 1]
            a = acc[:, 4 * u0:4 * u1]
            gemm_packed(hi, panels[pofs[p]:pofs[p + 1]], a, nact)
            for r in range(nact):
                b = rows[r]
                t = step_time(s, lengths[b], reverse)
                x, cr, mr = xproj[t, b, u0:], c[r, u0:], ho[r, u0:]
                _fwd_slice(x, a[r], cr, mr, gates[t, b, u0:], cells[t, b, u0:], H, u1 - u0,
                           save)
                for k in range(u0, u1):
                    out[t, b, k] = ho[r, k]
    for r in range(B):
        b = rows[r]
        copy_row(h_n[b], hb[lengths[b] % 2, r])
        copy_row(c_n[b], c[r])
        zero_tail(out, lengths, b)


@njit(**KERNEL)
def lstm_bwd_cols_kernel(grad_out, grad_hn, grad_cn, c0, gates, cells, panels, pofs, units,
                         lengths, rows, reverse, uniform, keep, grad_pre, grad_h, grad_h0,
                         grad_c0):
    # the region of step s first forms dh = dL/da of step s+1 (all of it, written by
    # the region before) @ W_hh for its units, then runs their BPTT at step s
    T, B, H = grad_out.shape
    S = units.shape[0] - 1
    dh = np.empty((B, H), grad_out.dtype)           # [B, H] dL/dh carried back
    dc = np.empty((B, H), grad_out.dtype)           # [B, H] dL/dc carried back
    buf = np.empty((S, B, 4 * H), grad_out.dtype)   # [S, B, G] a slice's gathered rows
    for r in range(B):
        copy_row(dh[r], grad_hn[rows[r]])
        copy_row(dc[r], grad_cn[rows[r]])
    nact = 0
    for s in range(lengths[rows[0]] - 1, -1, -1):
        prev = nact                                 # the rows of step s+1
        nact = running(lengths, rows, 0, B, nact, s)
        for p in prange(S):
            u0, u1 = units[p], units[p + 1]
            gemm_step(grad_pre, lengths, rows, 0, prev, s + 1, reverse, uniform, buf[p],
                      panels[pofs[p]:pofs[p + 1]], dh[:, u0:u1])
            for r in range(nact):
                b = rows[r]
                L = lengths[b]
                t = step_time(s, L, reverse)
                tp = step_time(s - 1, L, reverse)
                for k in range(u0, u1):
                    _bwd_cell(grad_out, gates, cells, c0, dh, dc, dh, grad_pre, grad_h, t, tp,
                              b, r, s, k, keep, False, H)
    for p in prange(S):                             # dL/dh0 from step 0's dL/da
        u0, u1 = units[p], units[p + 1]
        gemm_step(grad_pre, lengths, rows, 0, nact, 0, reverse, uniform, buf[p],
                  panels[pofs[p]:pofs[p + 1]], dh[:, u0:u1])
    for r in range(B):
        b = rows[r]
        copy_row(grad_h0[b], dh[r])
        copy_row(grad_c0[b], dc[r])
        zero_tail(grad_pre, lengths, b)
        if keep:
            zero_tail(grad_h, lengths, b)


# ----------------------------------------------------------------- launchers
def _proj_weight(w_hr, like):
    # w_hr packed ([K, M] operand); without projection a 1x1 stand-in the kernels never read
    return pack(w_hr if w_hr is not None else like.new_zeros(1, 1))


def lstm_fwd(*, xproj, h0, c0, w_hh, w_hr, lengths, reverse, save=True):
    """xproj [T, B, 4H], h0 [B, P], c0 [B, H], w_hh [4H, P], w_hr [P, H] or None
    -> (out [T, B, P], h_n [B, P], c_n [B, H], gates [T, B, 4H], cells [T, B, H],
        mids [T, B, H] (projection only, else empty)); the last three empty unless save."""
    T, B, G = xproj.shape
    proj = w_hr is not None
    out, h_n, c_n, gates, cells, mids = lstm_fwd_outputs(xproj, h0, proj, save)
    if B == 0:
        return out, h_n, c_n, gates, cells, mids
    H = G // 4
    units = column_units(B, H, G, proj)
    if units is not None:
        lens, rows, _ = batch_plan(lengths, B, T, chunks=1)
        panels, pofs = pack_groups(w_hh.t(), gate_columns(units, H, 4))
        lstm_fwd_cols_kernel(as_numpy(xproj), as_numpy(h0), as_numpy(c0), panels, pofs, units,
                             lens, rows, reverse, save, out.numpy(), h_n.numpy(), c_n.numpy(),
                             gates.numpy(), cells.numpy())
        return out, h_n, c_n, gates, cells, mids
    lens, rows, bounds = batch_plan(lengths, B, T)
    # the products' right-hand operands, packed once per call (_panels.pack): W_hh^T, W_hr^T
    lstm_fwd_kernel(as_numpy(xproj), as_numpy(h0), as_numpy(c0), pack(w_hh.t()),
                    _proj_weight(None if w_hr is None else w_hr.t(), xproj), lens, rows,
                    bounds, reverse, proj, save,
                    out.numpy(), h_n.numpy(), c_n.numpy(), gates.numpy(), cells.numpy(),
                    mids.numpy())
    return out, h_n, c_n, gates, cells, mids


def lstm_bwd(*, grad_out, grad_hn, grad_cn, c0, gates, cells, w_hh, w_hr, lengths, reverse,
             grad_states=None):
    """-> (grad_pre [T, B, 4H] = dL/d(xproj + h W_hh^T), grad_h [T, B, P] = dL/dh_t (with a
    projection, else empty), grad_h0 [B, P], grad_c0 [B, H]); fills the optional output
    grad_states [T, B, P] with dL/dh_t if given."""
    T, B, P = grad_out.shape
    grad_pre, grad_h, grad_h0, grad_c0 = lstm_bwd_outputs(grad_out, c0, w_hr is not None)
    if B == 0:
        return grad_pre, grad_h, grad_h0, grad_c0
    keep = grad_states is not None and w_hr is None     # with a projection grad_h is dL/dh_t
    target = grad_states if keep else grad_h
    H = c0.shape[1]
    units = column_units(B, H, 4 * H, w_hr is not None)
    if units is not None:
        lens, rows, _ = batch_plan(lengths, B, T, chunks=1)
        panels, pofs = pack_groups(w_hh, unit_slices(units))
        lstm_bwd_cols_kernel(as_numpy(grad_out), as_numpy(grad_hn), as_numpy(grad_cn),
                             as_numpy(c0), as_numpy(gates), as_numpy(cells), panels, pofs,
                             units, lens, rows, reverse, lengths is None, keep,
                             grad_pre.numpy(), states_out(target, grad_out), grad_h0.numpy(),
                             grad_c0.numpy())
        return grad_pre, grad_h, grad_h0, grad_c0
    lens, rows, bounds = batch_plan(lengths, B, T)
    lstm_bwd_kernel(as_numpy(grad_out), as_numpy(grad_hn), as_numpy(grad_cn), as_numpy(c0),
                    as_numpy(gates), as_numpy(cells), pack(w_hh),
                    _proj_weight(w_hr, grad_out), lens, rows,
                    bounds, reverse, lengths is None, w_hr is not None, keep, grad_pre.numpy(),
                    states_out(target, grad_out), grad_h0.numpy(), grad_c0.numpy())
    if grad_states is not None and w_hr is not None:
        grad_states.copy_(grad_h)
    return grad_pre, grad_h, grad_h0, grad_c0
