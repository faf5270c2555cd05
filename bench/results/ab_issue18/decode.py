import sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
sys.path.insert(0, sys.argv[1])
import time, statistics, torch, fastrnn
def med(fn, n):
    fn(); fn(); ts=[]
    for _ in range(n):
        t=time.perf_counter(); fn(); ts.append(time.perf_counter()-t)
    return statistics.median(ts)*1e6
with torch.no_grad():
    g = fastrnn.GRU(32, 32); g.backend = "numba"; xs = torch.randn(1, 1, 32)
    l = fastrnn.LSTM(32, 32, num_layers=2); l.backend = "numba"
    c = fastrnn.LSTMCell(32, 32); c.backend = "numba"; x = torch.randn(1, 32); h = (torch.zeros(1, 32),) * 2
    r = [med(lambda: g(xs), 5000), med(lambda: l(xs), 5000), med(lambda: c(x, h), 5000)]
print(" | ".join(f"{k} {v:.1f} us" for k, v in zip(["gru T=1", "lstm 2 layers T=1", "lstm cell"], r)))
