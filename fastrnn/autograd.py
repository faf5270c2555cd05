"""autograd.Functions around the kernel launchers (see fastrnn/kernels/__init__.py).

Forward calls the backend's ``<cell>_fwd`` launcher; backward calls ``<cell>_bwd``,
which returns the pre-activation gradients of every step, and then forms the
recurrent weight gradient as ONE GEMM over all steps (deterministic, no atomics).

Double backward: when backward itself is being differentiated (``create_graph``),
the layer is recomputed with the differentiable reference and differentiated by
autograd, so higher-order gradients are exact rather than silently wrong. That
recomputation needs xproj; rather than keep it alive through every backward
(the largest tensor of a layer: 128 MiB for an LSTM at T=256, B=64, H=512),
callers pass ``xproj_fn``, which recomputes it from x and W_ih (alive anyway for
their own gradients). Without it (xproj is a leaf, as in the kernel tests)
xproj is saved.
"""
import functools

import torch
import torch.nn.functional as F

from . import reference
from .backends import has_data
from .gemm_layout import _mm, linear_grads, project


class StateGradients:
    """Collects dL/dh_t of every step of every layer call while it is the active recorder
    (``fastrnn.diagnostics.gradient_flow``): the backward launchers write them as their
    optional ``grad_states`` output, so the sequence is not run again."""

    active = None                       # the recorder forward calls register with, or None

    def __init__(self):
        self.entries, self.where = [], {}

    def __enter__(self):
        StateGradients.active = self
        return self

    def __exit__(self, *exc):
        StateGradients.active = None

    def slot(self):
        self.entries.append(dict(self.where, grad=None))
        return self, len(self.entries) - 1

    def store(self, index, grad):
        self.entries[index]["grad"] = grad


def _slot():
    # forward: where this call's dL/dh_t go (the recorder itself is kept on ctx, so the
    # backward, which may run on autograd's device thread, needs no global)
    rec = StateGradients.active
    return None if rec is None else rec.slot()


def previous_states(out, h0, lengths, reverse):
    """The state each step consumed: hprev[t, b] = h_{t-1} in row b's own order.

    out [T, B, P], h0 [B, P] -> [T, B, P]. Past a row's length the value is
    irrelevant (its gradient there is zero) but finite.
    """
    if not reverse:
        return torch.cat([h0.unsqueeze(0), out[:-1]])
    hprev = torch.cat([out[1:], torch.zeros_like(out[:1])])
    T, B = out.shape[:2]
    last = (lengths.to(out.device) - 1) if lengths is not None else \
        torch.full((B,), T - 1, device=out.device, dtype=torch.int64)
    hprev[last, torch.arange(B, device=out.device)] = h0
    return hprev


def _weight_grad(grad_pre, hprev, backend=None):
    """sum_t grad_pre[t]^T @ hprev[t] as one GEMM: [G, P]."""
    G, P = grad_pre.shape[-1], hprev.shape[-1]
    return _mm(grad_pre.reshape(-1, G).t(), hprev.reshape(-1, P), backend=backend)


def _recurrent_weight_grad(grad_pre, out, h0, lengths, reverse, backend=None):
    """dW_hh = sum_t grad_pre[t]^T h_{t-1}: [G, P].

    With equal lengths the states a step consumed are ``out`` shifted by one and h0,
    so the sum is one GEMM over T-1 steps plus a B-row one for h0, with no
    [T, B, P] copy of the shifted states; variable lengths use previous_states.
    """
    if lengths is not None:
        return _weight_grad(grad_pre, previous_states(out, h0, lengths, reverse), backend)
    first, rest = (grad_pre[-1], grad_pre[:-1]) if reverse else (grad_pre[0], grad_pre[1:])
    shifted = out[1:] if reverse else out[:-1]
    return _mm(rest.reshape(-1, rest.shape[-1]).t(), shifted.reshape(-1, shifted.shape[-1]),
               add=_mm(first.t(), h0, backend=backend), backend=backend)


