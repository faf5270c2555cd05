"""Costs a user feels beyond kernel time: cold start and peak memory.

Both run in fresh child processes (``python -m bench.costs <what> <provider>``),
which print one JSON line.

Cold start: wall time from launching a fresh interpreter to the first result of a
layer (T=100, B=32, I=H=128, float32): an LSTM forward, and a forward+backward of
each of LSTM, GRU and RNN; and the provider's own part of it: everything after
``import torch``, which every PyTorch user pays anyway (import, kernel load or
compilation, the call), timed inside the child. fastrnn is measured with an empty
Numba cache (a new NUMBA_CACHE_DIR per case: every kernel the call needs is
compiled) and again with that cache warm.

Memory: the rise of the process's peak resident memory during the first
forward+backward at the large shape, and (in another child) during the first
forward under ``no_grad``, each after a tiny warm-up that loads the kernels;
the input tensor is allocated before the baseline is read, so the figure is what
the layer itself allocates. Linux's VmHWM is reset first (/proc/self/clear_refs);
ru_maxrss would not do: a child inherits its parent's high-water mark across
fork/exec, so under a big parent it never moves. Both providers run with the same
allocator setting (fastrnn/_alloc.py).
"""
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).parent.parent
COLD_SHAPE = (100, 32, 128)


def _child(what, provider, env=None):
    """-> (wall seconds, the child's JSON)."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "bench.costs", what, provider], cwd=ROOT,
                         capture_output=True, text=True, check=True,
                         env={**os.environ, **(env or {})})
    wall = time.perf_counter() - t0
    return wall, json.loads(out.stdout.strip().splitlines()[-1])


COLD_CASES = (("lstm", "fwd"), ("lstm", "fwdbwd"), ("gru", "fwdbwd"), ("rnn", "fwdbwd"))


def cold_start(providers, quick=False):
    """-> (floor_s, [(provider, cell, mode, numba cache, total_s, own_s)]). total: wall
    time of a fresh process up to the first result; own: the part after ``import
    torch`` (the provider's import, kernel load or compilation and the call), timed
    inside the child, so process start-up noise does not enter it; floor: a fresh
    process that imports torch and stops. Best of ``n`` launches, except the
    empty-cache one (a single launch by nature). ``quick``: the LSTM forward only."""
    n = 1 if quick else 3

    def best(what, p, env=None, runs=n):
        walls, owns = zip(*((w, j["own_s"]) for w, j in
                            (_child(what, p, env) for _ in range(runs))))
        return min(walls), min(owns)

    floor = best("coldstart", "none")[0]
    rows = []
    for cell, mode in COLD_CASES[:1] if quick else COLD_CASES:
        what = f"coldstart-{cell}-{mode}"
        with tempfile.TemporaryDirectory() as cache:
            for p in providers:
                if p != "fastrnn-numba":
                    runs = [("n/a", None)]
                elif quick:     # the source tree's cache, which the timed cases have filled
                    runs = [("warm", None)]
                else:
                    env = {"NUMBA_CACHE_DIR": cache}
                    runs = [("empty", env), ("warm", env)]
                for label, env in runs:
                    rows.append((p, cell, mode, label,
                                 *best(what, p, env, 1 if label == "empty" else n)))
    return floor, rows


def memory(providers, mode="fwdbwd"):
    """{provider: MiB the first large-shape fwd+bwd (``mode`` "fwdbwd") or forward under
    no_grad ("fwd") adds to the peak RSS}."""
    return {p: _child(f"memory-{mode}", p)[1]["peak_mib"] for p in providers}


# ------------------------------------------------------------- child side
def _layer(provider, H, cell="lstm"):
    import torch
    from fastrnn.cells import CELLS
    name = CELLS[cell].torch_layer
    if provider == "torch":
        return getattr(torch.nn, name)(H, H)
    import fastrnn
    m = getattr(fastrnn, name)(H, H)
    m.backend = {"fastrnn-numba": "numba", "reference": "reference"}[provider]
    return m


def _child_main(what, provider):
    if what.startswith("coldstart"):
        import torch
        t0 = time.perf_counter()                # after the interpreter and import torch
        if provider != "none":
            _, cell, mode = what.split("-")
            T, B, H = COLD_SHAPE
            m = _layer(provider, H, cell)
            x = torch.randn(T, B, H, requires_grad=mode == "fwdbwd")
            out, _ = m(x)
            if mode == "fwdbwd":
                out.sum().backward()
                float(x.grad[0, 0, 0])          # the gradient exists
            float(out.detach()[-1, 0, 0])       # the result exists
        print(json.dumps({"own_s": time.perf_counter() - t0}))
        return
    import torch
    from fastrnn._alloc import keep_freed_memory
    keep_freed_memory()
    from .matrix import SHAPES
    T, B, H = SHAPES["large"]
    m = _layer(provider, H)
    train = what == "memory-fwdbwd"
    with torch.no_grad():
        m(torch.randn(2, B, H))                 # load the kernels
    if train:
        m(torch.randn(2, B, H, requires_grad=True))[0].sum().backward()
        m.zero_grad(set_to_none=False)
    x = torch.randn(T, B, H, requires_grad=train)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")                            # VmHWM := current RSS
    base = _status_kib("VmHWM")
    with torch.set_grad_enabled(train):
        out, (h, c) = m(x)
        if train:
            (out.sum() + h.sum() + c.sum()).backward()
    print(json.dumps({"peak_mib": (_status_kib("VmHWM") - base) / 1024}))


def _status_kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


if __name__ == "__main__":
    _child_main(sys.argv[1], sys.argv[2])
