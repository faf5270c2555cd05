"""Deep recurrent networks (the lecture's stacked, residual and deep-transition RNNs).

    x_0 = input
    o_k = RNN_k(x_{k-1})                      one fused layer call (both directions)
    x_k = T_k(o_k) + P_k x_{k-1}   (residual) T_k = the deep transition MLP (or identity),
    x_k = T_k(o_k)                 (plain)    P_k = identity, or a linear map where sizes differ

with dropout on x_k between layers (training only). The output is x_L; the final
states are stacked as torch's: [L*D, B, H] (LSTM: (h_n, c_n)).
PackedSequence input stays packed from layer to layer: every layer shares its
batch_sizes, so the residual sum and the MLP act on its ``data`` rows directly.
"""
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

import fastrnn
from ..cells import CELLS as TABLE, SEQUENCE

# the sequence cells of the table, a cell with a nonlinearity once per choice (torch's
# RNN modes "rnn_tanh", "rnn_relu")
CELLS = tuple(name for c in SEQUENCE for name in
              ((f"{c}_tanh", f"{c}_relu") if "nonlinearity" in TABLE[c].options else (c,)))


class DeepRNN(nn.Module):
    """A stack of ``num_layers`` one-layer recurrent modules with residual connections.

    Args:
        cell: "rnn_tanh", "rnn_relu", "gru" or "lstm".
        input_size: as torch.nn.
        hidden_size: as torch.nn.
        num_layers: as torch.nn (each layer its own one-layer module).
        bias: as torch.nn.
        batch_first: as torch.nn.
        bidirectional: as torch.nn.
        residual: add each layer's input (projected when its size differs) to its output.
        dropout: on each layer's output but the last, in training.
        transition: width of the deep-transition MLP between layers (Linear -> tanh ->
            Linear, applied to each layer's output before the residual sum), or 0 for none.
        layers: ``fastrnn`` (default) or ``torch.nn``: the same model, parameter for
            parameter, on torch's modules.

    Raises:
        ValueError: an unknown cell, num_layers < 1, or dropout outside [0, 1).

    Forward: (input, hx=None) -> (output, h_n), as the torch.nn module of ``cell``
    (hx [L*D, B, H], or (h0, c0) for LSTM; padded or PackedSequence input).
    """

    def __init__(self, cell, input_size, hidden_size, num_layers, residual=True, dropout=0.0,
                 bidirectional=False, transition=0, bias=True, batch_first=False,
                 layers=fastrnn):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.cell, self.num_layers, self.residual = cell, num_layers, residual
        self.dropout, self.batch_first = dropout, batch_first
        self.hidden_size, self.bidirectional = hidden_size, bidirectional
        D = 2 if bidirectional else 1
        base, _, nonlinearity = cell.partition("_")
        kind = TABLE[base].torch_layer
        extra = {"nonlinearity": nonlinearity} if nonlinearity else {}
        self.rnns, self.skips, self.transitions = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        size = input_size
        for _ in range(num_layers):
            self.rnns.append(getattr(layers, kind)(size, hidden_size, bias=bias,
                                                   bidirectional=bidirectional, **extra))
            self.transitions.append(nn.Sequential(
                nn.Linear(D * hidden_size, transition), nn.Tanh(),
                nn.Linear(transition, D * hidden_size)) if transition else nn.Identity())
            self.skips.append(nn.Linear(size, D * hidden_size, bias=False)
                              if residual and size != D * hidden_size else nn.Identity())
            size = D * hidden_size

    @property
    def backend(self):
        return getattr(self.rnns[0], "backend", None)

    @backend.setter
    def backend(self, name):
        for rnn in self.rnns:
            rnn.backend = name

    def forward(self, input, hx=None):
        packed = isinstance(input, PackedSequence)
        D, lstm = 2 if self.bidirectional else 1, self.cell == "lstm"
        states = [None] * self.num_layers
        if hx is not None:
            parts = hx if lstm else (hx,)
            states = [tuple(p[k * D:(k + 1) * D] for p in parts) for k in range(self.num_layers)]
            states = [s if lstm else s[0] for s in states]
        x, finals = input, []
        for k, (rnn, skip, mlp) in enumerate(zip(self.rnns, self.skips, self.transitions)):
            if packed:
                out, h = rnn(x, states[k])
                y = mlp(out.data)
                if self.residual:
                    y = y + skip(x.data)
            else:
                if self.batch_first:
                    x = x.transpose(0, 1)
                out, h = rnn(x, states[k])
                y = mlp(out)
                if self.residual:
                    y = y + skip(x)
            if self.dropout and self.training and k < self.num_layers - 1:
                y = nn.functional.dropout(y, self.dropout, training=True)
            x = out._replace(data=y) if packed else (y.transpose(0, 1) if self.batch_first else y)
            finals.append(h)
        if lstm:
            return x, (torch.cat([h for h, _ in finals]), torch.cat([c for _, c in finals]))
        return x, torch.cat(finals)
