"""fastrnn.RNN/GRU/LSTM and the cells as drop-in replacements of the torch.nn classes."""
import contextlib
import itertools

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fastrnn
from fastrnn.cells import CELLS as TABLE, SEQUENCE
from helpers import assert_close

TOL = 2e-5


def _variants(cell):
    # a cell's options, each value once (the RNN's two nonlinearities)
    if "nonlinearity" in TABLE[cell].options:
        return [dict(nonlinearity="tanh"), dict(nonlinearity="relu")]
    return [{}]


# every sequence cell of the table, each option, and a projection where it takes one
KINDS = {"_".join([c, *o.values()]): (TABLE[c].torch_layer, o)
         for c in SEQUENCE for o in _variants(c)}
KINDS.update({f"{c}_proj": (TABLE[c].torch_layer, dict(proj_size=3))
              for c in SEQUENCE if TABLE[c].projection})


def _states(cls):
    # how many states a torch.nn cell class carries (LSTMCell: h and c)
    return next(len(c.states) for c in TABLE.values() if c.torch_cell == cls)


def pair(*args, kind="rnn_tanh", **kwargs):
    cls, extra = KINDS[kind]
    torch.manual_seed(1)
    ours = getattr(fastrnn, cls)(*args, **extra, **kwargs)
    theirs = getattr(torch.nn, cls)(*args, **extra, **kwargs)
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def initial_state(m, B):
    D = 2 if m.bidirectional else 1
    dtype = m.weight_hh_l0.dtype
    h = torch.randn(m.num_layers * D, B, getattr(m, "proj_size", 0) or m.hidden_size, dtype=dtype)
    if isinstance(m, torch.nn.LSTM):
        return (h, torch.randn(m.num_layers * D, B, m.hidden_size, dtype=dtype))
    return h


def states(h):
    return list(h) if isinstance(h, tuple) else [h]


def grads(module):
    return {n: p.grad for n, p in module.named_parameters()}


MATRIX = list(itertools.product([True, False], [False, True], [False, True], [False, True], [1, 2]))


@pytest.mark.parametrize("bias,bidirectional,batch_first,packed,layers", MATRIX)
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_parity_with_torch(kind, bias, bidirectional, batch_first, packed, layers, dtype):
    # float64 also covers its own GEMM path outside the kernels (gemm_layout._mm)
    tol = TOL if dtype == torch.float32 else 1e-12
    ours, theirs = pair(4, 6, layers, kind=kind, bias=bias, batch_first=batch_first,
                        bidirectional=bidirectional, dtype=dtype)
    T, B = 7, 5
    x = torch.randn(B, T, 4, dtype=dtype) if batch_first else torch.randn(T, B, 4, dtype=dtype)
    hx = initial_state(ours, B)
    lengths = torch.tensor([7, 3, 5, 1, 6])
    results = []
    for m in (ours, theirs):
        xi = x.clone().requires_grad_()
        hi = [h.clone().requires_grad_() for h in states(hx)]
        inp = pack_padded_sequence(xi, lengths, batch_first=batch_first, enforce_sorted=False) \
            if packed else xi
        out, h_n = m(inp, tuple(hi) if isinstance(hx, tuple) else hi[0])
        data = out.data if packed else out
        g = torch.Generator().manual_seed(3)
        loss = (data * torch.randn(data.shape, generator=g)).sum()
        for h in states(h_n):
            loss = loss + (h * torch.randn(h.shape, generator=g)).sum()
        loss.backward()
        results.append((out, states(h_n), xi.grad, [h.grad for h in hi], grads(m)))
    (o1, h1, gx1, gh1, gw1), (o2, h2, gx2, gh2, gw2) = results
    if packed:
        assert torch.equal(o1.batch_sizes, o2.batch_sizes)
        assert torch.equal(o1.sorted_indices, o2.sorted_indices)
        o1, o2 = o1.data, o2.data
    assert_close(o1, o2, tol, "output")
    for a, b in zip(h1 + gh1, h2 + gh2):
        assert_close(a, b, tol, "final state / its gradient")
    assert_close(gx1, gx2, tol, "d input")
    for name in gw2:
        assert_close(gw1[name], gw2[name], tol, name)


