"""LSTM forward and BPTT kernels (Triton), optional projection; persistent over the GPU.

Dimension legend: T steps, B batch, H cell size, P state size (proj_size or H), G = 4H,
I input size (the fused step only). A program owns U cell units (UP state units with a
projection) x BB batch rows; BKP / BKH are the chunks of its products over P / over H
(the whole padded width when its weights are on chip, ONCHIP). Per step (gate order
i, f, g, o, as torch):

    a = xproj[t] + h @ W_hh^T;  i, f, g, o = sig, sig, tanh, sig of a's quarters
    c' = f * c + i * g;  m = o * tanh(c');  h' = m (or m @ W_hr^T)

Forward: the program holds the four gate rows of W_hh for its units, reads the whole
h_{t-1} from a ping-pong buffer [2, B, P], keeps its slice of c in registers and writes
its slice of h_t; one barrier a step (two with a projection: m is exchanged, then every
program forms its UP units of h from the whole m).
Backward: the program holds the W_hh columns of its state units, reads the whole gate
gradient of the step after [B, G], forms dh for its units, then (same units without a
projection; after a second exchange and barrier with one) its gate gradients and dc.
Saved for BPTT: gates [T, B, G], cells [T, B, H] and mids [T, B, H] (m) with a projection.
"""
import triton
import triton.language as tl

from .. import lstm_bwd_outputs, lstm_fwd_outputs
from . import plan
from ._common import (arg_types, _arows, _dout, _fwd_step, _gate_dots, _grid_release,
                      _grid_sync, _next_x, _prev_state, _product, _rows, _saved_gates, sigmoid,
                      _step_at, step_time, tanh, _units, _wonchip, _wtile, _x_part)


@arg_types(
    data="xproj_ptr x_ptr wx_ptr h0_ptr c0_ptr w_ptr wr_ptr out_ptr hn_ptr cn_ptr "
         "gates_ptr cells_ptr mids_ptr hbuf_ptr mbuf_ptr",
    fp32="cbuf_ptr",
    i64="lengths_ptr",
    i32="sync_ptr",
    int="T B H P I row0 row_end s_begin s_end phases")
