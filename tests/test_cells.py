"""The cell table (fastrnn/cells.py) is the one list of cells: every backend ships the
launchers it names, the reference has the recurrences it names, the drop-in modules
exist for the cells that mirror torch, and the other lists derive from it."""
import importlib

import pytest
import torch

import fastrnn
from fastrnn import autograd, backends, reference
from fastrnn.kernels import reference as kernels_reference
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
        assert issubclass(getattr(autograd, cell.function), torch.autograd.Function)
        for launcher in cell.launchers:       # the reference backend implements the contract
            assert callable(getattr(kernels_reference, launcher, None)), launcher
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
    from fastrnn.models import deep
    assert {c.split("_")[0] for c in deep.CELLS} == set(SEQUENCE)
    launchers = [n for c in CELLS.values() for n in c.launchers]
    # beside the cells' launchers, the Numba package exports its GEMM for the products outside
    # the recurrences (Backend.mm); nothing else
    extra = {"numba": ["mm", "mm_pays"], "triton": []}
    for backend in ("numba", "triton"):
        assert (importlib.import_module(f"fastrnn.kernels.{backend}").__all__ ==
                launchers + extra[backend])


def test_no_other_module_lists_the_cells():
    # "grep finds the list of cells in one place only": no literal list, tuple, set or dict
    # outside fastrnn/cells.py names two cells (or their torch classes), except the
    # public export list and a model that supports some cells on purpose
    import ast
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    names = (set(CELLS) | {c.torch_layer for c in CELLS.values()} |
             {c.torch_cell for c in CELLS.values()}) - {None}
    allowed = {"fastrnn/__init__.py": "the public export list (static, for readers and IDEs)",
               "fastrnn/models/seq2seq.py": "Seq2Seq supports the gated cells only"}
    found = []
    for path in [p for d in ("fastrnn", "kernels", "bench") for p in (root / d).rglob("*.py")]:
        rel = path.relative_to(root).as_posix()
        if rel == "fastrnn/cells.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.List, ast.Tuple, ast.Set, ast.Dict)):
                elts = node.keys if isinstance(node, ast.Dict) else node.elts
                hit = [e.value for e in elts if isinstance(e, ast.Constant) and e.value in names]
                if len(hit) >= 2:
                    found.append((rel, node.lineno, hit))
    assert [f for f in found if f[0] not in allowed] == []
