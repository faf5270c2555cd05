"""Ahead-of-time compile and residency check of every Triton configuration the launchers
can choose, for an A100 (sm_80) and an H100 (sm_90a), on the CPU.

For every cell and direction, dtype and (H, B) of the standard, sweep and FlashRNN
shapes, it asks the launchers' planner (``plan.plan_for``) what it would launch on each
device; the planner compiles the candidate kernels and reads their registers, spills and
shared memory from the cubin. The check then verifies, from those resources and the
device's figures, with its own occupancy arithmetic:
  - no configuration that can be launched spills or exceeds 255 registers or the
    shared memory a block may use;
  - every persistent grid fits on the device at once (else its barrier deadlocks).
The per-step fallback, the fused decoding steps, every wide tiling at the width where
tuning chooses among them (``plan.WIDE``, kernels/triton/tuning.py) and the tree kernels (one launch per level,
one tiling) are compiled too. Every build is what a launch compiles
(``resources.launch_spec``): the same divisibility attributes of pointers and sizes and
the same constant runtime flags.

CI runs it under the newest and the oldest supported Triton (tests/test_triton_aot.py).

Run as a script (``python tests/aot_check.py``) WITHOUT TRITON_INTERPRET; prints one
line per plan and exits 1 on any violation.
"""
import importlib
import sys

import torch
import triton

from fastrnn.cells import CELLS, SEQUENCE
from fastrnn.kernels.triton import plan, tree
from fastrnn.kernels.triton.resources import usage

KERNELS = {  # (cell, direction, projection) -> kernel, for every sequence cell of the table
    (c, d, p): getattr(importlib.import_module(f"fastrnn.kernels.triton.{c}"), f"{c}_{d}_kernel")
    for c in SEQUENCE for d in ("fwd", "bwd")
    for p in ((False, True) if CELLS[c].projection else (False,))
}
TREE_KERNELS = (tree.tree_rnn_fwd_kernel, tree.tree_rnn_bwd_kernel, tree.nary_fwd_kernel,
                tree.nary_bwd_kernel, tree.child_sum_fwd_kernel, tree.child_sum_bwd_kernel)


# (H, B): bench/matrix.py's standard shapes and sweeps, the FlashRNN shape, large batches
SHAPES = sorted({(32, 8), (128, 32), (512, 64), (768, 16), (768, 64), (1024, 16),
                 (512, 256), (512, 1024)} | {(h, 32) for h in (32, 64, 256, 1024)} |
                {(128, b) for b in (1, 4, 16, 64, 256)})
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
STEP_PHASES = {False: (3,), True: (1, 2)}   # a fused step's launches (plan.Run.launch)
# a tree launch specialises on H alone: one width divisible by 16, one not (two builds)
TREE_H = (128, 100)


