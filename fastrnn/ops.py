"""fastrnn's sequence and step launchers as torch.library custom ops, for torch.compile.

Dynamo cannot trace a launcher (numpy views, Numba or Triton dispatch), so while a
graph is being compiled (``torch.compiler.is_compiling()``) each layer and direction
calls ``torch.ops.fastrnn.<cell>_fwd`` instead of its autograd Function: one opaque
node in the graph, with a fake implementation (the launcher contract's output shapes,
fastrnn/kernels/__init__.py) and the Function's own backward registered as its
gradient, which calls ``torch.ops.fastrnn.<cell>_bwd``. Eager calls do not go through
the dispatcher (a few microseconds a call): the Functions run directly.

The ops take the backend by name; what each computes is exactly what the Function's
forward and backward compute (they share the code: ``autograd._save`` and the
Functions' ``backward``).
"""
from typing import Optional

import torch
from torch import Tensor

from . import autograd
from .backends import REGISTRY
from .kernels import (gru_bwd_outputs, gru_fwd_outputs, lstm_bwd_outputs, lstm_fwd_outputs,
                      rnn_bwd_outputs, rnn_fwd_outputs)

NS = "fastrnn"


def _kernels(backend):
    return REGISTRY[backend].kernels()


def _fresh(*tensors):
    # a custom op's outputs may not alias its inputs or each other; the reference
    # launchers (plain PyTorch) may return views
    return tuple(t.clone() if t._base is not None else t for t in tensors)


# ---------------------------------------------------------------------- RNN
@torch.library.custom_op(f"{NS}::rnn_fwd", mutates_args=())
def rnn_fwd(xproj: Tensor, h0: Tensor, w_hh: Tensor, lengths: Optional[Tensor], reverse: bool,
            nonlinearity: str, backend: str) -> tuple[Tensor, Tensor]:
    return _fresh(*_kernels(backend).rnn_fwd(xproj=xproj, h0=h0, w_hh=w_hh, lengths=lengths,
                                             reverse=reverse, nonlinearity=nonlinearity))


@rnn_fwd.register_fake
def _(xproj, h0, w_hh, lengths, reverse, nonlinearity, backend):
    return rnn_fwd_outputs(xproj)


@torch.library.custom_op(f"{NS}::rnn_bwd", mutates_args=())
def rnn_bwd(grad_out: Tensor, grad_hn: Tensor, out: Tensor, w_hh: Tensor,
            lengths: Optional[Tensor], reverse: bool, nonlinearity: str,
            backend: str) -> tuple[Tensor, Tensor]:
    return _fresh(*_kernels(backend).rnn_bwd(
        grad_out=grad_out, grad_hn=grad_hn, out=out, w_hh=w_hh, lengths=lengths,
        reverse=reverse, nonlinearity=nonlinearity))


@rnn_bwd.register_fake
def _(grad_out, grad_hn, out, w_hh, lengths, reverse, nonlinearity, backend):
    return rnn_bwd_outputs(grad_out)


# ---------------------------------------------------------------------- GRU
@torch.library.custom_op(f"{NS}::gru_fwd", mutates_args=())
def gru_fwd(xproj: Tensor, h0: Tensor, w_hh: Tensor, b_hn: Optional[Tensor],
            lengths: Optional[Tensor], reverse: bool, backend: str) -> tuple[Tensor, Tensor, Tensor]:
    return _fresh(*_kernels(backend).gru_fwd(xproj=xproj, h0=h0, w_hh=w_hh, b_hn=b_hn,
                                             lengths=lengths, reverse=reverse))


@gru_fwd.register_fake
def _(xproj, h0, w_hh, b_hn, lengths, reverse, backend):
    return gru_fwd_outputs(xproj, True)


@torch.library.custom_op(f"{NS}::gru_bwd", mutates_args=())
def gru_bwd(grad_out: Tensor, grad_hn: Tensor, out: Tensor, h0: Tensor, gates: Tensor,
            w_hh: Tensor, lengths: Optional[Tensor], reverse: bool,
            backend: str) -> tuple[Tensor, Tensor, Tensor]:
    return _fresh(*_kernels(backend).gru_bwd(
        grad_out=grad_out, grad_hn=grad_hn, out=out, h0=h0, gates=gates, w_hh=w_hh,
        lengths=lengths, reverse=reverse))


@gru_bwd.register_fake
def _(grad_out, grad_hn, out, h0, gates, w_hh, lengths, reverse, backend):
    return gru_bwd_outputs(grad_out)


# --------------------------------------------------------------------- LSTM
@torch.library.custom_op(f"{NS}::lstm_fwd", mutates_args=())
def lstm_fwd(xproj: Tensor, h0: Tensor, c0: Tensor, w_hh: Tensor, w_hr: Optional[Tensor],
             lengths: Optional[Tensor], reverse: bool,
             backend: str) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    return _fresh(*_kernels(backend).lstm_fwd(xproj=xproj, h0=h0, c0=c0, w_hh=w_hh, w_hr=w_hr,
                                              lengths=lengths, reverse=reverse))


