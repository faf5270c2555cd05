"""Level-batched tree kernels on the GPU: TreeRNN forward and back-propagation through
structure, one launch per level (fastrnn.models.tree; the schedule: fastrnn.forest).

Dimension legend: n nodes, H hidden, N child slots, NH = N*H. A launch covers one level's
nodes: programs tile (BB nodes) x (U hidden units). Forward: a program's units of
h_j = f(xproj_j + sum_s W_hh[:, sH:(s+1)H] h_{c_s}), the children's rows read by index
(a missing child masked to zero). Backward, top-down: a node's dL/dh is complete when its
level starts (its parent is higher, done before); a program writes grad_pre for its own
units and adds its units of every child's dL/dh, g @ W_hh[:, sH:(s+1)H] with g = dL/dh
* f' recomputed over all H from the node's own rows: each child has one parent and the
unit blocks are disjoint, so there are no atomics and no grid barrier. The recurrent
weight's gradient is one GEMM outside (fastrnn/autograd.py), as on the CPU.

The arity N is a runtime argument, never specialised: one build serves every arity
(unrolled over N, a 20-ary N-ary Tree-LSTM, whose forget gates take N x N products,
did not finish within 45 s on an H200).
"""
import torch
import triton
import triton.language as tl

from .. import new_output
from . import plan
from ._common import _product, _units, _wtile, arg_types, tanh

BB, U = 16, 16                     # every level: 16 nodes x 16 units per program
# every launch's options: 4 warps, and registers up to 255 (ptxas's own budget without a
# cap spilled 8-24 bytes at 96-128 registers in several builds, under Triton 3.6 and 3.9;
# a level's launch is not persistent, so its occupancy needs no register budget)
OPTIONS = dict(num_warps=4, maxnreg=255)


@triton.jit
def _tile(order_ptr, a0, a1, H, BB: tl.constexpr, U: tl.constexpr):
    # this program's [BB] nodes (its row block: program id 1, units are id 0, as in the
    # layer kernels) = order[a0 + block] and whether each exists; its [U] units and
    # whether each exists; the [BB, U] mask of both
    pos = a0 + tl.program_id(1).to(tl.int64) * BB + tl.arange(0, BB)
    ok = pos < a1
    offs_u, u_ok = _units(H, U)
    return tl.load(order_ptr + pos, mask=ok, other=0), ok, offs_u, u_ok, \
        ok[:, None] & u_ok[None, :]


@triton.jit
def _slot_child(table_ptr, nodes, ok, s, N):
    # each node's child in slot s: (its row, 0 where none; whether it exists). No mask or
    # select on the index (a padding row's node is row 0, a valid one): either failed to
    # compile under Triton 3.6 in some tilings (a layout-conversion pass)
    kid = tl.load(table_ptr + nodes * N + s)
    return tl.maximum(kid, 0), ok & (kid >= 0)


@triton.jit
def _act(v, RELU: tl.constexpr):
    if RELU:
        r = tl.maximum(v, 0.0)
    else:
        r = tanh(v)
    return r


@triton.jit
def _act_grad(d, y, RELU: tl.constexpr):
    if RELU:
        r = tl.where(y > 0.0, d, 0.0)
    else:
        r = d * (1.0 - y * y)
    return r


@arg_types(
    data="xproj_ptr w_t_ptr h_ptr",
    i64="table_ptr order_ptr",
    int="a0 a1 H N")
@triton.jit(do_not_specialize=["a0", "a1", "N"])
def tree_rnn_fwd_kernel(xproj_ptr, w_t_ptr, table_ptr, order_ptr, h_ptr, a0, a1, H,
                        N, RELU: tl.constexpr, PRECISION: tl.constexpr,
                        BB: tl.constexpr, U: tl.constexpr, BK: tl.constexpr):
    # w_t = W_hh^T [NH, H]; table [n, N] child per slot (-1: none)
    nodes, ok, offs_u, u_ok, m2 = _tile(order_ptr, a0, a1, H, BB, U)
    dt = h_ptr.dtype.element_ty
    ho = nodes[:, None] * H + offs_u[None, :]
    acc = tl.load(xproj_ptr + ho, mask=m2, other=0.0).to(tl.float32)
    for s in range(N):
        row, has = _slot_child(table_ptr, nodes, ok, s, N)
        acc += _product(h_ptr, H, 0, H, row, has, w_t_ptr, s * H * H, H, offs_u, u_ok, 0, dt,
                        PRECISION, False, BB, U, BK)
    tl.store(h_ptr + ho, _act(acc, RELU).to(dt), mask=m2)


