"""GRU forward and BPTT kernels (Triton), persistent over the GPU. Gates (r, z, n).

Dimension legend: T steps, B batch, H hidden, G = 3H, I input (the fused step only); a
program owns U units x BB rows, BKH is the chunk of its products over H (see rnn.py
for the plan the three cells share). Per step (kernels/README.md):

    hp = h @ W_hh^T;  r, z = sig(x_r + hp_r), sig(x_z + hp_z);  a = hp_n + b_hn
    n = tanh(x_n + r * a);  h' = (1 - z) * n + z * h

``gates`` [T, B, 4H] keeps (r, z, n, a) for BPTT. The backward exchanges dL/d hp
[B, 3H] of the step after; the direct path d * z stays with the unit's program.
"""
import triton
import triton.language as tl

from .. import gru_bwd_outputs, gru_fwd_outputs
from . import plan
from ._common import (arg_types, _arows, _dout, _fwd_step, _gate_dots, _grid_release,
                      _grid_sync, _next_x, _prev_state, _product, _rows, _saved_gates, sigmoid,
                      _step_at, step_time, tanh, _units, _wonchip, _wtile, _x_part)


@arg_types(
    data="xproj_ptr x_ptr wx_ptr h0_ptr w_ptr b_hn_ptr out_ptr hn_ptr gates_ptr hbuf_ptr",
    i64="lengths_ptr",
    i32="sync_ptr",
    int="T B H I row0 row_end s_begin s_end phases")
