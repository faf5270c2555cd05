"""GRU forward and BPTT kernels (Triton, CUDA; TRITON_INTERPRET=1 on CPU). Gates (r, z, n).

Dimension legend: T steps, B batch, H hidden, G = 3H; BB rows per program, BN x BK
tiles of the hidden dimension. Same plan as rnn.py's tiled layout: one launch for
the whole sequence, program p owns rows [p*BB, (p+1)*BB), the state ping-pongs
through an fp32 scratch [2, B, H] that stays in L2, weight tiles stream from L2
and a CTA barrier separates the phases of a step. Per step (see kernels/README.md):

    hp = h @ W_hh^T;  r, z = sig(x_r + hp_r), sig(x_z + hp_z);  a = hp_n + b_hn
    n = tanh(x_n + r * a);  h' = (1 - z) * n + z * h

``gates`` [T, B, 4H] keeps (r, z, n, a) for BPTT. Accumulation in fp32.
"""
import triton
import triton.language as tl

from .. import gru_bwd_outputs, gru_fwd_outputs
from ._common import (_copy_rows, _lengths, _precision, _rowdot, _rows, _sigmoid, _slot, _tanh,
                      _time, _zero_padding)


@triton.jit(do_not_specialize=["T"])
def gru_fwd_kernel(xproj_ptr, h0_ptr, w_t_ptr, b_hn_ptr, lengths_ptr, out_ptr, hn_ptr,
                   gates_ptr, state_ptr, T, B, H,
                   REVERSE: tl.constexpr, VARLEN: tl.constexpr, SAVE: tl.constexpr,
                   PRECISION: tl.constexpr, BB: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    # w_t = W_hh^T [H, 3H]; state [2, B, H] fp32 scratch; gates written only if SAVE
    offs_b, row_ok, lens = _rows(B, BB, lengths_ptr)
    nsteps = tl.max(lens, axis=0)
    dt = out_ptr.dtype.element_ty
    G = 3 * H
    _copy_rows(h0_ptr, state_ptr, offs_b, row_ok, H, BN)
    tl.debug_barrier()
    for s in range(0, nsteps):
        act = s < lens
        t = _time(s, lens, REVERSE)
        src = _slot(state_ptr, s, B, H)
        dst = _slot(state_ptr, s + 1, B, H)
        for n0 in range(0, H, BN):
            offs_n = n0 + tl.arange(0, BN)
            n_ok = offs_n < H
            # one pass over the state for all three gates (three _rowdot passes spill)
            acc_r = tl.zeros((BB, BN), tl.float32)
            acc_z = tl.zeros((BB, BN), tl.float32)
            acc_n = tl.zeros((BB, BN), tl.float32)
            for k0 in range(0, H, BK):
                offs_k = k0 + tl.arange(0, BK)
                k_ok = offs_k < H
                hk = tl.load(src + offs_b[:, None] * H + offs_k[None, :],
                             mask=row_ok[:, None] & k_ok[None, :], other=0.0).to(dt)
                wp = w_t_ptr + offs_k[:, None].to(tl.int64) * G + offs_n[None, :]
                wm = k_ok[:, None] & n_ok[None, :]
                acc_r += tl.dot(hk, tl.load(wp, mask=wm, other=0.0), input_precision=PRECISION)
                acc_z += tl.dot(hk, tl.load(wp + H, mask=wm, other=0.0), input_precision=PRECISION)
                acc_n += tl.dot(hk, tl.load(wp + 2 * H, mask=wm, other=0.0),
                                input_precision=PRECISION)
            m = row_ok[:, None] & n_ok[None, :]
            ma = m & act[:, None]
            xo = (t[:, None] * B + offs_b[:, None]) * G + offs_n[None, :]
            go = (t[:, None] * B + offs_b[:, None]) * (4 * H) + offs_n[None, :]
            r = _sigmoid(tl.load(xproj_ptr + xo, mask=ma, other=0.0).to(tl.float32) + acc_r)
            z = _sigmoid(tl.load(xproj_ptr + xo + H, mask=ma, other=0.0).to(tl.float32) + acc_z)
            a = acc_n + tl.load(b_hn_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
            n = _tanh(tl.load(xproj_ptr + xo + 2 * H, mask=ma, other=0.0).to(tl.float32) + r * a)
            old = tl.load(src + offs_b[:, None] * H + offs_n[None, :], mask=m, other=0.0)
            y = (1.0 - z) * n + z * old
            if SAVE:
                tl.store(gates_ptr + go, r.to(dt), mask=ma)
                tl.store(gates_ptr + go + H, z.to(dt), mask=ma)
                tl.store(gates_ptr + go + 2 * H, n.to(dt), mask=ma)
                tl.store(gates_ptr + go + 3 * H, a.to(dt), mask=ma)
            tl.store(out_ptr + (t[:, None] * B + offs_b[:, None]) * H + offs_n[None, :],
                     y.to(dt), mask=ma)
            tl.store(dst + offs_b[:, None] * H + offs_n[None, :], tl.where(act[:, None], y, old),
                     mask=m)
        tl.debug_barrier()
    _copy_rows(_slot(state_ptr, nsteps, B, H), hn_ptr, offs_b, row_ok, H, BN)
    if VARLEN:
        _zero_padding(out_ptr, offs_b, lens, T, B, H, BB, BN)


@triton.jit(do_not_specialize=["T"])
def gru_bwd_kernel(grad_out_ptr, grad_hn_ptr, out_ptr, h0_ptr, gates_ptr, w_ptr, lengths_ptr,
                   grad_x_ptr, grad_hp_ptr, grad_h0_ptr, state_ptr, g_ptr, T, B, H,
                   REVERSE: tl.constexpr, VARLEN: tl.constexpr, PRECISION: tl.constexpr,
                   BB: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    # w = W_hh [3H, H]; state [2, B, H] fp32 carries dL/dh; g [B, 3H] scratch for dL/d hp
    offs_b, row_ok, lens = _rows(B, BB, lengths_ptr)
    nsteps = tl.max(lens, axis=0)
    dt = out_ptr.dtype.element_ty
    G = 3 * H
    _copy_rows(grad_hn_ptr, state_ptr, offs_b, row_ok, H, BN)
    tl.debug_barrier()
    for i in range(0, nsteps):
        s = nsteps - 1 - i
        act = s < lens
        t = _time(s, lens, REVERSE)
        tp = _time(s - 1, lens, REVERSE)
        has_prev = (tl.zeros((BB,), tl.int32) + s) > 0               # [BB]: step 0 reads h0
        src = _slot(state_ptr, i, B, H)
        dst = _slot(state_ptr, i + 1, B, H)
        # phase 1: gate gradients of this step; dst <- the direct path d * z
        for n0 in range(0, H, BN):
            offs_n = n0 + tl.arange(0, BN)
            m = row_ok[:, None] & (offs_n < H)[None, :]
            ma = m & act[:, None]
            ho = (t[:, None] * B + offs_b[:, None]) * H + offs_n[None, :]
            dh = tl.load(src + offs_b[:, None] * H + offs_n[None, :], mask=m, other=0.0)
            d = tl.load(grad_out_ptr + ho, mask=ma, other=0.0).to(tl.float32) + dh
            go = (t[:, None] * B + offs_b[:, None]) * (4 * H) + offs_n[None, :]
            r = tl.load(gates_ptr + go, mask=ma, other=0.0).to(tl.float32)
            z = tl.load(gates_ptr + go + H, mask=ma, other=0.0).to(tl.float32)
            n = tl.load(gates_ptr + go + 2 * H, mask=ma, other=0.0).to(tl.float32)
            a = tl.load(gates_ptr + go + 3 * H, mask=ma, other=0.0).to(tl.float32)
            hprev = tl.load(out_ptr + (tp[:, None] * B + offs_b[:, None]) * H + offs_n[None, :],
                            mask=ma & has_prev[:, None], other=0.0).to(tl.float32) + \
                tl.load(h0_ptr + offs_b[:, None] * H + offs_n[None, :],
                        mask=ma & (has_prev == 0)[:, None], other=0.0).to(tl.float32)
            dn = tl.where(ma, d * (1.0 - z) * (1.0 - n * n), 0.0)
            dz = tl.where(ma, d * (hprev - n) * z * (1.0 - z), 0.0)
            dr = tl.where(ma, dn * a * r * (1.0 - r), 0.0)
            xo = (t[:, None] * B + offs_b[:, None]) * G + offs_n[None, :]
            go_ = offs_b[:, None] * G + offs_n[None, :]
            tl.store(grad_x_ptr + xo, dr.to(dt), mask=ma)
            tl.store(grad_x_ptr + xo + H, dz.to(dt), mask=ma)
            tl.store(grad_x_ptr + xo + 2 * H, dn.to(dt), mask=ma)
            # dL/d hp differs from dL/d xproj in the n part: a enters through r * a
            tl.store(grad_hp_ptr + xo, dr.to(dt), mask=ma)
            tl.store(grad_hp_ptr + xo + H, dz.to(dt), mask=ma)
            tl.store(grad_hp_ptr + xo + 2 * H, (dn * r).to(dt), mask=ma)
            tl.store(g_ptr + go_, dr.to(dt), mask=m)
            tl.store(g_ptr + go_ + H, dz.to(dt), mask=m)
            tl.store(g_ptr + go_ + 2 * H, (dn * r).to(dt), mask=m)
            tl.store(dst + offs_b[:, None] * H + offs_n[None, :], tl.where(act[:, None], d * z, dh),
                     mask=m)
        tl.debug_barrier()
        # phase 2: dst += g @ W_hh for the running rows
        for n0 in range(0, H, BN):
            offs_n = n0 + tl.arange(0, BN)
            n_ok = offs_n < H
            acc = _rowdot(g_ptr, G, w_ptr, H, 0, offs_b, row_ok, offs_n, n_ok, G, dt,
                          PRECISION, BB, BN, BK)
            m = row_ok[:, None] & n_ok[None, :]
            cur = tl.load(dst + offs_b[:, None] * H + offs_n[None, :], mask=m, other=0.0)
            tl.store(dst + offs_b[:, None] * H + offs_n[None, :],
                     tl.where(act[:, None], cur + acc, cur), mask=m)
        tl.debug_barrier()
    _copy_rows(_slot(state_ptr, nsteps, B, H), grad_h0_ptr, offs_b, row_ok, H, BN)
    if VARLEN:
        _zero_padding(grad_x_ptr, offs_b, lens, T, B, G, BB, BN)
        _zero_padding(grad_hp_ptr, offs_b, lens, T, B, G, BB, BN)


# ----------------------------------------------------------------- launchers
def config(dtype, direction):
    """Tiles per operand width (AOT-checked: no spills on sm_80/sm_90a)."""
    tiles = dict(BB=16, BN=16, BK=32) if dtype.itemsize == 4 else dict(BB=16, BN=32, BK=32)
    return dict(tiles, num_warps=4)


def gru_fwd(*, xproj, h0, w_hh, b_hn, lengths, reverse, save=True):
    """Same contract as the Numba launcher (fastrnn/kernels/__init__.py)."""
    import torch
    T, B, G = xproj.shape
    H = G // 3
    out, h_n, gates = gru_fwd_outputs(xproj, save)
    if B == 0:
        return out, h_n, gates
    if b_hn is None:
        b_hn = xproj.new_zeros(H)
    state = torch.empty((2, B, H), dtype=torch.float32, device=xproj.device)
    cfg = config(xproj.dtype, "fwd")
    gru_fwd_kernel[(triton.cdiv(B, cfg["BB"]),)](
        xproj.contiguous(), h0.contiguous(), w_hh.t().contiguous(), b_hn.contiguous(),
        _lengths(lengths, B, T, xproj.device), out, h_n, gates if save else out, state, T, B, H,
        REVERSE=reverse, VARLEN=lengths is not None, SAVE=save,
        PRECISION=_precision(xproj.dtype), **cfg)
    return out, h_n, gates


def gru_bwd(*, grad_out, grad_hn, out, h0, gates, w_hh, lengths, reverse):
    """Same contract as the Numba launcher (fastrnn/kernels/__init__.py)."""
    import torch
    T, B, H = out.shape
    grad_x, grad_hp, grad_h0 = gru_bwd_outputs(out)
    if B == 0:
        return grad_x, grad_hp, grad_h0
    state = torch.empty((2, B, H), dtype=torch.float32, device=out.device)
    g = torch.empty((B, 3 * H), dtype=out.dtype, device=out.device)
    cfg = config(out.dtype, "bwd")
    gru_bwd_kernel[(triton.cdiv(B, cfg["BB"]),)](
        grad_out.contiguous(), grad_hn.contiguous(), out, h0.contiguous(), gates,
        w_hh.contiguous(), _lengths(lengths, B, T, out.device), grad_x, grad_hp, grad_h0,
        state, g, T, B, H, REVERSE=reverse, VARLEN=lengths is not None,
        PRECISION=_precision(out.dtype), **cfg)
    return grad_x, grad_hp, grad_h0
