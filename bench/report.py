"""The markdown report, rendered from the long-format rows (the CSV's content)."""
from .cases import name
from .matrix import (CHARLM_SPEEDUP, COLD_START_TARGET_S, EMPTY_CACHE_TARGET_S, LAYER_GEMM,
                     PRODUCTS_PEAK_PCT, TARGETS, THREADS_RATIO)

SHAPE_NAMES = {(100, 8, 32): "small", (100, 32, 128): "middle", (256, 64, 512): "large"}


def _key(r):
    return name(r["cell"], r["variant"], r["mode"], r["T"], r["B"], r["H"])


def best(rows):
    """{(section, case, axis): {provider: best timing row}} (faster of same process / alone)."""
    out = {}
    for r in rows:
        if r.get("median_ms") in (None, ""):
            continue
        slot = out.setdefault((r["section"], _key(r), r.get("axis", "")), {})
        if r["provider"] not in slot or r["median_ms"] < slot[r["provider"]]["median_ms"]:
            slot[r["provider"]] = r
    return out


def _ms(r):
    if r is None:
        return "–"
    ms = r["median_ms"]
    return f"{ms * 1e3:.0f} µs" if ms < 1 else f"{ms:.2f}" if ms < 100 else f"{ms:.0f}"


def _speed(r):
    return "–" if r is None else f"**{r['speedup_vs_torch']:.2f}×**"


def _layer_gemm(rows, gemm):
    # the "gemm" row of torch.mm at the large LSTM's input-projection shape, if any
    m, k, n = LAYER_GEMM
    r = [r for r in rows
         if r["section"] == "gemm" and r["metric"].startswith(f"torch.mm {m}x{k} @")]
    if not r:
        return ""
    v = r[0]["value"]
    return (f" For comparison, {r[0]['metric'].replace(' (best of run)', '')} (the large "
            f"LSTM's input projection), best of the run: {v:.1f} GFLOP/s ({100 * v / gemm:.0f}% "
            f"of the square rate).")


def _share(r):
    # % of the best-of-run GEMM rate, and where timed (bench.__main__._alongside) of
    # torch.mm timed alongside the case in the same process
    along = r.get("gflops_pct_of_gemm_alongside")
    best_pct = f"{r['gflops_pct_of_gemm']:.0f}%"
    return best_pct if along in (None, "") else f"{best_pct}; {along:.0f}% alongside"


def _alongside_note(rows):
    if not any(r.get("gflops_pct_of_gemm_alongside") not in (None, "") for r in rows):
        return ""
    return (" At the large shape the GEMM share is also given against torch.mm 2048² timed "
            "alongside the case (alternated with it, in the same process): the median over "
            "repeats of the layer's rate over torch.mm's rate in the same repeat. The "
            "machine's speed drifts by 20-40% within a run, so a median against the run's "
            "best rate compares two different moments; the Targets table judges the share "
            "on the paired figure and shows both.")


def gemm_metric(rows):
    """The GEMM the run measured, as its first ``gemm`` row names it."""
    return next((r["metric"] for r in rows if r["section"] == "gemm"), "torch.mm")


