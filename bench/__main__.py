"""python -m bench: fastrnn against PyTorch on this machine; CSV + markdown report.

Every shape is timed with the providers alternated in one process (fastrnn-numba
and torch.nn), and every provider is timed again alone, in a child process of its
own: on 2 cores the thread pools of one provider, spinning after its work, slow
the other one in a shared process (measured both ways). Rounds repeat all of it,
so that a slow spell of the shared machine hits every provider; medians are over
all rounds' samples. Each provider's figure is the faster of its two (same
process / alone); all four are recorded. The GEMM
rate (torch.mm, 2048^2, float32) is measured in the same run.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import torch

from . import bench_gru, bench_lstm, bench_rnn, cases
from .harness import gemm_gflops, machine_facts, samples, write_csv

RESULTS = Path(__file__).parent / "results"
PROVIDERS = ["fastrnn-numba", "torch"]
ALL_CASES = bench_rnn.CASES + bench_gru.CASES + bench_lstm.CASES


def _alone(args):
    """Child process: time one provider alone; prints {case: [ms, ...]} as JSON."""
    from fastrnn._alloc import keep_freed_memory   # same allocator setting in every process
    keep_freed_memory()
    torch.set_num_threads(os.cpu_count())
    fastrnn = None
    if args.alone != "torch":
        import fastrnn
        import fastrnn.kernels.numba  # noqa: F401
    out = {}
    for case in args.cases:
        module = cases.modules(case, fastrnn)[args.alone]
        out[case] = samples({"x": cases.make_step(module, case)}, args.repeats)["x"]
    print(json.dumps(out))


def _repeats(case, quick):
    _, _, _, T, B, H = cases.parse(case)
    if quick:
        return 3
    return 3 if T * B * H * H > 1e9 else 10


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="one round, few repeats (about a minute)")
    p.add_argument("--rounds", type=int, default=3,
                   help="rounds; each times every case in this process, then torch alone in a "
                        "child process (default 3; the machine is noisy)")
    p.add_argument("--out", default=str(RESULTS), help="folder for the CSV and report")
    p.add_argument("--cells", nargs="*", choices=sorted(cases.GATES),
                   help="cells to run (default: all)")
    p.add_argument("--alone", choices=PROVIDERS, help=argparse.SUPPRESS)
    p.add_argument("--cases", nargs="*", help=argparse.SUPPRESS)
    p.add_argument("--repeats", type=int, default=5, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.alone is not None:
        return _alone(args)

    import fastrnn
    import fastrnn.kernels.numba  # noqa: F401  (load and configure the backend up front)

    torch.set_num_threads(os.cpu_count())
    facts = machine_facts()
    gemm = gemm_gflops()
    print(f"machine: {facts['cpu']}, {facts['cores']} cores, torch {facts['torch']}, "
          f"numba {facts['numba']}; float32 GEMM rate {gemm:.1f} GFLOP/s", flush=True)
    rounds = 1 if args.quick else args.rounds
    selected = [c for c in ALL_CASES if not args.cells or c.split(":")[0] in args.cells]
    steps, reps = {}, {}
    for case in selected:
        mods = cases.modules(case, fastrnn)
        steps[case] = {name: cases.make_step(m, case) for name, m in mods.items()}
        reps[case] = _repeats(case, args.quick)
    times = {case: {f"{p}{suffix}": [] for p in PROVIDERS for suffix in ("", "-alone")}
             for case in steps}
    for r in range(rounds):
        gemm = max(gemm, gemm_gflops())
        for case, fns in steps.items():
            for name, ts in samples(fns, reps[case], warmup=2 if r == 0 else 1).items():
                times[case][name] += ts
        # each provider alone: a child process per provider and repeat count
        for provider in PROVIDERS:
            for n in sorted(set(reps.values())):
                group = [c for c in steps if reps[c] == n]
                child = subprocess.run([sys.executable, "-m", "bench", "--alone", provider,
                                        "--repeats", str(n), "--cases", *group],
                                       capture_output=True, text=True, check=True,
                                       cwd=Path(__file__).parent.parent)
                for case, ts in json.loads(child.stdout.strip().splitlines()[-1]).items():
                    times[case][f"{provider}-alone"] += ts
        print(f"  round {r + 1}/{rounds} done", flush=True)
    # the machine is shared and its speed drifts: take the best GEMM rate measured
    # before, between and after the rounds, so that the % of GEMM is not inflated
    gemm = max(gemm, gemm_gflops())
    rows = []
    for case, t in times.items():
        cell, variant, mode, T, B, H = cases.parse(case)
        med = {k: statistics.median(v) for k, v in t.items()}
        best = {p: min(med[p], med[f"{p}-alone"]) for p in PROVIDERS}
        fl = cases.flops(case)
        for key, ms in med.items():
            provider = key.replace("-alone", "")
            gf = fl / ms / 1e6
            rows.append(dict(cell=cell, variant=variant, mode=mode, T=T, B=B, I=H, H=H,
                             provider=provider, process="separate" if "alone" in key else "same",
                             median_ms=round(ms, 4), samples=len(t[key]), gflops=round(gf, 2),
                             gflops_pct_of_gemm=round(100 * gf / gemm, 1),
                             speedup_vs_torch=round(best["torch"] / ms, 3), **facts))
    rows.append(dict(cell="gemm", mode="mm2048", provider="torch", process="same",
                     gflops=round(gemm, 2), **facts))
    out = Path(args.out)
    write_csv(rows, out / "cpu.csv")
    report = render(rows, gemm, facts)
    (out / "report.md").write_text(report)
    print()
    print(report)


def render(rows, gemm, facts):
    lines = [f"CPU: {facts['cpu']}, {facts['cores']} cores; torch {facts['torch']}, numba "
             f"{facts['numba']}; commit {facts['commit']}. I = H. "
             f"GEMM rate (torch.mm 2048², same run): {gemm:.1f} GFLOP/s.", "",
             "| cell | variant | mode | T | B | H | fastrnn-numba ms (same / alone) | "
             "torch ms (same / alone) | speedup | fastrnn GFLOP/s (% of GEMM) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    key = lambda r: tuple(r.get(k) for k in ("cell", "variant", "mode", "T", "B", "H"))  # noqa: E731
    by_case = {}
    for r in rows:
        if r["cell"] != "gemm":
            by_case.setdefault(key(r), {})[(r["provider"], r["process"])] = r
    for (cell, variant, mode, T, B, H), c in by_case.items():
        ours = min((c[("fastrnn-numba", p)] for p in ("same", "separate")),
                   key=lambda r: r["median_ms"])
        lines.append(
            f"| {cell} | {variant} | {mode} | {T} | {B} | {H} | "
            f"{c[('fastrnn-numba', 'same')]['median_ms']:.3f} / "
            f"{c[('fastrnn-numba', 'separate')]['median_ms']:.3f} | "
            f"{c[('torch', 'same')]['median_ms']:.3f} / {c[('torch', 'separate')]['median_ms']:.3f} | "
            f"**{ours['speedup_vs_torch']:.2f}×** | {ours['gflops']:.1f} "
            f"({ours['gflops_pct_of_gemm']:.0f}%) |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