@triton.jit(do_not_specialize=["T", "B", "row0", "row_end", "s_begin", "s_end"])
def gru_fwd_kernel(xproj_ptr, x_ptr, wx_ptr, h0_ptr, w_ptr, b_hn_ptr, lengths_ptr,
                   out_ptr, hn_ptr, gates_ptr, hbuf_ptr, sync_ptr, T, B, H, I, row0, row_end,
                   s_begin, s_end, phases, REVERSE: tl.constexpr, SAVE: tl.constexpr,
                   FUSE_X: tl.constexpr, PERSIST: tl.constexpr, ONCHIP: tl.constexpr,
                   PRECISION: tl.constexpr, BB: tl.constexpr, U: tl.constexpr,
                   BKH: tl.constexpr, BKX: tl.constexpr, BKH2: tl.constexpr,
                   PREFETCH: tl.constexpr, POLL: tl.constexpr):
    # w = W_hh [3H, H] and (FUSE_X) wx = W_ih [3H, I] as torch holds them (_wtile's ROWS);
    # hbuf [2, B, H]; gates written only if SAVE
    offs_b, row_ok, lens, nsteps = _rows(lengths_ptr, row0, row_end, BB)
    offs_u, u_ok = _units(H, U)
    dt = out_ptr.dtype.element_ty
    G = 3 * H
    m2 = row_ok[:, None] & u_ok[None, :]
    so = offs_b[:, None] * H + offs_u[None, :]
    if ONCHIP:   # [BKH (+ BKH2), U] per gate, loaded once for the whole sequence
        wr, wr2 = _wonchip(w_ptr, 0, G, H, offs_u, u_ok, BKH, BKH2, True)
        wz, wz2 = _wonchip(w_ptr, H, G, H, offs_u, u_ok, BKH, BKH2, True)
        wn, wn2 = _wonchip(w_ptr, 2 * H, G, H, offs_u, u_ok, BKH, BKH2, True)
    b_hn = tl.load(b_hn_ptr + offs_u, mask=u_ok, other=0.0).to(tl.float32)[None, :]
    nu = tl.num_programs(0)
    sync = sync_ptr + tl.program_id(1)
    if PREFETCH:   # the first step's input part; each step loads the next's before its barrier
        xr, xz, xn, _ = _next_x(xproj_ptr, s_begin, lens, row_ok, offs_b, offs_u, u_ok, B, H, G,
                                REVERSE, 3)
    for s in range(s_begin, tl.minimum(s_end, nsteps)):
        act, last, t, src, dst = _fwd_step(s, lens, row_ok, hbuf_ptr, h0_ptr, B, H, REVERSE)
        ar = tl.zeros((BB, U), tl.float32)
        az = tl.zeros((BB, U), tl.float32)
        an = tl.zeros((BB, U), tl.float32)
        if ONCHIP:   # h_{t-1}'s head and tail chunks, each read once for three gates
            h = _arows(src, H, 0, 0, H, offs_b, row_ok, dt, BKH)
            ar, az, an, _ = _gate_dots(h, ar, az, an, an, wr, wz, wn, 0, PRECISION, 3)
            if BKH2 > 0:
                h = _arows(src, H, 0, BKH, H, offs_b, row_ok, dt, BKH2)
                ar, az, an, _ = _gate_dots(h, ar, az, an, an, wr2, wz2, wn2, 0, PRECISION, 3)
        else:
            for k0 in range(0, H, BKH):
                h = _arows(src, H, 0, k0, H, offs_b, row_ok, dt, BKH)
                ar, az, an, _ = _gate_dots(
                    h, ar, az, an, an, _wtile(w_ptr, 0, G, k0, H, offs_u, u_ok, BKH, True),
                    _wtile(w_ptr, H, G, k0, H, offs_u, u_ok, BKH, True),
                    _wtile(w_ptr, 2 * H, G, k0, H, offs_u, u_ok, BKH, True), 0, PRECISION, 3)
        ma = act[:, None] & u_ok[None, :]
        xo = (t[:, None] * B + offs_b[:, None]) * G + offs_u[None, :]
        if not PREFETCH:
            xr = _x_part(xproj_ptr, xo, ma, 0, H, x_ptr, wx_ptr, G, I, offs_b, row_ok, offs_u,
                         u_ok, dt, PRECISION, BB, U, BKX, FUSE_X)
            xz = _x_part(xproj_ptr, xo, ma, 1, H, x_ptr, wx_ptr, G, I, offs_b, row_ok, offs_u,
                         u_ok, dt, PRECISION, BB, U, BKX, FUSE_X)
            xn = _x_part(xproj_ptr, xo, ma, 2, H, x_ptr, wx_ptr, G, I, offs_b, row_ok, offs_u,
                         u_ok, dt, PRECISION, BB, U, BKX, FUSE_X)
        r = sigmoid(xr + ar)
        z = sigmoid(xz + az)
        a = an + b_hn
        n = tanh(xn + r * a)
        hprev = tl.load(src + so, mask=m2, other=0.0, cache_modifier=".cg").to(tl.float32)
        y = ((1.0 - z) * n + z * hprev).to(dt)
        if SAVE:
            go = (t[:, None] * B + offs_b[:, None]) * (4 * H) + offs_u[None, :]
            tl.store(gates_ptr + go, r.to(dt), mask=ma)
            tl.store(gates_ptr + go + H, z.to(dt), mask=ma)
            tl.store(gates_ptr + go + 2 * H, n.to(dt), mask=ma)
            tl.store(gates_ptr + go + 3 * H, a.to(dt), mask=ma)
        tl.store(out_ptr + (t[:, None] * B + offs_b[:, None]) * H + offs_u[None, :], y, mask=ma)
        tl.store(dst + so, y, mask=m2)
        tl.store(hn_ptr + so, y, mask=last[:, None] & u_ok[None, :])
        if PREFETCH:
            xr, xz, xn, _ = _next_x(xproj_ptr, s + 1, lens, row_ok, offs_b, offs_u, u_ok, B, H,
                                    G, REVERSE, 3)
        _grid_sync(sync, (s - s_begin + 1) * nu, PERSIST, POLL)
    _grid_release(sync, nu, PERSIST)