def _save(ctx, backend, xproj, xproj_fn, tensors, opts):
    """What every layer Function keeps for backward: xproj only when it cannot be
    recomputed (``xproj_fn``), then ``tensors`` (inputs, saved outputs, lengths); the
    backend and non-tensor options on ctx; and where its dL/dh_t go, if recorded. An
    output the loss does not use gets None as its gradient (_out_grad, _state_grad)."""
    ctx.save_for_backward(None if xproj_fn else xproj, *tensors)
    ctx.backend, ctx.opts, ctx.xproj_fn, ctx.dh_slot = backend, opts, xproj_fn, _slot()
    ctx.set_materialize_grads(False)


def _out_grad(g, out):
    """dL/d out, contiguous; zeros when the loss does not use the sequence's output."""
    return torch.zeros_like(out) if g is None else g.contiguous()


def _state_grad(g, state):
    """dL/d a final state, contiguous; when the loss does not use it (the common case),
    zeros that are made once per shape and only read (autograd's materialized zeros
    were a fill per call: a kernel launch on a GPU). While a graph is traced (a fake
    tensor) nothing is cached."""
    if g is not None:
        return g.contiguous()
    if not has_data(state):
        return torch.zeros_like(state)
    return _zeros(state.shape, state.dtype, state.device)



@functools.lru_cache(maxsize=16)
def _zeros(shape, dtype, device):
    return torch.zeros(shape, dtype=dtype, device=device)


def _double_backward(ctx, layer, inputs, grads, n_args):
    """Backward while create_graph builds a graph: differentiate ``layer`` (a
    fastrnn.reference recurrence of ``inputs``, xproj first) by autograd, so higher-order
    gradients are exact. The saved tensors are used as they are (not detached), so the
    returned gradients stay connected to that graph. -> the Function's ``n_args``
    gradients (None past the inputs)."""
    inputs = [ctx.xproj_fn() if inputs[0] is None else inputs[0], *inputs[1:]]
    with torch.enable_grad():
        outs = layer(*inputs)
        needs = [x is not None and x.requires_grad for x in inputs]
        diff = [x for x, n in zip(inputs, needs) if n]
        got = iter(torch.autograd.grad(outs, diff, grads, create_graph=True, allow_unused=True))
    return tuple(next(got) if n else None for n in needs) + (None,) * (n_args - len(inputs))


def _kernel_bwd(ctx, name, **kwargs):
    """The backend's ``<name>_bwd``, recording dL/dh_t when fastrnn.diagnostics asks;
    while a compiled graph's backward is traced, the ``<name>_bwd`` custom op
    (fastrnn.ops)."""
    if not has_data(kwargs["grad_out"]):
        from . import ops
        return getattr(ops, f"{name}_bwd")(**kwargs, backend=ctx.backend.name)
    states = None if ctx.dh_slot is None else torch.empty_like(kwargs["grad_out"])
    res = getattr(ctx.backend.kernels(), f"{name}_bwd")(**kwargs, grad_states=states)
    if states is not None:
        rec, index = ctx.dh_slot
        rec.store(index, states)
    return res


