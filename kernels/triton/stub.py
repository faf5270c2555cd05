"""The Triton launchers' host side alone: every kernel launch recorded instead of run.

What a CPU can show of the GPU path: how many kernel launches and torch ops a launcher
call issues, and its Python time per call (``python -m bench --sections host``,
tests/test_host.py). Inside ``stubbed()`` a launch of any Triton kernel, compiled or
interpreted, appends (kernel name, grid) to the returned list and returns without
running, and the launchers take the persistent plan a device would for the shape: a
fixed tiling (``plan.STREAMING[0]``) stands in for the planner's choice, which needs the
card's figures and compiled kernels. Outputs are garbage (nothing ran); the tensors are
CPU tensors.
"""
import contextlib

from . import plan


def _kernel_classes():
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction
    return JITFunction, InterpretedFunction


def _persistent_plan(kernel, cell, direction, H, P, B, dtype, flags, dev_index):
    tiling = plan.STREAMING[0]
    return plan.Plan(tiling, plan.cdiv(H, tiling.U), B, True, "stubbed: a fixed tiling")


@contextlib.contextmanager
def stubbed(tuning=False):
    """-> the list of launches made inside the block, as (kernel name, grid). Plans are
    not tuned (kernels/triton/tuning.py: that times launches) unless ``tuning``."""
    launches = []

    def record(self, *args, grid, warmup, **kwargs):
        launches.append((self.fn.__name__, tuple(grid)))

    saved = [(cls, cls.run) for cls in _kernel_classes()]
    saved_plan, saved_interpret = plan.cached_plan, plan.triton_interpret
    saved_enabled = plan.tuning.enabled
    try:
        for cls, _ in saved:
            cls.run = record
        plan.cached_plan, plan.triton_interpret = _persistent_plan, lambda: False
        if not tuning:
            plan.tuning.enabled = lambda: False
        yield launches
    finally:
        for cls, run in saved:
            cls.run = run
        plan.cached_plan, plan.triton_interpret = saved_plan, saved_interpret
        plan.tuning.enabled = saved_enabled


@contextlib.contextmanager
def captured(module, names):
    """-> {launcher name: [keyword arguments of each call]} of the launchers ``names`` of
    ``module`` called inside the block (the Functions look them up on the module at every
    call), so that a launcher can be timed alone on the arguments a layer gives it."""
    calls = {n: [] for n in names}
    saved = {n: getattr(module, n) for n in names}

    def recorder(name, launcher):
        def call(**kwargs):
            calls[name].append(kwargs)
            return launcher(**kwargs)
        return call
    try:
        for n, launcher in saved.items():
            setattr(module, n, recorder(n, launcher))
        yield calls
    finally:
        for n, launcher in saved.items():
            setattr(module, n, launcher)
