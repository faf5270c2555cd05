"""The GEMMs outside the kernels, in the layout MKL runs fastest on this machine.

float64 on the CPU asks MKL for the mirrored product (b^T a^T)^T (``_mm``), with the
input projection through a small ``InputProjection`` Function so that its backward
does too (``project``). Split from fastrnn/autograd.py, whose job is the Functions.
"""
import torch
import torch.nn.functional as F


def _mirrored(t):
    """float64 on the CPU: ask MKL for the mirrored product (b^T a^T)^T. Its dgemm ran
    the layouts torch.mm and autograd's own linear backward pass to it at 33-36
    GFLOP/s on the bench machine (AMD EPYC, AVX2), and the mirrored call at 44-70,
    at the middle and large LSTM shapes. float32 (oneDNN/MKL sgemm) was even or
    slower mirrored, so it keeps torch's layout."""
    return t.dtype == torch.float64 and t.device.type == "cpu"


def _mm(a, b, add=None):
    """add + a @ b, the GEMMs outside the kernels, mirrored where ``_mirrored``."""
    mirror = _mirrored(a)
    if mirror:
        a, b, add = b.t(), a.t(), (None if add is None else add.t())
    r = a.mm(b) if add is None else torch.addmm(add, a, b)
    return r.t() if mirror else r


class InputProjection(torch.autograd.Function):
    """xproj = x @ w^T + b over all steps, with its backward through ``_mm``.

    Used only where ``_mirrored`` (``project``); elsewhere F.linear's own
    backward is as fast and runs no Python. The backward's ops are differentiable,
    so double backward works through it.
    """

    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        ctx.has_bias = b is not None
        return F.linear(x, w, b)

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        return linear_grads(grad, x, w, ctx.has_bias, ctx.needs_input_grad[:3])


def linear_grads(grad, x, w, has_bias, needs):
    """(dL/dx, dL/dw, dL/db) of x @ w^T + b from grad = dL/d(x @ w^T + b), each None
    unless ``needs`` says so; the GEMMs through ``_mm``."""
    g = grad.reshape(-1, grad.shape[-1])
    gx = _mm(g, w).reshape(x.shape) if needs[0] else None
    gw = _mm(g.t(), x.reshape(-1, x.shape[-1])) if needs[1] else None
    gb = g.sum(0) if has_bias and needs[2] else None
    return gx, gw, gb


def project(x, w, b):
    """The input projection of all steps, one GEMM: x [T, B, I] -> [T, B, G]."""
    if _mirrored(x) and torch.is_grad_enabled():
        return InputProjection.apply(x, w, b)
    return F.linear(x, w, b)
