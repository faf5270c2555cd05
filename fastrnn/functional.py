"""Functional API: checks, the layer/direction loop, the input GEMM, the Functions.

All functions here are time-major and take padded input plus optional per-row
``lengths`` (the modules in ``fastrnn.nn`` turn batch_first, unbatched and
PackedSequence input into this form). ``weights`` is torch's flat weight list,
in torch's order: for every layer, for every direction,
``w_ih [G, I_l], w_hh [G, H], (b_ih [G], b_hh [G] if bias)``.
"""
import functools
import sys

import torch
import torch.nn.functional as F

from . import autograd, backends, ops
from .cells import CELLS, b_hh_input_mask
from .autograd import StateGradients
from .gemm_layout import project


def _device_type(t):
    # t.device.type builds a device object (~0.4 us, paid per decoding step); is_cpu does not
    return "cpu" if t.is_cpu else t.device.type


def eager_under_compile(fn, reason):
    """``fn`` run eagerly under torch.compile, a graph break on each side (with
    fullgraph=True, Dynamo's error, quoting ``reason``): for what cannot be one graph
    node, as the tree nets. torch.compiler.disable is applied only once Dynamo is loaded:
    importing it (it also imports triton) at ``import fastrnn`` would cost every user
    ~1 s of start-up."""
    disabled = []

    @functools.wraps(fn)
    def run(*args, **kwargs):
        if "torch._dynamo" not in sys.modules:
            return fn(*args, **kwargs)
        if not disabled:
            disabled.append(torch.compiler.disable(fn, reason=reason))
        return disabled[0](*args, **kwargs)
    return run


def check_parameter_device(input, weight):
    """torch.nn's error for an input on another device than the module's parameters."""
    if weight.device != input.device:
        raise RuntimeError("Input and parameter tensors are not at the same device, found "
                           f"input tensor at {input.device} and parameter tensor at "
                           f"{weight.device}")


def _compiling(x):
    """True while torch.compile traces the call (and no exporter records it, which gets
    plain ops as before): the launchers are then reached through fastrnn.ops."""
    return torch.compiler.is_compiling() and not backends.recording(x)


def _autocast_on(t):
    """Whether torch.autocast is on for ``t``'s device (never for a device autocast does
    not know, such as meta, where asking raises)."""
    device = _device_type(t)
    return torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device)


# The dtype a CUDA call computes in and returns under torch.autocast("cuda"), as torch's:
# its cuDNN layers (RNN, GRU, LSTM) run in float16 whatever the autocast dtype
# (aten/src/ATen/cudnn/AutocastRNN.cpp casts input and weights to half); its cells
# (lstm_cell, gru_cell, rnn_*_cell) are on autocast's lower-precision list: the autocast
# dtype.
def _layer_autocast_dtype():
    return torch.float16


def _cell_autocast_dtype():
    return torch.get_autocast_dtype("cuda")


def _entry_point(cuda_autocast_dtype):
    """How a functional entry point runs under torch's global modes (a decorator).

    - autocast: on the CPU the layer computes in its weights' dtype, with autocast off
      inside and the input and states cast to that dtype (what torch's own GRU does under
      CPU autocast; its LSTM fails there and its RNN returns bfloat16). Otherwise the
      input projection would come out in bfloat16 beside float32 states. On CUDA it
      computes in ``cuda_autocast_dtype()``, weights included, and returns that dtype, as
      torch.nn does (float16 for the layers, the autocast dtype for the cells; the
      gpu-marked tests compare the dtype with torch.nn's).
    - torch.compile: the call is traced; each layer and direction is then one custom op
      (``_compiling``, fastrnn.ops).
    """
    def decorate(fn):
        @functools.wraps(fn)
        def call(input, hx, weights, *args, **kwargs):
            if not isinstance(input, torch.Tensor) or not _autocast_on(input):
                return fn(input, hx, weights, *args, **kwargs)
            device = _device_type(input)
            dtype = cuda_autocast_dtype() if device == "cuda" else weights[0].dtype

            def cast(t):
                return t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() \
                    else t
            hx = tuple(map(cast, hx)) if isinstance(hx, (tuple, list)) else cast(hx)
            if device == "cuda":           # the weights too, differentiably
                weights = [cast(w) for w in weights]
            with torch.autocast(device, enabled=False):
                return fn(cast(input), hx, weights, *args, **kwargs)
        return call
    return decorate


