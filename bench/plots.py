"""PNG plots drawn from a results CSV: ``python -m bench.plots [bench/results/cpu.csv]``.

- speedup.png: speedup over torch per cell and standard shape, one panel per mode;
- sweeps.png: time against T, B and H on log axes (how cost grows with the work),
  fastrnn and torch, one row per cell;
- gflops.png: achieved GFLOP/s against H beside the machine's measured float32
  GEMM rate (the ceiling a recurrent layer can approach).
"""
import csv
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .report import SHAPE_NAMES, best, gemm_metric  # noqa: E402

INT = ("T", "B", "H")
NUM = ("median_ms", "gflops", "gflops_pct_of_gemm", "gemm_alongside_gflops",
       "gflops_pct_of_gemm_alongside", "speedup_vs_torch", "speedup_vs_torch_fp16", "value")
STYLE = {"fastrnn-numba": "-o", "fastrnn-triton": "-o", "torch": "--s", "reference": ":^"}


def load(path):
    rows = []
    with open(path) as f:
        for r in csv.DictReader(f):
            for k in INT + NUM:
                conv = int if k in INT else float
                try:
                    r[k] = conv(r[k]) if r.get(k) not in (None, "") else None
                except ValueError:      # text: an "errors" row's message stays as written
                    pass
            rows.append(r)
    return rows


def _best(rows, section, provider):
    """{(cell label, mode, T, B, H, axis): fastest timing row of ``provider``}, the
    rows the report chose (report.best)."""
    return {(f"{r['cell']} {r['variant']}", r["mode"], r["T"], r["B"], r["H"], r["axis"]): r
            for (s, _, _), p in best(rows).items() if s == section and provider in p
            for r in [p[provider]]}


def speedup(rows, ours, path):
    fast = _best(rows, "matrix", ours)
    modes = list(dict.fromkeys(k[1] for k in fast))
    cells = list(dict.fromkeys(k[0] for k in fast))
    shapes = sorted({k[2:5] for k in fast}, key=lambda s: s[0] * s[1] * s[2] ** 2)
    fig, axes = plt.subplots(1, len(modes), figsize=(5 * len(modes), 4), squeeze=False)
    width = 0.8 / max(1, len(cells))
    for ax, mode in zip(axes[0], modes):
        for i, cell in enumerate(cells):
            ys = [fast.get((cell, mode, *s, ""), {}).get("speedup_vs_torch") or 0 for s in shapes]
            ax.bar([j + i * width for j in range(len(shapes))], ys, width, label=cell)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_yscale("log")
        ax.set_xticks([j + width * (len(cells) - 1) / 2 for j in range(len(shapes))])
        ax.set_xticklabels([f"{SHAPE_NAMES.get(tuple(s), '')}\n"
                            f"T={s[0]} B={s[1]} H={s[2]}" for s in shapes], fontsize=8)
        ax.set_title(f"{mode}: speedup over torch (log)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sweeps(rows, providers, path, value="median_ms", ylabel="ms"):
    fast = {p: _best(rows, "sweep", p) for p in providers}
    cells = list(dict.fromkeys(k[0] for b in fast.values() for k in b))
    axes_names = ["T", "B", "H"]
    fig, axes = plt.subplots(len(cells), 3, figsize=(12, 2.8 * len(cells)), squeeze=False)
    for i, cell in enumerate(cells):
        for j, axis in enumerate(axes_names):
            ax = axes[i][j]
            for p, b in fast.items():
                pts = sorted((r[axis], r[value]) for k, r in b.items()
                             if k[0] == cell and k[5] == axis)
                if pts:
                    ax.plot(*zip(*pts), STYLE.get(p, "-"), label=p, ms=4)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{cell}: {ylabel} vs {axis}", fontsize=9)
            ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def gflops(rows, providers, path):
    gemm = next((r["value"] for r in rows if r["section"] == "gemm"), None)
    fast = {p: _best(rows, "sweep", p) for p in providers}
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for p, b in fast.items():
        for cell in dict.fromkeys(k[0] for k in b):
            pts = sorted((r["H"], r["gflops"]) for k, r in b.items() if k[0] == cell and k[5] == "H")
            if pts:
                ax.plot(*zip(*pts), STYLE.get(p, "-"), label=f"{p} {cell}", ms=4)
    if gemm:
        ax.axhline(gemm, color="k", lw=1, label=f"{gemm_metric(rows)} ({gemm:.0f})")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("H (= I), T=100, B=32, fwd+bwd")
    ax.set_ylabel("GFLOP/s")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw(csv_path, out):
    """Draw every plot the CSV has data for; returns the PNG paths."""
    rows = load(csv_path)
    out = Path(out)
    providers = list(dict.fromkeys(r["provider"] for r in rows if r["median_ms"] is not None))
    ours = next((p for p in providers if p.startswith("fastrnn")), None)
    made = []
    if ours and any(r["section"] == "matrix" for r in rows):
        speedup(rows, ours, out / "speedup.png")
        made.append(out / "speedup.png")
    swept = [p for p in providers if p != "reference"]
    if any(r["section"] == "sweep" for r in rows):
        sweeps(rows, swept, out / "sweeps.png")
        gflops(rows, swept, out / "gflops.png")
        made += [out / "sweeps.png", out / "gflops.png"]
    return made


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "results" / "cpu.csv"
    for png in draw(path, path.parent):
        print(png)
