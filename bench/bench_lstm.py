"""LSTM cases: fastrnn (numba) against torch.nn.LSTM.

Plain float32 LSTM is torch's strongest CPU path (oneDNN's fused kernel); float64,
proj_size and PackedSequence input leave oneDNN for the per-step path.
"""
from .bench_rnn import SHAPES

CASES = [f"lstm:f32:fwdbwd:{T}:{B}:{H}" for T, B, H in SHAPES] + \
        [f"lstm:{v}:fwdbwd:100:32:128" for v in ("f64", "proj", "packed")]