@triton.jit(do_not_specialize=["T", "B", "row0", "row_end", "s_begin", "s_end"])
def lstm_fwd_kernel(xproj_ptr, x_ptr, wx_ptr, h0_ptr, c0_ptr, w_ptr, wr_ptr,
                    lengths_ptr, out_ptr, hn_ptr, cn_ptr, gates_ptr, cells_ptr, mids_ptr,
                    hbuf_ptr, mbuf_ptr, cbuf_ptr, sync_ptr, T, B, H, P, I, row0, row_end,
                    s_begin, s_end, phases, PROJ: tl.constexpr, REVERSE: tl.constexpr,
                    SAVE: tl.constexpr, FUSE_X: tl.constexpr, PERSIST: tl.constexpr,
                    ONCHIP: tl.constexpr, PRECISION: tl.constexpr, BB: tl.constexpr,
                    U: tl.constexpr, UP: tl.constexpr, BKP: tl.constexpr, BKH: tl.constexpr,
                    BKX: tl.constexpr, BKP2: tl.constexpr, BKH2: tl.constexpr,
                    PREFETCH: tl.constexpr, POLL: tl.constexpr):
    # w = W_hh [G, P], wr = W_hr [P, H] and (FUSE_X) wx = W_ih [G, I] as torch holds them
    # (read transposed: _wtile's ROWS); hbuf [2, B, P] and mbuf [B, H] exchange
    # buffers; cbuf [B, H] fp32 carries c between per-step launches. FUSE_X (one step,
    # T = 1, the *Cell path): x [B, I] @ W_ih^T is formed here, xproj [1, B, G] = biases.
    offs_b, row_ok, lens, nsteps = _rows(lengths_ptr, row0, row_end, BB)
    offs_u, u_ok = _units(H, U)
    dt = out_ptr.dtype.element_ty
    G = 4 * H
    m2 = row_ok[:, None] & u_ok[None, :]
    so = offs_b[:, None] * H + offs_u[None, :]                              # [BB, U] in [B, H]
    if PROJ:
        offs_p, p_ok = _units(P, UP)
    wr, wr2 = 0, 0
    if ONCHIP:   # [BKP (+ BKP2), U] per gate, loaded once for the whole sequence
        wi, wi2 = _wonchip(w_ptr, 0, G, P, offs_u, u_ok, BKP, BKP2, True)
        wf, wf2 = _wonchip(w_ptr, H, G, P, offs_u, u_ok, BKP, BKP2, True)
        wg, wg2 = _wonchip(w_ptr, 2 * H, G, P, offs_u, u_ok, BKP, BKP2, True)
        wo, wo2 = _wonchip(w_ptr, 3 * H, G, P, offs_u, u_ok, BKP, BKP2, True)
        if PROJ:   # [BKH (+ BKH2), UP]
            wr, wr2 = _wonchip(wr_ptr, 0, P, H, offs_p, p_ok, BKH, BKH2, True)
    c = tl.load(cbuf_ptr + so, mask=m2, other=0.0)
    if s_begin == 0:
        c = tl.load(c0_ptr + so, mask=m2, other=0.0).to(tl.float32)
    nu = tl.num_programs(0)
    sync = sync_ptr + tl.program_id(1)
    NBAR: tl.constexpr = 2 if PROJ else 1
    if PREFETCH:   # the first step's input part; each step loads the next's before its barrier
        xi, xf, xg, xq = _next_x(xproj_ptr, s_begin, lens, row_ok, offs_b, offs_u, u_ok, B, H,
                                 G, REVERSE, 4)
    for s in range(s_begin, tl.minimum(s_end, nsteps)):
        act, last, t, src, dst = _fwd_step(s, lens, row_ok, hbuf_ptr, h0_ptr, B, P, REVERSE)
        if phases & 1:    # gates and c for this program's cell units
            ai = tl.zeros((BB, U), tl.float32)
            af = tl.zeros((BB, U), tl.float32)
            ag = tl.zeros((BB, U), tl.float32)
            ao = tl.zeros((BB, U), tl.float32)
            if ONCHIP:   # h_{t-1}'s head and tail chunks, each read once for four gates
                h = _arows(src, P, 0, 0, P, offs_b, row_ok, dt, BKP)              # [BB, BKP]
                ai, af, ag, ao = _gate_dots(h, ai, af, ag, ao, wi, wf, wg, wo, PRECISION, 4)
                if BKP2 > 0:
                    h = _arows(src, P, 0, BKP, P, offs_b, row_ok, dt, BKP2)
                    ai, af, ag, ao = _gate_dots(h, ai, af, ag, ao, wi2, wf2, wg2, wo2,
                                                PRECISION, 4)
            else:
                for k0 in range(0, P, BKP):
                    h = _arows(src, P, 0, k0, P, offs_b, row_ok, dt, BKP)
                    ai, af, ag, ao = _gate_dots(
                        h, ai, af, ag, ao, _wtile(w_ptr, 0, G, k0, P, offs_u, u_ok, BKP, True),
                        _wtile(w_ptr, H, G, k0, P, offs_u, u_ok, BKP, True),
                        _wtile(w_ptr, 2 * H, G, k0, P, offs_u, u_ok, BKP, True),
                        _wtile(w_ptr, 3 * H, G, k0, P, offs_u, u_ok, BKP, True), PRECISION, 4)
            ma = act[:, None] & u_ok[None, :]
            xo = (t[:, None] * B + offs_b[:, None]) * G + offs_u[None, :]
            if PREFETCH:
                ai, af, ag, ao = ai + xi, af + xf, ag + xg, ao + xq
            else:
                ai += _x_part(xproj_ptr, xo, ma, 0, H, x_ptr, wx_ptr, G, I, offs_b, row_ok,
                              offs_u, u_ok, dt, PRECISION, BB, U, BKX, FUSE_X)
                af += _x_part(xproj_ptr, xo, ma, 1, H, x_ptr, wx_ptr, G, I, offs_b, row_ok,
                              offs_u, u_ok, dt, PRECISION, BB, U, BKX, FUSE_X)
                ag += _x_part(xproj_ptr, xo, ma, 2, H, x_ptr, wx_ptr, G, I, offs_b, row_ok,
                              offs_u, u_ok, dt, PRECISION, BB, U, BKX, FUSE_X)
                ao += _x_part(xproj_ptr, xo, ma, 3, H, x_ptr, wx_ptr, G, I, offs_b, row_ok,
                              offs_u, u_ok, dt, PRECISION, BB, U, BKX, FUSE_X)
            ig, fg, gg, og = sigmoid(ai), sigmoid(af), tanh(ag), sigmoid(ao)
            c_new = fg * c + ig * gg
            mv = og * tanh(c_new)                                              # [BB, U]
            c = tl.where(act[:, None], c_new, c)
            ho = (t[:, None] * B + offs_b[:, None]) * H + offs_u[None, :]
            tl.store(cn_ptr + so, c_new.to(dt), mask=last[:, None] & u_ok[None, :])
            if SAVE:
                tl.store(gates_ptr + xo, ig.to(dt), mask=ma)
                tl.store(gates_ptr + xo + H, fg.to(dt), mask=ma)
                tl.store(gates_ptr + xo + 2 * H, gg.to(dt), mask=ma)
                tl.store(gates_ptr + xo + 3 * H, og.to(dt), mask=ma)
                tl.store(cells_ptr + ho, c_new.to(dt), mask=ma)
            if PROJ:
                if SAVE:
                    tl.store(mids_ptr + ho, mv.to(dt), mask=ma)
                tl.store(mbuf_ptr + so, mv.to(dt), mask=m2)
            else:
                tl.store(out_ptr + ho, mv.to(dt), mask=ma)
                tl.store(dst + so, mv.to(dt), mask=m2)
                tl.store(hn_ptr + so, mv.to(dt), mask=last[:, None] & u_ok[None, :])
        if PROJ:
            _grid_sync(sync, ((s - s_begin) * NBAR + 1) * nu, PERSIST, POLL)
            if phases & 2:    # this program's UP units of h = m @ W_hr^T, from the whole m
                hp = _product(mbuf_ptr, H, 0, H, offs_b, row_ok, wr_ptr, 0, P, offs_p, p_ok, wr,
                              dt, PRECISION, ONCHIP, BB, UP, BKH, True, wr2, BKH2)
                po = offs_b[:, None] * P + offs_p[None, :]
                mp = row_ok[:, None] & p_ok[None, :]
                tl.store(out_ptr + (t[:, None] * B + offs_b[:, None]) * P + offs_p[None, :],
                         hp.to(dt), mask=mp & act[:, None])
                tl.store(dst + po, hp.to(dt), mask=mp)
                tl.store(hn_ptr + po, hp.to(dt), mask=mp & last[:, None])
        if PREFETCH:
            xi, xf, xg, xq = _next_x(xproj_ptr, s + 1, lens, row_ok, offs_b, offs_u, u_ok, B,
                                     H, G, REVERSE, 4)
        _grid_sync(sync, ((s - s_begin) * NBAR + NBAR) * nu, PERSIST, POLL)
    _grid_release(sync, nu, PERSIST)
    if not PERSIST:
        if phases & 1:    # a launch of the second phase alone leaves c as it found it
            tl.store(cbuf_ptr + so, c, mask=m2)


