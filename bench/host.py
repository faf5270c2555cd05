"""The host side of the Triton path, measured on the CPU (``--sections host``).

Per sequence cell, one layer call forward+backward at (T, B, H) = HOST_SHAPE, one
decoding step of its cell module and one of a decoding loop's ``functional.stepper``
(no_grad, B = 1, H = 512), on the Triton backend with every
kernel launch stubbed (fastrnn.kernels.triton.stub): the kernel launches and the torch
ops each issues (a torch op is a kernel launch on a GPU, except views and allocations),
and each launcher's Python time per call, timed alone on the arguments the call gave
it, next to the Numba launcher's time per call on the arguments the same call gives it
on the Numba backend (which computes).
A regression in the host path shows here on any machine; the kernels' own time only on
a device. Runs in a child process with TRITON_INTERPRET=1, so that the backends accept
CPU tensors for Triton (the stub runs no kernel, interpreted or compiled).
"""
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).parent.parent
HOST_SHAPE = (100, 8, 32)          # (T, B, H): the small shape, where the host is the time
STEP = (1, 96, 512)                # (B, I, H) of a decoding step
# aten ops that launch no kernel on a GPU: views, metadata and allocation
NO_KERNEL = {"t", "transpose", "view", "unsqueeze", "squeeze", "expand", "as_strided",
             "detach", "empty", "empty_like", "empty_strided", "alias", "_unsafe_view",
             "permute", "select", "slice", "split", "unbind", "reshape", "contiguous",
             "new_empty", "new_empty_strided", "lift_fresh", "_to_copy_noop"}


def counted(fn):
    """-> (kernel launches [names], torch ops that launch a kernel [names], all torch ops
    [names]) of ``fn()`` run with launches stubbed, after one uncounted call (the one-off
    work of a first call: plans, cached constants)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from fastrnn.kernels.triton import stub

    with stub.stubbed():
        fn()
    ops = []

    class Ops(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            ops.append(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))
    with stub.stubbed() as launches, Ops():
        fn()
    return [k for k, _ in launches], [o for o in ops if o not in NO_KERNEL], ops


def layer_call(cell, backend="triton", shape=HOST_SHAPE, **options):
    """-> a function running one forward+backward of a one-layer drop-in ``cell``."""
    import torch

    import fastrnn
    from fastrnn.cells import CELLS
    T, B, H = shape
    layer = getattr(fastrnn, CELLS[cell].torch_layer)(H, H, **options)
    layer.backend = backend
    x = torch.randn(T, B, H, requires_grad=True)

    def call():
        layer.zero_grad(set_to_none=True)          # no accumulation: the same ops each call
        x.grad = None
        out, _ = layer(x)
        out.sum().backward()
    return call


def _step_inputs(cell, shape):
    """(x [B, I], the cell's state) of a step at ``shape`` = (B, I, H)."""
    import torch

    from fastrnn.cells import CELLS
    B, I, H = shape
    h = torch.randn(B, H)
    return torch.randn(B, I), (h, h.clone()) if len(CELLS[cell].states) > 1 else h


def step_call(cell, backend="triton", shape=STEP):
    """-> a function running one decoding step (no_grad) of the drop-in ``cell``'s cell."""
    import torch

    import fastrnn
    from fastrnn.cells import CELLS
    module = getattr(fastrnn, CELLS[cell].torch_cell)(*shape[1:])
    module.backend = backend
    x, state = _step_inputs(cell, shape)

    def call():
        with torch.no_grad():
            module(x, state)
    return call


def stepper_call(cell, backend="triton", shape=STEP):
    """-> a function running one step of a decoding loop's ``functional.stepper``
    (no_grad), which checks its arguments once, not per step."""
    import torch

    from fastrnn import functional
    from fastrnn.cells import CELLS
    twin = getattr(torch.nn, CELLS[cell].torch_cell)(*shape[1:])
    w = [twin.weight_ih, twin.weight_hh, twin.bias_ih, twin.bias_hh]
    x, state = _step_inputs(cell, shape)
    with torch.no_grad():
        step = functional.stepper(cell, w, x, backend=backend)

    def call():
        with torch.no_grad():
            step(x, state)
    return call


def _per_call_us(fn, reps):
    import time
    fn()
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        best = min(best, (time.perf_counter() - t0) / reps * 1e6)
    return best


def measure(reps=200):
    """-> rows of dicts: per cell and call kind, launches and torch ops per call, and per
    launcher its stubbed Triton host time and Numba's time per call, in µs."""
    import importlib

    from fastrnn.cells import CELLS, SEQUENCE
    from fastrnn.kernels.triton import stub
    triton_mod = importlib.import_module("fastrnn.kernels.triton")
    numba_mod = importlib.import_module("fastrnn.kernels.numba")
    rows = []
    for cell in SEQUENCE:
        for kind, make, names in (
                ("layer fwd+bwd", layer_call, CELLS[cell].launchers[:2]),
                ("step", step_call, CELLS[cell].launchers[2:]),
                ("stepper step", stepper_call, CELLS[cell].launchers[2:])):
            # the launchers' arguments as each backend's call gives them (a stepper looks
            # its launcher up when it is made: made inside the capture)
            with stub.captured(triton_mod, names) as calls:
                call = make(cell)
                launches, kernels, ops = counted(call)
            with stub.captured(numba_mod, names) as numba_calls:
                make(cell, "numba")()
            for name in names:
                kwargs, numba_kwargs = calls[name][0], numba_calls[name][0]
                with stub.stubbed():
                    triton_us = _per_call_us(lambda: getattr(triton_mod, name)(**kwargs), reps)
                numba_us = _per_call_us(lambda: getattr(numba_mod, name)(**numba_kwargs),
                                        max(1, reps // 10))
                rows.append(dict(cell=cell, call=kind, launcher=name,
                                 launches=len(launches), torch_kernels=len(kernels),
                                 torch_ops=len(ops), triton_host_us=round(triton_us, 1),
                                 numba_us=round(numba_us, 1),
                                 torch_kernel_ops=" ".join(f"{o}x{n}" for o, n in
                                                           Counter(kernels).most_common())))
    return rows


def run(reps=200):
    """The rows, measured in a child process with TRITON_INTERPRET=1."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    out = subprocess.run([sys.executable, "-m", "bench.host", str(reps)], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])


if __name__ == "__main__":
    print(json.dumps(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 200)))
