"""python -m fastrnn.precompile: build the Numba kernel cache ahead of time.

For Docker images and CI: run it once where the cache will live (the package's
``__pycache__`` folders, else Numba's user-wide cache, or NUMBA_CACHE_DIR), and every
later process loads the kernels in well under a second instead of compiling them on
its first call. It drives each cell through the public layers on tiny inputs, so it
compiles exactly what those calls need: per dtype, the sequence kernels forward and
backward (equal lengths and a PackedSequence, which specialise separately), the
decoding step (the *Cell modules), and the tree nets (``--cells`` picks some).

    python -m fastrnn.precompile                       # every cell and tree net, float32
    python -m fastrnn.precompile --dtypes float32 float64 --cells lstm tree

With ``--gpu`` it tunes instead, on this CUDA device: a forward+backward of each cell
at the standard GPU shapes (GPU_SHAPES; dtypes bfloat16 and float32 unless --dtypes
says) times every tiling that fits the device at once and keeps the fastest in the
tuning cache (kernels/triton/tuning.py), then prints each candidate's time.

    python -m fastrnn.precompile --gpu --cells lstm --dtypes bfloat16
"""
import argparse
import logging
import sys
import time

import torch
from torch.nn.utils.rnn import pack_padded_sequence

from .cells import CELLS as TABLE, SEQUENCE

CELLS = SEQUENCE + ("tree",)      # "tree": the three tree cells
DTYPES = ("float32", "float64")
GPU_DTYPES = ("bfloat16", "float32", "float16")
# (T, B, H) of bench --gpu's cases: small, middle, FlashRNN's, large batches
GPU_SHAPES = ((100, 8, 32), (100, 32, 128), (256, 64, 512), (1024, 16, 768),
              (256, 256, 512), (256, 1024, 512))


def _layer_calls(cell, dtype):
    """-> [(label, call)]: the calls that compile ``cell``'s kernels in ``dtype``."""
    import fastrnn
    layer = getattr(fastrnn, TABLE[cell].torch_layer)(4, 4).to(dtype)
    step = getattr(fastrnn, TABLE[cell].torch_cell)(4, 4).to(dtype)
    layer.backend = step.backend = "numba"

    def train():
        x = torch.randn(3, 2, 4, dtype=dtype, requires_grad=True)
        layer(x)[0].sum().backward()

    def packed():
        x = torch.randn(3, 2, 4, dtype=dtype, requires_grad=True)
        out = layer(pack_padded_sequence(x, [3, 2]))[0]
        out.data.sum().backward()

    def decode():
        with torch.no_grad():
            step(torch.randn(2, 4, dtype=dtype))
    return [("forward+backward", train), ("packed", packed), ("decoding step", decode)]


def _tree_calls(dtype):
    import fastrnn
    forest = fastrnn.Forest([-1, 0, 0, 1])
    calls = []
    for model in (fastrnn.TreeRNN(4, 4), fastrnn.NaryTreeLSTM(4, 4),
                  fastrnn.ChildSumTreeLSTM(4, 4)):
        model = model.to(dtype)
        model.backend = "numba"

        def run(model=model):
            out = model(torch.randn(4, 4, dtype=dtype), forest)
            (out[0] if isinstance(out, tuple) else out).sum().backward()
        calls.append((type(model).__name__, run))
    return calls


