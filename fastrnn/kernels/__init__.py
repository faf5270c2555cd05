"""The launcher contract every backend in fastrnn.kernels.<backend> implements.

A backend module exports, per cell, ``<cell>_fwd`` and ``<cell>_bwd`` launchers:
keyword arguments only, torch tensors in and out, no autograd. They allocate the
outputs (with ``new_output``), pick block sizes, and launch one kernel for the
whole sequence. Shapes are time-major; ``lengths`` is None or a [B] int64 tensor
of per-row lengths in [1, T]; ``reverse`` runs each row from its own last step.

RNN (``nonlinearity`` in {"tanh", "relu"}):
    rnn_fwd(xproj [T, B, H], h0 [B, H], w_hh [H, H], lengths, reverse, nonlinearity)
        -> out [T, B, H] (zero past each length), h_n [B, H]
    rnn_bwd(grad_out [T, B, H], grad_hn [B, H], out [T, B, H], w_hh, lengths, reverse,
            nonlinearity)
        -> grad_pre [T, B, H] (dL/d xproj; zero past each length), grad_h0 [B, H]

Saved for backward by RNNFunction: xproj (double backward only), h0, w_hh, out,
lengths. The weight gradient sum_t grad_pre[t]^T h_{t-1} is one GEMM outside.
"""
import torch

# Tests set this to fill every new output with NaN, so an element a kernel
# forgets to write fails the comparison instead of passing as stale memory.
POISON = False


def new_output(shape, like):
    out = torch.empty(tuple(shape), dtype=like.dtype, device=like.device)
    if POISON:
        out.fill_(float("nan"))
    return out
