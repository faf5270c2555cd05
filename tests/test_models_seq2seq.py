"""Seq2Seq (Cho et al. 2014) on every backend against the same model built with torch.nn."""
import contextlib
import itertools

import pytest
import torch
import torch.nn.functional as F

from fastrnn import functional
from fastrnn.cells import SEQUENCE
from fastrnn.models import Seq2Seq

from helpers import assert_close, assert_twins_match

BACKENDS = ["numba", "triton", "reference"]


def _dtype(backend):
    return torch.float32 if backend == "triton" else torch.float64


def _pair(backend, cell="gru", **kw):
    """The fastrnn model on ``backend`` and its torch.nn twin, same weights."""
    args = dict(embed=6, hidden=8, context=5, enc_layers=2, cell=cell, **kw)
    ours = Seq2Seq(17, 13, **args).to(_dtype(backend))
    twin = Seq2Seq(17, 13, layers=torch.nn, **args).to(_dtype(backend))
    twin.load_state_dict(ours.state_dict())
    ours.encoder.backend = ours.decoder.backend = backend
    return ours, twin


def _batch(B=4, S=7, T=6):
    src = torch.randint(3, 17, (B, S))
    lengths = torch.tensor([7, 2, 5, 1][:B])
    for i in range(B):
        src[i, lengths[i]:] = 0
    tgt = torch.randint(3, 13, (B, T))
    tgt[:, 0] = 1
    return src, lengths, tgt


def _tol(backend):
    return 1e-4 if backend == "triton" else 1e-10


def _check_grads(ours, twin, tol):
    for (name, a), b in zip(ours.named_parameters(), twin.parameters()):
        assert_close(a.grad, b.grad, tol, name)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_teacher_forced_pass_matches_torch_build(backend, cell):
    ours, twin = _pair(backend, cell)
    src, lengths, tgt = _batch()
    assert_twins_match(ours, twin, ours(src, lengths, tgt), twin(src, lengths, tgt),
                       _tol(backend))


@pytest.mark.parametrize("backend", BACKENDS)
def test_scheduled_sampling_matches_torch_build(backend):
    ours, twin = _pair(backend, bidirectional=False)
    src, lengths, tgt = _batch()
    torch.manual_seed(3)
    got = ours(src, lengths, tgt, sampling_prob=0.5)
    torch.manual_seed(3)
    ref = twin(src, lengths, tgt, sampling_prob=0.5)
    assert_close(got, ref, _tol(backend), "logits")
    got.square().sum().backward()
    ref.square().sum().backward()
    _check_grads(ours, twin, _tol(backend))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("beam", [1, 3])
def test_decoding_matches_torch_build(backend, beam):
    ours, twin = _pair(backend)
    src, lengths, _ = _batch()
    tok, score = ours.generate(src, lengths, beam=beam, max_len=5)
    tok_ref, score_ref = twin.generate(src, lengths, beam=beam, max_len=5)
    assert torch.equal(tok, tok_ref)
    assert_close(score, score_ref, _tol(backend), "scores")
    # graph=True is for CUDA: on the CPU it changes nothing
    tok_g, score_g = ours.generate(src, lengths, beam=beam, max_len=5, graph=True)
    assert torch.equal(tok_g, tok) and torch.equal(score_g, score)


