"""Numba (CPU) backend: fused forward and BPTT kernels and their launchers."""
from .gru import gru_bwd, gru_fwd
from .lstm import lstm_bwd, lstm_fwd
from .rnn import rnn_bwd, rnn_fwd
from .step import gru_step, lstm_step, rnn_step

__all__ = ["rnn_fwd", "rnn_bwd", "gru_fwd", "gru_bwd", "lstm_fwd", "lstm_bwd",
           "rnn_step", "gru_step", "lstm_step"]
