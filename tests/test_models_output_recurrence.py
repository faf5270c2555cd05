"""Output-recurrence nets on every backend against the torch.nn build."""
import pytest
import torch

from fastrnn.models.output_recurrence import OutputRecurrentRNN, demo

from helpers import assert_close, assert_twins_match

BACKENDS = ["numba", "triton", "reference"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("recurrence", ["both", "output"])
@pytest.mark.parametrize("input_size", [0, 3])
def test_teacher_forced_and_free_running_match_torch_build(backend, recurrence, input_size):
    dtype = torch.float32 if backend == "triton" else torch.float64
    ours = OutputRecurrentRNN(input_size, 5, 2, recurrence=recurrence).to(dtype)
    twin = OutputRecurrentRNN(input_size, 5, 2, recurrence=recurrence,
                              layers=torch.nn).to(dtype)
    twin.load_state_dict(ours.state_dict())
    if recurrence == "both":
        ours.rnn.backend = backend
    T, B = 6, 3
    y_prev = torch.randn(T, B, 2, dtype=dtype)
    x = torch.randn(T, B, input_size, dtype=dtype) if input_size else None
    h0 = torch.randn(B, 5, dtype=dtype)
    tol = 1e-4 if backend == "triton" else 1e-10
    assert_twins_match(ours, twin, ours(y_prev, x, h0), twin(y_prev, x, h0), tol)
    for grad in (False, True):                       # fused step kernel, and the autograd path
        with torch.set_grad_enabled(grad):
            fa = ours.generate(y_prev[0], T, x, h0)
            fb = twin.generate(y_prev[0], T, x, h0)
        assert_close(fa, fb, tol, "free running")


def test_free_running_equals_teacher_forcing_when_fed_its_own_outputs():
    model = OutputRecurrentRNN(0, 4, 1).double()
    o0 = torch.randn(2, 1, dtype=torch.float64)
    with torch.no_grad():
        free = model.generate(o0, 5)
        forced = model(torch.cat([o0.unsqueeze(0), free[:-1]]))
    assert_close(forced, free, 1e-12)


def test_exposure_bias_demo_runs_and_shows():
    res = demo(steps=60, hidden=16, log=None, horizons=(1, 50))
    tf1, free1 = res[1]
    assert free1 == pytest.approx(tf1, rel=1e-5)      # one step ahead the two agree
    assert res[50][1] > 5 * res[50][0]                 # fed its own outputs, errors compound


def test_bad_options():
    with pytest.raises(ValueError, match="recurrence"):
        OutputRecurrentRNN(1, 2, 1, recurrence="hidden")
    with pytest.raises(ValueError, match="nonlinearity"):
        OutputRecurrentRNN(1, 2, 1, nonlinearity="gelu")
