"""What a benchmark case is, and how one is built: modules, inputs, the timed step.

A case is a string ``cell:variant:mode:T:B:H`` (I = H), so it can be handed to a
child process. ``variant`` is ``f32`` (plain float32), ``f64``, ``proj`` (LSTM
with proj_size = H/2) or ``packed`` (PackedSequence input, lengths in [T/2, T]).
Each cell's file (bench_rnn.py, bench_gru.py, bench_lstm.py) lists its cases.
"""
import torch
from torch.nn.utils.rnn import pack_padded_sequence

GATES = {"rnn_tanh": 1, "gru": 3, "lstm": 4}
TORCH = {"rnn_tanh": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}
FASTRNN = {"rnn_tanh": "RNN", "gru": "GRU", "lstm": "LSTM"}


def parse(case):
    cell, variant, mode, T, B, H = case.split(":")
    return cell, variant, mode, int(T), int(B), int(H)


def flops(case):
    """GEMM work: forward = input GEMM + step GEMMs (+ projection); backward twice that."""
    cell, variant, mode, T, B, H = parse(case)
    P = H // 2 if variant == "proj" else H
    fwd = 2 * T * B * GATES[cell] * H * (H + P) + (2 * T * B * H * P if variant == "proj" else 0)
    return fwd if mode == "fwd" else 3 * fwd


def modules(case, fastrnn=None):
    """{provider: module} with identical weights; fastrnn only when the package is given."""
    cell, variant, *_ , H = parse(case)
    kwargs = dict(dtype=torch.float64 if variant == "f64" else torch.float32)
    if variant == "proj":
        kwargs["proj_size"] = H // 2
    torch.manual_seed(0)
    ref = TORCH[cell](H, H, **kwargs)
    mods = {"torch": ref}
    if fastrnn is not None:
        ours = getattr(fastrnn, FASTRNN[cell])(H, H, **kwargs)
        ours.load_state_dict(ref.state_dict())
        ours.backend = "numba"
        mods["fastrnn-numba"] = ours
    return mods


def make_step(module, case):
    """A zero-argument callable running one forward (and backward) of ``module``."""
    cell, variant, mode, T, B, H = parse(case)
    g = torch.Generator().manual_seed(0)
    dtype = torch.float64 if variant == "f64" else torch.float32
    x = torch.randn(T, B, H, generator=g, dtype=dtype).requires_grad_(mode == "fwdbwd")
    lengths = torch.randint(T // 2, T + 1, (B,), generator=g) if variant == "packed" else None

    def run():
        inp = pack_padded_sequence(x, lengths, enforce_sorted=False) if lengths is not None else x
        out, state = module(inp)
        return out.data if lengths is not None else out, state

    if mode == "fwd":
        def step():
            with torch.no_grad():
                run()
        return step

    def step():
        out, state = run()
        loss = out.sum()
        for s in (state if isinstance(state, tuple) else (state,)):
            loss = loss + s.sum()
        loss.backward()
    return step
