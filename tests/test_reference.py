"""fastrnn.reference (through the functional layer loop) against torch.nn.RNN/GRU/LSTM."""
import itertools

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from fastrnn import functional
from helpers import assert_close

OPTIONS = list(itertools.product([1, 2], [True, False], [False, True], [False, True]))


def _run(kind, layers, bias, bidir, packed, dtype, proj=0):
    torch.manual_seed(4)
    kw = dict(num_layers=layers, bias=bias, bidirectional=bidir, dtype=dtype)
    if kind == "lstm" and proj:
        kw["proj_size"] = proj
    if kind.startswith("rnn"):
        kw["nonlinearity"] = kind[4:]
    cls = {"rnn_tanh": torch.nn.RNN, "rnn_relu": torch.nn.RNN, "gru": torch.nn.GRU,
           "lstm": torch.nn.LSTM}[kind]
    mod = cls(3, 6, **kw)
    T, B, D = 6, 4, 2 if bidir else 1
    x = torch.randn(T, B, 3, dtype=dtype)
    P = proj or 6
    h0 = torch.randn(layers * D, B, P, dtype=dtype)
    c0 = torch.randn(layers * D, B, 6, dtype=dtype)
    lengths = torch.tensor([6, 2, 5, 1]) if packed else None
    hx = (h0, c0) if kind == "lstm" else h0
    inp = pack_padded_sequence(x, lengths, enforce_sorted=False) if packed else x
    want_out, want_h = mod(inp, hx)
    if packed:
        want_out, _ = pad_packed_sequence(want_out, total_length=T)
    common = dict(num_layers=layers, bias=bias, bidirectional=bidir, lengths=lengths,
                  backend="reference")
    w = mod._flat_weights
    if kind == "lstm":
        out, (h, c) = functional.lstm(x, (h0, c0), w, proj_size=proj, **common)
        assert_close(c, want_h[1], TOL[dtype], "c_n")
        want_h = want_h[0]
    elif kind == "gru":
        out, h = functional.gru(x, h0, w, **common)
    else:
        out, h = functional.rnn(x, h0, w, nonlinearity=kind[4:], **common)
    assert_close(out, want_out, TOL[dtype], "output")
    assert_close(h, want_h, TOL[dtype], "h_n")


TOL = {torch.float32: 1e-5, torch.float64: 1e-12}


@pytest.mark.parametrize("layers,bias,bidir,packed", OPTIONS)
@pytest.mark.parametrize("kind", ["rnn_tanh", "rnn_relu", "gru", "lstm"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_reference_matches_torch(kind, layers, bias, bidir, packed, dtype):
    _run(kind, layers, bias, bidir, packed, dtype)


@pytest.mark.parametrize("layers,bias,bidir,packed", OPTIONS)
def test_reference_lstm_proj_matches_torch(layers, bias, bidir, packed):
    _run("lstm", layers, bias, bidir, packed, torch.float64, proj=4)
