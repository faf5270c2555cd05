"""The dispatch point: explicit argument, FASTRNN_BACKEND, automatic with fallback."""
import logging
import subprocess
import sys

import pytest
import torch

from fastrnn import backends


def test_import_loads_neither_numba_nor_triton():
    code = ("import sys, fastrnn, torch; m = fastrnn.RNN(2, 3);"
            "print('numba' in sys.modules, 'triton' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_order_explicit_env_auto(monkeypatch):
    x = torch.zeros(1)
    monkeypatch.delenv("FASTRNN_BACKEND", raising=False)
    assert backends.select("rnn", x).name == "numba"
    monkeypatch.setenv("FASTRNN_BACKEND", "reference")
    assert backends.select("rnn", x).name == "reference"
    assert backends.select("rnn", x, backend="numba").name == "numba"


def test_explicit_request_that_cannot_run_raises(monkeypatch):
    monkeypatch.delenv("FASTRNN_BACKEND", raising=False)
    with pytest.raises(RuntimeError, match="no kernel for cell 'tree_lstm'"):
        backends.select("tree_lstm", torch.zeros(1), backend="numba")
    monkeypatch.setenv("FASTRNN_BACKEND", "numba")
    with pytest.raises(RuntimeError, match="dtype"):
        backends.select("rnn", torch.zeros(1, dtype=torch.float16))


@pytest.mark.parametrize("version,says", [(None, "triton is not installed"),
                                          ((3, 5), "triton 3.5 is older than 3.6")])
def test_triton_missing_or_too_old_says_how_to_get_it(monkeypatch, version, says):
    # Triton is no dependency of fastrnn's own: torch's CUDA wheels bring theirs
    be = backends.TritonBackend()
    monkeypatch.setattr(backends, "_triton_version", lambda: version)
    if version is None:
        monkeypatch.setattr(backends.Backend, "is_available", lambda self: False)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setitem(backends.REGISTRY, "triton", be)
    with pytest.raises(RuntimeError, match=says) as e:
        backends.select("rnn", torch.zeros(1), backend="triton")
    assert "torch's CUDA wheels bring the Triton" in str(e.value)


def test_automatic_fallback_logs_once(monkeypatch, caplog):
    monkeypatch.delenv("FASTRNN_BACKEND", raising=False)
    monkeypatch.setattr(backends, "_logged", set())
    with caplog.at_level(logging.WARNING, logger="fastrnn"):
        for _ in range(3):
            assert backends.select("rnn", torch.zeros(1, dtype=torch.float16)).name == "reference"
    assert len(caplog.records) == 1 and "float16" in caplog.records[0].getMessage()


@pytest.mark.parametrize("enabled", [True, False])
def test_numba_launchers_leave_the_collector_as_found(enabled):
    """The Numba launchers pause the cyclic GC while they run (cold start); they must
    restore the caller's setting, also when the launcher raises."""
    import gc
    from fastrnn.kernels import numba as nk
    seen = []
    probe = nk._launcher(lambda: seen.append(gc.isenabled()))
    failing = nk._launcher(lambda: 1 / 0)
    (gc.enable if enabled else gc.disable)()
    try:
        probe()
        with pytest.raises(ZeroDivisionError):
            failing()
        assert gc.isenabled() == enabled and seen == [False]
        h = nk.rnn_step(x=torch.randn(2, 3), h=torch.zeros(2, 4), w_ih=torch.randn(4, 3),
                        w_hh=torch.randn(4, 4), b_ih=None, b_hh=None, nonlinearity="tanh")
        assert h.shape == (2, 4) and gc.isenabled() == enabled
    finally:
        gc.enable()


THREADS = """
import torch, fastrnn
x = torch.randn(5, 3, 8, requires_grad=True)
layer, cell = fastrnn.RNN(8, 8), fastrnn.RNNCell(8, 8)
layer.backend = cell.backend = "numba"
seen = []
for n in (1, 2):
    torch.set_num_threads(n)
    layer(x)[0].sum().backward()
    with torch.no_grad():
        cell(x[0])
    import numba          # asked only now: its first call starts its threads
    seen += [torch.get_num_threads(), numba.get_num_threads()]
print(*seen)
"""


def test_numba_follows_torchs_thread_setting_and_leaves_it():
    # Numba's OpenMP launch set the calling thread's OpenMP count, which torch reports:
    # torch.set_num_threads(1) came back as every core after one call. A fresh process,
    # so that Numba's threads start after the setting (one cell: a short cold compile)
    out = subprocess.run([sys.executable, "-c", THREADS], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["1", "1", "2", "2"]
