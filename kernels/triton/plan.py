"""How a Triton launch is split over the GPU, and the launch itself (host side).

Every kernel owns U hidden units x BB batch rows per program. A *persistent* launch
runs the whole sequence, the programs of a batch tile meeting at a barrier after each
step; it deadlocks unless every program is resident at once, so ``choose`` admits a
tiling only when the grid fits the device's SMs at the occupancy the compiled kernel
allows (its registers and shared memory, read from the cubin by ``resources``). A batch
too large for one resident grid runs in row chunks, one persistent launch each. When
no tiling fits at all (or under TRITON_INTERPRET=1, which runs programs one after
another), the same kernel runs one step per launch, the launch boundary being the
barrier. What was chosen, and why, is logged at debug level (logger "fastrnn").
"""
import functools
import logging
from dataclasses import dataclass

import torch

from ...backends import triton_interpret
from ...cells import CELLS, SEQUENCE, b_hh_input_mask
from . import tuning

log = logging.getLogger("fastrnn")

# Registers, warps and blocks per SM are the same on sm_80 and sm_90; the shared memory
# figures are the per-SM capacity and the per-block opt-in limit, in bytes.
DEVICES = {
    "A100": dict(arch=80, sms=108, regs=65536, smem_sm=164 * 1024, smem_block=163 * 1024),
    "H100": dict(arch=90, sms=132, regs=65536, smem_sm=228 * 1024, smem_block=227 * 1024),
}
MAX_WARPS_SM, MAX_BLOCKS_SM, MAX_REGS = 64, 32, 255


