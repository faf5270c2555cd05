"""Deployment paths: under an exporter or tracer the drop-in modules give the graph torch's
own module gives, from the same parameters, never the kernels' outputs baked in as
constants; torch.jit.script scripts the torch twin.

Per case (every cell kind, with bidirectional, 2 layers, batch_first, proj_size, given
states, and the cells) and per path (torch.export, both ONNX exporters, jit.trace,
jit.script): the artifact has the same operators as torch's module's, its outputs
depend on its inputs, and it reproduces the eager fastrnn module on a different input
than the one it was traced with (ONNX graphs run in onnxruntime). Where torch's own
module cannot take a path (ONNX of LSTM with proj_size, TorchScript exporter), fastrnn
fails with the same error.
"""
import io
import logging
import warnings

import pytest
import torch

import fastrnn
from fastrnn import nn as fnn
from fastrnn.cells import CELLS as TABLE, SEQUENCE

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

SEQ = {   # name: (class, kwargs, states given)
    "lstm": (fastrnn.LSTM, {}, False),
    "lstm_bidirectional_2_layers": (fastrnn.LSTM, dict(num_layers=2, bidirectional=True), False),
    "lstm_batch_first_states": (fastrnn.LSTM, dict(batch_first=True), True),
    "lstm_proj_size": (fastrnn.LSTM, dict(proj_size=4), False),
    "gru_bidirectional_2_layers_batch_first": (
        fastrnn.GRU, dict(num_layers=2, bidirectional=True, batch_first=True), False),
    "gru_states": (fastrnn.GRU, {}, True),
    "rnn_tanh_2_layers": (fastrnn.RNN, dict(num_layers=2), False),
    "rnn_relu_bidirectional": (fastrnn.RNN, dict(nonlinearity="relu", bidirectional=True), True),
}
CELLS = {f"{c}_cell": getattr(fastrnn, TABLE[c].torch_cell) for c in SEQUENCE}
# paths where torch's own module exports a graph that does not run, and fastrnn refuses
# with a clear error instead (test_torchs_own_export_is_broken_where_fastrnn_refuses)
REFUSED = {("lstm_proj_size", "onnx_dynamo"): "projections",
           ("lstm_proj_size", "onnx"): "projections"}     # torch: SymbolicValueError
# ONNX names its recurrent ops as torch.nn names the modules
ONNX_RECURRENT = {getattr(fastrnn, TABLE[c].torch_layer): TABLE[c].torch_layer for c in SEQUENCE}
I, H, T, B = 6, 5, 4, 3


