"""The cell table (fastrnn/cells.py) is the one list of cells: every backend ships the
launchers it names, the reference has the recurrences it names, the drop-in modules
exist for the cells that mirror torch, and the other lists derive from it."""
import importlib

import pytest
import torch

import fastrnn
from fastrnn import backends, reference
from fastrnn.cells import CELLS, SEQUENCE, TREES


@pytest.mark.parametrize("backend", ["numba", "triton"])
def test_every_backend_ships_the_launchers_of_every_cell(backend):
    be = backends.REGISTRY[backend]
    if not be.is_available():
        pytest.skip(f"{backend} is not installed")
    kernels = importlib.import_module(be.module)
    assert be.cells == frozenset(CELLS)
    for cell in CELLS.values():
        for launcher in cell.launchers:
            assert callable(getattr(kernels, launcher, None)), f"{backend} lacks {launcher}"


def test_the_reference_and_the_modules_follow_the_table():
    assert backends.REGISTRY["reference"].cells == frozenset(CELLS)
    for cell in CELLS.values():
        for fn in cell.reference:
            assert callable(getattr(reference, fn, None)), f"reference lacks {fn}"
        for cls in (cell.torch_layer, cell.torch_cell):
            if cls:      # the drop-in module subclasses its torch class
                assert issubclass(getattr(fastrnn, cls), getattr(torch.nn, cls))
    assert set(SEQUENCE) | set(TREES) == set(CELLS) and not set(SEQUENCE) & set(TREES)


def test_derived_lists():
    from bench import cases
    from fastrnn.models import lm
    assert list(cases.GATES.values()) == [CELLS[c].gates for c in SEQUENCE]
    assert list(cases.LAYER.values()) == [CELLS[c].torch_layer for c in SEQUENCE]
    assert lm.CELLS == SEQUENCE