@triton.jit
def _gru_dh(src, H, offs_b, row_ok, offs_u, u_ok, w_ptr, wr, wz, wn, wr2, wz2, wn2,
            dt: tl.constexpr, PRECISION: tl.constexpr, ONCHIP: tl.constexpr, BB: tl.constexpr,
            U: tl.constexpr, BKH: tl.constexpr, BKH2: tl.constexpr):
    # [BB, U] = dL/d hp [BB, 3H] (the step after's, all units) @ W_hh[:, units], gate by gate
    # (ONCHIP: each gate's head and tail tiles)
    G = 3 * H
    return _product(src, G, 0, H, offs_b, row_ok, w_ptr, 0, H, offs_u, u_ok, wr, dt, PRECISION,
                    ONCHIP, BB, U, BKH, False, wr2, BKH2) + \
        _product(src, G, H, H, offs_b, row_ok, w_ptr, H * H, H, offs_u, u_ok, wz, dt, PRECISION,
                 ONCHIP, BB, U, BKH, False, wz2, BKH2) + \
        _product(src, G, 2 * H, H, offs_b, row_ok, w_ptr, 2 * H * H, H, offs_u, u_ok, wn, dt,
                 PRECISION, ONCHIP, BB, U, BKH, False, wn2, BKH2)


@triton.jit
def _gru_saved(gates_ptr, out_ptr, h0_ptr, t, tp, sv, ma, offs_b, offs_u, so, B, H):
    # what the gate gradients at time t read from the forward, [BB, U] fp32 each: r, z, n,
    # a = W_hn h + b_hn and h_{t-1} (h0 at step 0, sv == 0)
    r, z, n, a = _saved_gates(gates_ptr, t, ma, offs_b, offs_u, B, H)
    return r, z, n, a, _prev_state(out_ptr, h0_ptr, tp, sv, ma, offs_b, offs_u, so, B, H)


@triton.jit
def _gru_ahead(grad_out_ptr, gates_ptr, out_ptr, h0_ptr, s, lens, row_ok, offs_b, offs_u, u_ok,
               so, B, H, REVERSE: tl.constexpr):
    # PREFETCH: everything step s reads from memory and not from the recurrence
    t, tp, sv, act = _step_at(s, lens, row_ok, REVERSE)
    ma = act[:, None] & u_ok[None, :]
    r, z, n, a, hprev = _gru_saved(gates_ptr, out_ptr, h0_ptr, t, tp, sv, ma, offs_b, offs_u,
                                   so, B, H)
    return _dout(grad_out_ptr, t, ma, offs_b, offs_u, B, H), r, z, n, a, hprev


@arg_types(
    data="grad_out_ptr grad_hn_ptr out_ptr h0_ptr gates_ptr w_ptr grad_x_ptr grad_hp_ptr "
         "grad_h0_ptr states_ptr gbuf_ptr",
    fp32="carry_ptr",
    i64="lengths_ptr",
    i32="sync_ptr",
    int="T B H row0 row_end s_begin s_end phases keep")
