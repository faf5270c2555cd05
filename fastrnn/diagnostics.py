"""Gradient flow through time, read from the BPTT kernels (the lecture's vanishing and
exploding gradients).

``gradient_flow(module, input, loss_fn)`` runs one forward and backward of ``module`` and
returns, for every recurrent layer call, layer and direction, ||dL/dh_t|| at every step t.
The numbers come from the backward kernels themselves: each ``<cell>_bwd`` launcher has an
optional ``grad_states`` output where the kernel writes the dL/dh_t it carries back anyway,
so the sequence is not run again (its cost: ``python -m bench --sections models``).

``elman_bound(rnn, input)`` sets the lecture's bound for an Elman tanh RNN,
||dh_t/dh_k|| <= (beta_W beta_h)^(t-k) with beta_W = ||W_hh||_2 and beta_h = max |f'| along
the sequence, beside the decay rate measured from the kernels.

    python -m fastrnn.diagnostics --demo [--out gradient_flow.png]

Exploding gradients are tamed by clipping their global norm, one line of torch between
backward and the optimizer step: ``torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)``.
"""
import argparse
import functools
import math
from dataclasses import dataclass

import torch

from .autograd import StateGradients


@dataclass
class Flow:
    """dL/dh_t of one layer call, layer and direction, as the backward kernel wrote it:
    ``grad`` [T, B, P]. ``norms`` [T] (float64): ||dL/dh_t|| over the batch and the units
    at each step t, in the input's time order (the reverse direction too); ``per_row``
    [T, B]: each sequence's own. Both are formed when first read, so gradient_flow itself
    costs only the kernels' extra store."""
    call: int
    module: str
    layer: int
    direction: int
    grad: torch.Tensor

    @functools.cached_property
    def per_row(self):
        # float64: a vanishing gradient's squares underflow float32 (1e-30 and below)
        return self.grad.double().norm(dim=2)

    @functools.cached_property
    def norms(self):
        return self.per_row.norm(dim=1)

    @property
    def name(self):
        where = self.module or f"call {self.call}"
        return f"{where} layer {self.layer}" + (" reverse" if self.direction else "")


def _name_calls(module, rec):
    """Forward hooks that label each fused layer call with the fastrnn module making it."""
    from .nn import _SequenceMixin
    handles = []
    for name, m in module.named_modules():
        if isinstance(m, _SequenceMixin):
            def pre(*_, name=name):
                rec.where["module"] = name or type(m).__name__

            def post(*_):
                rec.where["module"] = ""
            handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    return handles


def gradient_flow(module, input, loss_fn):
    """One forward and backward of ``module``; -> list of Flow, one per layer call, layer
    and direction, in forward order.

    Args:
        module: any torch module whose recurrent layers are fastrnn's (RNN/GRU/LSTM,
            fastrnn.models, or fastrnn.functional calls), on any backend.
        input: the module's input (a tuple is unpacked into the call).
        loss_fn: output -> scalar loss.
    Parameter gradients are computed (the backward kernels must run) but not stored in
    ``.grad``: the module is left as it was.

    Raises:
        ValueError: no parameter requires grad, or loss_fn does not return a scalar.
        RuntimeError: no fastrnn recurrent layer ran in the module.
    """
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise ValueError("gradient_flow needs a module with parameters that require grad")
    rec = StateGradients()
    rec.where["module"] = ""
    handles = _name_calls(module, rec)
    try:
        with rec, torch.enable_grad():
            out = module(*input) if isinstance(input, tuple) else module(input)
            loss = loss_fn(out)
        if loss.dim() != 0:
            raise ValueError(f"loss_fn must return a scalar, got shape {tuple(loss.shape)}")
        torch.autograd.grad(loss, params, allow_unused=True)
    finally:
        for h in handles:
            h.remove()
    if not rec.entries:
        raise RuntimeError("no fastrnn recurrent layer ran: gradient_flow reads what "
                           "fastrnn's backward launchers record (torch.nn layers record nothing)")
    flows = []
    for i, e in enumerate(rec.entries):
        if e["grad"] is None:                       # a call the loss does not depend on
            continue
        flows.append(Flow(i, e.get("module", ""), e.get("layer", 0), e.get("direction", 0),
                          e["grad"]))
    return flows


def decay_rate(norms, skip=1):
    """The per-step factor by which ||dL/dh_t|| shrinks (< 1) or grows (> 1) going back in
    time: exp of the least-squares slope of log-norm against (T - 1 - t), over steps
    before the last ``skip`` (where the loss enters)."""
    n = norms[:len(norms) - skip].double()
    ok = n > 0
    if ok.sum() < 2:
        return float("nan")
    k = torch.arange(len(n) - 1, -1, -1, dtype=torch.float64)[ok]
    y = n[ok].log()
    slope = ((k - k.mean()) * (y - y.mean())).sum() / ((k - k.mean()) ** 2).sum()
    return math.exp(slope)


