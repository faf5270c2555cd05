"""python -m fastrnn.precompile: build the Numba kernel cache ahead of time.

For Docker images and CI: run it once where the cache will live (the package's
``__pycache__`` folders, else Numba's user-wide cache, or NUMBA_CACHE_DIR), and every
later process loads the kernels in well under a second instead of compiling them on
its first call. It drives each cell through the public layers on tiny inputs, so it
compiles exactly what those calls need: per dtype, the sequence kernels forward and
backward (equal lengths and a PackedSequence, which specialise separately), the
decoding step (the *Cell modules), and with ``--cells`` the tree nets.

    python -m fastrnn.precompile                       # rnn gru lstm, float32
    python -m fastrnn.precompile --dtypes float32 float64 --cells lstm tree
"""
import argparse
import logging
import sys
import time

import torch
from torch.nn.utils.rnn import pack_padded_sequence

from .cells import CELLS as TABLE, SEQUENCE

CELLS = SEQUENCE + ("tree",)      # "tree": the three tree cells
DTYPES = ("float32", "float64")


def _layer_calls(cell, dtype):
    """-> [(label, call)]: the calls that compile ``cell``'s kernels in ``dtype``."""
    import fastrnn
    layer = getattr(fastrnn, TABLE[cell].torch_layer)(4, 4).to(dtype)
    step = getattr(fastrnn, TABLE[cell].torch_cell)(4, 4).to(dtype)
    layer.backend = step.backend = "numba"

    def train():
        x = torch.randn(3, 2, 4, dtype=dtype, requires_grad=True)
        layer(x)[0].sum().backward()

    def packed():
        x = torch.randn(3, 2, 4, dtype=dtype, requires_grad=True)
        out = layer(pack_padded_sequence(x, [3, 2]))[0]
        out.data.sum().backward()

    def decode():
        with torch.no_grad():
            step(torch.randn(2, 4, dtype=dtype))
    return [("forward+backward", train), ("packed", packed), ("decoding step", decode)]


def _tree_calls(dtype):
    import fastrnn
    forest = fastrnn.Forest([-1, 0, 0, 1])
    calls = []
    for model in (fastrnn.TreeRNN(4, 4), fastrnn.NaryTreeLSTM(4, 4),
                  fastrnn.ChildSumTreeLSTM(4, 4)):
        model = model.to(dtype)
        model.backend = "numba"

        def run(model=model):
            out = model(torch.randn(4, 4, dtype=dtype), forest)
            (out[0] if isinstance(out, tuple) else out).sum().backward()
        calls.append((type(model).__name__, run))
    return calls


def _bar(done, total, label, t0, out):
    width = 24
    fill = width * done // total
    out.write(f"\r[{'#' * fill}{'.' * (width - fill)}] {done}/{total} {label:<40.40} "
              f"{time.perf_counter() - t0:5.1f} s")
    out.flush()


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m fastrnn.precompile", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtypes", nargs="+", choices=DTYPES, default=["float32"])
    ap.add_argument("--cells", nargs="+", choices=CELLS, default=list(SEQUENCE))
    args = ap.parse_args(argv)
    from . import backends
    numba_backend = backends.REGISTRY["numba"]
    if not numba_backend.is_available():
        print("fastrnn.precompile: numba is not installed; nothing to compile", file=sys.stderr)
        return 1
    logging.getLogger("fastrnn.compile").setLevel(logging.ERROR)   # the bar says it
    kernels = numba_backend.kernels()
    jobs = []
    for dtype in args.dtypes:
        dt = getattr(torch, dtype)
        for cell in args.cells:
            calls = _tree_calls(dt) if cell == "tree" else _layer_calls(cell, dt)
            jobs += [(f"{cell} {dtype} {label}", call) for label, call in calls]
    out, t0 = sys.stderr, time.perf_counter()
    for i, (label, call) in enumerate(jobs):
        _bar(i, len(jobs), label, t0, out)
        call()
    _bar(len(jobs), len(jobs), "done", t0, out)
    out.write("\n")
    where = kernels.lstm.lstm_fwd_kernel._cache.cache_path
    print(f"fastrnn.precompile: {len(jobs)} calls compiled or loaded in "
          f"{time.perf_counter() - t0:.1f} s; cache: {where}", file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
