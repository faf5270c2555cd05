"""fastrnn: recurrent layers whose time loop runs in fused kernels.

Triton on CUDA GPUs, Numba on CPUs, plain PyTorch (``fastrnn.reference``) as the
oracle and fallback. Importing this package loads neither numba nor triton.
"""
__version__ = "0.1.0"

from .nn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell, to_torch  # noqa: E402
from .forest import Forest, ForestError  # noqa: E402
from . import models  # noqa: E402  (the lecture's models, on the layers above)
from .models import ChildSumTreeLSTM, NaryTreeLSTM, TreeRNN  # noqa: E402

__all__ = ["RNN", "GRU", "LSTM", "RNNCell", "GRUCell", "LSTMCell", "to_torch", "Forest",
           "ForestError", "TreeRNN", "NaryTreeLSTM", "ChildSumTreeLSTM", "models", "__version__"]
