"""Model-level benchmarks of fastrnn.models (section ``models``): fastrnn against the same
model built with torch.nn, same weights, same data, providers alternated in every repeat.

- seq2seq training: the date-normalisation model (fastrnn.models.dates: bidirectional GRU
  encoder, GRU decoder, E=32, H=C=128), one Adam step at batch 128, teacher-forced;
  target tokens per second.
- decoding step, at batch 1 and 64 x beam 5 = 320 rows, under no_grad: the GRU cell alone
  on the same input [e; c] (fastrnn's fused step, functional.gru_cell, against
  torch.nn.GRUCell), and the model's decoder step (fastrnn folds c's projection into the
  step kernel's per-row input bias; the torch.nn build runs GRUCell's kernel on [e; c]);
  and whole beam-search decoding (``Seq2Seq.generate``, encoder included), output tokens
  per second at batch 1 x beam 1 (greedy) and batch 64 x beam 5.
- torch.compile: a training step of the char-LM (the ``charlm`` section's model and
  batch: Embedding 64 -> 2-layer LSTM H=256 -> Linear, T=128, B=32, SGD), eager and
  compiled (inductor), fastrnn and torch.nn side by side; the first compiled step (the
  compile) apart. fastrnn compiles as one graph (each layer direction one custom op,
  Dynamo's ``allow_rnn`` set for its calls); torch.nn under torch's defaults, which run
  its LSTM eagerly between graphs (with ``allow_rnn`` Dynamo unrolled torch's LSTM: 269 s
  to compile here, and a slower step).
- gradient-flow diagnostics: what ``fastrnn.diagnostics.gradient_flow`` costs over a
  plain forward+backward, as a share of the backward.
- depth sweep: plain against residual DeepRNN stacks of 2/4/8/16 layers on a byte-level
  LM: first-layer gradient norm at init, held-out loss after a fixed budget.
(The language model's tokens/s is the ``charlm`` section.)
"""
import statistics
import time

import torch
import torch.nn.functional as F