@triton.jit
def _lstm_dh(src, H, P, offs_b, row_ok, offs_p, p_ok, w_ptr, wi, wf, wg, wo, wi2, wf2, wg2, wo2,
             dt: tl.constexpr, PRECISION: tl.constexpr, ONCHIP: tl.constexpr, BB: tl.constexpr,
             UP: tl.constexpr, BKH: tl.constexpr, BKH2: tl.constexpr):
    # [BB, UP] = dG [BB, 4H] (the step after's gate gradients, all units) @ W_hh[:, units],
    # gate by gate (ONCHIP: each gate's head and tail tiles)
    G = 4 * H
    return _product(src, G, 0, H, offs_b, row_ok, w_ptr, 0, P, offs_p, p_ok, wi, dt, PRECISION,
                    ONCHIP, BB, UP, BKH, False, wi2, BKH2) + \
        _product(src, G, H, H, offs_b, row_ok, w_ptr, H * P, P, offs_p, p_ok, wf, dt, PRECISION,
                 ONCHIP, BB, UP, BKH, False, wf2, BKH2) + \
        _product(src, G, 2 * H, H, offs_b, row_ok, w_ptr, 2 * H * P, P, offs_p, p_ok, wg, dt,
                 PRECISION, ONCHIP, BB, UP, BKH, False, wg2, BKH2) + \
        _product(src, G, 3 * H, H, offs_b, row_ok, w_ptr, 3 * H * P, P, offs_p, p_ok, wo, dt,
                 PRECISION, ONCHIP, BB, UP, BKH, False, wo2, BKH2)