@triton.jit(do_not_specialize=["T", "B", "row0", "row_end", "s_begin", "s_end", "keep"])
def gru_bwd_kernel(grad_out_ptr, grad_hn_ptr, out_ptr, h0_ptr, gates_ptr, w_ptr, lengths_ptr,
                   grad_x_ptr, grad_hp_ptr, grad_h0_ptr, states_ptr, gbuf_ptr, carry_ptr, sync_ptr,
                   T, B, H, row0, row_end, s_begin, s_end, phases, keep, REVERSE: tl.constexpr,
                   PERSIST: tl.constexpr, ONCHIP: tl.constexpr, PRECISION: tl.constexpr,
                   BB: tl.constexpr, U: tl.constexpr, BKH: tl.constexpr, BKH2: tl.constexpr,
                   PREFETCH: tl.constexpr, POLL: tl.constexpr):
    # w = W_hh [3H, H]; gbuf [2, B, 3H] exchanges dL/d hp; carry [B, H] fp32 keeps the
    # direct path d * z between per-step launches. Iteration i is step nsteps - 1 - i;
    # iteration nsteps forms dh0. keep != 0: states [T, B, H] gets dL/dh_t.
    offs_b, row_ok, lens, nsteps = _rows(lengths_ptr, row0, row_end, BB)
    offs_u, u_ok = _units(H, U)
    dt = grad_out_ptr.dtype.element_ty
    G = 3 * H
    m2 = row_ok[:, None] & u_ok[None, :]
    so = offs_b[:, None] * H + offs_u[None, :]
    wr, wz, wn, wr2, wz2, wn2 = 0, 0, 0, 0, 0, 0
    if ONCHIP:
        wr, wr2 = _wonchip(w_ptr, 0, H, H, offs_u, u_ok, BKH, BKH2)
        wz, wz2 = _wonchip(w_ptr, H * H, H, H, offs_u, u_ok, BKH, BKH2)
        wn, wn2 = _wonchip(w_ptr, 2 * H * H, H, H, offs_u, u_ok, BKH, BKH2)
    ghn = tl.load(grad_hn_ptr + so, mask=m2, other=0.0).to(tl.float32)
    direct = tl.load(carry_ptr + so, mask=m2, other=0.0)
    nu = tl.num_programs(0)
    sync = sync_ptr + tl.program_id(1)
    if PREFETCH:   # the first step's reads from the forward; each step loads the next's
        #            (the step before in time) before its barrier
        d_out, r, z, n, a, hprev = _gru_ahead(grad_out_ptr, gates_ptr, out_ptr, h0_ptr,
                                              nsteps - 1 - s_begin, lens, row_ok, offs_b,
                                              offs_u, u_ok, so, B, H, REVERSE)
    for i in range(s_begin, tl.minimum(s_end, nsteps)):
        s = nsteps - 1 - i
        act = (s < lens) & row_ok
        first = s == lens - 1
        t = step_time(s, lens, REVERSE)
        tp = step_time(s - 1, lens, REVERSE)
        sv = tl.zeros_like(lens) + s                     # [BB]: step 0 reads the initial state
        rec = _gru_dh(gbuf_ptr + (i % 2) * B * G, H, offs_b, row_ok, offs_u, u_ok, w_ptr, wr, wz,
                      wn, wr2, wz2, wn2, dt, PRECISION, ONCHIP, BB, U, BKH, BKH2)
        ma = act[:, None] & u_ok[None, :]
        ho = (t[:, None] * B + offs_b[:, None]) * H + offs_u[None, :]
        if not PREFETCH:
            d_out = _dout(grad_out_ptr, t, ma, offs_b, offs_u, B, H)
        d = tl.where(first[:, None], ghn, direct + rec) + d_out
        tl.store(states_ptr + ho, d.to(dt), mask=ma & ((lens * 0 + keep) != 0)[:, None])
        if not PREFETCH:
            r, z, n, a, hprev = _gru_saved(gates_ptr, out_ptr, h0_ptr, t, tp, sv, ma, offs_b,
                                           offs_u, so, B, H)
        dn = tl.where(ma, d * (1.0 - z) * (1.0 - n * n), 0.0)
        dz = tl.where(ma, d * (hprev - n) * z * (1.0 - z), 0.0)
        dr = tl.where(ma, dn * a * r * (1.0 - r), 0.0)
        direct = tl.where(act[:, None], d * z, direct)
        xo = (t[:, None] * B + offs_b[:, None]) * G + offs_u[None, :]
        tl.store(grad_x_ptr + xo, dr.to(dt), mask=ma)
        tl.store(grad_x_ptr + xo + H, dz.to(dt), mask=ma)
        tl.store(grad_x_ptr + xo + 2 * H, dn.to(dt), mask=ma)
        # dL/d hp differs from dL/d xproj in the n part: a enters through r * a
        tl.store(grad_hp_ptr + xo, dr.to(dt), mask=ma)
        tl.store(grad_hp_ptr + xo + H, dz.to(dt), mask=ma)
        tl.store(grad_hp_ptr + xo + 2 * H, (dn * r).to(dt), mask=ma)
        gx = gbuf_ptr + ((i + 1) % 2) * B * G + offs_b[:, None] * G + offs_u[None, :]
        tl.store(gx, dr.to(dt), mask=m2)
        tl.store(gx + H, dz.to(dt), mask=m2)
        tl.store(gx + 2 * H, (dn * r).to(dt), mask=m2)
        if PREFETCH:
            d_out, r, z, n, a, hprev = _gru_ahead(grad_out_ptr, gates_ptr, out_ptr, h0_ptr, s - 1,
                                                  lens, row_ok, offs_b, offs_u, u_ok, so, B, H,
                                                  REVERSE)
        _grid_sync(sync, (i - s_begin + 1) * nu, PERSIST, POLL)
    _grid_release(sync, nu, PERSIST)
    if (s_begin <= nsteps) & (nsteps < s_end):           # after step 0: dh0
        dh0 = direct + _gru_dh(gbuf_ptr + (nsteps % 2) * B * G, H, offs_b, row_ok, offs_u, u_ok,
                               w_ptr, wr, wz, wn, wr2, wz2, wn2, dt, PRECISION, ONCHIP, BB, U,
                               BKH, BKH2)
        tl.store(grad_h0_ptr + so, dh0.to(dt), mask=m2)
    if not PERSIST:
        tl.store(carry_ptr + so, direct, mask=m2)