def alternate(fns, repeats, warmup=2, block=1):
    """{name: median seconds per call}: every callable warmed up, then ``repeats`` turns
    each, in alternating order (drift hits all alike); a turn is ``block`` calls in a
    row, timed together, so that short calls are measured in a steady state rather than
    right after the other provider (whose idle-spinning thread pool slows the next
    microseconds)."""
    for f in fns.values():
        for _ in range(warmup):
            f()
    times = {k: [] for k in fns}
    names = list(fns)
    for r in range(repeats):
        for k in (names if r % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            for _ in range(block):
                fns[k]()
            times[k].append((time.perf_counter() - t0) / block)
    return {k: statistics.median(v) for k, v in times.items()}


def _seq2seq_pair():
    from fastrnn.models import dates
    ours, data = dates.build(n_train=4000, n_test=640)
    twin, _ = dates.build(n_train=10, n_test=10, layers=torch.nn)
    twin.load_state_dict(ours.state_dict())
    return {"fastrnn-numba": ours, "torch": twin}, data


def seq2seq(quick=False):
    """-> list of (metric, unit, {provider: value}, extra columns)."""
    models, data = _seq2seq_pair()
    out = []
    src, lengths, tgt = data["train"]
    B = 128
    s, n, y = src[:B, :int(lengths[:B].max())], lengths[:B], tgt[:B]
    steps = {}
    for p, m in models.items():
        opt = torch.optim.Adam(m.parameters(), lr=1e-3)

        def step(m=m, opt=opt):
            logits = m(s, n, y[:, :-1])
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y[:, 1:].reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        steps[p] = step
    t = alternate(steps, 5 if quick else 20)
    tokens = B * (y.shape[1] - 1)
    out.append((f"seq2seq training, target tokens/s (batch {B}, source {s.shape[1]} chars max, "
                f"target {tokens // B})", "tokens/s", {p: tokens / v for p, v in t.items()}))

    I = models["torch"].embed_size + models["torch"].context_size
    H = models["torch"].decoder.hidden_size
    cell = torch.nn.GRUCell(I, H)
    with torch.no_grad():
        for src_p, dst in zip(models["fastrnn-numba"].decoder._flat_weights, cell.parameters()):
            dst.copy_(src_p)
    from fastrnn import functional
    w = models["fastrnn-numba"].decoder._flat_weights
    test_src, test_len, _ = data["test"]
    for N, label in ((1, "batch 1"), (320, "batch 64 x beam 5")):
        x, h = torch.randn(N, I), torch.randn(N, H)
        with torch.no_grad():
            t = alternate({"fastrnn-numba": lambda: functional.gru_cell(x, h, w),
                           "torch": lambda: cell(x, h)}, 20 if quick else 100, warmup=20,
                          block=20)
            out.append((f"GRUCell step alone ({label}; input [e; c], I={I}, H={H})", "us",
                        {p: v * 1e6 for p, v in t.items()}))
            c = models["torch"].encode(test_src[:N], test_len[:N])
            e = models["torch"].tgt_embed(test_src[:N, 0] % 10 + 3)
            steps = {p: m._stepper(c) for p, m in models.items()}
            t = alternate({p: (lambda f=f: f(e, h)) for p, f in steps.items()},
                          20 if quick else 100, warmup=20, block=20)
        out.append((f"decoder step of the model ({label}; fastrnn: c folded into a per-row "
                    "input bias, torch.nn.GRUCell on [e; c])", "us",
                    {p: v * 1e6 for p, v in t.items()}))
    test_src, test_len, _ = data["test"]
    for B, beam in ((1, 1), (64, 5)):
        calls, toks = {}, {}
        for p, m in models.items():
            m.eval()

            def dec(m=m, p=p):
                tok, _ = m.generate(test_src[:B], test_len[:B], beam=beam, max_len=12)
                toks[p] = tok.shape[1]
            calls[p] = dec
        t = alternate(calls, 5 if quick else 20, block=10 // beam)
        assert toks["fastrnn-numba"] == toks["torch"]
        out.append((f"beam decoding (batch {B} x beam {beam}, encoder included), output "
                    "tokens/s", "tokens/s", {p: B * toks[p] / v for p, v in t.items()}))
    return out


def compiled_lm(quick=False):
    """-> rows: the char-LM training step eager and under torch.compile (module docstring)."""
    import torch._dynamo
    from . import charlm
    T, B = 128, 32
    x, y = charlm._batch(charlm.corpus(1 << 20), 0, T, B)
    steps, first = {}, {}
    for mode in ("eager", "compiled"):
        torch._dynamo.reset()
        for p, model in charlm.models(["fastrnn-numba", "torch"]).items():
            opt = torch.optim.SGD(model.parameters(), lr=0.5)
            run = torch.compile(model) if mode == "compiled" else model
            allow = mode == "compiled" and p != "torch"

            def step(run=run, opt=opt, allow=allow):
                with torch._dynamo.config.patch(allow_rnn=allow):
                    loss = F.cross_entropy(run(x)[0].reshape(-1, charlm.VOCAB), y.reshape(-1))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            t0 = time.perf_counter()
            step()
            first[mode, p] = time.perf_counter() - t0
            steps[mode, p] = step
    t = alternate(steps, 3 if quick else 10)
    what = f"char-LM training step (E={charlm.EMBED}, {charlm.LAYERS}-layer LSTM " \
           f"H={charlm.HIDDEN}, T={T}, B={B}, SGD)"
    out = [(f"{what}, {mode}", "ms", {p: t[mode, p] * 1e3 for p in ("fastrnn-numba", "torch")})
           for mode in ("eager", "compiled")]
    out.append((f"{what}: first compiled step, compile included (fastrnn: one graph; "
                "torch.nn: Dynamo leaves its LSTM to eager)", "s",
                {p: first["compiled", p] for p in ("fastrnn-numba", "torch")}))
    return out


def diagnostics(quick=False):
    """The cost of gradient_flow (dL/dh_t read from the backward kernels) over a plain
    forward+backward of the same module, fastrnn-numba, per cell at the middle shape
    (the norms, formed when first read, are not counted: a user reads them or not)."""
    import fastrnn
    from fastrnn.diagnostics import gradient_flow
    T, B, H = 100, 32, 128
    out = []
    x = torch.randn(T, B, H)
    for name, cls in (("rnn", fastrnn.RNN), ("gru", fastrnn.GRU), ("lstm", fastrnn.LSTM)):
        torch.manual_seed(0)
        m = cls(H, H)
        params = list(m.parameters())

        def loss(o):
            return o[0].square().mean()

        def fwd():
            with torch.enable_grad():
                return loss(m(x))

        def plain():
            torch.autograd.grad(fwd(), params)
        t = alternate({"forward": fwd, "forward+backward": plain,
                       "gradient_flow": lambda: gradient_flow(m, x, loss)},
                      5 if quick else 30, block=2)
        bwd = t["forward+backward"] - t["forward"]
        extra = t["gradient_flow"] - t["forward+backward"]
        out.append((f"gradient_flow overhead, {name} ({T}, {B}, {H}): over the backward "
                    f"(fwd+bwd {t['forward+backward'] * 1e3:.1f} ms, of which backward "
                    f"{bwd * 1e3:.1f} ms)", "%", {"fastrnn-numba": 100 * extra / bwd}))
    return out


def _lm_batches(T, B, steps, seed=0):
    from fastrnn.models.lm import stdlib_corpus
    text = stdlib_corpus(1 << 19).encode("utf-8", "replace")
    ids = torch.frombuffer(bytearray(text), dtype=torch.uint8).long()
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps + 1):
        starts = torch.randint(0, len(ids) - T - 1, (B,), generator=g)
        seq = torch.stack([ids[i:i + T + 1] for i in starts], dim=1)
        yield seq[:-1], seq[1:]


def depth_sweep(quick=False, depths=(2, 4, 8, 16), cell="gru", H=64, T=64, B=32):
    """The lecture's claim on residual stacks, measured: a byte-level LM on the standard
    library's sources (Embedding -> DeepRNN -> Linear), plain against residual, same
    init seed and batches. Per depth: the gradient norm reaching the first layer (at
    init, one batch) and the held-out loss after a fixed budget of Adam steps."""
    from fastrnn.models import DeepRNN
    steps = 30 if quick else 300
    out = []
    held_x, held_y = next(_lm_batches(T, 64, 0, seed=99))
    for depth in depths:
        for residual in (False, True):
            torch.manual_seed(0)
            embed, deep, head = torch.nn.Embedding(256, H), \
                DeepRNN(cell, H, H, depth, residual=residual), torch.nn.Linear(H, 256)
            params = [*embed.parameters(), *deep.parameters(), *head.parameters()]
            opt = torch.optim.Adam(params, lr=2e-3)

            def loss_of(x, y):
                logits = head(deep(embed(x))[0])
                return F.cross_entropy(logits.reshape(-1, 256), y.reshape(-1))
            first = None
            t0 = time.perf_counter()
            for i, (x, y) in enumerate(_lm_batches(T, B, steps)):
                if i == steps:
                    break
                loss = loss_of(x, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if first is None:
                    first = torch.cat([p.grad.flatten() for p in deep.rnns[0].parameters()]).norm()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
            secs = time.perf_counter() - t0
            with torch.no_grad():
                held = loss_of(held_x, held_y).item()
            kind = "residual" if residual else "plain"
            out.append((f"depth sweep ({cell.upper()} H={H}, byte LM, T={T}, B={B}): depth {depth}, "
                        f"{kind}: first-layer gradient norm at init", "",
                        {"fastrnn-numba": first.item()}))
            out.append((f"depth sweep ({cell.upper()} H={H}, byte LM, T={T}, B={B}): depth {depth}, "
                        f"{kind}: held-out loss after {steps} steps ({secs:.0f} s)", "nats/byte",
                        {"fastrnn-numba": held}))
    return out


def run(quick=False):
    """Every model-level measurement: list of (metric, unit, {provider: value})."""
    return seq2seq(quick) + compiled_lm(quick) + diagnostics(quick) + depth_sweep(quick)
