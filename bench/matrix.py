"""Which cases a run times: the standard matrix, the issue-target extras, the sweeps.

One list per section, built from the cells, so adding a cell to ``CELLS`` puts
it in every table, sweep and plot.
"""
from .cases import name

SHAPES = {"small": (100, 8, 32), "middle": (100, 32, 128), "large": (256, 64, 512)}  # T, B, I=H
CELLS = [("rnn_tanh", "f32"), ("gru", "f32"), ("lstm", "f32"), ("lstm", "proj")]
MODES = ["fwd", "fwdbwd", "step"]
# where torch.nn.LSTM leaves oneDNN for its per-step path (issue 3's 2x target)
EXTRAS = [("lstm", "f64"), ("lstm", "packed")]
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