def render(rows, gemm, facts, ours="fastrnn-numba"):
    fastest = best(rows)
    out = [f"Machine: {facts['cpu']}, {facts['cores']} cores ({facts['device']}); torch "
           f"{facts['torch']}, numba {facts['numba']}, triton {facts['triton']}; commit "
           f"{facts['commit']}. Threads: {facts['threads']}. GEMM rate, {gemm_metric(rows)}: "
           f"{gemm:.1f} GFLOP/s. I = H. Speedup = torch time / {ours} time "
           f"(above 1: fastrnn faster); each provider's time is the faster of its medians "
           f"in the shared process and alone in a child process.{_layer_gemm(rows, gemm)}"
           f"{_alongside_note(rows)}", ""]
    matrix = any(section == "matrix" for section, _, _ in fastest)
    out += ["## Standard shapes", "",
            f"| cell | shape (T, B, H) | mode | {ours} ms | torch ms | reference ms | speedup | "
            f"{ours} GFLOP/s (% of GEMM) |", "|---|---|---|---|---|---|---|---|"] if matrix else []
    for (section, case, _), p in fastest.items():
        if section != "matrix":
            continue
        r = p.get(ours)
        any_r = r or next(iter(p.values()))       # ours may have failed on this case
        cell = f"{any_r['cell']} {any_r['variant']}"
        shape = (f"{SHAPE_NAMES.get((any_r['T'], any_r['B'], any_r['H']), '')} "
                 f"({any_r['T']}, {any_r['B']}, {any_r['H']})").strip()
        gf = f"{r['gflops']:.1f} ({_share(r)})" if r else "–"
        out.append(f"| {cell} | {shape} | {any_r['mode']} | {_ms(r)} | {_ms(p.get('torch'))} | "
                   f"{_ms(p.get('reference'))} | {_speed(r)} | {gf} |")
    sweeps = [(c, p) for (s, c, _), p in fastest.items() if s == "sweep"]
    if sweeps:
        out += ["", "## Sweeps around the middle shape (fwd+bwd; speedup, "
                f"{ours} ms / torch ms)", ""]
        for axis in ("T", "B", "H"):
            pts = [(c, p) for c, p in sweeps if p.get(ours, {}).get("axis") == axis]
            values = sorted({p[ours][axis] for _, p in pts})
            cells = list(dict.fromkeys(f"{p[ours]['cell']} {p[ours]['variant']}" for _, p in pts))
            out += [f"| cell \\ {axis} | " + " | ".join(str(v) for v in values) + " |",
                    "|---|" + "---|" * len(values)]
            for cell in cells:
                line = []
                for v in values:
                    p = next((p for _, p in pts if p[ours][axis] == v and
                              f"{p[ours]['cell']} {p[ours]['variant']}" == cell), None)
                    line.append("–" if p is None else
                                f"{p[ours]['speedup_vs_torch']:.2f}× ({_ms(p[ours])} / "
                                f"{_ms(p.get('torch'))})")
                out.append(f"| {cell} | " + " | ".join(line) + " |")
            out.append("")
    if ours == "fastrnn-numba" and matrix:
        out += targets(fastest, rows)
    other = [r for r in rows if r["section"] in ("coldstart", "memory", "charlm")]
    if other:
        out += ["## Costs a user feels, and a model on real data", "",
                "| section | provider | what | value |", "|---|---|---|---|"]
        for r in other:
            value = r["value"]
            value = f"{value:.3g}" if isinstance(value, float) else value
            out.append(f"| {r['section']} | {r['provider']} | {r['metric']} | {value} {r['unit']} |")
    out += peak_table(rows)
    out += phases_table(rows)
    out += models_table(rows, ours)
    out += trees_table(rows, ours)
    out += host_table(rows)
    out += split_table(rows)
    fp16 = [p for (s, _, _), p in fastest.items() if ours in p and "torch-fp16" in p]
    if fp16:
        out += ["", "## Against torch in fp16 (cuDNN's persistent algorithm)", "",
                "| case | fastrnn (bf16) | torch bf16 | torch fp16 | vs bf16 | vs fp16 |",
                "|---|---|---|---|---|---|"]
        out += [f"| `{_key(p[ours])}` | {_ms(p[ours])} | {_ms(p.get('torch'))} | "
                f"{_ms(p['torch-fp16'])} | {_speed(p[ours])} | "
                f"{p[ours]['speedup_vs_torch_fp16']:.2f}× |" for p in fp16]
    errors = [r for r in rows if r["section"] == "errors"]
    if errors:
        out += ["", "## Errors (cases or providers that did not run)", "",
                "| case | provider | error |", "|---|---|---|"]
        out += [f"| `{r['metric']}` | {r['provider']} | {r['value']} |" for r in errors]
    return "\n".join(out) + "\n"