@triton.jit
def _lstm_saved(gates_ptr, cells_ptr, c0_ptr, t, tp, sv, ma, offs_b, offs_u, so, B, H):
    # what the gate gradients at time t read from the forward, [BB, U] fp32 each: the four
    # gates, tanh(c_t) and c_{t-1} (c0 at step 0, sv == 0)
    ig, fg, gg, og = _saved_gates(gates_ptr, t, ma, offs_b, offs_u, B, H)
    tc = tanh(_dout(cells_ptr, t, ma, offs_b, offs_u, B, H))
    return ig, fg, gg, og, tc, _prev_state(cells_ptr, c0_ptr, tp, sv, ma, offs_b, offs_u, so,
                                           B, H)


@triton.jit
def _lstm_ahead(grad_out_ptr, gates_ptr, cells_ptr, c0_ptr, s, lens, row_ok, offs_b, offs_u,
                u_ok, offs_p, p_ok, so, B, H, P, REVERSE: tl.constexpr):
    # PREFETCH: everything step s reads from memory and not from the recurrence
    t, tp, sv, act = _step_at(s, lens, row_ok, REVERSE)
    ig, fg, gg, og, tc, cprev = _lstm_saved(gates_ptr, cells_ptr, c0_ptr, t, tp, sv,
                                            act[:, None] & u_ok[None, :], offs_b, offs_u, so,
                                            B, H)
    return _dout(grad_out_ptr, t, act[:, None] & p_ok[None, :], offs_b, offs_p, B, P), ig, fg, \
        gg, og, tc, cprev


@arg_types(
    data="grad_out_ptr grad_hn_ptr grad_cn_ptr c0_ptr gates_ptr cells_ptr w_ptr wr_ptr "
         "grad_pre_ptr grad_h_ptr grad_h0_ptr grad_c0_ptr gbuf_ptr dhbuf_ptr",
    fp32="dcbuf_ptr",
    i64="lengths_ptr",
    i32="sync_ptr",
    int="T B H P row0 row_end s_begin s_end phases keep")
