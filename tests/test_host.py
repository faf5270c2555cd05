"""The Triton path's host side on the CPU, launches stubbed (fastrnn.kernels.triton.stub):
how many kernel launches and torch ops a layer call and a decoding step issue. The
limits are the counts this code reaches, so that a regression fails CI; a device turns
every counted torch op into a kernel launch (views and allocations excepted).
bench/host.py measures the same, with the time per call."""
import pytest
import torch

from bench import host
from fastrnn.cells import CELLS, SEQUENCE

pytest.importorskip("triton")

# torch ops that launch a kernel on a GPU, per one-layer forward+backward at host.HOST_SHAPE
# (the input projection, the weight gradients and the loss's sum, ones_like and copy of
# its expanded gradient included) and per decoding step (the per-row bias: one op)
LAYER_KERNELS = {"rnn": 12, "gru": 13, "lstm": 13}
STEP_KERNELS = 1


@pytest.fixture(autouse=True)
def _no_poison(monkeypatch):
    # counts as a user's call makes them: without the tests' NaN fill of every output
    import fastrnn.kernels
    monkeypatch.setattr(fastrnn.kernels, "POISON", False)


# reading a tensor's value on the host: on a GPU, a synchronisation (.item(), int(t))
SYNC = "_local_scalar_dense"


@pytest.mark.parametrize("cell", SEQUENCE)
def test_a_layer_call_is_one_launch_each_way(cell):
    launches, kernels, ops = host.counted(host.layer_call(cell))
    assert launches == [f"{cell}_fwd_kernel", f"{cell}_bwd_kernel"]
    assert len(kernels) <= LAYER_KERNELS[cell], kernels
    assert SYNC not in ops


def test_two_directions_two_layers_are_one_launch_each():
    launches, _, _ = host.counted(host.layer_call("gru", num_layers=2, bidirectional=True))
    assert launches == ["gru_fwd_kernel"] * 4 + ["gru_bwd_kernel"] * 4


@pytest.mark.parametrize("cell", [c for c in SEQUENCE if CELLS[c].step])
def test_a_decoding_step_is_one_launch(cell):
    launches, kernels, ops = host.counted(host.step_call(cell))
    assert launches == [f"{cell}_fwd_kernel"]
    assert len(kernels) <= STEP_KERNELS, kernels
    assert SYNC not in ops


@pytest.mark.parametrize("cell", [c for c in SEQUENCE if CELLS[c].step])
def test_a_steppers_step_copies_no_weights(cell):
    # the step kernel reads the weights as torch holds them: a step is its launch and
    # the per-row bias, no weight copy, whether from a module or functional.stepper
    launches, kernels, _ = host.counted(host.stepper_call(cell))
    assert launches == [f"{cell}_fwd_kernel"]
    assert len(kernels) <= STEP_KERNELS, kernels


def test_the_stub_runs_nothing_and_restores_the_launch():
    from fastrnn.kernels.triton import plan, stub
    from triton.runtime.interpreter import InterpretedFunction
    before = InterpretedFunction.run, plan.cached_plan
    with stub.stubbed() as launches:
        host.layer_call("rnn")()
    assert len(launches) == 2 and (InterpretedFunction.run, plan.cached_plan) == before
    # outside the block the kernels run again (under the interpreter here)
    x = torch.randn(3, 2, 4)
    layer = __import__("fastrnn").RNN(4, 4)
    layer.backend = "triton"
    assert torch.isfinite(layer(x)[0]).all()


def test_bench_host_rows_and_table():
    from bench.report import host_table
    rows = host.measure(reps=2)
    assert {(r["cell"], r["call"], r["launcher"]) for r in rows} == \
        {(c, call, n) for c in SEQUENCE for call, names in
         (("layer fwd+bwd", CELLS[c].launchers[:2]), ("step", CELLS[c].launchers[2:]),
          ("stepper step", CELLS[c].launchers[2:])) for n in names}
    assert all(r["triton_host_us"] > 0 and r["numba_us"] > 0 for r in rows)
    table = host_table([dict(r, section="host", value=r["triton_host_us"]) for r in rows])
    assert any("lstm_bwd" in line for line in table)
