"""First use of the Numba backend, each in a fresh process: the one-line compile notice,
``python -m fastrnn.precompile``, and a read-only install whose cache falls back to a
writable directory."""
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).parent.parent
NOTICE = "fastrnn: compiling Numba kernels"
RUN_RNN = """
import torch, fastrnn
from torch.nn.utils.rnn import pack_padded_sequence
torch.manual_seed(0)
m, cell = fastrnn.RNN(4, 4), fastrnn.RNNCell(4, 4)
x = torch.randn(3, 2, 4, requires_grad=True)
m(x)[0].sum().backward()
m(pack_padded_sequence(x, [3, 2]))[0].data.sum().backward()
with torch.no_grad():
    cell(torch.randn(2, 4))
ref = fastrnn.RNN(4, 4)
ref.load_state_dict(m.state_dict())
ref.backend = "reference"
assert torch.allclose(m(x)[0], ref(x)[0], atol=1e-6)
print("ok", fastrnn.__file__)
"""


def _run(code, env, cwd=ROOT):
    full = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    full.update(env)
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=full, capture_output=True,
                          text=True, timeout=600)


def _notices(stderr):
    return [line for line in stderr.splitlines() if NOTICE in line]


def test_the_first_compile_says_so_once_and_where_it_caches(tmp_path):
    cache = tmp_path / "cache"
    first = _run(RUN_RNN, {"NUMBA_CACHE_DIR": str(cache)})
    assert first.returncode == 0, first.stderr
    lines = _notices(first.stderr)
    assert len(lines) == 1 and str(cache) in lines[0], first.stderr
    again = _run(RUN_RNN, {"NUMBA_CACHE_DIR": str(cache)})      # warm: nothing to say
    assert again.returncode == 0 and not _notices(again.stderr), again.stderr
    quiet = _run("import logging; logging.getLogger('fastrnn.compile').setLevel(logging.ERROR)\n"
                 + RUN_RNN, {"NUMBA_CACHE_DIR": str(tmp_path / "other")})
    assert quiet.returncode == 0 and not _notices(quiet.stderr), quiet.stderr


def test_precompile_builds_the_cache_the_calls_need(tmp_path):
    env = {"NUMBA_CACHE_DIR": str(tmp_path)}
    pre = subprocess.run([sys.executable, "-m", "fastrnn.precompile", "--cells", "rnn"],
                         cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True,
                         timeout=600)
    assert pre.returncode == 0, pre.stderr
    assert "3/3" in pre.stderr and str(tmp_path) in pre.stderr, pre.stderr
    use = _run(RUN_RNN, env)
    assert use.returncode == 0, use.stderr
    assert not _notices(use.stderr), "a call compiled what precompile should have built"


def _installed_copy(dest):
    # the installed layout (setup.py's package_dir): kernels/<backend> inside the package
    shutil.copytree(ROOT / "fastrnn", dest / "fastrnn",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for backend in ("numba", "triton"):
        shutil.copytree(ROOT / "kernels" / backend, dest / "fastrnn" / "kernels" / backend,
                        ignore=shutil.ignore_patterns("__pycache__"))


def test_a_read_only_install_caches_in_the_user_cache_dir(tmp_path):
    site, xdg = tmp_path / "site", tmp_path / "xdg"
    _installed_copy(site)
    blocked = []
    for d, _, _ in os.walk(site):
        # root ignores permission bits: a file where __pycache__ would go blocks the
        # in-tree cache for every user, as a read-only folder does for the others
        (Path(d) / "__pycache__").write_text("read-only install\n")
        blocked.append(Path(d))
    for d in blocked:
        d.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP)
    try:
        code = ("import sys; sys.meta_path[:] = [f for f in sys.meta_path "
                "if 'editable' not in repr(f).lower()]; sys.path.insert(0, %r)\n" % str(site)
                + RUN_RNN)
        env = {"XDG_CACHE_HOME": str(xdg), "PYTHONDONTWRITEBYTECODE": "1"}
        first = _run(code, env, cwd=tmp_path)
        assert first.returncode == 0, first.stderr
        assert f"ok {site}" in first.stdout, first.stdout       # the read-only copy ran
        assert str(xdg) in _notices(first.stderr)[0], first.stderr
        assert list(xdg.rglob("*.nbi")), "no cache index in the user cache dir"
        second = _run(code, env, cwd=tmp_path)
        assert second.returncode == 0 and not _notices(second.stderr), second.stderr
    finally:
        for d in blocked:
            d.chmod(stat.S_IRWXU)
    assert not [p for p in site.rglob("*.nbi")], "the install was written to"


def test_precompile_help_names_its_options():
    out = subprocess.run([sys.executable, "-m", "fastrnn.precompile", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "--dtypes" in out.stdout and "--cells" in out.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without a device")
def test_precompile_gpu_mode_says_it_needs_a_device():
    out = subprocess.run([sys.executable, "-m", "fastrnn.precompile", "--gpu"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "no CUDA device" in out.stderr


@pytest.mark.parametrize("argv,says", [(["--gpu", "--cells", "tree"], "not tree"),
                                       (["--dtypes", "bfloat16"], "--gpu's")])
def test_precompile_refuses_what_its_mode_cannot_build(argv, says, capsys):
    from fastrnn.precompile import main
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and says in capsys.readouterr().err


def test_precompile_gpu_table_marks_the_kept_plan():
    from fastrnn.precompile import timings_table
    text = timings_table({"lstm_fwd_kernel H=768": {"U16 BB16 4w": 10.9, "U32 BB16 4w": 9.2},
                          "rnn_fwd_kernel H=32": {}})
    lines = text.splitlines()
    assert lines[0] == "lstm_fwd_kernel H=768" and lines[1].split()[:3] == ["U32", "BB16", "4w"]
    assert lines[1].endswith("<- kept") and not lines[2].endswith("<- kept")
    assert "nothing to time" in lines[4]


def test_precompile_builds_the_tree_nets_by_default(monkeypatch, capsys):
    # docs/deploying.md: precompile covers what first use would compile, trees included
    from fastrnn import precompile
    asked = []
    monkeypatch.setattr(precompile, "_layer_calls",
                        lambda cell, dtype: asked.append(cell) or [("x", lambda: None)])
    monkeypatch.setattr(precompile, "_tree_calls",
                        lambda dtype: asked.append("tree") or [("x", lambda: None)])
    assert precompile.main([]) == 0
    assert asked == ["rnn", "gru", "lstm", "tree"]
