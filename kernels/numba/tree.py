"""Level-batched tree kernels (TreeRNN, N-ary and Child-Sum Tree-LSTM), forward and
back-propagation through structure, each ONE call over the whole forest.

Dimension legend: n nodes (every tree of the batch), E child links, H hidden, N arity
(child slots of an N-ary node), NH = N*H, G gates. The schedule comes from
fastrnn.forest.Forest: ``order`` lists the nodes by height, level l is
order[level_ptr[l]:level_ptr[l+1]], node j's children are child_idx[child_ptr[j]:
child_ptr[j+1]] (edge ids) in slots child_slot[...].

Forward goes up one level at a time: a level's nodes are split into row chunks across
threads, each chunk gathers its nodes' children and does ONE product with the recurrent
weight for all of them (``gemm_nt``), then the gates. Backward comes down one level at a
time: a node's dL/dh (and dL/dc) is complete when its level starts, since its only
parent sits on a higher level and was done before; a chunk forms its gate gradients,
one product sends them back to the children, and each child's gradient is written by
its one parent's thread only (no atomics, deterministic). The Child-Sum kernels do a
chunk in blocks of BLOCK nodes (gather, products, gates per block, all in cache
together). Weight gradients are GEMMs over all nodes outside (fastrnn/autograd.py). The
tree Functions pass the forest renumbered by level (so ``order`` is 0..n-1 and a level's
rows are one block), but any numbering works.
"""
import numpy as np
from numba import njit, prange

from .. import new_output
from ._common import KERNEL, ROW, as_numpy, copy_row, num_threads
from ._gemm import gemm_nt
from .activations import sigmoid, tanh

PARALLEL_WORK = 1 << 16     # a level's rows x weight size above which its rows are split
BLOCK = 32                  # nodes per block of the Child-Sum kernels' gather, products, gates


@njit(cache=True)
def _chunks(level_ptr, lev, work, threads):
    # how many row chunks (threads) level lev is split into
    m = level_ptr[lev + 1] - level_ptr[lev]
    return min(m, threads) if m * work >= PARALLEL_WORK else 1


@njit(cache=True)
def _rows(level_ptr, lev, q, nch):
    # chunk q of nch of level lev: positions [r0, r1) of ``order``
    a0, a1 = level_ptr[lev], level_ptr[lev + 1]
    return a0 + q * (a1 - a0) // nch, a0 + (q + 1) * (a1 - a0) // nch


@njit(**ROW)
def _add_row(src, dst):
    # dst += src as a loop (an array += compiles Numba's shape-error message with it)
    for k in range(dst.shape[0]):
        dst[k] += src[k]


@njit(cache=True)
def _scatter(back, order, r0, r1, child_ptr, child_idx, child_slot, H, dst):
    # dst[child] += its slot's part of its parent's row of back [r1 - r0, N*H]; each child
    # has one parent, so a chunk writes only its own nodes' children
    for r in range(r1 - r0):
        j = order[r0 + r]
        for e in range(child_ptr[j], child_ptr[j + 1]):
            s = child_slot[e] * H
            _add_row(back[r, s:s + H], dst[child_idx[e]])


@njit(cache=True)
def _gather(states, order, r0, r1, child_ptr, child_idx, child_slot, H, buf):
    # buf [r1 - r0, N*H] = each node's children's rows of states in their slots, else 0
    buf[:] = 0.0
    for r in range(r1 - r0):
        j = order[r0 + r]
        for e in range(child_ptr[j], child_ptr[j + 1]):
            s = child_slot[e] * H
            copy_row(buf[r, s:s + H], states[child_idx[e]])


@njit(cache=True)
def _child_product(states, w, order, r0, r1, child_ptr, child_idx, child_slot, H, pre):
    # pre [r1 - r0, M] = [children's rows of states in their slots] @ w^T, w [M, N*H]:
    # one product for all of the chunk's nodes
    buf = np.empty((r1 - r0, w.shape[1]), states.dtype)
    _gather(states, order, r0, r1, child_ptr, child_idx, child_slot, H, buf)
    gemm_nt(buf, w, pre, r1 - r0)