def elman_bound(rnn, input, flow=None):
    """The lecture's bound for a one-layer Elman tanh RNN (fastrnn.RNN) on ``input``
    [T, B, I], beside the measured decay.

    Returns dict(beta_W = ||W_hh||_2, beta_h = max |f'(a_t)| over the sequence,
    bound = beta_W * beta_h (the per-step factor the bound allows),
    measured = decay_rate of ||dL/dh_t|| with the loss on the last step's output (or of
    ``flow`` if given)). The bound holds for the Jacobian product; measured <= bound."""
    if rnn.num_layers != 1 or rnn.nonlinearity != "tanh" or rnn.bidirectional:
        raise ValueError("elman_bound is for a one-layer, one-direction tanh RNN")
    if flow is None:
        flows = gradient_flow(rnn, input, lambda o: o[0][-1].sum())
        flow = flows[0]
    with torch.no_grad():
        out, _ = rnn(input)
        beta_h = (1 - out.double() ** 2).max().item()
        beta_w = torch.linalg.matrix_norm(rnn.weight_hh_l0.double(), ord=2).item()
    return dict(beta_W=beta_w, beta_h=beta_h, bound=beta_w * beta_h,
                measured=decay_rate(flow.norms))


# ------------------------------------------------------------------ the demo
def _scaled_rnn(H, radius, seed):
    """W_hh = radius x a random orthogonal matrix (spectral radius and 2-norm both equal
    radius), no biases and input weights scaled by 0.01, so the tanh works near its linear
    regime, where the lecture's analysis is sharp (saturation would shrink f' and hide the
    explosion; with torch's init and radius 1.5 the measured rate stays below 1)."""
    from .nn import RNN
    torch.manual_seed(seed)
    rnn = RNN(H, H)
    with torch.no_grad():
        rnn.weight_hh_l0.copy_(torch.linalg.qr(torch.randn(H, H))[0] * radius)
        rnn.weight_ih_l0.mul_(0.01)
        rnn.bias_ih_l0.zero_()
        rnn.bias_hh_l0.zero_()
    return rnn


def demo(out="gradient_flow.png", T=100, B=16, H=64, seed=0):
    """Writes the figure: ||dL/dh_t|| against t, loss on the last step, (left) an Elman tanh
    RNN with W_hh scaled to spectral radius 0.5, 1.0, 1.5 (``_scaled_rnn``); (right) LSTM
    against RNN (torch's default init) on the same sequence. Returns the figures plotted."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .nn import LSTM, RNN
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, H, generator=g)
    last = lambda o: o[0][-1].sum()  # noqa: E731  (loss on the last step's output)
    results = {}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for radius in (0.5, 1.0, 1.5):
        rnn = _scaled_rnn(H, radius, seed)
        flow = gradient_flow(rnn, x, last)[0]
        b = elman_bound(rnn, x, flow)
        results[f"RNN tanh, spectral radius {radius}"] = dict(norms=flow.norms, **b)
        axes[0].semilogy(flow.norms, label=f"radius {radius}: measured x{b['measured']:.3f}"
                         f"/step, bound x{b['bound']:.3f}")
    axes[0].set(title="Elman tanh RNN: ||dL/dh_t|| (loss on step T)", xlabel="t",
                ylabel="||dL/dh_t||")
    axes[0].legend(fontsize=8)
    torch.manual_seed(seed)
    for name, layer in (("RNN tanh", RNN(H, H)), ("LSTM", LSTM(H, H))):
        flow = gradient_flow(layer, x, last)[0]
        facts = elman_bound(layer, x, flow) if name == "RNN tanh" else \
            dict(measured=decay_rate(flow.norms))
        results[f"{name}, torch init"] = dict(norms=flow.norms, **facts)
        axes[1].semilogy(flow.norms, label=f"{name}: x{decay_rate(flow.norms):.3f}/step")
    axes[1].set(title="LSTM against RNN, same sequence, torch's init", xlabel="t")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return results


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m fastrnn.diagnostics", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo", action="store_true", help="write the gradient-flow figure")
    p.add_argument("--out", default="gradient_flow.png")
    a = p.parse_args(argv)
    if not a.demo:
        p.print_help()
        return 0
    res = demo(a.out)
    print("| model | ||dL/dh_0|| / ||dL/dh_{T-2}|| | measured factor per step back | bound "
          "beta_W beta_h |")
    print("|---|---|---|---|")
    for name, r in res.items():
        n = r["norms"]
        bound = f"{r['bound']:.3f} ({r['beta_W']:.3f} x {r['beta_h']:.3f})" if "bound" in r \
            else "–"
        print(f"| {name} | {(n[0] / n[-2]).item():.3g} | {r['measured']:.3f} | {bound} |")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