def _close_states(a, b, tol, what):
    for x, y in zip(states(a), states(b)):
        assert x.shape == y.shape
        assert_close(x, y, tol, what)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("batch_first", [False, True])
def test_unbatched_and_default_state(kind, batch_first):
    ours, theirs = pair(3, 5, 2, kind=kind, batch_first=batch_first)
    x = torch.randn(6, 3)
    (o1, h1), (o2, h2) = ours(x), theirs(x)
    assert o1.shape == o2.shape and o1.dim() == 2
    assert_close(o1, o2, TOL, "out")
    _close_states(h1, h2, TOL, "final state")
    hx = initial_state(ours, 1)
    hx = tuple(h[:, 0] for h in hx) if isinstance(hx, tuple) else hx[:, 0]
    _close_states(ours(x, hx)[1], theirs(x, hx)[1], TOL, "final state from given hx")


@pytest.mark.parametrize("kind", list(KINDS))
def test_enforce_sorted_packed_and_sorted(kind):
    ours, theirs = pair(3, 4, kind=kind)
    x = torch.randn(5, 3, 3)
    p = pack_padded_sequence(x, torch.tensor([5, 4, 2]), enforce_sorted=True)
    (o1, h1), (o2, h2) = ours(p), theirs(p)
    assert_close(o1.data, o2.data, TOL, "packed out")
    _close_states(h1, h2, TOL, "final state")


@pytest.mark.parametrize("kind", list(KINDS))
def test_same_init_and_state_dict_both_ways(kind):
    cls, extra = KINDS[kind]
    make = lambda mod: getattr(mod, cls)(3, 4, 2, bidirectional=True, **extra)  # noqa: E731
    torch.manual_seed(5)
    a = make(fastrnn)
    torch.manual_seed(5)
    b = make(torch.nn)
    assert [n for n, _ in a.named_parameters()] == [n for n, _ in b.named_parameters()]
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), n
    make(torch.nn).load_state_dict(a.state_dict())
    a.load_state_dict(make(torch.nn).state_dict())
    assert isinstance(a, getattr(torch.nn, cls))


@pytest.mark.parametrize("kind", list(KINDS))
def test_dropout_train_matches_torch_and_eval_is_deterministic(kind):
    ours, theirs = pair(3, 8, 3, kind=kind, dropout=0.5)
    x = torch.randn(4, 2, 3)
    torch.manual_seed(9)
    o1, _ = ours(x)
    torch.manual_seed(9)
    o2, _ = theirs(x)
    assert_close(o1, o2, TOL, "train-mode output (same dropout masks)")
    ours.eval(), theirs.eval()
    assert_close(ours(x)[0], theirs(x)[0], TOL, "eval output")
    assert torch.equal(ours(x)[0], ours(x)[0])


@pytest.mark.parametrize("kind", list(KINDS))
def test_zero_batch(kind):
    ours, theirs = pair(3, 4, kind=kind)
    (o1, h1), (o2, h2) = ours(torch.randn(5, 0, 3)), theirs(torch.randn(5, 0, 3))
    assert o1.shape == o2.shape
    assert [h.shape for h in states(h1)] == [h.shape for h in states(h2)]


@pytest.mark.parametrize("kind", list(KINDS))
def test_float64_module(kind):
    ours, theirs = pair(3, 4, kind=kind, dtype=torch.float64)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    assert_close(ours(x)[0], theirs(x)[0], 1e-12, "float64 out")


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nan_and_inf_inputs_like_torch(kind, dtype):
    # the vectorised activations clamp their arguments; NaN must still propagate
    # and +-inf saturate exactly where torch's do
    ours, theirs = pair(4, 4, kind=kind, dtype=dtype)
    x = torch.randn(3, 2, 4, dtype=dtype)
    x[1, 0, 2], x[0, 1, 1], x[2, 1, 3] = float("nan"), float("inf"), -float("inf")
    a, b = ours(x)[0], theirs(x)[0]
    assert torch.equal(a.isnan(), b.isnan()) and a.isnan().any()
    assert_close(a.nan_to_num(), b.nan_to_num(), 1e-5 if dtype == torch.float32 else 1e-12,
                 "finite outputs")