# ------------------------------------------------------------------ TreeRNN
@njit(**KERNEL)
def tree_rnn_fwd_kernel(xproj, w_hh, order, level_ptr, child_ptr, child_idx, child_slot,
                        relu, threads, h):
    # xproj [n, H], w_hh [H, NH] -> h [n, H]
    n, H = h.shape
    NH = w_hh.shape[1]
    zero = h.dtype.type(0)
    for lev in range(len(level_ptr) - 1):
        nch = _chunks(level_ptr, lev, NH * H, threads)
        for q in prange(nch):
            r0, r1 = _rows(level_ptr, lev, q, nch)
            pre = np.zeros((r1 - r0, H), h.dtype)
            if lev > 0:                              # leaves (level 0) have no children
                _child_product(h, w_hh, order, r0, r1, child_ptr, child_idx, child_slot, H,
                               pre)
            for r in range(r1 - r0):
                j = order[r0 + r]
                for k in range(H):
                    v = xproj[j, k] + pre[r, k]
                    h[j, k] = max(v, zero) if relu else tanh(v)


@njit(**KERNEL)
def tree_rnn_bwd_kernel(h, w_hh_t, order, level_ptr, child_ptr, child_idx, child_slot, relu,
                        threads, dh, grad_pre):
    # dh [n, H] holds dL/dh from outside on entry and gains each parent's part on the way
    # down; w_hh_t = W_hh^T [NH, H]; -> grad_pre [n, H] = dL/d xproj
    n, H = h.shape
    NH = w_hh_t.shape[0]
    zero, one = h.dtype.type(0), h.dtype.type(1)
    for lev in range(len(level_ptr) - 2, -1, -1):
        nch = _chunks(level_ptr, lev, NH * H, threads)
        for q in prange(nch):
            r0, r1 = _rows(level_ptr, lev, q, nch)
            g = np.empty((r1 - r0, H), h.dtype)
            for r in range(r1 - r0):
                j = order[r0 + r]
                for k in range(H):
                    y = h[j, k]
                    v = dh[j, k] * (one - y * y) if not relu else (dh[j, k] if y > zero else zero)
                    g[r, k] = v
                    grad_pre[j, k] = v
            if lev > 0:
                back = np.empty((r1 - r0, NH), h.dtype)
                gemm_nt(g, w_hh_t, back, r1 - r0)       # g @ W_hh: the children's part
                _scatter(back, order, r0, r1, child_ptr, child_idx, child_slot, H, dh)


# ------------------------------------------------------------ N-ary Tree-LSTM
@njit(**KERNEL)
def nary_fwd_kernel(xproj, w_hh, order, level_ptr, child_ptr, child_idx, child_slot, threads,
                    h, c, gates):
    # xproj [n, 4H] (i, o, u, f), w_hh [(3+N)H, NH] (rows i, o, u, f_1..f_N)
    # -> h, c [n, H]; gates [n, (3+N)H] = i, o, u, f_1..f_N after their activations
    n, H = h.shape
    NH = w_hh.shape[1]
    N = NH // H
    GH = w_hh.shape[0]
    for lev in range(len(level_ptr) - 1):
        nch = _chunks(level_ptr, lev, NH * GH, threads)
        for q in prange(nch):
            r0, r1 = _rows(level_ptr, lev, q, nch)
            pre = np.zeros((r1 - r0, GH), h.dtype)
            cb = np.zeros((r1 - r0, NH), h.dtype)
            if lev > 0:
                _child_product(h, w_hh, order, r0, r1, child_ptr, child_idx, child_slot, H,
                               pre)
                _gather(c, order, r0, r1, child_ptr, child_idx, child_slot, H, cb)
            for r in range(r1 - r0):
                j = order[r0 + r]
                for k in range(H):
                    ig = sigmoid(xproj[j, k] + pre[r, k])
                    og = sigmoid(xproj[j, H + k] + pre[r, H + k])
                    ug = tanh(xproj[j, 2 * H + k] + pre[r, 2 * H + k])
                    cv = ig * ug
                    gates[j, k], gates[j, H + k], gates[j, 2 * H + k] = ig, og, ug
                    for s in range(N):
                        fg = sigmoid(xproj[j, 3 * H + k] + pre[r, (3 + s) * H + k])
                        gates[j, (3 + s) * H + k] = fg
                        cv += fg * cb[r, s * H + k]
                    c[j, k] = cv
                    h[j, k] = og * tanh(cv)


