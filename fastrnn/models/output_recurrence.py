"""Recurrence through the output (the lecture's "connections from the previous output to
the current state"), trained with teacher forcing, run free for generation.

    h_t = f(W_hx x_t + W_ho o_{t-1} + W_hh h_{t-1} + b)      recurrence="both"
    h_t = f(W_hx x_t + W_ho o_{t-1} + b)                     recurrence="output" (no W_hh)
    o_t = W_oh h_t + b_o

Teacher forcing feeds the ground truth y_{t-1} in place of o_{t-1}, so every step's input
[x_t; y_{t-1}] is known in advance: with recurrence="both" the whole pass is ONE fused
RNN layer call (W_ih = [W_hx, W_ho]); with recurrence="output" nothing recurs at all and
the pass is one GEMM over all steps: the time steps decouple, which is the lecture's
point about training such nets in parallel. Free running (``generate``) feeds o_{t-1}
back, one fused RNN-cell step per time step.

    python -m fastrnn.models.output_recurrence    # the exposure-bias demo (docs: Models, output recurrence)
"""
import torch
import torch.nn.functional as F
from torch import nn

import fastrnn
from fastrnn import functional


class OutputRecurrentRNN(nn.Module):
    """Args: input_size (0: no x_t), hidden_size, output_size, recurrence ("both" or
    "output"), nonlinearity ("tanh" or "relu"), layers (``fastrnn`` or ``torch.nn``).

    forward(y_prev [T, B, O], x [T, B, I] or None, h0 [B, H] or None) -> o [T, B, O]
    (teacher-forced: y_prev[t] = y_{t-1}, the ground truth before step t).
    generate(o0 [B, O], steps, x=None, h0=None) -> o [steps, B, O] (free running).

    Raises:
        ValueError: an unknown recurrence or nonlinearity.
    """

    def __init__(self, input_size, hidden_size, output_size, recurrence="both",
                 nonlinearity="tanh", layers=fastrnn):
        super().__init__()
        if recurrence not in ("both", "output"):
            raise ValueError(f"recurrence must be 'both' or 'output', got {recurrence!r}")
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.input_size, self.hidden_size = input_size, hidden_size
        self.recurrence, self.nonlinearity = recurrence, nonlinearity
        if recurrence == "both":                     # W_ih = [W_hx, W_ho], W_hh
            self.rnn = layers.RNN(input_size + output_size, hidden_size, nonlinearity=nonlinearity)
        else:                                        # [W_hx, W_ho] only
            self.inp = nn.Linear(input_size + output_size, hidden_size)
        self.out = nn.Linear(hidden_size, output_size)

    def _f(self, v):
        return torch.tanh(v) if self.nonlinearity == "tanh" else torch.relu(v)

    def _inputs(self, o, x):
        return o if x is None else torch.cat([x, o], dim=-1)

    def forward(self, y_prev, x=None, h0=None):
        z = self._inputs(y_prev, x)                               # [T, B, I + O]
        if self.recurrence == "output":
            return self.out(self._f(self.inp(z)))                 # one GEMM for all steps
        h, _ = self.rnn(z, None if h0 is None else h0.unsqueeze(0))   # one fused layer call
        return self.out(h)

    def _stepper(self, like):
        """-> step(z, h) -> h': one fused RNN-cell step (torch.nn.RNNCell's kernel for the
        torch.nn build; no recurrence through h for recurrence="output")."""
        if self.recurrence == "output":
            return lambda z, h: self._f(self.inp(z))
        w = self.rnn._flat_weights
        if isinstance(self.rnn, fastrnn.RNN):
            return functional.stepper("rnn", w, like, nonlinearity=self.nonlinearity,
                                      backend=self.rnn.backend)
        cell = torch._VF.rnn_tanh_cell if self.nonlinearity == "tanh" else torch._VF.rnn_relu_cell
        return lambda z, h: cell(z, h, *w)

    def generate(self, o0, steps, x=None, h0=None):
        """Free running: o_{t-1} (starting from o0) is fed back in place of y_{t-1}."""
        h = o0.new_zeros(o0.shape[0], self.hidden_size) if h0 is None else h0
        o, outs = o0, []
        step = self._stepper(self._inputs(o0, None if x is None else x[0]))
        for t in range(steps):
            h = step(self._inputs(o, None if x is None else x[t]), h)
            o = self.out(h)
            outs.append(o)
        return torch.stack(outs)

    def warm_state(self, y_prev, x=None):
        """The state after a teacher-forced prefix (to start free running from real data)."""
        if self.recurrence == "output":
            return None
        _, h = self.rnn(self._inputs(y_prev, x))
        return h[0]


# ------------------------------------------- the demo of the docs' output-recurrence page
def membrane_signal():
    """A real recording shipped with matplotlib: a membrane-potential trace (12000 samples),
    standardised. -> tensor [N]."""
    import numpy as np
    from matplotlib import cbook
    with cbook.get_sample_data("membrane.dat") as f:
        s = torch.from_numpy(np.fromfile(f, dtype=np.float32).copy())
    return (s - s.mean()) / s.std()


def demo(recurrence="both", hidden=64, steps=1500, window=200, batch=32, seed=0,
         horizons=(1, 10, 50, 200), log=print):
    """Train on the first 80% of the trace with teacher forcing; on the last 20%, compare
    the one-step (teacher-forced) error with the free-running error at growing horizons.
    Returns {horizon: (teacher-forced MSE, free-running MSE)} (standardised units)."""
    torch.manual_seed(seed)
    s = membrane_signal()
    split = int(0.8 * len(s))
    train, test = s[:split], s[split:]
    model = OutputRecurrentRNN(0, hidden, 1, recurrence=recurrence)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(steps):
        starts = torch.randint(0, len(train) - window - 1, (batch,))
        seg = torch.stack([train[i:i + window + 1] for i in starts], dim=1).unsqueeze(-1)
        loss = F.mse_loss(model(seg[:-1]), seg[1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if log and (step + 1) % (steps // 5) == 0:
            log(f"step {step + 1}: teacher-forced training MSE {loss.item():.4f}")
    # evaluation: from many points of the test trace, warm up on 100 true samples, then
    # predict H steps ahead, fed either the truth (teacher-forced) or itself (free)
    warm, H = 100, max(horizons)
    starts = torch.arange(0, len(test) - warm - H - 1, 25)
    seg = torch.stack([test[i:i + warm + H + 1] for i in starts], dim=1).unsqueeze(-1)
    with torch.no_grad():
        tf = model(seg[:-1])[warm - 1:warm - 1 + H]             # predictions of seg[warm:]
        h = model.warm_state(seg[:warm - 1])
        free = model.generate(seg[warm - 1], H, h0=h)
    truth = seg[warm:warm + H]
    out = {}
    for k in horizons:
        out[k] = (F.mse_loss(tf[k - 1], truth[k - 1]).item(),
                  F.mse_loss(free[k - 1], truth[k - 1]).item())
    return out


def main():
    for rec in ("both", "output"):
        print(f"recurrence={rec!r}")
        res = demo(rec)
        print("| horizon (steps ahead) | teacher-forced MSE | free-running MSE |")
        print("|---|---|---|")
        for k, (a, b) in res.items():
            print(f"| {k} | {a:.4f} | {b:.4f} |")


if __name__ == "__main__":
    main()
