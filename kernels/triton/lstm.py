"""LSTM forward and BPTT kernels (Triton, CUDA; TRITON_INTERPRET=1 on CPU), optional projection.

Dimension legend: T steps, B batch, H cell size, P state size (proj_size or H),
G = 4H; BB rows per program, BN x BK tiles. Same plan as gru.py (tiled layout,
fp32 state scratch, CTA barriers between phases). Per step:

    a = xproj[t] + h @ W_hh^T;  i, f, g, o = sig, sig, tanh, sig of a's quarters
    c' = f * c + i * g;  m = o * tanh(c');  h' = m (or m @ W_hr^T)

Saved for BPTT: gates [T, B, G], cells [T, B, H], and mids [T, B, H] (m) with a
projection. Gate order (i, f, g, o), as torch.
"""
import triton
import triton.language as tl

from .. import lstm_bwd_outputs, lstm_fwd_outputs
from ._common import (_copy_rows, _lengths, _precision, _rowdot, _rows, _sigmoid, _slot, _tanh,
                      _time, _zero_padding)


@triton.jit(do_not_specialize=["T"])
def lstm_fwd_kernel(xproj_ptr, h0_ptr, c0_ptr, w_t_ptr, wr_t_ptr, lengths_ptr, out_ptr, hn_ptr,
                    cn_ptr, gates_ptr, cells_ptr, mids_ptr, state_ptr, c_ptr, m_ptr, T, B, H, P,
                    PROJ: tl.constexpr, REVERSE: tl.constexpr, VARLEN: tl.constexpr,
                    SAVE: tl.constexpr, PRECISION: tl.constexpr, BB: tl.constexpr,
                    BN: tl.constexpr, BK: tl.constexpr):
    # w_t = W_hh^T [P, 4H]; wr_t = W_hr^T [H, P]; state [2, B, P] and c [B, H] fp32
    # scratch; m [B, H] scratch for o * tanh(c) before the projection; gates, cells
    # and mids written only if SAVE
    offs_b, row_ok, lens = _rows(B, BB, lengths_ptr)
    nsteps = tl.max(lens, axis=0)
    dt = out_ptr.dtype.element_ty
    G = 4 * H
    _copy_rows(h0_ptr, state_ptr, offs_b, row_ok, P, BN)
    _copy_rows(c0_ptr, c_ptr, offs_b, row_ok, H, BN)
    tl.debug_barrier()
    for s in range(0, nsteps):
        act = s < lens
        t = _time(s, lens, REVERSE)
        src = _slot(state_ptr, s, B, P)
        dst = _slot(state_ptr, s + 1, B, P)
        for n0 in range(0, H, BN):
            offs_n = n0 + tl.arange(0, BN)
            n_ok = offs_n < H
            m2 = row_ok[:, None] & n_ok[None, :]
            ma = m2 & act[:, None]
            xo = (t[:, None] * B + offs_b[:, None]) * G + offs_n[None, :]
            pre_i = _rowdot(src, P, w_t_ptr, G, 0, offs_b, row_ok, offs_n, n_ok, P, dt, PRECISION, BB, BN, BK)
            pre_f = _rowdot(src, P, w_t_ptr, G, H, offs_b, row_ok, offs_n, n_ok, P, dt, PRECISION, BB, BN, BK)
            pre_g = _rowdot(src, P, w_t_ptr, G, 2 * H, offs_b, row_ok, offs_n, n_ok, P, dt, PRECISION, BB, BN, BK)
            pre_o = _rowdot(src, P, w_t_ptr, G, 3 * H, offs_b, row_ok, offs_n, n_ok, P, dt, PRECISION, BB, BN, BK)
            ig = _sigmoid(pre_i + tl.load(xproj_ptr + xo, mask=ma, other=0.0).to(tl.float32))
            fg = _sigmoid(pre_f + tl.load(xproj_ptr + xo + H, mask=ma, other=0.0).to(tl.float32))
            gg = _tanh(pre_g + tl.load(xproj_ptr + xo + 2 * H, mask=ma, other=0.0).to(tl.float32))
            og = _sigmoid(pre_o + tl.load(xproj_ptr + xo + 3 * H, mask=ma, other=0.0).to(tl.float32))
            co = offs_b[:, None] * H + offs_n[None, :]
            c_old = tl.load(c_ptr + co, mask=m2, other=0.0)
            c_new = fg * c_old + ig * gg
            mv = og * _tanh(c_new)
            tl.store(c_ptr + co, tl.where(act[:, None], c_new, c_old), mask=m2)
            ho = (t[:, None] * B + offs_b[:, None]) * H + offs_n[None, :]
            if SAVE:
                tl.store(gates_ptr + xo, ig.to(dt), mask=ma)
                tl.store(gates_ptr + xo + H, fg.to(dt), mask=ma)
                tl.store(gates_ptr + xo + 2 * H, gg.to(dt), mask=ma)
                tl.store(gates_ptr + xo + 3 * H, og.to(dt), mask=ma)
                tl.store(cells_ptr + ho, c_new.to(dt), mask=ma)
                if PROJ:
                    tl.store(mids_ptr + ho, mv.to(dt), mask=ma)
            if PROJ:
                tl.store(m_ptr + co, mv.to(dt), mask=m2)
            else:
                tl.store(out_ptr + ho, mv.to(dt), mask=ma)
                old = tl.load(src + co, mask=m2, other=0.0)
                tl.store(dst + co, tl.where(act[:, None], mv, old), mask=m2)
        if PROJ:
            tl.debug_barrier()
            for p0 in range(0, P, BN):
                offs_p = p0 + tl.arange(0, BN)
                p_ok = offs_p < P
                hv = _rowdot(m_ptr, H, wr_t_ptr, P, 0, offs_b, row_ok, offs_p, p_ok, H, dt, PRECISION, BB, BN, BK)
                m2 = row_ok[:, None] & p_ok[None, :]
                po = offs_b[:, None] * P + offs_p[None, :]
                tl.store(out_ptr + (t[:, None] * B + offs_b[:, None]) * P + offs_p[None, :],
                         hv.to(dt), mask=m2 & act[:, None])
                old = tl.load(src + po, mask=m2, other=0.0)
                tl.store(dst + po, tl.where(act[:, None], hv, old), mask=m2)
        tl.debug_barrier()
    _copy_rows(_slot(state_ptr, nsteps, B, P), hn_ptr, offs_b, row_ok, P, BN)
    _copy_rows(c_ptr, cn_ptr, offs_b, row_ok, H, BN)
    if VARLEN:
        _zero_padding(out_ptr, offs_b, lens, T, B, P, BB, BN)
        if PROJ and SAVE:
            _zero_padding(mids_ptr, offs_b, lens, T, B, H, BB, BN)


