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

from helpers import assert_close, check

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
    check("rnn", "triton", 3, 37, 40, torch.float32, reverse=reverse)


@pytest.mark.parametrize("cell,P", [("gru", None), ("lstm", None), ("lstm", 19), ("lstm", 33)])
def test_gru_lstm_split_over_units_and_rows(tiling, cell, P):
    # on chip, H = 40 and P = 33 are held as a 32-wide and a 16-wide tile (plan.split)
    check(cell, "triton", 3, 37, 40, torch.float32, P=P, reverse=True)


@pytest.mark.parametrize("wide", plan.ONCHIP[1:] + plan.WIDE + plan.LEVERS, ids=str)
@pytest.mark.parametrize("cell,P", [("rnn", None), ("gru", None), ("lstm", None), ("lstm", 19)])
def test_wide_tilings_split_over_units_and_rows(wide, cell, P, monkeypatch):
    # every other tiling tuning may launch (the on-chip ones after the first, plan.WIDE,
    # plan.LEVERS), with two or more programs each way (on chip, H = 40: two tiles)
    monkeypatch.setattr(plan, "FORCE", wide)
    B = 2 * wide.BB + 3
    check(cell, "triton", 3, B, 40, torch.float32, P=P, reverse=True,
          lengths=torch.arange(B) % 3 + 1)


@pytest.mark.parametrize("cell,P", [("rnn", None), ("gru", None), ("lstm", None), ("lstm", 19)])
def test_variable_lengths_across_row_tiles(cell, P, monkeypatch):
    # rows of one batch tile end at different steps; a second tile has shorter rows only
    monkeypatch.setattr(plan, "FORCE", plan.Tiling(16, 16, False))
    lengths = torch.tensor([4, 1, 3, 2] * 4 + [2, 1, 2])
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


@pytest.mark.parametrize("forced", [None] + plan.LEVERS, ids=str)
@pytest.mark.parametrize("cell,P", [("rnn", None), ("gru", None), ("lstm", None), ("lstm", 11)])
def test_persistent_launch_leaves_its_barrier_counters_at_zero(cell, P, forced, caplog,
                                                               monkeypatch):
    # one program along the units (H = 16): the interpreter runs the device's persistent
    # launch, barriers and release included, over three row tiles (B = 37); the counters
    # are never filled per launch, so each launch must hand them back at 0 (the next
    # launch, or a CUDA graph's replay, counts from there). With the levers' tilings:
    # the polling barrier, and each step's input part loaded a step ahead across the time loop
    monkeypatch.setattr(plan, "FORCE", forced)
    counters = plan.barrier_counters(torch.device("cpu"), 3)
    counters.fill_(0)
    with caplog.at_level(logging.DEBUG, logger="fastrnn"):
        check(cell, "triton", 3, 37, 16, torch.float32, P=P, reverse=True,
              lengths=torch.tensor([3, 1, 2] * 12 + [2]))
    plans = [r.plan for r in caplog.records if hasattr(r, "plan")]
    assert len(plans) == 2 and all(p.persist and p.grid(37) == (1, 3) for p in plans), plans
    assert plan.barrier_counters(torch.device("cpu"), 3) is counters
    assert not counters.any(), counters[:3]


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