@lstm_fwd.register_fake
def _(xproj, h0, c0, w_hh, w_hr, lengths, reverse, backend):
    return lstm_fwd_outputs(xproj, h0, w_hr is not None, True)


@torch.library.custom_op(f"{NS}::lstm_bwd", mutates_args=())
def lstm_bwd(grad_out: Tensor, grad_hn: Tensor, grad_cn: Tensor, c0: Tensor, gates: Tensor,
             cells: Tensor, w_hh: Tensor, w_hr: Optional[Tensor], lengths: Optional[Tensor],
             reverse: bool, backend: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return _fresh(*_kernels(backend).lstm_bwd(
        grad_out=grad_out, grad_hn=grad_hn, grad_cn=grad_cn, c0=c0, gates=gates, cells=cells,
        w_hh=w_hh, w_hr=w_hr, lengths=lengths, reverse=reverse))


@lstm_bwd.register_fake
def _(grad_out, grad_hn, grad_cn, c0, gates, cells, w_hh, w_hr, lengths, reverse, backend):
    return lstm_bwd_outputs(grad_out, c0, w_hr is not None)


# ------------------------------------------------------------ decoding steps
# One step without autograd (functional._step under no_grad while a graph is traced, as
# in a compiled decoding loop): the fused step launcher as one node, not a length-1
# sequence (which saves for backward and projects the input apart). No gradient is
# registered: a step that needs one is a length-1 sequence through the ops above.
@torch.library.custom_op(f"{NS}::rnn_step", mutates_args=())
def rnn_step(x: Tensor, h: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor],
             b_hh: Optional[Tensor], nonlinearity: str, backend: str) -> Tensor:
    return _fresh(_kernels(backend).rnn_step(x=x, h=h, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih,
                                             b_hh=b_hh, nonlinearity=nonlinearity))[0]


@rnn_step.register_fake
def _(x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity, backend):
    return torch.empty_like(h)


@torch.library.custom_op(f"{NS}::gru_step", mutates_args=())
def gru_step(x: Tensor, h: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor],
             b_hh: Optional[Tensor], backend: str) -> Tensor:
    return _fresh(_kernels(backend).gru_step(x=x, h=h, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih,
                                             b_hh=b_hh))[0]


@gru_step.register_fake
def _(x, h, w_ih, w_hh, b_ih, b_hh, backend):
    return torch.empty_like(h)


@torch.library.custom_op(f"{NS}::lstm_step", mutates_args=())
def lstm_step(x: Tensor, h: Tensor, c: Tensor, w_ih: Tensor, w_hh: Tensor,
              b_ih: Optional[Tensor], b_hh: Optional[Tensor], w_hr: Optional[Tensor],
              backend: str) -> tuple[Tensor, Tensor]:
    return _fresh(*_kernels(backend).lstm_step(x=x, h=h, c=c, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih,
                                               b_hh=b_hh, w_hr=w_hr))


@lstm_step.register_fake
def _(x, h, c, w_ih, w_hh, b_ih, b_hh, w_hr, backend):
    return torch.empty_like(h), torch.empty_like(c)


# ----------------------------------------------------------------- autograd
# Each forward op's gradient is its Function's backward: setup_context saves what the
# Function's forward saves (autograd._save), and the backward calls the Function's
# backward, whose kernel call (autograd._kernel_bwd) is the <cell>_bwd op while a graph
# is traced. The ops' inputs are the Functions' inputs but the last, xproj_fn.
def _register(op, function, outputs, saved, opts):
    """``outputs``: how many of the op's outputs the user sees (the rest are saved for
    backward); ``saved(inputs, outputs)`` -> the tensors the Function saves after xproj;
    ``opts(inputs)`` -> its non-tensor options."""
    def setup_context(ctx, inputs, output):
        autograd._save(ctx, REGISTRY[inputs[-1]], inputs[0], None, saved(inputs, output),
                       opts(inputs))

    def backward(ctx, *grads):
        return tuple(function.backward(ctx, *grads[:outputs]))[:-1]     # not xproj_fn's
    op.register_autograd(backward, setup_context=setup_context)


_register(rnn_fwd, autograd.RNNFunction, 2,
          lambda i, o: (i[1], i[2], o[0], i[3]), lambda i: (i[4], i[5]))
_register(gru_fwd, autograd.GRUFunction, 2,
          lambda i, o: (i[1], i[2], i[3], o[0], o[2], i[4]), lambda i: (i[5],))
_register(lstm_fwd, autograd.LSTMFunction, 3,
          lambda i, o: (i[1], i[2], i[3], i[4], o[0], o[3], o[4], o[5], i[5]),
          lambda i: (i[6],))
