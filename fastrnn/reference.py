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
# Each cell also returns what its kernels save for backward (the launcher contract,
# fastrnn/kernels/__init__.py); the *_cell functions keep the state alone.
def rnn_cell(xp, h, w_hh, nonlinearity):
    pre = xp + h @ w_hh.t()
    return torch.tanh(pre) if nonlinearity == "tanh" else torch.relu(pre)


def gru_parts(xp, h, w_hh, b_hn, keep=True):
    """-> (h', gates [B, 4H] = r, z, n, W_hn h + b_hn; None unless ``keep``)"""
    H = h.shape[-1]
    hp = h @ w_hh.t()
    r = torch.sigmoid(xp[:, :H] + hp[:, :H])
    z = torch.sigmoid(xp[:, H:2 * H] + hp[:, H:2 * H])
    hn = hp[:, 2 * H:] if b_hn is None else hp[:, 2 * H:] + b_hn
    n = torch.tanh(xp[:, 2 * H:] + r * hn)
    return (1 - z) * n + z * h, torch.cat([r, z, n, hn], 1) if keep else None


def gru_cell(xp, h, w_hh, b_hn):
    return gru_parts(xp, h, w_hh, b_hn, keep=False)[0]


def lstm_parts(xp, h, c, w_hh, w_hr, keep=True):
    """-> (h', c', gates [B, 4H] = i, f, g, o after their activations (None unless
    ``keep``), m = o tanh(c'))"""
    i, f, g, o = (xp + h @ w_hh.t()).chunk(4, dim=1)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c = f * c + i * g
    m = o * torch.tanh(c)
    gates = torch.cat([i, f, g, o], 1) if keep else None
    return (m if w_hr is None else m @ w_hr.t()), c, gates, m


def lstm_cell(xp, h, c, w_hh, w_hr):
    return lstm_parts(xp, h, c, w_hh, w_hr, keep=False)[:2]


# ------------------------------------------------------------ time loop
def _reverse_rows(x, lengths):
    """Flip every row's valid prefix in time (an involution); padding stays put."""
    T, B = x.shape[:2]
    t = torch.arange(T, device=x.device).unsqueeze(1).expand(T, B)
    lens = lengths.to(x.device).unsqueeze(0)
    idx = torch.where(t < lens, lens - 1 - t, t)
    return x.gather(0, idx.view(T, B, *([1] * (x.dim() - 2))).expand_as(x))


def own_order(x, lengths, reverse):
    """[T, B, *] in each row's processing order (its own last step first when
    reversed; an involution), or x itself."""
    return _reverse_rows(x, lengths) if reverse and lengths is not None else \
        (x.flip(0) if reverse else x)


def valid_steps(T, B, lengths, device):
    """[T, B] bool: row b runs step t (in its own order) iff t < lengths[b]."""
    if lengths is None:
        return torch.ones(T, B, dtype=torch.bool, device=device)
    return (torch.arange(T).unsqueeze(1) < lengths.cpu().unsqueeze(0)).to(device)


def scan(step, xproj, state, lengths=None, reverse=False, keep=False):
    """Run ``state = step(xproj[t], state)`` over time; state is a tuple of [B, *].

    The output of a step is ``state[0]``. Returns (out [T, B, P], final state); with
    ``keep``, ``step`` returns the new state followed by per-step extras (what a
    kernel saves), and a third item lists each extra stacked over time [T, B, *].
    """
    T, B = xproj.shape[:2]
    xproj = own_order(xproj, lengths, reverse)
    valid = valid_steps(T, B, lengths, xproj.device)
    outs, extras = [], []
    for t in range(T):
        new = step(xproj[t], state)
        extras.append(new[len(state):])
        m = valid[t].unsqueeze(1)
        state = tuple(torch.where(m, n, s) for n, s in zip(new, state))
        outs.append(torch.where(m, new[0], torch.zeros_like(new[0])))
    out = own_order(torch.stack(outs), lengths, reverse)
    if not keep:
        return out, state
    return out, state, [own_order(torch.stack(e), lengths, reverse) for e in zip(*extras)]


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
# Per-node recursion over a fastrnn.forest.Forest (or its ``tensors()`` dict), one node
# at a time, children before parents: the oracle of the level-batched tree kernels.
# ``xproj`` [n, G] is the input projection of every node (W_ih x + b); gate order i, o,
# u, f. The *_parts functions also return what the kernels save for backward.
def tree_nodes(forest):
    """(j, child node ids, their slots, their link ids) per node, children first."""
    get = forest.get if isinstance(forest, dict) else lambda k: getattr(forest, k)
    ptr, idx, slot = get("child_ptr").tolist(), get("child_idx"), get("child_slot")
    for j in get("order").tolist():
        a, b = ptr[j], ptr[j + 1]
        yield j, idx[a:b].tolist(), slot[a:b].tolist(), range(a, b)