# ------------------------------------------------------------------ checks
def _check(input, hx, weights, lengths, *, num_layers, bidirectional, bias, proj=False,
           input_bias=None):
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"input must be a Tensor, got {type(input).__name__}")
    if input.dim() != 3:
        raise ValueError(f"input must be 3-D [T, B, I], got {input.dim()}-D")
    T, B, I = input.shape
    if T == 0:
        raise ValueError("input has zero time steps; sequences must have length >= 1")
    if not input.is_floating_point():
        raise TypeError(f"input must be a floating-point tensor, got {input.dtype}")
    D = 2 if bidirectional else 1
    per = (4 if bias else 2) + (1 if proj else 0)
    if len(weights) != num_layers * D * per:
        raise ValueError(f"expected {num_layers * D * per} weight tensors, got {len(weights)}")
    if weights[0].shape[1] != I:
        raise ValueError(f"input has {I} features but weight_ih_l0 expects {weights[0].shape[1]}")
    for w in weights:
        if w.dtype != input.dtype or w.device != input.device:
            raise TypeError(f"weights ({w.dtype}, {w.device}) must match input "
                            f"({input.dtype}, {input.device})")
    for h in hx:
        if h.dim() != 3 or h.shape[:2] != (num_layers * D, B):
            raise ValueError(f"initial state must be [{num_layers * D}, {B}, *], got {tuple(h.shape)}")
        if h.dtype != input.dtype or h.device != input.device:
            raise TypeError(f"initial state ({h.dtype}, {h.device}) must match input "
                            f"({input.dtype}, {input.device})")
    if hx[0].shape[2] != weights[1].shape[1]:
        raise ValueError(f"hidden state has {hx[0].shape[2]} features but weight_hh_l0 "
                         f"expects {weights[1].shape[1]}")
    if input_bias is not None:
        G = weights[0].shape[0]
        if input_bias.shape != (D, B, G):
            raise ValueError(f"input_bias must be [{D}, {B}, {G}], got {tuple(input_bias.shape)}")
        if input_bias.dtype != input.dtype or input_bias.device != input.device:
            raise TypeError(f"input_bias ({input_bias.dtype}, {input_bias.device}) must match "
                            f"input ({input.dtype}, {input.device})")
    if lengths is not None:
        if lengths.shape != (B,) or lengths.dtype != torch.int64 or lengths.device.type != "cpu":
            raise ValueError(f"lengths must be a CPU int64 tensor of shape ({B},)")
        if B and _compiling(input):          # a graph checks its data when it runs
            torch._assert_async(((lengths >= 1) & (lengths <= T)).all(),
                                "lengths must lie in [1, T]")
        elif B and (lengths.min() < 1 or lengths.max() > T):
            raise ValueError(f"lengths must lie in [1, {T}]")


def _needs_grad(*tensors):
    # whether autograd will record this call (None entries are absent weights)
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


# Inference forms the input projection at most this many bytes at a time, so a layer's
# peak is its output plus one chunk rather than [T, B, G] (4x the output for an LSTM).
# LSTM (256, 64, 512) forward under no_grad, peak RSS rise: 60 MiB in 16 MiB chunks,
# 108 in 32, 148 in 64, 164 unchunked (torch: 68-72). Time, alternated in one process:
# 16 MiB chunks 2-8% slower than one (near this machine's noise), 4 MiB 13-35%.
INFERENCE_CHUNK_BYTES = 16 << 20


