"""Plans tuned on the device (kernels/triton/tuning.py), checked on the CPU: the timing is
a stand-in, the cache file is real. A missing, corrupt or read-only cache must never be
an error; the launchers must launch the plan tuning picked; with tuning off, under the
interpreter and in tests, the static order."""
import json
import logging
import os

import pytest
import torch

from bench import host

plan = pytest.importorskip("fastrnn.kernels.triton.plan")
from fastrnn.kernels.triton import stub, tuning  # noqa: E402

STATIC = plan.Plan(plan.STREAMING[0], 2, 8, True, "static")
WIDER = plan.Plan(plan.Tiling(32, 16, False, 4), 1, 8, True, "a candidate")
TIMES = {STATIC: 2e-3, WIDER: 1e-3}
ENTRY = {"best": "U32 BB16 4w", "tiling": {"U": 32, "BB": 16, "onchip": False, "num_warps": 4,
                                            "maxnreg": None, "prefetch": False, "poll": False},
         "ms": {"U16 BB16 4w": 2.0, "U32 BB16 4w": 1.0}}


def resident(tilings):
    # the candidates the device holds at once: WIDER (tilings None: all of them)
    return [p for p in [WIDER] if tilings is None or p.tiling in tilings]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    file = tmp_path / "plans.json"
    monkeypatch.setenv("FASTRNN_TUNING_CACHE", str(file))
    monkeypatch.setattr(tuning, "_PLANS", {})
    monkeypatch.setattr(tuning, "_TIMES", {})
    return file


def timer(timed):
    def time_plan(p):
        timed.append(p)
        return TIMES[p]
    return time_plan


def test_the_fastest_is_kept_and_read_back(cache):
    timed = []
    assert tuning.pick("k", STATIC, resident, timer(timed)) == WIDER
    assert timed == [STATIC, WIDER] and json.loads(cache.read_text()) == {"k": ENTRY}
    assert tuning.pick("k", STATIC, resident, timer(timed)) == WIDER and len(timed) == 2
    tuning._PLANS.clear()                       # a new process: the file, no timing
    assert tuning.pick("k", STATIC, resident, timer(timed)) == WIDER and len(timed) == 2
    assert tuning.timings() == {"k": ENTRY["ms"]}


def test_a_kept_plan_that_no_longer_fits_gives_the_static_plan(cache):
    # another batch of the bucket, or another build, where it does not fit at once:
    # residency is checked before the kept tiling is launched, and nothing is re-timed
    cache.write_text(json.dumps({"k": ENTRY}))
    timed = []
    assert tuning.pick("k", STATIC, lambda tilings: [], timer(timed)) == STATIC
    assert timed == []


def test_nothing_to_choose_is_kept_untimed(cache):
    assert tuning.pick("k", STATIC, lambda tilings: [], timer([])) == STATIC
    assert json.loads(cache.read_text())["k"]["ms"] == {}


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"k": {"best": 3}}',
                                     '{"k": {"tiling": {"U": 32}, "ms": {}}}'])
def test_a_corrupt_cache_is_a_debug_line_and_a_new_timing(cache, content, caplog):
    cache.write_text(content)
    timed = []
    with caplog.at_level(logging.DEBUG, logger="fastrnn"):
        assert tuning.pick("k", STATIC, resident, timer(timed)) == WIDER
    assert timed == [STATIC, WIDER] and "unusable" in caplog.text
    assert json.loads(cache.read_text())["k"] == ENTRY                   # repaired


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_a_read_only_cache_is_a_debug_line(tmp_path, monkeypatch, caplog):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    monkeypatch.setenv("FASTRNN_TUNING_CACHE", str(folder / "plans.json"))
    monkeypatch.setattr(tuning, "_PLANS", {})
    with caplog.at_level(logging.DEBUG, logger="fastrnn"):
        assert tuning.pick("k", STATIC, resident, timer([])) == WIDER
    assert "not written" in caplog.text


