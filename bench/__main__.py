"""python -m bench: fastrnn against PyTorch on this machine; CSV, markdown report, plots.

Sections (all by default; pick with --sections):
  peak     the float32 FMA peak per core and for all cores (bench/peak.py) and the
           ISA line; the step products, one thread, against it and torch.mm
           (bench/products.py).
  phases   each cell's fwd and fwd+bwd at the standard shapes and H=1024 split into
           input projection, step products, pointwise, weight packing, weight
           gradients and the rest: time, GFLOP/s, share of the FMA peak, torch.mm's
           rate on the same shapes (bench/phases.py); and an LSTM fwd+bwd at batch 1
           (T=100, H=512) on one thread and on all.
  matrix   cells x modes (fwd, fwd+bwd, one decoding step) x the three standard
           shapes, plus LSTM float64 and PackedSequence (where torch leaves oneDNN);
           providers fastrnn-numba, torch.nn and fastrnn.reference.
  sweeps   T, H and B around the middle shape, fwd+bwd, fastrnn-numba vs torch.
  costs    cold start (fresh process to first forward; empty and warm Numba cache)
           and the peak memory of fwd+bwd at the large shape.
  charlm   a character-level LSTM language model trained on the Python standard
           library's sources: one step, and tokens/s over an epoch-slice.
  models   fastrnn.models against the same models built with torch.nn: seq2seq
           training and decoding, the char-LM step eager and under torch.compile,
           gradient-flow diagnostics overhead, the depth sweep (bench/models.py).
  trees    tree nets on the standard library's ASTs: the level-batched kernels against
           the per-node reference and level-batched PyTorch (bench/trees.py).
  host     the Triton path's host side with its launches stubbed: kernel launches and
           torch ops per call, each launcher's Python time per call, next to the Numba
           launcher's time (bench/host.py).

Timing: warm-up (JIT) is never timed; providers alternate within every repeat;
medians over repeats and rounds. In the matrix each provider is also timed alone
in a child process of its own (on 2 cores one provider's idle-spinning thread
pools slow the other in a shared process, measured both ways); its figure is the
faster of the two. The GEMM rate (torch.mm 2048², float32) is the best measured
before, between and after the sections. At the large shape torch.mm 2048² is also
timed alongside every case, inside the same alternation and in each child process,
so that a layer's share of the GEMM rate can be read against the rate of the same
minutes and process: the median over repeats of the layer's rate over torch.mm's in
the same repeat (the machine's speed drifts by 20-40% over a run, so a median set
against the best of the run compares two moments). ``--gpu`` runs the GPU job
instead (see bench/gpu.py).
"""
import argparse
import json
import os
import statistics
from pathlib import Path

import torch

from . import cases, matrix
from .harness import (GEMM_N, child_setup, gemm_gflops, gemm_name, machine_facts, mm_call,
                      progress, run_child, samples, write_csv)

RESULTS = Path(__file__).parent / "results"
CPU_PROVIDERS = ["fastrnn-numba", "torch", "reference"]
SECTIONS = ["peak", "phases", "matrix", "sweeps", "costs", "charlm", "models", "trees", "host"]
OURS = "fastrnn-numba"
ALONGSIDE = "torch.mm"      # the GEMM-rate probe timed with a case (not a provider)
PROBE_FLOPS = 2 * GEMM_N ** 3   # one probe call: torch.mm of GEMM_N² squares (harness.mm_call)
ALONGSIDE_SHAPES = {matrix.SHAPES["large"]}     # (T, B, H) where the share is a target


def _alongside(case):
    cell, variant, mode, T, B, H = cases.parse(case)
    return mode != "step" and (T, B, H) in ALONGSIDE_SHAPES


