"""Triton (CUDA) backend: persistent forward and BPTT kernels, fused decoding steps, launchers."""
from .gru import gru_bwd, gru_fwd, gru_step
from .lstm import lstm_bwd, lstm_fwd, lstm_step
from .rnn import rnn_bwd, rnn_fwd, rnn_step
from .tree import child_sum_bwd as child_sum_tree_lstm_bwd
from .tree import child_sum_fwd as child_sum_tree_lstm_fwd
from .tree import nary_bwd as nary_tree_lstm_bwd
from .tree import nary_fwd as nary_tree_lstm_fwd
from .tree import tree_rnn_bwd, tree_rnn_fwd

__all__ = ["rnn_fwd", "rnn_bwd", "gru_fwd", "gru_bwd", "lstm_fwd", "lstm_bwd",
           "rnn_step", "gru_step", "lstm_step", "tree_rnn_fwd", "tree_rnn_bwd",
           "nary_tree_lstm_fwd", "nary_tree_lstm_bwd", "child_sum_tree_lstm_fwd",
           "child_sum_tree_lstm_bwd"]
