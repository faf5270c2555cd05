"""Elman RNN (tanh) cases: fastrnn (numba) against torch.nn.RNN on the CPU."""
SHAPES = [(100, 8, 32), (100, 32, 128), (256, 64, 512)]     # (T, B, I=H)
CASES = [f"rnn_tanh:f32:{mode}:{T}:{B}:{H}" for T, B, H in SHAPES for mode in ("fwd", "fwdbwd")]
