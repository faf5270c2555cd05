"""The one dispatch point: a registry of backend objects.

Order of choice: the explicit ``backend=`` argument, then the ``FASTRNN_BACKEND``
environment variable, then automatic (CUDA tensors -> triton, CPU -> numba, else
reference). An explicit request that cannot be served raises ``RuntimeError``
with the reason; the automatic path falls back to the reference and logs once
per (backend, reason). Kernel modules are imported lazily, on first use, so
``import fastrnn`` loads neither numba nor triton.
"""
import importlib
import importlib.util
import logging
import os

import torch

from .cells import CELLS

log = logging.getLogger("fastrnn")

# Every backend ships every cell of the table (fastrnn/cells.py); a backend that lacked
# one would list its own subset here.
_ALL_CELLS = frozenset(CELLS)


class Backend:
    name = ""
    module = ""          # fastrnn.kernels.<name>, holding the launchers
    cells = frozenset()
    dtypes = ()
    _available = None
    _kernels = None

    def is_available(self):
        # find_spec costs tens of microseconds; ask once per process
        if self._available is None:
            self._available = importlib.util.find_spec(self.module) is not None and \
                importlib.util.find_spec(self.name) is not None
        return self._available

    def device_ok(self, tensor):
        raise NotImplementedError

    def unavailable(self):
        """Why this backend cannot run here, and how to get it."""
        return f"{self.name} is not installed"

    def supports(self, cell, tensor):
        """-> (ok, reason) for running ``cell`` on tensors like ``tensor``."""
        if not self.is_available():
            return False, self.unavailable()
        if cell not in self.cells:
            return False, f"{self.name} has no kernel for cell '{cell}'"
        ok, reason = self.device_ok(tensor)
        if not ok:
            return ok, reason
        if tensor.dtype not in self.dtypes:
            return False, f"{self.name} does not support dtype {tensor.dtype}"
        return True, ""

    def own_gemm(self, m, k, n, dtype):
        """Whether this backend runs the layers' GEMMs outside the recurrence (the
        input projection, dx and the weight gradients: fastrnn/gemm_layout.py) on its
        own kernel (``mm``) at a [m, k] @ [k, n] product, rather than torch's."""
        return False

    def mm(self, a, b, add=None):
        """a @ b (+ add) on the backend's own kernel; autograd records nothing."""
        raise NotImplementedError

    def kernels(self):
        # cached: import_module's lookup cost a few microseconds per decoding step
        if self._kernels is None:
            self._kernels = importlib.import_module(self.module)
        return self._kernels


class NumbaBackend(Backend):
    name, module, cells = "numba", "fastrnn.kernels.numba", _ALL_CELLS
    dtypes = (torch.float32, torch.float64)

    def device_ok(self, tensor):
        if tensor.device.type != "cpu":
            return False, f"numba runs on CPU tensors, got device {tensor.device}"
        return True, ""

    def own_gemm(self, m, k, n, dtype):
        return dtype in self.dtypes and self.kernels().mm_pays(m, k, n)

    def mm(self, a, b, add=None):
        return self.kernels().mm(a, b, add)


def triton_interpret():
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _triton_version():
    """(major, minor) of the installed Triton (torch's nightlies name it pytorch-triton),
    from its metadata, without importing it; None when unknown."""
    from importlib import metadata
    for dist in ("triton", "pytorch-triton"):
        try:
            return tuple(int(p) for p in metadata.version(dist).split(".")[:2])
        except (metadata.PackageNotFoundError, ValueError):
            continue
    return None


