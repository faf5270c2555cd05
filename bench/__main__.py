"""python -m bench: fastrnn against PyTorch on this machine; CSV + markdown report.

Every shape is timed with the providers alternated in one process (fastrnn-numba
and torch.nn), and torch is timed again in a child process that never loads
fastrnn's kernels (its idle-spinning thread pools could slow torch in the shared
process and flatter fastrnn). Rounds repeat both, so that a slow spell of the
shared machine hits every provider; medians are over all rounds' samples.
Speedups use the faster of the two torch figures; both are recorded. The GEMM
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

from . import bench_rnn
from .harness import gemm_gflops, machine_facts, samples, write_csv

RESULTS = Path(__file__).parent / "results"


def _torch_only(args):
    """Child process: time torch.nn.RNN alone; prints {case: [ms, ...]} as JSON."""
    from fastrnn._alloc import keep_freed_memory   # same allocator setting as fastrnn's process
    keep_freed_memory()
    torch.set_num_threads(os.cpu_count())
    out = {}
    for case in args.cases:
        mode, T, B, I, H = _parse(case)
        step = bench_rnn.make_step(bench_rnn.modules(I, H)["torch"], mode, T, B, I, H)
        out[case] = samples({"torch": step}, args.repeats)["torch"]
    print(json.dumps(out))


def _parse(case):
    mode, *dims = case.split(":")
    return (mode, *map(int, dims))


def _repeats(T, B, H, quick):
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
    p.add_argument("--torch-only", dest="cases", nargs="*", help=argparse.SUPPRESS)
    p.add_argument("--repeats", type=int, default=5, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.cases is not None:
        return _torch_only(args)

    import fastrnn
    import fastrnn.kernels.numba  # noqa: F401  (load and configure the backend up front)

    torch.set_num_threads(os.cpu_count())
    facts = machine_facts()
    gemm = gemm_gflops()
    print(f"machine: {facts['cpu']}, {facts['cores']} cores, torch {facts['torch']}, "
          f"numba {facts['numba']}; float32 GEMM rate {gemm:.1f} GFLOP/s", flush=True)
    rounds = 1 if args.quick else args.rounds
    steps, reps = {}, {}
    for T, B, H in bench_rnn.SHAPES:
        mods = bench_rnn.modules(H, H, fastrnn)
        for mode in bench_rnn.MODES:
            case = f"{mode}:{T}:{B}:{H}:{H}"
            steps[case] = {name: bench_rnn.make_step(m, mode, T, B, H, H) for name, m in mods.items()}
            reps[case] = _repeats(T, B, H, args.quick)
    times = {case: {"fastrnn-numba": [], "torch": [], "torch-alone": []} for case in steps}
    for r in range(rounds):
        for case, fns in steps.items():
            for name, ts in samples(fns, reps[case], warmup=2 if r == 0 else 1).items():
                times[case][name] += ts
        # torch alone: one child per round and repeat count, all cases of that count
        for n in sorted(set(reps.values())):
            cases = [c for c in steps if reps[c] == n]
            child = subprocess.run([sys.executable, "-m", "bench", "--repeats", str(n),
                                    "--torch-only", *cases], capture_output=True, text=True,
                                   check=True, cwd=Path(__file__).parent.parent)
            for case, ts in json.loads(child.stdout.strip().splitlines()[-1]).items():
                times[case]["torch-alone"] += ts
        print(f"  round {r + 1}/{rounds} done", flush=True)
    # the machine is shared and its speed drifts: take the better of the GEMM rates
    # measured before and after the cases, so that the % of GEMM is not inflated
    gemm = max(gemm, gemm_gflops())
    rows = []
    for case, t in times.items():
        mode, T, B, I, H = _parse(case)
        med = {k: statistics.median(v) for k, v in t.items()}
        torch_best = min(med["torch"], med["torch-alone"])
        fl = bench_rnn.flops(mode, T, B, I, H)
        for provider, process, key in [("fastrnn-numba", "same", "fastrnn-numba"),
                                       ("torch", "same", "torch"),
                                       ("torch", "separate", "torch-alone")]:
            gf = fl / med[key] / 1e6
            rows.append(dict(cell="rnn_tanh", mode=mode, T=T, B=B, I=I, H=H, dtype="float32",
                             provider=provider, process=process, median_ms=round(med[key], 4),
                             samples=len(t[key]), gflops=round(gf, 2),
                             gflops_pct_of_gemm=round(100 * gf / gemm, 1),
                             speedup_vs_torch=round(torch_best / med[key], 3), **facts))
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
             f"{facts['numba']}; commit {facts['commit']}. float32, I = H. "
             f"GEMM rate (torch.mm 2048², same run): {gemm:.1f} GFLOP/s.", "",
             "| cell | mode | T | B | H | fastrnn-numba ms | torch ms (same / alone) | speedup | fastrnn GFLOP/s (% of GEMM) |",
             "|---|---|---|---|---|---|---|---|---|"]
    key = lambda r: tuple(r.get(k) for k in ("cell", "mode", "T", "B", "H"))  # noqa: E731
    ours = [r for r in rows if r["provider"] == "fastrnn-numba"]
    for r in ours:
        t = {r2["process"]: r2["median_ms"] for r2 in rows
             if r2["provider"] == "torch" and key(r2) == key(r)}
        lines.append(f"| {r['cell']} | {r['mode']} | {r['T']} | {r['B']} | {r['H']} | "
                     f"{r['median_ms']:.3f} | {t['same']:.3f} / {t['separate']:.3f} | "
                     f"**{r['speedup_vs_torch']:.2f}×** | {r['gflops']:.1f} ({r['gflops_pct_of_gemm']:.0f}%) |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