# ----------------------------------------------------------------- launchers
def gru_fwd(*, xproj, h0, w_hh, b_hn, lengths, reverse, save=True):
    """Same contract as the Numba launcher (fastrnn/kernels/__init__.py)."""
    T, B, G = xproj.shape
    H = G // 3
    out, h_n, gates = gru_fwd_outputs(xproj, save)
    if B == 0:
        return out, h_n, gates
    run = plan.Run(gru_fwd_kernel, "gru", "fwd", xproj, H=H, P=H, B=B, T=T, lengths=lengths,
                   REVERSE=reverse, SAVE=save)
    run.prefill_final((h_n, h0))
    run.launch(xproj_ptr=xproj.contiguous(), x_ptr=xproj, wx_ptr=xproj,
               h0_ptr=h0.contiguous(), w_ptr=w_hh.contiguous(),
               b_hn_ptr=xproj.new_zeros(H) if b_hn is None else b_hn.contiguous(), out_ptr=out,
               hn_ptr=h_n, gates_ptr=gates if save else out, hbuf_ptr=run.buffer((2, B, H)))
    run.zero_past_lengths(out)
    return out, h_n, gates


def gru_bwd(*, grad_out, grad_hn, out, h0, gates, w_hh, lengths, reverse, grad_states=None):
    """Same contract as the Numba launcher (fastrnn/kernels/__init__.py)."""
    T, B, H = out.shape
    grad_x, grad_hp, grad_h0 = gru_bwd_outputs(out)
    if B == 0:
        return grad_x, grad_hp, grad_h0
    run = plan.Run(gru_bwd_kernel, "gru", "bwd", out, H=H, P=H, B=B, T=T, lengths=lengths,
                   REVERSE=reverse)
    run.launch(grad_out_ptr=grad_out.contiguous(), grad_hn_ptr=grad_hn.contiguous(), out_ptr=out,
               h0_ptr=h0.contiguous(), gates_ptr=gates, w_ptr=w_hh.contiguous(),
               grad_x_ptr=grad_x, grad_hp_ptr=grad_hp, grad_h0_ptr=grad_h0,
               gbuf_ptr=run.buffer((2, B, 3 * H)), carry_ptr=run.buffer((B, H), fp32=True),
               **plan.states_args(grad_states, grad_x))
    run.zero_past_lengths(grad_x, grad_hp, grad_states)
    return grad_x, grad_hp, grad_h0


def gru_step(*, x, h, w_ih, w_hh, b_ih, b_hh):
    """One step, no autograd, one launch: x [B, I], h [B, H] -> h' [B, H]."""
    B, I = x.shape
    H = w_hh.shape[1]
    out, h_n, _ = gru_fwd_outputs(x.new_empty((1, B, 3 * H)), save=False)
    if B == 0:
        return h_n
    run = plan.Run(gru_fwd_kernel, "gru", "step", x, H=H, P=H, B=B, T=1, lengths=None, I=I,
                   REVERSE=False, SAVE=False)
    run.launch(xproj_ptr=plan.step_bias(b_ih, b_hh, 3 * H, x, gru=True), x_ptr=x.contiguous(),
               wx_ptr=w_ih.contiguous(), h0_ptr=h.contiguous(),
               w_ptr=w_hh.contiguous(),
               b_hn_ptr=x.new_zeros(H) if b_hh is None else b_hh[2 * H:].contiguous(),
               out_ptr=out, hn_ptr=h_n, gates_ptr=out, hbuf_ptr=run.buffer((2, B, H)))
    return h_n