@triton.jit(do_not_specialize=["T"])
def lstm_bwd_kernel(grad_out_ptr, grad_hn_ptr, grad_cn_ptr, c0_ptr, gates_ptr, cells_ptr, w_ptr,
                    wr_ptr, lengths_ptr, grad_pre_ptr, grad_h_ptr, grad_h0_ptr, grad_c0_ptr,
                    state_ptr, dc_ptr, d_ptr, dm_ptr, g_ptr, T, B, H, P,
                    PROJ: tl.constexpr, REVERSE: tl.constexpr, VARLEN: tl.constexpr,
                    PRECISION: tl.constexpr, BB: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    # w = W_hh [4H, P]; wr = W_hr [P, H]; state [2, B, P] carries dL/dh, dc [B, H] dL/dc;
    # scratch: d [B, P] total dL/dh_t, dm [B, H] dL/dm, g [B, 4H] dL/da
    offs_b, row_ok, lens = _rows(B, BB, lengths_ptr)
    nsteps = tl.max(lens, axis=0)
    dt = grad_out_ptr.dtype.element_ty
    G = 4 * H
    _copy_rows(grad_hn_ptr, state_ptr, offs_b, row_ok, P, BN)
    _copy_rows(grad_cn_ptr, dc_ptr, offs_b, row_ok, H, BN)
    tl.debug_barrier()
    for i in range(0, nsteps):
        s = nsteps - 1 - i
        act = s < lens
        t = _time(s, lens, REVERSE)
        tp = _time(s - 1, lens, REVERSE)
        has_prev = (tl.zeros((BB,), tl.int32) + s) > 0
        src = _slot(state_ptr, i, B, P)
        dst = _slot(state_ptr, i + 1, B, P)
        # phase 1: d = grad_out[t] + dh  ->  grad_h[t] and d (projection), or dm
        for p0 in range(0, P, BN):
            offs_p = p0 + tl.arange(0, BN)
            m2 = row_ok[:, None] & (offs_p < P)[None, :]
            ma = m2 & act[:, None]
            po = offs_b[:, None] * P + offs_p[None, :]
            to = (t[:, None] * B + offs_b[:, None]) * P + offs_p[None, :]
            d = tl.load(grad_out_ptr + to, mask=ma, other=0.0).to(tl.float32) + \
                tl.load(src + po, mask=m2, other=0.0)
            d = tl.where(ma, d, 0.0)
            if PROJ:    # grad_h feeds only dW_hr; without a projection it is empty
                tl.store(grad_h_ptr + to, d.to(dt), mask=ma)
                tl.store(d_ptr + po, d.to(dt), mask=m2)
            else:
                tl.store(dm_ptr + po, d, mask=m2)
        tl.debug_barrier()
        if PROJ:
            # phase 2: dm = d @ W_hr
            for n0 in range(0, H, BN):
                offs_n = n0 + tl.arange(0, BN)
                n_ok = offs_n < H
                dmv = _rowdot(d_ptr, P, wr_ptr, H, 0, offs_b, row_ok, offs_n, n_ok, P, dt, PRECISION, BB, BN, BK)
                tl.store(dm_ptr + offs_b[:, None] * H + offs_n[None, :], dmv,
                         mask=row_ok[:, None] & n_ok[None, :])
            tl.debug_barrier()
        # phase 3: gate pre-activation gradients; dc carried back
        for n0 in range(0, H, BN):
            offs_n = n0 + tl.arange(0, BN)
            m2 = row_ok[:, None] & (offs_n < H)[None, :]
            ma = m2 & act[:, None]
            xo = (t[:, None] * B + offs_b[:, None]) * G + offs_n[None, :]
            ho = (t[:, None] * B + offs_b[:, None]) * H + offs_n[None, :]
            co = offs_b[:, None] * H + offs_n[None, :]
            ig = tl.load(gates_ptr + xo, mask=ma, other=0.0).to(tl.float32)
            fg = tl.load(gates_ptr + xo + H, mask=ma, other=0.0).to(tl.float32)
            gg = tl.load(gates_ptr + xo + 2 * H, mask=ma, other=0.0).to(tl.float32)
            og = tl.load(gates_ptr + xo + 3 * H, mask=ma, other=0.0).to(tl.float32)
            tc = _tanh(tl.load(cells_ptr + ho, mask=ma, other=0.0).to(tl.float32))
            cprev = tl.load(cells_ptr + (tp[:, None] * B + offs_b[:, None]) * H + offs_n[None, :],
                            mask=ma & has_prev[:, None], other=0.0).to(tl.float32) + \
                tl.load(c0_ptr + co, mask=ma & (has_prev == 0)[:, None], other=0.0).to(tl.float32)
            dm = tl.load(dm_ptr + co, mask=m2, other=0.0)
            dc_old = tl.load(dc_ptr + co, mask=m2, other=0.0)
            dct = dc_old + dm * og * (1.0 - tc * tc)
            gi = tl.where(ma, dct * gg * ig * (1.0 - ig), 0.0)
            gf = tl.where(ma, dct * cprev * fg * (1.0 - fg), 0.0)
            gc = tl.where(ma, dct * ig * (1.0 - gg * gg), 0.0)
            go = tl.where(ma, dm * tc * og * (1.0 - og), 0.0)
            tl.store(dc_ptr + co, tl.where(act[:, None], dct * fg, dc_old), mask=m2)
            tl.store(grad_pre_ptr + xo, gi.to(dt), mask=ma)
            tl.store(grad_pre_ptr + xo + H, gf.to(dt), mask=ma)
            tl.store(grad_pre_ptr + xo + 2 * H, gc.to(dt), mask=ma)
            tl.store(grad_pre_ptr + xo + 3 * H, go.to(dt), mask=ma)
            gofs = offs_b[:, None] * G + offs_n[None, :]
            tl.store(g_ptr + gofs, gi.to(dt), mask=m2)
            tl.store(g_ptr + gofs + H, gf.to(dt), mask=m2)
            tl.store(g_ptr + gofs + 2 * H, gc.to(dt), mask=m2)
            tl.store(g_ptr + gofs + 3 * H, go.to(dt), mask=m2)
        tl.debug_barrier()
        # phase 4: dh = g @ W_hh for the running rows
        for p0 in range(0, P, BN):
            offs_p = p0 + tl.arange(0, BN)
            p_ok = offs_p < P
            dhv = _rowdot(g_ptr, G, w_ptr, P, 0, offs_b, row_ok, offs_p, p_ok, G, dt, PRECISION, BB, BN, BK)
            m2 = row_ok[:, None] & p_ok[None, :]
            po = offs_b[:, None] * P + offs_p[None, :]
            old = tl.load(src + po, mask=m2, other=0.0)
            tl.store(dst + po, tl.where(act[:, None], dhv, old), mask=m2)
        tl.debug_barrier()
    _copy_rows(_slot(state_ptr, nsteps, B, P), grad_h0_ptr, offs_b, row_ok, P, BN)
    _copy_rows(dc_ptr, grad_c0_ptr, offs_b, row_ok, H, BN)
    if VARLEN:
        _zero_padding(grad_pre_ptr, offs_b, lens, T, B, G, BB, BN)
        if PROJ:
            _zero_padding(grad_h_ptr, offs_b, lens, T, B, P, BB, BN)


# ----------------------------------------------------------------- launchers
def config(dtype, direction):
    """Tiles per operand width (AOT-checked: no spills on sm_80/sm_90a). The forward's
    four gate accumulators spill with 4 warps, so it spreads them over 8; the
    backward spills with 8 (ptxas caps it at 128 registers there) and keeps 4."""
    tiles = dict(BB=16, BN=16, BK=32) if dtype.itemsize == 4 else dict(BB=16, BN=32, BK=32)
    return dict(tiles, num_warps=8 if direction == "fwd" else 4)


def lstm_fwd(*, xproj, h0, c0, w_hh, w_hr, lengths, reverse, save=True):
    """Same contract as the Numba launcher (fastrnn/kernels/__init__.py)."""
    import torch
    T, B, G = xproj.shape
    H, P = G // 4, h0.shape[1]
    proj = w_hr is not None
    out, h_n, c_n, gates, cells, mids = lstm_fwd_outputs(xproj, h0, proj, save)
    if B == 0:
        return out, h_n, c_n, gates, cells, mids
    f32 = dict(dtype=torch.float32, device=xproj.device)
    state, c = torch.empty((2, B, P), **f32), torch.empty((B, H), **f32)
    m = torch.empty((B, H), dtype=xproj.dtype, device=xproj.device)
    wr_t = w_hr.t().contiguous() if proj else m
    cfg = config(xproj.dtype, "fwd")
    lstm_fwd_kernel[(triton.cdiv(B, cfg["BB"]),)](
        xproj.contiguous(), h0.contiguous(), c0.contiguous(), w_hh.t().contiguous(), wr_t,
        _lengths(lengths, B, T, xproj.device), out, h_n, c_n, gates if save else out,
        cells if save else out, mids if proj and save else m, state, c, m, T, B, H, P,
        PROJ=proj, REVERSE=reverse, VARLEN=lengths is not None, SAVE=save,
        PRECISION=_precision(xproj.dtype), **cfg)
    return out, h_n, c_n, gates, cells, mids


def lstm_bwd(*, grad_out, grad_hn, grad_cn, c0, gates, cells, w_hh, w_hr, lengths, reverse):
    """Same contract as the Numba launcher (fastrnn/kernels/__init__.py)."""
    import torch
    T, B, P = grad_out.shape
    H = c0.shape[1]
    grad_pre, grad_h, grad_h0, grad_c0 = lstm_bwd_outputs(grad_out, c0, w_hr is not None)
    if B == 0:
        return grad_pre, grad_h, grad_h0, grad_c0
    dev = grad_out.device
    f32 = dict(dtype=torch.float32, device=dev)
    state, dc, dm = torch.empty((2, B, P), **f32), torch.empty((B, H), **f32), torch.empty((B, H), **f32)
    d = torch.empty((B, P), dtype=grad_out.dtype, device=dev)
    g = torch.empty((B, 4 * H), dtype=grad_out.dtype, device=dev)
    cfg = config(grad_out.dtype, "bwd")
    lstm_bwd_kernel[(triton.cdiv(B, cfg["BB"]),)](
        grad_out.contiguous(), grad_hn.contiguous(), grad_cn.contiguous(), c0.contiguous(),
        gates, cells, w_hh.contiguous(), w_hr.contiguous() if w_hr is not None else d,
        _lengths(lengths, B, T, dev), grad_pre, grad_h, grad_h0, grad_c0, state, dc, d, dm, g,
        T, B, H, P, PROJ=w_hr is not None, REVERSE=reverse, VARLEN=lengths is not None,
        PRECISION=_precision(grad_out.dtype), **cfg)
    return grad_pre, grad_h, grad_h0, grad_c0