# The layer Functions, one direction each; their arguments follow one pattern (the cell
# table's order): xproj, the initial states, the recurrent weights, lengths, reverse, the
# cell's options, the backend, xproj_fn.
class RNNFunction(torch.autograd.Function):
    """Elman RNN layer: (xproj, h0, w_hh) -> (out, h_n)."""

    @staticmethod
    def forward(ctx, xproj, h0, w_hh, lengths, reverse, nonlinearity, backend, xproj_fn=None):
        out, h_n = backend.kernels().rnn_fwd(
            xproj=xproj, h0=h0, w_hh=w_hh, lengths=lengths, reverse=reverse,
            nonlinearity=nonlinearity)
        _save(ctx, backend, xproj, xproj_fn, (h0, w_hh, out, lengths), (reverse, nonlinearity))
        return out, h_n

    @staticmethod
    def backward(ctx, grad_out, grad_hn):
        xproj, h0, w_hh, out, lengths = ctx.saved_tensors
        reverse, nonlinearity = ctx.opts
        grad_out, grad_hn = _out_grad(grad_out, out), _state_grad(grad_hn, h0)
        if torch.is_grad_enabled():
            return _double_backward(
                ctx, lambda x, h, w: reference.rnn_layer(x, h, w, lengths, reverse, nonlinearity),
                [xproj, h0, w_hh], [grad_out, grad_hn], 8)
        grad_pre, grad_h0 = _kernel_bwd(
            ctx, "rnn", grad_out=grad_out, grad_hn=grad_hn, out=out,
            w_hh=w_hh, lengths=lengths, reverse=reverse, nonlinearity=nonlinearity)
        grad_w = None
        if ctx.needs_input_grad[2]:
            grad_w = _recurrent_weight_grad(grad_pre, out, h0, lengths, reverse, ctx.backend)
        return grad_pre, grad_h0, grad_w, None, None, None, None, None


class GRUFunction(torch.autograd.Function):
    """GRU layer: (xproj, h0, w_hh, b_hn) -> (out, h_n); b_hn may be None."""

    @staticmethod
    def forward(ctx, xproj, h0, w_hh, b_hn, lengths, reverse, backend, xproj_fn=None):
        out, h_n, gates = backend.kernels().gru_fwd(
            xproj=xproj, h0=h0, w_hh=w_hh, b_hn=b_hn, lengths=lengths, reverse=reverse)
        _save(ctx, backend, xproj, xproj_fn, (h0, w_hh, b_hn, out, gates, lengths), (reverse,))
        return out, h_n

    @staticmethod
    def backward(ctx, grad_out, grad_hn):
        xproj, h0, w_hh, b_hn, out, gates, lengths = ctx.saved_tensors
        reverse, = ctx.opts
        grad_out, grad_hn = _out_grad(grad_out, out), _state_grad(grad_hn, h0)
        if torch.is_grad_enabled():
            return _double_backward(
                ctx, lambda x, h, w, b: reference.gru_layer(x, h, w, b, lengths, reverse),
                [xproj, h0, w_hh, b_hn], [grad_out, grad_hn], 8)
        grad_x, grad_hp, grad_h0 = _kernel_bwd(
            ctx, "gru", grad_out=grad_out, grad_hn=grad_hn, out=out,
            h0=h0, gates=gates, w_hh=w_hh, lengths=lengths, reverse=reverse)
        grad_w = grad_b = None
        if ctx.needs_input_grad[2]:
            grad_w = _recurrent_weight_grad(grad_hp, out, h0, lengths, reverse, ctx.backend)
        if b_hn is not None and ctx.needs_input_grad[3]:
            H = h0.shape[-1]
            grad_b = grad_hp[..., 2 * H:].sum(dim=(0, 1))
        return grad_x, grad_h0, grad_w, grad_b, None, None, None, None


