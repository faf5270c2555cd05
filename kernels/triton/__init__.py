"""Triton (CUDA) backend: persistent forward and BPTT kernels, fused decoding steps, launchers.

Exports every launcher the cell table (fastrnn/cells.py) names, from the public module of
this package defining it (a new cell's module is found by its file)."""
from .. import table_launchers

_exports = table_launchers(__name__, __path__)
globals().update(_exports)
__all__ = list(_exports)
