"""python -m bench: fastrnn against PyTorch on this machine; CSV + markdown report.

Every shape is timed with the providers alternated in one process (fastrnn-numba
and torch.nn), and torch is timed again in a child process that never loads
fastrnn's kernels (its idle-spinning thread pools could slow torch in the shared
process and flatter fastrnn). Speedups use the faster of the two torch figures;
both are recorded. The GEMM rate (torch.mm, 2048^2, float32) is measured in the
same run.
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from . import bench_rnn
from .harness import compare, gemm_gflops, machine_facts, write_csv

RESULTS = Path(__file__).parent / "results"


def _torch_only(args):
    """Child process: time torch.nn.RNN alone; prints {"mode T B I H": ms} as JSON."""
    from fastrnn._alloc import keep_freed_memory   # same allocator setting as fastrnn's process
    keep_freed_memory()
    out = {}
    for case in args.cases:
        mode, T, B, I, H = case.split(":")
        T, B, I, H = int(T), int(B), int(I), int(H)
        step = bench_rnn.make_step(bench_rnn.modules(I, H)["torch"], mode, T, B, I, H)
        out[case] = compare({"torch": step}, args.repeats)["torch"]
    print(json.dumps(out))


def _repeats(T, B, H, quick):
    work = T * B * H * H
    if quick:
        return 3
    return 5 if work > 1e9 else 15


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer repeats (about a minute)")
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
    rows = []
    for T, B, H in bench_rnn.SHAPES:
        I = H
        reps = _repeats(T, B, H, args.quick)
        mods = bench_rnn.modules(I, H, fastrnn)
        for mode in bench_rnn.MODES:
            steps = {name: bench_rnn.make_step(m, mode, T, B, I, H) for name, m in mods.items()}
            same = compare(steps, reps)
            case = f"{mode}:{T}:{B}:{I}:{H}"
            child = subprocess.run([sys.executable, "-m", "bench", "--repeats", str(reps),
                                    "--torch-only", case], capture_output=True, text=True,
                                   check=True, cwd=Path(__file__).parent.parent)
            alone = json.loads(child.stdout.strip().splitlines()[-1])[case]
            torch_best = min(same["torch"], alone)
            fl = bench_rnn.flops(mode, T, B, I, H)
            for provider, process, ms in [("fastrnn-numba", "same", same["fastrnn-numba"]),
                                          ("torch", "same", same["torch"]),
                                          ("torch", "separate", alone)]:
                gf = fl / ms / 1e6
                rows.append(dict(cell="rnn_tanh", mode=mode, T=T, B=B, I=I, H=H, dtype="float32",
                                 provider=provider, process=process, median_ms=round(ms, 4),
                                 gflops=round(gf, 2), gflops_pct_of_gemm=round(100 * gf / gemm, 1),
                                 speedup_vs_torch=round(torch_best / ms, 3), **facts))
            print(f"  rnn_tanh {mode:6s} T={T:<4d} B={B:<3d} H={H:<4d} "
                  f"fastrnn {same['fastrnn-numba']:9.3f} ms  torch {same['torch']:9.3f} / "
                  f"{alone:9.3f} ms (same/alone)  speedup {torch_best / same['fastrnn-numba']:.2f}x",
                  flush=True)
    # the machine is shared and its speed drifts: take the better of a GEMM rate
    # measured before and after the cases, so that the % of GEMM is not inflated
    gemm = max(gemm, gemm_gflops())
    for r in rows:
        r["gflops_pct_of_gemm"] = round(100 * r["gflops"] / gemm, 1)
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
