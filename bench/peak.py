"""The machine's float32 FMA peak, per core and for all cores, and its ISA in one line.

The limit of a CPU kernel's products is not torch.mm's rate (oneDNN's LSTM has run
above it) but the cores' FMA throughput: pipes x lanes x 2 flops a cycle x the clock.
This probe measures it rather than computing it from a nominal clock: a loop of
independent vector FMA chains, every operand in a register (no load or store inside
the loop), built as LLVM IR and compiled for this CPU by llvmlite (Numba's own
compiler), so that what runs is exactly the instruction stream we intend, not what a
vectoriser made of a Python loop.

- Width: the ISA's widest float32 vector (16 lanes with AVX-512, 8 with AVX2, 4 with
  SSE/NEON); LLVM splits a wider vector into the native ones.
- Chains: 12 independent accumulators, enough to cover 2 pipes x 4-5 cycles of FMA
  latency, and with the two constants within AVX2's 16 registers (no spills).
- All cores: one Python thread per core calls the compiled loop at once (ctypes
  releases the GIL); the rate is the flops of all threads over the wall time.
"""
import ctypes
import functools
import threading
import time

CHAINS = 12
ITERS = 20_000_000          # ~0.1 s a call at ~100 GFLOP/s a core with 16 lanes


def isa():
    """(name, float32 lanes of the widest vector, vector registers): what a register
    tile has to fit."""
    import llvmlite.binding as ll
    f = ll.get_host_cpu_features()
    if f.get("avx512f"):
        return "AVX-512F + FMA", 16, 32
    if f.get("avx2") and f.get("fma"):
        return "AVX2 + FMA", 8, 16
    if f.get("avx"):
        return "AVX", 8, 16
    if f.get("neon") or f.get("asimd"):
        return "NEON", 4, 32
    return "SSE2", 4, 16


def isa_line():
    import llvmlite.binding as ll
    from .harness import cpu_model
    name, lanes, regs = isa()
    return (f"{cpu_model()} (LLVM target {ll.get_host_cpu_name()}): {name}, {regs} vector "
            f"registers of {lanes} float32 lanes")


def _ir(lanes, chains):
    v = f"<{lanes} x float>"
    fma = f"@llvm.fma.v{lanes}f32"
    ones = "<" + ", ".join(["float 1.0"] * lanes) + ">"
    splat = f"<{lanes} x i32> zeroinitializer"
    lines = [f"declare {v} {fma}({v}, {v}, {v})",
             "define float @fma_loop(i64 %n, float %m, float %c) {",
             "entry:",
             f"  %m0 = insertelement {v} undef, float %m, i32 0",
             f"  %mv = shufflevector {v} %m0, {v} undef, {splat}",
             f"  %c0 = insertelement {v} undef, float %c, i32 0",
             f"  %cv = shufflevector {v} %c0, {v} undef, {splat}",
             "  br label %loop",
             "loop:",
             "  %i = phi i64 [0, %entry], [%i1, %loop]"]
    lines += [f"  %a{j} = phi {v} [{ones}, %entry], [%b{j}, %loop]" for j in range(chains)]
    lines += [f"  %b{j} = call {v} {fma}({v} %a{j}, {v} %mv, {v} %cv)" for j in range(chains)]
    lines += ["  %i1 = add i64 %i, 1",
              "  %done = icmp sge i64 %i1, %n",
              "  br i1 %done, label %exit, label %loop",
              "exit:"]
    acc = "%b0"     # the result depends on every chain, so none is dead code
    for j in range(1, chains):
        lines.append(f"  %s{j} = fadd {v} {acc}, %b{j}")
        acc = f"%s{j}"
    lines += [f"  %r = extractelement {v} {acc}, i32 0", "  ret float %r", "}"]
    return "\n".join(lines)


@functools.lru_cache(maxsize=None)
def _loop(lanes, chains=CHAINS):
    """-> (ctypes function fma_loop(n, m, c), its engine, kept alive with it)."""
    import llvmlite.binding as ll
    ll.initialize_native_target()
    ll.initialize_native_asmprinter()
    tm = ll.Target.from_default_triple().create_target_machine(
        cpu=ll.get_host_cpu_name(), features=ll.get_host_cpu_features().flatten(), opt=3)
    mod = ll.parse_assembly(_ir(lanes, chains))
    mod.verify()
    engine = ll.create_mcjit_compiler(mod, tm)
    engine.finalize_object()
    proto = ctypes.CFUNCTYPE(ctypes.c_float, ctypes.c_int64, ctypes.c_float, ctypes.c_float)
    return proto(engine.get_function_address("fma_loop")), engine


def flops_per_call(lanes, iters=ITERS, chains=CHAINS):
    return 2 * lanes * chains * iters


def fma_peak(threads=1, repeats=5, iters=ITERS):
    """Best float32 GFLOP/s of ``threads`` concurrent FMA loops over ``repeats`` tries
    (the best, as a peak: a slower try is another tenant's or the clock's doing)."""
    lanes = isa()[1]
    fn, _ = _loop(lanes)
    fn(1000, 0.999, 0.001)                          # page in the code
    best = 0.0
    for _ in range(repeats):
        workers = [threading.Thread(target=fn, args=(iters, 0.999, 0.001))
                   for _ in range(threads)]
        t0 = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        wall = time.perf_counter() - t0
        best = max(best, threads * flops_per_call(lanes, iters) / wall / 1e9)
    return best


def run(cores, quick=False):
    """{"isa": line, "core": GFLOP/s of one core, "all": GFLOP/s of ``cores`` cores}."""
    reps = 3 if quick else 7
    iters = ITERS // 4 if quick else ITERS
    return {"isa": isa_line(), "core": fma_peak(1, reps, iters),
            "all": fma_peak(cores, reps, iters)}
