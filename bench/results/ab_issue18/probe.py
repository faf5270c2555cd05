"""Dispatch and layer timings of one fastrnn tree (argv[1]), in a fresh process."""
import sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__.lower()
                    and "editable" not in repr(f).lower()]
sys.path.insert(0, sys.argv[1])
import time, statistics, random
import torch
import fastrnn
from fastrnn import functional, backends
assert fastrnn.__file__.startswith(sys.argv[1]), fastrnn.__file__
torch.manual_seed(0)

def med(fn, n):
    fn(); fn()
    ts = []
    for _ in range(n):
        t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
    return statistics.median(ts)

out = []
with torch.no_grad():
    c = fastrnn.LSTMCell(32, 32); c.backend = "numba"; x = torch.randn(1, 32); h = (torch.zeros(1, 32),) * 2
    assert backends.select("lstm", x, "numba").name == "numba"
    out.append(("lstm cell B=1", med(lambda: c(x, h), 3000) * 1e6, "us"))
    g = fastrnn.GRU(32, 32); g.backend = "numba"; xs = torch.randn(1, 1, 32)
    out.append(("gru layer T=1 B=1", med(lambda: g(xs), 3000) * 1e6, "us"))
    w = [p for p in g.parameters()]
    st = functional.stepper("gru", w, x, backend="numba"); hh = torch.zeros(1, 32)
    out.append(("gru stepper B=1", med(lambda: st(x, hh), 3000) * 1e6, "us"))
    l = fastrnn.LSTM(32, 32); l.backend = "numba"; xl = torch.randn(100, 8, 32)
    out.append(("lstm (100,8,32) fwd nograd", med(lambda: l(xl), 300) * 1e6, "us"))

def fb(m, x):
    def run():
        o = m(x)[0]; o.sum().backward()
    return run
r = fastrnn.RNN(32, 32); r.backend = "numba"
out.append(("rnn (100,8,32) fwdbwd", med(fb(r, torch.randn(100, 8, 32, requires_grad=True)), 300) * 1e6, "us"))
g = fastrnn.GRU(128, 128); g.backend = "numba"
out.append(("gru (100,32,128) fwdbwd", med(fb(g, torch.randn(100, 32, 128, requires_grad=True)), 40) * 1e3, "ms"))
l = fastrnn.LSTM(128, 128); l.backend = "numba"
out.append(("lstm (100,32,128) fwdbwd", med(fb(l, torch.randn(100, 32, 128, requires_grad=True)), 40) * 1e3, "ms"))
from fastrnn.models import ChildSumTreeLSTM
rng = random.Random(0); parents = []
for _ in range(32):
    base = len(parents); n = 30
    parents += [-1] + [base + rng.randrange(i) for i in range(1, n)]
forest = fastrnn.Forest(parents)
t = ChildSumTreeLSTM(64, 64); t.backend = "numba"; xt = torch.randn(forest.n, 64)
def tree():
    h, c = t(xt, forest); h.sum().backward()
out.append(("child-sum 32 trees x 30 nodes fwdbwd", med(tree, 50) * 1e3, "ms"))
lr = fastrnn.LSTM(32, 32); lr.backend = "reference"
out.append(("reference lstm (20,8,32) fwdbwd", med(fb(lr, torch.randn(20, 8, 32, requires_grad=True)), 50) * 1e3, "ms"))
print(" | ".join(f"{k} {v:.2f} {u}" for k, v, u in out))
