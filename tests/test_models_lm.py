"""Language models: every backend against the torch.nn build; the CLI, its checkpoints, its errors."""
import pytest
import torch

from fastrnn import lm as cli
from fastrnn.models import lm

from helpers import assert_close, assert_twins_match

BACKENDS = ["numba", "triton", "reference"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell,tie", [("rnn", False), ("gru", True), ("lstm", False),
                                      ("lstm", True)])
def test_matches_torch_build(backend, cell, tie):
    dtype = torch.float32 if backend == "triton" else torch.float64
    ours = lm.LanguageModel(11, cell, embed=6, hidden=6, num_layers=2, tie=tie).to(dtype)
    twin = lm.LanguageModel(11, cell, embed=6, hidden=6, num_layers=2, tie=tie,
                            layers=torch.nn).to(dtype)
    twin.load_state_dict(ours.state_dict())
    ours.rnn.backend = backend
    tokens = torch.randint(0, 11, (7, 3))
    (a, sa), (b, sb) = ours(tokens), twin(tokens)
    tol = 1e-4 if backend == "triton" else 1e-10
    for u, v in zip(sa if cell == "lstm" else (sa,), sb if cell == "lstm" else (sb,)):
        assert_close(u, v, tol, "state")
    assert_twins_match(ours, twin, a, b, tol)


def _text(tmp_path, content="hello world, hello fastrnn.\n" * 40):
    f = tmp_path / "t.txt"
    f.write_text(content, encoding="utf-8")
    return f


@pytest.mark.parametrize("level", ["char", "word"])
def test_cli_trains_checkpoints_and_samples(tmp_path, capsys, level):
    out = tmp_path / "ck"
    rc = cli.main(["train", "--text", str(_text(tmp_path)), "--level", level, "--hidden", "16",
                   "--embed", "16", "--tie", "--epochs", "2", "--batch", "4", "--bptt", "8",
                   "--out", str(out), "--quiet", "--cell", "gru"])
    assert rc == 0
    assert (out / "epoch1.pt").is_file() and (out / "epoch2.pt").is_file()
    capsys.readouterr()
    rc = cli.main(["sample", "--checkpoint", str(out / "last.pt"), "--prime", "hello",
                   "--length", "20", "--top-k", "3", "--temperature", "0.5"])
    assert rc == 0
    text = capsys.readouterr().out
    assert text.startswith("hello") and len(text) > len("hello")
    # the checkpoint's state_dict is torch's: the torch.nn build loads it, same outputs
    ours, vocab, lvl = lm.load(out / "last.pt")
    twin, _, _ = lm.load(out / "last.pt", layers=torch.nn)
    assert isinstance(twin.rnn, torch.nn.GRU) and lvl == level
    tokens = vocab.encode(lm.tokenize("hello world", level)).unsqueeze(1)
    assert_close(ours(tokens)[0], twin(tokens)[0], 1e-5, "logits")


@pytest.mark.parametrize("case,message", [
    ("missing", "no such file"), ("empty", "is empty"), ("binary", "not UTF-8"),
    ("short", "too short")])
def test_cli_bad_text_is_a_clear_error(tmp_path, capsys, case, message):
    f = tmp_path / "x.txt"
    if case == "empty":
        f.write_text("  \n")
    elif case == "binary":
        f.write_bytes(b"\xff\xfe\x00\x81" * 10)
    elif case == "short":
        f.write_text("abc")
    rc = cli.main(["train", "--text", str(f), "--out", str(tmp_path / "ck"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err


@pytest.mark.parametrize("argv,message", [
    (["train", "--layers", "0"], "--layers: must be >= 1, got 0"),
    (["train", "--dropout", "1"], "--dropout: must be >= 0.0 and < 1.0"),
    (["train", "--lr", "0"], "--lr: must be > 0.0"),
    (["train", "--batch", "two"], "--batch: not a number"),
    (["sample", "--checkpoint", "x", "--temperature", "-1"], "--temperature: must be > 0.0"),
])
def test_cli_bad_option_is_one_line_and_status_2(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and "Traceback" not in err


def test_cli_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = capsys.readouterr().out
    assert "stacked recurrent layers (default: 2)" in out and "(default: 0.002)" in out


@pytest.mark.parametrize("case,message", [
    ("missing", "no such checkpoint"), ("garbage", "not a checkpoint"),
    ("other", "not a fastrnn.lm checkpoint"), ("mismatch", "do not fit")])
def test_cli_wrong_checkpoint_is_a_clear_error(tmp_path, capsys, case, message):
    f = tmp_path / "c.pt"
    if case == "garbage":
        f.write_bytes(b"not a checkpoint")
    elif case == "other":
        torch.save({"state_dict": {}}, f)
    elif case == "mismatch":
        m = lm.LanguageModel(5, "gru", embed=4, hidden=4, num_layers=1)
        lm.save(f, m, lm.Vocab("abcd"), "char", [])
        ck = torch.load(f, weights_only=True)
        ck["config"]["hidden"] = 8
        torch.save(ck, f)
    rc = cli.main(["sample", "--checkpoint", str(f)])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err


def test_bad_model_options():
    with pytest.raises(lm.LMError, match="tied embeddings"):
        lm.LanguageModel(5, embed=4, hidden=8, tie=True)
    with pytest.raises(lm.LMError, match="cell must be"):
        lm.LanguageModel(5, cell="tree")


def test_default_corpus_is_the_standard_library():
    text = lm.stdlib_corpus(50_000)
    assert len(text) == 50_000 and "def " in text
