"""python -m bench --gpu: the GPU job in one call (a CUDA machine; within ~8 minutes).

1. the gpu-marked tests (``pytest -m gpu tests/``), every Triton kernel against
   the reference on the device;
2. fastrnn-triton against torch.nn (cuDNN), CUDA-event timing, warm-up (Triton
   compilation, cuDNN plans) untimed, providers alternated, medians: LSTM at the
   FlashRNN paper's shape (B=16, T=1024, H=768) in bf16, and RNN, GRU and LSTM at
   the standard shapes in float32 and bf16, forward and forward+backward;
3. per fastrnn-triton case, the plan the launchers chose and its median wall time
   split into the device kernels' time (torch.profiler: their sum and count) and the
   rest, the host's (``split``).

Writes bench/results/gpu.csv and report-gpu.md; the card's name is in every row.
A GPU session is short and rare, so one failure must not cost the rest: the tests run
under a time limit, a provider that raises on a case is reported ("errors" rows and
the report's Errors section) and the other providers and cases go on, and cases not
started within the time budget are listed as not run.
Public figures for the FlashRNN shape on an H100 (for reading the table, not
measured here): cuDNN fp16 2.01 ms forward / 5.19 ms fwd+bwd; FlashRNN's fused
CUDA kernel 4.87 / 13.61 ms.
"""
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from . import cases, matrix
from .harness import gemm_gflops, gemm_name, machine_facts, progress, samples

ROOT = Path(__file__).parent.parent
PROVIDERS = ["fastrnn-triton", "torch", "torch-fp16"]
# torch runs cuDNN's persistent algorithm for fp16 only (bf16 and f32 step by step), so
# every bf16 case is also timed with torch in fp16: the bar a user who can pick fp16 sees.
FP16 = "torch-fp16"
FLASHRNN_SHAPE = (1024, 16, 768)
# ~8 minutes in all: the gpu-marked tests are stopped after TESTS_LIMIT_S, and no
# timing case starts after TIMING_LIMIT_S (one that started still finishes)
TESTS_LIMIT_S = 240
GPU_GEMM_N = 8192    # the card's GEMM rate: torch.mm of bf16 squares of this side
TIMING_LIMIT_S = 300


def gpu_cases():
    """The FlashRNN shape first (the headline), then the standard shapes in f32 and bf16,
    LSTM at large batches, projected LSTM, and the decoding step at batch 1 and 64."""
    T, B, H = FLASHRNN_SHAPE
    out = [cases.name("lstm", "bf16", m, T, B, H) for m in ("fwd", "fwdbwd")]
    for cell in cases.GATES:
        for variant in ("f32", "bf16"):
            for T, B, H in matrix.SHAPES.values():
                out += [cases.name(cell, variant, m, T, B, H) for m in ("fwd", "fwdbwd")]
    out += [cases.name("lstm", "bf16", "fwdbwd", 256, b, 512) for b in (256, 1024)]
    out += [cases.name("lstm", "proj", "fwdbwd", T, B, H) for T, B, H in matrix.SHAPES.values()]
    out += [cases.name(c, v, "step", 1, b, 512) for c in cases.GATES
            for v in ("f32", "bf16") for b in (1, 64)]
    return out


def _build(case, provider, device):
    """The timed callable of ``provider`` on ``case`` (torch-fp16: the case in float16)."""
    if provider == FP16:
        cell, _, mode, T, B, H = cases.parse(case)
        case = cases.name(cell, "f16", mode, T, B, H)
        provider = "torch"
    return cases.make_step(cases.modules(case, [provider], device)[provider], case, device)


def time_matrix(todo, device, repeats=10, warmup=3, limit_s=None):
    """-> ({case: {(provider, "same"): [ms, ...]}}, [(case, provider, error)]).

    Providers alternate per repeat. A provider whose first (warm-up) call raises is
    left out of that case and its error recorded; cases not started within
    ``limit_s`` are recorded as not run. Tests run it on the CPU with the Triton
    interpreter."""
    times, errors = {}, []
    t0 = time.perf_counter()
    with progress(len(todo), f"{device} timing") as bar:
        for c in todo:
            if limit_s is not None and time.perf_counter() - t0 > limit_s:
                errors.append((c, "all", f"not run: the timing's {limit_s} s budget was spent"))
                continue
            fns = {}
            for p in PROVIDERS:
                if p == FP16 and cases.parse(c)[1] != "bf16":
                    continue
                try:
                    fn = _build(c, p, device)
                    fn()                            # first call: compilation, plans
                    fns[p] = fn
                except Exception as e:              # noqa: BLE001 - reported, not hidden
                    errors.append((c, p, f"{type(e).__name__}: {e}".splitlines()[0][:300]))
            if fns:
                for p, ts in samples(fns, repeats, warmup=warmup, device=device).items():
                    times.setdefault(c, {})[(p, "same")] = ts
            bar.update(1)
    return times, errors