def _repeats(case, quick):
    fl = cases.flops(case)
    if cases.parse(case)[2] == "step":
        return 20 if quick else 50
    if quick:
        return 1 if fl > 2e9 else 3
    n = 2 if fl > 20e9 else 4 if fl > 2e9 else 10
    # the GEMM share is a median over (case, torch.mm) pairs: at least 3 a round
    return max(n, 3) if _alongside(case) else n


def _warmup(case):
    # the first call compiles or loads the kernels; one more settles caches, which
    # a seconds-long call does not need
    return 1 if cases.flops(case) > 2e9 else 2


def _alone(args):
    """Child process: time one provider alone; prints {case: [ms, ...]} as JSON.
    ``args.cases`` holds ``case=repeats`` items."""
    child_setup(args.alone)
    out = {}
    mm, _ = mm_call()
    for item in args.cases:
        case, n = item.rsplit("=", 1)
        module = cases.modules(case, [args.alone])[args.alone]
        fns = {"x": cases.make_step(module, case)}
        if _alongside(case):
            fns[ALONGSIDE] = mm
        out[case] = samples(fns, int(n), warmup=_warmup(case))
    print(json.dumps(out))


def _time_alone(provider, reps):
    """One child process per provider and round, so start-up is paid once:
    {case: {"x": [ms, ...], and at ALONGSIDE_SHAPES ALONGSIDE: [ms, ...]}}."""
    return run_child("bench", "--alone", provider, "--cases",
                     *(f"{c}={n}" for c, n in reps.items()))


def time_cases(case_list, providers, rounds, quick, alone, bar):
    """{case: {(provider, process): [ms, ...]}}; the reference runs once (it is slow).
    The GEMM probe (``_alongside`` cases) is keyed (ALONGSIDE, "same") in the shared
    process and (ALONGSIDE, "separate:<provider>") in each provider's child."""
    times = {c: {} for c in case_list}
    mm, _ = mm_call()
    steps = {c: {p: cases.make_step(m, c) for p, m in cases.modules(c, providers).items()}
             for c in case_list}
    reps = {c: _repeats(c, quick) for c in case_list}
    for r in range(rounds):
        for c in case_list:
            fns = {p: f for p, f in steps[c].items() if p != "reference"}
            if _alongside(c):
                fns[ALONGSIDE] = mm
            for p, ts in samples(fns, reps[c], warmup=_warmup(c) if r == 0 else 0).items():
                times[c].setdefault((p, "same"), []).extend(ts)
            if r == 0 and "reference" in steps[c]:      # a per-step Python loop: slow,
                big = cases.flops(c) > 2e9              # and nothing to compile
                ts = samples({"reference": steps[c]["reference"]}, 1 if big else min(reps[c], 5),
                             warmup=0 if big else 1)["reference"]
                times[c][("reference", "same")] = ts
            bar.update(1)
        if not alone:
            continue
        for p in (p for p in providers if p != "reference"):
            for c, series in _time_alone(p, reps).items():
                times[c].setdefault((p, "separate"), []).extend(series["x"])
                if ALONGSIDE in series:
                    probe = (ALONGSIDE, f"separate:{p}")
                    times[c].setdefault(probe, []).extend(series[ALONGSIDE])
            bar.update(len(case_list) / 2)
    return times


def paired_share(case_ms, probe_ms, flops):
    """A case's share of the GEMM rate, in %: the median over repeats of its rate over
    the rate torch.mm reached in the same repeat (the two run back to back). Pairing
    cancels the machine's drift, which a ratio of two medians does not."""
    return statistics.median(100 * flops * m / (c * PROBE_FLOPS)
                             for c, m in zip(case_ms, probe_ms, strict=True))


