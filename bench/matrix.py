"""Which cases a run times: the standard matrix, the extra cases of the targets, the sweeps.

One list per section, built from the cells, so adding a cell to ``CELLS`` puts
it in every table, sweep and plot.
"""
from .cases import name

SHAPES = {"small": (100, 8, 32), "middle": (100, 32, 128), "large": (256, 64, 512)}  # T, B, I=H
CELLS = [("rnn_tanh", "f32"), ("gru", "f32"), ("lstm", "f32"), ("lstm", "proj")]
MODES = ["fwd", "fwdbwd", "step"]
# where torch.nn.LSTM leaves oneDNN for its per-step path (a 2x target there)
EXTRAS = [("lstm", "f64"), ("lstm", "packed")]
# The project's CPU targets, checked in the report's "Targets" table:
# (case, quantity, bound), quantity "speedup" (torch time / fastrnn time, at least
# bound) or "gemm%" (achieved GFLOP/s as % of the run's GEMM rate, at least bound).
TARGETS = [("rnn_tanh:f32:fwdbwd:100:8:32", "speedup", 5.0),
           ("rnn_tanh:f32:fwdbwd:100:32:128", "speedup", 2.0),
           ("rnn_tanh:f32:fwdbwd:256:64:512", "speedup", 1.0),
           ("gru:f32:fwdbwd:100:8:32", "speedup", 5.0),
           ("gru:f32:fwdbwd:100:32:128", "speedup", 2.0),
           ("gru:f32:fwdbwd:256:64:512", "speedup", 1.2),
           ("lstm:f64:fwdbwd:100:32:128", "speedup", 2.5),
           ("lstm:packed:fwdbwd:100:32:128", "speedup", 2.0)] + \
    [(f"lstm:f32:{m}:{T}:{B}:{H}", "speedup", 1.05 if k == "large" else 1.1)
     for k, (T, B, H) in SHAPES.items() for m in ("fwd", "fwdbwd")] + \
    [(f"lstm:proj:fwdbwd:{T}:{B}:{H}", "speedup", 2.0) for T, B, H in SHAPES.values()] + \
    [(f"{c}:{v}:step:{T}:{B}:{H}", "speedup", 1.0) for c, v in CELLS
     for T, B, H in SHAPES.values()] + \
    [(f"{c}:{v}:fwdbwd:256:64:512", "gemm%", 75.0) for c, v in CELLS]
# issue 35's targets outside the matrix (report.targets): one thread's step products at
# least this share of the per-core FMA peak and at least torch.mm's rate; the char-LM
# training step this much faster than torch.nn's; all threads at most this share of one
# thread's time at batch 1 (phases.THREADS_SHAPE)
PRODUCTS_PEAK_PCT = 85.0
CHARLM_SPEEDUP = 1.15
THREADS_RATIO = 0.6
# The large LSTM's input-projection GEMM, [T*B, H] @ [H, 4H]: torch.mm's rate on it,
# beside the square rate, shows how much of the square rate a layer at that shape
# can reach at all (the report's header).
LAYER_GEMM = (256 * 64, 512, 4 * 512)
COLD_START_TARGET_S = 1.0   # fresh process to first forward, warm cache, after import torch
EMPTY_CACHE_TARGET_S = 8.0  # LSTM fwd+bwd, empty Numba cache, after import torch
SWEEPS = {  # around the middle shape; forward+backward
    "T": [16, 64, 256, 1024, 4096],
    "H": [32, 64, 128, 256, 512, 1024],
    "B": [1, 4, 16, 64, 256],
}
QUICK_SWEEPS = {"T": [16, 400], "H": [32, 256], "B": [1, 128]}
QUICK_SHAPES = ["small", "middle"]


def standard(shapes=None, cells=None, modes=None):
    shapes = shapes or list(SHAPES)
    out = []
    for cell, variant in CELLS:
        if cells and cell not in cells and f"{cell}:{variant}" not in cells:
            continue
        for s in shapes:
            T, B, H = SHAPES[s] if s in SHAPES else map(int, s.split(","))
            out += [name(cell, variant, m, T, B, H) for m in (modes or MODES)]
    return out


def extras(cells=None):
    T, B, H = SHAPES["middle"]
    return [name(c, v, "fwdbwd", T, B, H) for c, v in EXTRAS if not cells or c in cells]


def sweeps(quick=False, cells=None):
    """[(axis, case)] for every sweep point of every cell (a case may sit on two axes)."""
    T0, B0, H0 = SHAPES["middle"]
    out = []
    for cell, variant in CELLS:
        if cells and cell not in cells and f"{cell}:{variant}" not in cells:
            continue
        for axis, values in (QUICK_SWEEPS if quick else SWEEPS).items():
            for v in values:
                T, B, H = (v if axis == "T" else T0), (v if axis == "B" else B0), \
                    (v if axis == "H" else H0)
                out.append((axis, name(cell, variant, "fwdbwd", T, B, H)))
    return out
