"""The launcher contract every backend in fastrnn.kernels.<backend> implements: numba,
triton and reference (fastrnn/kernels/reference.py, plain PyTorch: the readable form).

A backend module exports, per cell of the table (fastrnn/cells.py), ``<cell>_fwd`` and
``<cell>_bwd`` launchers:
keyword arguments only, torch tensors in and out, no autograd. They allocate the
outputs (with ``new_output``), pick block sizes, and launch one kernel for the
whole sequence. Shapes are time-major; ``lengths`` is None or a [B] int64 tensor
of per-row lengths in [1, T]; ``reverse`` runs each row from its own last step.

RNN (``nonlinearity`` in {"tanh", "relu"}):
    rnn_fwd(xproj [T, B, H], h0 [B, H], w_hh [H, H], lengths, reverse, nonlinearity,
            save=True)
        -> out [T, B, H] (zero past each length), h_n [B, H]
    rnn_bwd(grad_out [T, B, H], grad_hn [B, H], out [T, B, H], w_hh, lengths, reverse,
            nonlinearity)
        -> grad_pre [T, B, H] (dL/d xproj; zero past each length), grad_h0 [B, H]

GRU (gates r, z, n; xproj carries b_ih + [b_hr, b_hz, 0]):
    gru_fwd(xproj [T, B, 3H], h0 [B, H], w_hh [3H, H], b_hn [H] or None, lengths, reverse,
            save=True)
        -> out [T, B, H], h_n [B, H], gates [T, B, 4H] = (r, z, n, W_hn h + b_hn)
    gru_bwd(grad_out, grad_hn, out, h0, gates, w_hh, lengths, reverse)
        -> grad_x [T, B, 3H] (dL/d xproj), grad_hp [T, B, 3H] (dL/d (W_hh h + [0, 0, b_hn])),
           grad_h0 [B, H]

LSTM (gates i, f, g, o; P = proj_size or H; xproj carries b_ih + b_hh):
    lstm_fwd(xproj [T, B, 4H], h0 [B, P], c0 [B, H], w_hh [4H, P], w_hr [P, H] or None,
             lengths, reverse, save=True)
        -> out [T, B, P], h_n, c_n, gates [T, B, 4H], cells [T, B, H], mids [T, B, H]
           (o * tanh(c) before the projection; empty without one)
    save=False (no gradient will be taken): what only backward reads (GRU's gates;
    LSTM's gates, cells, mids) is neither allocated nor written and comes back empty.
    Forward launchers accept lengths of 0 (fastrnn.functional runs inference in time
    chunks): such a row's final state is its initial state and its output is zeros.
    lstm_bwd(grad_out, grad_hn, grad_cn, c0, gates, cells, w_hh, w_hr, lengths, reverse)
        -> grad_pre [T, B, 4H], grad_h [T, B, P] (dL/dh_t, for dW_hr; empty without a
           projection), grad_h0 [B, P], grad_c0 [B, H]

Every ``<cell>_bwd`` also takes an optional output ``grad_states`` (None, or a contiguous
[T, B, P] tensor of the gradients' dtype): the kernel writes dL/dh_t of every step into
it (zero past each length), the gradient it carries back anyway; fastrnn.diagnostics
reads the gradient flow from it without running the sequence again.

Optional, per cell, one step without autograd (the *Cell modules and the layers on a
length-1 input use it when no gradient is needed, e.g. decoding under no_grad;
otherwise a step is a length-1 sequence through the launchers above):
    rnn_step(x [B, I], h [B, H], w_ih, w_hh, b_ih, b_hh, nonlinearity) -> h'
    gru_step(x, h, w_ih, w_hh, b_ih, b_hh) -> h'
    lstm_step(x, h, c, w_ih, w_hh, b_ih, b_hh, w_hr=None) -> (h', c')
    (b_hh [G] or None; b_ih [G], or [B, G]: a per-row input part projected once, as a
    decoder's context, or None)

Tree cells (fastrnn.models.tree; ``forest`` = Forest.tensors(), n nodes, E child links,
N slots, gate order i, o, u, f):
    tree_rnn_fwd(xproj [n, H], w_hh [H, N*H], forest, nonlinearity) -> h [n, H]
    tree_rnn_bwd(grad_h, h, w_hh, forest, nonlinearity) -> grad_pre [n, H] (dL/d xproj)
    nary_tree_lstm_fwd(xproj [n, 4H], w_hh [(3+N)H, N*H], forest)
        -> h, c [n, H], gates [n, (3+N)H] (i, o, u, f_1..f_N activated)
    nary_tree_lstm_bwd(grad_h, grad_c, c, gates, w_hh, forest)
        -> grad_hh [n, (3+N)H] (dL/d W_hh hcat), grad_x [n, 4H]
    child_sum_tree_lstm_fwd(xproj [n, 4H], w_hh [4H, H], forest)
        -> h, c [n, H], gates [n, 3H] (i, o, u activated), fgates [E, H] (f per link)
    child_sum_tree_lstm_bwd(grad_h, grad_c, c, gates, fgates, w_hh, forest)
        -> grad_iou [n, 3H], grad_f [E, H] (dL/d U_f h_k per link), grad_x [n, 4H]
    The tree Functions pass a forest numbered by level (Forest.by_level), and grad_h and
    grad_c as contiguous copies of their own: a backward launcher may use them as its
    dL/dh, dL/dc accumulators (overwrite them) instead of copying them again.

Saved for backward by the Functions: the inputs (xproj only for double backward), the
outputs above and lengths. Weight gradients are one GEMM each outside the kernels:
dW_hh = sum_t grad_pre[t]^T h_{t-1}, dW_hr = sum_t grad_h[t]^T mids[t].
"""
import torch