def resident_blocks(u, dev, num_warps):
    """Blocks an SM holds at once, written out here rather than taken from plan.py."""
    regs_per_warp = ((u["regs"] + 7) // 8) * 8 * 32
    regs_per_warp = ((regs_per_warp + 255) // 256) * 256
    warps_by_regs = dev["regs"] // regs_per_warp
    return min(warps_by_regs // num_warps, dev["smem_sm"] // (u["shared"] + 1024),
               64 // num_warps)


def check(p, u, dev, B):
    ok = u is not None and u["spills"] == 0 and u["regs"] <= 255 and \
        u["shared"] <= dev["smem_block"]
    if p.persist:
        programs = p.units * triton.cdiv(min(p.rows, B), p.tiling.BB)
        ok = ok and programs <= dev["sms"] * resident_blocks(u, dev, p.tiling.num_warps)
    return ok


# the wide tilings: compiled at the FlashRNN width, where tuning chooses among them
WIDE_H = 768
# tilings a kernel may spill at: the projected LSTM's two products over U x BB >= 1024,
# and its two weights held on chip in the taller or the 4-warp tiles or with the
# prefetched input part, need more than 255 registers a thread on sm_80 or sm_90, under
# one Triton or the other; so does the unprojected LSTM on chip with the prefetched input
# part on sm_80 under Triton 3.6 (16 bytes; none on sm_90, nor under 3.9).
# plan.blocks_per_sm gives a spilling build 0 blocks, so it is never launched (the check
# verifies that); a spill anywhere else fails.
MAY_SPILL = {"lstm+proj": {plan.WIDE[1], plan.WIDE[2], plan.ONCHIP[1], plan.ONCHIP[2],
                           plan.LEVERS[0]}, "lstm": {plan.LEVERS[0]}}


def wide_tilings(cell, direction, fl, dtype):
    """The tilings check_wide compiles for a kernel at WIDE_H: plan.WIDE, the levers and,
    for a forward kernel, the on-chip tilings its weights fit (what tuning may time)."""
    held = plan.onchip_bytes(cell, direction, WIDE_H, WIDE_H // 2 if fl else WIDE_H, dtype,
                             dict(PROJ=fl))
    onchip = [t for t in plan.ONCHIP + plan.LEVERS
              if t.onchip and 0 < held(t) <= plan.ONCHIP_MAX_BYTES]
    return plan.WIDE + onchip + [t for t in plan.LEVERS if not t.onchip]


def check_wide():
    """-> (lines, bad): every plan.WIDE and plan.LEVERS tiling of every sequence kernel,
    and every on-chip tiling a forward kernel may hold its weights in at that width
    (tuning times them all), compiles for each device without spills (MAY_SPILL excepted: never
    launched), as its persistent launch builds it."""
    bad = lines = 0
    for name, dev in plan.DEVICES.items():
        for (cell, direction, fl), kernel in KERNELS.items():
            flags = dict(PROJ=fl, RELU=False)
            P = WIDE_H // 2 if fl else WIDE_H
            for dtype in (torch.float32, torch.bfloat16):
                use = plan.kernel_usage(kernel, WIDE_H, P, dtype, flags, dev["arch"])
                for tiling in wide_tilings(cell, direction, fl, dtype):
                    u = use(tiling)
                    what = (f"{cell}{'+proj' * bool(fl)}", direction, f"sm_{dev['arch']}",
                            str(dtype)[6:], (tiling.U, tiling.BB))
                    fits = u is not None and u["regs"] <= 255 and \
                        u["shared"] <= dev["smem_block"]
                    ok = fits and (u["spills"] == 0 or (
                        tiling in MAY_SPILL.get(what[0], ()) and
                        plan.blocks_per_sm(u, dev, tiling.num_warps) == 0))
                    bad += not ok
                    lines += 1
                    print(f"{'ok ' if ok else 'BAD'} {name} {' '.join(what[:4])} H={WIDE_H} "
                          f"{'on chip' if tiling.onchip else 'wide'} {tiling} {u}{' (spills: never launched)' * bool(u and u['spills'])}",
                          flush=True)
    return lines, bad


def main():
    print(f"triton {triton.__version__} at {triton.__file__}", flush=True)
    bad = lines = 0
    if sys.argv[1:] == ["--wide"]:          # this part alone
        lines, bad = check_wide()
        print(f"{lines} plans checked, {bad} bad")
        return 1 if bad else 0
    for name, dev in plan.DEVICES.items():
        for (cell, direction, fl), kernel in KERNELS.items():
            for dtype in DTYPES:
                for H, B in SHAPES if dtype != torch.float16 else [(128, 32), (768, 16)]:
                    flags = dict(PROJ=fl, RELU=False)
                    P = H // 2 if flags.get("PROJ") else H
                    p = plan.plan_for(kernel, cell, direction, H, P, B, dtype, flags, dev)
                    u = plan.kernel_usage(kernel, H, P, dtype, flags, dev["arch"])(p.tiling)
                    ok = check(p, u, dev, B)
                    if (cell, direction, dtype, H, B) == ("lstm", "fwd", torch.bfloat16, 768, 16) \
                            and not fl:
                        ok = ok and p.persist and p.units * triton.cdiv(B, p.tiling.BB) >= 24
                    bad += not ok
                    lines += 1
                    print(f"{'ok ' if ok else 'BAD'} {name} sm_{dev['arch']} {cell}{'+proj' * bool(fl)} "
                          f"{direction} {str(dtype)[6:]} H={H} B={B}: {p.tiling} "
                          f"grid {p.grid(min(p.rows, B))} persist={p.persist} rows={p.rows} "
                          f"({p.why}) {u}", flush=True)
            # the fused decoding step (forward kernels, FUSE_X) and the per-step fallback
            if direction == "fwd":
                for dtype in DTYPES:
                    P = 64 if fl else 128
                    consts = plan.constexprs(kernel, plan.FALLBACK, 128, P, dtype, 8, I=96,
                                             **dict(plan.USAGE_FLAGS, FUSE_X=True, PROJ=fl,
                                                    RELU=False))
                    # a projected step runs its two phases one launch each: phases=1 is
                    # a constant of its build, as a launch specialises it
                    for phases in STEP_PHASES[bool(fl)]:
                        u = usage(kernel, dtype, consts, plan.FALLBACK.num_warps, dev["arch"],
                                  plan.launch_ints(kernel, 128, P, I=96, phases=phases),
                                  maxnreg=plan.FALLBACK.maxnreg)
                        ok = u is not None and u["spills"] == 0 and u["regs"] <= 255
                        bad += not ok
                        print(f"{'ok ' if ok else 'BAD'} {name} {cell} step {str(dtype)[6:]} "
                              f"phases={phases} {u}")
    # the tree kernels: one launch per level, one fixed tiling (tree.BB x tree.U programs)
    for name, dev in plan.DEVICES.items():
        for kernel in TREE_KERNELS:
            for dtype in DTYPES:
                for H in TREE_H:          # the arity is a runtime loop: one build for all
                    consts = dict(RELU=False, PRECISION=plan.precision(dtype), BB=tree.BB,
                                  U=tree.U, BK=tree._bk(dtype, kernel))
                    consts = {k: v for k, v in consts.items() if k in kernel.arg_names}
                    u = usage(kernel, dtype, consts, arch=dev["arch"], ints=dict(H=H),
                              **tree.OPTIONS)
                    ok = u is not None and u["spills"] == 0 and u["regs"] <= 255 and \
                        u["shared"] <= dev["smem_block"]
                    bad += not ok
                    lines += 1
                    print(f"{'ok ' if ok else 'BAD'} {name} sm_{dev['arch']} {kernel.__name__} "
                          f"{str(dtype)[6:]} H={H} {u}", flush=True)
    more = check_wide()
    lines, bad = lines + more[0], bad + more[1]
    print(f"{lines} plans checked, {bad} bad")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
