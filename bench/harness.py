"""The one benchmark harness: timing, machine facts, the long-format CSV.

Timing: warm-up calls first (JIT compilation is never timed), then the median
of repeats; providers are alternated inside each repeat so that drifting clock
speed or a noisy neighbour hits all of them alike. CUDA work is timed with
events.
"""
import csv
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

# long format: one row per (section, case, provider, process); timing rows fill
# median_ms..speedup_vs_torch, the other sections (cold start, memory, char-LM,
# GEMM rate) fill metric/value/unit
FIELDS = ["section", "axis", "cell", "variant", "mode", "T", "B", "I", "H", "provider",
          "process", "median_ms", "samples", "gflops", "gflops_pct_of_gemm",
          "gemm_alongside_gflops", "gflops_pct_of_gemm_alongside",
          "speedup_vs_torch", "speedup_vs_torch_fp16", "metric", "value", "unit", "device", "machine", "cpu", "cores",
          "threads", "torch", "numba", "triton", "commit",
          # where a call's time goes (bench/gpu.py's split, bench/host.py)
          "plan", "launches", "kernel_ms", "host_ms",
          # bench/phases.py: a phase's share of the FMA peak and torch.mm's rate beside it
          "pct_of_peak", "torch_mm_gflops"]


def child_setup(provider):
    """A child process that times one provider alone: the allocator setting and the
    thread count every bench process uses, and Numba's pool loaded for fastrnn."""
    from fastrnn._alloc import keep_freed_memory   # same allocator setting in every process
    keep_freed_memory()
    torch.set_num_threads(os.cpu_count())
    if provider.startswith("fastrnn"):
        import fastrnn.kernels.numba  # noqa: F401


def run_child(module, *args):
    """``python -m <module> *args`` from the repository root; -> the JSON object its last
    line of output holds."""
    import json
    child = subprocess.run([sys.executable, "-m", module, *args], capture_output=True,
                           text=True, check=True, cwd=Path(__file__).parent.parent)
    return json.loads(child.stdout.strip().splitlines()[-1])


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=Path(__file__).parent).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def _version(module):
    try:
        return __import__(module).__version__
    except ImportError:
        return "none"


def thread_settings():
    """Who owns the cores: torch's pool, Numba's, and every BLAS/OpenMP pool loaded."""
    parts = [f"torch={torch.get_num_threads()}"]
    try:
        import numba
        parts.append(f"numba={numba.get_num_threads()}")
        from threadpoolctl import threadpool_info
        parts += [f"{p['internal_api']}({Path(p['filepath']).name.split('-')[0]})="
                  f"{p['num_threads']}" for p in threadpool_info()]
    except ImportError:
        pass
    env = [f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS",
                                            "FASTRNN_BACKEND") if k in os.environ]
    return " ".join(parts + env)


def machine_facts(device="cpu"):
    gpu = torch.cuda.get_device_name() if device == "cuda" else ""
    return dict(machine=platform.node(), cpu=cpu_model(), cores=os.cpu_count(),
                device=gpu or "cpu", threads=thread_settings(), torch=torch.__version__,
                numba=_version("numba"), triton=_version("triton"), commit=commit())


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def time_once(fn, device="cpu"):
    if device == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end)
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def samples(fns, repeats, warmup=2, device="cpu"):
    """fns: {name: callable}. Alternates providers each repeat; returns {name: [ms, ...]}.

    Every other repeat runs them in reverse order. A call right after another provider
    pays for that provider's thread pool still spinning on the cores (measured on 2
    cores, the same fastrnn RNN fwd+bwd at T=100, B=32, H=128: 5.78-6.26 ms right after
    torch.nn.RNN, 5.58-5.89 ms right after another fastrnn call); in a fixed order the
    first provider would always pay it. Element i of every list is from repeat i.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    _sync(device)
    times = {name: [] for name in fns}
    names = list(fns)
    for i in range(repeats):
        for name in names if i % 2 == 0 else names[::-1]:
            times[name].append(time_once(fns[name], device))
    return times


def compare(fns, repeats, warmup=2, device="cpu"):
    """Like ``samples`` but returns {name: median ms}."""
    return {name: statistics.median(ts) for name, ts in samples(fns, repeats, warmup, device).items()}


GEMM_N = 2048      # the machine's GEMM rate: torch.mm of GEMM_N x GEMM_N float32 squares


def mm_call(shape=(GEMM_N, GEMM_N, GEMM_N), device="cpu", dtype=torch.float32):
    """(a callable running one torch.mm of [m, k] @ [k, p], its FLOPs); shape = (m, k, p)."""
    m, k, p = shape
    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, p, device=device, dtype=dtype)
    return (lambda: torch.mm(a, b)), 2 * m * k * p


def gemm_name(n, dtype):
    """What a GEMM rate measured: the report's header and the plots name it from the CSV's
    first ``gemm`` row, so a run says which product it timed."""
    return f"torch.mm {n}² {str(dtype).removeprefix('torch.')}"


def gemm_gflops(n=GEMM_N, repeats=7, device="cpu", dtype=torch.float32, shape=None):
    """The machine's GEMM rate through torch.mm (GFLOP/s), float32 by default: n x n
    squares, or [m, k] @ [k, p] for ``shape`` = (m, k, p)."""
    mm, fl = mm_call(shape or (n, n, n), device, dtype)
    return fl / compare({"mm": mm}, repeats, device=device)["mm"] / 1e6


class _Dots:
    """Fallback progress display when tqdm is not installed."""

    def __init__(self, total, desc):
        self.total, self.done, self.desc = total, 0, desc

    def update(self, n=1):
        self.done += n
        print(f"\r{self.desc}: {self.done:.0f}/{self.total}", end="", file=sys.stderr, flush=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        print(file=sys.stderr)


def progress(total, desc):
    """A progress bar on stderr (tqdm when installed)."""
    try:
        from tqdm import tqdm
    except ImportError:
        return _Dots(total, desc)
    return tqdm(total=total, desc=desc, unit="case", file=sys.stderr,
                bar_format="{desc}: {percentage:3.0f}%|{bar:30}| {n:.0f}/{total} "
                           "[{elapsed}<{remaining}]")


def write_csv(rows, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in FIELDS})
