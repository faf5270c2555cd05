"""Plain-PyTorch recurrences: the test oracle, the universal fallback, the bench baseline.

Every function here takes the *input projection* of all steps, computed once up
front by the caller (``xproj = x @ W_ih^T + b``), and runs the recurrence one
step at a time with ordinary differentiable torch ops, so autograd gives every
gradient (and double backward). Shapes (time-major):

    xproj   [T, B, G]   G = H (RNN), 3H (GRU), 4H (LSTM)
    h0      [B, P]      P = proj_size for a projected LSTM, else H
    c0      [B, H]      LSTM only
    lengths [B] int64 or None; row b is valid for t < lengths[b]

Per-row lengths: the state of row b stops changing after its last step, and its
outputs past the length are zero (what ``pad_packed_sequence`` gives). ``reverse``
runs each row from its *own* last step down to 0.

What enters ``xproj`` (so the cells below add only the rest):
    RNN:  W_ih x + b_ih + b_hh
    GRU:  W_ih x + b_ih + [b_hr, b_hz, 0]   (b_hn stays inside the r-product)
    LSTM: W_ih x + b_ih + b_hh
"""
import torch


# ---------------------------------------------------------------- cells
def rnn_cell(xp, h, w_hh, nonlinearity):
    pre = xp + h @ w_hh.t()
    return torch.tanh(pre) if nonlinearity == "tanh" else torch.relu(pre)


def gru_cell(xp, h, w_hh, b_hn):
    H = h.shape[-1]
    hp = h @ w_hh.t()
    r = torch.sigmoid(xp[:, :H] + hp[:, :H])
    z = torch.sigmoid(xp[:, H:2 * H] + hp[:, H:2 * H])
    hn = hp[:, 2 * H:] if b_hn is None else hp[:, 2 * H:] + b_hn
    n = torch.tanh(xp[:, 2 * H:] + r * hn)
    return (1 - z) * n + z * h