def test_graph_step_copies_in_replays_and_copies_out(monkeypatch):
    # GraphStep's bookkeeping with torch.cuda's graph API faked on the CPU: one capture
    # per input shape, inputs copied into the captured tensors, fresh outputs each call
    captures = []

    class FakeGraph:
        def replay(self):
            self.body()

    class Capture:
        def __init__(self, graph):
            self.graph = graph

        def __enter__(self):
            captures.append(self.graph)

        def __exit__(self, *exc):
            return False

    def fake_run(self, x, states, single):
        graph = captures[-1] if captures else None
        out = real_run(self, x, states, single)
        if graph is not None and not hasattr(graph, "body"):
            # what a replay does: the captured step again, on the static inputs
            graph.body = lambda: [o.copy_(n) for o, n in
                                  zip(out, real_run(self, x, states, single))]
        return out
    real_run = functional.GraphStep._run
    monkeypatch.setattr(functional.GraphStep, "_run", fake_run)
    class FakeStream:
        def wait_stream(self, other):
            pass
    monkeypatch.setattr(torch.cuda, "Stream", FakeStream)
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "current_stream", FakeStream)
    monkeypatch.setattr(torch.cuda, "CUDAGraph", FakeGraph)
    monkeypatch.setattr(torch.cuda, "graph", Capture)
    cell = torch.nn.LSTMCell(4, 5)
    w = [cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh]
    with torch.no_grad():
        eager = functional.stepper("lstm", w, torch.zeros(3, 4), backend="numba")
        graphed = functional.GraphStep(eager)
        for B in (3, 3, 2):
            x, state = torch.randn(B, 4), (torch.randn(B, 5), torch.randn(B, 5))
            got, want = graphed(x, state), eager(x, state)
            assert all(torch.equal(a, b) for a, b in zip(got, want))
            assert got[0] is not graphed(x, state)[0]          # a fresh copy each call
    assert len(captures) == 2 and len(graphed.graphs) == 2     # one per batch size


def _sequence_logprob(model, src, lengths, seqs):
    """log p(seq | src) of each candidate (teacher-forced), up to and including eos."""
    tgt_in = torch.cat([torch.full((len(seqs), 1), model.bos), seqs[:, :-1]], dim=1)
    logp = F.log_softmax(model(src.expand(len(seqs), -1), lengths.expand(len(seqs)), tgt_in), -1)
    tok = logp.gather(2, seqs.unsqueeze(-1)).squeeze(-1)
    ended = torch.cumsum(seqs == model.eos, dim=1)
    alive = (ended - (seqs == model.eos).long()) == 0       # up to and including the first eos
    return (tok * alive).sum(1), alive.sum(1)


def test_beam_search_as_wide_as_the_tree_is_exhaustive():
    # V=5 tokens, 3 steps: a beam of 25 keeps every prefix, so it must find the exact
    # best sequence, raw (length_penalty 0) and length-normalised (1)
    torch.manual_seed(1)
    model = Seq2Seq(9, 5, embed=4, hidden=6, layers=torch.nn, bos=1, eos=2).double().eval()
    src, lengths = torch.tensor([[3, 4, 5]]), torch.tensor([3])
    seqs = torch.tensor(list(itertools.product(range(5), repeat=3)))
    with torch.no_grad():
        logp, n = _sequence_logprob(model, src, lengths, seqs)
    for penalty in (0.0, 1.0):
        norm = logp / n.double() ** penalty
        tok, score = model.generate(src, lengths, beam=25, max_len=3, length_penalty=penalty)
        assert score.item() == pytest.approx(norm.max().item(), rel=1e-12)
        best = seqs[norm.argmax()]
        k = int(n[norm.argmax()])
        assert tok[0, :k].tolist() == best[:k].tolist()


def test_input_bias_is_a_constant_input_part():
    # gru(x, input_bias = W_c c) == gru([x; c]) with W_ih = [W_x, W_c]
    T, B, I, C, H = 5, 3, 4, 2, 6
    x, c = torch.randn(T, B, I, dtype=torch.float64), torch.randn(B, C, dtype=torch.float64)
    gru = torch.nn.GRU(I + C, H, dtype=torch.float64)
    w_ih, w_hh, b_ih, b_hh = gru._flat_weights
    h0 = torch.randn(1, B, H, dtype=torch.float64)
    ref, _ = gru(torch.cat([x, c.expand(T, B, C)], 2), h0)
    for backend in ("numba", "reference"):
        got, _ = functional.gru(x, h0, [w_ih[:, :I], w_hh, b_ih, b_hh], backend=backend,
                                input_bias=F.linear(c, w_ih[:, I:]).unsqueeze(0))
        assert_close(got, ref, 1e-12, backend)
    with pytest.raises(ValueError, match="input_bias must be"):
        functional.gru(x, h0, [w_ih[:, :I], w_hh, b_ih, b_hh], input_bias=torch.zeros(B, 3 * H))


def test_src_lengths_as_a_list_as_pack_padded_sequence_takes_them():
    ours, _ = _pair("reference")
    src, lengths, tgt = _batch()
    assert torch.equal(ours(src, lengths.tolist(), tgt), ours(src, lengths, tgt))
    assert all(torch.equal(a, b) for a, b in zip(ours.generate(src, lengths.tolist()),
                                                  ours.generate(src, lengths)))


