"""The one test harness: ``check(cell, backend, ...)`` runs one layer of any sequence cell
of the table (fastrnn/cells.py) through its autograd Function on a backend, and the same
layer through fastrnn.reference's recurrence in float64 with autograd (the oracle), and
compares outputs, final states and every gradient. One shape list, one tolerance table;
the comparison helpers every test file uses."""
import os

import pytest
import torch

from fastrnn import autograd, reference
from fastrnn.backends import REGISTRY
from fastrnn.cells import CELLS

# relative error allowed against the float64 oracle, by the dtype the backend computes in
TOL = {torch.float64: 1e-12, torch.float32: 2e-5, torch.float16: 1e-2, torch.bfloat16: 5e-2}
# (3, 140, 5): more than gemm_nt's ROW_BLOCK rows per thread on up to 4 threads
SHAPES = [(1, 3, 5), (63, 4, 33), (7, 1, 1), (9, 5, 64), (5, 17, 130), (3, 140, 5)]


def oldest_triton_env(env=None):
    """``env`` (default os.environ) with the oldest supported Triton first on PYTHONPATH:
    the folder FASTRNN_TRITON_OLDEST names (.ci/run installs triton 3.6 and numpy < 2.4
    there); the test skips, saying how to get it, where it is not set."""
    oldest = os.environ.get("FASTRNN_TRITON_OLDEST")
    if not oldest:
        pytest.skip("set FASTRNN_TRITON_OLDEST to a folder holding triton 3.6 and numpy < 2.4 "
                    "(`pip install --no-deps --target DIR triton==3.6.0 'numpy<2.4'`; .ci/run "
                    "does, so CI never skips)")
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [oldest, env.get("PYTHONPATH")]))
    return env


def rel_err(a, b):
    """||a - b|| / ||b|| in float64; NaN anywhere gives inf."""
    a, b = a.detach().double(), b.detach().double()
    if not torch.isfinite(a).all():
        return float("inf")
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def assert_close(a, b, tol, what=""):
    assert a.shape == b.shape, f"{what}: shape {tuple(a.shape)} != {tuple(b.shape)}"
    e = rel_err(a, b)
    assert e <= tol, f"{what}: relative error {e:.2e} > {tol:.0e}"


def assert_twins_match(ours, twin, out, ref, tol):
    """A fastrnn model and its torch.nn build: the same output, and after one backward
    of the same random gradient through both, every parameter's gradient."""
    assert_close(out, ref, tol, "output")
    g = torch.randn_like(ref)
    out.backward(g)
    ref.backward(g)
    for (name, p), q in zip(ours.named_parameters(), twin.parameters()):
        assert_close(p.grad, q.grad, tol, name)


def layer_inputs(cell, T, B, H, dtype, P=None, bias=True):
    """The tensor arguments of ``cell``'s Function (and reference layer), in order:
    xproj [T, B, G], the initial states, the recurrent weights of the table
    (w_hh, then b_hn and w_hr where the table says so; an absent one is None); named."""
    c = CELLS[cell]
    P = (P or H) if c.projection else H
    g = torch.Generator().manual_seed(T * 1000 + B * 10 + H)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)
    args = {"xproj": r(T, B, c.gates * H), "h0": r(B, P)}
    if "c" in c.states:
        args["c0"] = r(B, H)
    args["w_hh"] = r(c.gates * H, P, scale=P ** -0.5)
    if c.b_hn:
        args["b_hn"] = r(H) if bias else None
    if c.projection:
        args["w_hr"] = r(P, H, scale=H ** -0.5) if P != H else None
    return args


def function(cell, backend, lengths=None, reverse=False, **opts):
    """tensors -> the Function's outputs, on ``backend`` (a name)."""
    fn, be = getattr(autograd, CELLS[cell].function), REGISTRY[backend]
    return lambda *a: fn.apply(*a, lengths, reverse, *_options(cell, opts), be)


def oracle(cell, lengths=None, reverse=False, **opts):
    """tensors -> fastrnn.reference's layer outputs (differentiable)."""
    layer = getattr(reference, f"{cell}_layer")
    return lambda *a: _tuple(layer(*a, lengths, reverse, *_options(cell, opts)))


def _options(cell, opts):
    # the cell's options in table order (RNN: nonlinearity, tanh unless given)
    return [opts.get(o, "tanh") for o in CELLS[cell].options]


def _tuple(res):
    return res if isinstance(res, tuple) else (res,)


def run(fn, inputs, seed=7):
    """Forward and backward through every output with seeded random gradients ->
    outputs + the gradient of every input that is not None."""
    leaves = [None if t is None else t.detach().clone().requires_grad_() for t in inputs]
    outs = _tuple(fn(*leaves))
    g = torch.Generator().manual_seed(seed)
    grads = [torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.dtype).to(o.device)
             for o in outs]
    torch.autograd.backward(list(outs), grads)
    return list(outs) + [t.grad for t in leaves if t is not None]


def check(cell, backend, T, B, H, dtype, P=None, lengths=None, reverse=False, bias=True,
          device="cpu", tol=None, **opts):
    """One layer of ``cell`` on ``backend`` against the float64 oracle: outputs, final
    states, and the gradient of xproj, every initial state and every recurrent weight."""
    args = layer_inputs(cell, T, B, H, dtype, P, bias)
    names = ["out"] + [f"{s}_n" for s in CELLS[cell].states] + \
        [f"d_{k}" for k, v in args.items() if v is not None]
    inputs = list(args.values())
    got = run(function(cell, backend, lengths, reverse, **opts),
              [None if t is None else t.to(device) for t in inputs])
    ref = run(oracle(cell, lengths, reverse, **opts),
              [None if t is None else t.double() for t in inputs])
    assert len(got) == len(ref) == len(names)
    for name, a, b in zip(names, got, ref):
        assert_close(a.cpu(), b, tol or TOL[dtype], f"{cell} on {backend}: {name}")
