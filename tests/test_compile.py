"""torch.compile through fastrnn (fastrnn.ops): the launchers are custom ops while a graph
is traced, so a model holding fastrnn layers or cells compiles as one graph
(fullgraph=True), and its outputs and gradients equal eager fastrnn's. Most cases use
the aot_eager backend (Dynamo, fake tensors and AOTAutograd, which is what the ops must
satisfy); a few run inductor, the default backend, end to end. Drop-in layers need Dynamo's
allow_rnn (set here); cells and the functional API do not."""
import pytest
import torch
import torch._dynamo.testing

import fastrnn
from fastrnn.models import DeepRNN, Seq2Seq
from fastrnn.models.lm import LanguageModel

from helpers import assert_close

TOL = 1e-5


def _grads(module, *inputs):
    return [p.grad for p in module.parameters()] + [x.grad for x in inputs]


@pytest.fixture(autouse=True)
def allow_rnn():
    # the drop-in layers subclass torch.nn.RNN/GRU/LSTM, which Dynamo wraps only with
    # this flag (docs/layers.md: fastrnn does not set it for the user)
    with torch._dynamo.config.patch(allow_rnn=True):
        yield


def check_compiles(module, make_inputs, loss, backend="aot_eager"):
    """module(*inputs) compiled with fullgraph=True (0 graph breaks, else it raises) ->
    the same loss and gradients as eager; a second call with the same shapes does not
    recompile."""
    counter = torch._dynamo.testing.CompileCounterWithBackend(backend)
    torch._dynamo.reset()
    compiled = torch.compile(module, fullgraph=True, backend=counter)
    results, frames = [], []
    for run in (module, compiled, compiled):
        torch.manual_seed(0)
        module.zero_grad(set_to_none=True)
        inputs = make_inputs()
        value = loss(run(*inputs))
        value.backward()
        results.append((value.detach(), [g.clone() for g in _grads(module, *inputs)
                                         if g is not None]))
        frames.append(counter.frame_count)
    (want, want_g), (got, got_g), _ = results
    assert_close(got, want, TOL, "loss")
    assert len(got_g) == len(want_g) > 0
    for a, b in zip(got_g, want_g):
        assert_close(a, b, TOL, "gradient")
    assert frames[1] >= 1 and frames[2] == frames[1], f"compiled again for the same shapes: {frames}"


def _seq(T=6, B=3, I=8, batch_first=False):
    def make():
        shape = (B, T, I) if batch_first else (T, B, I)
        return (torch.randn(*shape, requires_grad=True),)
    return make


def _first(out):
    return out[0].square().sum() + sum(h.sum() for h in torch.utils._pytree.tree_leaves(out[1]))


@pytest.mark.parametrize("kind,opts", [
    ("RNN", dict(nonlinearity="relu")), ("RNN", dict(num_layers=2, bidirectional=True)),
    ("GRU", dict(num_layers=2, bidirectional=True)), ("GRU", dict(bias=False)),
    ("LSTM", dict(num_layers=2, bidirectional=True)), ("LSTM", dict(proj_size=5)),
    ("LSTM", dict(batch_first=True)), ("GRU", dict(num_layers=2, dropout=0.5)),
])
def test_layers_compile_as_one_graph(kind, opts):
    torch.manual_seed(0)
    layer = getattr(fastrnn, kind)(8, 16, **opts)
    layer.eval() if opts.get("dropout") else layer.train()
    check_compiles(layer, _seq(batch_first=opts.get("batch_first", False)), _first)