def test_bad_arguments():
    model = Seq2Seq(9, 5, embed=4, hidden=6)
    with pytest.raises(ValueError, match="cell must be"):
        Seq2Seq(9, 5, cell="rnn")
    with pytest.raises(ValueError, match="src must be"):
        model.encode(torch.zeros(3, dtype=torch.int64), torch.tensor([3]))
    with pytest.raises(ValueError, match="beam and max_len"):
        model.generate(torch.ones(1, 3, dtype=torch.int64), torch.tensor([3]), beam=0)


def test_date_normalisation_reaches_95_percent():
    from fastrnn.models import dates
    model, data = dates.build(n_train=20000, n_test=1000)
    dates.train(model, data, steps=600)
    acc = dates.accuracy(model, *data["test"], data["tgt_vocab"])
    assert acc >= 0.95, f"held-out exact match {acc:.1%}"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", SEQUENCE)
@pytest.mark.parametrize("grad", [False, True])
def test_cell_input_bias_and_stepper_on_the_step_kernels(backend, cell, grad):
    # a per-row input bias through the fused step (no_grad) and the length-1 layer
    # (grad) equals the torch cell on the bias folded into its input
    B, I, H = 3, 4, 5
    dtype = _dtype(backend)
    twin = {"rnn": torch.nn.RNNCell, "gru": torch.nn.GRUCell, "lstm": torch.nn.LSTMCell}[cell](
        I + 1, H, dtype=dtype)
    w_ih, w_hh, b_ih, b_hh = twin.weight_ih, twin.weight_hh, twin.bias_ih, twin.bias_hh
    x, extra = torch.randn(B, I, dtype=dtype), torch.randn(B, 1, dtype=dtype)
    state = torch.randn(B, H, dtype=dtype)
    hx = (state, torch.randn(B, H, dtype=dtype)) if cell == "lstm" else state
    fn = getattr(functional, f"{cell}_cell")
    with torch.set_grad_enabled(grad):
        got = fn(x, hx, [w_ih[:, :I], w_hh, b_ih, b_hh], backend=backend,
                 input_bias=F.linear(extra, w_ih[:, I:]))
        ref = twin(torch.cat([x, extra], 1), hx)
        step = functional.stepper(cell, [w_ih[:, :I], w_hh, b_ih, b_hh], x, backend=backend,
                                  input_bias=F.linear(extra, w_ih[:, I:]))
        stepped = step(x, hx)
    for a, b, c in zip(*((got, ref, stepped) if cell == "lstm" else ((got,), (ref,), (stepped,)))):
        assert_close(a, b, _tol(backend), cell)
        assert_close(c, b, _tol(backend), f"{cell} stepper")
    with pytest.raises(ValueError, match="input_bias must be"):
        fn(x, hx, [w_ih[:, :I], w_hh, b_ih, b_hh], input_bias=torch.zeros(B, 2, dtype=dtype))


@pytest.mark.parametrize("backend", ["numba", "reference"])
def test_input_bias_gets_its_gradient_when_only_it_requires_one(backend):
    # frozen weights and input, a trainable context: autograd must still run the layer
    T, B, I, C, H = 4, 3, 2, 3, 5
    gru = torch.nn.GRU(I + C, H, dtype=torch.float64).requires_grad_(False)
    w_ih, w_hh, b_ih, b_hh = gru._flat_weights
    x, h0 = torch.randn(T, B, I, dtype=torch.float64), torch.zeros(1, B, H, dtype=torch.float64)
    c = torch.randn(B, C, dtype=torch.float64, requires_grad=True)
    out, _ = functional.gru(x, h0, [w_ih[:, :I], w_hh, b_ih, b_hh], backend=backend,
                            input_bias=F.linear(c, w_ih[:, I:]).unsqueeze(0))
    (got,) = torch.autograd.grad(out.square().sum(), c)
    ref_out, _ = gru(torch.cat([x, c.expand(T, B, C)], 2), h0)
    (ref,) = torch.autograd.grad(ref_out.square().sum(), c)
    assert_close(got, ref, 1e-12, "dL/dc")
