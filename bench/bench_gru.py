"""GRU cases: fastrnn (numba) against torch.nn.GRU (torch's generic per-step path on CPU)."""
from .bench_rnn import SHAPES

CASES = [f"gru:f32:fwdbwd:{T}:{B}:{H}" for T, B, H in SHAPES]