def _tune(cells, dtypes, out):
    """--gpu: tune every cell's plans at GPU_SHAPES on this device; -> exit status."""
    import fastrnn
    if not torch.cuda.is_available():
        print("fastrnn.precompile --gpu: no CUDA device here; plans are tuned on the device "
              "they run on", file=sys.stderr)
        return 2
    from .kernels.triton import tuning
    if not tuning.enabled():
        print("fastrnn.precompile --gpu: FASTRNN_TUNE=0 turns tuning off", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    for dtype in dtypes:
        for cell in cells:
            for T, B, H in GPU_SHAPES:
                layer = getattr(fastrnn, TABLE[cell].torch_layer)(H, H).to("cuda", dtype)
                layer.backend = "triton"
                x = torch.randn(T, B, H, device="cuda", dtype=dtype, requires_grad=True)
                layer(x)[0].sum().backward()
                torch.cuda.synchronize()
    out.write(timings_table(tuning.timings()))
    print(f"fastrnn.precompile --gpu: {len(tuning.timings())} plans tuned or read in "
          f"{time.perf_counter() - t0:.1f} s; cache: {tuning.path()}", file=sys.stderr)
    return 0


def timings_table(timings):
    """{key: {plan: ms}} -> text, a block per launch, the fastest marked."""
    lines = []
    for key, ms in timings.items():
        lines.append(key)
        best = min(ms, key=ms.get) if ms else None
        lines += [f"  {name:<22} {t:9.4f} ms{'  <- kept' if name == best else ''}"
                  for name, t in sorted(ms.items(), key=lambda kv: kv[1])]
        if not ms:
            lines.append("  one tiling fits at once: nothing to time")
    return "\n".join(lines) + "\n"


def _bar(done, total, label, t0, out):
    width = 24
    fill = width * done // total
    out.write(f"\r[{'#' * fill}{'.' * (width - fill)}] {done}/{total} {label:<40.40} "
              f"{time.perf_counter() - t0:5.1f} s")
    out.flush()


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m fastrnn.precompile", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtypes", nargs="+", choices=DTYPES + GPU_DTYPES[::2],
                    help="default: float32 (--gpu: bfloat16 float32)")
    ap.add_argument("--cells", nargs="+", choices=CELLS,
                    help="default: all (--gpu: the sequence cells)")
    ap.add_argument("--gpu", action="store_true",
                    help="tune the Triton plans on this CUDA device instead (see above)")
    args = ap.parse_args(argv)
    if args.gpu:
        cells = args.cells or list(SEQUENCE)
        wrong = set(args.dtypes or ()) - set(GPU_DTYPES) | set(cells) - set(SEQUENCE)
        if wrong:
            ap.error(f"--gpu tunes the sequence cells in {', '.join(GPU_DTYPES)}; not "
                     f"{', '.join(sorted(wrong))}")
        return _tune(cells, args.dtypes or list(GPU_DTYPES[:2]), sys.stdout)
    args.cells = args.cells or list(CELLS)
    args.dtypes = args.dtypes or ["float32"]
    wrong = set(args.dtypes) - set(DTYPES)
    if wrong:
        ap.error(f"the Numba kernels compile for {', '.join(DTYPES)}; not "
                 f"{', '.join(sorted(wrong))} (those are --gpu's)")
    from . import backends
    numba_backend = backends.REGISTRY["numba"]
    if not numba_backend.is_available():
        print("fastrnn.precompile: numba is not installed; nothing to compile", file=sys.stderr)
        return 1
    logging.getLogger("fastrnn.compile").setLevel(logging.ERROR)   # the bar says it
    kernels = numba_backend.kernels()
    jobs = []
    for dtype in args.dtypes:
        dt = getattr(torch, dtype)
        for cell in args.cells:
            calls = _tree_calls(dt) if cell == "tree" else _layer_calls(cell, dt)
            jobs += [(f"{cell} {dtype} {label}", call) for label, call in calls]
    out, t0 = sys.stderr, time.perf_counter()
    for i, (label, call) in enumerate(jobs):
        _bar(i, len(jobs), label, t0, out)
        call()
    _bar(len(jobs), len(jobs), "done", t0, out)
    out.write("\n")
    where = kernels.lstm.lstm_fwd_kernel._cache.cache_path
    print(f"fastrnn.precompile: {len(jobs)} calls compiled or loaded in "
          f"{time.perf_counter() - t0:.1f} s; cache: {where}", file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
