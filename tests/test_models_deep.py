"""DeepRNN on every backend against the same stack built with torch.nn."""
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from fastrnn.models import DeepRNN

from helpers import assert_close

BACKENDS = ["numba", "triton", "reference"]


def _run(model, x, lengths, grad_seed=1):
    inp = x.detach().clone().requires_grad_()
    feed = pack_padded_sequence(inp, lengths, enforce_sorted=False) if lengths is not None else inp
    out, h = model(feed)
    out = out.data if lengths is not None else out
    hs = h if isinstance(h, tuple) else (h,)
    g = torch.Generator().manual_seed(grad_seed)
    loss = (out * torch.randn(out.shape, generator=g, dtype=out.dtype)).sum() + \
        sum((s * torch.randn(s.shape, generator=g, dtype=s.dtype)).sum() for s in hs)
    loss.backward()
    return [out, *hs, inp.grad] + [p.grad for p in model.parameters()]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", ["rnn_tanh", "gru", "lstm"])
@pytest.mark.parametrize("residual,bidirectional,packed,transition", [
    (True, False, False, 0), (True, True, True, 0), (False, False, True, 6), (True, True, False, 5)])
def test_matches_torch_build(backend, cell, residual, bidirectional, packed, transition):
    dtype = torch.float32 if backend == "triton" else torch.float64
    args = dict(residual=residual, bidirectional=bidirectional, transition=transition)
    ours = DeepRNN(cell, 3, 4, 3, **args).to(dtype)
    twin = DeepRNN(cell, 3, 4, 3, layers=torch.nn, **args).to(dtype)
    twin.load_state_dict(ours.state_dict())
    ours.backend = backend
    x = torch.randn(6, 5, 3, dtype=dtype)
    lengths = torch.tensor([6, 2, 5, 1, 3]) if packed else None
    tol = 1e-4 if backend == "triton" else 1e-10
    for i, (a, b) in enumerate(zip(_run(ours, x, lengths), _run(twin, x, lengths))):
        assert_close(a, b, tol, f"output/state/grad {i}")


def test_plain_stack_is_torch_multilayer_and_dropout_masks_match():
    ours = DeepRNN("gru", 3, 4, 3, residual=False, dropout=0.3).double()
    torch_gru = torch.nn.GRU(3, 4, num_layers=3, dropout=0.3).double()
    with torch.no_grad():
        for k, rnn in enumerate(ours.rnns):
            for name, p in rnn.named_parameters():
                p.copy_(getattr(torch_gru, name.replace("l0", f"l{k}")))
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    ours.eval(), torch_gru.eval()
    for a, b in zip(ours(x), torch_gru(x)):
        assert_close(a, b, 1e-12)
    twin = DeepRNN("gru", 3, 4, 3, residual=False, dropout=0.3, layers=torch.nn).double()
    twin.load_state_dict(ours.state_dict())
    ours.train(), twin.train()
    torch.manual_seed(5)
    a = ours(x)[0]
    torch.manual_seed(5)
    assert_close(a, twin(x)[0], 1e-12, "dropout")


def test_batch_first_and_initial_state():
    ours = DeepRNN("lstm", 3, 4, 2, batch_first=True).double()
    twin = DeepRNN("lstm", 3, 4, 2, batch_first=True, layers=torch.nn).double()
    twin.load_state_dict(ours.state_dict())
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    hx = (torch.randn(2, 2, 4, dtype=torch.float64), torch.randn(2, 2, 4, dtype=torch.float64))
    (a, (h, c)), (b, (h2, c2)) = ours(x, hx), twin(x, hx)
    assert a.shape == (2, 5, 4)
    for u, v in ((a, b), (h, h2), (c, c2)):
        assert_close(u, v, 1e-12)


def test_bad_arguments():
    with pytest.raises(ValueError, match="cell must be"):
        DeepRNN("tree", 3, 4, 2)
    with pytest.raises(ValueError, match="num_layers"):
        DeepRNN("gru", 3, 4, 0)
    with pytest.raises(ValueError, match="dropout"):
        DeepRNN("gru", 3, 4, 2, dropout=1.0)