def timing_rows(section, times, axes, facts):
    rows = []
    for case, t in times.items():
        cell, variant, mode, T, B, H = cases.parse(case)
        med = {k: statistics.median(v) for k, v in t.items()}
        torch_best = min((v for (p, _), v in med.items() if p == "torch"), default=None)
        fp16 = med.get(("torch-fp16", "same"))      # the GPU job: torch in fp16 beside bf16
        fl = cases.flops(case)
        for axis in axes.get(case, [""]):
            for (provider, process), ms in med.items():
                if provider == ALONGSIDE:
                    continue
                probe = (ALONGSIDE, process if process == "same" else f"separate:{provider}")
                paired = probe in t and provider != "reference"     # which runs unalternated
                along = {} if not paired else dict(
                    gemm_alongside_gflops=round(PROBE_FLOPS / med[probe] / 1e6, 2),
                    gflops_pct_of_gemm_alongside=round(
                        paired_share(t[(provider, process)], t[probe], fl), 1))
                rows.append(dict(section=section, axis=axis, cell=cell, variant=variant,
                                 mode=mode, T=T, B=B, I=H, H=H, provider=provider,
                                 process=process, median_ms=round(ms, 4),
                                 samples=len(t[(provider, process)]),
                                 gflops=round(fl / ms / 1e6, 2),
                                 speedup_vs_torch=round(torch_best / ms, 3)
                                 if torch_best else "",
                                 speedup_vs_torch_fp16=round(fp16 / ms, 3) if fp16 else "",
                                 **along, **facts))
    return rows


def _value_row(section, provider, metric, value, unit, facts, **extra):
    return dict(section=section, provider=provider, metric=metric, value=value, unit=unit,
                **extra, **facts)


def costs_rows(providers, quick, facts):
    from . import costs
    rows = []
    floor, cold = costs.cold_start([p for p in providers if p != "reference"], quick)
    rows.append(_value_row("coldstart", "none", "interpreter + import torch", round(floor, 3),
                           "s", facts))
    for p, cell, mode, cache, total, own in cold:
        call = "forward" if mode == "fwd" else "forward+backward"
        what = f"first {cell.upper()} {call}{'' if cache == 'n/a' else f', {cache} Numba cache'}"
        rows.append(_value_row("coldstart", p, f"{what}: total", round(total, 3), "s", facts))
        rows.append(_value_row("coldstart", p, f"{what}: after import torch", round(own, 3),
                               "s", facts))
    T, B, H = matrix.SHAPES["large"]
    for mode, what in (("fwdbwd", "fwd+bwd"), ("fwd", "forward under no_grad")):
        for p, mib in costs.memory([p for p in providers if p != "reference"], mode).items():
            rows.append(_value_row("memory", p, f"peak RSS rise, LSTM {what} ({T}, {B}, {H})",
                                   round(mib, 1), "MiB", facts, cell="lstm", mode=mode, T=T,
                                   B=B, H=H, I=H))
    return rows


def charlm_rows(providers, quick, facts):
    from . import charlm
    res = charlm.run([p for p in providers if p != "reference"], steps=5 if quick else 20,
                     repeats=2 if quick else 5)
    rows = []
    for p, r in res.items():
        for metric, unit, key in (("training step (B=32, T=128)", "ms", "step_ms"),
                                  ("epoch-slice throughput", "tokens/s", "tokens_per_s"),
                                  ("loss after the slice", "", "loss")):
            rows.append(_value_row("charlm", p, metric, round(r[key], 4), unit, facts,
                                   cell="lstm", T=128, B=32, H=charlm.HIDDEN))
    return rows


def models_rows(quick, facts, section="models"):
    from . import models, trees
    rows = []
    for metric, unit, values, *extra in {"models": models, "trees": trees}[section].run(quick):
        for p, v in values.items():
            rows.append(_value_row(section, p, metric, float(f"{v:.4g}"), unit, facts,
                                   **(extra[0] if extra else {})))
    return rows