# ----------------------------------------------------------------- on a CUDA device
@pytest.mark.gpu
@pytest.mark.parametrize("cell,P", [("gru", None), ("lstm", None), ("lstm", 384)])
def test_persistent_launch_on_cuda(cell, P, caplog):
    # compiled, one persistent launch for the sequence (the barrier path), bf16
    with caplog.at_level(logging.DEBUG, logger="fastrnn"):
        check(cell, "triton", 64, 16, 768, torch.bfloat16, P=P, device="cuda", tol=5e-2,
              lengths=torch.randint(1, 65, (16,)), reverse=True)
    plans = [r.plan for r in caplog.records if hasattr(r, "plan")]
    assert plans and all(p.persist for p in plans), plans


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM", "RNNCell", "GRUCell", "LSTMCell"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cuda_autocast_returns_what_torch_returns(kind, dtype):
    # torch.nn's layers return float16 whatever the autocast dtype, its cells that dtype
    import fastrnn
    ref = getattr(torch.nn, kind)(32, 64, device="cuda")
    m = getattr(fastrnn, kind)(32, 64, device="cuda")
    m.load_state_dict(ref.state_dict())
    x = torch.randn(4, 32, device="cuda") if "Cell" in kind else \
        torch.randn(10, 4, 32, device="cuda")
    with torch.autocast("cuda", dtype=dtype):
        got, want = m(x), ref(x)
    got, want = (got, want) if kind == "GRUCell" or kind == "RNNCell" else (got[0], want[0])
    assert got.dtype == want.dtype
    assert_close(got.float(), want.float(), 5e-2, kind)


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["RNNCell", "GRUCell", "LSTMCell"])
@pytest.mark.parametrize("B", [1, 64])
def test_fused_step_on_cuda(kind, B):
    import fastrnn
    ref = getattr(torch.nn, kind)(96, 512, device="cuda")
    m = getattr(fastrnn, kind)(96, 512, device="cuda")
    m.load_state_dict(ref.state_dict())
    x, h = torch.randn(B, 96, device="cuda"), torch.randn(B, 512, device="cuda")
    state = (h, h.clone()) if kind == "LSTMCell" else h
    with torch.no_grad():
        got, want = m(x, state), ref(x, state)
    for a, b in zip(got if kind == "LSTMCell" else [got], want if kind == "LSTMCell" else [want]):
        assert_close(a, b, 1e-2, kind)       # TF32 products, as torch's cuDNN cells


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM"])
def test_layer_forward_and_backward_replay_from_a_cuda_graph(kind):
    # no host synchronisation and no per-call host state on the path without lengths:
    # a capture replays with the results of eager calls, outputs and every gradient
    import fastrnn
    from fastrnn.functional import cuda_graph
    m = getattr(fastrnn, kind)(32, 64, device="cuda")
    x = torch.randn(20, 8, 32, device="cuda", requires_grad=True)

    def fwd_bwd(x):
        m.zero_grad(set_to_none=False)
        x.grad = None if x.grad is None else x.grad.zero_()
        out = m(x)[0]
        out.sum().backward()
        return out
    with torch.no_grad():
        fwd_graph, fwd_out = cuda_graph(lambda x: m(x)[0], x.detach())
    graph, out = cuda_graph(fwd_bwd, x)
    new = torch.randn_like(x)
    x.data.copy_(new)
    graph.replay()
    fwd_graph.replay()
    grads = [x.grad.clone()] + [p.grad.clone() for p in m.parameters()]
    want = fwd_bwd(x)
    # the same kernels on the same inputs (cuBLAS may pick another algorithm in a graph)
    assert_close(out, want, 1e-5, "out")
    assert_close(fwd_out, want.detach(), 1e-5, "forward")
    for a, b in zip(grads, [x.grad] + [p.grad for p in m.parameters()]):
        assert_close(a, b, 1e-5, "grad")


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["RNNCell", "GRUCell", "LSTMCell"])
@pytest.mark.parametrize("B", [1, 64])
def test_cell_step_replays_from_a_cuda_graph(kind, B):
    import fastrnn
    from fastrnn.functional import cuda_graph
    m = getattr(fastrnn, kind)(96, 512, device="cuda")
    x, h = torch.randn(B, 96, device="cuda"), torch.randn(B, 512, device="cuda")
    state = (h, h.clone()) if kind == "LSTMCell" else h
    with torch.no_grad():
        graph, out = cuda_graph(m, x, state)
        x.copy_(torch.randn_like(x))
        graph.replay()
        want = m(x, state)
    for a, b in zip(out if kind == "LSTMCell" else [out], want if kind == "LSTMCell" else [want]):
        assert_close(a, b, 1e-5, kind)


@pytest.mark.gpu
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("B", [1, 64])
def test_stepper_graph_replays_what_eager_steps_give(cell, B):
    from fastrnn import functional
    twin = {"rnn": torch.nn.RNNCell, "gru": torch.nn.GRUCell,
            "lstm": torch.nn.LSTMCell}[cell](96, 512, device="cuda")
    w = [twin.weight_ih, twin.weight_hh, twin.bias_ih, twin.bias_hh]
    x = torch.randn(B, 96, device="cuda")
    with torch.no_grad():
        eager = functional.stepper(cell, w, x)
        graphed = functional.stepper(cell, w, x, graph=True)
        assert isinstance(graphed, functional.GraphStep)
        h = torch.randn(B, 512, device="cuda")
        state = (h, h.clone()) if cell == "lstm" else h
        a = b = state
        for _ in range(4):
            x = torch.randn(B, 96, device="cuda")
            a, b = graphed(x, a), eager(x, b)
            for p, q in zip(a if cell == "lstm" else [a], b if cell == "lstm" else [b]):
                assert_close(p, q, 1e-5, cell)


@pytest.mark.gpu
def test_seq2seq_beam_search_from_cuda_graphs_equals_eager():
    from fastrnn.models import Seq2Seq
    torch.manual_seed(0)
    model = Seq2Seq(src_vocab=50, tgt_vocab=40, embed=16, hidden=32).cuda().eval()
    src = torch.randint(3, 50, (8, 12), device="cuda")
    lengths = torch.full((8,), 12, dtype=torch.int64)
    tok, score = model.generate(src, lengths, beam=5, max_len=10)
    tok_g, score_g = model.generate(src, lengths, beam=5, max_len=10, graph=True)
    assert torch.equal(tok, tok_g) and torch.equal(score, score_g)
