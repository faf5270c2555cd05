"""Drop-in modules: subclasses of torch.nn.RNN/RNNCell that replace only the computation.

Construction, parameters (names, shapes, init), ``state_dict`` and the argument
checks are torch's own (inherited); ``forward`` normalises the input the way
torch does (batch_first, unbatched 2-D, PackedSequence -> padded + lengths) and
calls ``fastrnn.functional``. ``backend`` can be set per module
(``module.backend = "reference"``) or per process (``FASTRNN_BACKEND``).

Backends and dtypes, for every module here: ``numba`` for CPU tensors (float32,
float64), ``triton`` for CUDA tensors (float32, float16, bfloat16), ``reference`` (plain
PyTorch) for anything else. Errors: as the torch.nn class raises them (ValueError,
TypeError, RuntimeError), for bad shapes, dtypes, devices or states, before any kernel
runs; RuntimeError also when an explicitly chosen backend cannot run the call.

Deployment: while a tracer or exporter records a module (``_recording``), its forward
is torch's own, on the same parameters, so the graph holds torch's recurrent op
(ONNX LSTM/GRU/RNN, aten.lstm, ...) and never the kernels' outputs as constants; the
kernels cannot run on the tracers' symbolic tensors anyway. ``torch.jit.script``
scripts the torch twin (``__prepare_scriptable__``), and ``to_torch(model)`` swaps
every fastrnn layer of a model for its twin explicitly.
"""
import torch
from torch.nn.utils.rnn import PackedSequence

from . import functional
from .backends import recording as _recording


def _unpack(data, batch_sizes):
    """PackedSequence data [N, I] -> (padded [T, B, I], lengths [B] int64 CPU, valid [T, B]).

    ``valid[t, b]`` marks the steps a sorted row has, so ``padded[valid]`` is the
    packed order (time-major, rows in sorted order) and ``padded[valid] = data``
    unpacks: one index op each way, with one-op gradients, where
    pad_packed_sequence/pack_padded_sequence copy step by step (torch.profiler: about 240
    small copies per LSTM forward+backward at T=100, B=32).
    """
    T, B = len(batch_sizes), int(batch_sizes[0])
    valid = torch.arange(B) < batch_sizes[:, None]
    lengths, valid = valid.sum(0), valid.to(data.device)
    return data.new_zeros(T, B, data.shape[1]).index_put((valid,), data), lengths, valid


def _onnx_exporting():
    """torch.onnx.is_in_onnx_export, read so that Dynamo (the dynamo exporter's strict
    pass) sees the flags' values: it folds the public function to False."""
    try:
        from torch.onnx._internal.exporter import _flags
        from torch.onnx._internal.torchscript_exporter._globals import GLOBALS
    except ImportError:                 # another torch's layout: the public function
        return torch.onnx.is_in_onnx_export()
    return bool(_flags._is_onnx_exporting or GLOBALS.in_onnx_export)


def _twin(module):
    """The torch.nn module that computes what ``module`` does: an instance of the torch
    class it subclasses, on the same Parameter objects (shared, not copied), with the
    same hooks and training flag."""
    cls = next(c for c in type(module).__mro__ if c.__module__.startswith("torch.nn."))
    twin = cls.__new__(cls)
    for k, v in module.__dict__.items():
        if k != "backend":
            twin.__dict__[k] = v.copy() if isinstance(v, (dict, list)) else v
    return twin


def to_torch(model):
    """Replace every fastrnn layer and cell in ``model`` by its torch.nn twin (weights
    shared: training either one trains both). Returns the converted model: the twin
    itself when ``model`` is a fastrnn layer, else ``model``, changed in place. For
    deployment paths that need torch's modules (TorchScript, quantization, ...)."""
    if isinstance(model, _Deployable):
        return _twin(model)
    for name, child in list(model.named_children()):
        setattr(model, name, to_torch(child))
    return model


class _Deployable:
    """torch.jit.script(module) scripts the torch twin (see ``to_torch``)."""

    def __prepare_scriptable__(self):
        return _twin(self)