# triton.cdiv and triton.next_power_of_2 are @triton.jit functions: called from Python
# each costs ~5 us, paid on every launch; these are the same arithmetic
def cdiv(a, b):
    return -(-a // b)


def next_power_of_2(n):
    return 1 << max(n - 1, 0).bit_length()


@dataclass(frozen=True)
class Tiling:
    U: int            # hidden units per program
    BB: int           # batch rows per program
    onchip: bool      # recurrent weights loaded once into registers/shared memory, else
    #                   read every step (from L1 while they fit there, else L2)
    num_warps: int = 4
    maxnreg: int = None   # ptxas's register cap (None: its own choice, which spilled some
    #                       wide tiles at 96-128 registers; 255 gave them 0 spills)
    prefetch: bool = False  # each step loads what the next one reads from memory and
    #                         not from the recurrence (forward: xproj; backward: dL/dout
    #                         and the saved gates, cells or outputs) before its barrier's
    #                         wait, so the loads overlap the other programs' step
    poll: bool = False    # the barrier spins on plain loads of its counter, not atomics


# Preference order: weights on chip first, then the most programs (the probe: 128
# programs beat 64 beat 32 at (256, 64, 512)). Compiled for sm_80/sm_90a (tests/aot_check):
# on chip, a weight of width K is held as two power-of-two tiles (``split``: 768 = 512 +
# 256); Triton puts them in shared memory. The LSTM forward, bf16, H=768, 16 units (96 KB
# a program, the probe's case) built with 190-200 registers, 113 KB of shared memory and
# no spills, where one padded 1024-wide tile (128 KB) spilled 24-968 bytes; slices above
# ONCHIP_MAX_BYTES are not tried. Every on-chip backward spilled (LSTM, H=128: 176
# bytes), so the backward always streams its weights.
ONCHIP = [Tiling(16, 16, True, 8), Tiling(16, 32, True, 8), Tiling(16, 16, True, 4)]
STREAMING = [Tiling(16, 16, False), Tiling(16, 16, False, 8), Tiling(16, 32, False),
             Tiling(16, 64, False), Tiling(32, 64, False)]
ONCHIP_MAX_BYTES = 96 * 1024
# Wide tiles, after those: for a batch the tilings above cover only in row chunks (one
# launch after another), the whole batch in one launch with taller batch tiles; and
# what tuning (kernels/triton/tuning.py) may find faster where an earlier tiling fits
# (U=32 with 4 warps ran 15% faster than the static choice forward at the FlashRNN
# shape on an H200). Built with ptxas's register cap at 255: its own budget spilled
# some of these at 96-128 registers. tests/aot_check.py compiles each for sm_80 and
# sm_90a; a build that spills is never launched (blocks_per_sm: 0).
WIDE = [Tiling(32, 16, False, 4, 255), Tiling(32, 32, False, 8, 255),
        Tiling(16, 128, False, 8, 255)]
# the per-step mode's (and the fused step's) tiling: 8 warps, so that it compiles without
# spills everywhere (the fp32 LSTM backward spilled 32 bytes on sm_90 with 4), and ptxas's
# register cap at 255 (the RNN step, reading W_ih and W_hh as torch holds them, spilled
# 8-24 bytes at 80 registers under Triton 3.6 without it)
FALLBACK = Tiling(16, 16, False, 8, 255)
# The kernel-body levers of kernels/README ("the levers on a step"), each kept only where
# a device measures it faster: last in the order, so no static plan takes them; tuning
# times them beside the others. On the likeliest winners at the FlashRNN shape (on chip;
# U=32 with 4 warps), so that precompile's table reads each lever's own saving there:
# U=32 alone, with the polling barrier, with both.
LEVERS = [Tiling(16, 16, True, 8, prefetch=True, poll=True),
          Tiling(32, 16, False, 4, 255, poll=True),
          Tiling(32, 16, False, 4, 255, prefetch=True, poll=True)]


def candidates(onchip_bytes):
    """Tilings to try, in order; ``onchip_bytes(tiling)``: the weights it would hold on
    chip (0: this kernel never holds them)."""
    return [t for t in ONCHIP + STREAMING + WIDE + LEVERS
            if not t.onchip or 0 < onchip_bytes(t) <= ONCHIP_MAX_BYTES]


@dataclass(frozen=True)
class Plan:
    tiling: Tiling
    units: int        # programs along the hidden units
    rows: int         # batch rows per launch (B when the whole batch fits at once)
    persist: bool
    why: str

    def grid(self, nrows):
        return (self.units, cdiv(nrows, self.tiling.BB))


def blocks_per_sm(usage, dev, num_warps):
    """How many blocks of a kernel with this usage an SM holds at once (0: none).

    Registers are allocated per warp in units of 256 (regs per thread rounded up to 8);
    every block also reserves 1 KiB of shared memory for the system."""
    if usage is None or usage["spills"] or usage["regs"] > MAX_REGS or \
            usage["shared"] > dev["smem_block"]:
        return 0
    per_warp = -(-usage["regs"] * 32 // 256) * 256
    by_regs = dev["regs"] // (per_warp * num_warps)
    by_smem = dev["smem_sm"] // (usage["shared"] + 1024)
    return min(by_regs, by_smem, MAX_WARPS_SM // num_warps, MAX_BLOCKS_SM)


def choose(H, B, usage, dev, tilings):
    """The plan for H hidden units and B rows over ``tilings`` (in preference order);
    ``usage(tiling)`` -> the compiled kernel's dict(regs, shared, spills), or None where
    that tiling does not compile."""
    best = None
    for tl_ in tilings:
        units, tiles, cap = _fit(tl_, H, B, usage, dev)
        if units * tiles <= cap:
            return Plan(tl_, units, B, True, f"{units}x{tiles} programs fit {cap} resident")
        rows = (cap // units) * tl_.BB if units <= cap else 0
        if rows and (best is None or rows > best.rows):
            best = Plan(tl_, units, rows, True,
                        f"{units}x{tiles} programs exceed {cap} resident: row chunks of {rows}")
    if best is not None:
        return best
    return Plan(FALLBACK, cdiv(H, FALLBACK.U), B, False,
                "no tiling fits the device at once: one step per launch")


def _fit(tiling, H, B, usage, dev):
    """(programs along the units, batch tiles, programs the device holds at once)."""
    units, tiles = cdiv(H, tiling.U), cdiv(B, tiling.BB)
    # skip compiling what could not fit even at the highest occupancy
    if units > dev["sms"] * MAX_WARPS_SM // tiling.num_warps:
        return units, tiles, 0
    return units, tiles, dev["sms"] * blocks_per_sm(usage(tiling), dev, tiling.num_warps)


def resident_plans(H, B, usage, dev, tilings):
    """The persistent plans, one launch for all B rows, of every tiling of ``tilings``
    whose grid the device holds at once (what tuning may time), in order."""
    plans = []
    for t in tilings:
        units, tiles, cap = _fit(t, H, B, usage, dev)
        if units * tiles <= cap:
            plans.append(Plan(t, units, B, True, f"{units}x{tiles} programs fit {cap} "
                              "resident; tuned on this device"))
    return plans


def precision(dtype):
    """fp32 products in TF32 exactly when torch's cuDNN RNNs would use it."""
    if dtype == torch.float32:
        return "tf32" if torch.backends.cudnn.allow_tf32 else "ieee"
    return "ieee"


def split(K):
    """(head, tail): the two power-of-two chunks (tail 0: none) that hold a K-wide weight on
    chip with the least padding (Triton's tiles are powers of two): 768 = 512 + 256, where
    one padded chunk of 1024 held a third more, and spilled (LSTM forward, bf16)."""
    full = max(16, next_power_of_2(K))
    head = full // 2
    tail = max(16, next_power_of_2(K - head))
    return (head, tail) if head + tail < full else (full, 0)


def chunks(tiling, H, P, dtype):
    """The product chunks over P and over H: on chip, the heads of ``split``'s (the tails
    are the BKP2 / BKH2 constexprs)."""
    if tiling.onchip:
        return split(P)[0], split(H)[0]
    # fp32 products need more registers (sm_80, tf32: LSTM forward spilled 8 bytes at 32);
    # 16-bit at 64 left no registers to spare (232-255)
    bk = 16 if dtype.itemsize == 4 else 32
    return min(bk, max(16, next_power_of_2(P))), min(bk, max(16, next_power_of_2(H)))


def proj_units(P, units):
    """UP: the state units of a projected LSTM each of the ``units`` programs owns."""
    return max(16, next_power_of_2(cdiv(P, units)))


def constexprs(kernel, tiling, H, P, dtype, units, I=0, **flags):
    """Every constexpr of ``kernel`` for this tiling (flags: PROJ, REVERSE, SAVE, ...):
    worked out once per key, a launch's host path being the time of short calls."""
    # the precision follows a global flag of torch's: part of the key, never cached
    return dict(_constexprs(kernel, tiling, H, P, dtype, units, I, tuple(sorted(flags.items())),
                            precision(dtype)))


@functools.lru_cache(maxsize=None)
def arg_names(kernel):
    """The names of ``kernel``'s arguments, as a set (a launch filters its keywords by it)."""
    return frozenset(kernel.arg_names)


@functools.lru_cache(maxsize=4096)
def _constexprs(kernel, tiling, H, P, dtype, units, I, flags, prec):
    flags = dict(flags)
    bkp, bkh = chunks(tiling, H, P, dtype)
    up = proj_units(P, units) if flags.get("PROJ") else tiling.U
    if prec == "tf32" and flags.get("PROJ") and kernel.__name__ == "lstm_bwd_kernel":
        # its TF32 build spilled on sm_90 in every tiling (24 bytes at 8 warps, the
        # smallest tiles); IEEE fp32 did not (180 registers): more precise, never less
        prec = "ieee"
    bkx = min(16 if dtype.itemsize == 4 else 32, max(16, next_power_of_2(I or 16)))
    tails = (split(P)[1], split(H)[1]) if tiling.onchip else (0, 0)
    values = dict(flags, BB=tiling.BB, U=tiling.U, UP=up, BKP=bkp, BKH=bkh, BKX=bkx,
                  BKP2=tails[0], BKH2=tails[1], ONCHIP=tiling.onchip, PRECISION=prec,
                  # a fused step's input part is a product, not a load to move ahead
                  PREFETCH=tiling.prefetch and not flags.get("FUSE_X"), POLL=tiling.poll)
    return {k: v for k, v in values.items() if k in kernel.arg_names}


# The heaviest setting of the flags that do not change the products: resources are read
# once per (kernel, dtype, widths, tiling), whatever the direction or saving.
USAGE_FLAGS = dict(REVERSE=True, SAVE=True, PERSIST=True, FUSE_X=False)


def _device(dev_index):
    p = torch.cuda.get_device_properties(dev_index)
    arch = p.major * 10 + p.minor
    known = next((d for d in DEVICES.values() if d["arch"] == arch), DEVICES["A100"])
    return dict(arch=arch, sms=p.multi_processor_count, regs=known["regs"],
                smem_sm=getattr(p, "shared_memory_per_multiprocessor", known["smem_sm"]),
                smem_block=getattr(p, "shared_memory_per_block_optin", known["smem_block"]))


GATES = {c: CELLS[c].gates for c in SEQUENCE}      # from the cell table


def onchip_bytes(cell, direction, H, P, dtype, flags):
    """-> tiling -> bytes of recurrent weights one program would hold on chip (0: never)."""
    if direction != "fwd":
        return lambda t: 0
    proj = flags.get("PROJ")

    def size(t):
        up = proj_units(P, cdiv(H, t.U)) if proj else 0
        return (GATES[cell] * sum(split(P)) * t.U + sum(split(H)) * up) * dtype.itemsize
    return size


def launch_ints(kernel, H, P, I=0, phases=3):
    """The integer arguments a launch specialises on (resources.specialized_ints), with the
    values Run.launch passes: a persistent launch runs both phases of a step (3); the
    per-step mode of a projected LSTM runs them one launch each (1, then 2)."""
    return {k: v for k, v in dict(H=H, P=P, I=I, phases=phases).items()
            if k in kernel.arg_names}


def kernel_usage(kernel, H, P, dtype, flags, arch):
    """-> tiling -> the compiled kernel's resources (resources.usage) for this shape, as
    its persistent launch compiles it."""
    from .resources import usage

    def use(tiling):
        consts = constexprs(kernel, tiling, H, P, dtype, cdiv(H, tiling.U),
                            **dict(flags, **USAGE_FLAGS))
        return usage(kernel, dtype, consts, tiling.num_warps, arch, launch_ints(kernel, H, P),
                     maxnreg=tiling.maxnreg)
    return use


def plan_for(kernel, cell, direction, H, P, B, dtype, flags, dev):
    """The launchers' plan on a device described like DEVICES' entries."""
    return choose(H, B, kernel_usage(kernel, H, P, dtype, flags, dev["arch"]), dev,
                  candidates(onchip_bytes(cell, direction, H, P, dtype, flags)))


@functools.lru_cache(maxsize=None)
def cached_plan(kernel, cell, direction, H, P, B, dtype, flags, dev_index):
    return plan_for(kernel, cell, direction, H, P, B, dtype, dict(flags), _device(dev_index))


@functools.lru_cache(maxsize=None)
def tuning_key(kernel, cell, direction, H, P, B, dtype, flags, dev_index):
    """The tuning cache's key of a launch: kernel, widths, batch bucket, dtype, flags,
    device and Triton (its builds decide the registers, so the fits)."""
    import triton
    return (f"{kernel.__name__} H={H} P={P} B<={next_power_of_2(B)} {str(dtype)[6:]} "
            f"{dict(flags)} {torch.cuda.get_device_name(dev_index)} triton {triton.__version__}")


def tuning_plans(kernel, cell, direction, H, P, B, dtype, flags, dev_index, tilings=None):
    """The plans of ``tilings`` (None: every candidate) the device holds at once for this
    launch (resident_plans): what tuning may launch."""
    dev, fl = _device(dev_index), dict(flags)
    if tilings is None:
        tilings = candidates(onchip_bytes(cell, direction, H, P, dtype, fl))
    return resident_plans(H, B, kernel_usage(kernel, H, P, dtype, fl, dev["arch"]), dev,
                          tilings)


TUNE_STEPS, TUNE_REPS = 16, 3


def time_plan(run, p, args):
    """Seconds per launch of plan ``p`` on the first TUNE_STEPS steps of the call's own
    arguments (CUDA events; a first launch compiles). Every output it writes is written
    again by the call's own launch, which follows."""
    iters = min(TUNE_STEPS, run.iters)
    run.launch_plan(p, args, iters)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(TUNE_REPS):
        run.launch_plan(p, args, iters)
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / TUNE_REPS / 1e3


# Tests set this to a Tiling to run the per-step mode with it under the interpreter.
FORCE = None


def interpreter_plan(H, B, persist=True):
    """TRITON_INTERPRET=1 runs programs one after another: a barrier over several programs
    along the units would never open, so those run one step per launch; with one program
    along the units the barrier has no one to wait for, and the launch is the device's
    persistent one (its time loop, barriers and counter release)."""
    tiling = FORCE or ONCHIP[0]
    units = cdiv(H, tiling.U)
    if units == 1 and persist:
        return Plan(tiling, 1, B, True, "TRITON_INTERPRET=1, one program along the units")
    return Plan(tiling, units, B, False,
                "TRITON_INTERPRET=1 runs programs one after another: one step per launch")


def step_bias(b_ih, b_hh, G, like, gru=False):
    """The input-side bias of a fused step, per row [B, G]: b_ih ([G] or [B, G]) + b_hh
    (GRU: b_hn stays out, inside r * .)."""
    B = like.shape[0]
    b = like.new_zeros(B, G) if b_ih is None else b_ih.expand(B, G)
    if b_hh is None:
        return b.contiguous()
    if gru:
        return torch.addcmul(b, b_hh, b_hh_input_mask(3, G // 3, b_hh.dtype, b_hh.device))
    return b + b_hh


def states_args(grad_states, stand_in, name="states_ptr"):
    """The backward kernels' optional dL/dh_t output (a launcher's grad_states, for
    fastrnn.diagnostics): the pointer and the runtime flag ``keep``. Without it the
    pointer is a stand-in that every store masks off, so both cases share one build."""
    if grad_states is None:
        return {name: stand_in, "keep": 0}
    if not grad_states.is_contiguous() or grad_states.dtype != stand_in.dtype:
        raise ValueError("grad_states must be a contiguous tensor of the gradients' dtype")
    return {name: grad_states, "keep": 1}


@functools.lru_cache(maxsize=256)
def _full_lengths(B, T, device):
    # every row's length T, when the call has no lengths: the kernels only read it, so one
    # tensor per (B, T, device) serves every call (a fill less per launcher call)
    return torch.full((B,), T, dtype=torch.int64, device=device)


_COUNTERS = {}


def barrier_counters(device, n):
    """The int32 barrier counters [>= n] of a launch on ``device``'s current stream: zeroed
    once, and left at 0 by every persistent launch (_common._grid_release), so that no
    launch fills them and a CUDA graph's replay finds them as the capture did. One set
    per stream: launches on two streams at once must not share a counter."""
    stream = torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else 0
    key = (device, stream)
    buf = _COUNTERS.get(key)
    if buf is None or buf.numel() < n:
        buf = _COUNTERS[key] = torch.zeros(max(n, 1024), dtype=torch.int32, device=device)
    return buf


class Run:
    """One launcher call: the plan, the scratch buffers, the launches."""

    def __init__(self, kernel, cell, direction, like, *, H, P, B, T, lengths, I=0, **flags):
        # a step (T = 1, the *Cell path) fuses its input product (FUSE_X)
        self.kernel, self.direction = kernel, direction
        self.flags = dict(flags, FUSE_X=direction == "step")
        self.H, self.P, self.B, self.T, self.I = H, P, B, T, I
        self.dtype, self.device = like.dtype, like.device
        self.lengths, self.tune = lengths, None
        self.nsteps = T if lengths is None else int(lengths.max()) if B else 0
        # the backward has one more iteration than steps: dh0 and dc0
        self.iters = self.nsteps + (direction == "bwd")
        self.lens_dev = _full_lengths(B, T, self.device) if lengths is None else \
            lengths.to(device=self.device, dtype=torch.int64)
        if triton_interpret():
            # one step needs no barrier (a projection: two launches)
            self.plan = interpreter_plan(H, B, persist=direction != "step")
        elif direction == "step":
            self.plan = Plan(FALLBACK, cdiv(H, FALLBACK.U), B, False, "one step: one launch")
        else:
            key = (kernel, cell, direction, H, P, B, self.dtype, tuple(sorted(
                (k, v) for k, v in flags.items() if k in ("PROJ", "RELU"))),
                self.device.index or 0)
            self.plan = cached_plan(*key)
            # tuned where some tiling holds the whole batch at once; while a CUDA graph is
            # captured nothing is timed, and the plan is the one eager calls chose
            if tuning.enabled() and self.plan.persist:
                if self.device.type == "cuda" and torch.cuda.is_current_stream_capturing():
                    self.plan = tuning.decided(tuning_key(*key), self.plan)
                else:
                    self.tune = key
        self.what = (cell, direction, T, B, H, P, self.dtype)

    def buffer(self, shape, fp32=False):
        return torch.empty(shape, dtype=torch.float32 if fp32 else self.dtype, device=self.device)

    def prefill_final(self, *pairs):
        # a row of length 0 (inference in time chunks) passes its initial state through
        if self.lengths is not None:
            for final, initial in pairs:
                final.copy_(initial)

    def zero_past_lengths(self, *tensors):
        # positions past a row's length are zeros, like pad_packed_sequence (the
        # kernels never write them: no work past a length)
        if self.lengths is None:
            return
        pad = (torch.arange(self.T, device=self.device)[:, None] >= self.lens_dev[None, :])
        for x in tensors:
            if x is not None:
                x.masked_fill_(pad[:, :, None], 0)

    def launch(self, **args):
        if self.tune is not None:
            self.plan = tuning.pick(tuning_key(*self.tune), self.plan,
                                    lambda tilings: tuning_plans(*self.tune, tilings),
                                    lambda p: time_plan(self, p, args))
        # the plan launched (tuning's choice where it chose), as bench --gpu reports it
        log.debug("fastrnn triton %s %s: T=%d B=%d H=%d P=%d %s: %s (%s)", *self.what, self.plan,
                  self.plan.why, extra={"plan": self.plan})
        self.launch_plan(self.plan, args, self.iters)

    def launch_plan(self, p, args, iters):
        tiling = p.tiling
        consts = constexprs(self.kernel, tiling, self.H, self.P, self.dtype, p.units, self.I,
                            **self.flags)
        two_phase = bool(self.flags.get("PROJ"))
        common = dict(args, lengths_ptr=self.lens_dev, T=self.T, B=self.B, H=self.H, P=self.P,
                      I=self.I, **consts)
        names = arg_names(self.kernel)
        common = {k: v for k, v in common.items() if k in names}
        for row0 in range(0, self.B, p.rows):
            row_end = min(self.B, row0 + p.rows)
            grid = p.grid(row_end - row0)
            run = functools.partial(self.kernel[grid], **common, row0=row0, row_end=row_end,
                                    num_warps=tiling.num_warps,
                                    **({"maxnreg": tiling.maxnreg} if tiling.maxnreg else {}))
            sync = barrier_counters(self.device, grid[1])
            if p.persist:
                run(sync_ptr=sync, s_begin=0, s_end=iters, phases=3, PERSIST=True)
                continue
            for s in range(iters):
                for phases in ((1, 2) if two_phase else (3,)):
                    run(sync_ptr=sync, s_begin=s, s_end=s + 1, phases=phases, PERSIST=False)