class LSTMFunction(torch.autograd.Function):
    """LSTM layer: (xproj, h0, c0, w_hh, w_hr) -> (out, h_n, c_n); w_hr may be None."""

    @staticmethod
    def forward(ctx, xproj, h0, c0, w_hh, w_hr, lengths, reverse, backend, xproj_fn=None):
        out, h_n, c_n, gates, cells, mids = backend.kernels().lstm_fwd(
            xproj=xproj, h0=h0, c0=c0, w_hh=w_hh, w_hr=w_hr, lengths=lengths, reverse=reverse)
        _save(ctx, backend, xproj, xproj_fn,
              (h0, c0, w_hh, w_hr, out, gates, cells, mids, lengths), (reverse,))
        return out, h_n, c_n

    @staticmethod
    def backward(ctx, grad_out, grad_hn, grad_cn):
        xproj, h0, c0, w_hh, w_hr, out, gates, cells, mids, lengths = ctx.saved_tensors
        reverse, = ctx.opts
        grad_out, grad_hn, grad_cn = \
            _out_grad(grad_out, out), _state_grad(grad_hn, h0), _state_grad(grad_cn, c0)
        if torch.is_grad_enabled():
            return _double_backward(
                ctx, lambda x, h, c, w, wr: reference.lstm_layer(x, h, c, w, wr, lengths, reverse),
                [xproj, h0, c0, w_hh, w_hr], [grad_out, grad_hn, grad_cn], 9)
        grad_pre, grad_h, grad_h0, grad_c0 = _kernel_bwd(
            ctx, "lstm", grad_out=grad_out, grad_hn=grad_hn,
            grad_cn=grad_cn, c0=c0, gates=gates, cells=cells, w_hh=w_hh, w_hr=w_hr,
            lengths=lengths, reverse=reverse)
        grad_w = grad_wr = None
        if ctx.needs_input_grad[3]:
            grad_w = _recurrent_weight_grad(grad_pre, out, h0, lengths, reverse, ctx.backend)
        if w_hr is not None and ctx.needs_input_grad[4]:
            grad_wr = _weight_grad(grad_h, mids, ctx.backend)
        return grad_pre, grad_h0, grad_c0, grad_w, grad_wr, None, None, None, None


class GRUBias(torch.autograd.Function):
    """A GRU's two biases as its Function takes them: (b_ih [3H], b_hh [3H]) -> (b, the
    input projection's bias: b_ih + b_hh with b_hh's n block left out, b_hn = b_hh's n
    block [H]). One op each way: autograd's own formulas for the mask product and the
    slice took four in backward (two products, a slice's zero fill and the sum of
    b_hh's two gradients), each a kernel launch on a GPU. The backward is made of
    differentiable ops, so double backward works through it."""

    @staticmethod
    def forward(ctx, b_ih, b_hh, mask):
        H = b_hh.shape[0] // 3
        return torch.addcmul(b_ih, b_hh, mask), b_hh[2 * H:]

    @staticmethod
    def backward(ctx, grad_b, grad_b_hn):
        H = grad_b.shape[0] // 3
        return grad_b, torch.cat([grad_b[:2 * H], grad_b_hn]), None


# ------------------------------------------------------------------ trees
# Level-batched tree kernels (fastrnn.models.tree): forward bottom-up and
# back-propagation through structure top-down, one launcher call each; the recurrent
# weight gradient is then GEMMs over the child links. A tree Function owns its input
# projection (it takes x, W_ih and b rather than xproj), for two reasons:
# - the kernels run on the forest renumbered by level (Forest.by_level), where a level's
#   rows of every per-node array are one block: x's rows go into that order before the
#   projection (x is the narrow side) and the states come back to the user's numbering
#   at the end (Child-Sum fwd+bwd at 13,403 AST nodes: 55.9 -> 52.0 ms, medians);
# - a call is one autograd node instead of two: a small tree's cost is mostly fixed
#   costs, not kernels.
# Their arguments: x, W_ih, b, W_hh, the forest, the cell's options, the backend.
def _tree_input(ctx, x, w_ih, bias, forest, backend):
    """-> (xproj in level order, the forest renumbered by level); ctx keeps both forests
    and the backend."""
    lf, order, _ = forest.by_level()
    xl = x if order is None else x.index_select(0, _on(forest, x.device, "to levels", order))
    ctx.forest, ctx.level_forest, ctx.backend, ctx.xl = forest, lf, backend, xl
    ctx.set_materialize_grads(False)    # an unused output's gradient: zeros made in backward
    return project(xl, w_ih, bias, backend), lf


def _on(forest, device, key, t):
    """``t``, one of ``forest``'s CPU index tensors, on ``device``: copied once per forest
    and device (on CUDA a copy per call would be a synchronous host-to-device transfer)."""
    if device.type == "cpu":
        return t
    cache = forest.__dict__.setdefault("_on_device", {})
    if (key, str(device)) not in cache:
        cache[key, str(device)] = t.to(device)
    return cache[key, str(device)]