class _SequenceMixin(_Deployable):
    """Shared forward plumbing of the sequence modules (torch.nn.RNNBase subclasses)."""

    backend = None
    _cell_name = "RNN"

    def _check_devices(self, T, input, states):
        if T == 0:
            raise RuntimeError(f"Expected sequence length to be larger than 0 in {self._cell_name}")
        for s in states:
            if s.device != input.device:
                raise RuntimeError("Input and hidden tensors are not at the same device, found "
                                   f"input tensor at {input.device} and hidden tensor at {s.device}")
            if s.dtype != input.dtype:
                raise RuntimeError(f"hidden state dtype ({s.dtype}) does not match input dtype "
                                   f"({input.dtype})")
        functional.check_parameter_device(input, self._flat_weights[0])

    def _normalise(self, input, hx, state_shapes):
        """-> (x [T, B, I] time-major, hx tuple, lengths, restore(out, states))."""
        D = 2 if self.bidirectional else 1
        if isinstance(input, PackedSequence):
            data, batch_sizes, sorted_idx, unsorted_idx = input
            padded, lengths, valid = _unpack(data, batch_sizes)
            B = padded.shape[1]
            if hx is None:
                hx = tuple(data.new_zeros(self.num_layers * D, B, n) for n in state_shapes)
            else:
                hx = tuple(self.permute_hidden_one(h, sorted_idx) for h in hx)
            self.check_forward_args(data, hx if len(hx) > 1 else hx[0], batch_sizes)
            self._check_devices(padded.shape[0], padded, hx)

            def restore(out, states):
                return (PackedSequence(out[valid], batch_sizes, sorted_idx, unsorted_idx),
                        tuple(self.permute_hidden_one(s, unsorted_idx) for s in states))
            return padded, hx, lengths, restore

        if input.dim() not in (2, 3):
            raise ValueError(f"{self._cell_name}: Expected input to be 2D or 3D, "
                             f"got {input.dim()}D tensor instead")
        batched = input.dim() == 3
        batch_dim = 0 if self.batch_first else 1
        if not batched:
            input = input.unsqueeze(batch_dim)
            if hx is not None:
                if any(h.dim() != 2 for h in hx):
                    raise RuntimeError("For unbatched 2-D input, hx should also be 2-D but got "
                                       f"{hx[0].dim()}-D tensor")
                hx = tuple(h.unsqueeze(1) for h in hx)
        elif hx is not None and any(h.dim() != 3 for h in hx):
            raise RuntimeError("For batched 3-D input, hx should also be 3-D but got "
                               f"{hx[0].dim()}-D tensor")
        B = input.size(0) if self.batch_first else input.size(1)
        if hx is None:
            hx = tuple(input.new_zeros(self.num_layers * D, B, n) for n in state_shapes)
        self.check_forward_args(input, hx if len(hx) > 1 else hx[0], None)
        self._check_devices(input.shape[1 if self.batch_first else 0], input, hx)
        x = input.transpose(0, 1) if self.batch_first else input

        def restore(out, states):
            if self.batch_first:
                out = out.transpose(0, 1)
            if not batched:
                return out.squeeze(batch_dim), tuple(s.squeeze(1) for s in states)
            return out, states
        return x, hx, None, restore

    def _options(self, lengths):
        # the functional call's options: the module's, and per-row lengths (or None)
        return dict(num_layers=self.num_layers, bias=self.bias, dropout=self.dropout,
                    training=self.training, bidirectional=self.bidirectional, lengths=lengths,
                    backend=self.backend)

    def permute_hidden_one(self, h, permutation):
        return h if permutation is None else h.index_select(1, permutation)


class RNN(_SequenceMixin, torch.nn.RNN):
    """Drop-in ``torch.nn.RNN`` running on fastrnn's fused kernels.

    Forward: ``(input, hx=None) -> (output, h_n)``; input [T, B, I] ([B, T, I] with
    ``batch_first``; [T, I] unbatched; or a PackedSequence), output [T, B, D*H],
    h_n [L*D, B, H], D = 2 if bidirectional. The time loop of each layer and direction
    runs in one fused kernel call, forward and backward.

    Parameters, ``state_dict``, backends, dtypes and errors: torch's, and the module
    docstring (``fastrnn.nn``).
    """

    def forward(self, input, hx=None):
        if _recording(input):
            return super().forward(input, hx)
        self._update_flat_weights()
        x, hx, lengths, restore = self._normalise(
            input, None if hx is None else (hx,), (self.hidden_size,))
        out, (h_n,) = restore(*self._recur(x, hx, lengths))
        return out, h_n

    def _recur(self, x, hx, lengths):
        """time-major x, the tuple of initial states, lengths or None -> (out, final
        states): the recurrence with the module's options (forward; Seq2Seq's encoder)."""
        out, h_n = functional.rnn(x, hx[0], self._flat_weights, nonlinearity=self.nonlinearity,
                                  **self._options(lengths))
        return out, (h_n,)