@arg_types(
    data="h_ptr w_ptr grad_pre_ptr",
    fp32="dh_ptr",
    i64="table_ptr order_ptr",
    int="a0 a1 H N")
@triton.jit(do_not_specialize=["a0", "a1", "N"])
def tree_rnn_bwd_kernel(dh_ptr, h_ptr, w_ptr, table_ptr, order_ptr, grad_pre_ptr, a0, a1, H,
                        N, RELU: tl.constexpr, PRECISION: tl.constexpr,
                        BB: tl.constexpr, U: tl.constexpr, BK: tl.constexpr):
    # w = W_hh [H, NH]; dh [n, H] fp32: dL/dh, complete for this level's nodes, gains
    # their children's parts here
    nodes, ok, offs_u, u_ok, m2 = _tile(order_ptr, a0, a1, H, BB, U)
    dt = h_ptr.dtype.element_ty
    ho = nodes[:, None] * H + offs_u[None, :]
    y = tl.load(h_ptr + ho, mask=m2, other=0.0).to(tl.float32)
    g = _act_grad(tl.load(dh_ptr + ho, mask=m2, other=0.0), y, RELU)
    tl.store(grad_pre_ptr + ho, g.to(dt), mask=m2)
    for s in range(N):
        row, has = _slot_child(table_ptr, nodes, ok, s, N)
        acc = tl.zeros((BB, U), tl.float32)
        for k0 in range(0, H, BK):               # g over all H, recomputed from own rows
            ks = k0 + tl.arange(0, BK)
            mk = ok[:, None] & (ks < H)[None, :]
            ko = nodes[:, None] * H + ks[None, :]
            gk = _act_grad(tl.load(dh_ptr + ko, mask=mk, other=0.0),
                           tl.load(h_ptr + ko, mask=mk, other=0.0).to(tl.float32), RELU)
            acc += tl.dot(gk.to(dt), _wtile(w_ptr, s * H, N * H, k0, H, offs_u, u_ok, BK),
                          input_precision=PRECISION)
        co = row[:, None] * H + offs_u[None, :]
        mc = has[:, None] & u_ok[None, :]
        tl.store(dh_ptr + co, tl.load(dh_ptr + co, mask=mc, other=0.0) + acc, mask=mc)


# ----------------------------------------------------------------- launchers
def _child_table(forest, N, device):
    """[n, N] child per slot (-1: none), on the device, made once per forest and arity."""
    key = ("table", N, str(device))
    if key not in forest:
        ptr = forest["child_ptr"]
        n = len(ptr) - 1
        parents = torch.repeat_interleave(torch.arange(n), ptr.diff())
        table = torch.full((n, N), -1, dtype=torch.int64)
        table[parents, forest["child_slot"]] = forest["child_idx"]
        forest[key] = table.to(device)
        forest[("order", str(device))] = forest["order"].to(device)
    return forest[key], forest[("order", str(device))]


def _levels(forest, reverse=False):
    lp = forest["level_ptr"].tolist()
    spans = [(lp[i], lp[i + 1]) for i in range(len(lp) - 1)]
    return reversed(spans) if reverse else spans


def _bk(dtype, kernel=None):
    """The k-chunk of the products: 16 (fp32) or 32 (16-bit); the Child-Sum kernels take 16
    in every dtype (16-bit builds at 32 spilled on sm_90: the forward, and the backward
    24 bytes at 4 warps, 32 at 8, once its fp32 dL/dc buffer was typed as declared)."""
    return 16 if dtype.itemsize == 4 or kernel in (child_sum_fwd_kernel,
                                                   child_sum_bwd_kernel) else 32


def tree_rnn_fwd(*, xproj, w_hh, forest, nonlinearity="tanh"):
    """Same contract as the Numba launcher: xproj [n, H], w_hh [H, N*H] -> h [n, H]."""
    n, H = xproj.shape
    N = w_hh.shape[1] // H
    h = new_output((n, H), xproj)
    table, order = _child_table(forest, N, xproj.device)
    xproj, w_t = xproj.contiguous(), w_hh.t().contiguous()
    for a0, a1 in _levels(forest):
        tree_rnn_fwd_kernel[(plan.cdiv(H, U), plan.cdiv(a1 - a0, BB))](
            xproj, w_t, table, order, h, a0, a1, H, N, RELU=nonlinearity == "relu",
            PRECISION=plan.precision(xproj.dtype), BB=BB, U=U, BK=_bk(xproj.dtype),
            **OPTIONS)
    return h