@njit(**KERNEL)
def nary_bwd_kernel(c, gates, w_hh_t, order, level_ptr, child_ptr, child_idx, child_slot,
                    threads, dh, dc, grad_hh, grad_x):
    # dh, dc [n, H]: dL/dh, dL/dc from outside on entry, plus each parent's part on the
    # way down; w_hh_t = W_hh^T [NH, (3+N)H]. -> grad_hh [n, (3+N)H] = dL/d (U hcat) per
    # gate, grad_x [n, 4H] = dL/d xproj (f: summed over the slots)
    n, H = c.shape
    NH, GH = w_hh_t.shape
    N = NH // H
    zero, one = c.dtype.type(0), c.dtype.type(1)
    for lev in range(len(level_ptr) - 2, -1, -1):
        nch = _chunks(level_ptr, lev, NH * GH, threads)
        for q in prange(nch):
            r0, r1 = _rows(level_ptr, lev, q, nch)
            cb = np.zeros((r1 - r0, NH), c.dtype)
            if lev > 0:
                _gather(c, order, r0, r1, child_ptr, child_idx, child_slot, H, cb)
            g = np.empty((r1 - r0, GH), c.dtype)
            dcb = np.zeros((r1 - r0, NH), c.dtype)
            for r in range(r1 - r0):
                j = order[r0 + r]
                for k in range(H):
                    ig, og, ug = gates[j, k], gates[j, H + k], gates[j, 2 * H + k]
                    tc = tanh(c[j, k])
                    dct = dc[j, k] + dh[j, k] * og * (one - tc * tc)
                    gi = dct * ug * ig * (one - ig)
                    go = dh[j, k] * tc * og * (one - og)
                    gu = dct * ig * (one - ug * ug)
                    g[r, k], g[r, H + k], g[r, 2 * H + k] = gi, go, gu
                    grad_x[j, k], grad_x[j, H + k], grad_x[j, 2 * H + k] = gi, go, gu
                    gfs = zero
                    for s in range(N):
                        fg = gates[j, (3 + s) * H + k]
                        gf = dct * cb[r, s * H + k] * fg * (one - fg)
                        g[r, (3 + s) * H + k] = gf
                        gfs += gf
                        dcb[r, s * H + k] = dct * fg
                    grad_x[j, 3 * H + k] = gfs
                copy_row(grad_hh[j], g[r])
            if lev > 0:
                back = np.empty((r1 - r0, NH), c.dtype)
                gemm_nt(g, w_hh_t, back, r1 - r0)
                _scatter(back, order, r0, r1, child_ptr, child_idx, child_slot, H, dh)
                _scatter(dcb, order, r0, r1, child_ptr, child_idx, child_slot, H, dc)


# --------------------------------------------------------- Child-Sum Tree-LSTM
@njit(cache=True)
def _edges(order, r0, r1, child_ptr):
    # the child links of nodes order[r0:r1], in node then slot order
    m = 0
    for r in range(r0, r1):
        m += child_ptr[order[r] + 1] - child_ptr[order[r]]
    out = np.empty(m, np.int64)
    m = 0
    for r in range(r0, r1):
        j = order[r]
        for e in range(child_ptr[j], child_ptr[j + 1]):
            out[m] = e
            m += 1
    return out


@njit(cache=True)
def _consecutive(edges):
    # edges == edges[0], edges[0] + 1, ...
    for x in range(len(edges)):
        if edges[x] != edges[0] + x:
            return False
    return True


@njit(**KERNEL)
def child_sum_fwd_kernel(xproj, w_iou, w_f, order, level_ptr, child_ptr, child_idx, threads,
                         h, c, gates, fgates):
    # xproj [n, 4H] (i, o, u, f); w_iou [3H, H], w_f [H, H] -> h, c [n, H],
    # gates [n, 3H] (i, o, u activated), fgates [E, H] (f of every child link)
    n, H = h.shape
    for lev in range(len(level_ptr) - 1):
        nch = _chunks(level_ptr, lev, 4 * H * H, threads)
        for q in prange(nch):
            r0, r1 = _rows(level_ptr, lev, q, nch)
            for b0 in range(r0, r1, BLOCK):
                _cs_fwd_block(xproj, w_iou, w_f, order, b0, min(r1, b0 + BLOCK), child_ptr,
                              child_idx, h, c, gates, fgates)


