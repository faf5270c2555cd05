"""fastrnn.RNN / RNNCell as drop-in replacements of torch.nn.RNN / RNNCell."""
import itertools

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fastrnn
from conftest import assert_close

TOL = 2e-5


def pair(*args, **kwargs):
    torch.manual_seed(1)
    ours = fastrnn.RNN(*args, **kwargs)
    theirs = torch.nn.RNN(*args, **kwargs)
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def grads(module):
    return {n: p.grad for n, p in module.named_parameters()}


MATRIX = list(itertools.product([True, False], [False, True], [False, True], [False, True], [1, 2],
                                ["tanh", "relu"]))


@pytest.mark.parametrize("bias,bidirectional,batch_first,packed,layers,nl", MATRIX)
def test_parity_with_torch(bias, bidirectional, batch_first, packed, layers, nl):
    ours, theirs = pair(4, 6, layers, nonlinearity=nl, bias=bias, batch_first=batch_first,
                        bidirectional=bidirectional)
    T, B = 7, 5
    x = torch.randn(B, T, 4) if batch_first else torch.randn(T, B, 4)
    h0 = torch.randn(layers * (2 if bidirectional else 1), B, 6)
    lengths = torch.tensor([7, 3, 5, 1, 6])
    results = []
    for m in (ours, theirs):
        xi, hi = x.clone().requires_grad_(), h0.clone().requires_grad_()
        inp = pack_padded_sequence(xi, lengths, batch_first=batch_first, enforce_sorted=False) \
            if packed else xi
        out, h_n = m(inp, hi)
        data = out.data if packed else out
        g = torch.Generator().manual_seed(3)
        loss = (data * torch.randn(data.shape, generator=g)).sum() + \
            (h_n * torch.randn(h_n.shape, generator=g)).sum()
        loss.backward()
        results.append((out, h_n, xi.grad, hi.grad, grads(m)))
    (o1, h1, gx1, gh1, gw1), (o2, h2, gx2, gh2, gw2) = results
    if packed:
        assert torch.equal(o1.batch_sizes, o2.batch_sizes)
        assert torch.equal(o1.sorted_indices, o2.sorted_indices)
        o1, o2 = o1.data, o2.data
    assert_close(o1, o2, TOL, "output")
    assert_close(h1, h2, TOL, "h_n")
    assert_close(gx1, gx2, TOL, "d input")
    assert_close(gh1, gh2, TOL, "d h0")
    for name in gw2:
        assert_close(gw1[name], gw2[name], TOL, name)


@pytest.mark.parametrize("batch_first", [False, True])
def test_unbatched_and_default_h0(batch_first):
    ours, theirs = pair(3, 5, 2, batch_first=batch_first)
    x = torch.randn(6, 3)
    (o1, h1), (o2, h2) = ours(x), theirs(x)
    assert o1.shape == o2.shape == (6, 5) and h1.shape == h2.shape == (2, 5)
    assert_close(o1, o2, TOL, "out")
    h0 = torch.randn(2, 5)
    assert_close(ours(x, h0)[1], theirs(x, h0)[1], TOL, "h_n")


def test_enforce_sorted_packed_and_sorted():
    ours, theirs = pair(3, 4)
    x = torch.randn(5, 3, 3)
    p = pack_padded_sequence(x, torch.tensor([5, 4, 2]), enforce_sorted=True)
    (o1, h1), (o2, h2) = ours(p), theirs(p)
    assert_close(o1.data, o2.data, TOL, "packed out")
    assert_close(h1, h2, TOL, "h_n")


def test_same_init_and_state_dict_both_ways():
    torch.manual_seed(5)
    a = fastrnn.RNN(3, 4, 2, bidirectional=True)
    torch.manual_seed(5)
    b = torch.nn.RNN(3, 4, 2, bidirectional=True)
    assert [n for n, _ in a.named_parameters()] == [n for n, _ in b.named_parameters()]
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), n
    c = torch.nn.RNN(3, 4, 2, bidirectional=True)
    c.load_state_dict(a.state_dict())
    a.load_state_dict(torch.nn.RNN(3, 4, 2, bidirectional=True).state_dict())
    assert isinstance(a, torch.nn.RNN)


def test_dropout_train_matches_torch_and_eval_is_deterministic():
    ours, theirs = pair(3, 8, 3, dropout=0.5)
    x = torch.randn(4, 2, 3)
    torch.manual_seed(9)
    o1, _ = ours(x)
    torch.manual_seed(9)
    o2, _ = theirs(x)
    assert_close(o1, o2, TOL, "train-mode output (same dropout masks)")
    ours.eval(), theirs.eval()
    assert_close(ours(x)[0], theirs(x)[0], TOL, "eval output")
    assert torch.equal(ours(x)[0], ours(x)[0])


