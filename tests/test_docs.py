"""The documentation cannot rot: the site builds in strict mode (a broken link, a missing
reference or any warning fails), and every ```python block of the docs and the README
runs, a page's blocks in order in one namespace."""
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted(ROOT.glob("docs/**/*.md")) + [ROOT / "README.md"]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def test_the_site_builds_strictly(tmp_path):
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d",
                        str(tmp_path / "site")], cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-5000:] + r.stderr[-5000:]


def test_every_page_with_code_is_checked():
    assert [p for p in PAGES if BLOCK.search(p.read_text())], "no python blocks found"


@pytest.mark.parametrize("page", [p for p in PAGES if BLOCK.search(p.read_text())],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_the_python_blocks_run(page, monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)                  # a block that writes files writes here
    torch.manual_seed(0)
    namespace = {"__name__": "__docs__"}
    for i, block in enumerate(BLOCK.findall(page.read_text())):
        try:
            exec(compile(block, f"{page.name} block {i + 1}", "exec"), namespace)
        except Exception as e:                   # noqa: BLE001 - name the block that failed
            raise AssertionError(f"{page.relative_to(ROOT)}, python block {i + 1} failed: "
                                 f"{type(e).__name__}: {e}\n{block}") from e


def test_code_fences_stand_on_their_own_lines():
    # a closing fence with text after it ("``` `python -m ...") turns the rest of the
    # paragraph into inline code: markdown renders it without a warning
    bad = [f"{p.relative_to(ROOT)}:{i + 1}" for p in PAGES
           for i, line in enumerate(p.read_text().splitlines())
           if line.startswith("```") and not re.fullmatch(r"```[\w-]*", line.rstrip())]
    assert not bad, bad
