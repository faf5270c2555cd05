"""Helpers that run one layer on a backend and on the reference, with all gradients."""
import torch

from fastrnn import reference
from fastrnn.autograd import RNNFunction
from fastrnn.backends import REGISTRY

from conftest import assert_close

TOL = {torch.float32: 2e-5, torch.float64: 1e-12}


def make_layer_inputs(T, B, H, dtype, lengths=None, device="cpu"):
    g = torch.Generator().manual_seed(T * 1000 + B * 10 + H)
    xproj = torch.randn(T, B, H, generator=g, dtype=torch.float64)
    h0 = torch.randn(B, H, generator=g, dtype=torch.float64)
    w_hh = torch.randn(H, H, generator=g, dtype=torch.float64) / H ** 0.5
    grads = (torch.randn(T, B, H, generator=g, dtype=torch.float64),
             torch.randn(B, H, generator=g, dtype=torch.float64))
    cast = lambda t: t.to(dtype=dtype, device=device)  # noqa: E731
    return [cast(t) for t in (xproj, h0, w_hh)], [cast(t) for t in grads]


def run_rnn(fn, inputs, grads):
    """Forward and backward through out AND h_n; returns outputs and every input grad."""
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    out, h_n = fn(*leaves)
    torch.autograd.backward([out, h_n], grads)
    return [out, h_n] + [t.grad for t in leaves]


def check_rnn_backend(backend, T, B, H, dtype, lengths=None, reverse=False,
                      nonlinearity="tanh", tol=None):
    inputs, grads = make_layer_inputs(T, B, H, dtype)
    be = REGISTRY[backend]
    got = run_rnn(lambda x, h, w: RNNFunction.apply(x, h, w, lengths, reverse, nonlinearity, be),
                  inputs, grads)
    ref = run_rnn(lambda x, h, w: reference.rnn_layer(x, h, w, lengths, reverse, nonlinearity),
                  [t.double() for t in inputs], [g.double() for g in grads])
    tol = tol or TOL[dtype]
    for name, a, b in zip(["out", "h_n", "d_xproj", "d_h0", "d_w_hh"], got, ref):
        assert_close(a, b, tol, name)
