"""Recursive (tree) networks on level-batched fused kernels.

    TreeRNN (Socher et al. 2011)      h_j = f(W_ih x_j + W_hh [h_{c_1}; ...; h_{c_N}] + b)
    NaryTreeLSTM (Tai et al. 2015)    ordered children, N fixed, a forget gate per slot
    ChildSumTreeLSTM (Tai et al. 2015) any number of children, gates from their summed h,
                                      a forget gate per child

A missing child's h (and c) is zero, so a leaf's h is f(W_ih x_j + b): leaves come from
the input (an embedding of the node's label, say). A batch of trees is a
``fastrnn.Forest`` (parent index per node; ``Forest.from_trees`` builds it from nested
tuples, ``ast`` trees or nltk.Tree-like objects), and every module takes node features
x [n, I] and the forest, and returns every node's h (and c) [n, H]; the roots' are
``h[forest.roots]``.

Per module, one autograd Function: the input projection of all nodes is one GEMM; then
the backend's kernel runs the whole forest bottom-up, a level of nodes per product
(Numba: one call; Triton: one launch per level), and the backward top-down the same way,
with the recurrent weight's gradient GEMMs over the child links. The kernels see the
forest renumbered by level (``Forest.by_level``); inputs and outputs keep the user's
numbering. ``backend`` as for the layers ("numba", "triton", or "reference" = the
per-node recursion of ``fastrnn.reference``).
Gate order of the LSTMs: i, o, u, f.

Every module: forward(x, forest) with x [n, I], one row per node of ``forest`` (dtypes:
numba float32/float64 on the CPU, triton float32/float16/bfloat16 on CUDA), returns every
node's states [n, H] (the roots' at ``forest.roots``). Raises TypeError when forest is
not a Forest, ValueError when x is not [n, input_size], ForestError when a node has more
children than an N-ary net's arity, RuntimeError under tracing, export or scripting (the
forest is data).
"""
import math

import torch
from torch import nn

from .. import backends, functional
from ..autograd import ChildSumTreeLSTMFunction, NaryTreeLSTMFunction, TreeRNNFunction
from ..forest import Forest, ForestError


class _TreeModule(nn.Module):
    backend = None
    _cell = ""

    def __init_subclass__(cls, **kwargs):
        # under torch.compile a tree net runs eagerly (functional.eager_under_compile)
        super().__init_subclass__(**kwargs)
        cls.forward = functional.eager_under_compile(
            cls.forward, "a fastrnn tree net takes a Forest, host data that changes with "
            "every batch: it runs eagerly")

    def _init(self, input_size, hidden_size, G, K, bias):
        self.input_size, self.hidden_size = input_size, hidden_size
        self.weight_ih = nn.Parameter(torch.empty(G, input_size))
        self.weight_hh = nn.Parameter(torch.empty(*K))
        self.bias = nn.Parameter(torch.empty(G)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        # as torch's recurrent layers: U(-1/sqrt(H), 1/sqrt(H)) for every parameter
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def __prepare_scriptable__(self):
        raise RuntimeError(f"{type(self).__name__} cannot be scripted: it takes a fastrnn.Forest, "
                           "a Python object whose level schedule is computed on the host for "
                           "each batch of trees")

    def _prepare(self, x, forest, arity=None):
        """Checks before any kernel runs; -> the backend."""
        if backends.recording(x):
            raise RuntimeError(f"{type(self).__name__} cannot be traced or exported: its tree "
                               "structure (the Forest) is host data, and a traced graph would "
                               "hold one batch's trees as constants")
        if not isinstance(forest, Forest):
            raise TypeError(f"forest must be a fastrnn.Forest, got {type(forest).__name__}")
        if x.dim() != 2 or x.shape != (forest.n, self.input_size):
            raise ValueError(f"x must be [{forest.n}, {self.input_size}] (one row per node), got "
                             f"{tuple(x.shape)}")
        w = self.weight_ih
        if not x.is_floating_point():
            raise TypeError(f"x must be a floating-point tensor (node features), got {x.dtype}; "
                            f"an embedding's output, or x.to({w.dtype}), is one")
        if x.dtype != w.dtype:        # as torch.nn.RNN words it
            raise ValueError(f"{type(self).__name__} input dtype ({x.dtype}) does not match "
                             f"weight dtype ({w.dtype}). Convert input: x.to({w.dtype}), or "
                             f"convert model: model.to({x.dtype})")
        functional.check_parameter_device(x, w)
        if arity is not None and forest.arity > arity:
            raise ForestError(f"a node has {forest.arity} children: more than {arity} for an "
                              f"{arity}-ary {type(self).__name__}")
        return backends.select(self._cell, x, self.backend)


class TreeRNN(_TreeModule):
    """h_j = f(W_ih x_j + W_hh [h_{c_1}; ...; h_{c_N}] + b), children in slots 0..N-1.

    Parameters: weight_ih [H, I], weight_hh [H, N*H], bias [H]. forward(x, forest) -> h.

    Inputs, dtypes and errors: the module docstring (``fastrnn.models.tree``).
    """

    _cell = "tree_rnn"

    def __init__(self, input_size, hidden_size, arity=2, nonlinearity="tanh", bias=True):
        super().__init__()
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.arity, self.nonlinearity = arity, nonlinearity
        self._init(input_size, hidden_size, hidden_size, (hidden_size, arity * hidden_size),
                   bias)

    def forward(self, x, forest):
        return TreeRNNFunction.apply(x, self.weight_ih, self.bias, self.weight_hh, forest,
                                     self.nonlinearity, self._prepare(x, forest, self.arity))


class NaryTreeLSTM(_TreeModule):
    """Tai et al.'s N-ary Tree-LSTM. Parameters: weight_ih [4H, I] (i, o, u, f), weight_hh
    [(3+N)H, N*H] (rows i, o, u, then f for each slot), bias [4H].
    forward(x, forest) -> (h, c).

    Inputs, dtypes and errors: the module docstring (``fastrnn.models.tree``).
    """

    _cell = "nary_tree_lstm"

    def __init__(self, input_size, hidden_size, arity=2, bias=True):
        super().__init__()
        self.arity = arity
        self._init(input_size, hidden_size, 4 * hidden_size,
                   ((3 + arity) * hidden_size, arity * hidden_size), bias)

    def forward(self, x, forest):
        return NaryTreeLSTMFunction.apply(x, self.weight_ih, self.bias, self.weight_hh, forest,
                                          self._prepare(x, forest, self.arity))


class ChildSumTreeLSTM(_TreeModule):
    """Tai et al.'s Child-Sum Tree-LSTM. Parameters: weight_ih [4H, I] (i, o, u, f),
    weight_hh [4H, H] (U_i, U_o, U_u, U_f), bias [4H]. forward(x, forest) -> (h, c).

    Inputs, dtypes and errors: the module docstring (``fastrnn.models.tree``).
    """

    _cell = "child_sum_tree_lstm"

    def __init__(self, input_size, hidden_size, bias=True):
        super().__init__()
        self._init(input_size, hidden_size, 4 * hidden_size, (4 * hidden_size, hidden_size),
                   bias)

    def forward(self, x, forest):
        return ChildSumTreeLSTMFunction.apply(x, self.weight_ih, self.bias, self.weight_hh,
                                              forest, self._prepare(x, forest))
