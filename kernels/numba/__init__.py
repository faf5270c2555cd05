"""Numba (CPU) backend: fused forward and BPTT kernels and their launchers.

The cyclic garbage collector is paused while Numba is imported and while a launcher
runs. Numba's import and a kernel's first load (from the cache, or its compilation)
each build hundreds of thousands of small objects; every GC pass those allocations
trigger walks the whole heap, which torch has already filled. Measured here: cold
start to the first LSTM forward with a warm cache, 0.92 s -> 0.61 s (median of 6).
Nothing built there is cyclic garbage, and after the first call a launcher allocates
a handful of tensors, so pausing costs nothing later. The collector is left as found.

Threads: a launcher runs on as many Numba threads as torch's pool has
(``torch.set_num_threads``; at most NUMBA_NUM_THREADS, the cores by default), and leaves
torch's setting as it found it. Both pools are OpenMP here, and Numba's launch sets the
calling thread's OpenMP thread count to its own, which is the count torch reports: a
server that set torch to one thread per worker was silently back at every core after
one call.
"""
import functools
import gc
import logging
import os

import numba
import torch
from numba.np.ufunc import parallel as _parallel

from .. import table_launchers


def _gc_paused(run, *args, **kwargs):
    """run(*args, **kwargs) with the collector paused (and left as found)."""
    if not gc.isenabled():
        return run(*args, **kwargs)
    gc.disable()
    try:
        return run(*args, **kwargs)
    finally:
        gc.enable()


def _numba_threads():
    """numba.get_num_threads() without its thread-launch check once the threads run
    (0.1 against 0.8 us, paid by every decoding step)."""
    if getattr(_parallel, "_is_initialized", False) and hasattr(_parallel, "_get_num_threads"):
        return _parallel._get_num_threads()
    return numba.get_num_threads()


def _torch_threads(run, *args, **kwargs):
    """run(*args, **kwargs) on torch's thread count, torch's setting left as found."""
    n = torch.get_num_threads()
    if _numba_threads() != n:
        numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
    try:
        return _gc_paused(run, *args, **kwargs)
    finally:
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)


# LLVM's optimisation level while fastrnn's kernels compile: -O2 instead of Numba's
# default -O3. An LSTM forward+backward from an empty cache compiled in 7.7 s against
# 10.1 (-O1: 6.8 s), and the kernels ran as fast: LSTM, GRU, RNN (100, 32, 128)
# fwd+bwd, float64 LSTM, a large forward, a decoding step and Child-Sum trees, three
# alternated runs each, all within run-to-run noise (kernels/README.md, Numba). Only
# fastrnn's compilations are affected, and a NUMBA_OPT the user sets wins.
KERNEL_OPT = 2


def _listen():
    """Says once per process, on stderr through the ``fastrnn.compile`` logger, that a
    fastrnn kernel is being compiled (seconds, on first use in an environment) and where
    it is cached. Silence it with ``logging.getLogger("fastrnn.compile").setLevel(
    logging.ERROR)``; ``python -m fastrnn.precompile`` builds the cache ahead of time.
    While a fastrnn function compiles, Numba's optimisation level is KERNEL_OPT."""
    from numba.core import config, event

    class FastrnnCompile(event.Listener):
        told = False
        depth = 0                   # nested compiles of fastrnn's helpers
        saved = None

        def on_start(self, ev):
            d = ev.data["dispatcher"]
            if not d.py_func.__module__.startswith(__name__):
                return
            if self.depth == 0 and "NUMBA_OPT" not in os.environ:
                self.saved, config.OPT = config.OPT, type(config.OPT)(KERNEL_OPT)
            self.depth += 1
            if self.told:
                return
            self.told = True
            logging.getLogger("fastrnn.compile").warning(
                "fastrnn: compiling Numba kernels for this call (first use here: seconds); "
                "they are cached in %s and load in under a second from then on (python -m "
                "fastrnn.precompile builds them ahead of time)", d._cache.cache_path)

        def on_end(self, ev):
            if not ev.data["dispatcher"].py_func.__module__.startswith(__name__):
                return
            self.depth -= 1
            if self.depth == 0 and self.saved is not None:
                config.OPT, self.saved = self.saved, None
    event.register("numba:compile", FastrnnCompile())


def _launcher(run):
    return functools.wraps(run)(functools.partial(_torch_threads, run))


_listen()
_exports = _gc_paused(table_launchers, __name__, __path__, _launcher)  # imports the kernels
from .matmul import mm, mm_pays  # noqa: E402  (the GEMMs outside the kernels)
_exports.update(mm=_launcher(mm), mm_pays=mm_pays)
globals().update(_exports)
__all__ = list(_exports)
