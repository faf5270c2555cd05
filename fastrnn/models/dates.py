"""A real seq2seq task: date normalisation, free-form dates -> ISO ``YYYY-MM-DD``.

Sources are dates rendered by ``babel`` (CLDR locale data, shipped with the package:
nothing is downloaded) in several locales and formats: "Tuesday, March 7, 2023",
"7 mars 2023", "07.03.23", "7 de marzo de 2023", ... Dates run from 1950 to 2049, so a
two-digit year names one century. A (locale, format) pair is used only if none of its
renderings means another date in a pair already admitted (en_US's M/d/yy and es_ES's
d/M/yy cannot both be in: "3/7/23" would be two dates), so the task has one answer.

    python -m fastrnn.models.dates [--steps N]   # train, then print held-out accuracy
"""
import argparse
import datetime
import random
import time

import torch
import torch.nn.functional as F

LOCALES = ("en_US", "en_GB", "fr_FR", "de_DE", "es_ES", "it_IT", "pt_PT", "nl_NL")
FORMATS = ("short", "medium", "long", "full", "d MMM y", "EEE d MMMM y", "dd/MM/y", "y/MM/dd")
FIRST, DAYS = datetime.date(1950, 1, 1), 36524          # 1950-01-01 .. 2049-12-31
PAD, BOS, EOS, UNK = 0, 1, 2, 3
TARGET_CHARS = "0123456789-"


def _render(date, locale, fmt):
    from babel.dates import format_date
    return format_date(date, fmt, locale=locale)


def formats():
    """-> (the unambiguous (locale, format) pairs in a fixed order (see the module doc),
    the source Vocab: every character they render, over a probe of dates that meets every
    month and weekday, so the vocabulary does not depend on the training sample)."""
    probe = [FIRST + datetime.timedelta(days=d) for d in range(0, DAYS, 17)]
    meaning, kept = {}, []
    for locale in LOCALES:
        for fmt in FORMATS:
            shown = {_render(d, locale, fmt): d for d in probe}
            if len(shown) < len(probe) or any(meaning.get(s, d) != d for s, d in shown.items()):
                continue
            meaning.update(shown)
            kept.append((locale, fmt))
    return kept, Vocab("".join(meaning))


class Vocab:
    """Characters <-> ids; 0-3 are pad, bos, eos, unk."""

    def __init__(self, chars):
        self.chars = ["<pad>", "<bos>", "<eos>", "<unk>"] + sorted(set(chars))
        self.index = {ch: i for i, ch in enumerate(self.chars)}

    def __len__(self):
        return len(self.chars)

    def encode(self, text):
        return [self.index.get(ch, UNK) for ch in text]

    def decode(self, ids):
        out = []
        for i in ids:
            if i == EOS:
                break
            if i > UNK:
                out.append(self.chars[i])
        return "".join(out)


def make_data(n, seed, pairs):
    """n (source text, ISO date) examples, dates and formats drawn uniformly."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        date = FIRST + datetime.timedelta(days=rng.randrange(DAYS))
        locale, fmt = rng.choice(pairs)
        out.append((_render(date, locale, fmt), date.isoformat()))
    return out


def tensors(examples, src_vocab, tgt_vocab):
    """-> src [N, S] (0-padded), src_lengths [N], tgt [N, 12] = bos, 10 chars, eos."""
    ids = [src_vocab.encode(s) for s, _ in examples]
    lengths = torch.tensor([len(i) for i in ids])
    src = torch.zeros(len(ids), int(lengths.max()), dtype=torch.int64)
    for row, i in enumerate(ids):
        src[row, :len(i)] = torch.tensor(i)
    tgt = torch.tensor([[BOS] + tgt_vocab.encode(t) + [EOS] for _, t in examples])
    return src, lengths, tgt


def accuracy(model, src, lengths, tgt, tgt_vocab, beam=1, batch=500):
    """Exact-match accuracy of decoded ISO dates."""
    model.eval()
    right = 0
    for i in range(0, len(src), batch):
        out, _ = model.generate(src[i:i + batch], lengths[i:i + batch], beam=beam, max_len=12)
        for row, ref in zip(out.tolist(), tgt[i:i + batch, 1:].tolist()):
            right += tgt_vocab.decode(row) == tgt_vocab.decode(ref)
    model.train()
    return right / len(src)


def build(seed=0, n_train=60000, n_test=2000, layers=None, **model_args):
    """-> (model, data dict) for the task; ``layers`` as in Seq2Seq."""
    from .seq2seq import Seq2Seq
    pairs, src_vocab = formats()
    train, test = make_data(n_train, seed, pairs), make_data(n_test, seed + 1, pairs)
    tgt_vocab = Vocab(TARGET_CHARS)
    torch.manual_seed(seed)
    args = dict(embed=32, hidden=128, bidirectional=True, bos=BOS, eos=EOS)
    args.update(model_args)
    if layers is not None:
        args["layers"] = layers
    model = Seq2Seq(len(src_vocab), len(tgt_vocab), **args)
    return model, dict(pairs=pairs, src_vocab=src_vocab, tgt_vocab=tgt_vocab,
                       train=tensors(train, src_vocab, tgt_vocab),
                       test=tensors(test, src_vocab, tgt_vocab))


def train(model, data, steps=1500, batch=128, lr=3e-3, sampling_prob=0.0, log_every=0, seed=0):
    """Adam with teacher forcing (clipped to global norm 1); -> seconds spent training."""
    src, lengths, tgt = data["train"]
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(len(src), (batch,), generator=gen)
        s, n, y = src[idx], lengths[idx], tgt[idx]
        s = s[:, :int(n.max())]
        logits = model(s, n, y[:, :-1], sampling_prob=sampling_prob)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if log_every and (step + 1) % log_every == 0:
            print(f"step {step + 1}/{steps}  loss {loss.item():.4f}  "
                  f"{time.perf_counter() - start:.0f} s", flush=True)
    return time.perf_counter() - start


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--beam", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    model, data = build(seed=args.seed)
    print(f"{len(data['pairs'])} locale/format pairs, e.g. "
          + "; ".join(s for s, _ in make_data(4, 99, data["pairs"])))
    secs = train(model, data, steps=args.steps, log_every=max(1, args.steps // 10), seed=args.seed)
    acc = accuracy(model, *data["test"], data["tgt_vocab"], beam=args.beam)
    print(f"trained {args.steps} steps in {secs:.0f} s; held-out exact match {acc:.1%}")
    src, lengths, _ = data["test"]
    out, _ = model.generate(src[:5], lengths[:5], beam=args.beam, max_len=12)
    for s, n, o in zip(src[:5].tolist(), lengths[:5].tolist(), out.tolist()):
        print(f"  {data['src_vocab'].decode(s[:n])!r:>40} -> {data['tgt_vocab'].decode(o)}")


if __name__ == "__main__":
    main()
