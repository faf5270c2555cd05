"""A model-level case on real data: a character-level language model.

Corpus: the Python standard library's own sources (every machine with Python has
them), read as bytes in sorted path order, so the data is the same on every run
of one Python version. Model (the lecture's char-LM, fastrnn.models.lm.LanguageModel):
Embedding(256, 64) -> 2-layer LSTM(hidden 256) -> Linear(256, 256), cross-entropy on the
next byte,
SGD. Each provider trains from the same initial weights on the same batches:

- one training step: forward, loss, backward, optimizer step (median of repeats);
- an epoch-slice: ``steps`` consecutive batches walking through the corpus,
  timed as a whole, data preparation included -> tokens per second end to end.

The losses of the two providers after the slice are reported side by side: with
the same weights and data they must agree (a cheap end-to-end correctness check).
"""
import statistics
import sysconfig
import time
from pathlib import Path

import torch

VOCAB, EMBED, HIDDEN, LAYERS = 256, 64, 256, 2


def corpus(max_bytes=4 << 20):
    """The first ``max_bytes`` of the standard library's .py files, as uint8 tokens."""
    root = Path(sysconfig.get_paths()["stdlib"])
    chunks, size = [], 0
    for path in sorted(root.rglob("*.py")):
        if "site-packages" in path.parts or "test" in path.parts:
            continue
        data = path.read_bytes()
        chunks.append(data)
        size += len(data)
        if size >= max_bytes:
            break
    return torch.frombuffer(bytearray(b"".join(chunks)[:max_bytes]), dtype=torch.uint8).long()


def _model(layers):
    from fastrnn.models.lm import LanguageModel
    return LanguageModel(VOCAB, "lstm", EMBED, HIDDEN, LAYERS, layers=layers)


def models(providers):
    import fastrnn
    torch.manual_seed(0)
    base = _model(torch.nn)
    out = {}
    for p in providers:
        m = base if p == "torch" else _model(fastrnn)
        m.load_state_dict(base.state_dict())
        if p != "torch":
            m.rnn.backend = {"fastrnn-numba": "numba", "reference": "reference"}[p]
        out[p] = m
    return out


def _batch(data, i, T, B):
    # B streams spread over the corpus, each advancing T bytes per step
    stride = (len(data) - 1) // B
    starts = torch.arange(B) * stride + (i * T) % (stride - T)
    idx = starts[None, :] + torch.arange(T + 1)[:, None]
    seq = data[idx]
    return seq[:-1], seq[1:]


def _train_step(model, opt, x, y):
    opt.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(model(x)[0].reshape(-1, VOCAB), y.reshape(-1))
    loss.backward()
    opt.step()
    return float(loss.detach())


def run(providers, T=128, B=32, steps=20, repeats=5):
    """{provider: dict(step_ms, slice_s, tokens_per_s, loss)}."""
    data = corpus()
    results = {}
    for p, model in models(providers).items():
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        x, y = _batch(data, 0, T, B)
        _train_step(model, opt, x, y)                # warm-up: kernels loaded, not timed
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            _train_step(model, opt, x, y)
            times.append(time.perf_counter() - t0)
        # the slice restarts from the initial weights so that losses are comparable
        model.load_state_dict(models(["torch"])["torch"].state_dict())
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        t0 = time.perf_counter()
        for i in range(steps):
            loss = _train_step(model, opt, *_batch(data, i, T, B))
        elapsed = time.perf_counter() - t0
        results[p] = dict(step_ms=statistics.median(times) * 1e3, slice_s=elapsed,
                          tokens_per_s=steps * T * B / elapsed, loss=loss)
    return results
