"""Every backend's RNN kernels against fastrnn.reference: outputs, h_n, every gradient."""
import pytest
import torch

from helpers import check_rnn_backend, make_layer_inputs

from fastrnn.autograd import RNNFunction
from fastrnn.backends import REGISTRY

# (3, 140, 5): more than gemm_nt's ROW_BLOCK rows per thread on up to 4 threads
SHAPES = [(1, 3, 5), (63, 4, 33), (7, 1, 1), (9, 5, 64), (5, 17, 130), (3, 140, 5)]


@pytest.mark.parametrize("T,B,H", SHAPES)
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_numba_matches_reference(T, B, H, nonlinearity, reverse, dtype):
    check_rnn_backend("numba", T, B, H, dtype, reverse=reverse, nonlinearity=nonlinearity)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("lengths", [[5, 1, 3, 5, 2], [2, 2, 2, 2, 2], [1, 5, 4, 3, 2]])
def test_numba_varlen(reverse, lengths):
    check_rnn_backend("numba", 5, 5, 9, torch.float32, lengths=torch.tensor(lengths),
                      reverse=reverse)


# the interpreter is slow: tiny shapes, both layouts (H <= 32 on chip, larger tiled for fp32)
@pytest.mark.parametrize("T,B,H", [(1, 2, 5), (6, 3, 20), (4, 17, 40)])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("reverse", [False, True])
def test_triton_interpreter_matches_reference(T, B, H, nonlinearity, reverse):
    check_rnn_backend("triton", T, B, H, torch.float32, reverse=reverse, nonlinearity=nonlinearity)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("H", [7, 40])
def test_triton_interpreter_varlen(reverse, H):
    check_rnn_backend("triton", 4, 3, H, torch.float32, lengths=torch.tensor([4, 1, 3]),
                      reverse=reverse)


def test_triton_interpreter_fp16():
    # 16-bit storage, fp32 accumulation: error of the order of fp16's epsilon. bf16 is
    # covered by the gpu test only: the interpreter's tl.dot on bf16 operands returns
    # garbage (numpy has no bfloat16), checked with a one-line kernel on triton 3.9.
    check_rnn_backend("triton", 5, 3, 12, torch.float16, tol=1e-2,
                      lengths=torch.tensor([5, 2, 4]))


def test_numba_gradcheck_float64():
    (x, h, w), _ = make_layer_inputs(4, 3, 5, torch.float64)
    be = REGISTRY["numba"]
    for lengths, reverse in [(None, False), (torch.tensor([4, 2, 3]), True)]:
        args = [t.clone().requires_grad_() for t in (x, h, w)]
        assert torch.autograd.gradcheck(
            lambda a, b, c: RNNFunction.apply(a, b, c, lengths, reverse, "tanh", be), args)


def test_numba_gradgradcheck_float64():
    (x, h, w), _ = make_layer_inputs(3, 2, 4, torch.float64)
    be = REGISTRY["numba"]
    args = [t.clone().requires_grad_() for t in (x, h, w)]
    assert torch.autograd.gradgradcheck(
        lambda a, b, c: RNNFunction.apply(a, b, c, None, False, "tanh", be), args)


@pytest.mark.gpu
@pytest.mark.parametrize("H", [32, 128, 512])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_gpu_matches_reference(H, dtype, monkeypatch):
    from fastrnn import reference
    # IEEE fp32 products (TF32 follows cudnn.allow_tf32, as torch's cuDNN RNNs)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    (x, h, w), _ = make_layer_inputs(50, 20, H, dtype, device="cuda")
    lengths = torch.randint(1, 51, (20,))
    out, h_n = REGISTRY["triton"].kernels().rnn_fwd(
        xproj=x, h0=h, w_hh=w, lengths=lengths, reverse=True, nonlinearity="tanh")
    ref_out, ref_h = reference.rnn_layer(x.double(), h.double(), w.double(), lengths, True, "tanh")
    tol = 1e-4 if dtype == torch.float32 else 5e-2
    from conftest import assert_close
    assert_close(out, ref_out, tol, "out")
    assert_close(h_n, ref_h, tol, "h_n")


def test_xproj_not_saved_when_it_can_be_recomputed():
    # xproj is a layer's largest tensor; with xproj_fn the Function must not keep it
    (x, h, w), (go, gh) = make_layer_inputs(4, 3, 5, torch.float64)
    be = REGISTRY["numba"]
    xproj = x.clone().requires_grad_()
    out, _ = RNNFunction.apply(xproj, h, w, None, False, "tanh", be, lambda: xproj * 1)
    saved = [t for t in out.grad_fn.saved_tensors if t is not None]
    assert all(t.data_ptr() != xproj.data_ptr() for t in saved)
    out, _ = RNNFunction.apply(xproj, h, w, None, False, "tanh", be)
    assert any(t.data_ptr() == xproj.data_ptr() for t in out.grad_fn.saved_tensors
               if t is not None)