@njit(**ROW)
def _cs_fwd_block(xproj, w_iou, w_f, order, r0, r1, child_ptr, child_idx, h, c, gates,
                  fgates):
    # nodes order[r0:r1]: their children's h gathered and summed, the two products, then
    # the gates, all on buffers of one block (they stay in L2 between the steps)
    H = h.shape[1]
    m = r1 - r0
    edges = _edges(order, r0, r1, child_ptr)
    fpre = np.empty((len(edges), H), h.dtype)
    # leaves (a block without links is all leaves) share one zero row of pre
    pre = np.zeros((m if len(edges) else 1, 3 * H), h.dtype)
    if len(edges):
        hs = np.zeros((m, H), h.dtype)
        hk = np.empty((len(edges), H), h.dtype)
        x = 0
        for r in range(m):
            j = order[r0 + r]
            for e in range(child_ptr[j], child_ptr[j + 1]):
                _copy_add(h[child_idx[e]], hk[x], hs[r])
                x += 1
        gemm_nt(hk, w_f, fpre, len(edges))       # U_f h_k for every child link
        gemm_nt(hs, w_iou, pre, m)               # U_iou (sum of the children's h)
    x = 0
    for r in range(m):
        j = order[r0 + r]
        cj = c[j]
        _cs_node_fwd(xproj[j], pre[min(r, len(pre) - 1)], gates[j], cj, H)
        for e in range(child_ptr[j], child_ptr[j + 1]):
            _cs_link_fwd(xproj[j, 3 * H:], fpre[x], c[child_idx[e]], fgates[e], cj)
            x += 1
        _cs_out(gates[j, H:2 * H], cj, h[j])


# The per-row loops of the Child-Sum kernels work on 1-D rows, and their constants
# have the rows' dtype: a float literal (1.0) would turn float32 math into float64
# (half-width vectors plus conversions; 1.4x slower measured on the elementwise pass).
# They are functions of their own, not inlined at Numba's IR level (which re-types the
# whole kernel per inlined copy: seconds of a cold compile); LLVM inlines them.
@njit(**ROW)
def _copy_add(src, dst, acc):
    for k in range(src.shape[0]):
        v = src[k]
        dst[k] = v
        acc[k] += v


@njit(**ROW)
def _cs_node_fwd(xj, pr, gj, cj, H):
    # gates i, o, u of one node from its input part and recurrent part; c = i * u
    for k in range(H):
        ig = sigmoid(xj[k] + pr[k])
        og = sigmoid(xj[H + k] + pr[H + k])
        ug = tanh(xj[2 * H + k] + pr[2 * H + k])
        gj[k], gj[H + k], gj[2 * H + k] = ig, og, ug
        cj[k] = ig * ug


@njit(**ROW)
def _cs_link_fwd(xf, fp, ck, fe, cj):
    # one child link: its forget gate, and its share of the parent's c
    for k in range(fe.shape[0]):
        fg = sigmoid(xf[k] + fp[k])
        fe[k] = fg
        cj[k] += fg * ck[k]


@njit(**ROW)
def _cs_out(og, cj, hj):
    for k in range(hj.shape[0]):
        hj[k] = og[k] * tanh(cj[k])


@njit(**ROW)
def _cs_node_bwd(gj, cj, dcj, dhj, gx, dct, H):
    # gx[:3H] = dL/d (i, o, u) pre-activations; dct = dL/dc of the node
    one = cj.dtype.type(1)
    for k in range(H):
        ig, og, ug = gj[k], gj[H + k], gj[2 * H + k]
        tc = tanh(cj[k])
        d = dcj[k] + dhj[k] * og * (one - tc * tc)
        dct[k] = d
        gx[k] = d * ug * ig * (one - ig)
        gx[H + k] = dhj[k] * tc * og * (one - og)
        gx[2 * H + k] = d * ig * (one - ug * ug)


