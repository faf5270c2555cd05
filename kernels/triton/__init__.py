"""Triton (CUDA) backend: persistent forward and BPTT kernels, fused decoding steps, launchers.

Exports every launcher the cell table (fastrnn/cells.py) names, from the public module of
this package defining it (a new cell's module is found by its file)."""
import importlib
import pkgutil

from ...cells import CELLS

_modules = [importlib.import_module(f"{__name__}.{m.name}") for m in pkgutil.iter_modules(__path__)
            if not m.name.startswith("_")]
__all__ = [n for cell in CELLS.values() for n in cell.launchers]
globals().update({n: next(getattr(m, n) for m in _modules if hasattr(m, n)) for n in __all__})