def tree_rnn_bwd(*, grad_h, h, w_hh, forest, nonlinearity="tanh"):
    """-> grad_pre [n, H] = dL/d xproj."""
    n, H = h.shape
    N = w_hh.shape[1] // H
    grad_pre = new_output((n, H), h)
    dh = grad_h.float()     # fp32 accumulator of dL/dh (grad_h is the Function's own copy)
    table, order = _child_table(forest, N, h.device)
    w = w_hh.contiguous()
    for a0, a1 in _levels(forest, reverse=True):
        tree_rnn_bwd_kernel[(plan.cdiv(H, U), plan.cdiv(a1 - a0, BB))](
            dh, h, w, table, order, grad_pre, a0, a1, H, N, RELU=nonlinearity == "relu",
            PRECISION=plan.precision(h.dtype), BB=BB, U=U, BK=_bk(h.dtype),
            **OPTIONS)
    return grad_pre


# ------------------------------------------------------------ N-ary Tree-LSTM
@arg_types(
    data="xproj_ptr w_t_ptr h_ptr c_ptr gates_ptr",
    i64="table_ptr order_ptr",
    int="a0 a1 H N")
@triton.jit(do_not_specialize=["a0", "a1", "N"])
def nary_fwd_kernel(xproj_ptr, w_t_ptr, table_ptr, order_ptr, h_ptr, c_ptr, gates_ptr, a0, a1,
                    H, N, PRECISION: tl.constexpr, BB: tl.constexpr,
                    U: tl.constexpr, BK: tl.constexpr):
    # xproj [n, 4H] (i, o, u, f); w_t = W_hh^T [NH, (3+N)H] (columns i, o, u, f_1..f_N);
    # -> h, c [n, H], gates [n, (3+N)H] after their activations
    nodes, ok, offs_u, u_ok, m2 = _tile(order_ptr, a0, a1, H, BB, U)
    dt = h_ptr.dtype.element_ty
    GH = (3 + N) * H
    xo = nodes[:, None] * (4 * H) + offs_u[None, :]
    go = nodes[:, None] * GH + offs_u[None, :]
    ho = nodes[:, None] * H + offs_u[None, :]
    xf = tl.load(xproj_ptr + xo + 3 * H, mask=m2, other=0.0).to(tl.float32)
    fc = tl.zeros((BB, U), tl.float32)
    for s in range(N):                 # the forget gate of slot s, from every slot
        af = xf
        for l in range(N):
            rl, hl = _slot_child(table_ptr, nodes, ok, l, N)
            af += _product(h_ptr, H, 0, H, rl, hl, w_t_ptr, l * H * GH + (3 + s) * H, GH,
                           offs_u, u_ok, 0, dt, PRECISION, False, BB, U, BK)
        f = tl.sigmoid(af)
        tl.store(gates_ptr + go + (3 + s) * H, f.to(dt), mask=m2)
        rs, hs = _slot_child(table_ptr, nodes, ok, s, N)
        fc += f * tl.load(c_ptr + rs[:, None] * H + offs_u[None, :],
                          mask=hs[:, None] & u_ok[None, :], other=0.0).to(tl.float32)
    # i, o, u after the forget gates, so that their accumulators are not live across that
    # loop (the other order spilled the 16-bit builds on sm_90)
    ai = tl.load(xproj_ptr + xo, mask=m2, other=0.0).to(tl.float32)
    ao = tl.load(xproj_ptr + xo + H, mask=m2, other=0.0).to(tl.float32)
    au = tl.load(xproj_ptr + xo + 2 * H, mask=m2, other=0.0).to(tl.float32)
    for s in range(N):                 # slot s: its children's part of i, o, u
        rows, has = _slot_child(table_ptr, nodes, ok, s, N)
        w_off = s * H * GH
        ai += _product(h_ptr, H, 0, H, rows, has, w_t_ptr, w_off, GH, offs_u, u_ok, 0, dt,
                       PRECISION, False, BB, U, BK)
        ao += _product(h_ptr, H, 0, H, rows, has, w_t_ptr, w_off + H, GH, offs_u, u_ok, 0, dt,
                       PRECISION, False, BB, U, BK)
        au += _product(h_ptr, H, 0, H, rows, has, w_t_ptr, w_off + 2 * H, GH, offs_u, u_ok, 0,
                       dt, PRECISION, False, BB, U, BK)
    i, o, u = tl.sigmoid(ai), tl.sigmoid(ao), tanh(au)
    c = i * u + fc
    tl.store(gates_ptr + go, i.to(dt), mask=m2)
    tl.store(gates_ptr + go + H, o.to(dt), mask=m2)
    tl.store(gates_ptr + go + 2 * H, u.to(dt), mask=m2)
    tl.store(c_ptr + ho, c.to(dt), mask=m2)
    tl.store(h_ptr + ho, (o * tanh(c)).to(dt), mask=m2)


