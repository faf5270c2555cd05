"""Registers, spills and shared memory of a compiled kernel, read from its cubin.

``triton.compile`` with a GPUTarget builds the cubin for sm_80 / sm_90a on any machine
(no GPU needed); ``cuobjdump``, shipped in the triton wheel, reads its resource usage.
The launchers' plans (plan.py) and the ahead-of-time check in CI use this one reader, so
the residency the tests check is the residency the launchers compute.
"""
import functools
import os
import re
import subprocess
import tempfile

import torch
import triton

from ._common import ARG_TYPES

TRITON_TYPE = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
CUOBJDUMP = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin",
                         "cuobjdump")


def signature(kernel, dtype, consts):
    """triton.compile's signature of ``kernel`` for data of ``dtype``: from the types the
    kernel declares (``_common.arg_types``); a runtime argument without one is an error."""
    declared = getattr(kernel, "arg_types", {})
    runtime = [n for n in kernel.arg_names if n not in consts]
    missing, extra = set(runtime) - set(declared), set(declared) - set(kernel.arg_names)
    if missing or extra:
        raise TypeError(f"{kernel.__name__}: declare the type of every runtime argument with "
                        f"_common.arg_types (undeclared: {sorted(missing)}, not arguments: "
                        f"{sorted(extra)})")
    sig = dict.fromkeys(kernel.arg_names, "constexpr")
    for name in runtime:
        sig[name] = ARG_TYPES[declared[name]] or "*" + TRITON_TYPE[dtype]
    return sig


@functools.lru_cache(maxsize=None)
def _usage(kernel, dtype, consts, num_warps, arch):
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    consts = dict(consts)
    src = ASTSource(kernel, signature(kernel, dtype, consts), constexprs=consts)
    try:
        k = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                           options=dict(num_warps=num_warps))
    except Exception:                 # noqa: BLE001 - e.g. out of shared memory: unusable
        return None
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(k.asm["cubin"])
        f.flush()
        report = subprocess.run([CUOBJDUMP, "--dump-resource-usage", f.name], check=True,
                                capture_output=True, text=True).stdout
    regs, stack, static_shared, local = map(int, re.search(
        r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", report).groups())
    return dict(regs=regs, spills=stack + local, shared=k.metadata.shared + static_shared)


def usage(kernel, dtype, consts, num_warps, arch):
    """-> dict(regs, spills, shared) of ``kernel`` compiled for sm_<arch>, or None when it
    does not compile (arch 90 builds sm_90a). Cached per process."""
    return _usage(kernel, dtype, tuple(sorted(consts.items())), num_warps, arch)