def split(fn, device):
    """-> dict(plans, kernel_ms, kernels) of one call of ``fn`` (warm): the Triton plans its
    launchers chose (logger "fastrnn"), and torch.profiler's device kernels of the call,
    their summed time and their number. Set against the case's median wall time this
    splits it into kernel time and host time."""
    import logging
    from fastrnn.kernels.triton import tuning
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    plans = []

    class Plans(logging.Handler):
        def emit(self, record):
            if hasattr(record, "plan"):
                p = record.plan
                grid = "x".join(map(str, p.grid(p.rows)))
                plans.append(f"{tuning.name(p)} {grid}{' persist' if p.persist else ' per-step'}")
    log = logging.getLogger("fastrnn")
    handler, level = Plans(), log.level
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    try:
        with profile(activities=acts) as prof:
            fn()
            if device == "cuda":
                torch.cuda.synchronize()
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
    kernels = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
    return dict(plans=" + ".join(dict.fromkeys(plans)) or "-", kernels=len(kernels),
                kernel_ms=sum(e.device_time for e in kernels) / 1e3)


def split_rows(times, device, facts):
    """The fastrnn-triton cases' plan and wall = kernel + host split (``split``)."""
    rows = []
    for case, by in times.items():
        ts = by.get(("fastrnn-triton", "same"))
        if not ts:
            continue
        s = split(_build(case, "fastrnn-triton", device), device)
        wall = sorted(ts)[len(ts) // 2]
        rows.append(dict(section="split", provider="fastrnn-triton", metric=case,
                         value=round(wall, 4), unit="ms", plan=s["plans"],
                         launches=s["kernels"], kernel_ms=round(s["kernel_ms"], 4),
                         host_ms=round(wall - s["kernel_ms"], 4), **facts))
    return rows


def main(args):
    if not torch.cuda.is_available():
        print("python -m bench --gpu needs a CUDA device; torch.cuda.is_available() is False "
              "here. The CPU report is `python -m bench`.")
        return 2
    # the compiled kernels, not the interpreter (tests/conftest.py defaults it to 1)
    env = dict(os.environ, TRITON_INTERPRET="0")
    try:
        tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "tests/"],
                               cwd=ROOT, timeout=TESTS_LIMIT_S, env=env).returncode
    except subprocess.TimeoutExpired:
        print(f"gpu tests stopped after {TESTS_LIMIT_S} s; timing goes on", flush=True)
        tests = 124
    from .__main__ import finish, timing_rows
    facts = machine_facts("cuda")
    gemm = gemm_gflops(GPU_GEMM_N, device="cuda", dtype=torch.bfloat16)
    print(f"device: {facts['device']}; torch {facts['torch']}, triton {facts['triton']}; "
          f"bf16 GEMM rate {gemm / 1e3:.0f} TFLOP/s", flush=True)
    times, errors = time_matrix(gpu_cases(), "cuda", limit_s=TIMING_LIMIT_S)
    rows = timing_rows("matrix", times, {}, facts)
    for r in rows:
        r["gflops_pct_of_gemm"] = round(100 * r["gflops"] / gemm, 1)
    rows += [dict(section="errors", provider=p, metric=c, value=e, unit="", **facts)
             for c, p, e in errors]
    rows += split_rows(times, "cuda", facts)
    try:                                  # the tree nets' level kernels on the same card
        from .trees import run as trees
        rows += [dict(section="trees", provider=p, metric=m, value=round(v, 1), unit=u, **facts)
                 for m, u, vals in trees(quick=False, device="cuda") for p, v in vals.items()]
    except Exception as e:                # noqa: BLE001 - reported, not hidden
        errors.append(("trees", "fastrnn-triton", repr(e)))
        rows.append(dict(section="errors", provider="fastrnn-triton", metric="trees",
                         value=repr(e), unit="", **facts))
    rows.append(dict(section="gemm", provider="torch",
                     metric=gemm_name(GPU_GEMM_N, torch.bfloat16), value=round(gemm, 1),
                     unit="GFLOP/s", **facts))
    finish(rows, gemm, facts, Path(args.out), "gpu")
    return tests or (1 if errors else 0)