@triton.jit
def _nary_gate_grads(gates_ptr, c_ptr, dh_ptr, dc_ptr, nodes, cols, m, H, GH):
    # (dL/dc_t, g_i, g_o, g_u) at [rows, cols]: fp32
    go = nodes[:, None] * GH + cols[None, :]
    ho = nodes[:, None] * H + cols[None, :]
    i = tl.load(gates_ptr + go, mask=m, other=0.0).to(tl.float32)
    o = tl.load(gates_ptr + go + H, mask=m, other=0.0).to(tl.float32)
    u = tl.load(gates_ptr + go + 2 * H, mask=m, other=0.0).to(tl.float32)
    tc = tanh(tl.load(c_ptr + ho, mask=m, other=0.0).to(tl.float32))
    dh = tl.load(dh_ptr + ho, mask=m, other=0.0)
    dct = tl.load(dc_ptr + ho, mask=m, other=0.0) + dh * o * (1.0 - tc * tc)
    return dct, dct * u * i * (1.0 - i), dh * tc * o * (1.0 - o), dct * i * (1.0 - u * u)


@triton.jit
def _slot_forget_grad(gates_ptr, c_ptr, table_ptr, nodes, ok, cols, m, dct, s, H, GH,
                      N):
    # slot s's (g_f, f, child row, child exists): g_f = dL/dc_t c_child f (1 - f)
    f = tl.load(gates_ptr + nodes[:, None] * GH + (3 + s) * H + cols[None, :], mask=m,
                other=0.0).to(tl.float32)
    row, has = _slot_child(table_ptr, nodes, ok, s, N)
    cc = tl.load(c_ptr + row[:, None] * H + cols[None, :], mask=m & has[:, None],
                 other=0.0).to(tl.float32)
    return dct * cc * f * (1.0 - f), f, row, has


@triton.jit
def _one_gate_grad(gates_ptr, c_ptr, dh_ptr, dc_ptr, table_ptr, nodes, ok, cols, m, H, GH,
                   q, N):
    # the gradient of gate q alone (i, o, u, then slot q-3's f) at [rows, cols], fp32: the
    # children's dL/dh is summed gate by gate, so one gate's chunk is live at a time
    # (all of them at once spilled on sm_80 and sm_90)
    dct, gi, go_, gu = _nary_gate_grads(gates_ptr, c_ptr, dh_ptr, dc_ptr, nodes, cols, m, H,
                                        GH)
    if q == 0:
        g = gi
    elif q == 1:
        g = go_
    elif q == 2:
        g = gu
    else:
        g, _, _, _ = _slot_forget_grad(gates_ptr, c_ptr, table_ptr, nodes, ok, cols, m, dct,
                                       q - 3, H, GH, N)
    return g


@arg_types(
    data="c_ptr gates_ptr w_ptr grad_hh_ptr grad_x_ptr",
    fp32="dh_ptr dc_ptr",
    i64="table_ptr order_ptr",
    int="a0 a1 H N")
