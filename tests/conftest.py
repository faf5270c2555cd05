"""Shared test setup: seeds, NaN-poisoned kernel outputs, the `gpu` marker.

TRITON_INTERPRET=1 is set here, before anything imports triton, so the Triton
kernels run on CPU tensors (tiny shapes only). The ahead-of-time compile check
runs in a subprocess without it (tests/test_triton_aot.py).
"""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import fastrnn.kernels  # noqa: E402



def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed_and_poison(monkeypatch):
    torch.manual_seed(0)
    monkeypatch.setattr(fastrnn.kernels, "POISON", True)


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