@triton.jit(do_not_specialize=["T", "B", "row0", "row_end", "s_begin", "s_end", "keep"])
def lstm_bwd_kernel(grad_out_ptr, grad_hn_ptr, grad_cn_ptr, c0_ptr, gates_ptr, cells_ptr, w_ptr,
                    wr_ptr, lengths_ptr, grad_pre_ptr, grad_h_ptr, grad_h0_ptr, grad_c0_ptr,
                    gbuf_ptr, dhbuf_ptr, dcbuf_ptr, sync_ptr, T, B, H, P, row0, row_end,
                    s_begin, s_end, phases, keep, PROJ: tl.constexpr, REVERSE: tl.constexpr,
                    PERSIST: tl.constexpr, ONCHIP: tl.constexpr, PRECISION: tl.constexpr,
                    BB: tl.constexpr, U: tl.constexpr, UP: tl.constexpr, BKP: tl.constexpr,
                    BKH: tl.constexpr, BKP2: tl.constexpr, BKH2: tl.constexpr,
                    PREFETCH: tl.constexpr, POLL: tl.constexpr):
    # w = W_hh [G, P]; wr = W_hr [P, H]; gbuf [2, B, G] and dhbuf [B, P] exchange buffers;
    # dcbuf [B, H] fp32 carries dc between per-step launches. Iteration i in
    # [s_begin, s_end) is step nsteps - 1 - i; iteration nsteps forms dh0 and dc0.
    # grad_h gets dL/dh_t with a projection, and without one when keep != 0.
    offs_b, row_ok, lens, nsteps = _rows(lengths_ptr, row0, row_end, BB)
    offs_u, u_ok = _units(H, U)                          # cell units: gate gradients, dc
    if PROJ:
        offs_p, p_ok = _units(P, UP)                     # state units: dh
    else:
        offs_p, p_ok = offs_u, u_ok
    dt = grad_out_ptr.dtype.element_ty
    G = 4 * H
    m2 = row_ok[:, None] & u_ok[None, :]
    mp = row_ok[:, None] & p_ok[None, :]
    so = offs_b[:, None] * H + offs_u[None, :]
    po = offs_b[:, None] * P + offs_p[None, :]
    wi, wf, wg, wo, wr = 0, 0, 0, 0, 0
    wi2, wf2, wg2, wo2, wr2 = 0, 0, 0, 0, 0
    if ONCHIP:   # [BKH (+ BKH2), UP] per gate: the W_hh columns of this program's state units
        wi, wi2 = _wonchip(w_ptr, 0, P, H, offs_p, p_ok, BKH, BKH2)
        wf, wf2 = _wonchip(w_ptr, H * P, P, H, offs_p, p_ok, BKH, BKH2)
        wg, wg2 = _wonchip(w_ptr, 2 * H * P, P, H, offs_p, p_ok, BKH, BKH2)
        wo, wo2 = _wonchip(w_ptr, 3 * H * P, P, H, offs_p, p_ok, BKH, BKH2)
        if PROJ:   # [BKP (+ BKP2), U]
            wr, wr2 = _wonchip(wr_ptr, 0, H, P, offs_u, u_ok, BKP, BKP2)
    ghn = tl.load(grad_hn_ptr + po, mask=mp, other=0.0).to(tl.float32)
    gcn = tl.load(grad_cn_ptr + so, mask=m2, other=0.0).to(tl.float32)
    dc = tl.load(dcbuf_ptr + so, mask=m2, other=0.0)
    nu = tl.num_programs(0)
    sync = sync_ptr + tl.program_id(1)
    NBAR: tl.constexpr = 2 if PROJ else 1
    if PREFETCH:   # the first step's reads from the forward; each step loads the next's
        #            (the step before in time) before its last barrier
        d_out, ig, fg, gg, og, tc, cprev = _lstm_ahead(
            grad_out_ptr, gates_ptr, cells_ptr, c0_ptr, nsteps - 1 - s_begin, lens, row_ok,
            offs_b, offs_u, u_ok, offs_p, p_ok, so, B, H, P, REVERSE)
    for i in range(s_begin, tl.minimum(s_end, nsteps)):
        s = nsteps - 1 - i
        act = (s < lens) & row_ok
        first = s == lens - 1                            # the row's last step: dh = grad_hn
        t = step_time(s, lens, REVERSE)
        tp = step_time(s - 1, lens, REVERSE)
        sv = tl.zeros_like(lens) + s                     # [BB]: step 0 reads the initial state
        src = gbuf_ptr + (i % 2) * B * G
        dst = gbuf_ptr + ((i + 1) % 2) * B * G
        dm = tl.zeros((BB, U), tl.float32)               # dL/dm of this program's cell units
        if phases & 1:    # dh of this program's state units, from the step after's gates
            rec = _lstm_dh(src, H, P, offs_b, row_ok, offs_p, p_ok, w_ptr, wi, wf, wg, wo, wi2,
                           wf2, wg2, wo2, dt, PRECISION, ONCHIP, BB, UP, BKH, BKH2)
            map_ = act[:, None] & p_ok[None, :]
            to = (t[:, None] * B + offs_b[:, None]) * P + offs_p[None, :]
            if PREFETCH:
                dh = tl.where(first[:, None], ghn, rec) + d_out
            else:   # at the offsets of the stores below (_dout's own spilled 8 bytes, sm_80)
                dh = tl.where(first[:, None], ghn, rec) + \
                    tl.load(grad_out_ptr + to, mask=map_, other=0.0).to(tl.float32)
            if PROJ:
                tl.store(grad_h_ptr + to, dh.to(dt), mask=map_)
                tl.store(dhbuf_ptr + po, dh.to(dt), mask=mp)
            else:
                tl.store(grad_h_ptr + to, dh.to(dt), mask=map_ & ((lens * 0 + keep) != 0)[:, None])
                dm = dh
        if PROJ:
            _grid_sync(sync, ((i - s_begin) * NBAR + 1) * nu, PERSIST, POLL)
            if phases & 2:    # dm = dh @ W_hr from the whole dh
                dm = _product(dhbuf_ptr, P, 0, P, offs_b, row_ok, wr_ptr, 0, H, offs_u, u_ok, wr,
                              dt, PRECISION, ONCHIP, BB, U, BKP, False, wr2, BKP2)
        if phases & 2:    # gate gradients and dc of this program's cell units
            ma = act[:, None] & u_ok[None, :]
            xo = (t[:, None] * B + offs_b[:, None]) * G + offs_u[None, :]
            if not PREFETCH:
                ig, fg, gg, og, tc, cprev = _lstm_saved(gates_ptr, cells_ptr, c0_ptr, t, tp, sv,
                                                        ma, offs_b, offs_u, so, B, H)
            dct = tl.where(first[:, None], gcn, dc) + dm * og * (1.0 - tc * tc)
            gi = tl.where(ma, dct * gg * ig * (1.0 - ig), 0.0)
            gf = tl.where(ma, dct * cprev * fg * (1.0 - fg), 0.0)
            gc = tl.where(ma, dct * ig * (1.0 - gg * gg), 0.0)
            go = tl.where(ma, dm * tc * og * (1.0 - og), 0.0)
            dc = tl.where(act[:, None], dct * fg, dc)
            tl.store(grad_pre_ptr + xo, gi.to(dt), mask=ma)
            tl.store(grad_pre_ptr + xo + H, gf.to(dt), mask=ma)
            tl.store(grad_pre_ptr + xo + 2 * H, gc.to(dt), mask=ma)
            tl.store(grad_pre_ptr + xo + 3 * H, go.to(dt), mask=ma)
            go_ = offs_b[:, None] * G + offs_u[None, :]
            tl.store(dst + go_, gi.to(dt), mask=m2)
            tl.store(dst + go_ + H, gf.to(dt), mask=m2)
            tl.store(dst + go_ + 2 * H, gc.to(dt), mask=m2)
            tl.store(dst + go_ + 3 * H, go.to(dt), mask=m2)
        if PREFETCH:
            d_out, ig, fg, gg, og, tc, cprev = _lstm_ahead(
                grad_out_ptr, gates_ptr, cells_ptr, c0_ptr, s - 1, lens, row_ok, offs_b, offs_u,
                u_ok, offs_p, p_ok, so, B, H, P, REVERSE)
        _grid_sync(sync, ((i - s_begin) * NBAR + NBAR) * nu, PERSIST, POLL)
    _grid_release(sync, nu, PERSIST)
    if (s_begin <= nsteps) & (nsteps < s_end) & (phases & 1):   # after step 0: dh0, dc0
        dh0 = _lstm_dh(gbuf_ptr + (nsteps % 2) * B * G, H, P, offs_b, row_ok, offs_p, p_ok,
                       w_ptr, wi, wf, wg, wo, wi2, wf2, wg2, wo2, dt, PRECISION, ONCHIP, BB, UP,
                       BKH, BKH2)
        tl.store(grad_h0_ptr + po, dh0.to(dt), mask=mp)
        tl.store(grad_c0_ptr + so, dc.to(dt), mask=m2)
    if not PERSIST:
        tl.store(dcbuf_ptr + so, dc, mask=m2)


