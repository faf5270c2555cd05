"""Elman RNN forward and BPTT kernels (Triton), persistent over the GPU.

Dimension legend: T steps, B batch, H hidden, I input (the fused step only); a program
owns U hidden units x BB batch rows; BKH is the chunk of its products over H (the
whole padded H when its weights are on chip, ONCHIP), BKX over I. ``xproj`` [T, B, H]
is the input projection of every step (one GEMM, outside). Tensors are contiguous;
addresses are int64. The plan of every kernel here (kernels/README.md):

Forward: the program holds the rows of W_hh for its units (read as W_hh^T columns), reads
the whole h_{t-1} from a ping-pong buffer [2, B, H], writes its slice of h_t, and meets
the other programs of its batch tile at a barrier (PERSIST), or the step ends with the
launch. Backward: it holds the W_hh columns of its units, reads the whole
pre-activation gradient of the step after and forms dh for its units.
Variable lengths: row b runs steps s < len_b at time s (REVERSE: len_b - 1 - s); its
final state is written at its last step; fp32 accumulation for every input dtype.
"""
import triton
import triton.language as tl

from .. import rnn_bwd_outputs, rnn_fwd_outputs
from . import plan
from ._common import (arg_types, _dout, _fwd_step, _grid_release, _grid_sync, _next_x,
                      _product, _rows, _step_at, step_time, tanh, _units, _wonchip, _x_part)


@triton.jit
def _act(pre, RELU: tl.constexpr):
    if RELU:
        return tl.maximum(pre, 0.0)
    return tanh(pre)


@triton.jit
def _act_grad(d, y, RELU: tl.constexpr):
    # derivative written in terms of the activation's output y
    if RELU:
        return tl.where(y > 0.0, d, 0.0)
    return d * (1.0 - y * y)


@arg_types(
    data="xproj_ptr x_ptr wx_ptr h0_ptr w_ptr out_ptr hn_ptr hbuf_ptr",
    i64="lengths_ptr",
    i32="sync_ptr",
    int="T B H I row0 row_end s_begin s_end phases")
@triton.jit(do_not_specialize=["T", "B", "row0", "row_end", "s_begin", "s_end"])
def rnn_fwd_kernel(xproj_ptr, x_ptr, wx_ptr, h0_ptr, w_ptr, lengths_ptr, out_ptr,
                   hn_ptr, hbuf_ptr, sync_ptr, T, B, H, I, row0, row_end, s_begin, s_end,
                   phases, REVERSE: tl.constexpr, RELU: tl.constexpr, FUSE_X: tl.constexpr,
                   PERSIST: tl.constexpr, ONCHIP: tl.constexpr, PRECISION: tl.constexpr,
                   BB: tl.constexpr, U: tl.constexpr, BKH: tl.constexpr, BKX: tl.constexpr,
                   BKH2: tl.constexpr, PREFETCH: tl.constexpr, POLL: tl.constexpr):
    # w = W_hh [H, H] as torch holds it (read transposed: _wtile's ROWS, no copy per call);
    # FUSE_X (one step, T = 1): x [B, I] @ W_ih^T here (wx = W_ih [H, I]), xproj = biases
    offs_b, row_ok, lens, nsteps = _rows(lengths_ptr, row0, row_end, BB)
    offs_u, u_ok = _units(H, U)
    dt = out_ptr.dtype.element_ty
    m2 = row_ok[:, None] & u_ok[None, :]
    so = offs_b[:, None] * H + offs_u[None, :]
    w, w2 = 0, 0
    if ONCHIP:   # [BKH (+ BKH2), U]
        w, w2 = _wonchip(w_ptr, 0, H, H, offs_u, u_ok, BKH, BKH2, True)
    nu = tl.num_programs(0)
    sync = sync_ptr + tl.program_id(1)
    if PREFETCH:   # the first step's input part; each step loads the next's before its barrier
        xa, _, _, _ = _next_x(xproj_ptr, s_begin, lens, row_ok, offs_b, offs_u, u_ok, B, H, H,
                              REVERSE, 1)
    for s in range(s_begin, tl.minimum(s_end, nsteps)):
        act, last, t, src, dst = _fwd_step(s, lens, row_ok, hbuf_ptr, h0_ptr, B, H, REVERSE)
        acc = _product(src, H, 0, H, offs_b, row_ok, w_ptr, 0, H, offs_u, u_ok, w, dt,
                       PRECISION, ONCHIP, BB, U, BKH, True, w2, BKH2)
        ma = act[:, None] & u_ok[None, :]
        ho = (t[:, None] * B + offs_b[:, None]) * H + offs_u[None, :]
        if PREFETCH:
            acc += xa
        else:
            acc += _x_part(xproj_ptr, ho, ma, 0, H, x_ptr, wx_ptr, H, I, offs_b, row_ok, offs_u,
                           u_ok, dt, PRECISION, BB, U, BKX, FUSE_X)
        y = _act(acc, RELU).to(dt)
        tl.store(out_ptr + ho, y, mask=ma)
        tl.store(dst + so, y, mask=m2)
        tl.store(hn_ptr + so, y, mask=last[:, None] & u_ok[None, :])
        if PREFETCH:
            xa, _, _, _ = _next_x(xproj_ptr, s + 1, lens, row_ok, offs_b, offs_u, u_ok, B, H, H,
                                  REVERSE, 1)
        _grid_sync(sync, (s - s_begin + 1) * nu, PERSIST, POLL)
    _grid_release(sync, nu, PERSIST)