def peak_rows(quick, facts):
    from . import products
    top, table = products.run(quick)
    rows = [_value_row("peak", "none", "ISA", top["isa"], "", facts),
            _value_row("peak", "none", "FMA peak, one core", round(top["core"], 1), "GFLOP/s",
                       facts),
            _value_row("peak", "none", f"FMA peak, {facts['cores']} cores", round(top["all"], 1),
                       "GFLOP/s", facts)]
    for orient, n, K, M, rates in table:
        for p, v in rates.items():
            rows.append(_value_row("products", p, f"{orient} {n}x{K} @ {K}x{M}", round(v, 1),
                                   "GFLOP/s", facts, B=n, I=K, H=M))
    return rows


def phases_rows(quick, facts):
    from . import phases
    top, table = phases.run(quick)
    rows = [_value_row("phases", "none", f"FMA peak, {facts['cores']} cores",
                       round(top["all"], 1), "GFLOP/s", facts)]
    for cell, T, B, H, mode, phase, ms, gf, mm in table:
        rows.append(_value_row("phases", OURS, phase, round(ms, 4), "ms", facts, cell=cell,
                               mode=mode, T=T, B=B, H=H, I=H,
                               gflops="" if gf is None else round(gf, 1),
                               torch_mm_gflops="" if mm is None else round(mm, 1),
                               pct_of_peak="" if gf is None else round(100 * gf / top["all"],
                                                                       1)))
    (T, B, H), one, all_ = phases.threads(quick)
    for k, ms in ((1, one), (facts["cores"], all_)):
        rows.append(_value_row("threads", OURS, f"LSTM fwd+bwd, {k} thread(s)", round(ms, 3),
                               "ms", facts, cell="lstm", mode="fwdbwd", T=T, B=B, H=H, I=H))
    return rows


