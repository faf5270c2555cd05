"""Registers, spills and shared memory of a compiled kernel, read from its cubin.

``triton.compile`` with a GPUTarget builds the cubin for sm_80 / sm_90a on any machine
(no GPU needed); ``cuobjdump``, shipped in the triton wheel, reads its resource usage.
The build is the one a launch compiles (``launch_spec``: Triton's own specialisation of
the arguments). The launchers' plans (plan.py) and the ahead-of-time check in CI use this
one reader, so the residency the tests check is the residency the launchers compute.
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
TORCH_TYPE = dict({v: k for k, v in TRITON_TYPE.items()}, i64=torch.int64, i32=torch.int32)
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


def specialized_ints(kernel):
    """The integer arguments a launch specialises on (not ``do_not_specialize``): Triton
    compiles a separate build when one is divisible by 16 and makes a 1 a constant, so the
    values the launcher passes decide what compiles."""
    declared = getattr(kernel, "arg_types", {})
    return [p.name for p in kernel.params if declared.get(p.name) == "int" and
            not p.do_not_specialize and not p.is_constexpr]


def launch_spec(kernel, dtype, consts, ints, arch):
    """(signature, constexprs, attrs) exactly as a launch of ``kernel`` on sm_<arch> compiles
    them: Triton's own binder applied to a 16-byte aligned tensor (torch's allocations
    are) of each pointer's declared type and to ``ints``, the value of every integer in
    ``specialized_ints`` (the others do not change the build). Without the launch's
    divisibility attributes a check compiles other code than the device runs (Triton 3.6
    failed on sm_90 in a build that the attribute-free check passed)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature
    missing = set(specialized_ints(kernel)) - set(ints)
    if missing:
        raise TypeError(f"{kernel.__name__}: give the launch's value of {sorted(missing)}")
    sig = signature(kernel, dtype, consts)
    args = []
    for name in kernel.arg_names:
        if name in consts:
            args.append(consts[name])
        elif sig[name].startswith("*"):
            args.append(torch.empty(4, dtype=TORCH_TYPE[sig[name][1:]]))
        else:
            args.append(ints.get(name, 3))       # 3: neither 1 nor divisible by 16
    backend = make_backend(GPUTarget("cuda", arch, 32))
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    bound, specialization, options = binder(*args)
    _, launch_sig, constexprs, attrs = kernel._pack_args(backend, {}, bound, specialization,
                                                         options)
    # the binder spells the pointers' types from the sample tensors: check it against the
    # declared ones, so that a stale declaration cannot pass unnoticed
    for name, t in sig.items():
        if t != "constexpr" and launch_sig[name] not in (t, "constexpr"):
            raise TypeError(f"{kernel.__name__}.{name}: {launch_sig[name]} != {t}")
    return launch_sig, constexprs, attrs


def _frozen(x):
    return tuple(sorted((k, tuple(map(tuple, v)) if isinstance(v, list) else v)
                        for k, v in x.items()))


@functools.lru_cache(maxsize=None)
def _usage(kernel, spec, num_warps, arch, maxnreg):
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    sig, constexprs, attrs = (dict(x) for x in spec)
    src = ASTSource(kernel, sig, constexprs=constexprs,
                    attrs={k: [list(a) for a in v] for k, v in attrs.items()})
    try:
        k = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                           options=dict(num_warps=num_warps, maxnreg=maxnreg))
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


def usage(kernel, dtype, consts, num_warps, arch, ints, maxnreg=None):
    """-> dict(regs, spills, shared) of ``kernel`` compiled for sm_<arch> as a launch with
    these constexprs, integer values (``launch_spec``) and options compiles it, or None
    when it does not compile (arch 90 builds sm_90a). Cached per process and build."""
    spec = launch_spec(kernel, dtype, consts, ints, arch)
    return _usage(kernel, tuple(_frozen(x) for x in spec), num_warps, arch, maxnreg)