@triton.jit
def _rnn_ahead(grad_out_ptr, out_ptr, s, lens, row_ok, offs_b, offs_u, u_ok, B, H,
               REVERSE: tl.constexpr):
    # PREFETCH: what step s reads from memory and not from the recurrence, dL/d out and out
    t, _, _, act = _step_at(s, lens, row_ok, REVERSE)
    ma = act[:, None] & u_ok[None, :]
    return _dout(grad_out_ptr, t, ma, offs_b, offs_u, B, H), _dout(out_ptr, t, ma, offs_b,
                                                                    offs_u, B, H)


@arg_types(
    data="grad_out_ptr grad_hn_ptr out_ptr w_ptr grad_pre_ptr grad_h0_ptr states_ptr "
         "gbuf_ptr",
    i64="lengths_ptr",
    i32="sync_ptr",
    int="T B H row0 row_end s_begin s_end phases keep")
@triton.jit(do_not_specialize=["T", "B", "row0", "row_end", "s_begin", "s_end", "keep"])
def rnn_bwd_kernel(grad_out_ptr, grad_hn_ptr, out_ptr, w_ptr, lengths_ptr, grad_pre_ptr,
                   grad_h0_ptr, states_ptr, gbuf_ptr, sync_ptr, T, B, H, row0, row_end, s_begin,
                   s_end, phases, keep, REVERSE: tl.constexpr, RELU: tl.constexpr, PERSIST: tl.constexpr,
                   ONCHIP: tl.constexpr, PRECISION: tl.constexpr, BB: tl.constexpr,
                   U: tl.constexpr, BKH: tl.constexpr, BKH2: tl.constexpr,
                   PREFETCH: tl.constexpr, POLL: tl.constexpr):
    # w = W_hh [H, H]; gbuf [2, B, H] exchanges the pre-activation gradients g; iteration
    # i in [s_begin, s_end) is step nsteps - 1 - i, iteration nsteps forms dh0; keep != 0:
    # states [T, B, H] gets dL/dh_t (fastrnn.diagnostics; a runtime flag, so one build)
    offs_b, row_ok, lens, nsteps = _rows(lengths_ptr, row0, row_end, BB)
    offs_u, u_ok = _units(H, U)
    dt = grad_out_ptr.dtype.element_ty
    m2 = row_ok[:, None] & u_ok[None, :]
    so = offs_b[:, None] * H + offs_u[None, :]
    w, w2 = 0, 0
    if ONCHIP:   # [BKH (+ BKH2), U]
        w, w2 = _wonchip(w_ptr, 0, H, H, offs_u, u_ok, BKH, BKH2)
    ghn = tl.load(grad_hn_ptr + so, mask=m2, other=0.0).to(tl.float32)
    nu = tl.num_programs(0)
    sync = sync_ptr + tl.program_id(1)
    if PREFETCH:   # the first step's dL/d out and output; each step loads the next's
        #            (the step before in time) before its barrier
        d_out, y = _rnn_ahead(grad_out_ptr, out_ptr, nsteps - 1 - s_begin, lens, row_ok, offs_b,
                              offs_u, u_ok, B, H, REVERSE)
    for i in range(s_begin, tl.minimum(s_end, nsteps)):
        s = nsteps - 1 - i
        act = (s < lens) & row_ok
        first = s == lens - 1
        t = step_time(s, lens, REVERSE)
        rec = _product(gbuf_ptr + (i % 2) * B * H, H, 0, H, offs_b, row_ok, w_ptr, 0, H, offs_u,
                       u_ok, w, dt, PRECISION, ONCHIP, BB, U, BKH, False, w2, BKH2)
        ma = act[:, None] & u_ok[None, :]
        ho = (t[:, None] * B + offs_b[:, None]) * H + offs_u[None, :]
        if not PREFETCH:
            d_out = _dout(grad_out_ptr, t, ma, offs_b, offs_u, B, H)
        d = tl.where(first[:, None], ghn, rec) + d_out
        tl.store(states_ptr + ho, d.to(dt), mask=ma & ((lens * 0 + keep) != 0)[:, None])
        if not PREFETCH:
            y = _dout(out_ptr, t, ma, offs_b, offs_u, B, H)
        g = tl.where(ma, _act_grad(d, y, RELU), 0.0).to(dt)
        tl.store(grad_pre_ptr + ho, g, mask=ma)
        tl.store(gbuf_ptr + ((i + 1) % 2) * B * H + so, g, mask=m2)
        if PREFETCH:
            d_out, y = _rnn_ahead(grad_out_ptr, out_ptr, s - 1, lens, row_ok, offs_b, offs_u, u_ok,
                                  B, H, REVERSE)
        _grid_sync(sync, (i - s_begin + 1) * nu, PERSIST, POLL)
    _grid_release(sync, nu, PERSIST)
    if (s_begin <= nsteps) & (nsteps < s_end):           # after step 0: dh0
        dh0 = _product(gbuf_ptr + (nsteps % 2) * B * H, H, 0, H, offs_b, row_ok, w_ptr, 0, H,
                       offs_u, u_ok, w, dt, PRECISION, ONCHIP, BB, U, BKH, False, w2, BKH2)
        tl.store(grad_h0_ptr + so, dh0.to(dt), mask=m2)