def host_rows(quick, facts):
    from . import host
    return [_value_row("host", "fastrnn-triton", f"{r['cell']} {r['call']}: {r['launcher']}",
                       r["triton_host_us"], "us", facts, **{k: v for k, v in r.items()
                                                            if k != "triton_host_us"})
            for r in host.run(reps=50 if quick else 200)]


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="one round, few repeats, short sweeps (about a minute)")
    p.add_argument("--rounds", type=int, default=2, help="rounds of the matrix (default 2)")
    p.add_argument("--sections", nargs="*", choices=SECTIONS, help="default: all")
    p.add_argument("--cells", nargs="*", help="rnn_tanh, gru, lstm or lstm:proj (default: all)")
    p.add_argument("--shapes", nargs="*",
                   help="small, middle, large or T,B,H (default: the three standard shapes)")
    p.add_argument("--providers", nargs="*", choices=CPU_PROVIDERS,
                   help="default: all available")
    p.add_argument("--out", default=str(RESULTS), help="folder for the CSV, report and plots")
    p.add_argument("--gpu", action="store_true", help="the GPU job: gpu tests, then "
                   "fastrnn-triton against cuDNN (needs a CUDA device)")
    p.add_argument("--alone", help=argparse.SUPPRESS)
    p.add_argument("--cases", nargs="*", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.alone is not None:
        return _alone(args)
    if args.gpu:
        from .gpu import main as gpu_main
        return gpu_main(args)
    run_cpu(args)


def _gemm_rates(gemm=0.0, layer_gemm=0.0):
    """torch.mm's float32 rates, the best so far: 2048² squares, and the large LSTM's
    input-projection shape (matrix.LAYER_GEMM). Measured before, between and after
    the sections, as the machine's speed drifts."""
    return (max(gemm, gemm_gflops()),
            max(layer_gemm, gemm_gflops(shape=matrix.LAYER_GEMM, repeats=3)))


def run_cpu(args):
    import fastrnn.kernels.numba  # noqa: F401  (load and configure the backend up front)

    torch.set_num_threads(os.cpu_count())
    providers = []
    for prov in args.providers or CPU_PROVIDERS:
        why = cases.unavailable(prov, "cpu")
        if why:
            print(f"provider {prov} skipped: {why}", flush=True)
        else:
            providers.append(prov)
    facts = machine_facts()
    gemm, layer_gemm = _gemm_rates()
    print(f"machine: {facts['cpu']}, {facts['cores']} cores, torch {facts['torch']}, numba "
          f"{facts['numba']}; threads {facts['threads']}; float32 GEMM rate {gemm:.1f} "
          "GFLOP/s", flush=True)
    sections = args.sections or SECTIONS
    rounds = 1 if args.quick else args.rounds
    shapes = args.shapes or (matrix.QUICK_SHAPES if args.quick else None)
    std = matrix.standard(shapes, args.cells) + \
        ([] if args.shapes else matrix.extras(args.cells))
    sweep = matrix.sweeps(args.quick, args.cells)
    sweep_cases = list(dict.fromkeys(c for _, c in sweep))
    axes = {}
    for axis, c in sweep:
        axes.setdefault(c, []).append(axis)
    units = ("matrix" in sections) * len(std) * rounds * (1 if args.quick else 2) + \
        ("sweeps" in sections) * len(sweep_cases)
    rows = []
    if "peak" in sections:
        print("FMA peak and the step products, one thread ...", flush=True)
        rows += peak_rows(args.quick, facts)
    if "phases" in sections:
        print("phases of each cell's fwd and fwd+bwd ...", flush=True)
        rows += phases_rows(args.quick, facts)
    with progress(units, "timing") as bar:
        if "matrix" in sections:
            t = time_cases(std, providers, rounds, args.quick, not args.quick, bar)
            rows += timing_rows("matrix", t, {}, facts)
            gemm, layer_gemm = _gemm_rates(gemm, layer_gemm)
        if "sweeps" in sections:
            t = time_cases(sweep_cases, [q for q in providers if q != "reference"], 1,
                           args.quick, False, bar)
            rows += timing_rows("sweep", t, axes, facts)
    if "costs" in sections:
        print("cold start and memory (child processes) ...", flush=True)
        rows += costs_rows(providers, args.quick, facts)
    if "charlm" in sections:
        print("character-level LM on the standard library's sources ...", flush=True)
        rows += charlm_rows(providers, args.quick, facts)
    if "models" in sections:
        print("fastrnn.models against their torch.nn builds ...", flush=True)
        rows += models_rows(args.quick, facts)
    if "trees" in sections:
        print("tree nets on the standard library's ASTs ...", flush=True)
        rows += models_rows(args.quick, facts, "trees")
    if "host" in sections:
        print("the Triton launchers' host side, launches stubbed ...", flush=True)
        rows += host_rows(args.quick, facts)
    gemm, layer_gemm = _gemm_rates(gemm, layer_gemm)
    for r in rows:
        if r.get("gflops") not in (None, ""):
            r["gflops_pct_of_gemm"] = round(100 * r["gflops"] / gemm, 1)
    rows.append(_value_row("gemm", "torch", f"{gemm_name(GEMM_N, torch.float32)} (best of run)",
                           round(gemm, 2), "GFLOP/s", facts))
    m, k, n = matrix.LAYER_GEMM
    rows.append(_value_row("gemm", "torch", f"torch.mm {m}x{k} @ {k}x{n} float32 (best of run)",
                           round(layer_gemm, 2), "GFLOP/s", facts))
    finish(rows, gemm, facts, Path(args.out), "cpu")


def finish(rows, gemm, facts, out, device):
    from .report import render
    write_csv(rows, out / f"{device}.csv")
    report = render(rows, gemm, facts, OURS if device == "cpu" else "fastrnn-triton")
    try:
        from .plots import draw
        pngs = draw(out / f"{device}.csv", out)
        if pngs:
            report += "\nPlots: " + ", ".join(f"[{p.name}]({p.name})" for p in pngs) + "\n"
    except ImportError as e:        # matplotlib is in the [bench] extra
        print(f"plots skipped: {e}")
    (out / ("report.md" if device == "cpu" else f"report-{device}.md")).write_text(report)
    print()
    print(report)


if __name__ == "__main__":
    main()