@triton.jit(do_not_specialize=["a0", "a1", "N"])
def nary_bwd_kernel(c_ptr, gates_ptr, w_ptr, table_ptr, order_ptr, dh_ptr, dc_ptr, grad_hh_ptr,
                    grad_x_ptr, a0, a1, H, N, PRECISION: tl.constexpr,
                    BB: tl.constexpr, U: tl.constexpr, BK: tl.constexpr):
    # w = W_hh [(3+N)H, NH]; dh, dc [n, H] fp32, complete for this level, gain the
    # children's parts here. -> grad_hh [n, (3+N)H] (dL/d (W_hh hcat)), grad_x [n, 4H]
    nodes, ok, offs_u, u_ok, m2 = _tile(order_ptr, a0, a1, H, BB, U)
    dt = c_ptr.dtype.element_ty
    GH = (3 + N) * H
    NH = N * H
    dct, gi, go_, gu = _nary_gate_grads(gates_ptr, c_ptr, dh_ptr, dc_ptr, nodes, offs_u, m2,
                                        H, GH)
    ro = nodes[:, None] * GH + offs_u[None, :]
    xo = nodes[:, None] * (4 * H) + offs_u[None, :]
    tl.store(grad_hh_ptr + ro, gi.to(dt), mask=m2)
    tl.store(grad_hh_ptr + ro + H, go_.to(dt), mask=m2)
    tl.store(grad_hh_ptr + ro + 2 * H, gu.to(dt), mask=m2)
    tl.store(grad_x_ptr + xo, gi.to(dt), mask=m2)
    tl.store(grad_x_ptr + xo + H, go_.to(dt), mask=m2)
    tl.store(grad_x_ptr + xo + 2 * H, gu.to(dt), mask=m2)
    gfs = tl.zeros((BB, U), tl.float32)
    for s in range(N):
        gf, f, row, has = _slot_forget_grad(gates_ptr, c_ptr, table_ptr, nodes, ok, offs_u, m2,
                                            dct, s, H, GH, N)
        gfs += gf
        tl.store(grad_hh_ptr + ro + (3 + s) * H, gf.to(dt), mask=m2)
        co = row[:, None] * H + offs_u[None, :]
        mc = has[:, None] & u_ok[None, :]
        tl.store(dc_ptr + co, tl.load(dc_ptr + co, mask=mc, other=0.0) + dct * f, mask=mc)
        # this slot's child's dL/dh, these units: sum over every gate q and all H of
        # g_q @ W_hh[qH:(q+1)H, sH + units], g recomputed chunk by chunk from own rows
        acc = tl.zeros((BB, U), tl.float32)
        for q in range(3 + N):
            for k0 in range(0, H, BK):
                ks = k0 + tl.arange(0, BK)
                mk = ok[:, None] & (ks < H)[None, :]
                gk = _one_gate_grad(gates_ptr, c_ptr, dh_ptr, dc_ptr, table_ptr, nodes, ok, ks,
                                    mk, H, GH, q, N)
                acc += tl.dot(gk.to(dt), _wtile(w_ptr, q * H * NH + s * H, NH, k0, H, offs_u,
                                                u_ok, BK), input_precision=PRECISION)
        tl.store(dh_ptr + co, tl.load(dh_ptr + co, mask=mc, other=0.0) + acc, mask=mc)
    tl.store(grad_x_ptr + xo + 3 * H, gfs.to(dt), mask=m2)


def nary_tree_lstm_fwd(*, xproj, w_hh, forest):
    """Same contract as the Numba launcher: -> (h, c [n, H], gates [n, (3+N)H])."""
    n, H = xproj.shape[0], xproj.shape[1] // 4
    N = w_hh.shape[1] // H
    h, c = new_output((n, H), xproj), new_output((n, H), xproj)
    gates = new_output((n, w_hh.shape[0]), xproj)
    table, order = _child_table(forest, N, xproj.device)
    xproj, w_t = xproj.contiguous(), w_hh.t().contiguous()
    for a0, a1 in _levels(forest):
        nary_fwd_kernel[(plan.cdiv(H, U), plan.cdiv(a1 - a0, BB))](
            xproj, w_t, table, order, h, c, gates, a0, a1, H, N,
            PRECISION=plan.precision(xproj.dtype), BB=BB, U=U, BK=_bk(xproj.dtype),
            **OPTIONS)
    return h, c, gates


def nary_tree_lstm_bwd(*, grad_h, grad_c, c, gates, w_hh, forest):
    """-> (grad_hh [n, (3+N)H], grad_x [n, 4H])."""
    n, H = c.shape
    N = w_hh.shape[1] // H
    grad_hh, grad_x = new_output((n, w_hh.shape[0]), c), new_output((n, 4 * H), c)
    dh, dc = grad_h.float(), grad_c.float()       # the Function's own copies, fp32
    table, order = _child_table(forest, N, c.device)
    w = w_hh.contiguous()
    for a0, a1 in _levels(forest, reverse=True):
        nary_bwd_kernel[(plan.cdiv(H, U), plan.cdiv(a1 - a0, BB))](
            c, gates, w, table, order, dh, dc, grad_hh, grad_x, a0, a1, H, N,
            PRECISION=plan.precision(c.dtype), BB=BB, U=U, BK=_bk(c.dtype),
            **OPTIONS)
    return grad_hh, grad_x


