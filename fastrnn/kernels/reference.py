"""The reference backend: the launcher contract (fastrnn/kernels/__init__.py) in plain
PyTorch, on fastrnn.reference's recurrences. The dispatcher runs it like the kernel
backends (through the same autograd Functions); it is also the readable form of what
every kernel computes: the saved tensors, and back-propagation through time written
out step by step (the formulas of kernels/README.md).

Forward launchers are differentiable torch ops, so while torch traces or exports
(fastrnn.backends.recording) fastrnn.functional calls them without a Function and
autograd differentiates them. The backward launchers are checked against autograd of
fastrnn.reference, like the kernels (tests/test_kernels.py).
"""
import torch

from .. import reference as ref
from ..autograd import previous_states

_EMPTY = (0, 0, 0)


def _empty(like):
    return like.new_empty(_EMPTY)


# ------------------------------------------------------------- sequences
def _bptt(step_back, seqs, carry, lengths, reverse, grad_states=None):
    """Back-propagation through time, last step first, in each row's own order.

    ``seqs``: [T, B, *] tensors in time order, grad_out first. ``carry``: the gradients
    flowing into the final states (dL/dh first). ``step_back(d, *carry[1:], *seqs[1:] at
    t)`` with d = grad_out[t] + carry[0] = dL/dh_t -> (per-step results, new carry). Rows
    past their length pass their carry through, and their results are zero. Returns
    (each result stacked [T, B, *] in time order, final carry); dL/dh_t into
    ``grad_states`` if given."""
    seqs = [ref.own_order(s, lengths, reverse) for s in seqs]
    T, B = seqs[0].shape[:2]
    valid = ref.valid_steps(T, B, lengths, seqs[0].device)
    steps, ds = [None] * T, [None] * T
    for t in range(T - 1, -1, -1):
        m = valid[t].unsqueeze(1)
        d = seqs[0][t] + carry[0]
        res, new = step_back(d, *carry[1:], *(s[t] for s in seqs[1:]))
        steps[t] = [torch.where(m, r, torch.zeros_like(r)) for r in res]
        ds[t] = torch.where(m, d, torch.zeros_like(d))
        carry = [torch.where(m, n, c) for n, c in zip(new, carry)]
    if grad_states is not None:
        grad_states.copy_(ref.own_order(torch.stack(ds), lengths, reverse))
    return [ref.own_order(torch.stack(r), lengths, reverse) for r in zip(*steps)], carry


def rnn_fwd(*, xproj, h0, w_hh, lengths=None, reverse=False, nonlinearity="tanh", save=True):
    out, (h,) = ref.scan(lambda xp, s: (ref.rnn_cell(xp, s[0], w_hh, nonlinearity),),
                         xproj, (h0,), lengths, reverse)
    return out, h


def rnn_bwd(*, grad_out, grad_hn, out, w_hh, lengths=None, reverse=False,
            nonlinearity="tanh", grad_states=None):
    def back(d, h):
        g = d * (1 - h * h) if nonlinearity == "tanh" else d * (h > 0)
        return (g,), (g @ w_hh,)
    (grad_pre,), (grad_h0,) = _bptt(back, [grad_out, out], [grad_hn], lengths, reverse,
                                    grad_states)
    return grad_pre, grad_h0


def gru_fwd(*, xproj, h0, w_hh, b_hn=None, lengths=None, reverse=False, save=True):
    out, (h,), (gates,) = ref.scan(lambda xp, s: ref.gru_parts(xp, s[0], w_hh, b_hn),
                                   xproj, (h0,), lengths, reverse, keep=True)
    return out, h, gates if save else _empty(xproj)


def gru_bwd(*, grad_out, grad_hn, out, h0, gates, w_hh, lengths=None, reverse=False,
            grad_states=None):
    def back(d, hprev, g):
        r, z, n, a = g.chunk(4, dim=1)
        dn = d * (1 - z) * (1 - n * n)
        dz = d * (hprev - n) * z * (1 - z)
        dr = dn * a * r * (1 - r)
        ghp = torch.cat([dr, dz, dn * r], 1)
        return (torch.cat([dr, dz, dn], 1), ghp), (ghp @ w_hh + d * z,)
    hprev = previous_states(out, h0, lengths, reverse)
    (grad_x, grad_hp), (grad_h0,) = _bptt(back, [grad_out, hprev, gates], [grad_hn],
                                          lengths, reverse, grad_states)
    return grad_x, grad_hp, grad_h0


def lstm_fwd(*, xproj, h0, c0, w_hh, w_hr=None, lengths=None, reverse=False, save=True):
    def step(xp, s):
        h, c, gates, m = ref.lstm_parts(xp, s[0], s[1], w_hh, w_hr)
        return h, c, gates, c, m                       # keeps gates, cells, mids
    out, (h, c), (gates, cells, mids) = ref.scan(step, xproj, (h0, c0), lengths, reverse,
                                                 keep=True)
    if not save:
        return out, h, c, _empty(xproj), _empty(xproj), _empty(xproj)
    return out, h, c, gates, cells, mids if w_hr is not None else _empty(xproj)


