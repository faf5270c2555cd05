"""GRU and LSTM kernels against fastrnn.reference: outputs, final states, every gradient."""
import pytest
import torch

from conftest import assert_close

from fastrnn import reference
from fastrnn.autograd import GRUFunction, LSTMFunction
from fastrnn.backends import REGISTRY

TOL = {torch.float32: 3e-5, torch.float64: 1e-12, torch.float16: 1e-2}
# (3, 140, 5): more than gemm_nt's ROW_BLOCK rows per thread on up to 4 threads
SHAPES = [(1, 3, 5), (63, 4, 33), (7, 1, 1), (9, 5, 64), (5, 17, 130), (3, 140, 5)]


def _inputs(cell, T, B, H, P, dtype, bias=True):
    g = torch.Generator().manual_seed(T * 1000 + B * 10 + H)
    r = lambda *s, scale=1.0: (torch.randn(*s, generator=g, dtype=torch.float64) * scale).to(dtype)  # noqa: E731,E501
    if cell == "gru":
        return [r(T, B, 3 * H), r(B, H), r(3 * H, H, scale=H ** -0.5), r(H) if bias else None]
    return [r(T, B, 4 * H), r(B, P), r(B, H), r(4 * H, P, scale=P ** -0.5),
            r(P, H, scale=H ** -0.5) if P != H else None]


def _run(fn, inputs, seed):
    leaves = [None if t is None else t.detach().clone().requires_grad_() for t in inputs]
    outs = fn(*leaves)
    g = torch.Generator().manual_seed(seed)
    grads = [torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.dtype).to(o.device)
             for o in outs]
    torch.autograd.backward(list(outs), grads)
    return list(outs) + [t.grad for t in leaves if t is not None]