# ----------------------------------------------------------------- launchers
def rnn_fwd(*, xproj, h0, w_hh, lengths, reverse, nonlinearity, save=True):
    """xproj [T, B, H], h0 [B, H], w_hh [H, H] -> (out [T, B, H], h_n [B, H]).
    ``save`` is part of the launcher contract; an RNN saves nothing beyond ``out``."""
    T, B, H = xproj.shape
    out, h_n = rnn_fwd_outputs(xproj)
    if B == 0:
        return out, h_n
    run = plan.Run(rnn_fwd_kernel, "rnn", "fwd", xproj, H=H, P=H, B=B, T=T, lengths=lengths,
                   REVERSE=reverse, RELU=nonlinearity == "relu")
    run.prefill_final((h_n, h0))
    run.launch(xproj_ptr=xproj.contiguous(), x_ptr=xproj, wx_ptr=xproj, h0_ptr=h0.contiguous(), w_ptr=w_hh.contiguous(), out_ptr=out, hn_ptr=h_n,
               hbuf_ptr=run.buffer((2, B, H)))
    run.zero_past_lengths(out)
    return out, h_n


def rnn_bwd(*, grad_out, grad_hn, out, w_hh, lengths, reverse, nonlinearity, grad_states=None):
    """-> (grad_pre [T, B, H] = dL/d(xproj) per step, grad_h0 [B, H]); fills the optional
    output grad_states [T, B, H] with dL/dh_t if given."""
    T, B, H = out.shape
    grad_pre, grad_h0 = rnn_bwd_outputs(out)
    if B == 0:
        return grad_pre, grad_h0
    run = plan.Run(rnn_bwd_kernel, "rnn", "bwd", out, H=H, P=H, B=B, T=T, lengths=lengths,
                   REVERSE=reverse, RELU=nonlinearity == "relu")
    run.launch(grad_out_ptr=grad_out.contiguous(), grad_hn_ptr=grad_hn.contiguous(), out_ptr=out,
               w_ptr=w_hh.contiguous(), grad_pre_ptr=grad_pre, grad_h0_ptr=grad_h0,
               gbuf_ptr=run.buffer((2, B, H)), **plan.states_args(grad_states, grad_pre))
    run.zero_past_lengths(grad_pre, grad_states)
    return grad_pre, grad_h0


def rnn_step(*, x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity):
    """One step, no autograd, one launch: x [B, I], h [B, H] -> h' [B, H]."""
    B, I = x.shape
    H = w_hh.shape[0]
    out, h_n = rnn_fwd_outputs(x.new_empty((1, B, H)))
    if B == 0:
        return h_n
    run = plan.Run(rnn_fwd_kernel, "rnn", "step", x, H=H, P=H, B=B, T=1, lengths=None, I=I,
                   REVERSE=False, RELU=nonlinearity == "relu")
    run.launch(xproj_ptr=plan.step_bias(b_ih, b_hh, H, x), x_ptr=x.contiguous(),
               wx_ptr=w_ih.contiguous(), h0_ptr=h.contiguous(),
               w_ptr=w_hh.contiguous(), out_ptr=out, hn_ptr=h_n,
               hbuf_ptr=run.buffer((2, B, H)))
    return h_n