class GRU(_SequenceMixin, torch.nn.GRU):
    """Drop-in ``torch.nn.GRU`` running on fastrnn's fused kernels (torch's gate order r,
    z, n): forward, shapes, parameters, backends, dtypes and errors as for ``RNN``."""

    _cell_name = "GRU"

    def forward(self, input, hx=None):
        if _recording(input):
            return super().forward(input, hx)
        self._update_flat_weights()
        x, hx, lengths, restore = self._normalise(
            input, None if hx is None else (hx,), (self.hidden_size,))
        out, (h_n,) = restore(*self._recur(x, hx, lengths))
        return out, h_n

    def _recur(self, x, hx, lengths):
        # as RNN._recur
        out, h_n = functional.gru(x, hx[0], self._flat_weights, **self._options(lengths))
        return out, (h_n,)


class LSTM(_SequenceMixin, torch.nn.LSTM):
    """Drop-in ``torch.nn.LSTM`` (proj_size included) running on fastrnn's fused kernels.

    Forward: ``(input, hx=None) -> (output, (h_n, c_n))``; input [T, B, I] ([B, T, I] with
    ``batch_first``; [T, I] unbatched; or a PackedSequence), output [T, B, D*P],
    h_n = (h [L*D, B, P], c [L*D, B, H]), P = proj_size or H, D = 2 if bidirectional.
    The time loop of each layer and direction runs in one fused kernel call, forward and
    backward.

    Parameters, ``state_dict``, backends, dtypes and errors: torch's, and the module
    docstring (``fastrnn.nn``).
    """

    _cell_name = "LSTM"

    def forward(self, input, hx=None):
        if _recording(input):
            if self.proj_size and _onnx_exporting():
                # torch's TorchScript exporter refuses this; its dynamo exporter writes a
                # graph that onnxruntime rejects (initial c of the projected size)
                raise RuntimeError("ONNX has no LSTM with projections (proj_size > 0): export "
                                   "the model with torch.export instead")
            return super().forward(input, hx)
        if isinstance(hx, torch.Tensor):     # torch fails indexing it: IndexError
            raise IndexError("LSTM's hx must be a tuple (h_0, c_0) of tensors, got one "
                             "Tensor")
        self._update_flat_weights()
        x, hx, lengths, restore = self._normalise(
            input, hx, (self.proj_size or self.hidden_size, self.hidden_size))
        out, (h_n, c_n) = restore(*self._recur(x, hx, lengths))
        return out, (h_n, c_n)

    def _recur(self, x, hx, lengths):
        # as RNN._recur
        return functional.lstm(x, hx, self._flat_weights, proj_size=self.proj_size,
                               **self._options(lengths))