def lstm_cell(xp, h, c, w_hh, w_hr):
    gates = xp + h @ w_hh.t()
    i, f, g, o = gates.chunk(4, dim=1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    if w_hr is not None:
        h = h @ w_hr.t()
    return h, c


# ------------------------------------------------------------ time loop
def _reverse_rows(x, lengths):
    """Flip every row's valid prefix in time (an involution); padding stays put."""
    T, B = x.shape[:2]
    t = torch.arange(T, device=x.device).unsqueeze(1).expand(T, B)
    lens = lengths.to(x.device).unsqueeze(0)
    idx = torch.where(t < lens, lens - 1 - t, t)
    return x.gather(0, idx.view(T, B, *([1] * (x.dim() - 2))).expand_as(x))


def scan(step, xproj, state, lengths=None, reverse=False):
    """Run ``state = step(xproj[t], state)`` over time; state is a tuple of [B, *].

    The output of a step is ``state[0]``. Returns (out [T, B, P], final state).
    """
    T, B = xproj.shape[:2]
    if lengths is None:
        lengths = torch.full((B,), T, dtype=torch.int64)
    if reverse:
        xproj = _reverse_rows(xproj, lengths)
    valid = torch.arange(T).unsqueeze(1) < lengths.cpu().unsqueeze(0)   # [T, B]
    valid = valid.to(xproj.device)
    outs = []
    for t in range(T):
        new = step(xproj[t], state)
        m = valid[t].unsqueeze(1)
        state = tuple(torch.where(m, n, s) for n, s in zip(new, state))
        outs.append(torch.where(m, new[0], torch.zeros_like(new[0])))
    out = torch.stack(outs) if outs else xproj.new_zeros(0, B, state[0].shape[1])
    if reverse:
        out = _reverse_rows(out, lengths)
    return out, state


# ------------------------------------------------------- layer recurrences
def rnn_layer(xproj, h0, w_hh, lengths=None, reverse=False, nonlinearity="tanh"):
    """-> (out [T, B, H], h_n [B, H])"""
    out, (h,) = scan(lambda xp, s: (rnn_cell(xp, s[0], w_hh, nonlinearity),),
                     xproj, (h0,), lengths, reverse)
    return out, h


def gru_layer(xproj, h0, w_hh, b_hn, lengths=None, reverse=False):
    """-> (out [T, B, H], h_n [B, H]); b_hn [H] or None."""
    out, (h,) = scan(lambda xp, s: (gru_cell(xp, s[0], w_hh, b_hn),),
                     xproj, (h0,), lengths, reverse)
    return out, h


def lstm_layer(xproj, h0, c0, w_hh, w_hr=None, lengths=None, reverse=False):
    """-> (out [T, B, P], h_n [B, P], c_n [B, H]); w_hr [P, H] or None."""
    out, (h, c) = scan(lambda xp, s: lstm_cell(xp, s[0], s[1], w_hh, w_hr),
                       xproj, (h0, c0), lengths, reverse)
    return out, h, c


# ---------------------------------------------------------------- trees
# Per-node recursion over a fastrnn.forest.Forest, one node at a time, children before
# parents: the oracle of the level-batched tree kernels. ``xproj`` [n, G] is the input
# projection of every node (W_ih x + b); gate order i, o, u, f.
def _tree_nodes(forest):
    for j in forest.order.tolist():
        a, b = forest.child_ptr[j], forest.child_ptr[j + 1]
        yield j, forest.child_idx[a:b].tolist(), forest.child_slot[a:b].tolist()


def _slots(states, kids, slots, N, like):
    parts = [like.new_zeros(like.shape[-1])] * N
    for k, s in zip(kids, slots):
        parts[s] = states[k]
    return torch.cat(parts)


def tree_rnn(xproj, forest, w_hh, nonlinearity="tanh"):
    """h_j = f(xproj_j + W_hh [h_{c_1}; ...; h_{c_N}]), a missing child's h zero.
    w_hh [H, N*H] -> h [n, H]."""
    H = xproj.shape[1]
    N = w_hh.shape[1] // H
    f = torch.tanh if nonlinearity == "tanh" else torch.relu
    h = [None] * forest.n
    for j, kids, slots in _tree_nodes(forest):
        h[j] = f(xproj[j] + w_hh @ _slots(h, kids, slots, N, xproj[j]))
    return torch.stack(h)


def nary_tree_lstm(xproj, forest, w_hh):
    """Tai et al. (2015), N-ary: with hcat = [h_{c_1}; ...; h_{c_N}] (missing: zero),
    i, o = sigmoid, u = tanh of xproj_j + U hcat (rows i, o, u), f_l = sigmoid(x_f + U_{f_l}
    hcat) per slot l, c = i u + sum_l f_l c_l, h = o tanh(c). xproj [n, 4H] (i, o, u, f),
    w_hh [(3+N)H, N*H] (rows i, o, u, f_1..f_N) -> (h, c) [n, H] each."""
    H = xproj.shape[1] // 4
    N = w_hh.shape[1] // H
    h, c = [None] * forest.n, [None] * forest.n
    for j, kids, slots in _tree_nodes(forest):
        hcat = _slots(h, kids, slots, N, xproj[j, :H])
        ccat = _slots(c, kids, slots, N, xproj[j, :H]).view(N, H)
        pre = w_hh @ hcat
        x = xproj[j]
        i = torch.sigmoid(x[:H] + pre[:H])
        o = torch.sigmoid(x[H:2 * H] + pre[H:2 * H])
        u = torch.tanh(x[2 * H:3 * H] + pre[2 * H:3 * H])
        f = torch.sigmoid(x[3 * H:] + pre[3 * H:].view(N, H))
        c[j] = i * u + (f * ccat).sum(0)
        h[j] = o * torch.tanh(c[j])
    return torch.stack(h), torch.stack(c)


def child_sum_tree_lstm(xproj, forest, w_hh):
    """Tai et al. (2015), Child-Sum: hs = sum of the children's h; i, o = sigmoid and
    u = tanh of xproj_j + U hs (rows i, o, u); per child k, f_k = sigmoid(x_f + U_f h_k);
    c = i u + sum_k f_k c_k, h = o tanh(c). xproj [n, 4H] (i, o, u, f), w_hh [4H, H]
    -> (h, c) [n, H] each."""
    H = xproj.shape[1] // 4
    h, c = [None] * forest.n, [None] * forest.n
    for j, kids, _ in _tree_nodes(forest):
        x = xproj[j]
        hs = sum((h[k] for k in kids), x.new_zeros(H))
        pre = w_hh[:3 * H] @ hs
        i = torch.sigmoid(x[:H] + pre[:H])
        o = torch.sigmoid(x[H:2 * H] + pre[H:2 * H])
        u = torch.tanh(x[2 * H:3 * H] + pre[2 * H:])
        cj = i * u
        for k in kids:
            cj = cj + torch.sigmoid(x[3 * H:] + w_hh[3 * H:] @ h[k]) * c[k]
        c[j], h[j] = cj, o * torch.tanh(cj)
    return torch.stack(h), torch.stack(c)
