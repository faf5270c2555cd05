"""Shared test setup: seeds, NaN-poisoned kernel outputs, the `gpu` marker (the helpers
the tests import are in tests/helpers.py).

TRITON_INTERPRET=1 is set here, before anything imports triton, so the Triton
kernels run on CPU tensors (tiny shapes only). The ahead-of-time compile check
runs in a subprocess without it (tests/test_triton_aot.py).
"""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")
# plans in the static order (kernels/triton/tuning.py): tests time nothing
os.environ.setdefault("FASTRNN_TUNE", "0")

import pytest  # noqa: E402
import torch  # noqa: E402

import fastrnn.kernels  # noqa: E402


AOT_TEST = "test_every_plan_compiles_without_spills_and_fits_the_device_at_once"


def pytest_collection_finish(session):
    # the ahead-of-time compile checks run in child processes for ~10 minutes of one core
    # each (tests/test_triton_aot.py): start them as soon as the session will run them,
    # beside the other tests
    if session.config.option.collectonly:
        return
    for item in session.items:
        if getattr(item, "originalname", None) == AOT_TEST:
            item.module._checks()
            return


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


@pytest.fixture
def own_gemm(monkeypatch):
    """The Numba backend's own GEMM (kernels/numba/matmul.py) for every GEMM outside the
    kernels, however small and on any CPU (otherwise it is taken only past MIN_FLOPS, on
    the CPUs where it measured faster); returns the list of its calls' shapes, so a test
    sees that it ran."""
    from fastrnn.kernels import numba as backend
    from fastrnn.kernels.numba import matmul
    monkeypatch.setattr(matmul, "MIN_FLOPS", 0)
    monkeypatch.setattr(matmul, "OWN", True)
    calls, mm = [], backend.mm

    def spy(a, b, add=None):
        calls.append((tuple(a.shape), tuple(b.shape)))
        return mm(a, b, add)
    monkeypatch.setattr(backend, "mm", spy)
    return calls
