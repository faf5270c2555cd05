"""Triton (CUDA) backend: fused forward and BPTT kernels and their launchers."""
from .rnn import rnn_bwd, rnn_fwd

__all__ = ["rnn_fwd", "rnn_bwd"]