class TritonBackend(Backend):
    name, module, cells = "triton", "fastrnn.kernels.triton", _ALL_CELLS
    dtypes = (torch.float32, torch.float16, torch.bfloat16)
    # the oldest Triton CI compiles every kernel with (tests/test_triton_aot.py): torch
    # 2.11's; older ones are refused rather than half-working
    OLDEST = (3, 6)

    def is_available(self):
        if self._available is None:
            version = _triton_version()
            self._available = Backend.is_available(self) and (
                version is None or version >= self.OLDEST)
        return self._available

    def unavailable(self):
        version, oldest = _triton_version(), ".".join(map(str, self.OLDEST))
        if version is not None and version >= self.OLDEST:
            return f"{self.module} is missing: reinstall fastrnn"
        have = "is not installed" if version is None else \
            f"{'.'.join(map(str, version))} is older than {oldest}"
        return (f"triton {have}: the CUDA backend needs Triton {oldest} or newer. torch's "
                "CUDA wheels bring the Triton they were built with (install torch for CUDA "
                "from pytorch.org rather than a second Triton); `pip install "
                "'fastrnn[test]'` brings it for the CPU interpreter")

    def device_ok(self, tensor):
        # under TRITON_INTERPRET=1 the kernels run on CPU tensors (tests)
        if tensor.device.type == "cuda" or (triton_interpret() and tensor.device.type == "cpu"):
            return True, ""
        return False, f"triton needs CUDA tensors (or TRITON_INTERPRET=1), got device {tensor.device}"


class ReferenceBackend(Backend):
    """Plain PyTorch (fastrnn/kernels/reference.py): any device and dtype, every cell."""
    name, module = "reference", "fastrnn.kernels.reference"
    cells = _ALL_CELLS

    def is_available(self):
        return True

    def supports(self, cell, tensor):
        return (True, "") if cell in self.cells else (False, f"unknown cell '{cell}'")


REGISTRY = {b.name: b for b in (TritonBackend(), NumbaBackend(), ReferenceBackend())}
for _backend in REGISTRY.values():
    # asked up front (~1 ms at import): a first call inside torch.compile would set it
    # while the graph is traced, and the changed attribute made Dynamo compile again
    _backend.is_available()
_logged = set()


def recording(tensor):
    """True while a tracer or exporter records the call: torch.jit.trace and the
    TorchScript ONNX exporter (a trace), torch.export and the dynamo ONNX exporter
    (is_exporting), or any other symbolic tensor (FakeTensor, FunctionalTensor: a
    tensor subclass, whose data a kernel cannot read). ~0.5 us; torch.onnx.
    is_in_onnx_export would add 2.3 us per call, and both its exporters are caught
    above. A PackedSequence is judged by its data."""
    data = getattr(tensor, "data", tensor) if not isinstance(tensor, torch.Tensor) else tensor
    return not has_data(data) or torch.compiler.is_exporting() or torch.jit.is_tracing()


def has_data(t):
    """A tensor with data, not a tracer's stand-in (FakeTensor, FunctionalTensor: a tensor
    subclass, whose data a kernel cannot read)."""
    return type(t) is torch.Tensor or type(t) is torch.nn.Parameter


def select(cell, tensor, backend=None):
    """Return the Backend that runs ``cell`` on tensors like ``tensor``. While a tracer
    or exporter records (``recording``) that is the reference: plain PyTorch ops, which
    trace into a real graph (the kernels would be baked in as constants, or fail on
    symbolic tensors); the drop-in layers go one better and run torch's own op then."""
    if recording(tensor):
        if backend not in (None, "reference"):
            raise RuntimeError(f"fastrnn backend {backend!r} cannot run while torch traces or "
                               "exports (its kernels need real tensors); use backend="
                               "'reference' or leave it unset")
        return REGISTRY["reference"]
    requested = backend or os.environ.get("FASTRNN_BACKEND") or None
    if requested is not None:
        if requested not in REGISTRY:
            raise ValueError(f"unknown fastrnn backend {requested!r}; choose from {sorted(REGISTRY)}")
        ok, reason = REGISTRY[requested].supports(cell, tensor)
        if not ok:
            raise RuntimeError(f"fastrnn backend {requested!r} cannot run this call: {reason}")
        return REGISTRY[requested]
    auto = "triton" if tensor.device.type == "cuda" else "numba"
    ok, reason = REGISTRY[auto].supports(cell, tensor)
    if ok:
        return REGISTRY[auto]
    if (auto, reason) not in _logged:
        _logged.add((auto, reason))
        log.warning("fastrnn: falling back to the reference backend (%s)", reason)
    return REGISTRY["reference"]
