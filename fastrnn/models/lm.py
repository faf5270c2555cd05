"""Language models on the fused layers: the model, its data, training and sampling.

The command line is ``python -m fastrnn.lm`` (fastrnn/lm.py). A model is
Embedding -> RNN/GRU/LSTM (layers, dropout) -> dropout -> Linear, the output layer
optionally tied to the embedding (Press & Wolf 2017). Its ``state_dict`` is torch's:
the same model built with ``layers=torch.nn`` loads it.
A checkpoint is ``torch.save`` of a dict: {"format": FORMAT, "config": ..., "vocab": [...],
"state_dict": ..., "epoch": n, "history": [...]}.
"""
import math
import re
import sys
import sysconfig
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import fastrnn
from fastrnn.cells import SEQUENCE

FORMAT = "fastrnn.lm/1"
CELLS = SEQUENCE
_WORD = re.compile(r"\w+|[^\w\s]|\n| +")


class LMError(Exception):
    """A user error (bad file, empty text, wrong checkpoint): the CLI prints it, no traceback."""


def stdlib_corpus(max_chars=1 << 20):
    """The standard library's own .py sources (on every machine with Python), in sorted
    path order, tests left out: the same text on every run of one Python version."""
    root = Path(sysconfig.get_paths()["stdlib"])
    parts, size = [], 0
    for path in sorted(root.rglob("*.py")):
        if "site-packages" in path.parts or "test" in path.parts or "tests" in path.parts:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        parts.append(text)
        size += len(text)
        if size >= max_chars:
            break
    return "".join(parts)[:max_chars]


def read_text(path):
    p = Path(path)
    if not p.is_file():
        raise LMError(f"no such file: {path}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise LMError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    if not text.strip():
        raise LMError(f"{path} is empty: nothing to learn from")
    return text


def tokenize(text, level):
    """char: every character; word: words, punctuation, newlines and runs of spaces."""
    if level == "char":
        return list(text)
    if level == "word":
        return _WORD.findall(text)
    raise LMError(f"level must be 'char' or 'word', got {level!r}")


class Vocab:
    def __init__(self, tokens, max_size=None):
        counts = {}
        for t in tokens:
            counts[t] = counts.get(t, 0) + 1
        kept = sorted(counts, key=lambda t: (-counts[t], t))[:max_size and max_size - 1]
        self.itos = ["<unk>"] + sorted(kept)
        self.stoi = {t: i for i, t in enumerate(self.itos)}

    def __len__(self):
        return len(self.itos)

    def encode(self, tokens):
        return torch.tensor([self.stoi.get(t, 0) for t in tokens], dtype=torch.int64)

    def decode(self, ids):
        return "".join(self.itos[i] for i in ids)


class LanguageModel(nn.Module):
    """Embedding -> ``cell`` (num_layers, dropout) -> dropout -> Linear over the vocabulary.

    ``tie``: the output layer shares the embedding's weight (needs embed == hidden).
    ``layers``: ``fastrnn`` or ``torch.nn``. forward(tokens [T, B], state=None) ->
    (logits [T, B, V], state).

    Raises:
        LMError: an unknown cell, or tied embeddings with embed != hidden.
    """

    def __init__(self, vocab_size, cell="lstm", embed=64, hidden=256, num_layers=2,
                 dropout=0.0, tie=False, layers=fastrnn):
        super().__init__()
        if cell not in CELLS:
            raise LMError(f"cell must be one of {CELLS}, got {cell!r}")
        if tie and embed != hidden:
            raise LMError(f"tied embeddings need embed == hidden, got {embed} and {hidden}")
        self.config = dict(vocab_size=vocab_size, cell=cell, embed=embed, hidden=hidden,
                           num_layers=num_layers, dropout=dropout, tie=tie)
        self.embed = nn.Embedding(vocab_size, embed)
        self.rnn = getattr(layers, cell.upper())(embed, hidden, num_layers=num_layers,
                                                 dropout=dropout)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, vocab_size)
        if tie:
            self.head.weight = self.embed.weight

    def forward(self, tokens, state=None):
        out, state = self.rnn(self.drop(self.embed(tokens)), state)
        return self.head(self.drop(out)), state


def batches(ids, batch, bptt):
    """Contiguous streams: ids cut into ``batch`` columns, walked ``bptt`` steps at a time
    (truncated BPTT; the state carries over, detached). Yields (x [T, B], y [T, B])."""
    n = (len(ids) - 1) // batch
    if n < 2:
        raise LMError(f"the text is too short: {len(ids)} tokens for batch {batch}")
    x = ids[:n * batch].view(batch, n).t()
    y = ids[1:n * batch + 1].view(batch, n).t()
    for i in range(0, n, bptt):
        yield x[i:i + bptt], y[i:i + bptt]