def _case(name, seed):
    """-> (fastrnn module, inputs for tracing, other inputs of the same shapes)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=g)
    if name in CELLS:
        m = CELLS[name](I, H)
        make = (lambda: (rand(B, I), (rand(B, H), rand(B, H)))) if name == "lstm_cell" else \
            (lambda: (rand(B, I), rand(B, H)))
        return m, make(), make()
    cls, kw, states = SEQ[name]
    m = cls(I, H, **kw)
    D, L = 1 + m.bidirectional, m.num_layers
    P = m.proj_size if cls is fastrnn.LSTM and m.proj_size else H

    def make():
        x = rand(B, T, I) if m.batch_first else rand(T, B, I)
        if not states:
            return (x,)
        h0 = rand(D * L, B, P)
        return (x, (h0, rand(D * L, B, H))) if cls is fastrnn.LSTM else (x, h0)
    return m, make(), make()


def _flat(args):
    if isinstance(args, torch.Tensor):
        return [args]
    out = []
    for a in args:
        out.extend(_flat(a) if isinstance(a, (tuple, list)) else [a])
    return out


# ------------------------------------------------------------------ the paths
# each: module, args -> artifact; signature(artifact) (the operators); run(artifact, args)
def _export(m, args):
    return torch.export.export(m, args)


def _export_sig(ep):
    assert sum(s.kind.name == "USER_INPUT" for s in ep.graph_signature.input_specs) == \
        len(_flat(ep.example_inputs[0])), "the program must take the inputs"
    return sorted(str(n.target) for n in ep.graph.nodes if n.op == "call_function")


def _onnx(dynamo):
    def export(m, args):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if dynamo:
                return torch.onnx.export(m, args, dynamo=True, verbose=False).model_proto
            f = io.BytesIO()
            torch.onnx.export(m, args, f, dynamo=False)
            return onnx.load_from_string(f.getvalue())
    return export


def _onnx_sig(model):
    assert_live(model)
    return sorted(n.op_type for n in model.graph.node if n.op_type != "Constant")


def _onnx_run(model, args):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    return sess.run(None, dict(zip(names, (t.numpy() for t in _flat(args)))))


def assert_live(model):
    """Every output of an ONNX graph depends on a graph input (a model baked into
    constants has outputs made of Constant nodes only)."""
    inputs = {i.name for i in model.graph.input}
    assert inputs, "the graph has no inputs"
    producer = {o: n for n in model.graph.node for o in n.output}

    def live(name, seen):
        if name in inputs:
            return True
        if name in seen or name not in producer:
            return False
        seen.add(name)
        return any(live(i, seen) for i in producer[name].input if i)
    for out in model.graph.output:
        assert live(out.name, set()), f"output {out.name!r} does not depend on any input"


def _trace(m, args):
    return torch.jit.trace(m, args)


def _jit_sig(mod):
    # every method's graph (a scripted LSTM has overloads in place of one forward)
    kinds = []
    for name in mod._c._method_names():
        g = mod._c._get_method(name).graph
        assert not name.startswith("forward") or list(g.inputs())[1:], \
            f"{name}'s graph takes no inputs"
        kinds += [n.kind() for n in g.nodes() if n.kind() != "prim::Constant"]
    return sorted(kinds)


PATHS = {
    "torch.export": (_export, _export_sig, lambda ep, a: ep.module()(*a)),
    "onnx": (_onnx(False), _onnx_sig, _onnx_run),
    "onnx_dynamo": (_onnx(True), _onnx_sig, _onnx_run),
    "jit.trace": (_trace, _jit_sig, lambda mod, a: mod(*a)),
    "jit.script": (lambda m, a: torch.jit.script(m), _jit_sig, lambda mod, a: _call(mod, a)),
}


def _call(scripted, args):
    # a scripted torch.nn.RNN/GRU/LSTM has its forward overloads (tensor, packed) as
    # forward__0 and forward__1 and no forward: torch's own, as a module called from
    # another scripted module it resolves the overload
    names = scripted._c._method_names()
    return scripted(*args) if "forward" in names else scripted.forward__0(*args)


@pytest.fixture(autouse=True)
def _quiet():
    logging.disable(logging.WARNING)     # the dynamo exporter's torchvision notes
    yield
    logging.disable(logging.NOTSET)


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("case", list(SEQ) + list(CELLS))
def test_export_gives_torchs_graph_and_runs_on_new_inputs(case, path):
    export, signature, run = PATHS[path]
    m, args, other = _case(case, seed=1)
    twin = fastrnn.to_torch(m)
    assert type(twin).__module__ == "torch.nn.modules.rnn"
    assert all(a is b for a, b in zip(twin.parameters(), m.parameters()))
    if (case, path) in REFUSED:
        with pytest.raises(RuntimeError, match=REFUSED[case, path]):
            export(m, args)
        return
    try:
        expected_art = export(twin, args)
    except Exception as e:                   # torch's own module cannot take this path
        with pytest.raises(type(e)):
            export(m, args)
        return
    art = export(m, args)
    assert signature(art) == signature(expected_art)
    if path == "onnx" and case in SEQ:
        assert ONNX_RECURRENT[SEQ[case][0]] in signature(art)
    with torch.no_grad():
        want = _flat(m(*other))              # eager: fastrnn's kernels
        got = _flat(run(art, other))
    assert len(got) == len(want)
    for w, g in zip(want, got):
        torch.testing.assert_close(torch.as_tensor(g), w, rtol=1e-4, atol=1e-5)


def test_torchs_own_export_is_broken_where_fastrnn_refuses():
    # the dynamo ONNX exporter writes torch.nn.LSTM(proj_size=...) as an ONNX LSTM whose
    # initial c has the projected size: onnxruntime rejects it
    m, args, _ = _case("lstm_proj_size", seed=1)
    model = _onnx(True)(fastrnn.to_torch(m), args)
    with pytest.raises(Exception, match="initial_c"):
        _onnx_run(model, args)


def test_a_model_baked_into_constants_fails_the_checks(monkeypatch):
    # the defect this guards against: with the kernels running under the tracer, the
    # TorchScript ONNX exporter records their outputs as constants
    monkeypatch.setattr(fnn, "_recording", lambda input: False)
    monkeypatch.setattr(fastrnn.backends, "recording", lambda input: False)
    m, args, _ = _case("lstm", seed=1)
    try:
        model = _onnx(False)(m, args)
    except Exception:
        return                               # failing loudly is also not baking
    with pytest.raises(AssertionError):
        _onnx_sig(model)


def test_models_containing_fastrnn_layers_export_and_script():
    class Tagger(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = fastrnn.GRU(I, H, batch_first=True, bidirectional=True)
            self.out = torch.nn.Linear(2 * H, 3)

        def forward(self, x):
            return self.out(self.rnn(x)[0])
    torch.manual_seed(0)
    model, x, y = Tagger(), torch.randn(2, T, I), torch.randn(2, T, I)
    with torch.no_grad():
        want = model(y)
        ep = torch.export.export(model, (x,))
        torch.testing.assert_close(ep.module()(y), want, rtol=1e-4, atol=1e-5)
        scripted = torch.jit.script(model)           # swaps in the torch twin (shared weights)
        torch.testing.assert_close(scripted(y), want, rtol=1e-4, atol=1e-5)


def test_to_torch_converts_in_place_with_shared_weights():
    model = torch.nn.Sequential(fastrnn.LSTM(I, H), torch.nn.Identity())
    model[0].backend = "reference"
    lstm = model[0]
    assert fastrnn.to_torch(model) is model
    assert type(model[0]) is torch.nn.LSTM and not hasattr(model[0], "backend")
    assert model[0].weight_hh_l0 is lstm.weight_hh_l0
    with torch.no_grad():
        model[0].weight_hh_l0.add_(1.0)               # shared: the fastrnn layer sees it
    x = torch.randn(T, B, I)
    torch.testing.assert_close(model[0](x)[0], lstm(x)[0], rtol=1e-4, atol=1e-5)


def test_tree_nets_refuse_tracing_and_scripting_clearly():
    model = fastrnn.ChildSumTreeLSTM(3, 4)
    forest = fastrnn.Forest([-1, 0, 0])
    with pytest.raises(RuntimeError, match="cannot be scripted"):
        torch.jit.script(model)

    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.tree = model

        def forward(self, x):
            return self.tree(x, forest)[0]
    with pytest.raises(Exception, match="cannot be traced or exported"):
        torch.export.export(Wrap(), (torch.randn(3, 3),))


def test_an_explicit_kernel_backend_under_export_is_a_clear_error():
    from fastrnn import functional

    class F(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.RNN(I, H)

        def forward(self, x):
            return functional.rnn(x, x.new_zeros(1, B, H), self.rnn._flat_weights,
                                  backend="numba")[0]
    with pytest.raises(Exception, match="cannot run while torch traces or exports"):
        torch.export.export(F(), (torch.randn(T, B, I),))