# --------------------------------------------------------- Child-Sum Tree-LSTM
@triton.jit
def _links(child_ptr_ptr, nodes, ok):
    # each node's first child link and number of children, [BB] each (0 on padding rows)
    start = tl.load(child_ptr_ptr + nodes, mask=ok, other=0)
    return start, tl.load(child_ptr_ptr + nodes + 1, mask=ok, other=0) - start


@triton.jit
def _child(child_idx_ptr, start, deg, p):
    # the p-th child link of each node: (edge id, read only under the mask; child; exists)
    e = start + p
    # clamped to a valid link without a mask (the loop runs only where a link exists): a
    # masked or selected index here did not compile under Triton 3.6 (a layout-conversion
    # pass failed on the launch's specialisation, sm_80 and sm_90)
    safe = tl.maximum(tl.minimum(e, start + deg - 1), 0)
    return e, tl.load(child_idx_ptr + safe), p < deg


@arg_types(
    data="xproj_ptr w_t_ptr h_ptr c_ptr gates_ptr fgates_ptr",
    i64="child_ptr_ptr child_idx_ptr order_ptr",
    int="a0 a1 maxdeg H")
@triton.jit(do_not_specialize=["a0", "a1", "maxdeg"])
def child_sum_fwd_kernel(xproj_ptr, w_t_ptr, child_ptr_ptr, child_idx_ptr, order_ptr, h_ptr,
                         c_ptr, gates_ptr, fgates_ptr, a0, a1, maxdeg, H,
                         PRECISION: tl.constexpr, BB: tl.constexpr, U: tl.constexpr,
                         BK: tl.constexpr):
    # xproj [n, 4H] (i, o, u, f); w_t = W_hh^T [H, 4H]; maxdeg: the most children of a node
    # of this level. -> h, c [n, H], gates [n, 3H] (i, o, u), fgates [E, H] per child link
    nodes, ok, offs_u, u_ok, m2 = _tile(order_ptr, a0, a1, H, BB, U)
    start, deg = _links(child_ptr_ptr, nodes, ok)
    dt = h_ptr.dtype.element_ty
    xo = nodes[:, None] * (4 * H) + offs_u[None, :]
    ai = tl.load(xproj_ptr + xo, mask=m2, other=0.0).to(tl.float32)
    ao = tl.load(xproj_ptr + xo + H, mask=m2, other=0.0).to(tl.float32)
    au = tl.load(xproj_ptr + xo + 2 * H, mask=m2, other=0.0).to(tl.float32)
    for k0 in range(0, H, BK):                   # (sum of the children's h) @ U_iou^T
        ks = k0 + tl.arange(0, BK)
        hs = tl.zeros((BB, BK), tl.float32)
        for p in range(maxdeg):
            _, kid, v = _child(child_idx_ptr, start, deg, p)
            hs += tl.load(h_ptr + kid[:, None] * H + ks[None, :],
                          mask=v[:, None] & (ks < H)[None, :], other=0.0).to(tl.float32)
        hs = hs.to(dt)
        ai += tl.dot(hs, _wtile(w_t_ptr, 0, 4 * H, k0, H, offs_u, u_ok, BK),
                     input_precision=PRECISION)
        ao += tl.dot(hs, _wtile(w_t_ptr, H, 4 * H, k0, H, offs_u, u_ok, BK),
                     input_precision=PRECISION)
        au += tl.dot(hs, _wtile(w_t_ptr, 2 * H, 4 * H, k0, H, offs_u, u_ok, BK),
                     input_precision=PRECISION)
    # x_f only now: live across the loop above it spilled the bf16 build on sm_90
    xf = tl.load(xproj_ptr + xo + 3 * H, mask=m2, other=0.0).to(tl.float32)
    fc = tl.zeros((BB, U), tl.float32)
    for p in range(maxdeg):                      # a forget gate per child link
        e, kid, v = _child(child_idx_ptr, start, deg, p)
        f = tl.sigmoid(xf + _product(h_ptr, H, 0, H, kid, v, w_t_ptr, 3 * H, 4 * H, offs_u,
                                     u_ok, 0, dt, PRECISION, False, BB, U, BK))
        mv = v[:, None] & u_ok[None, :]
        tl.store(fgates_ptr + e[:, None] * H + offs_u[None, :], f.to(dt), mask=mv)
        fc += f * tl.load(c_ptr + kid[:, None] * H + offs_u[None, :], mask=mv,
                          other=0.0).to(tl.float32)
    i, o, u = tl.sigmoid(ai), tl.sigmoid(ao), tanh(au)
    c = i * u + fc
    go = nodes[:, None] * (3 * H) + offs_u[None, :]
    ho = nodes[:, None] * H + offs_u[None, :]
    tl.store(gates_ptr + go, i.to(dt), mask=m2)
    tl.store(gates_ptr + go + H, o.to(dt), mask=m2)
    tl.store(gates_ptr + go + 2 * H, u.to(dt), mask=m2)
    tl.store(c_ptr + ho, c.to(dt), mask=m2)
    tl.store(h_ptr + ho, (o * tanh(c)).to(dt), mask=m2)


