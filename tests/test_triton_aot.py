"""Ahead-of-time compile and residency of every Triton configuration the launchers can
choose (tests/aot_check.py), for an A100 (sm_80) and an H100 (sm_90a), on the CPU, under
the newest Triton (the one installed) and the oldest supported one.

The oldest is torch 2.11's Triton 3.6 (fastrnn.backends.TritonBackend.OLDEST): installed
beside the newest in a folder of its own (``pip install --no-deps --target DIR
triton==3.6.0``; .ci/run does) and named by FASTRNN_TRITON_OLDEST, it goes first on the
child's PYTHONPATH. Both checks run at once, each in a child process without
TRITON_INTERPRET (the interpreter replaces @triton.jit functions, so they cannot be
compiled there).
"""
import atexit
import functools
import inspect
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from helpers import oldest_triton_env

pytest.importorskip("triton")

OLDEST_DIR = os.environ.get("FASTRNN_TRITON_OLDEST")


def _start(env):
    # output to files, not pipes: a check prints ~100 KB, and a child whose pipe is full
    # waits until it is read (the oldest's was not read before the newest had finished)
    script = Path(__file__).with_name("aot_check.py")
    out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    return subprocess.Popen([sys.executable, str(script)], env=env, stdout=out, stderr=err,
                            text=True), out, err


@functools.cache
def _checks():
    """Both checks, started together on first use: conftest starts them as soon as the
    session has collected this test, so that their ~10 minutes of compiling (one core
    each) overlap the other tests, which keep about one core busy."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    checks = {"newest": _start(env),
              "oldest": _start(oldest_triton_env(env)) if OLDEST_DIR else None}
    # a session stopped early leaves no check compiling on
    atexit.register(lambda: [c[0].kill() for c in checks.values() if c and c[0].poll() is None])
    return checks


@functools.cache
def _result(which):
    proc, out, err = _checks()[which]
    proc.wait(timeout=1500)
    out.seek(0)
    err.seek(0)
    return proc.returncode, out.read(), err.read()


@pytest.mark.parametrize("which", ["newest", "oldest"])
def test_every_plan_compiles_without_spills_and_fits_the_device_at_once(which):
    if which == "oldest":
        oldest_triton_env()                  # skips, saying how, where none is installed
    rc, out, err = _result(which)
    assert rc == 0, out[-5000:] + err[-5000:]
    lines = out.splitlines()
    from fastrnn.backends import TritonBackend
    version = tuple(int(p) for p in lines[0].split()[1].split(".")[:2])
    if which == "oldest":
        assert version == TritonBackend.OLDEST and lines[0].split()[3].startswith(OLDEST_DIR)
    else:
        assert version >= TritonBackend.OLDEST
    import torch
    from aot_check import KERNELS, SHAPES, STEP_PHASES, TREE_H, TREE_KERNELS, wide_tilings
    # 2 devices x 8 kernels x (fp32 and bf16 over every shape + fp16 at 2), the tree
    # kernels (2 devices x each x 3 dtypes x both widths) and every tiling tuning may time
    # at H = 768 (2 devices x 8 kernels x fp32 and bf16: wide, on chip, levers)
    devices = len(plan_devices())
    plans = devices * len(KERNELS) * (2 * len(SHAPES) + 2) + \
        devices * len(TREE_KERNELS) * 3 * len(TREE_H) + \
        devices * sum(len(wide_tilings(*key, dtype)) for key in KERNELS
                      for dtype in (torch.float32, torch.bfloat16))
    assert lines[-1] == f"{plans} plans checked, 0 bad"
    # and the fused steps of the forward kernels in 3 dtypes, each of their launches
    steps = devices * 3 * sum(len(STEP_PHASES[proj]) for (_, d, proj) in KERNELS if d == "fwd")
    assert sum(line.startswith("ok ") for line in lines) == plans + steps, out
    # the FlashRNN shape persists over many programs on both cards
    flash = [line for line in lines if " lstm fwd bfloat16 H=768 B=16:" in line]
    assert len(flash) == 2 and all("persist=True" in line for line in flash)


def plan_devices():
    from fastrnn.kernels.triton.plan import DEVICES
    return DEVICES


def test_the_checks_build_what_a_launch_compiles():
    # resources.launch_spec runs Triton's own binder: pointers and sizes divisible by 16
    # carry the attribute, a runtime flag of 1 becomes a constant, do_not_specialize
    # arguments stay plain (the builds a device compiles, not attribute-free ones). In a
    # child: the interpreter (conftest) replaces the kernels and their binder
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", "import test_triton_aot as t; t.launch_spec_cases()"],
                       cwd=Path(__file__).parent, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr[-3000:]


def launch_spec_cases():
    import torch
    from fastrnn.kernels.triton import lstm, plan
    from fastrnn.kernels.triton.resources import launch_spec
    kernel = lstm.lstm_fwd_kernel
    consts = plan.constexprs(kernel, plan.FALLBACK, 128, 64, torch.bfloat16, 8, I=96,
                             **dict(plan.USAGE_FLAGS, FUSE_X=True, PROJ=True, RELU=False))
    index = {n: (i,) for i, n in enumerate(kernel.arg_names)}
    for phases in (1, 2):
        sig, constexprs, attrs = launch_spec(kernel, torch.bfloat16, consts,
                                             plan.launch_ints(kernel, 100, 64, 96, phases), 90)
        assert sig["xproj_ptr"] == "*bf16" and sig["lengths_ptr"] == "*i64"
        assert attrs[index["xproj_ptr"]] == [["tt.divisibility", 16]]
        assert attrs[index["P"]] == [["tt.divisibility", 16]]          # 64
        assert attrs.get(index["H"], []) == []                          # 100
        assert attrs.get(index["T"], []) == [] and sig["T"] == "i32"    # not specialised
        assert (sig["phases"] == "constexpr" and constexprs[index["phases"]] == 1) == \
            (phases == 1)
    with pytest.raises(TypeError, match="phases"):
        launch_spec(kernel, torch.bfloat16, consts, dict(H=128, P=64, I=96), 90)
    print("ok")


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
