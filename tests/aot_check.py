"""Compile every Triton configuration the launchers can pick for sm_80 and sm_90a
on the CPU, and read registers, spills and shared memory from the cubin.

Run as a script (``python tests/aot_check.py``) in a process WITHOUT
TRITON_INTERPRET; prints one line per kernel and exits 1 on any violation.
"""
import os
import re
import subprocess
import sys
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

import torch

from fastrnn.kernels.triton import gru, lstm, rnn

MAX_REGS = 255
# max shared memory per block (opt-in), bytes
MAX_SHARED = {80: 163 * 1024, 90: 227 * 1024}
TRITON_TYPE = {"torch.float32": "fp32", "torch.float16": "fp16", "torch.bfloat16": "bf16"}
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# (kernel, every (dtype, config) its launcher can pick)
KERNELS = [(k, rnn.configs()) for k in (rnn.rnn_fwd_kernel, rnn.rnn_bwd_kernel)]
for _fwd, _bwd, _config in ((gru.gru_fwd_kernel, gru.gru_bwd_kernel, gru.config),
                            (lstm.lstm_fwd_kernel, lstm.lstm_bwd_kernel, lstm.config)):
    KERNELS += [(_fwd, [(d, _config(d, "fwd")) for d in DTYPES]),
                (_bwd, [(d, _config(d, "bwd")) for d in DTYPES])]
SCALARS = ("T", "B", "H", "P")
FP32_SCRATCH = ("state_ptr", "c_ptr", "dc_ptr", "dm_ptr")
CUOBJDUMP = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


def signature(fn, dtype):
    sig = {}
    for name in fn.arg_names:
        if name in SCALARS:
            sig[name] = "i32"
        elif name == "lengths_ptr":
            sig[name] = "*i64"
        elif name in FP32_SCRATCH:
            sig[name] = "*fp32"
        elif name.endswith("_ptr"):
            sig[name] = "*" + dtype
        else:
            sig[name] = "constexpr"
    return sig


def resources(fn, dtype, cfg, arch):
    consts = {k: v for k, v in cfg.items() if k != "num_warps"}
    # the heaviest flag setting: tanh, reverse, variable lengths, projection, saving
    flags = dict(REVERSE=True, RELU=False, VARLEN=True, PROJ=True, SAVE=True, PRECISION="ieee")
    consts.update({k: v for k, v in flags.items() if k in fn.arg_names})
    target = GPUTarget("cuda", arch, 32)     # capability 90 compiles for sm_90a
    k = triton.compile(ASTSource(fn, signature(fn, dtype), constexprs=consts), target=target,
                       options=dict(num_warps=cfg["num_warps"]))
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(k.asm["cubin"])
        f.flush()
        report = subprocess.run([CUOBJDUMP, "--dump-resource-usage", f.name], check=True,
                                capture_output=True, text=True).stdout
    regs, stack, static_shared, local = map(int, re.search(
        r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", report).groups())
    return dict(regs=regs, stack=stack, local=local, shared=k.metadata.shared + static_shared)


def main():
    bad = 0
    for fn, configs in KERNELS:
        for torch_dtype, cfg in configs:
            dtype = TRITON_TYPE[str(torch_dtype)]
            for arch in (80, 90):
                r = resources(fn, dtype, cfg, arch)
                ok = (r["regs"] <= MAX_REGS and r["stack"] == 0 and r["local"] == 0
                      and r["shared"] <= MAX_SHARED[arch])
                bad += not ok
                print(f"{'ok ' if ok else 'BAD'} sm_{arch} {fn.__name__:15s} {dtype} {cfg} {r}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
