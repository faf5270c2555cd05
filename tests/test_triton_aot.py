"""Ahead-of-time compile and residency of every Triton configuration the launchers can
choose (tests/aot_check.py), for an A100 (sm_80) and an H100 (sm_90a), on the CPU.

Runs the check in a child process without TRITON_INTERPRET (the interpreter replaces
@triton.jit functions, so they cannot be compiled there).
"""
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")


def test_every_plan_compiles_without_spills_and_fits_the_device_at_once():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    script = Path(__file__).with_name("aot_check.py")
    r = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                       timeout=1500)
    assert r.returncode == 0, r.stdout[-5000:] + r.stderr[-5000:]
    lines = r.stdout.splitlines()
    from aot_check import KERNELS, SHAPES, TREE_KERNELS, tree_arities
    # 2 devices x 8 kernels x (fp32 and bf16 over every shape + fp16 at 2), the tree
    # kernels (2 devices x each x 3 dtypes x its arities), and the fused steps of the 4
    # forward kernels in 3 dtypes on both devices
    devices = len(plan_devices())
    plans = devices * len(KERNELS) * (2 * len(SHAPES) + 2) + \
        devices * 3 * sum(len(tree_arities(k)) for k in TREE_KERNELS)
    assert lines[-1] == f"{plans} plans checked, 0 bad"
    assert sum(line.startswith("ok ") for line in lines) == plans + 2 * 4 * 3, r.stdout
    # the FlashRNN shape persists over many programs on both cards
    flash = [line for line in lines if " lstm fwd bfloat16 H=768 B=16:" in line]
    assert len(flash) == 2 and all("persist=True" in line for line in flash)


def plan_devices():
    from fastrnn.kernels.triton.plan import DEVICES
    return DEVICES


def test_every_kernel_declares_the_type_of_each_runtime_argument():
    # resources.signature types arguments from these declarations only (an fp32 scratch
    # buffer is not guessed from its name); here, under the interpreter, the declaration
    # is compared with the kernel's own parameters
    from aot_check import KERNELS, TREE_KERNELS
    for kernel in list(KERNELS.values()) + list(TREE_KERNELS):
        fn = getattr(kernel, "fn", kernel)
        runtime = [n for n, p in inspect.signature(fn).parameters.items()
                   if "constexpr" not in str(p.annotation)]
        assert sorted(kernel.arg_types) == sorted(runtime), fn.__name__