def lstm_bwd(*, grad_out, grad_hn, grad_cn, c0, gates, cells, w_hh, w_hr=None, lengths=None,
             reverse=False, grad_states=None):
    def back(d, dc, g, c, cprev):
        dm = d if w_hr is None else d @ w_hr
        i, f, gg, o = g.chunk(4, dim=1)
        tc = torch.tanh(c)
        dc = dc + dm * o * (1 - tc * tc)
        da = torch.cat([dc * gg * i * (1 - i), dc * cprev * f * (1 - f), dc * i * (1 - gg * gg),
                        dm * tc * o * (1 - o)], 1)
        return (da, d), (da @ w_hh, dc * f)
    cprev = previous_states(cells, c0, lengths, reverse)
    (grad_pre, grad_h), (grad_h0, grad_c0) = _bptt(
        back, [grad_out, gates, cells, cprev], [grad_hn, grad_cn], lengths, reverse, grad_states)
    return grad_pre, grad_h if w_hr is not None else _empty(grad_out), grad_h0, grad_c0


def _input(x, w_ih, b_ih, b_hh):
    # a step's input projection; b_ih [G] or [B, G]
    xp = x @ w_ih.t()
    return xp + (b_ih if b_ih is not None else 0) + (b_hh if b_hh is not None else 0)


def rnn_step(*, x, h, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity="tanh"):
    return ref.rnn_cell(_input(x, w_ih, b_ih, b_hh), h, w_hh, nonlinearity)


def gru_step(*, x, h, w_ih, w_hh, b_ih=None, b_hh=None):
    H = h.shape[1]
    inside = None if b_hh is None else torch.cat([b_hh[:2 * H], b_hh.new_zeros(H)])
    return ref.gru_cell(_input(x, w_ih, b_ih, inside), h, w_hh,
                        None if b_hh is None else b_hh[2 * H:])


def lstm_step(*, x, h, c, w_ih, w_hh, b_ih=None, b_hh=None, w_hr=None):
    return ref.lstm_cell(_input(x, w_ih, b_ih, b_hh), h, c, w_hh, w_hr)


# ------------------------------------------------------------------ trees
# Back-propagation through structure: parents before children (the forward order
# reversed); a node's dL/dh (dL/dc) is complete when it is reached.
def _top_down(forest):
    return reversed(list(ref.tree_nodes(forest)))


def tree_rnn_fwd(*, xproj, w_hh, forest, nonlinearity="tanh"):
    return ref.tree_rnn(xproj, forest, w_hh, nonlinearity)


def tree_rnn_bwd(*, grad_h, h, w_hh, forest, nonlinearity="tanh"):
    H = h.shape[1]
    dh, grad_pre = grad_h, torch.zeros_like(h)          # the Function's own copy
    for j, kids, slot, _ in _top_down(forest):
        y = h[j]
        grad_pre[j] = dh[j] * (1 - y * y) if nonlinearity == "tanh" else dh[j] * (y > 0)
        back = grad_pre[j] @ w_hh                      # [N*H]: the children's part
        for k, s in zip(kids, slot):
            dh[k] += back[s * H:(s + 1) * H]
    return grad_pre


def nary_tree_lstm_fwd(*, xproj, w_hh, forest):
    return ref.nary_tree_lstm_parts(xproj, forest, w_hh)


def nary_tree_lstm_bwd(*, grad_h, grad_c, c, gates, w_hh, forest):
    n, H = c.shape
    N = w_hh.shape[1] // H
    dh, dc = grad_h, grad_c                 # the Function's own copies
    grad_hh, grad_x = c.new_zeros(n, w_hh.shape[0]), c.new_zeros(n, 4 * H)
    for j, kids, slot, _ in _top_down(forest):
        i, o, u = gates[j, :H], gates[j, H:2 * H], gates[j, 2 * H:3 * H]
        f = gates[j, 3 * H:].view(N, H)
        ccat = ref.slots(c, kids, slot, N, c[j]).view(N, H)
        tc = torch.tanh(c[j])
        dct = dc[j] + dh[j] * o * (1 - tc * tc)
        iou = [dct * u * i * (1 - i), dh[j] * tc * o * (1 - o), dct * i * (1 - u * u)]
        gf = dct * ccat * f * (1 - f)                  # [N, H]: per slot
        grad_hh[j] = torch.cat(iou + [gf.reshape(-1)])
        grad_x[j] = torch.cat(iou + [gf.sum(0)])
        back = grad_hh[j] @ w_hh                       # [N*H]
        for k, s in zip(kids, slot):
            dh[k] += back[s * H:(s + 1) * H]
            dc[k] += dct * f[s]
    return grad_hh, grad_x


def child_sum_tree_lstm_fwd(*, xproj, w_hh, forest):
    return ref.child_sum_tree_lstm_parts(xproj, forest, w_hh)


def child_sum_tree_lstm_bwd(*, grad_h, grad_c, c, gates, fgates, w_hh, forest):
    n, H = c.shape
    dh, dc = grad_h, grad_c                 # the Function's own copies
    grad_x, grad_f = c.new_zeros(n, 4 * H), torch.zeros_like(fgates)
    for j, kids, _, links in _top_down(forest):
        i, o, u = gates[j, :H], gates[j, H:2 * H], gates[j, 2 * H:]
        tc = torch.tanh(c[j])
        dct = dc[j] + dh[j] * o * (1 - tc * tc)
        grad_x[j, :3 * H] = torch.cat([dct * u * i * (1 - i), dh[j] * tc * o * (1 - o),
                                       dct * i * (1 - u * u)])
        back = grad_x[j, :3 * H] @ w_hh[:3 * H]        # dL/d hs, shared by the children
        for k, e in zip(kids, links):
            f = fgates[e]
            grad_f[e] = dct * c[k] * f * (1 - f)
            grad_x[j, 3 * H:] += grad_f[e]
            dc[k] += dct * f
            dh[k] += back + grad_f[e] @ w_hh[3 * H:]
    return grad_x[:, :3 * H], grad_f, grad_x
