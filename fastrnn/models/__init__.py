"""The lecture's sequence models, built on fastrnn's fused layers (see the docs: Models).

Each model takes ``layers=fastrnn`` (default) or ``layers=torch.nn`` to build the same
model, parameter for parameter, from torch's own recurrent modules: the baseline of the
benchmarks and of the tests.
"""
from .deep import DeepRNN
from .lm import LanguageModel
from .output_recurrence import OutputRecurrentRNN
from .seq2seq import Seq2Seq
from .tree import ChildSumTreeLSTM, NaryTreeLSTM, TreeRNN

__all__ = ["ChildSumTreeLSTM", "DeepRNN", "LanguageModel", "NaryTreeLSTM", "OutputRecurrentRNN",
           "Seq2Seq", "TreeRNN"]