def check(cell, backend, T, B, H, dtype, P=None, lengths=None, reverse=False, bias=True,
          device="cpu", tol=None):
    P = P or H
    inputs = _inputs(cell, T, B, H, P, dtype, bias)
    be = REGISTRY[backend]
    if cell == "gru":
        got_fn = lambda *a: GRUFunction.apply(*a, lengths, reverse, be)  # noqa: E731
        ref_fn = lambda *a: reference.gru_layer(*a, lengths, reverse)  # noqa: E731
        names = ["out", "h_n", "d_xproj", "d_h0", "d_w_hh", "d_b_hn"]
    else:
        got_fn = lambda *a: LSTMFunction.apply(*a, lengths, reverse, be)  # noqa: E731
        ref_fn = lambda *a: reference.lstm_layer(*a, lengths, reverse)  # noqa: E731
        names = ["out", "h_n", "c_n", "d_xproj", "d_h0", "d_c0", "d_w_hh", "d_w_hr"]
    got = _run(got_fn, [None if t is None else t.to(device) for t in inputs], 7)
    ref = _run(ref_fn, [None if t is None else t.double() for t in inputs], 7)
    assert len(got) == len(ref)
    for name, a, b in zip(names, got, ref):
        assert_close(a.cpu(), b, tol or TOL[dtype], f"{cell} {name}")


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("T,B,H", SHAPES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_numba_matches_reference(cell, T, B, H, reverse, dtype):
    check(cell, "numba", T, B, H, dtype, reverse=reverse)


@pytest.mark.parametrize("T,B,H,P", [(6, 3, 5, 2), (9, 4, 33, 17), (4, 5, 130, 64)])
@pytest.mark.parametrize("reverse", [False, True])
def test_numba_lstm_projection(T, B, H, P, reverse):
    check("lstm", "numba", T, B, H, torch.float32, P=P, reverse=reverse)


@pytest.mark.parametrize("cell", ["gru", "lstm", "lstm:proj"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("lengths", [[5, 1, 3, 5, 2], [1, 5, 4, 3, 2]])
def test_numba_varlen(cell, reverse, lengths):
    # variable lengths take the kernels' gather path (rows out of order, own time index)
    check(cell.split(":")[0], "numba", 5, 5, 9, torch.float32, P=4 if cell == "lstm:proj" else None,
          lengths=torch.tensor(lengths), reverse=reverse)


def test_numba_gru_without_bias():
    check("gru", "numba", 6, 3, 7, torch.float32, bias=False)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_numba_gradcheck_float64(cell):
    be = REGISTRY["numba"]
    for lengths, reverse in [(None, False), (torch.tensor([4, 2, 3]), True)]:
        inputs = [None if t is None else t.clone().requires_grad_()
                  for t in _inputs(cell, 4, 3, 5, 3, torch.float64)]
        fn = GRUFunction if cell == "gru" else LSTMFunction
        assert torch.autograd.gradcheck(lambda *a: fn.apply(*a, lengths, reverse, be), inputs)


@pytest.mark.parametrize("backend", ["numba", "triton"])     # triton: the interpreter
@pytest.mark.parametrize("cell,P", [("gru", None), ("lstm", None), ("lstm", 3)])
@pytest.mark.parametrize("lengths", [None, [4, 1, 3]])
def test_inference_saves_nothing(backend, cell, P, lengths):
    # save=False: the same outputs and final states, bit for bit (NaN-poisoned, so an
    # element left unwritten fails), and what only backward reads is not allocated
    T, B, H = 4, 3, 7
    inputs = _inputs(cell, T, B, H, P or H, torch.float32)
    launch = getattr(REGISTRY[backend].kernels(), f"{cell}_fwd")
    names = ["xproj", "h0", "w_hh", "b_hn"] if cell == "gru" else \
        ["xproj", "h0", "c0", "w_hh", "w_hr"]
    kw = dict(zip(names, inputs), reverse=True,
              lengths=None if lengths is None else torch.tensor(lengths))
    full, bare = launch(**kw), launch(**kw, save=False)
    n = 2 if cell == "gru" else 3
    for a, b in zip(full[:n], bare[:n]):
        assert torch.equal(a, b)
    assert [t.numel() for t in bare[n:]] == [0] * (len(full) - n)


@pytest.mark.parametrize("kind", ["GRU", "LSTM"])
def test_layers_under_no_grad_skip_the_functions(kind, monkeypatch):
    import fastrnn
    from fastrnn import autograd
    m = getattr(fastrnn, kind)(5, 7, num_layers=2, bidirectional=True)
    x = torch.randn(6, 3, 5)
    out, _ = m(x)
    fn = getattr(autograd, f"{kind}Function")

    def fail(*a):
        raise AssertionError("the Function ran under no_grad")
    monkeypatch.setattr(fn, "apply", fail)
    with torch.no_grad():
        assert torch.equal(m(x)[0], out.detach())
    with pytest.raises(AssertionError, match="the Function ran"):
        m(x)                # with grad: the Function, which saves for backward


# Triton under the interpreter: tiny shapes, odd sizes, tiles of the hidden dim crossed
@pytest.mark.parametrize("T,B,H", [(1, 2, 5), (5, 17, 40)])
@pytest.mark.parametrize("reverse", [False, True])
def test_triton_interpreter_gru(T, B, H, reverse):
    check("gru", "triton", T, B, H, torch.float32, reverse=reverse)


@pytest.mark.parametrize("reverse", [False, True])
def test_triton_interpreter_gru_varlen(reverse):
    check("gru", "triton", 4, 3, 7, torch.float32, lengths=torch.tensor([4, 1, 3]), reverse=reverse)
    check("gru", "triton", 4, 3, 7, torch.float16, lengths=torch.tensor([2, 4, 3]), reverse=reverse)


@pytest.mark.parametrize("T,B,H,P", [(1, 2, 5, 5), (5, 17, 40, 40), (4, 3, 20, 7)])
@pytest.mark.parametrize("reverse", [False, True])
def test_triton_interpreter_lstm(T, B, H, P, reverse):
    check("lstm", "triton", T, B, H, torch.float32, P=P, reverse=reverse)


@pytest.mark.parametrize("reverse", [False, True])
def test_triton_interpreter_lstm_varlen(reverse):
    check("lstm", "triton", 4, 3, 7, torch.float32, P=3, lengths=torch.tensor([4, 1, 3]),
          reverse=reverse)
    check("lstm", "triton", 4, 3, 7, torch.float16, lengths=torch.tensor([2, 4, 3]),
          reverse=reverse)


@pytest.mark.gpu
@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 5e-2)])
def test_triton_gpu(cell, dtype, tol, monkeypatch):
    # IEEE fp32 products (TF32 follows cudnn.allow_tf32, as torch's cuDNN RNNs)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    lengths = torch.randint(1, 41, (20,))
    check(cell, "triton", 40, 20, 96, dtype, P=48 if cell == "lstm" else None, lengths=lengths,
          reverse=True, device="cuda", tol=tol)