def _infer(launch, backend, x, w_ih, b, extra, states, lengths, reverse, **opts):
    """One layer and direction without autograd: ``launch`` (a ``<cell>_fwd`` launcher,
    save=False) over time chunks of the input projection, each starting from the
    final states of the chunk before it in processing order (from the end for the
    reverse direction). Per-row lengths become each chunk's own, 0 to its length: a
    row that has ended, or reversed has not begun, passes its state through.
    ``states``: {"h0": ..., ("c0": ...)}; ``extra``: see ``_xproj``. Returns (out, final
    states...)."""
    T, B = x.shape[:2]
    steps = max(1, INFERENCE_CHUNK_BYTES // max(1, B * w_ih.shape[0] * x.element_size()))
    starts = range(0, T, steps)
    out = None
    for t0 in (reversed(starts) if reverse else starts):
        t1 = min(T, t0 + steps)
        lens = None if lengths is None else (lengths - t0).clamp(0, t1 - t0)
        res = launch(xproj=_xproj(x[t0:t1], w_ih, b, extra, backend), **states, lengths=lens,
                     reverse=reverse, save=False, **opts)[:1 + len(states)]
        if steps >= T:
            return res
        if out is None:
            out = res[0].new_empty((T, *res[0].shape[1:]))
        out[t0:t1] = res[0]
        states = dict(zip(states, res[1:]))
        del res                             # before the next chunk's projection
    return (out, *states.values())


def _xproj(x, w_ih, b, extra=None, backend=None):
    """The input projection of all steps, plus ``extra`` [B, G] (the ``input_bias`` of
    the first layer: an input part that is the same at every step, e.g. a decoder's
    context, projected once per sequence instead of once per step); the GEMM on
    ``backend``'s own where it has one (fastrnn/gemm_layout.py)."""
    xproj = project(x, w_ih, b, backend)
    return xproj if extra is None else xproj + extra


def _recompute(x, w_ih, b, extra):
    # lets a Function drop xproj after forward (see autograd.py, double backward)
    return lambda: _xproj(x, w_ih, b, extra)


# ------------------------------------------------------- layer/direction loop
def _stack(input, states, weights, layer_fn, *, num_layers, bidirectional, dropout, training,
           input_bias=None):
    """Run every layer and direction; ``layer_fn(x, states_of_idx, w, reverse, extra)``,
    ``extra`` being the first layer's ``input_bias`` of that direction (else None).

    Returns (output of the last layer [T, B, D*P], list of final-state tuples
    in torch's (layer, direction) order).
    """
    D = 2 if bidirectional else 1
    per = len(weights) // (num_layers * D)
    x, finals = input, []
    for layer in range(num_layers):
        outs = []
        for d in range(D):
            idx = layer * D + d
            extra = input_bias[d] if layer == 0 and input_bias is not None else None
            if StateGradients.active is not None:    # fastrnn.diagnostics is recording
                StateGradients.active.where.update(layer=layer, direction=d)
            out, final = layer_fn(x, [s[idx] for s in states],
                                  weights[idx * per:(idx + 1) * per], reverse=d == 1, extra=extra)
            outs.append(out)
            finals.append(final)
        x = outs[0] if D == 1 else torch.cat(outs, dim=2)
        if dropout > 0 and training and layer < num_layers - 1:
            x = F.dropout(x, p=dropout, training=True)
    return x, finals


def _stack_states(finals):
    # [L*D, B, *]; one layer and direction (the common case) is a view, not a copy
    return finals[0].unsqueeze(0) if len(finals) == 1 else torch.stack(finals)


# ------------------------------------------------------------- one layer runner
def _weights(cell, w, bias, proj, recording=False):
    """torch's weights of one layer and direction -> (w_ih, b: what enters the input
    projection, {recurrent launcher argument: tensor or None})."""
    w_ih, w_hh = w[0], w[1]
    rec = {"w_hh": w_hh}
    b = None
    if bias and cell.b_hn:
        # the other gates' parts of b_hh are pre-summed; b_hn stays inside r * (.). A
        # tracer records plain ops instead of the GRUBias Function.
        mask = b_hh_input_mask(cell.gates, w_hh.shape[1], w[3].dtype, w[3].device)
        b, rec["b_hn"] = (torch.addcmul(w[2], w[3], mask), w[3][-w_hh.shape[1]:]) \
            if recording else autograd.GRUBias.apply(w[2], w[3], mask)
    elif bias:
        b = w[2] + w[3]                   # both biases enter before the activations
    if cell.b_hn and not bias:
        rec["b_hn"] = None
    if cell.projection:
        rec["w_hr"] = w[-1] if proj else None
    return w_ih, b, rec


def _sequence(name, input, hx, weights, num_layers, bias, dropout, training, bidirectional,
              lengths, input_bias, backend, proj_size=0, **opts):
    """Every layer and direction of cell ``name`` (fastrnn/cells.py) over ``input``;
    ``hx`` the tuple of initial states, ``opts`` the cell's options. Per layer and
    direction: a length-1 input without gradients is one fused step (decoding); other
    calls without gradients run the forward launcher over chunks (``_infer``); calls
    with gradients go through the cell's autograd Function; while torch traces or
    exports, the reference's forward launcher runs as plain differentiable ops.
    -> (output, tuple of final states [L*D, B, *])."""
    cell = CELLS[name]
    _check(input, list(hx), weights, lengths, num_layers=num_layers,
           bidirectional=bidirectional, bias=bias, proj=proj_size > 0, input_bias=input_bias)
    be = backends.select(name, input, backend)
    named = [s + "0" for s in cell.states]               # h0, c0: the launchers' names

    def layer(x, states, w, reverse, extra):
        if _compiling(x):                        # one custom op node (fastrnn.ops)
            w_ih, b, rec = _weights(cell, w, bias, proj_size > 0)
            res = getattr(ops, f"{name}_fwd")(_xproj(x, w_ih, b, extra), *states,
                                              *rec.values(), lengths, reverse,
                                              *opts.values(), be.name)
            return res[0], tuple(res[1:1 + len(states)])
        if len(x) == 1 and lengths is None and extra is None:
            proj = {"w_hr": w[-1] if proj_size > 0 else None} if cell.projection else {}
            new = _step(name, be, x[0], states, w, bias, **proj, **opts)
            if new is not None:
                return new[0].unsqueeze(0), new
        recording = backends.recording(x)
        w_ih, b, rec = _weights(cell, w, bias, proj_size > 0, recording)
        launch = getattr(be.kernels(), f"{name}_fwd")
        if not recording and not _needs_grad(x, *states, *w, extra):
            res = _infer(launch, be, x, w_ih, b, extra, dict(zip(named, states)), lengths,
                         reverse, **rec, **opts)
            return res[0], res[1:]
        xproj = _xproj(x, w_ih, b, extra, be)            # one GEMM for all steps
        if recording:
            res = launch(xproj=xproj, **dict(zip(named, states)), **rec, lengths=lengths,
                         reverse=reverse, **opts)
        else:
            res = getattr(autograd, cell.function).apply(
                xproj, *states, *rec.values(), lengths, reverse, *opts.values(), be,
                _recompute(x, w_ih, b, extra))
        return res[0], tuple(res[1:1 + len(states)])

    out, finals = _stack(input, hx, weights, layer, num_layers=num_layers,
                         bidirectional=bidirectional, dropout=dropout, training=training,
                         input_bias=input_bias)
    return out, tuple([_stack_states([f[k] for f in finals]) for k in range(len(hx))])


@_entry_point(_layer_autocast_dtype)
def rnn(input, hx, weights, *, nonlinearity="tanh", num_layers=1, bias=True, dropout=0.0,
        training=False, bidirectional=False, lengths=None, input_bias=None, backend=None):
    """Elman RNN, h_t = f(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh), f = tanh or relu.

    Args:
        input:   [T, B, I] time-major, padded past each row's length.
        hx:      [L*D, B, H] initial states (D = 2 if bidirectional).
        weights: torch's flat list (see module docstring).
        lengths: [B] CPU int64 per-row lengths in [1, T], or None for all T.
        input_bias: [D, B, G] or None: added to the first layer's input projection at
                 every step (an input part that does not change over time, e.g. a
                 decoder's context: project it once, not at every step).
        backend: "numba", "triton", "reference" or None (FASTRNN_BACKEND, then automatic).
    Returns:
        output [T, B, D*H] (zero past each row's length), h_n [L*D, B, H].
    Raises:
        ValueError / TypeError on bad shapes, dtypes, devices or options, before
        any kernel runs; RuntimeError if an explicitly requested backend cannot run.
    """
    _nonlinearity(nonlinearity)
    out, (h,) = _sequence("rnn", input, (hx,), weights, num_layers, bias, dropout, training,
                          bidirectional, lengths, input_bias, backend, nonlinearity=nonlinearity)
    return out, h


@_entry_point(_layer_autocast_dtype)
def gru(input, hx, weights, *, num_layers=1, bias=True, dropout=0.0, training=False,
        bidirectional=False, lengths=None, input_bias=None, backend=None):
    """GRU (torch's gate order r, z, n; b_hn inside the r-product).

    Same arguments, shapes and errors as :func:`rnn`; weights have 3H rows.
    Returns output [T, B, D*H], h_n [L*D, B, H].
    """
    out, (h,) = _sequence("gru", input, (hx,), weights, num_layers, bias, dropout, training,
                          bidirectional, lengths, input_bias, backend)
    return out, h


@_entry_point(_layer_autocast_dtype)
def lstm(input, hx, weights, *, num_layers=1, bias=True, dropout=0.0, training=False,
         bidirectional=False, proj_size=0, lengths=None, input_bias=None, backend=None):
    """LSTM (torch's gate order i, f, g, o), optionally with a projection (proj_size > 0).

    hx is (h0 [L*D, B, P], c0 [L*D, B, H]) with P = proj_size or H; weights per
    layer and direction: w_ih, w_hh [4H, P], (b_ih, b_hh), (w_hr [P, H] if proj).
    Returns output [T, B, D*P], (h_n [L*D, B, P], c_n [L*D, B, H]).
    """
    return _sequence("lstm", input, tuple(hx), weights, num_layers, bias, dropout, training,
                     bidirectional, lengths, input_bias, backend, proj_size)


def _nonlinearity(nonlinearity):
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")


# ------------------------------------------------------------ one step (decoding)
def _step(name, be, x, states, w, bias, input_bias=None, **opts):
    """One step through the backend's fused no-autograd launcher ``<cell>_step``
    (decoding under no_grad) -> the tuple of new states; None when the call needs
    autograd or the backend has no such launcher, and the caller then runs a length-1
    sequence. ``input_bias`` [B, G] joins b_ih as a per-row input bias. While a graph
    is compiled the launcher is the custom op ``fastrnn::<cell>_step`` (fastrnn.ops),
    one node."""
    if _needs_grad(x, *states, *w, input_bias):
        return None
    launch = _step_launcher(name, be)
    if launch is None:
        return None
    if _compiling(x):
        launch = _step_op(name, be)
    new = launch(x=x, **dict(zip(CELLS[name].states, states)),
                 **_step_weights(w, bias, input_bias), **opts)
    return new if isinstance(new, tuple) else (new,)


def _step_op(name, be):
    # the step launcher's custom op (fastrnn.ops), called as the launcher is (an op has
    # no optional arguments: an LSTM's w_hr is passed, None without a projection)
    op = getattr(ops, f"{name}_step")
    extra = {"w_hr": None} if CELLS[name].projection else {}
    return lambda **kw: op(**dict(extra, **kw), backend=be.name)


def _step_launcher(name, be):
    # the backend's fused no-autograd step, or None where the cell has none
    return getattr(be.kernels(), f"{name}_step") if CELLS[name].step else None


def _step_weights(w, bias, input_bias):
    # a step launcher's weight arguments; input_bias [B, G] joins b_ih per row
    b_ih = w[2] if bias else None
    if input_bias is not None:
        b_ih = input_bias if b_ih is None else input_bias + b_ih
    return dict(w_ih=w[0], w_hh=w[1], b_ih=b_ih, b_hh=w[3] if bias else None)


def _cell_input_bias(input_bias, input, weights):
    # a cell's input_bias [B, G] -> the length-1 sequence's [1, B, G]
    if input_bias is not None and input_bias.shape != (input.shape[0], weights[0].shape[0]):
        raise ValueError(f"input_bias must be [{input.shape[0]}, {weights[0].shape[0]}], got "
                         f"{tuple(input_bias.shape)}")
    return None if input_bias is None else input_bias.unsqueeze(0)


def _cell(name, input, hx, weights, bias, input_bias, backend, **opts):
    """One step of cell ``name``: ``hx`` the tuple of states [B, *] -> the tuple of new
    states; the fused step launcher where it applies, else a length-1 sequence."""
    be = backends.select(name, input, backend)
    seq_bias = _cell_input_bias(input_bias, input, weights)      # checked before any kernel
    new = _step(name, be, input, hx, weights, bias, input_bias, **opts)
    if new is None:
        _, new = _sequence(name, input.unsqueeze(0), tuple(h.unsqueeze(0) for h in hx),
                           weights, num_layers=1, bias=bias, dropout=0.0, training=False,
                           bidirectional=False, lengths=None, input_bias=seq_bias,
                           backend=backend, **opts)
        new = tuple(h[0] for h in new)
    return new


@_entry_point(_cell_autocast_dtype)
def rnn_cell(input, hx, weights, *, nonlinearity="tanh", bias=True, input_bias=None,
             backend=None):
    """One step of :func:`rnn`: input [B, I], hx [B, H] -> h' [B, H]. ``input_bias``
    [B, G] or None: a per-row term added to the input projection (as in :func:`rnn`)."""
    _nonlinearity(nonlinearity)
    return _cell("rnn", input, (hx,), weights, bias, input_bias, backend,
                 nonlinearity=nonlinearity)[0]


@_entry_point(_cell_autocast_dtype)
def gru_cell(input, hx, weights, *, bias=True, input_bias=None, backend=None):
    """One step of :func:`gru`: input [B, I], hx [B, H] -> h' [B, H]; ``input_bias`` as in
    :func:`rnn_cell`."""
    return _cell("gru", input, (hx,), weights, bias, input_bias, backend)[0]


@_entry_point(_cell_autocast_dtype)
def lstm_cell(input, hx, weights, *, bias=True, input_bias=None, backend=None):
    """One step of :func:`lstm`: input [B, I], hx = (h [B, H], c [B, H]) -> (h', c');
    ``input_bias`` as in :func:`rnn_cell`."""
    return _cell("lstm", input, tuple(hx), weights, bias, input_bias, backend)


# the step functions above by cell name, for stepper (a lookup torch.compile can trace)
CELL_FUNCTIONS = {c: globals()[f"{c}_cell"] for c in CELLS if f"{c}_cell" in globals()}


def stepper(cell, weights, like, *, bias=True, input_bias=None, backend=None, graph=False,
            **opts):
    """A decoding loop's step, set up once for many calls with the same weights:
    -> step(x [B, I], state) -> new state (``state``: h, or (h, c) for "lstm"), equal to
    ``<cell>_cell(x, state, weights, bias=bias, input_bias=input_bias, **opts)``.

    Under no_grad on a backend with a fused step launcher, the dispatch, the launcher
    lookup and the bias sum (b_ih + input_bias [B, G]) happen here, once, and each call
    is the launcher alone: at batch 1 the per-token cost is the step kernel's, not the
    checks'. Otherwise (gradients, autocast) each call is the cell function.

    ``graph=True``, on CUDA tensors under no_grad: the step is captured into a CUDA graph
    once per input shape (``GraphStep``) and each call replays it, so the per-token host
    work is two copies in, the replay and the outputs' copies out. Ignored elsewhere
    (the CPU, gradients, autocast). Off by default until a device has measured it.

    Under torch.compile (a stepper made in or called from a compiled function) each call
    is the cell function, whose step is one custom op (fastrnn.ops); torch.compile's
    ``mode="reduce-overhead"`` is then the CUDA graph.
    """
    fn = CELL_FUNCTIONS[cell]
    if "nonlinearity" in CELLS[cell].options:
        opts.setdefault("nonlinearity", "tanh")
    _cell_input_bias(input_bias, like, weights)                  # checked once, up front

    def call(x, state):
        return fn(x, state, weights, bias=bias, input_bias=input_bias, backend=backend, **opts)
    be = backends.select(cell, like, backend)
    launch = _step_launcher(cell, be)
    if launch is None or torch.is_grad_enabled() or _autocast_on(like) or _compiling(like):
        return call
    # the bias sum, once (the step kernels read the weights as torch holds them)
    fixed = dict(_step_weights(weights, bias, input_bias), **opts)
    names = CELLS[cell].states

    def step(x, state):
        if torch.compiler.is_compiling():        # made eagerly, called in a traced graph
            return call(x, state)
        if len(names) > 1:
            return launch(x=x, **dict(zip(names, state)), **fixed)
        return launch(x=x, h=state, **fixed)
    return GraphStep(step) if graph and like.is_cuda else step


def cuda_graph(fn, *static):
    """-> (graph, its outputs): ``fn(*static)`` captured into a CUDA graph after two calls
    on a side stream (compiles, plans, allocator warm-up: as torch.cuda.graph asks)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            fn(*static)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn(*static)
    return graph, out


class GraphStep:
    """A no-grad decoding step replayed from CUDA graphs, one captured per input shape.

    The first call with a shape warms the step up on a side stream (kernel compile and
    plan, as torch.cuda.graph asks) and captures it on static copies of its inputs; every
    call copies its inputs into those, replays, and returns copies of the outputs (a
    caller may keep a state across steps, as beam search does). The weights and biases
    the step holds are the graph's constants: a stepper serves one set of weights.
    """

    def __init__(self, step):
        self.step, self.graphs = step, {}

    def _run(self, x, states, single):
        out = self.step(x, states[0] if single else states)
        return (out,) if single else tuple(out)

    def __call__(self, x, state):
        if torch.compiler.is_compiling():        # a traced call: no capture of our own
            return self.step(x, state)
        single = not isinstance(state, (tuple, list))
        states = (state,) if single else tuple(state)
        key = (x.shape, x.dtype, x.device) + tuple((s.shape, s.dtype) for s in states)
        if key not in self.graphs:
            self.graphs[key] = self._capture(x, states, single)
        static_in, static_out, graph = self.graphs[key]
        for dst, src in zip(static_in, (x, *states)):
            dst.copy_(src)
        graph.replay()
        out = tuple(o.clone() for o in static_out)
        return out[0] if single else out

    def _capture(self, x, states, single):
        static_in = [t.clone() for t in (x, *states)]
        graph, static_out = cuda_graph(lambda x, *states: self._run(x, states, single),
                                       *static_in)
        return static_in, static_out, graph