@njit(**ROW)
def _cs_link_bwd(fe, ck, dct, gfe, gxf, dck):
    # one child link: dL/d its f pre-activation (into gfe and the parent's f input
    # gradient gxf), and the child's dL/dc through f * c_k
    one = ck.dtype.type(1)
    for k in range(fe.shape[0]):
        fg = fe[k]
        v = dct[k] * ck[k] * fg * (one - fg)
        gfe[k] = v
        gxf[k] += v
        dck[k] += dct[k] * fg


@njit(**ROW)
def _add2(a, b, dst):
    for k in range(dst.shape[0]):
        dst[k] += a[k] + b[k]


@njit(**KERNEL)
def child_sum_bwd_kernel(c, gates, fgates, w_iou_t, w_f_t, order, level_ptr, child_ptr,
                         child_idx, threads, dh, dc, grad_f, grad_x):
    # dh, dc as in nary_bwd_kernel; w_iou_t = U_iou^T [H, 3H], w_f_t = U_f^T [H, H]
    # -> grad_f [E, H] = dL/d (U_f h_k) per link, grad_x [n, 4H] = dL/d xproj, whose
    #    first 3H columns are also dL/d (U_iou hs)
    n, H = c.shape
    for lev in range(len(level_ptr) - 2, -1, -1):
        nch = _chunks(level_ptr, lev, 4 * H * H, threads)
        for q in prange(nch):
            r0, r1 = _rows(level_ptr, lev, q, nch)
            for b0 in range(r0, r1, BLOCK):
                _cs_bwd_block(c, gates, fgates, w_iou_t, w_f_t, order, b0,
                              min(r1, b0 + BLOCK), child_ptr, child_idx, dh, dc, grad_f,
                              grad_x)


@njit(**ROW)
def _cs_bwd_block(c, gates, fgates, w_iou_t, w_f_t, order, r0, r1, child_ptr, child_idx, dh,
                  dc, grad_f, grad_x):
    # nodes order[r0:r1]: gate gradients, then the two products back to the children
    H = c.shape[1]
    m = r1 - r0
    g = np.empty((m, 3 * H), c.dtype)
    edges = _edges(order, r0, r1, child_ptr)
    dct = np.empty(H, c.dtype)
    for r in range(m):
        j = order[r0 + r]
        gx = grad_x[j]
        _cs_node_bwd(gates[j], c[j], dc[j], dh[j], gx, dct, H)
        copy_row(g[r], gx[:3 * H])
        gxf = gx[3 * H:]
        gxf[:] = 0.0
        for e in range(child_ptr[j], child_ptr[j + 1]):
            kid = child_idx[e]
            _cs_link_bwd(fgates[e], c[kid], dct, grad_f[e], gxf, dc[kid])
    if len(edges):
        back = np.empty((m, H), c.dtype)
        gemm_nt(g, w_iou_t, back, m)             # dL/d hs, shared by the children
        e0 = edges[0]
        if _consecutive(edges):                  # a forest by level: the links' own rows
            gf = grad_f[e0:e0 + len(edges)]
        else:
            gf = np.empty((len(edges), H), c.dtype)
            for x in range(len(edges)):
                copy_row(gf[x], grad_f[edges[x]])
        bf = np.empty((len(edges), H), c.dtype)
        gemm_nt(gf, w_f_t, bf, len(edges))       # each link's own f path
        x = 0
        for r in range(m):
            j = order[r0 + r]
            for e in range(child_ptr[j], child_ptr[j + 1]):
                _add2(back[r], bf[x], dh[child_idx[e]])
                x += 1


# ----------------------------------------------------------------- launchers
def _schedule(forest):
    return (forest["order"].numpy(), forest["level_ptr"].numpy(), forest["child_ptr"].numpy(),
            forest["child_idx"].numpy())


def tree_rnn_fwd(*, xproj, w_hh, forest, nonlinearity="tanh"):
    """xproj [n, H], w_hh [H, N*H], forest (Forest.tensors()) -> h [n, H]."""
    h = new_output(xproj.shape, xproj)
    order, lp, cp, ci = _schedule(forest)
    tree_rnn_fwd_kernel(as_numpy(xproj), as_numpy(w_hh), order, lp, cp, ci,
                        forest["child_slot"].numpy(), nonlinearity == "relu", num_threads(),
                        h.numpy())
    return h