def phases_table(rows):
    """Each cell's fwd and fwd+bwd split into phases (bench/phases.py)."""
    got = [r for r in rows if r["section"] == "phases" and r["provider"] != "none"]
    if not got:
        return []
    peak = next((r for r in rows if r["section"] == "phases" and r["provider"] == "none"), None)
    out = ["", "## Where the time goes (phases, float32, all threads)", "",
           f"Share of peak: against {peak['metric']} ({peak['value']} GFLOP/s), measured in "
           "the same run. torch.mm: its rate on the phase's own shapes in the same run (the "
           "step products: one torch.mm a step). Pointwise: the kernels' time less their "
           "step products and packing; rest: the layer less every phase.", "",
           "| cell | shape (T, B, H) | mode | layer ms | " + " | ".join(
               f"{p}" for p in PHASE_COLUMNS) + " |", "|---|---|---|---|" +
           "---|" * len(PHASE_COLUMNS)]
    for key in dict.fromkeys((r["cell"], r["T"], r["B"], r["H"], r["mode"]) for r in got):
        ph = {r["metric"]: r for r in got
              if (r["cell"], r["T"], r["B"], r["H"], r["mode"]) == key}
        layer = ph.get("layer")
        cells = []
        for p in PHASE_COLUMNS:
            r = ph.get(p)
            if r is None:
                cells.append("–")
                continue
            text = f"{float(r['value']):.2f} ms"
            if r.get("gflops") not in (None, ""):
                text += f", {float(r['gflops']):.0f} GF/s ({float(r['pct_of_peak']):.0f}%)"
            if r.get("torch_mm_gflops") not in (None, ""):
                text += f", mm {float(r['torch_mm_gflops']):.0f}"
            cells.append(text)
        lay = "–" if layer is None else (f"{float(layer['value']):.2f} "
                                         f"({float(layer['pct_of_peak']):.0f}%)")
        out.append(f"| {key[0]} | ({key[1]}, {key[2]}, {key[3]}) | {key[4]} | {lay} | "
                   + " | ".join(cells) + " |")
    return out


PHASE_COLUMNS = ["input projection", "step products", "pointwise", "weight packing",
                 "weight gradients", "rest"]


def peak_table(rows):
    """The FMA peak and the one-thread step products against it and torch.mm."""
    top = {r["metric"]: r["value"] for r in rows if r["section"] == "peak"}
    prods = [r for r in rows if r["section"] == "products"]
    if not top:
        return []
    core = top.get("FMA peak, one core")
    out = ["", "## FMA peak and the step products (one thread, float32)", "",
           f"ISA: {top.get('ISA')}. "
           + "; ".join(f"{m}: {v} GFLOP/s" for m, v in top.items() if m != "ISA") + ".", ""]
    if not prods:
        return out
    providers = list(dict.fromkeys(r["provider"] for r in prods))
    out += ["| product (rows x K @ K x M) | " + " | ".join(
        f"{p} GFLOP/s (% of peak)" for p in providers) + " | panels / torch.mm |",
        "|---|" + "---|" * (len(providers) + 1)]
    for metric in dict.fromkeys(r["metric"] for r in prods):
        got = {r["provider"]: r["value"] for r in prods if r["metric"] == metric}
        cells = [f"{got[p]:.1f} ({100 * got[p] / core:.0f}%)" if p in got else "–"
                 for p in providers]
        ratio = (f"{got['fastrnn panels'] / got['torch.mm']:.2f}×"
                 if "fastrnn panels" in got and got.get("torch.mm") else "–")
        out.append(f"| {metric} | " + " | ".join(cells) + f" | {ratio} |")
    return out


def models_table(rows, ours):
    """fastrnn.models against their torch.nn builds: one line per metric, with the
    speedup (above 1: fastrnn faster; rates and times read the right way round)."""
    by_metric = {}
    for r in rows:
        if r["section"] == "models":
            by_metric.setdefault((r["metric"], r["unit"]), {})[r["provider"]] = float(r["value"])
    if not by_metric:
        return []
    out = ["", "## Models (fastrnn.models against the same model built with torch.nn)", "",
           "| what | unit | fastrnn | torch | speedup |", "|---|---|---|---|---|"]
    for (metric, unit), v in by_metric.items():
        a, b = v.get(ours), v.get("torch")
        ratio = "–" if a is None or b is None or not a or not b else \
            f"**{(a / b if unit.endswith('/s') else b / a):.2f}×**"
        fmt = lambda x: "–" if x is None else f"{x:.4g}"  # noqa: E731
        out.append(f"| {metric} | {unit} | {fmt(a)} | {fmt(b)} | {ratio} |")
    return out


