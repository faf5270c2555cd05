"""What a benchmark case is, and how one is built: modules, inputs, the timed step.

A case is a string ``cell:variant:mode:T:B:H`` (I = H), so it can be handed to a
child process.

- ``cell``: ``rnn_tanh``, ``gru`` or ``lstm``.
- ``variant``: ``f32``, ``f64``, ``bf16``, ``f16`` (the dtype), ``proj`` (LSTM
  with proj_size = H/2, float32) or ``packed`` (PackedSequence input, float32,
  lengths drawn in [T/2, T]).
- ``mode``: ``fwd`` (no grad), ``fwdbwd`` (forward, loss over output and final
  states, backward), or ``step``: ONE time step with the state carried in, no
  grad, as in autoregressive decoding; it runs the cell module (``RNNCell``,
  ``GRUCell``, ``LSTMCell``) or, for ``proj`` (torch has no projected cell), the
  layer on a length-1 input. T is ignored by ``step``.

Providers: ``fastrnn-numba``, ``fastrnn-triton``, ``torch`` (torch.nn: oneDNN or
ATen on CPU, cuDNN on GPU) and ``reference`` (fastrnn's plain-PyTorch oracle).
"""
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from fastrnn.cells import CELLS, SEQUENCE

# bench names per cell of fastrnn.cells: the RNN is timed with tanh, and every report
# and results file since the first says so in its case names
_BENCH_NAME = {"rnn": "rnn_tanh"}
_OF = {_BENCH_NAME.get(c, c): CELLS[c] for c in SEQUENCE}
GATES = {b: c.gates for b, c in _OF.items()}
LAYER = {b: c.torch_layer for b, c in _OF.items()}
CELL = {b: c.torch_cell for b, c in _OF.items()}
DTYPES = {"f32": torch.float32, "f64": torch.float64, "bf16": torch.bfloat16,
          "f16": torch.float16, "proj": torch.float32, "packed": torch.float32}
BACKEND = {"fastrnn-numba": "numba", "fastrnn-triton": "triton", "reference": "reference"}


def parse(case):
    cell, variant, mode, T, B, H = case.split(":")
    return cell, variant, mode, int(T), int(B), int(H)


def name(cell, variant, mode, T, B, H):
    return f"{cell}:{variant}:{mode}:{T}:{B}:{H}"


def flops(case):
    """GEMM work: forward = input GEMM + step GEMMs (+ projection); backward twice that."""
    cell, variant, mode, T, B, H = parse(case)
    P = H // 2 if variant == "proj" else H
    steps = 1 if mode == "step" else T
    fwd = 2 * steps * B * GATES[cell] * H * (H + P) + \
        (2 * steps * B * H * P if variant == "proj" else 0)
    return 3 * fwd if mode == "fwdbwd" else fwd


def unavailable(provider, device):
    """Why ``provider`` cannot run on ``device`` here, or None when it can."""
    if provider == "torch":
        return None
    from fastrnn.backends import REGISTRY
    backend = REGISTRY[BACKEND[provider]]
    ok, reason = backend.supports("lstm", torch.empty(0, device=device))
    return None if ok else reason


def modules(case, providers, device="cpu"):
    """{provider: module} with identical weights (torch's init, seed 0)."""
    import fastrnn
    cell, variant, mode, _, _, H = parse(case)
    kwargs = dict(dtype=DTYPES[variant], device=device)
    kind = CELL[cell] if mode == "step" and variant != "proj" else LAYER[cell]
    if variant == "proj":
        kwargs["proj_size"] = H // 2
    torch.manual_seed(0)
    ref = getattr(torch.nn, kind)(H, H, **kwargs)
    mods = {}
    for p in providers:
        if p == "torch":
            mods[p] = ref
            continue
        m = getattr(fastrnn, kind)(H, H, **kwargs)
        m.load_state_dict(ref.state_dict())
        m.backend = BACKEND[p]
        mods[p] = m
    return mods


def make_step(module, case, device="cpu"):
    """A zero-argument callable running one forward (and backward) of ``module``."""
    cell, variant, mode, T, B, H = parse(case)
    g = torch.Generator().manual_seed(0)
    dtype = DTYPES[variant]
    P = H // 2 if variant == "proj" else H
    if mode == "step":
        return _decode_step(module, cell, variant, B, H, P, dtype, device, g)
    x = torch.randn(T, B, H, generator=g).to(device=device, dtype=dtype)
    x.requires_grad_(mode == "fwdbwd")
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
        loss = out.float().sum()
        for s in (state if isinstance(state, tuple) else (state,)):
            loss = loss + s.float().sum()
        loss.backward()
    return step


def _decode_step(module, cell, variant, B, H, P, dtype, device, g):
    new = lambda *s: torch.randn(*s, generator=g).to(device=device, dtype=dtype)  # noqa: E731
    x = new(B, H)
    if variant == "proj":                       # the layer, one step, (h, c) carried
        state = (new(1, B, P), new(1, B, H))
        x = x.unsqueeze(0)
    else:
        state = (new(B, H), new(B, H)) if cell == "lstm" else new(B, H)

    def step():
        with torch.no_grad():
            module(x, state)
    return step