def _permute(forest, t, to_levels):
    """The rows of ``t`` from level order to the user's numbering, or back; a new
    contiguous tensor either way (the backward launchers may overwrite it)."""
    _, order, inv = forest.by_level()
    idx, key = (order, "to levels") if to_levels else (inv, "to nodes")
    if idx is None:
        return t.clone(memory_format=torch.contiguous_format)
    if t.stride(0) == 0:                    # a sum's gradient: its rows all alike
        return t.contiguous()
    return t.index_select(0, _on(forest, t.device, key, idx))


def _tree_backward(ctx, grads, layer, kernel_grads, n_args):
    """The tree Functions' backward: grads (dL/d the outputs) -> the Function's n_args
    gradients. ``kernel_grads(grads in level order)`` runs the backend's backward and
    returns (dL/d xproj, dL/d W_hh or None), both in level order; under create_graph the
    reference recursion ``layer(xproj, forest, w_hh)`` is differentiated instead."""
    x, w_ih, bias, w_hh, h = ctx.saved_tensors[:5]
    if torch.is_grad_enabled():
        grads = [torch.zeros_like(h) if g is None else g for g in grads]
        return _double_backward(ctx, lambda x, wi, b, w: layer(F.linear(x, wi, b), ctx.forest, w),
                                [x, w_ih, bias, w_hh], grads, n_args)
    # an output the loss does not use (say c) has no gradient: zeros, rather than
    # autograd's zeros permuted into level order
    grad_xproj, grad_w = kernel_grads([torch.zeros_like(h) if g is None else
                                       _permute(ctx.forest, g, True) for g in grads])
    gx, grad_wi, grad_b = linear_grads(grad_xproj, ctx.xl, w_ih, bias is not None,
                                       ctx.needs_input_grad[:3], ctx.backend)
    if gx is not None:
        gx = _permute(ctx.forest, gx, False)
    return (gx, grad_wi, grad_b, grad_w) + (None,) * (n_args - 4)


def _slot_weight_grad(grad_rows, h, forest, N, backend):
    """[G, N*H]: dL/dW for W [G, N*H] applied to the children's h in their slots, i.e.
    the sum over child links of grad_rows[parent]^T h[child], slot by slot: per slot
    two row gathers and one GEMM over its links only (no zero rows for missing
    children; 2.2x faster than one GEMM over every node's padded [n, N*H] row at
    13,403 AST nodes)."""
    parts = []
    for s in range(N):
        parents, kids = (_on(forest, h.device, ("links", s, i), t)
                         for i, t in enumerate(forest.links(s)))
        parts.append(_mm(grad_rows.index_select(0, parents).t(), h.index_select(0, kids),
                         backend=backend))
    return torch.cat(parts, 1)


def _child_sum_weight_grad(grad_iou, grad_f, h, forest, backend):
    """[4H, H]: U_iou's gradient, over the nodes with children (on a forest by level, the
    rows past the leaves: no gather), then U_f's, over the child links; each link's
    child h is gathered once for both."""
    leaves = int(forest.level_ptr[1])
    parents, kids = (_on(forest, h.device, ("links", None, i), t)
                     for i, t in enumerate(forest.links()))
    hk = h.index_select(0, kids)
    sums = h.new_zeros(h.shape[0] - leaves, h.shape[1]).index_add_(0, parents - leaves, hk)
    return torch.cat([_mm(grad_iou[leaves:].t(), sums, backend=backend),
                      _mm(grad_f.t(), hk, backend=backend)])