# ----------------------------------------------------------------- launchers
def lstm_fwd(*, xproj, h0, c0, w_hh, w_hr, lengths, reverse, save=True):
    """Same contract as the Numba launcher (fastrnn/kernels/__init__.py)."""
    T, B, G = xproj.shape
    H, P = G // 4, h0.shape[1]
    proj = w_hr is not None
    out, h_n, c_n, gates, cells, mids = lstm_fwd_outputs(xproj, h0, proj, save)
    if B == 0:
        return out, h_n, c_n, gates, cells, mids
    run = plan.Run(lstm_fwd_kernel, "lstm", "fwd", xproj, H=H, P=P, B=B, T=T, lengths=lengths,
                   PROJ=proj, REVERSE=reverse, SAVE=save)
    run.prefill_final((h_n, h0), (c_n, c0))
    run.launch(xproj_ptr=xproj.contiguous(), x_ptr=xproj, wx_ptr=xproj,
               h0_ptr=h0.contiguous(), c0_ptr=c0.contiguous(), w_ptr=w_hh.contiguous(),
               wr_ptr=w_hr.contiguous() if proj else xproj, out_ptr=out, hn_ptr=h_n,
               cn_ptr=c_n, gates_ptr=gates if save else out, cells_ptr=cells if save else out,
               mids_ptr=mids if proj and save else out, hbuf_ptr=run.buffer((2, B, P)),
               mbuf_ptr=run.buffer((B, H)), cbuf_ptr=run.buffer((B, H), fp32=True))
    run.zero_past_lengths(out, mids if proj and save else None)
    return out, h_n, c_n, gates, cells, mids


