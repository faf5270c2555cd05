"""Triton (CUDA) backend: persistent forward and BPTT kernels, fused decoding steps, launchers."""
from .gru import gru_bwd, gru_fwd, gru_step
from .lstm import lstm_bwd, lstm_fwd, lstm_step
from .rnn import rnn_bwd, rnn_fwd, rnn_step

__all__ = ["rnn_fwd", "rnn_bwd", "gru_fwd", "gru_bwd", "lstm_fwd", "lstm_bwd",
           "rnn_step", "gru_step", "lstm_step"]