def slots(states, kids, slot, N, like):
    """[N*H]: the children's rows of ``states`` in their slots, zero where none."""
    parts = [like.new_zeros(like.shape[-1])] * N
    for k, s in zip(kids, slot):
        parts[s] = states[k]
    return torch.cat(parts)


def tree_rnn(xproj, forest, w_hh, nonlinearity="tanh"):
    """h_j = f(xproj_j + W_hh [h_{c_1}; ...; h_{c_N}]), a missing child's h zero.
    w_hh [H, N*H] -> h [n, H]."""
    H = xproj.shape[1]
    N = w_hh.shape[1] // H
    f = torch.tanh if nonlinearity == "tanh" else torch.relu
    h = [None] * len(xproj)
    for j, kids, slot, _ in tree_nodes(forest):
        h[j] = f(xproj[j] + w_hh @ slots(h, kids, slot, N, xproj[j]))
    return torch.stack(h)


def nary_tree_lstm_parts(xproj, forest, w_hh, keep=True):
    """-> (h, c [n, H], gates [n, (3+N)H] = i, o, u, f_1..f_N after their activations;
    None unless ``keep``)"""
    H = xproj.shape[1] // 4
    N = w_hh.shape[1] // H
    h, c, gates = [None] * len(xproj), [None] * len(xproj), [None] * len(xproj)
    for j, kids, slot, _ in tree_nodes(forest):
        ccat = slots(c, kids, slot, N, xproj[j, :H]).view(N, H)
        pre = w_hh @ slots(h, kids, slot, N, xproj[j, :H])
        x = xproj[j]
        i = torch.sigmoid(x[:H] + pre[:H])
        o = torch.sigmoid(x[H:2 * H] + pre[H:2 * H])
        u = torch.tanh(x[2 * H:3 * H] + pre[2 * H:3 * H])
        f = torch.sigmoid(x[3 * H:] + pre[3 * H:].view(N, H))
        c[j] = i * u + (f * ccat).sum(0)
        h[j] = o * torch.tanh(c[j])
        if keep:
            gates[j] = torch.cat([i, o, u, f.reshape(-1)])
    return torch.stack(h), torch.stack(c), torch.stack(gates) if keep else None


def nary_tree_lstm(xproj, forest, w_hh):
    """Tai et al. (2015), N-ary: with hcat = [h_{c_1}; ...; h_{c_N}] (missing: zero),
    i, o = sigmoid, u = tanh of xproj_j + U hcat (rows i, o, u), f_l = sigmoid(x_f + U_{f_l}
    hcat) per slot l, c = i u + sum_l f_l c_l, h = o tanh(c). xproj [n, 4H] (i, o, u, f),
    w_hh [(3+N)H, N*H] (rows i, o, u, f_1..f_N) -> (h, c) [n, H] each."""
    return nary_tree_lstm_parts(xproj, forest, w_hh, keep=False)[:2]


def child_sum_tree_lstm_parts(xproj, forest, w_hh, keep=True):
    """-> (h, c [n, H], gates [n, 3H] = i, o, u activated, fgates [E, H] = f per link;
    the last two None unless ``keep``)"""
    H = xproj.shape[1] // 4
    n = len(xproj)
    h, c, gates = [None] * n, [None] * n, [None] * n
    fgates = {}                                    # link id -> f of that link
    for j, kids, _, links in tree_nodes(forest):
        x = xproj[j]
        hs = sum((h[k] for k in kids), x.new_zeros(H))
        pre = w_hh[:3 * H] @ hs
        i = torch.sigmoid(x[:H] + pre[:H])
        o = torch.sigmoid(x[H:2 * H] + pre[H:2 * H])
        u = torch.tanh(x[2 * H:3 * H] + pre[2 * H:])
        cj = i * u
        for k, e in zip(kids, links):
            f = torch.sigmoid(x[3 * H:] + w_hh[3 * H:] @ h[k])
            cj = cj + f * c[k]
            if keep:
                fgates[e] = f
        c[j], h[j] = cj, o * torch.tanh(cj)
        if keep:
            gates[j] = torch.cat([i, o, u])
    if not keep:
        return torch.stack(h), torch.stack(c), None, None
    fgates = [fgates[e] for e in range(len(fgates))]
    return (torch.stack(h), torch.stack(c), torch.stack(gates),
            torch.stack(fgates) if fgates else xproj.new_zeros(0, H))


def child_sum_tree_lstm(xproj, forest, w_hh):
    """Tai et al. (2015), Child-Sum: hs = sum of the children's h; i, o = sigmoid and
    u = tanh of xproj_j + U hs (rows i, o, u); per child k, f_k = sigmoid(x_f + U_f h_k);
    c = i u + sum_k f_k c_k, h = o tanh(c). xproj [n, 4H] (i, o, u, f), w_hh [4H, H]
    -> (h, c) [n, H] each."""
    return child_sum_tree_lstm_parts(xproj, forest, w_hh, keep=False)[:2]
