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

TRITON_TYPE = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
SCALARS = ("T", "B", "H", "P", "I", "row0", "row_end", "s_begin", "s_end", "phases", "keep",
           "a0", "a1", "maxdeg")
FP32_POINTERS = ("cbuf_ptr", "dcbuf_ptr", "carry_ptr", "dh_ptr")
INT64_POINTERS = ("lengths_ptr", "table_ptr", "order_ptr", "child_ptr_ptr", "child_idx_ptr")
CUOBJDUMP = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin",
                         "cuobjdump")


def signature(kernel, dtype, consts):
    sig = {}
    for name in kernel.arg_names:
        if name in consts:
            sig[name] = "constexpr"
        elif name in SCALARS:
            sig[name] = "i32"
        elif name in INT64_POINTERS:
            sig[name] = "*i64"
        elif name == "sync_ptr":
            sig[name] = "*i32"
        elif name in FP32_POINTERS:
            sig[name] = "*fp32"
        else:
            sig[name] = "*" + TRITON_TYPE[dtype]
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