@arg_types(
    data="c_ptr gates_ptr fgates_ptr w_ptr grad_iou_ptr grad_f_ptr grad_x_ptr",
    fp32="dh_ptr dc_ptr",
    i64="child_ptr_ptr child_idx_ptr order_ptr",
    int="a0 a1 maxdeg H")
@triton.jit(do_not_specialize=["a0", "a1", "maxdeg"])
def child_sum_bwd_kernel(c_ptr, gates_ptr, fgates_ptr, w_ptr, child_ptr_ptr, child_idx_ptr,
                         order_ptr, dh_ptr, dc_ptr, grad_iou_ptr, grad_f_ptr, grad_x_ptr, a0,
                         a1, maxdeg, H, PRECISION: tl.constexpr, BB: tl.constexpr,
                         U: tl.constexpr, BK: tl.constexpr):
    # w = W_hh [4H, H]; dh, dc [n, H] fp32 as in nary_bwd_kernel. -> grad_iou [n, 3H],
    # grad_f [E, H] per child link, grad_x [n, 4H]
    nodes, ok, offs_u, u_ok, m2 = _tile(order_ptr, a0, a1, H, BB, U)
    start, deg = _links(child_ptr_ptr, nodes, ok)
    dt = c_ptr.dtype.element_ty
    dct, gi, go_, gu = _nary_gate_grads(gates_ptr, c_ptr, dh_ptr, dc_ptr, nodes, offs_u, m2,
                                        H, 3 * H)
    ro = nodes[:, None] * (3 * H) + offs_u[None, :]
    xo = nodes[:, None] * (4 * H) + offs_u[None, :]
    tl.store(grad_iou_ptr + ro, gi.to(dt), mask=m2)
    tl.store(grad_iou_ptr + ro + H, go_.to(dt), mask=m2)
    tl.store(grad_iou_ptr + ro + 2 * H, gu.to(dt), mask=m2)
    tl.store(grad_x_ptr + xo, gi.to(dt), mask=m2)
    tl.store(grad_x_ptr + xo + H, go_.to(dt), mask=m2)
    tl.store(grad_x_ptr + xo + 2 * H, gu.to(dt), mask=m2)
    shared = tl.zeros((BB, U), tl.float32)       # dL/d(sum of the children's h), these units
    for k0 in range(0, H, BK):
        ks = k0 + tl.arange(0, BK)
        mk = ok[:, None] & (ks < H)[None, :]
        _, gik, gok, guk = _nary_gate_grads(gates_ptr, c_ptr, dh_ptr, dc_ptr, nodes, ks, mk,
                                            H, 3 * H)
        shared += tl.dot(gik.to(dt), _wtile(w_ptr, 0, H, k0, H, offs_u, u_ok, BK),
                         input_precision=PRECISION)
        shared += tl.dot(gok.to(dt), _wtile(w_ptr, H * H, H, k0, H, offs_u, u_ok, BK),
                         input_precision=PRECISION)
        shared += tl.dot(guk.to(dt), _wtile(w_ptr, 2 * H * H, H, k0, H, offs_u, u_ok, BK),
                         input_precision=PRECISION)
    gfs = tl.zeros((BB, U), tl.float32)
    for p in range(maxdeg):
        e, kid, v = _child(child_idx_ptr, start, deg, p)
        mv = v[:, None] & u_ok[None, :]
        fo = e[:, None] * H + offs_u[None, :]
        co = kid[:, None] * H + offs_u[None, :]
        f = tl.load(fgates_ptr + fo, mask=mv, other=0.0).to(tl.float32)
        cc = tl.load(c_ptr + co, mask=mv, other=0.0).to(tl.float32)
        gf = tl.where(mv, dct * cc * f * (1.0 - f), 0.0)
        gfs += gf
        tl.store(grad_f_ptr + fo, gf.to(dt), mask=mv)
        tl.store(dc_ptr + co, tl.load(dc_ptr + co, mask=mv, other=0.0) + dct * f, mask=mv)
        acc = shared                             # + this link's own f path: g_f @ U_f
        for k0 in range(0, H, BK):
            ks = k0 + tl.arange(0, BK)
            mk = v[:, None] & (ks < H)[None, :]
            dk, _, _, _ = _nary_gate_grads(gates_ptr, c_ptr, dh_ptr, dc_ptr, nodes, ks, mk, H,
                                           3 * H)
            fk = tl.load(fgates_ptr + e[:, None] * H + ks[None, :], mask=mk,
                         other=0.0).to(tl.float32)
            ck = tl.load(c_ptr + kid[:, None] * H + ks[None, :], mask=mk,
                         other=0.0).to(tl.float32)
            acc += tl.dot((dk * ck * fk * (1.0 - fk)).to(dt),
                          _wtile(w_ptr, 3 * H * H, H, k0, H, offs_u, u_ok, BK),
                          input_precision=PRECISION)
        tl.store(dh_ptr + co, tl.load(dh_ptr + co, mask=mv, other=0.0) + acc, mask=mv)
    tl.store(grad_x_ptr + xo + 3 * H, gfs.to(dt), mask=m2)