class TreeRNNFunction(torch.autograd.Function):
    """(x [n, I], w_ih [H, I], bias [H] or None, w_hh [H, N*H]) -> h [n, H] over a Forest."""

    @staticmethod
    def forward(ctx, x, w_ih, bias, w_hh, forest, nonlinearity, backend):
        xproj, lf = _tree_input(ctx, x, w_ih, bias, forest, backend)
        h = backend.kernels().tree_rnn_fwd(xproj=xproj, w_hh=w_hh.contiguous(),
                                           forest=lf.tensors(), nonlinearity=nonlinearity)
        ctx.save_for_backward(x, w_ih, bias, w_hh, h)
        ctx.nonlinearity = nonlinearity
        return _permute(forest, h, False)

    @staticmethod
    def backward(ctx, grad_h):
        w_hh, h = ctx.saved_tensors[3:]
        lf, nonlinearity = ctx.level_forest, ctx.nonlinearity

        def kernel_grads(grads):
            grad_pre = ctx.backend.kernels().tree_rnn_bwd(
                grad_h=grads[0], h=h, w_hh=w_hh, forest=lf.tensors(), nonlinearity=nonlinearity)
            grad_w = _slot_weight_grad(grad_pre, h, lf, w_hh.shape[1] // h.shape[1], ctx.backend) \
                if ctx.needs_input_grad[3] else None
            return grad_pre, grad_w
        return _tree_backward(ctx, [grad_h], lambda x, f, w: reference.tree_rnn(
            x, f, w, nonlinearity), kernel_grads, 7)


class NaryTreeLSTMFunction(torch.autograd.Function):
    """(x [n, I], w_ih [4H, I], bias [4H] or None, w_hh [(3+N)H, N*H]) -> (h, c) [n, H]
    over a Forest."""

    @staticmethod
    def forward(ctx, x, w_ih, bias, w_hh, forest, backend):
        xproj, lf = _tree_input(ctx, x, w_ih, bias, forest, backend)
        h, c, gates = backend.kernels().nary_tree_lstm_fwd(
            xproj=xproj, w_hh=w_hh.contiguous(), forest=lf.tensors())
        ctx.save_for_backward(x, w_ih, bias, w_hh, h, c, gates)
        return _permute(forest, h, False), _permute(forest, c, False)

    @staticmethod
    def backward(ctx, grad_h, grad_c):
        w_hh, h, c, gates = ctx.saved_tensors[3:]
        lf = ctx.level_forest

        def kernel_grads(grads):
            grad_hh, grad_x = ctx.backend.kernels().nary_tree_lstm_bwd(
                grad_h=grads[0], grad_c=grads[1], c=c, gates=gates, w_hh=w_hh,
                forest=lf.tensors())
            grad_w = _slot_weight_grad(grad_hh, h, lf, w_hh.shape[1] // h.shape[1], ctx.backend) \
                if ctx.needs_input_grad[3] else None
            return grad_x, grad_w
        return _tree_backward(ctx, [grad_h, grad_c], reference.nary_tree_lstm, kernel_grads, 6)


class ChildSumTreeLSTMFunction(torch.autograd.Function):
    """(x [n, I], w_ih [4H, I], bias [4H] or None, w_hh [4H, H]) -> (h, c) [n, H] over a
    Forest."""

    @staticmethod
    def forward(ctx, x, w_ih, bias, w_hh, forest, backend):
        xproj, lf = _tree_input(ctx, x, w_ih, bias, forest, backend)
        h, c, gates, fgates = backend.kernels().child_sum_tree_lstm_fwd(
            xproj=xproj, w_hh=w_hh.contiguous(), forest=lf.tensors())
        ctx.save_for_backward(x, w_ih, bias, w_hh, h, c, gates, fgates)
        return _permute(forest, h, False), _permute(forest, c, False)

    @staticmethod
    def backward(ctx, grad_h, grad_c):
        w_hh, h, c, gates, fgates = ctx.saved_tensors[3:]
        lf = ctx.level_forest

        def kernel_grads(grads):
            grad_iou, grad_f, grad_x = ctx.backend.kernels().child_sum_tree_lstm_bwd(
                grad_h=grads[0], grad_c=grads[1], c=c, gates=gates, fgates=fgates, w_hh=w_hh,
                forest=lf.tensors())
            return grad_x, (_child_sum_weight_grad(grad_iou, grad_f, h, lf, ctx.backend)
                            if ctx.needs_input_grad[3] else None)
        return _tree_backward(ctx, [grad_h, grad_c], reference.child_sum_tree_lstm,
                              kernel_grads, 6)