def trees_table(rows, ours):
    """Tree nets: nodes/s per provider, and fastrnn's speedup over each baseline."""
    by_metric = {}
    for r in rows:
        if r["section"] == "trees":
            by_metric.setdefault(r["metric"], {})[r["provider"]] = float(r["value"])
    if not by_metric:
        return []
    from .trees import TARGETS
    bounds = " / ".join(f"≥ {b:g}× {p}" for p, b in TARGETS.items())
    out = ["", "## Trees (nodes/s; speedup = fastrnn's rate over the baseline's)", "",
           f"| case | fastrnn | torch-levels | reference | vs torch-levels | vs reference | "
           f"targets, forward+backward ({bounds}) |", "|---|---|---|---|---|---|---|"]
    for metric, v in by_metric.items():
        a = v.get(ours, v.get("fastrnn-triton"))
        cells = [f"{a:,.0f}" if a else "–"] + \
            [f"{v[p]:,.0f}" if p in v else "–" for p in ("torch-levels", "reference")]
        ratios = [f"**{a / v[p]:.1f}×**" if a and v.get(p) else "–"
                  for p in ("torch-levels", "reference")]
        met = " / ".join("–" if not (a and v.get(p)) else "yes" if a / v[p] >= b else "**no**"
                         for p, b in TARGETS.items())
        out.append(f"| {metric} | " + " | ".join(cells + ratios) + " | " +
                   (met if metric.endswith("forward+backward") else "") + " |")
    return out


def host_table(rows):
    """The Triton path's host side, launches stubbed (bench/host.py)."""
    host = [r for r in rows if r["section"] == "host"]
    if not host:
        return []
    from .host import HOST_SHAPE, STEP
    out = ["", f"## Host side of the Triton path (launches stubbed; layer (T, B, H) = "
           f"{HOST_SHAPE}, step (B, I, H) = {STEP})", "",
           "Per layer call (forward+backward) or step: the Triton kernel launches and the "
           "torch ops that launch a kernel on a GPU (all torch ops, views and allocations "
           "included). Per launcher call: its Python time with the launch stubbed, and the "
           "Numba launcher's time on the arguments the same call gives it on the Numba "
           "backend (it computes). The kernels read the weights as torch holds them, so "
           "no call copies a weight.", "",
           "| call | launcher | Triton launches | torch kernels (ops) | Triton host µs | "
           "Numba µs | torch kernels by op |", "|---|---|---|---|---|---|---|"]
    for r in host:
        out.append(f"| {r['cell']} {r['call']} | {r['launcher']} | {r['launches']} | "
                   f"{r['torch_kernels']} ({r['torch_ops']}) | {float(r['value']):.1f} | "
                   f"{float(r['numba_us']):.1f} | {r['torch_kernel_ops']} |")
    return out


def split_table(rows):
    """The GPU job's fastrnn-triton cases: plan, kernels and host (bench/gpu.py's split)."""
    split = [r for r in rows if r["section"] == "split"]
    if not split:
        return []
    out = ["", "## Where the time goes (fastrnn-triton: plan, device kernels, host)", "",
           "Wall: the case's median. Kernels: torch.profiler's device kernels of one call, "
           "their number and summed time. Host: wall minus kernels.", "",
           "| case | plan | wall ms | kernels | kernel ms | host ms |",
           "|---|---|---|---|---|---|"]
    for r in split:
        out.append(f"| {r['metric']} | {r['plan']} | {float(r['value']):.3f} | {r['launches']} | "
                   f"{float(r['kernel_ms']):.3f} | {float(r['host_ms']):.3f} |")
    return out


