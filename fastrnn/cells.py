"""The one table of cell kinds. Every other list of cells derives from it: the backends'
cell sets (fastrnn.backends), the states a step takes (fastrnn.functional), the bench's
cases (bench/cases.py) and the tests' parametrisations.

A cell kind names what a backend must ship for it: launchers ``<name>_fwd`` and
``<name>_bwd`` (and ``<name>_step`` where ``step``) in ``fastrnn.kernels.<backend>``
(the contract in fastrnn/kernels/__init__.py; the reference backend,
fastrnn/kernels/reference.py, ships them too), the plain-PyTorch recurrences in
``fastrnn.reference`` it is checked against, the autograd Function around its
launchers, and the torch.nn classes it mirrors, if any (the tree cells have none). For
a sequence cell it also says how torch's flat weights become launcher arguments, which
is all fastrnn.functional's one layer runner needs. Adding a cell starts here:
kernels/README.md, "Adding a cell".
"""
import functools
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Cell:
    name: str                     # launcher prefix, backend cell name
    states: tuple                 # the recurrent states, in launcher-argument order
    gates: int                    # gate blocks of the input projection: G = gates * H
    reference: tuple              # its recurrences in fastrnn.reference
    torch_layer: str = None       # torch.nn class the drop-in layer mirrors (None: none)
    torch_cell: str = None        # torch.nn class the drop-in cell mirrors
    function: str = None          # its torch.autograd.Function in fastrnn.autograd
    step: bool = False            # ships a fused decoding step launcher (<name>_step)
    projection: bool = False      # takes a projection (torch's proj_size): w_hr
    b_hn: bool = False            # the last gate block of b_hh stays inside the
                                  # recurrence (GRU's r * (W_hn h + b_hn)): its own argument
    options: tuple = ()           # the non-tensor launcher options, e.g. nonlinearity

    @property
    def launchers(self):
        return (f"{self.name}_fwd", f"{self.name}_bwd") + ((f"{self.name}_step",)
                                                           if self.step else ())


CELLS = {c.name: c for c in (
    Cell("rnn", ("h",), 1, ("rnn_cell", "rnn_layer"), "RNN", "RNNCell", "RNNFunction",
         step=True, options=("nonlinearity",)),
    Cell("gru", ("h",), 3, ("gru_cell", "gru_layer"), "GRU", "GRUCell", "GRUFunction",
         step=True, b_hn=True),
    Cell("lstm", ("h", "c"), 4, ("lstm_cell", "lstm_layer"), "LSTM", "LSTMCell",
         "LSTMFunction", step=True, projection=True),
    # fastrnn.models.tree: no torch counterpart
    Cell("tree_rnn", ("h",), 1, ("tree_rnn",), function="TreeRNNFunction",
         options=("nonlinearity",)),
    Cell("nary_tree_lstm", ("h", "c"), 4, ("nary_tree_lstm",), function="NaryTreeLSTMFunction"),
    Cell("child_sum_tree_lstm", ("h", "c"), 4, ("child_sum_tree_lstm",),
         function="ChildSumTreeLSTMFunction"),
)}

# the sequence cells (drop-in torch.nn layers and cells) and the tree cells
SEQUENCE = tuple(n for n, c in CELLS.items() if c.torch_layer)
TREES = tuple(n for n, c in CELLS.items() if not c.torch_layer)


def b_hh_input_mask(gates, H, dtype, device):
    """For a ``b_hn`` cell: [gates * H], 1 over the blocks of b_hh that join the input bias,
    0 over the last (b_hn, inside the recurrence). b_ih + b_hh * mask is one op each way
    (a slice, zeros and a cat were six with their gradients); made once, only read (in a
    graph torch.compile traces: made in the graph)."""
    if torch.compiler.is_compiling():
        return _mask(gates, H, dtype, device)
    return _cached_mask(gates, H, dtype, device)


def _mask(gates, H, dtype, device):
    return torch.cat([torch.ones((gates - 1) * H, dtype=dtype, device=device),
                      torch.zeros(H, dtype=dtype, device=device)])


_cached_mask = functools.lru_cache(maxsize=16)(_mask)