def lstm_bwd(*, grad_out, grad_hn, grad_cn, c0, gates, cells, w_hh, w_hr, lengths, reverse,
             grad_states=None):
    """Same contract as the Numba launcher (fastrnn/kernels/__init__.py)."""
    T, B, P = grad_out.shape
    H = c0.shape[1]
    proj = w_hr is not None
    grad_pre, grad_h, grad_h0, grad_c0 = lstm_bwd_outputs(grad_out, c0, proj)
    if B == 0:
        return grad_pre, grad_h, grad_h0, grad_c0
    run = plan.Run(lstm_bwd_kernel, "lstm", "bwd", grad_out, H=H, P=P, B=B, T=T,
                   lengths=lengths, PROJ=proj, REVERSE=reverse)
    run.launch(grad_out_ptr=grad_out.contiguous(), grad_hn_ptr=grad_hn.contiguous(),
               grad_cn_ptr=grad_cn.contiguous(), c0_ptr=c0.contiguous(), gates_ptr=gates,
               cells_ptr=cells, w_ptr=w_hh.contiguous(),
               wr_ptr=w_hr.contiguous() if proj else grad_out, grad_pre_ptr=grad_pre,
               grad_h0_ptr=grad_h0, grad_c0_ptr=grad_c0, gbuf_ptr=run.buffer((2, B, 4 * H)),
               dhbuf_ptr=run.buffer((B, P)), dcbuf_ptr=run.buffer((B, H), fp32=True),
               **(dict(grad_h_ptr=grad_h, keep=0) if proj else
                  plan.states_args(grad_states, grad_pre, "grad_h_ptr")))
    run.zero_past_lengths(grad_pre, grad_h if proj else grad_states)
    if proj and grad_states is not None:                 # grad_h is dL/dh_t already
        grad_states.copy_(grad_h)
    return grad_pre, grad_h, grad_h0, grad_c0


def lstm_step(*, x, h, c, w_ih, w_hh, b_ih, b_hh, w_hr=None):
    """One step, no autograd: both products, the biases and the gates in one launch
    (x [B, I], h [B, P], c [B, H] -> (h', c')); see fastrnn/kernels/__init__.py."""
    B, I = x.shape
    G, P = w_hh.shape
    H = G // 4
    proj = w_hr is not None
    xl = x.unsqueeze(0)
    out, h_n, c_n, _, _, _ = lstm_fwd_outputs(xl.new_empty((1, B, G)), h, proj, save=False)
    if B == 0:
        return h_n, c_n
    run = plan.Run(lstm_fwd_kernel, "lstm", "step", x, H=H, P=P, B=B, T=1, lengths=None,
                   I=I, PROJ=proj, REVERSE=False, SAVE=False)
    run.launch(xproj_ptr=plan.step_bias(b_ih, b_hh, G, x), x_ptr=x.contiguous(),
               wx_ptr=w_ih.contiguous(), h0_ptr=h.contiguous(),
               c0_ptr=c.contiguous(), w_ptr=w_hh.contiguous(),
               wr_ptr=w_hr.contiguous() if proj else x, out_ptr=out, hn_ptr=h_n,
               cn_ptr=c_n, gates_ptr=out, cells_ptr=out, mids_ptr=out, hbuf_ptr=run.buffer((2, B, P)),
               mbuf_ptr=run.buffer((B, H)), cbuf_ptr=run.buffer((B, H), fp32=True))
    return h_n, c_n