@pytest.mark.parametrize("backend", ["numba", "triton"])      # triton: the interpreter
@pytest.mark.parametrize("chunk_steps", [1, 3, 100])
@pytest.mark.parametrize("bidirectional,packed,layers", [(False, False, 1), (True, True, 2)])
@pytest.mark.parametrize("kind", list(KINDS))
def test_inference_in_time_chunks(kind, bidirectional, packed, layers, chunk_steps, backend,
                                  monkeypatch):
    # under no_grad a layer runs its input projection in time chunks (functional._infer),
    # each chunk from the states the one before left, with per-row lengths cut per chunk
    from fastrnn import functional
    ours, theirs = pair(4, 6, layers, kind=kind, bidirectional=bidirectional)
    ours.backend = backend
    T, B = 7, 5
    G = TABLE[kind.split("_")[0]].gates * 6
    monkeypatch.setattr(functional, "INFERENCE_CHUNK_BYTES", chunk_steps * B * G * 4)
    x, hx = torch.randn(T, B, 4), initial_state(ours, B)
    inp = pack_padded_sequence(x, torch.tensor([7, 3, 5, 1, 6]), enforce_sorted=False) \
        if packed else x
    with torch.no_grad():
        (a, ha), (b, hb) = ours(inp, hx), theirs(inp, hx)
    assert_close(a.data if packed else a, b.data if packed else b, TOL, "output")
    _close_states(ha, hb, TOL, "final states")


@pytest.mark.parametrize("backend", ["numba", "reference", "triton"])
def test_explicit_backends(backend):
    ours, theirs = pair(3, 5, batch_first=True)
    ours.backend = backend
    x = torch.randn(2, 4, 3)
    assert_close(ours(x)[0], theirs(x)[0], TOL, backend)


@pytest.mark.parametrize("kind", list(KINDS))
def test_gradgradcheck_through_module(kind):
    cls, extra = KINDS[kind]
    m = getattr(fastrnn, cls)(2, 4, dtype=torch.float64, **extra)
    x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda inp: m(inp)[0], (x,))


# ------------------------------------------------------------------ cells
CELLS = [(TABLE[c].torch_cell, o) for c in SEQUENCE for o in _variants(c)]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("cls,extra", CELLS)
def test_cell_parity(cls, extra, bias):
    torch.manual_seed(2)
    ours = getattr(fastrnn, cls)(3, 5, bias=bias, **extra)
    theirs = getattr(torch.nn, cls)(3, 5, bias=bias, **extra)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(4, 3)
    hx = [torch.randn(4, 5) for _ in range(_states(cls))]
    res = []
    for m in (ours, theirs):
        xi = x.clone().requires_grad_()
        hi = [h.clone().requires_grad_() for h in hx]
        y = m(xi, tuple(hi) if len(hi) == 2 else hi[0])
        sum(v.pow(2).sum() for v in states(y)).backward()
        res.append((states(y) + [xi.grad] + [h.grad for h in hi], grads(m)))
    for a, b in zip(res[0][0], res[1][0]):
        assert_close(a, b, TOL)
    for n in res[1][1]:
        assert_close(res[0][1][n], res[1][1][n], TOL, n)
    _close_states(ours(x[0]), theirs(x[0]), TOL, "unbatched, no hx")
    assert [v.shape for v in states(ours(torch.randn(0, 3)))] == \
        [v.shape for v in states(theirs(torch.randn(0, 3)))]


class _Double(torch.nn.Module):
    def forward(self, w):
        return 2 * w


