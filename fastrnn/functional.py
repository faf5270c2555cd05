"""Functional API: checks, the layer/direction loop, the input GEMM, the Functions.

All functions here are time-major and take padded input plus optional per-row
``lengths`` (the modules in ``fastrnn.nn`` turn batch_first, unbatched and
PackedSequence input into this form). ``weights`` is torch's flat weight list,
in torch's order: for every layer, for every direction,
``w_ih [G, I_l], w_hh [G, H], (b_ih [G], b_hh [G] if bias)``.
"""
import torch
import torch.nn.functional as F

from . import backends, reference
from .autograd import RNNFunction


# ------------------------------------------------------------------ checks
def _check(input, hx, weights, lengths, *, num_layers, bidirectional, bias):
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"input must be a Tensor, got {type(input).__name__}")
    if input.dim() != 3:
        raise ValueError(f"input must be 3-D [T, B, I], got {input.dim()}-D")
    T, B, I = input.shape
    if T == 0:
        raise ValueError("input has zero time steps; sequences must have length >= 1")
    if not input.is_floating_point():
        raise TypeError(f"input must be a floating-point tensor, got {input.dtype}")
    D = 2 if bidirectional else 1
    per = 4 if bias else 2
    if len(weights) != num_layers * D * per:
        raise ValueError(f"expected {num_layers * D * per} weight tensors, got {len(weights)}")
    if weights[0].shape[1] != I:
        raise ValueError(f"input has {I} features but weight_ih_l0 expects {weights[0].shape[1]}")
    for w in weights:
        if w.dtype != input.dtype or w.device != input.device:
            raise TypeError(f"weights ({w.dtype}, {w.device}) must match input "
                            f"({input.dtype}, {input.device})")
    for h in hx:
        if h.dim() != 3 or h.shape[:2] != (num_layers * D, B):
            raise ValueError(f"initial state must be [{num_layers * D}, {B}, *], got {tuple(h.shape)}")
        if h.dtype != input.dtype or h.device != input.device:
            raise TypeError(f"initial state ({h.dtype}, {h.device}) must match input "
                            f"({input.dtype}, {input.device})")
    if hx[0].shape[2] != weights[1].shape[1]:
        raise ValueError(f"hidden state has {hx[0].shape[2]} features but weight_hh_l0 "
                         f"expects {weights[1].shape[1]}")
    if lengths is not None:
        if lengths.shape != (B,) or lengths.dtype != torch.int64 or lengths.device.type != "cpu":
            raise ValueError(f"lengths must be a CPU int64 tensor of shape ({B},)")
        if B and (lengths.min() < 1 or lengths.max() > T):
            raise ValueError(f"lengths must lie in [1, {T}]")


# ------------------------------------------------------- layer/direction loop
def _stack(input, states, weights, layer_fn, *, num_layers, bidirectional, dropout, training):
    """Run every layer and direction; ``layer_fn(x, states_of_idx, w, reverse)``.

    Returns (output of the last layer [T, B, D*P], list of final-state tuples
    in torch's (layer, direction) order).
    """
    D = 2 if bidirectional else 1
    per = len(weights) // (num_layers * D)
    x, finals = input, []
    for layer in range(num_layers):
        outs = []
        for d in range(D):
            idx = layer * D + d
            out, final = layer_fn(x, [s[idx] for s in states],
                                  weights[idx * per:(idx + 1) * per], reverse=d == 1)
            outs.append(out)
            finals.append(final)
        x = outs[0] if D == 1 else torch.cat(outs, dim=2)
        if dropout > 0 and training and layer < num_layers - 1:
            x = F.dropout(x, p=dropout, training=True)
    return x, finals


def rnn(input, hx, weights, *, nonlinearity="tanh", num_layers=1, bias=True, dropout=0.0,
        training=False, bidirectional=False, lengths=None, backend=None):
    """Elman RNN, h_t = f(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh), f = tanh or relu.

    Args:
        input:   [T, B, I] time-major, padded past each row's length.
        hx:      [L*D, B, H] initial states (D = 2 if bidirectional).
        weights: torch's flat list (see module docstring).
        lengths: [B] CPU int64 per-row lengths in [1, T], or None for all T.
        backend: "numba", "triton", "reference" or None (FASTRNN_BACKEND, then automatic).
    Returns:
        output [T, B, D*H] (zero past each row's length), h_n [L*D, B, H].
    Raises:
        ValueError / TypeError on bad shapes, dtypes, devices or options, before
        any kernel runs; RuntimeError if an explicitly requested backend cannot run.
    """
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
    _check(input, [hx], weights, lengths, num_layers=num_layers,
           bidirectional=bidirectional, bias=bias)
    be = backends.select("rnn", input, backend)

    def layer(x, h0, w, reverse):
        w_ih, w_hh = w[0], w[1]
        b = (w[2] + w[3]) if bias else None          # both biases enter before f
        xproj = F.linear(x, w_ih, b)                  # one GEMM for all steps
        if be.name == "reference":
            out, h_n = reference.rnn_layer(xproj, h0[0], w_hh, lengths, reverse, nonlinearity)
        else:
            out, h_n = RNNFunction.apply(xproj, h0[0], w_hh, lengths, reverse, nonlinearity, be)
        return out, h_n

    out, finals = _stack(input, [hx], weights, layer, num_layers=num_layers,
                         bidirectional=bidirectional, dropout=dropout, training=training)
    return out, torch.stack(finals)
