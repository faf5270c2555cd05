"""fastrnn.diagnostics: dL/dh_t from the backward kernels against plain PyTorch."""
import pytest
import torch

import fastrnn
from fastrnn import reference
from fastrnn.autograd import GRUFunction, LSTMFunction, RNNFunction, StateGradients
from fastrnn.backends import REGISTRY
from fastrnn.diagnostics import decay_rate, elman_bound, gradient_flow, main

from helpers import assert_close

T, B, H = 7, 4, 5


def _setup(cell, dtype, proj):
    g = torch.Generator().manual_seed(3)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    G = {"rnn": H, "gru": 3 * H, "lstm": 4 * H}[cell]
    P = 3 if proj else H
    xproj, h0 = r(T, B, G), r(B, P)
    w_hh = r(G, P) / P ** 0.5
    extra = {"rnn": [], "gru": [r(H)], "lstm": [r(B, H), r(P, H) / H ** 0.5 if proj else None]}
    return xproj, h0, w_hh, extra[cell], P


def _reference_state_grads(cell, xproj, h0, w_hh, extra, lengths, reverse, g_out, g_fin):
    """dL/dh_t by autograd, independently of any BPTT formula: a zero perturbation is added
    to every step's new h (so it reaches both the output and the next step), and its
    gradient is dL/dh_t; mapped from processing order to each row's time index."""
    P = h0.shape[1]
    eps = [torch.zeros(B, P, dtype=xproj.dtype, requires_grad=True) for _ in range(T)]
    k = iter(range(T))

    def step(xp, s):
        if cell == "rnn":
            new = (reference.rnn_cell(xp, s[0], w_hh, "tanh"),)
        elif cell == "gru":
            new = (reference.gru_cell(xp, s[0], w_hh, extra[0]),)
        else:
            new = reference.lstm_cell(xp, s[0], s[1], w_hh, extra[1])
        return (new[0] + eps[next(k)],) + tuple(new[1:])
    states = (h0,) if cell != "lstm" else (h0, extra[0])
    out, fin = reference.scan(step, xproj, states, lengths, reverse)
    loss = (out * g_out).sum() + sum((f * g).sum() for f, g in zip(fin, g_fin))
    grads = torch.autograd.grad(loss, eps)
    lens = lengths if lengths is not None else torch.full((B,), T)
    res = torch.zeros(T, B, P, dtype=xproj.dtype)
    for b in range(B):
        L = int(lens[b])
        for s in range(L):
            res[L - 1 - s if reverse else s, b] = grads[s][b]
    return res


@pytest.mark.parametrize("backend", ["numba", "triton", "reference"])
@pytest.mark.parametrize("cell,proj", [("rnn", False), ("gru", False), ("lstm", False),
                                       ("lstm", True)])
@pytest.mark.parametrize("varlen,reverse", [(False, False), (True, False), (True, True)])
def test_kernels_write_dl_dh_of_every_step(backend, cell, proj, varlen, reverse):
    dtype = torch.float32 if backend == "triton" else torch.float64
    xproj, h0, w_hh, extra, P = _setup(cell, dtype, proj)
    lengths = torch.tensor([7, 3, 5, 1]) if varlen else None
    g = torch.Generator().manual_seed(4)
    g_out = torch.randn(T, B, P, generator=g, dtype=dtype)
    g_fin = [torch.randn(B, P, generator=g, dtype=dtype)] + \
        ([torch.randn(B, H, generator=g, dtype=dtype)] if cell == "lstm" else [])
    be = REGISTRY[backend]
    leaf = xproj.clone().requires_grad_()
    with StateGradients() as rec:
        if cell == "rnn":
            outs = RNNFunction.apply(leaf, h0, w_hh, lengths, reverse, "tanh", be)
        elif cell == "gru":
            outs = GRUFunction.apply(leaf, h0, w_hh, extra[0], lengths, reverse, be)
        else:
            outs = LSTMFunction.apply(leaf, h0, extra[0], w_hh, extra[1], lengths, reverse, be)
    torch.autograd.backward(list(outs), [g_out] + g_fin)
    got = rec.entries[0]["grad"]
    ref = _reference_state_grads(cell, xproj.double(), h0.double(), w_hh.double(),
                                 [e.double() if e is not None else None for e in extra],
                                 lengths, reverse, g_out.double(), [x.double() for x in g_fin])
    assert_close(got, ref, 1e-4 if backend == "triton" else 1e-11, "dL/dh_t")


def test_gradient_flow_per_layer_and_direction_leaves_grads_alone():
    model = fastrnn.GRU(3, 5, num_layers=2, bidirectional=True).double()
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    flows = gradient_flow(model, x, lambda o: o[0].square().sum())
    assert [(f.module, f.layer, f.direction) for f in flows] == \
        [("GRU", 0, 0), ("GRU", 0, 1), ("GRU", 1, 0), ("GRU", 1, 1)]
    assert all(f.norms.shape == (6,) and f.per_row.shape == (6, 2) for f in flows)
    assert all(torch.isfinite(f.norms).all() and (f.norms > 0).all() for f in flows)
    assert all(p.grad is None for p in model.parameters())
    # the last layer's dL/dh_t is the loss's own gradient at its last step (2 * output)
    out, _ = model(x)
    last = out[-1, :, :5]
    assert flows[2].norms[-1].item() == pytest.approx((2 * last).norm().item(), rel=1e-10)


def test_gradient_flow_on_the_reference_backend_matches_the_kernels():
    # the reference backend implements the launcher contract, grad_states included
    model = fastrnn.LSTM(3, 4, num_layers=2, bidirectional=True).double()
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    flows = {}
    for backend in ("numba", "reference"):
        model.backend = backend
        flows[backend] = gradient_flow(model, x, lambda o: o[0].pow(2).sum())
    assert len(flows["reference"]) == len(flows["numba"]) == 4
    for a, b in zip(flows["reference"], flows["numba"]):
        assert (a.layer, a.direction) == (b.layer, b.direction)
        assert_close(a.norms, b.norms, 1e-12, f"layer {a.layer} direction {a.direction}")


def test_gradient_flow_needs_a_fastrnn_layer():
    with pytest.raises(RuntimeError, match="no fastrnn recurrent layer ran"):
        gradient_flow(torch.nn.RNN(3, 4), torch.randn(5, 2, 3), lambda o: o[0].sum())


@pytest.mark.parametrize("radius", [0.5, 1.0, 1.5])
def test_elman_bound_holds_and_is_tight_near_the_linear_regime(radius):
    from fastrnn.diagnostics import _scaled_rnn
    rnn = _scaled_rnn(16, radius, seed=0).double()
    x = torch.randn(60, 4, 16, dtype=torch.float64)
    b = elman_bound(rnn, x)
    assert b["beta_W"] == pytest.approx(radius, rel=1e-6)      # orthogonal x radius (float32)
    assert b["measured"] <= b["bound"] * (1 + 1e-6)
    if radius < 1.5:
        assert b["measured"] == pytest.approx(radius, rel=0.05)     # near-linear tanh: tight
    else:
        assert b["measured"] > 1.05              # explodes (tanh saturation slows it)


def test_decay_rate_of_a_geometric_sequence():
    n = 0.7 ** torch.arange(20, 0, -1, dtype=torch.float64)
    assert decay_rate(n, skip=0) == pytest.approx(0.7, rel=1e-12)


def test_demo_writes_the_figure(tmp_path, capsys):
    out = tmp_path / "flow.png"
    assert main(["--demo", "--out", str(out)]) == 0
    assert out.stat().st_size > 10_000
    assert "spectral radius 1.5" in capsys.readouterr().out