# Tests set this to fill every new output with NaN, so an element a kernel
# forgets to write fails the comparison instead of passing as stale memory.
POISON = False


def table_launchers(package, path, wrap=None):
    """{name: launcher} for every launcher the cell table (fastrnn/cells.py) names, each
    taken from the public module of the backend ``package`` (folder ``path``) that
    defines it, so a new cell's module is found by its file; ``wrap`` applied to each."""
    import importlib
    import pkgutil
    from ..cells import CELLS
    modules = [importlib.import_module(f"{package}.{m.name}") for m in pkgutil.iter_modules(path)
               if not m.name.startswith("_")]
    found = {n: next(getattr(m, n) for m in modules if hasattr(m, n))
             for cell in CELLS.values() for n in cell.launchers}
    return found if wrap is None else {n: wrap(f) for n, f in found.items()}


def new_output(shape, like):
    out = torch.empty(tuple(shape), dtype=like.dtype, device=like.device)
    if POISON:
        out.fill_(float("nan"))
    return out


# The outputs of every launcher, allocated from the contract above in one place, so
# both backends return the same shapes (each launcher fills them).
def rnn_fwd_outputs(xproj):
    """-> (out [T, B, H], h_n [B, H])."""
    return new_output(xproj.shape, xproj), new_output(xproj.shape[1:], xproj)


def rnn_bwd_outputs(out):
    """-> (grad_pre [T, B, H], grad_h0 [B, H])."""
    return new_output(out.shape, out), new_output(out.shape[1:], out)


def gru_fwd_outputs(xproj, save=True):
    """-> (out [T, B, H], h_n [B, H], gates [T, B, 4H], or empty unless ``save``)."""
    T, B, G = xproj.shape
    H = G // 3
    return new_output((T, B, H), xproj), new_output((B, H), xproj), \
        new_output((T, B, 4 * H) if save else (0, 0, 0), xproj)


def gru_bwd_outputs(out):
    """-> (grad_x [T, B, 3H], grad_hp [T, B, 3H], grad_h0 [B, H])."""
    T, B, H = out.shape
    return new_output((T, B, 3 * H), out), new_output((T, B, 3 * H), out), \
        new_output((B, H), out)


def lstm_fwd_outputs(xproj, h0, proj, save=True):
    """-> (out [T, B, P], h_n [B, P], c_n [B, H], gates [T, B, 4H], cells [T, B, H],
    mids [T, B, H] with a projection, else empty; the last three empty unless ``save``)."""
    T, B, G = xproj.shape
    H, P = G // 4, h0.shape[1]
    none = (0, 0, 0)
    return (new_output((T, B, P), xproj), new_output((B, P), xproj), new_output((B, H), xproj),
            new_output((T, B, G) if save else none, xproj),
            new_output((T, B, H) if save else none, xproj),
            new_output((T, B, H) if proj and save else none, xproj))


def lstm_bwd_outputs(grad_out, c0, proj):
    """-> (grad_pre [T, B, 4H], grad_h [T, B, P] with a projection else empty, grad_h0 [B, P],
    grad_c0 [B, H])."""
    T, B, P = grad_out.shape
    H = c0.shape[1]
    return (new_output((T, B, 4 * H), grad_out),
            new_output((T, B, P) if proj else (0, 0, 0), grad_out),
            new_output((B, P), grad_out), new_output((B, H), grad_out))
