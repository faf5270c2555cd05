"""python -m fastrnn.lm: train a language model on a text, and sample from it.

    python -m fastrnn.lm train [--text FILE] [--level char|word] [--cell lstm] ...
    python -m fastrnn.lm sample --checkpoint CKPT --prime "def " --temperature 0.8 --length 500

Without --text it trains on the Python standard library's own sources (on every machine).
Checkpoints (one per epoch, the latest also as ``last.pt``) hold torch state_dicts: the
same model built with torch.nn loads them (fastrnn.models.lm.load(path, layers=torch.nn)).
"""
import argparse
import json
import sys
from pathlib import Path

import torch

from fastrnn.models import lm


def _train(a):
    text = lm.read_text(a.text)[:a.max_chars] if a.text else \
        lm.stdlib_corpus(a.max_chars or (1 << 20))
    tokens = lm.tokenize(text, a.level)
    vocab = lm.Vocab(tokens, max_size=a.vocab_size)
    ids = vocab.encode(tokens)
    split = int(len(ids) * (1 - a.valid))
    if split < 2 or len(ids) - split < 2:
        raise lm.LMError(f"the text is too short to split into training and validation: "
                         f"{len(ids)} tokens")
    torch.manual_seed(a.seed)
    model = lm.LanguageModel(len(vocab), a.cell, a.embed, a.hidden, a.layers, a.dropout, a.tie)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    source = a.text or "the standard library's sources"
    print(f"{source}: {len(text):,} characters, {len(ids):,} {a.level} tokens, vocabulary "
          f"{len(vocab):,}; {a.cell.upper()} {a.layers}x{a.hidden}, "
          f"{sum(p.numel() for p in model.parameters()):,} parameters", file=sys.stderr)

    def on_epoch(history):
        h = history[-1]
        lm.save(out / f"epoch{h['epoch']}.pt", model, vocab, a.level, history)
        lm.save(out / "last.pt", model, vocab, a.level, history)
        print(f"epoch {h['epoch']}: train loss {h['train_loss']:.3f}, valid loss "
              f"{h['valid_loss']:.3f}, valid perplexity {h['valid_ppl']:.2f}, "
              f"{h['tokens_per_s']:,.0f} tokens/s -> {out / 'last.pt'}", file=sys.stderr)

    history = lm.train(model, ids[:split], ids[split:], epochs=a.epochs, batch=a.batch,
                       bptt=a.bptt, lr=a.lr, max_steps=a.max_steps, on_epoch=on_epoch,
                       progress=not a.quiet)
    print(json.dumps(history))


def _sample(a):
    model, vocab, level = lm.load(a.checkpoint)
    gen = torch.Generator().manual_seed(a.seed)
    text = lm.sample(model, vocab, level, a.prime, a.length, a.temperature, a.top_k, gen)
    print(a.prime + text)


class _Help(argparse.RawDescriptionHelpFormatter):
    """--help: the module docstring as written, and every option's default (where it has
    one its help does not already state)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and "default" not in text:
            text += " (default: %(default)s)"
        return text


def _number(kind, low, low_ok=True, high=None):
    """An argparse type: ``kind`` within [low (or above, without low_ok), high); a value
    outside is argparse's one-line error and exit status 2, not a traceback later."""
    def parse(text):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}")
        if v < low or (v == low and not low_ok) or (high is not None and v >= high):
            bound = f"{'>=' if low_ok else '>'} {low}" + (f" and < {high}" if high else "")
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return v
    return parse


POSITIVE, NATURAL = _number(int, 1), _number(int, 0)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m fastrnn.lm", description=__doc__,
                                formatter_class=_Help)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a model, checkpoint every epoch",
                       formatter_class=_Help)
    t.add_argument("--text", help="a UTF-8 text file (default: the standard library's sources)")
    t.add_argument("--max-chars", type=POSITIVE, default=None,
                   help="use at most this many characters (default: all of --text; 1 Mi of "
                        "the standard library's sources)")
    t.add_argument("--level", choices=["char", "word"], default="char",
                   help="tokens: characters or words")
    t.add_argument("--cell", choices=list(lm.CELLS), default="lstm", help="the recurrent cell")
    t.add_argument("--layers", type=POSITIVE, default=2, help="stacked recurrent layers")
    t.add_argument("--embed", type=POSITIVE, default=64, help="embedding size")
    t.add_argument("--hidden", type=POSITIVE, default=256, help="hidden size")
    t.add_argument("--dropout", type=_number(float, 0.0, high=1.0), default=0.0,
                   help="dropout between layers, in [0, 1)")
    t.add_argument("--tie", action="store_true", help="tie the output layer to the embedding "
                   "(needs --embed equal to --hidden)")
    t.add_argument("--vocab-size", type=POSITIVE, default=None,
                   help="keep the most frequent tokens")
    t.add_argument("--epochs", type=POSITIVE, default=2, help="passes over the training text")
    t.add_argument("--batch", type=POSITIVE, default=32, help="sequences per step")
    t.add_argument("--bptt", type=POSITIVE, default=128,
                   help="tokens per sequence (truncated BPTT)")
    t.add_argument("--lr", type=_number(float, 0.0, low_ok=False), default=2e-3,
                   help="Adam learning rate")
    t.add_argument("--valid", type=_number(float, 0.0, low_ok=False, high=1.0), default=0.05,
                   help="fraction held out (the end)")
    t.add_argument("--max-steps", type=POSITIVE, default=None, help="steps per epoch at most")
    t.add_argument("--out", default="lm-checkpoints", help="checkpoint folder")
    t.add_argument("--seed", type=int, default=0, help="random seed")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    s = sub.add_parser("sample", help="generate text from a checkpoint", formatter_class=_Help)
    s.add_argument("--checkpoint", required=True, help="a checkpoint written by train")
    s.add_argument("--prime", default="", help="text to start from")
    s.add_argument("--length", type=NATURAL, default=500, help="tokens to generate")
    s.add_argument("--temperature", type=_number(float, 0.0, low_ok=False), default=0.8,
                   help="softmax temperature (lower: safer)")
    s.add_argument("--top-k", type=NATURAL, default=0,
                   help="sample among the k likeliest (0: all)")
    s.add_argument("--seed", type=int, default=0, help="random seed")
    a = p.parse_args(argv)
    try:
        (_train if a.command == "train" else _sample)(a)
    except lm.LMError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