def tree_rnn_bwd(*, grad_h, h, w_hh, forest, nonlinearity="tanh"):
    """-> grad_pre [n, H] = dL/d xproj (dL/dh of every node: grad_h plus its parent's part)."""
    dh = grad_h                         # the Function's own copy (launcher contract)
    grad_pre = new_output(h.shape, h)
    order, lp, cp, ci = _schedule(forest)
    tree_rnn_bwd_kernel(as_numpy(h), as_numpy(w_hh.t()), order, lp, cp, ci,
                        forest["child_slot"].numpy(), nonlinearity == "relu", num_threads(),
                        dh.numpy(), grad_pre.numpy())
    return grad_pre


def nary_tree_lstm_fwd(*, xproj, w_hh, forest):
    """xproj [n, 4H], w_hh [(3+N)H, N*H] -> (h, c [n, H], gates [n, (3+N)H])."""
    n, H = xproj.shape[0], xproj.shape[1] // 4
    h, c = new_output((n, H), xproj), new_output((n, H), xproj)
    gates = new_output((n, w_hh.shape[0]), xproj)
    order, lp, cp, ci = _schedule(forest)
    nary_fwd_kernel(as_numpy(xproj), as_numpy(w_hh), order, lp, cp, ci,
                    forest["child_slot"].numpy(), num_threads(), h.numpy(), c.numpy(),
                    gates.numpy())
    return h, c, gates


def nary_tree_lstm_bwd(*, grad_h, grad_c, c, gates, w_hh, forest):
    """-> (grad_hh [n, (3+N)H] = dL/d (W_hh hcat), grad_x [n, 4H] = dL/d xproj)."""
    dh, dc = grad_h, grad_c             # the Function's own copies
    grad_hh = new_output((c.shape[0], w_hh.shape[0]), c)
    grad_x = new_output((c.shape[0], 4 * c.shape[1]), c)
    order, lp, cp, ci = _schedule(forest)
    nary_bwd_kernel(as_numpy(c), as_numpy(gates), as_numpy(w_hh.t()), order, lp, cp, ci,
                    forest["child_slot"].numpy(), num_threads(), dh.numpy(), dc.numpy(),
                    grad_hh.numpy(), grad_x.numpy())
    return grad_hh, grad_x


def child_sum_tree_lstm_fwd(*, xproj, w_hh, forest):
    """xproj [n, 4H], w_hh [4H, H] -> (h, c [n, H], gates [n, 3H], fgates [E, H])."""
    n, H = xproj.shape[0], xproj.shape[1] // 4
    h, c = new_output((n, H), xproj), new_output((n, H), xproj)
    gates = new_output((n, 3 * H), xproj)
    fgates = new_output((len(forest["child_idx"]), H), xproj)
    order, lp, cp, ci = _schedule(forest)
    child_sum_fwd_kernel(as_numpy(xproj), as_numpy(w_hh[:3 * H]), as_numpy(w_hh[3 * H:]),
                         order, lp, cp, ci, num_threads(), h.numpy(), c.numpy(), gates.numpy(),
                         fgates.numpy())
    return h, c, gates, fgates


def child_sum_tree_lstm_bwd(*, grad_h, grad_c, c, gates, fgates, w_hh, forest):
    """-> (grad_iou [n, 3H] = dL/d (U_iou hs), grad_f [E, H] = dL/d (U_f h_k) per child
    link, grad_x [n, 4H] = dL/d xproj)."""
    n, H = c.shape
    dh, dc = grad_h, grad_c             # the Function's own copies
    grad_f, grad_x = new_output(fgates.shape, c), new_output((n, 4 * H), c)
    order, lp, cp, ci = _schedule(forest)
    child_sum_bwd_kernel(as_numpy(c), as_numpy(gates), as_numpy(fgates),
                         as_numpy(w_hh[:3 * H].t()), as_numpy(w_hh[3 * H:].t()), order, lp, cp,
                         ci, num_threads(), dh.numpy(), dc.numpy(), grad_f.numpy(), grad_x.numpy())
    return grad_x[:, :3 * H], grad_f, grad_x