def test_an_unwritable_cache_is_a_debug_line(tmp_path, monkeypatch, caplog):
    # a path under a regular file can be neither read nor created, root or not
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("FASTRNN_TUNING_CACHE", str(blocker / "plans.json"))
    monkeypatch.setattr(tuning, "_PLANS", {})
    timed = []
    with caplog.at_level(logging.DEBUG, logger="fastrnn"):
        assert tuning.pick("k", STATIC, resident, timer(timed)) == WIDER
        assert tuning.pick("k", STATIC, resident, timer(timed)) == WIDER
    assert "not written" in caplog.text and timed == [STATIC, WIDER]   # kept for the process


def test_the_default_file_is_beside_tritons_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("FASTRNN_TUNING_CACHE", raising=False)
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "triton" / "cache"))
    assert tuning.path() == str(tmp_path / "triton" / "fastrnn-plans.json")


def test_resident_plans_are_those_that_fit_at_once():
    dev = plan.DEVICES["H100"]
    lean = {"regs": 128, "shared": 4096, "spills": 0}
    tilings = [plan.Tiling(16, 16, False), plan.Tiling(32, 16, False, 4)]
    assert [p.tiling for p in plan.resident_plans(768, 16, lambda t: lean, dev, tilings)] \
        == tilings
    spilled = dict(lean, spills=8)      # never launched: a spill fails residency
    use = {tilings[0]: lean, tilings[1]: spilled}
    assert [p.tiling for p in plan.resident_plans(768, 16, use.get, dev, tilings)] \
        == tilings[:1]


@pytest.mark.parametrize("enabled", [True, False])
def test_a_launch_uses_the_tuned_plan(cache, monkeypatch, caplog, enabled):
    # launches stubbed (the persistent path a device takes); candidates and timer stand-ins
    monkeypatch.setenv("FASTRNN_TUNE", "1" if enabled else "0")
    H = host.HOST_SHAPE[2]
    static = plan.Plan(plan.STREAMING[0], plan.cdiv(H, 16), 8, True, "the stub's")
    wider = plan.Plan(plan.Tiling(32, 16, False, 4), plan.cdiv(H, 32), 8, True, "wider")
    times = {static.tiling: 2e-3, wider.tiling: 1e-3}
    timed = []
    monkeypatch.setattr(plan, "tuning_key", lambda kernel, *a: kernel.__name__)
    monkeypatch.setattr(plan, "tuning_plans", lambda *a: [wider])
    monkeypatch.setattr(plan, "time_plan",
                        lambda run, p, args: timed.append(p.tiling) or times[p.tiling])
    call = host.layer_call("rnn")
    with stub.stubbed(tuning=True) as launches, caplog.at_level(logging.DEBUG, "fastrnn"):
        call()
        call()
    grid = (wider if enabled else static).grid(8)
    assert launches == [("rnn_fwd_kernel", grid), ("rnn_bwd_kernel", grid)] * 2
    # the plan logged (bench --gpu's plan column) is the one launched
    assert [r.plan.grid(8) for r in caplog.records if hasattr(r, "plan")] == [grid] * 4
    # each kernel timed on its first call only
    assert timed == ([static.tiling, wider.tiling] * 2 if enabled else [])
    kept = {k: {"best": "U32 BB16 4w", "ms": {"U16 BB16 4w": 2.0, "U32 BB16 4w": 1.0},
                "tiling": ENTRY["tiling"]} for k in ("rnn_fwd_kernel", "rnn_bwd_kernel")}
    assert (json.loads(cache.read_text()) if enabled else {}) == (kept if enabled else {})


def test_a_graph_capture_launches_what_eager_calls_chose(cache):
    assert tuning.decided("k", STATIC) == STATIC            # nothing decided: static
    tuning.pick("k", STATIC, resident, timer([]))
    assert tuning.decided("k", STATIC) == WIDER


def test_tests_run_the_static_order():
    assert os.environ.get("FASTRNN_TUNE") == "0"


def test_an_entry_written_before_the_levers_reads_back_without_them():
    # a cache written before Tiling had prefetch and poll: the same tiling, levers off
    old = {"best": "U32 BB16 4w", "ms": {"U32 BB16 4w": 1.0},
           "tiling": {"U": 32, "BB": 16, "onchip": False, "num_warps": 4, "maxnreg": None}}
    assert tuning._tiling(old) == plan.Tiling(32, 16, False, 4)