@pytest.mark.parametrize("cls,extra", CELLS)
def test_cell_with_a_parametrized_weight(cls, extra):
    # the cells read plain parameters from _parameters (fast); a parametrized weight is
    # no longer there and must still be read through the module, with its gradient
    from torch.nn.utils import parametrize
    torch.manual_seed(4)
    ours = getattr(fastrnn, cls)(3, 5, **extra)
    theirs = getattr(torch.nn, cls)(3, 5, **extra)
    theirs.load_state_dict(ours.state_dict())
    for m in (ours, theirs):
        parametrize.register_parametrization(m, "weight_hh", _Double())
    x = torch.randn(4, 3)
    with torch.no_grad():
        _close_states(ours(x), theirs(x), TOL, "parametrized, no grad")
    for m in (ours, theirs):
        sum(v.sum() for v in states(m(x))).backward()
    a, b = (m.parametrizations.weight_hh.original.grad for m in (ours, theirs))
    assert_close(a, b, TOL, "grad of the parametrized weight")


@pytest.mark.parametrize("products", ["kernel", "torch"])
@pytest.mark.parametrize("B,I,H", [(4, 3, 5), (1, 7, 1), (40, 130, 160)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cls,extra", CELLS)
def test_cell_decoding_step(cls, extra, dtype, B, I, H, products, monkeypatch):
    # under no_grad the cells take the fused step kernel (one chunk and rows split
    # across threads), never the sequence path; its products formed in the kernel or,
    # at any size here, by torch's GEMM (what a large step takes where that GEMM is the
    # faster: step._given)
    import fastrnn.functional as F
    from fastrnn.kernels.numba import matmul, step
    for name in SEQUENCE:
        monkeypatch.setattr(F, name, lambda *a, **k: pytest.fail("sequence path used"))
    monkeypatch.setattr(matmul, "OWN", products == "kernel")
    monkeypatch.setattr(step, "TORCH_GEMM_WORK", 0)
    torch.manual_seed(3)
    for bias in (True, False):
        ours = getattr(fastrnn, cls)(I, H, bias=bias, dtype=dtype, **extra)
        theirs = getattr(torch.nn, cls)(I, H, bias=bias, dtype=dtype, **extra)
        theirs.load_state_dict(ours.state_dict())
        x = torch.randn(B, I, dtype=dtype)
        hx = [torch.randn(B, H, dtype=dtype) for _ in range(_states(cls))]
        hx = tuple(hx) if len(hx) == 2 else hx[0]
        tol = 1e-12 if dtype == torch.float64 else 2e-5
        with torch.no_grad():
            _close_states(ours(x, hx), theirs(x, hx), tol, f"{cls} bias={bias}")
            _close_states(ours(x[0]), theirs(x[0]), tol, "unbatched, no hx")
            assert [v.shape for v in states(ours(x[:0]))] == [v.shape for v in states(theirs(x[:0]))]


@pytest.mark.parametrize("bias,bidirectional,layers", [(True, False, 1), (False, True, 2)])
@pytest.mark.parametrize("kind", list(KINDS))
def test_layer_decoding_step(kind, bias, bidirectional, layers, monkeypatch):
    # a length-1 input under no_grad (decoding with the layer API) takes the fused
    # step kernel in every layer and direction, projection included
    import fastrnn.autograd as A
    for fn in (A.RNNFunction, A.GRUFunction, A.LSTMFunction):
        monkeypatch.setattr(fn, "apply", lambda *a: pytest.fail("sequence path used"))
    ours, theirs = pair(4, 6, layers, kind=kind, bias=bias, bidirectional=bidirectional)
    for B, hx in ((5, initial_state(ours, 5)), (3, None)):
        x = torch.randn(1, B, 4)
        with torch.no_grad():
            (o1, h1), (o2, h2) = ours(x, hx), theirs(x, hx)
        assert_close(o1, o2, TOL, "output")
        _close_states(h1, h2, TOL, "final state")


# ----------------------------------------------------------------- errors
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("call", [
    lambda m, hx: m(torch.randn(5, 2, 7)),                                  # wrong feature size
    lambda m, hx: m(torch.randn(5, 2, 3), hx(3)),                           # wrong h0 batch
    lambda m, hx: m(torch.randn(5, 2, 3), hx(2, extra=1)),                  # wrong h0 size
    lambda m, hx: m(torch.randn(5, 2, 3), hx(2, dims=2)),                   # h0 dims
    lambda m, hx: m(torch.randn(0, 2, 3)),                                  # zero-length sequence
    lambda m, hx: m(torch.randn(5, 2, 3, dtype=torch.float64)),             # dtype vs weights
    lambda m, hx: m(torch.randn(5, 2, 3), hx(2, device="meta")),            # device
    lambda m, hx: m(torch.randn(5, 2, 3, device="meta")),                   # vs parameters
    lambda m, hx: m(torch.randn(2, 5, 3, 1)),                               # 4-D input
])
def test_bad_input_raises_like_torch(kind, call):
    ours, theirs = pair(3, 4, 1, kind=kind)

    def hx(B, extra=0, dims=3, device="cpu"):
        shape = [1, B, (getattr(ours, "proj_size", 0) or 4) + extra][3 - dims:]
        h = torch.randn(*shape, device=device)
        if kind.startswith("lstm"):
            return (h, torch.randn(*shape[:-1], 4 + extra, device=device))
        return h
    errors = []
    for m in (ours, theirs):
        with pytest.raises(Exception) as info:
            call(m, hx)
        errors.append(info.type)
    assert errors[0] is errors[1], errors


@pytest.mark.parametrize("kind,args", [
    ("LSTM", (torch.randn(5, 2, 3), torch.randn(1, 2, 4))),
    ("LSTMCell", (torch.randn(2, 3), torch.randn(2, 4))),
])
def test_lstm_given_one_tensor_as_hx_raises_like_torch(kind, args):
    errors = []
    for m in (getattr(fastrnn, kind)(3, 4), getattr(torch.nn, kind)(3, 4)):
        with pytest.raises(Exception) as info:
            m(*args)
        errors.append(info)
    assert errors[0].type is errors[1].type, errors
    assert "tuple (h_0, c_0)" in str(errors[0].value)          # ours says what to pass


@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM", "RNNCell", "GRUCell", "LSTMCell"])
def test_meta_device_gives_torchs_shapes(kind):
    # built and called under torch.device("meta") (shape inference, fake init): no data
    with torch.device("meta"):
        ours, theirs = getattr(fastrnn, kind)(8, 16), getattr(torch.nn, kind)(8, 16)
        x = torch.randn(3, 8) if kind.endswith("Cell") else torch.randn(5, 3, 8)
        got, want = ours(x), theirs(x)
    flat = torch.utils._pytree.tree_leaves
    assert [(t.shape, t.device.type) for t in flat(got)] == \
        [(t.shape, "meta") for t in flat(want)]


def test_unknown_nonlinearity_and_proj_size():
    for cls, kwargs in ((fastrnn.RNN, dict(nonlinearity="gelu")), (fastrnn.RNN, dict(proj_size=2)),
                        (fastrnn.GRU, dict(proj_size=2)), (fastrnn.LSTM, dict(proj_size=4))):
        with pytest.raises(ValueError):
            cls(3, 4, **kwargs)


def test_errors_come_before_any_kernel(monkeypatch):
    import fastrnn.autograd as A
    for name in ("RNNFunction", "GRUFunction", "LSTMFunction"):
        monkeypatch.setattr(getattr(A, name), "apply", lambda *a: pytest.fail("kernel ran"))
    for cls in (fastrnn.RNN, fastrnn.GRU, fastrnn.LSTM):
        with pytest.raises(RuntimeError):
            cls(3, 4)(torch.randn(5, 2, 7))


def test_explicit_backend_that_cannot_run_raises():
    m = fastrnn.RNN(3, 4)
    with pytest.raises(RuntimeError, match="numba"):      # numba has no float16 kernels
        fastrnn.functional.rnn(torch.randn(2, 1, 3).half(), torch.zeros(1, 1, 4).half(),
                               [p.half() for p in m._flat_weights], backend="numba")
    with pytest.raises(ValueError, match="unknown fastrnn backend"):
        fastrnn.functional.rnn(torch.randn(2, 1, 3), torch.zeros(1, 1, 4), m._flat_weights,
                               backend="cuda-magic")


@pytest.mark.parametrize("cls,extra", CELLS)
def test_cell_errors_like_torch(cls, extra):
    torch.manual_seed(0)
    ours, theirs = getattr(fastrnn, cls)(3, 4, **extra), getattr(torch.nn, cls)(3, 4, **extra)
    lstm = _states(cls) == 2
    wrap = lambda h: (h, h.clone()) if lstm else h  # noqa: E731
    for call in (lambda c: c(torch.randn(2, 5)),
                 lambda c: c(torch.randn(2, 3), wrap(torch.randn(3, 4))),
                 lambda c: c(torch.randn(2, 2, 3))):
        types = []
        for c in (ours, theirs):
            with pytest.raises(Exception) as info:
                call(c)
            types.append(info.type)
        assert types[0] is types[1]


# ------------------------------------------------------------------ torch.compile
@pytest.mark.parametrize("kind", list(KINDS))
def test_torch_compile_gives_torchs_numbers(kind):
    # under torch.compile each layer and direction is a custom op (fastrnn.ops;
    # tests/test_compile.py checks the graphs): compiling the module, or a model around
    # it, gives torch.nn's numbers. The first-call-compiled case is what a fresh process
    # sees: the test_backends import test checks that eager use never loads Dynamo.
    import torch._dynamo.testing
    ours, theirs = pair(4, 6, 2, kind=kind, bidirectional=True)
    x = torch.randn(5, 3, 4)
    torch._dynamo.reset()
    compiled = torch.compile(ours, backend="aot_eager")
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    (a, _), (b, _) = compiled(xa), theirs(xb)
    assert_close(a, b, TOL, "compiled output")
    a.sum().backward()
    b.sum().backward()
    assert_close(xa.grad, xb.grad, TOL, "compiled d input")

    P = ours.proj_size if kind == "lstm_proj" else ours.hidden_size
    head = torch.nn.Linear(2 * P, 2)
    model = lambda inp: head(torch.relu(ours(inp * 2)[0])).sum()   # noqa: E731
    counter = torch._dynamo.testing.CompileCounter()
    torch._dynamo.reset()
    with torch._dynamo.config.patch(allow_rnn=True):
        got = torch.compile(model, backend=counter)(x)
    assert_close(got, head(torch.relu(theirs(x * 2)[0])).sum(), TOL, "compiled model")
    assert counter.frame_count >= 1


@pytest.mark.parametrize("kind", list(KINDS))
def test_autocast_computes_in_the_weights_dtype(kind):
    # under CPU autocast torch's own RNN modules disagree (GRU: float32, RNN: bfloat16,
    # LSTM: fails in oneDNN); fastrnn computes in the weights' dtype, like torch's GRU,
    # so the result is the float32 one, also from a bfloat16 input, with gradients
    ours, _ = pair(4, 6, 2, kind=kind, bidirectional=True)
    x = torch.randn(5, 3, 4)
    ref, _ = ours(x)
    xb = x.to(torch.bfloat16).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = ours(x)
        out_b, _ = ours(xb)
    assert out.dtype == torch.float32 and torch.equal(out, ref)
    assert torch.equal(out_b, ours(xb.detach().float())[0])     # bfloat16 input, cast up
    out_b.sum().backward()
    assert xb.grad.dtype == torch.bfloat16 and xb.grad.abs().sum() > 0
    if kind != "lstm_proj":                                    # the cell of this kind
        cell = getattr(fastrnn, KINDS[kind][0] + "Cell")(4, 6, **KINDS[kind][1])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            h = states(cell(x[0]))[0]
            h_b = states(cell(xb[0].detach()))[0]               # bfloat16 input, cast up
        assert h.dtype == torch.float32 and torch.equal(h, states(cell(x[0]))[0])
        assert torch.equal(h_b, states(cell(xb[0].detach().float()))[0])


@pytest.mark.parametrize("bf16_autocast", [True, False])
def test_cuda_autocast_dtype_is_torchs(monkeypatch, bf16_autocast):
    # what the entry points compute in under torch.autocast("cuda"), with CUDA simulated
    # (a CPU-only torch cannot enable it): torch.nn's cuDNN layers run in float16 whatever
    # the autocast dtype, its cells in the autocast dtype; both cast the weights, so the
    # call sees every floating tensor in that dtype. The gpu-marked twin compares with
    # torch.nn on a device (test_triton_persistent.py).
    from fastrnn import functional
    autocast = torch.bfloat16 if bf16_autocast else torch.float16
    monkeypatch.setattr(functional, "_device_type", lambda t: "cuda")
    monkeypatch.setattr(torch, "is_autocast_enabled", lambda *a: True)
    monkeypatch.setattr(torch, "get_autocast_dtype", lambda device: autocast)
    monkeypatch.setattr(torch, "autocast", lambda *a, **k: contextlib.nullcontext())
    seen = []

    def record(input, hx, weights, *args, **kwargs):
        seen.append({t.dtype for t in [input, *hx, *weights]})
        return input
    x, h = torch.randn(5, 3, 4), torch.randn(1, 3, 6)
    w = [torch.randn(6, 4), torch.randn(6, 6)]
    functional._entry_point(functional._layer_autocast_dtype)(record)(x, (h, h), w)
    functional._entry_point(functional._cell_autocast_dtype)(record)(x[0], (h[0],), w)
    assert seen == [{torch.float16}, {autocast}]


# ------------------------------------------------------------- torch features
@pytest.mark.parametrize("kind", ["gru", "lstm_proj"])
def test_functional_call_checkpoint_and_frozen_layers_as_torch(kind):
    # what training code does around a recurrent layer: torch.func.functional_call
    # with other weights, activation checkpointing (both modes), a frozen first layer
    from torch.func import functional_call
    from torch.utils.checkpoint import checkpoint
    ours, theirs = pair(4, 6, 2, kind=kind, bidirectional=True)
    x = torch.randn(5, 3, 4)
    params = {n: p.detach() * 1.5 for n, p in ours.named_parameters()}
    assert_close(functional_call(ours, params, (x,))[0], functional_call(theirs, params, (x,))[0],
                 TOL, "functional_call")
    for m in (ours, theirs):
        for n, p in m.named_parameters():
            p.requires_grad_(not n.endswith(("l0", "l0_reverse")))
    for reentrant in (False, True):
        got = []
        for m in (ours, theirs):
            m.zero_grad()
            xi = x.clone().requires_grad_()
            y = checkpoint(lambda inp: m(inp)[0], xi, use_reentrant=reentrant) if m is ours \
                else m(xi)[0]
            y.pow(2).sum().backward()
            got.append((xi.grad, grads(m)))
        assert_close(got[0][0], got[1][0], TOL, "d input")
        for n, g in got[1][1].items():
            assert (g is None) == (got[0][1][n] is None), n
            if g is not None:
                assert_close(got[0][1][n], g, TOL, n)


@pytest.mark.parametrize("bias,bidirectional,batch_first,packed,layers",
                         [(True, True, False, True, 2), (False, False, True, False, 1),
                          (True, False, False, False, 2)])
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_parity_with_torch_on_the_own_gemm(kind, bias, bidirectional, batch_first, packed,
                                           layers, dtype, own_gemm):
    # the input projection, dx, dW_ih, dW_hh (and dW_hr) on the backend's own GEMM
    test_parity_with_torch(kind, bias, bidirectional, batch_first, packed, layers, dtype)
    assert len(own_gemm) >= 4 * layers, own_gemm    # forward and backward GEMMs of a layer


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_no_grad_and_double_backward_on_the_own_gemm(kind, own_gemm):
    ours, theirs = pair(3, 5, 2, kind=kind, dtype=torch.float64)
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        assert_close(ours(x)[0], theirs(x)[0], 1e-12, "no_grad output")
    assert own_gemm                             # the inference path took it
    # under create_graph the GEMMs are torch's differentiable ops (autograd records them)
    assert torch.autograd.gradgradcheck(lambda inp: ours(inp)[0], (x,))
