"""The GEMMs outside the kernels: the input projection of all steps, dx and the weight
gradients, on the backend's own GEMM where it has one (``Backend.own_gemm``), else
torch's, in the layout MKL runs fastest on this machine.

- The Numba backend's ``mm`` (kernels/numba/matmul.py: the step products' packed
  micro-kernel on Numba's threads) ran the large LSTM's GEMMs 1.0-1.2x torch.mm's
  rate on 2 Zen 4 cores, and ran slower than torch's on an Intel Sapphire Rapids; it is
  taken where it pays (its ``mm_pays``: the CPUs where it measured faster, from 1 GFLOP)
  and autograd records nothing, so the input projection goes through
  ``InputProjection`` then.
- float64 on torch's path asks MKL for the mirrored product (b^T a^T)^T (``_mirrored``),
  with the input projection through ``InputProjection`` so that its backward does too.
Split from fastrnn/autograd.py, whose job is the Functions.
"""
import torch
import torch.nn.functional as F

from .backends import has_data


def _mirrored(t):
    """float64 on the CPU: ask MKL for the mirrored product (b^T a^T)^T. Its dgemm ran
    the layouts torch.mm and autograd's own linear backward pass to it at 33-36
    GFLOP/s on the bench machine (AMD EPYC, AVX2), and the mirrored call at 44-70,
    at the middle and large LSTM shapes. float32 (oneDNN/MKL sgemm) was even or
    slower mirrored, so it keeps torch's layout."""
    return t.dtype == torch.float64 and t.device.type == "cpu"


def _own(backend, m, k, n, *tensors):
    """Whether ``backend``'s own GEMM can run an [m, k] @ [k, n] product of ``tensors``:
    it has one for this shape and dtype, and they are real CPU tensors (not a tracer's
    or torch.compile's stand-ins). It records nothing for autograd (``_records``)."""
    t = tensors[0]
    if backend is None or t.device.type != "cpu" or torch.compiler.is_compiling() or \
            not all(has_data(u) for u in tensors if u is not None):
        return False
    return backend.own_gemm(m, k, n, t.dtype)


def _records(*tensors):
    # whether autograd would record an op on ``tensors``
    return torch.is_grad_enabled() and any(u is not None and u.requires_grad for u in tensors)


def _mm(a, b, add=None, backend=None):
    """add + a @ b, the GEMMs outside the kernels: on ``backend``'s own GEMM where
    ``_own``, else torch's, mirrored where ``_mirrored``."""
    if not _records(a, b, add) and _own(backend, a.shape[0], a.shape[1], b.shape[1], a, b, add):
        return backend.mm(a, b, add)
    mirror = _mirrored(a)
    if mirror:
        a, b, add = b.t(), a.t(), (None if add is None else add.t())
    r = a.mm(b) if add is None else torch.addmm(add, a, b)
    return r.t() if mirror else r


class InputProjection(torch.autograd.Function):
    """xproj = x @ w^T + b over all steps, forward and backward through ``_mm``.

    Used where the backend's own GEMM or ``_mirrored`` applies (``project``); elsewhere
    F.linear's own backward is as fast and runs no Python. The backward's ops are
    differentiable (under create_graph ``_mm`` takes torch's), so double backward
    works through it.
    """

    @staticmethod
    def forward(ctx, x, w, b, backend):
        ctx.save_for_backward(x, w)
        ctx.has_bias, ctx.backend = b is not None, backend
        if backend is None:
            return F.linear(x, w, b)
        return _mm(x.reshape(-1, x.shape[-1]), w.t(), b, backend).view(*x.shape[:-1], -1)

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        return *linear_grads(grad, x, w, ctx.has_bias, ctx.needs_input_grad[:3],
                             ctx.backend), None


def linear_grads(grad, x, w, has_bias, needs, backend=None):
    """(dL/dx, dL/dw, dL/db) of x @ w^T + b from grad = dL/d(x @ w^T + b), each None
    unless ``needs`` says so; the GEMMs through ``_mm``."""
    g = grad.reshape(-1, grad.shape[-1])
    gx = _mm(g, w, backend=backend).reshape(x.shape) if needs[0] else None
    gw = _mm(g.t(), x.reshape(-1, x.shape[-1]), backend=backend) if needs[1] else None
    gb = g.sum(0) if has_bias and needs[2] else None
    return gx, gw, gb


def project(x, w, b, backend=None):
    """The input projection of all steps, one GEMM: x [T, B, I] -> [T, B, G]."""
    m = x.numel() // max(1, x.shape[-1])
    if _own(backend, m, x.shape[-1], w.shape[0], x, w, b):
        if _records(x, w, b):
            return InputProjection.apply(x, w, b, backend)
        return backend.mm(x.reshape(m, -1), w.t(), b).view(*x.shape[:-1], -1)
    if _mirrored(x) and torch.is_grad_enabled():
        return InputProjection.apply(x, w, b, None)
    return F.linear(x, w, b)