def test_zero_batch():
    ours, theirs = pair(3, 4)
    o, h = ours(torch.randn(5, 0, 3))
    assert o.shape == (5, 0, 4) and h.shape == (1, 0, 4)
    cell = fastrnn.RNNCell(3, 4)
    assert cell(torch.randn(0, 3)).shape == (0, 4)


def test_float64_module():
    ours, theirs = pair(3, 4, dtype=torch.float64)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    assert_close(ours(x)[0], theirs(x)[0], 1e-12, "float64 out")


@pytest.mark.parametrize("backend", ["numba", "reference", "triton"])
def test_explicit_backends(backend):
    ours, theirs = pair(3, 5, batch_first=True)
    ours.backend = backend
    x = torch.randn(2, 4, 3)
    assert_close(ours(x)[0], theirs(x)[0], TOL, backend)


def test_gradgradcheck_through_module():
    m = fastrnn.RNN(2, 3, dtype=torch.float64)
    x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda inp: m(inp)[0], (x,))


# ------------------------------------------------------------------ cells
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("nl", ["tanh", "relu"])
def test_cell_parity(bias, nl):
    torch.manual_seed(2)
    ours = fastrnn.RNNCell(3, 5, bias=bias, nonlinearity=nl)
    theirs = torch.nn.RNNCell(3, 5, bias=bias, nonlinearity=nl)
    theirs.load_state_dict(ours.state_dict())
    x, h = torch.randn(4, 3), torch.randn(4, 5)
    res = []
    for m in (ours, theirs):
        xi, hi = x.clone().requires_grad_(), h.clone().requires_grad_()
        y = m(xi, hi)
        y.pow(2).sum().backward()
        res.append((y, xi.grad, hi.grad, grads(m)))
    for a, b in zip(res[0][:3], res[1][:3]):
        assert_close(a, b, TOL)
    for n in res[1][3]:
        assert_close(res[0][3][n], res[1][3][n], TOL, n)
    assert_close(ours(x[0]), theirs(x[0]), TOL, "unbatched, no hx")


# ----------------------------------------------------------------- errors
def _same_error(make_call):
    ours, theirs = pair(3, 4, 1)
    errors = []
    for m in (ours, theirs):
        with pytest.raises(Exception) as info:
            make_call(m)
        errors.append(info.type)
    assert errors[0] is errors[1], errors
    return errors[0]


@pytest.mark.parametrize("call", [
    lambda m: m(torch.randn(5, 2, 7)),                                  # wrong feature size
    lambda m: m(torch.randn(5, 2, 3), torch.randn(1, 3, 4)),            # wrong h0 batch
    lambda m: m(torch.randn(5, 2, 3), torch.randn(1, 2, 5)),            # wrong h0 size
    lambda m: m(torch.randn(5, 2, 3), torch.randn(2, 4)),               # h0 dims
    lambda m: m(torch.randn(0, 2, 3)),                                  # zero-length sequence
    lambda m: m(torch.randn(5, 2, 3, dtype=torch.float64)),             # dtype vs weights
    lambda m: m(torch.randn(5, 2, 3), torch.randn(1, 2, 4, device="meta")),  # device
    lambda m: m(torch.randn(2, 5, 3, 1)),                               # 4-D input
])
def test_bad_input_raises_like_torch(call):
    _same_error(call)


def test_unknown_nonlinearity_and_proj_size():
    for kwargs in (dict(nonlinearity="gelu"), dict(proj_size=2)):
        with pytest.raises(ValueError):
            fastrnn.RNN(3, 4, **kwargs)


def test_errors_come_before_any_kernel(monkeypatch):
    import fastrnn.autograd as A
    monkeypatch.setattr(A.RNNFunction, "apply", lambda *a: pytest.fail("kernel ran"))
    m = fastrnn.RNN(3, 4)
    with pytest.raises(RuntimeError):
        m(torch.randn(5, 2, 7))


def test_explicit_backend_that_cannot_run_raises():
    m = fastrnn.RNN(3, 4)
    with pytest.raises(RuntimeError, match="numba"):      # numba has no float16 kernels
        fastrnn.functional.rnn(torch.randn(2, 1, 3).half(), torch.zeros(1, 1, 4).half(),
                               [p.half() for p in m._flat_weights], backend="numba")
    with pytest.raises(ValueError, match="unknown fastrnn backend"):
        fastrnn.functional.rnn(torch.randn(2, 1, 3), torch.zeros(1, 1, 4), m._flat_weights,
                               backend="cuda-magic")


def test_cell_errors_like_torch():
    torch.manual_seed(0)
    ours, theirs = fastrnn.RNNCell(3, 4), torch.nn.RNNCell(3, 4)
    for call in (lambda c: c(torch.randn(2, 5)), lambda c: c(torch.randn(2, 3), torch.randn(3, 4)),
                 lambda c: c(torch.randn(2, 2, 3))):
        types = []
        for c in (ours, theirs):
            with pytest.raises(Exception) as info:
                call(c)
            types.append(info.type)
        assert types[0] is types[1]