# ------------------------------------------------------------------- cells
def _cell_inputs(cell, input, states):
    """torch's checks for the *Cell modules; -> (input [B, I], states [B, *] each, weights,
    batched). The weights are read once here (each module attribute read costs ~0.7 us,
    and a decoding step is tens of microseconds)."""
    name = type(cell).__name__
    weights = _cell_weights(cell)
    w = weights[0]
    if input.dim() not in (1, 2):
        raise ValueError(f"{name}: Expected input to be 1D or 2D, got {input.dim()}D instead")
    for s in states:
        if s is not None and s.dim() not in (1, 2):
            raise ValueError(f"{name}: Expected hidden to be 1D or 2D, got {s.dim()}D instead")
    batched = input.dim() == 2
    if not batched:
        input = input.unsqueeze(0)
        states = [None if s is None else s.unsqueeze(0) for s in states]
    if functional._autocast_on(input) and input.is_floating_point():
        # autocast: the cell computes in its weights' dtype, as the layers do
        # (functional._entry_point), so a bfloat16 input is no dtype mismatch
        input = input.to(w.dtype)
        states = [None if s is None or not s.is_floating_point() else s.to(w.dtype)
                  for s in states]
    sizes = [cell.hidden_size] * len(states)
    states = [input.new_zeros(input.size(0), n) if s is None else s for s, n in zip(states, sizes)]
    if input.size(1) != cell.input_size:
        raise RuntimeError(f"input has inconsistent input_size: got {input.size(1)} "
                           f"expected {cell.input_size}")
    for s in states:
        if s.size(0) != input.size(0):
            raise RuntimeError(f"Input batch size {input.size(0)} doesn't match hidden0 batch "
                               f"size {s.size(0)}")
        if s.size(1) != cell.hidden_size:
            raise RuntimeError(f"hidden has inconsistent hidden_size: got {s.size(1)}, "
                               f"expected {cell.hidden_size}")
        if s.dtype != input.dtype or w.dtype != input.dtype:
            raise RuntimeError(f"expected input ({input.dtype}), hidden ({s.dtype}) and weights "
                               f"({w.dtype}) to have the same dtype")
        if s.device != input.device or w.device != input.device:
            raise RuntimeError("Expected input, hidden and weights on the same device, found "
                               f"{input.device}, {s.device}, {w.device}")
    return input, states, weights, batched


def _cell_weights(cell):
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh") if cell.bias else \
        ("weight_ih", "weight_hh")
    # Module.__getattr__ costs ~0.9 us per read; plain parameters sit in _parameters,
    # anything else (parametrizations, weight_norm, a plain tensor) goes through getattr
    params = cell._parameters
    return [params[n] if params.get(n) is not None else getattr(cell, n) for n in names]


class RNNCell(_Deployable, torch.nn.RNNCell):
    """Drop-in ``torch.nn.RNNCell``: one step.

    Forward: ``(input, hx=None) -> h'``; input [B, I] (or [I] unbatched), hx [B, H].
    Fused step under ``no_grad``; parameters, backends, dtypes and errors as for the
    layers (the module docstring).
    """

    backend = None

    def forward(self, input, hx=None):
        if _recording(input):
            return super().forward(input, hx)
        x, (h,), weights, batched = _cell_inputs(self, input, [hx])
        h = functional.rnn_cell(x, h, weights, nonlinearity=self.nonlinearity,
                                bias=self.bias, backend=self.backend)
        return h if batched else h[0]


class GRUCell(_Deployable, torch.nn.GRUCell):
    """Drop-in ``torch.nn.GRUCell``: one step.

    Forward: ``(input, hx=None) -> h'``; input [B, I] (or [I] unbatched), hx [B, H].
    Fused step under ``no_grad``; parameters, backends, dtypes and errors as for the
    layers (the module docstring).
    """

    backend = None

    def forward(self, input, hx=None):
        if _recording(input):
            return super().forward(input, hx)
        x, (h,), weights, batched = _cell_inputs(self, input, [hx])
        h = functional.gru_cell(x, h, weights, bias=self.bias, backend=self.backend)
        return h if batched else h[0]


class LSTMCell(_Deployable, torch.nn.LSTMCell):
    """Drop-in ``torch.nn.LSTMCell``: one step.

    Forward: ``(input, hx=None) -> (h', c')``; input [B, I] (or [I] unbatched),
    hx = (h [B, H], c [B, H]).
    Fused step under ``no_grad``; parameters, backends, dtypes and errors as for the
    layers (the module docstring).
    """

    backend = None

    def forward(self, input, hx=None):
        if _recording(input):
            return super().forward(input, hx)
        if isinstance(hx, torch.Tensor):     # as torch's lstm_cell words it
            raise TypeError("LSTMCell's hx must be a tuple (h_0, c_0) of Tensors, not Tensor")
        states = [None, None] if hx is None else list(hx)
        x, (h, c), weights, batched = _cell_inputs(self, input, states)
        h, c = functional.lstm_cell(x, (h, c), weights, bias=self.bias,
                                    backend=self.backend)
        return (h, c) if batched else (h[0], c[0])