@pytest.mark.parametrize("kind", ["RNNCell", "GRUCell", "LSTMCell"])
def test_a_loop_over_a_cell_compiles_as_one_graph(kind):
    torch.manual_seed(0)
    cell = getattr(fastrnn, kind)(8, 16)

    class Loop(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = cell

        def forward(self, x):
            state, total = None, 0
            for t in range(x.shape[0]):
                state = self.cell(x[t], state)
                total = total + (state[0] if isinstance(state, tuple) else state).sum()
            return total
    check_compiles(Loop(), _seq(T=4), lambda v: v)


def test_a_tagger_compiles_with_inductor():
    # Embedding -> 2-layer bidirectional fastrnn.LSTM -> Linear, the default backend
    class Tagger(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.e = torch.nn.Embedding(50, 16)
            self.r = fastrnn.LSTM(16, 32, num_layers=2, bidirectional=True)
            self.o = torch.nn.Linear(64, 50)

        def forward(self, x):
            return self.o(torch.relu(self.r(self.e(x))[0]))
    torch.manual_seed(0)
    tagger = Tagger()
    explained = torch._dynamo.explain(tagger)(torch.randint(0, 50, (7, 3)))
    assert (explained.graph_count, explained.graph_break_count) == (1, 0)
    check_compiles(tagger, lambda: (torch.randint(0, 50, (7, 3)),),
                   lambda y: y.square().mean(), backend="inductor")


def test_a_new_length_does_not_recompile_with_dynamic_shapes():
    torch.manual_seed(0)
    layer = fastrnn.GRU(8, 16)
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    torch._dynamo.reset()
    compiled = torch.compile(layer, fullgraph=True, dynamic=True, backend=counter)
    frames = []
    for T in (5, 9, 13):
        x = torch.randn(T, 3, 8)
        assert_close(compiled(x)[0], layer(x)[0], TOL, f"T={T}")
        frames.append(counter.frame_count)
    assert frames[0] >= 1 and frames[2] == frames[0], frames


def test_models_compile_as_one_graph():
    torch.manual_seed(0)
    deep = DeepRNN("lstm", input_size=8, hidden_size=16, num_layers=3, residual=True)
    check_compiles(deep, _seq(), _first)
    lm = LanguageModel(30, embed=8, hidden=16, num_layers=2)
    check_compiles(lm, lambda: (torch.randint(0, 30, (6, 3)),), lambda out: out[0].mean())


def greedy_decoder(E, H, steps, device="cpu"):
    """-> greedy(h, token): ``steps`` tokens decoded by an Embedding -> fastrnn.GRUCell ->
    Linear loop over a vocabulary of 20."""
    embed, cell = torch.nn.Embedding(20, E).to(device), fastrnn.GRUCell(E, H).to(device)
    head = torch.nn.Linear(H, 20).to(device)

    def greedy(h, token):
        tokens = []
        for _ in range(steps):
            h = cell(embed(token), h)
            token = head(h).argmax(-1)
            tokens.append(token)
        return torch.stack(tokens)
    return greedy


def fastrnn_ops(fn, *args):
    """-> (fn(*args) compiled with fullgraph=True, the fastrnn ops its graphs call, by name)."""
    seen = []

    def backend(gm, example_inputs):
        seen.extend(str(n.target) for n in gm.graph.nodes
                    if n.op == "call_function" and "fastrnn" in str(n.target))
        return gm.forward
    torch._dynamo.reset()
    return torch.compile(fn, fullgraph=True, backend=backend)(*args), seen


def test_greedy_decoding_compiles_as_one_graph_of_step_ops():
    # a decoding loop over a GRUCell under no_grad: one graph, the tokens of eager, and
    # each step one fused step op (not a length-1 sequence)
    torch.manual_seed(0)
    greedy = greedy_decoder(8, 16, 5)
    h, token = torch.randn(3, 16), torch.tensor([1, 2, 3])
    with torch.no_grad():
        want = greedy(h, token)
        got, seen = fastrnn_ops(greedy, h, token)
    assert torch.equal(got, want)
    assert seen == ["fastrnn.gru_step.default"] * 5, seen


@pytest.mark.parametrize("made", ["eagerly", "in the graph"])
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_a_stepper_compiles_to_one_step_op_a_token(cell, made):
    # functional.stepper (Seq2Seq's decoder step): made before compiling and called in
    # the graph, or made in it; with a per-row input bias, as the decoder's context
    from fastrnn import functional
    torch.manual_seed(0)
    mod = getattr(fastrnn, f"{cell.upper()}Cell")(8, 16)
    weights = [mod.weight_ih, mod.weight_hh, mod.bias_ih, mod.bias_hh]
    h = torch.randn(3, 16)
    state = (h, torch.randn(3, 16)) if cell == "lstm" else h
    bias, xs = torch.randn(3, weights[0].shape[0]), torch.randn(4, 3, 8)

    def decode(xs, state, step=None):
        step = step or functional.stepper(cell, weights, xs[0], input_bias=bias)
        for x in xs:
            state = step(x, state)
        return state
    with torch.no_grad():
        want = decode(xs, state)
        eager = functional.stepper(cell, weights, xs[0], input_bias=bias)
        fn = (lambda xs, s: decode(xs, s, eager)) if made == "eagerly" else decode
        got, seen = fastrnn_ops(fn, xs, state)
    for a, b in zip(torch.utils._pytree.tree_leaves(got), torch.utils._pytree.tree_leaves(want)):
        assert_close(a, b, TOL, "state")
    assert seen == [f"fastrnn.{cell}_step.default"] * 4, seen


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_seq2seq_teacher_forcing_compiles_as_one_graph(cell):
    # the encoder takes the source lengths straight (no pack_padded_sequence, which
    # Dynamo skips), the decoder is one layer call over the target
    torch.manual_seed(0)
    model = Seq2Seq(20, 20, embed=8, hidden=16, enc_layers=2, cell=cell)

    def make():
        return (torch.randint(3, 20, (3, 6)), torch.tensor([6, 4, 2]),
                torch.randint(3, 20, (3, 5)))
    check_compiles(model, make, lambda logits: logits.square().mean())


def test_seq2seq_generate_compiles_with_a_break_at_each_early_stop_check():
    # beam search stops when every beam has ended: a host decision on the data (the
    # tokens' length is the steps run), so generate cannot be one graph; each step
    # between those checks is, and the results are eager's
    torch.manual_seed(0)
    model = Seq2Seq(20, 20, embed=8, hidden=16).eval()
    src, lengths = torch.randint(3, 20, (3, 6)), torch.tensor([6, 4, 2])
    want = model.generate(src, lengths, beam=2, max_len=5)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(model.generate)(src, lengths, beam=2, max_len=5)
    assert explained.graph_break_count >= 1
    for reason in explained.break_reasons:
        assert any("done.all()" in (f.line or "") for f in reason.user_stack), reason
    torch._dynamo.reset()
    got = torch.compile(model.generate, backend="aot_eager")(src, lengths, beam=2, max_len=5)
    assert torch.equal(got[0], want[0])
    assert_close(got[1], want[1], TOL, "scores")


def test_the_ops_are_used_only_while_compiling(monkeypatch):
    # eager calls run the Functions and launchers directly: no dispatcher in the way
    from fastrnn import ops
    monkeypatch.setattr(ops, "lstm_fwd", lambda *a: pytest.fail("custom op used eagerly"))
    out, _ = fastrnn.LSTM(8, 16)(torch.randn(4, 2, 8, requires_grad=True))
    out.sum().backward()


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_lengths_compile_as_one_graph(cell):
    # per-row lengths given straight to the functional API (as Seq2Seq's encoder does):
    # one graph, their range checked when it runs (torch._assert_async)
    from fastrnn import functional
    torch.manual_seed(0)
    layer = getattr(fastrnn, cell.upper())(8, 16, bidirectional=True)

    class Lengths(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = layer

        def forward(self, x, lengths):
            h0 = x.new_zeros(2, x.shape[1], 16)
            return getattr(functional, cell)(x, (h0, h0) if cell == "lstm" else h0,
                                             self.layer._flat_weights, bidirectional=True,
                                             lengths=lengths)
    check_compiles(Lengths(), lambda: (torch.randn(6, 3, 8, requires_grad=True),
                                       torch.tensor([6, 2, 4])), _first)


def test_lengths_out_of_range_fail_in_a_compiled_graph():
    from fastrnn import functional
    layer = fastrnn.GRU(4, 5)
    run = torch.compile(lambda x, n: functional.gru(x, x.new_zeros(1, 2, 5), layer._flat_weights,
                                                    lengths=n)[0], fullgraph=True,
                        backend="aot_eager")
    torch._dynamo.reset()
    x = torch.randn(3, 2, 4)
    assert_close(run(x, torch.tensor([3, 1])), functional.gru(
        x, x.new_zeros(1, 2, 5), layer._flat_weights, lengths=torch.tensor([3, 1]))[0], TOL, "out")
    with pytest.raises(RuntimeError, match="lengths must lie in"):
        run(x, torch.tensor([4, 1]))


def test_packed_input_compiles_with_graph_breaks():
    # torch's pack_padded_sequence is on Dynamo's skip list, and a PackedSequence's batch
    # size is its data (batch_sizes[0]): such calls compile in pieces (not fullgraph),
    # same numbers
    from torch.nn.utils.rnn import pack_padded_sequence
    torch.manual_seed(0)
    lstm = fastrnn.LSTM(4, 5)
    x = torch.randn(3, 2, 4)

    def packed(x):
        return lstm(pack_padded_sequence(x, [3, 2]))[0].data.sum()
    torch._dynamo.reset()
    assert_close(torch.compile(packed, backend="aot_eager")(x), packed(x), TOL, "packed")
    with pytest.raises(torch._dynamo.exc.Unsupported):
        torch._dynamo.reset()
        torch.compile(packed, fullgraph=True, backend="aot_eager")(x)


def test_tree_nets_run_eagerly_under_compile():
    # a Forest is host data that changes with every batch: not a graph node. The call
    # runs eagerly (a graph break on each side); fullgraph=True says so
    net, forest = fastrnn.ChildSumTreeLSTM(4, 5), fastrnn.Forest([-1, 0, 0, 1])
    x = torch.randn(4, 4)

    def run(x):
        return net(x, forest)[0].sum()
    torch._dynamo.reset()
    assert_close(torch.compile(run, backend="aot_eager")(x), run(x), TOL, "tree")
    with pytest.raises(torch._dynamo.exc.Unsupported, match="Forest"):
        torch._dynamo.reset()
        torch.compile(run, fullgraph=True, backend="aot_eager")(x)


def test_cells_need_no_flag_and_layers_compile_without_it_in_pieces():
    with torch._dynamo.config.patch(allow_rnn=False):
        cell = fastrnn.LSTMCell(8, 16)
        x = torch.randn(3, 8)
        torch._dynamo.reset()
        got = torch.compile(lambda x: cell(x)[0].sum(), fullgraph=True, backend="aot_eager")(x)
        assert_close(got, cell(x)[0].sum(), TOL, "cell")
        layer = fastrnn.GRU(8, 16)
        x = torch.randn(5, 3, 8)
        torch._dynamo.reset()
        got = torch.compile(lambda x: layer(x)[0].sum(), backend="aot_eager")(x)
        assert_close(got, layer(x)[0].sum(), TOL, "layer")



# ----------------------------------------------------------------- on a CUDA device
@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_on_cuda_a_training_step_and_a_decoding_loop(mode):
    # the Triton kernels as custom ops; reduce-overhead replays them from CUDA graphs
    torch.manual_seed(0)
    lstm = fastrnn.LSTM(32, 64, num_layers=2).cuda()
    x = torch.randn(20, 8, 32, device="cuda")
    torch._dynamo.reset()
    step = torch.compile(lambda x: lstm(x)[0].square().mean(), mode=mode, fullgraph=True)
    for _ in range(3):                           # warm-up runs, then the captured graph
        lstm.zero_grad(set_to_none=True)
        got = step(x)
        got.backward()
    grads = [p.grad.clone() for p in lstm.parameters()]
    lstm.zero_grad(set_to_none=True)
    want = lstm(x)[0].square().mean()
    want.backward()
    assert_close(got, want, 1e-4, "loss")
    for a, p in zip(grads, lstm.parameters()):
        assert_close(a, p.grad, 1e-4, "gradient")

    greedy = greedy_decoder(16, 32, 6, "cuda")
    h, token = torch.randn(4, 32, device="cuda"), torch.tensor([1, 2, 3, 4], device="cuda")
    decode = torch.compile(greedy, mode=mode, fullgraph=True)
    with torch.no_grad():
        for _ in range(3):
            got = decode(h, token)
        assert torch.equal(got, greedy(h, token))
