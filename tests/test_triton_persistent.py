"""The persistent Triton design's partitioning, under the interpreter.

The interpreter runs programs one after another, so the launchers run one step per
launch there; these tests force tilings with several programs along the units AND the
batch (odd H, odd B), with the weights on chip and streamed, so the split of the work
and the exchange of the state between programs are checked against the reference on
outputs, final states and every gradient. The grid a device would get is checked in
tests/aot_check.py (residency) and on CUDA by the gpu-marked tests.
"""
import logging

import pytest
import torch

from conftest import assert_close
from helpers import check_rnn_backend
from test_gru_lstm_kernels import check

from fastrnn import reference
from fastrnn.backends import REGISTRY

plan = pytest.importorskip("fastrnn.kernels.triton.plan")

TILINGS = [plan.Tiling(16, 16, True, 8), plan.Tiling(16, 16, False), plan.Tiling(32, 16, False)]


@pytest.fixture(params=TILINGS, ids=["onchip", "streamed", "streamed-U32"])
def tiling(request, monkeypatch):
    monkeypatch.setattr(plan, "FORCE", request.param)
    return request.param


@pytest.mark.parametrize("reverse", [False, True])
def test_rnn_split_over_units_and_rows(tiling, reverse):
    # H = 40: three unit tiles of 16 (two of 32); B = 37: three row tiles
    check_rnn_backend("triton", 3, 37, 40, torch.float32, reverse=reverse)


@pytest.mark.parametrize("cell,P", [("gru", None), ("lstm", None), ("lstm", 19)])
def test_gru_lstm_split_over_units_and_rows(tiling, cell, P):
    check(cell, "triton", 3, 37, 40, torch.float32, P=P, reverse=True)


@pytest.mark.parametrize("cell,P", [("rnn", None), ("gru", None), ("lstm", None), ("lstm", 19)])
def test_variable_lengths_across_row_tiles(cell, P, monkeypatch):
    # rows of one batch tile end at different steps; a second tile has shorter rows only
    monkeypatch.setattr(plan, "FORCE", plan.Tiling(16, 16, False))
    lengths = torch.tensor([4, 1, 3, 2] * 4 + [2, 1, 2])
    if cell == "rnn":
        check_rnn_backend("triton", 4, 19, 33, torch.float32, lengths=lengths, reverse=True)
    else:
        check(cell, "triton", 4, 19, 33, torch.float32, P=P, lengths=lengths, reverse=True)


def test_lstm_768_is_spread_over_many_programs(caplog):
    # the FlashRNN shape: B = 16 must not run in one program (the old design's grid);
    # under the interpreter the plan is the device's first choice, one step per launch
    T, B, H = 2, 16, 768
    launch = REGISTRY["triton"].kernels().lstm_fwd
    x = torch.randn(T, B, 4 * H) * 0.1
    h0, c0 = torch.zeros(B, H), torch.zeros(B, H)
    w = torch.randn(4 * H, H) * H ** -0.5
    with caplog.at_level(logging.DEBUG, logger="fastrnn"):
        out, h_n, c_n, *_ = launch(xproj=x, h0=h0, c0=c0, w_hh=w, w_hr=None, lengths=None,
                                   reverse=False, save=False)
    p = next(r.plan for r in caplog.records if hasattr(r, "plan"))
    assert p.units * -(-B // p.tiling.BB) >= 24
    ref = reference.lstm_layer(x.double(), h0.double(), c0.double(), w.double(), None, None,
                               False)
    assert_close(out, ref[0], 1e-5, "out")
    assert_close(c_n, ref[2], 1e-5, "c_n")


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm", "lstm:proj"])
def test_fused_step_matches_the_reference(cell):
    # the Triton *Cell path: both products, biases and gates in one launch (two with a
    # projection), units split over programs (H = 40) and rows over tiles (B = 19)
    import fastrnn
    kind = {"rnn": "RNN", "gru": "GRU", "lstm": "LSTM", "lstm:proj": "LSTM"}[cell]
    kw = dict(proj_size=7) if cell == "lstm:proj" else {}
    torch.manual_seed(1)
    ref = getattr(torch.nn, kind)(24, 40, **kw)
    m = getattr(fastrnn, kind)(24, 40, **kw)
    m.load_state_dict(ref.state_dict())
    m.backend = "triton"
    x = torch.randn(1, 19, 24)
    with torch.no_grad():
        got, ref_out = m(x)[0], ref(x)[0]
    assert_close(got, ref_out, 1e-5, f"{cell} step")