def _issue35_targets(values, rows, line, ours):
    """The step products against the per-core peak and torch.mm, the char-LM training
    step, and all threads against one at batch 1 (matrix.PRODUCTS_PEAK_PCT and beside)."""
    from .products import TARGET_SHAPES
    peak = values.get(("peak", "none", "FMA peak, one core"))
    for n, K, M in TARGET_SHAPES:
        what = f"forward {n}x{K} @ {K}x{M}"
        ours_gf = values.get(("products", "fastrnn panels", what))
        mm = values.get(("products", "torch.mm", what))
        if peak and ours_gf and mm:
            pct = 100 * ours_gf / peak
            line("step product, one thread", what,
                 f"≥ {PRODUCTS_PEAK_PCT:g}% of the core's peak and ≥ torch.mm",
                 f"{pct:.0f}% ({ours_gf:.0f} of {peak:.0f} GFLOP/s), {ours_gf / mm:.2f}× torch.mm",
                 pct >= PRODUCTS_PEAK_PCT and ours_gf >= mm)
    step = {p: v for (s, p, m), v in values.items() if s == "charlm" and m.startswith("training")}
    if ours in step and "torch" in step:
        v = step["torch"] / step[ours]
        line("speedup over torch.nn", "char-LM training step (charlm section)",
             f"≥ {CHARLM_SPEEDUP:g}×", f"{v:.2f}×", v >= CHARLM_SPEEDUP)
    th = [r for r in rows if r["section"] == "threads"]
    if len(th) == 2:
        one, all_ = (r["value"] for r in th)
        v = all_ / one
        line("all threads against one",
             f"LSTM fwd+bwd (T, B, H) = ({th[0]['T']}, {th[0]['B']}, {th[0]['H']})",
             f"≤ {THREADS_RATIO:g}× the 1-thread time",
             f"{v:.2f}× ({all_:.1f} against {one:.1f} ms)", v <= THREADS_RATIO)


def targets(fastest, rows, ours="fastrnn-numba"):
    """The "Targets" table: every target the project set itself against this run's figure,
    each named by what it measures."""
    out = ["", "## Targets (this run's figures)", "",
           "| target | case | bound | this run | met |", "|---|---|---|---|---|"]

    def line(what, case, target, value, ok):
        out.append(f"| {what} | {case} | {target} | {value} | {'yes' if ok else '**no**'} |")

    for case, quantity, bound in TARGETS:
        r = fastest.get(("matrix", case, ""), {}).get(ours)
        what = "speedup over torch.nn" if quantity == "speedup" else "share of the GEMM rate"
        if r is None:
            out.append(f"| {what} | `{case}` | | not run | |")
        elif quantity == "speedup":
            v = r["speedup_vs_torch"]
            line(what, f"`{case}`", f"≥ {bound:g}×", f"{v:.2f}×", v >= bound)
        else:
            v, along = r["gflops_pct_of_gemm"], r.get("gflops_pct_of_gemm_alongside")
            if along in (None, ""):
                line(what, f"`{case}`", f"≥ {bound:g}%", f"{v:.0f}%", v >= bound)
            else:
                line(what, f"`{case}`", f"≥ {bound:g}%",
                     f"{along:.0f}% alongside ({v:.0f}% of the best of the run)",
                     along >= bound)
    values = {(r["section"], r["provider"], r["metric"]): r["value"] for r in rows
              if r["section"] in ("coldstart", "memory", "peak", "products", "charlm")}
    _issue35_targets(values, rows, line, ours)
    cold = values.get(("coldstart", ours, "first LSTM forward, warm Numba cache: after import torch"))
    if cold is not None:
        line("cold start", "after import torch, warm Numba cache", f"< {COLD_START_TARGET_S:g} s",
             f"{cold:.2f} s", cold < COLD_START_TARGET_S)
    cold = values.get(("coldstart", ours,
                       "first LSTM forward+backward, empty Numba cache: after import torch"))
    if cold is not None:
        line("cold start", "after import torch, empty Numba cache, LSTM fwd+bwd float32",
             f"≤ {EMPTY_CACHE_TARGET_S:g} s", f"{cold:.1f} s", cold <= EMPTY_CACHE_TARGET_S)
    mem = {p: v for (s, p, m), v in values.items() if s == "memory" and "fwd+bwd" in m}
    if ours in mem and "torch" in mem:
        line("peak memory", "LSTM fwd+bwd at the large shape", "≤ torch",
             f"{mem[ours]:.0f} vs {mem['torch']:.0f} MiB", mem[ours] <= mem["torch"])
    return out + [""]