def _detach(state):
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


def evaluate(model, ids, batch, bptt):
    """Mean cross-entropy (nats per token) over ``ids``."""
    model.eval()
    total, count, state = 0.0, 0, None
    with torch.no_grad():
        for x, y in batches(ids, batch, bptt):
            logits, state = model(x, state)
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                                     reduction="sum").item()
            count += y.numel()
    model.train()
    return total / count


class Progress:
    """A one-line progress bar: percentage, loss, tokens/s and ETA (no dependency)."""

    def __init__(self, total, label, stream=sys.stderr):
        self.total, self.label, self.stream = total, label, stream
        self.start, self.done = time.perf_counter(), 0

    def update(self, n, tokens, loss):
        self.done += n
        dt = max(time.perf_counter() - self.start, 1e-9)
        frac = self.done / self.total
        eta = dt * (1 - frac) / max(frac, 1e-9)
        bar = "#" * int(24 * frac) + "." * (24 - int(24 * frac))
        self.stream.write(f"\r{self.label} [{bar}] {frac:4.0%}  loss {loss:.3f}  "
                          f"{tokens / dt:,.0f} tok/s  ETA {eta:4.0f} s ")
        self.stream.flush()

    def close(self):
        self.stream.write("\n")
        self.stream.flush()


def train(model, train_ids, valid_ids, *, epochs=1, batch=32, bptt=128, lr=2e-3, clip=1.0,
          max_steps=None, on_epoch=None, progress=True):
    """Adam, truncated BPTT, gradient clipping by global norm. Returns the history:
    one dict per epoch (train and validation loss and perplexity, tokens/s)."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    history = []
    steps = sum(1 for _ in batches(train_ids, batch, bptt))
    if max_steps:
        steps = min(steps, max_steps)
    for epoch in range(1, epochs + 1):
        bar = Progress(steps, f"epoch {epoch}/{epochs}") if progress else None
        state, total, count, start = None, 0.0, 0, time.perf_counter()
        for step, (x, y) in enumerate(batches(train_ids, batch, bptt)):
            if step >= steps:
                break
            logits, state = model(x, None if state is None else _detach(state))
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            total += loss.item() * y.numel()
            count += y.numel()
            if bar:
                bar.update(1, count, total / count)
        secs = time.perf_counter() - start
        if bar:
            bar.close()
        val = evaluate(model, valid_ids, batch, bptt)
        history.append(dict(epoch=epoch, train_loss=total / count, valid_loss=val,
                            valid_ppl=math.exp(val), tokens_per_s=count / secs, seconds=secs))
        if on_epoch:
            on_epoch(history)
    return history


def save(path, model, vocab, level, history):
    torch.save(dict(format=FORMAT, config=model.config, level=level, vocab=vocab.itos,
                    state_dict=model.state_dict(), epoch=len(history), history=history), path)


def load(path, layers=fastrnn):
    """-> (model, vocab, level) from a checkpoint written by ``save``; LMError if it is not one."""
    p = Path(path)
    if not p.is_file():
        raise LMError(f"no such checkpoint: {path}")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:                               # pickle, zip or torch errors alike
        raise LMError(f"{path} is not a checkpoint torch can read ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise LMError(f"{path} is not a fastrnn.lm checkpoint (no format {FORMAT!r})")
    model = LanguageModel(**ckpt["config"], layers=layers)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise LMError(f"{path}: the weights do not fit the model it describes: {e}") from None
    vocab = Vocab([])
    vocab.itos = list(ckpt["vocab"])
    vocab.stoi = {t: i for i, t in enumerate(vocab.itos)}
    return model, vocab, ckpt["level"]


@torch.no_grad()
def sample(model, vocab, level, prime, length, temperature=1.0, top_k=0, generator=None):
    """Continue ``prime`` by ``length`` tokens: the prime runs as one layer call, then one
    fused decoding step per token. Returns the generated text (prime excluded)."""
    if temperature <= 0:
        raise LMError(f"temperature must be > 0, got {temperature}")
    model.eval()
    ids = vocab.encode(tokenize(prime, level)) if prime else torch.tensor([0])
    logits, state = model(ids.unsqueeze(1))
    out = []
    for _ in range(length):
        z = logits[-1, 0] / temperature
        if top_k:
            kth = z.topk(min(top_k, len(z))).values[-1]
            z = z.masked_fill(z < kth, float("-inf"))
        nxt = torch.multinomial(F.softmax(z, -1), 1, generator=generator)
        out.append(int(nxt))
        logits, state = model(nxt.view(1, 1), state)
    return vocab.decode(out)
