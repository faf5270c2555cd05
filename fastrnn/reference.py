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