def _child_links(forest, device):
    """(child_ptr, child_idx, order) on the device and each level's most children, once."""
    key = ("links", str(device))
    if key not in forest:
        ptr, order = forest["child_ptr"], forest["order"]
        deg = ptr.diff()[order]
        lp = forest["level_ptr"].tolist()
        most = [int(deg[a:b].max()) if b > a else 0 for a, b in zip(lp[:-1], lp[1:])]
        forest[key] = (ptr.to(device), forest["child_idx"].to(device), order.to(device), most)
    return forest[key]


def child_sum_tree_lstm_fwd(*, xproj, w_hh, forest):
    """Same contract as the Numba launcher: -> (h, c [n, H], gates [n, 3H], fgates [E, H])."""
    n, H = xproj.shape[0], xproj.shape[1] // 4
    h, c = new_output((n, H), xproj), new_output((n, H), xproj)
    gates = new_output((n, 3 * H), xproj)
    ptr, idx, order, most = _child_links(forest, xproj.device)
    fgates = new_output((len(idx), H), xproj)
    xproj, w_t = xproj.contiguous(), w_hh.t().contiguous()
    for (a0, a1), maxdeg in zip(_levels(forest), most):
        child_sum_fwd_kernel[(plan.cdiv(H, U), plan.cdiv(a1 - a0, BB))](
            xproj, w_t, ptr, idx, order, h, c, gates, fgates, a0, a1, maxdeg, H,
            PRECISION=plan.precision(xproj.dtype), BB=BB, U=U,
            BK=_bk(xproj.dtype, child_sum_fwd_kernel),
            **OPTIONS)
    return h, c, gates, fgates


def child_sum_tree_lstm_bwd(*, grad_h, grad_c, c, gates, fgates, w_hh, forest):
    """-> (grad_iou [n, 3H], grad_f [E, H], grad_x [n, 4H])."""
    n, H = c.shape
    grad_iou, grad_f = new_output((n, 3 * H), c), new_output(fgates.shape, c)
    grad_x = new_output((n, 4 * H), c)
    dh, dc = grad_h.float(), grad_c.float()       # the Function's own copies, fp32
    ptr, idx, order, most = _child_links(forest, c.device)
    w = w_hh.contiguous()
    for (a0, a1), maxdeg in reversed(list(zip(_levels(forest), most))):
        child_sum_bwd_kernel[(plan.cdiv(H, U), plan.cdiv(a1 - a0, BB))](
            c, gates, fgates, w, ptr, idx, order, dh, dc, grad_iou, grad_f, grad_x, a0, a1,
            maxdeg, H, PRECISION=plan.precision(c.dtype), BB=BB, U=U,
            BK=_bk(c.dtype, child_sum_bwd_kernel), **OPTIONS)
    return grad_iou, grad_f, grad_x
