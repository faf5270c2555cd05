"""Triton (CUDA) backend: persistent forward and BPTT kernels, fused decoding steps, launchers.

Exports every launcher the cell table (fastrnn/cells.py) names, from the module defining it."""
from ...cells import CELLS
from . import gru, lstm, rnn, tree

__all__ = [n for cell in CELLS.values() for n in cell.launchers]
globals().update({n: next(getattr(m, n) for m in (rnn, gru, lstm, tree) if hasattr(m, n))
                  for n in __all__})
