"""The benchmark report itself: `python -m bench` is the README's main command."""
import csv
import os

import pytest
import torch

from bench import cases, charlm, matrix
from bench.__main__ import main


def test_case_strings_and_flops():
    case = cases.name("lstm", "proj", "fwdbwd", 10, 2, 8)
    assert cases.parse(case) == ("lstm", "proj", "fwdbwd", 10, 2, 8)
    fwd = 2 * 10 * 2 * 32 * (8 + 4) + 2 * 10 * 2 * 8 * 4      # gates + projection
    assert cases.flops(case) == 3 * fwd
    assert cases.flops(cases.name("gru", "f32", "step", 99, 2, 8)) == 2 * 2 * 24 * 16
    assert len(matrix.standard()) == 4 * 3 * 3
    assert ("T", cases.name("rnn_tanh", "f32", "fwdbwd", 4096, 32, 128)) in matrix.sweeps()


def test_every_mode_runs_for_every_provider():
    for cell, variant in matrix.CELLS:
        for mode in matrix.MODES:
            case = cases.name(cell, variant, mode, 3, 2, 4)
            for step in (cases.make_step(m, case) for m in
                         cases.modules(case, ["fastrnn-numba", "torch", "reference"]).values()):
                step()


def test_quick_report(tmp_path, capsys):
    main(["--quick", "--sections", "matrix", "--cells", "rnn_tanh", "--shapes", "3,2,4",
          "--out", str(tmp_path)])
    rows = list(csv.DictReader(open(tmp_path / "cpu.csv")))
    timed = [r for r in rows if r["section"] == "matrix"]
    assert {r["provider"] for r in timed} == {"fastrnn-numba", "torch", "reference"}
    assert {r["mode"] for r in timed} == set(matrix.MODES)
    assert all(float(r["median_ms"]) > 0 and r["commit"] and r["threads"] for r in timed)
    report = (tmp_path / "report.md").read_text()
    assert "| rnn_tanh f32 | (3, 2, 4) | fwdbwd |" in report
    gemm = [r["metric"] for r in rows if r["section"] == "gemm"]
    assert gemm == ["torch.mm 2048² float32 (best of run)",
                    "torch.mm 16384x512 @ 512x2048 float32 (best of run)"]
    assert "For comparison, torch.mm 16384x512 @ 512x2048 float32 (the large LSTM's" in report


def test_gemm_rate_timed_alongside(tmp_path, monkeypatch, capsys):
    import json
    import bench.__main__ as cli
    monkeypatch.setattr(cli, "ALONGSIDE_SHAPES", {(3, 2, 4)})
    shares = []         # what paired_share returned: the CSV must carry exactly these
    monkeypatch.setattr(cli, "paired_share",
                        lambda *a, _f=cli.paired_share: shares.append(_f(*a)) or shares[-1])
    main(["--quick", "--sections", "matrix", "--cells", "gru", "--shapes", "3,2,4",
          "--out", str(tmp_path)])
    timed = [r for r in csv.DictReader(open(tmp_path / "cpu.csv")) if r["section"] == "matrix"]
    assert {r["provider"] for r in timed} == {"fastrnn-numba", "torch", "reference"}
    for r in timed:     # the probe is no provider; every alternated fwd/fwdbwd row has it
        along = r["gflops_pct_of_gemm_alongside"]
        assert (along == "") == (r["mode"] == "step" or r["provider"] == "reference")
        if along:
            assert float(r["gemm_alongside_gflops"]) > 0
    assert sorted(float(r["gflops_pct_of_gemm_alongside"]) for r in timed
                  if r["gflops_pct_of_gemm_alongside"]) == sorted(round(v, 1) for v in shares)
    assert "% alongside" in (tmp_path / "report.md").read_text()
    capsys.readouterr()
    main(["--alone", "fastrnn-numba", "--cases", "gru:f32:fwd:3:2:4=2", "gru:f32:step:3:2:4=2"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [len(out["gru:f32:fwd:3:2:4"][k]) for k in ("x", "torch.mm")] == [2, 2]
    assert list(out["gru:f32:step:3:2:4"]) == ["x"]


def test_samples_reverse_the_order_every_other_repeat():
    from bench.harness import samples
    calls = []
    times = samples({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3,
                    warmup=0)
    assert calls == ["a", "b", "b", "a", "a", "b"]
    assert [len(v) for v in times.values()] == [3, 3]


def test_gemm_share_pairs_each_repeat_with_its_probe():
    from bench.__main__ import PROBE_FLOPS, paired_share
    # the machine runs 4x slower through the second repeat and something slows the
    # third case alone: the pairs say 10, 10 and 5%, the ratio of the medians
    # (20 ms and 1 ms) only 5%
    assert paired_share([10.0, 40.0, 20.0], [1.0, 4.0, 1.0], PROBE_FLOPS) == 10.0
    with pytest.raises(ValueError):
        paired_share([10.0, 40.0], [1.0], PROBE_FLOPS)


def test_targets_table_checks_every_target():
    from bench.report import best, targets
    case = "gru:f32:fwdbwd:256:64:512"
    row = dict(section="matrix", axis="", cell="gru", variant="f32", mode="fwdbwd", T=256, B=64,
               H=512, provider="fastrnn-numba", median_ms=10.0, speedup_vs_torch=1.19,
               gflops_pct_of_gemm=80.0)
    cold = dict(section="coldstart", provider="fastrnn-numba", median_ms=None, value=0.9,
                metric="first LSTM forward, warm Numba cache: after import torch")
    lines = targets(best([row]), [row, cold])
    assert f"| speedup over torch.nn | `{case}` | ≥ 1.2× | 1.19× | **no** |" in lines  # just below
    assert f"| share of the GEMM rate | `{case}` | ≥ 75% | 80% | yes |" in lines
    mem = [dict(section="memory", provider=p, median_ms=None, value=v,
                metric=f"peak RSS rise, LSTM {what} (256, 64, 512)")
           for p, what, v in (("fastrnn-numba", "fwd+bwd", 450.0), ("torch", "fwd+bwd", 593.0),
                              ("fastrnn-numba", "forward under no_grad", 164.0),
                              ("torch", "forward under no_grad", 72.0))]
    assert "| peak memory | LSTM fwd+bwd at the large shape | ≤ torch | 450 vs 593 MiB | yes |" \
        in targets(best([row]), [row] + mem)
    row.update(gflops_pct_of_gemm=70.0, gflops_pct_of_gemm_alongside=74.2)
    assert f"| share of the GEMM rate | `{case}` | ≥ 75% | 74% alongside (70% of the best of " \
        "the run) | **no** |" in targets(best([row]), [row])
    assert "| cold start | after import torch, warm Numba cache | < 1 s | 0.90 s | yes |" in lines
    assert sum("not run" in line for line in lines) == len(matrix.TARGETS) - 2
    # issue 35's: one thread's step product against the core's peak and torch.mm, the
    # char-LM step, all threads against one at batch 1
    def value(section, provider, metric, v, **kw):
        return dict(section=section, provider=provider, metric=metric, value=v,
                    median_ms=None, **kw)
    extra = [value("peak", "none", "FMA peak, one core", 200.0),
             value("products", "fastrnn panels", "forward 32x512 @ 512x2048", 180.0),
             value("products", "torch.mm", "forward 32x512 @ 512x2048", 150.0),
             value("products", "fastrnn panels", "forward 16x128 @ 128x512", 160.0),
             value("products", "torch.mm", "forward 16x128 @ 128x512", 150.0),
             value("charlm", "fastrnn-numba", "training step (B=32, T=128)", 80.0),
             value("charlm", "torch", "training step (B=32, T=128)", 96.0),
             value("threads", "fastrnn-numba", "LSTM fwd+bwd, 1 thread(s)", 10.0,
                   T=100, B=1, H=512),
             value("threads", "fastrnn-numba", "LSTM fwd+bwd, 2 thread(s)", 5.5,
                   T=100, B=1, H=512)]
    lines = targets(best([row]), [row] + extra)
    assert "| step product, one thread | forward 32x512 @ 512x2048 | ≥ 85% of the core's " \
        "peak and ≥ torch.mm | 90% (180 of 200 GFLOP/s), 1.20× torch.mm | yes |" in lines
    assert any(line.startswith("| step product, one thread | forward 16x128 @ 128x512 |")
               and line.endswith("| **no** |") for line in lines)              # 80% of peak
    assert "| speedup over torch.nn | char-LM training step (charlm section) | ≥ 1.15× | " \
        "1.20× | yes |" in lines
    assert "| all threads against one | LSTM fwd+bwd (T, B, H) = (100, 1, 512) | ≤ 0.6× the " \
        "1-thread time | 0.55× (5.5 against 10.0 ms) | yes |" in lines


def test_plots_from_csv(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from bench.plots import draw
    monkeypatch.setattr(matrix, "QUICK_SWEEPS", {"T": [2, 4], "B": [1, 2], "H": [4, 8]})
    main(["--quick", "--sections", "matrix", "sweeps", "--cells", "gru", "--shapes", "3,2,4",
          "--out", str(tmp_path)])
    assert {p.name for p in draw(tmp_path / "cpu.csv", tmp_path)} == \
        {"speedup.png", "sweeps.png", "gflops.png"}


def test_gpu_job_says_why_without_cuda(capsys):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert main(["--gpu"]) == 2
    assert "needs a CUDA device" in capsys.readouterr().out


def test_charlm_corpus_and_batches():
    data = charlm.corpus(1 << 16)
    assert data.dtype == torch.int64 and len(data) == 1 << 16 and data.max() < 256
    x, y = charlm._batch(data, 3, 16, 4)
    assert x.shape == y.shape == (16, 4) and torch.equal(x[1:], y[:-1])


def test_gpu_timing_loop_under_the_triton_interpreter():
    # the GPU job's timing code, run on the CPU (conftest sets TRITON_INTERPRET=1)
    from bench.__main__ import timing_rows
    from bench.gpu import PROVIDERS, gpu_cases, time_matrix
    assert cases.name("lstm", "bf16", "fwdbwd", 1024, 16, 768) in gpu_cases()
    todo = [cases.name(c, "f32", m, 2, 2, 4) for c in cases.GATES
            for m in ("fwd", "fwdbwd")]
    times, errors = time_matrix(todo, "cpu", repeats=1, warmup=0)
    rows = timing_rows("matrix", times, {}, {})
    assert errors == []
    # torch in fp16 is timed beside the bf16 cases only
    assert {(r["cell"], r["mode"], r["provider"]) for r in rows} == \
        {(c, m, p) for c in cases.GATES for m in ("fwd", "fwdbwd")
         for p in PROVIDERS if p != "torch-fp16"}
    # each fastrnn-triton case's plan (H = 4: one program along the units, which the
    # interpreter runs persistent) and wall split (no device kernels on the CPU: the
    # host is the whole wall time)
    from bench.gpu import split_rows
    from bench.report import split_table
    split = split_rows(times, "cpu", {})
    assert [r["metric"] for r in split] == todo
    assert all(r["plan"].endswith(" persist") and r["launches"] == 0 and r["kernel_ms"] == 0
               and r["host_ms"] == r["value"] > 0 for r in split)
    assert len(split_table(split)) == 7 + len(todo)


def test_gpu_timing_loop_reports_a_failing_provider_and_goes_on(monkeypatch):
    # one short GPU session must not be lost to one kernel: the failure is recorded,
    # the other provider and the next cases are still timed, late cases are listed
    from bench.gpu import time_matrix
    from bench.report import render
    real = cases.make_step

    def make_step(module, case, device="cpu"):
        if getattr(module, "backend", None) == "triton" and cases.parse(case)[0] == "gru":
            raise RuntimeError("PTX assembly failed\nmore lines")
        return real(module, case, device)

    monkeypatch.setattr(cases, "make_step", make_step)
    todo = [cases.name(c, "f32", "fwd", 2, 2, 4) for c in ("gru", "lstm")]
    times, errors = time_matrix(todo, "cpu", repeats=1, warmup=0)
    assert errors == [(todo[0], "fastrnn-triton", "RuntimeError: PTX assembly failed")]
    assert set(times[todo[0]]) == {("torch", "same")}
    assert set(times[todo[1]]) == {("fastrnn-triton", "same"), ("torch", "same")}
    times, errors = time_matrix(todo, "cpu", repeats=1, warmup=0, limit_s=-1)
    assert times == {} and [e[1] for e in errors] == ["all", "all"]
    rows = [dict(section="errors", provider=p, metric=c, value=e, unit="") for c, p, e in errors]
    facts = dict(cpu="cpu", cores=2, device="cpu", torch="t", numba="n", triton="t", commit="c",
                 threads="")
    assert "## Errors (cases or providers that did not run)" in render(rows, 1.0, facts)


def test_gpu_report_is_written_when_a_case_fails(monkeypatch, tmp_path):
    # the errors rows carry text in the value column: the CSV, the plots and the report
    # must still be written (a forced failure, under the interpreter)
    from bench.__main__ import finish, timing_rows
    from bench.gpu import time_matrix
    real = cases.make_step

    def make_step(module, case, device="cpu"):
        if getattr(module, "backend", None) == "triton":
            raise RuntimeError("forced failure")
        return real(module, case, device)

    monkeypatch.setattr(cases, "make_step", make_step)
    todo = [cases.name("lstm", "bf16", "fwd", 2, 2, 16), cases.name("gru", "f32", "fwd", 2, 2, 4)]
    times, errors = time_matrix(todo, "cpu", repeats=1, warmup=0)
    assert set(times[todo[0]]) == {("torch", "same"), ("torch-fp16", "same")}
    facts = dict(cpu="cpu", cores=2, device="cpu", torch="t", numba="n", triton="t", commit="c",
                 threads="")
    rows = timing_rows("matrix", times, {}, facts)
    rows += [dict(section="errors", provider=p, metric=c, value=e, unit="", **facts)
             for c, p, e in errors]
    rows.append(dict(section="gemm", provider="torch", metric="torch.mm 8192² bfloat16",
                     value=1.0, unit="GFLOP/s", **facts))
    finish(rows, 1.0, facts, tmp_path, "gpu")
    report = (tmp_path / "report-gpu.md").read_text()
    assert "forced failure" in report and (tmp_path / "gpu.csv").exists()
    # the header names the GEMM the run measured, not the CPU report's
    assert "GEMM rate, torch.mm 8192² bfloat16: 1.0 GFLOP/s" in report
    assert "2048" not in report.splitlines()[0]


def test_models_section_rows_and_table(tmp_path, monkeypatch):
    # the models section's plumbing on stand-in measurements (the real ones take minutes)
    from bench import models
    fake = [("seq2seq training, target tokens/s", "tokens/s", {"fastrnn-numba": 300.0,
                                                                 "torch": 200.0}),
            ("decoder step", "us", {"fastrnn-numba": 30.0, "torch": 45.0}),
            ("gradient_flow overhead", "%", {"fastrnn-numba": 4.0})]
    monkeypatch.setattr(models, "run", lambda quick: fake)
    main(["--quick", "--sections", "models", "--out", str(tmp_path)])
    rows = [r for r in csv.DictReader(open(tmp_path / "cpu.csv")) if r["section"] == "models"]
    assert len(rows) == 5
    report = (tmp_path / "report.md").read_text()
    assert "| seq2seq training, target tokens/s | tokens/s | 300 | 200 | **1.50×** |" in report
    assert "| decoder step | us | 30 | 45 | **1.50×** |" in report
    assert "| gradient_flow overhead | % | 4 | – | – |" in report


def test_alternate_times_every_callable():
    from bench.models import alternate
    calls = []
    t = alternate({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3,
                  warmup=1, block=2)
    assert set(t) == {"a", "b"} and calls.count("a") == 1 + 3 * 2


def test_trees_section_rows_and_table(tmp_path, monkeypatch):
    from bench import trees
    fake = [("ChildSumTreeLSTM, 32 AST trees, forward+backward", "nodes/s",
             {"fastrnn-numba": 3000.0, "torch-levels": 1000.0, "reference": 100.0})]
    monkeypatch.setattr(trees, "run", lambda quick: fake)
    main(["--quick", "--sections", "trees", "--out", str(tmp_path)])
    report = (tmp_path / "report.md").read_text()
    assert "| ChildSumTreeLSTM, 32 AST trees, forward+backward | 3,000 | 1,000 | 100 | **3.0×** " \
        "| **30.0×** | yes / yes |" in report
    assert "## Standard shapes" not in report      # no matrix in this run: no empty tables


def test_trees_keep_each_providers_faster_median(monkeypatch):
    # shared process and a child process alone (as the matrix): the faster median wins
    from bench import trees
    monkeypatch.setattr(trees, "_measure", lambda quick, device: {
        "m": (100, {"fastrnn-numba": 2.0, "torch-levels": 3.0, "reference": 50.0})})
    alone = {"fastrnn-numba": 1.0, "torch-levels": 4.0}
    monkeypatch.setattr(trees, "run_child", lambda module, flag, p, *rest: {"m": alone[p]})
    assert trees.run() == [("m", "nodes/s", {"fastrnn-numba": 100.0, "torch-levels": 100 / 3,
                                             "reference": 2.0})]


def test_trees_child_process_times_one_provider():
    from bench.harness import run_child
    got = run_child("bench.trees", "--alone", "torch-levels", "--quick")
    assert len(got) == 8 and all(v > 0 for v in got.values())     # 2 nets x 2 sizes x 2 modes
    assert all(k.startswith(("ChildSumTreeLSTM, ", "TreeRNN (binary), ")) for k in got)


def test_peak_section(tmp_path, monkeypatch, capsys):
    # the real probe (a short run) and a product table cut to the two target shapes
    from bench import products
    monkeypatch.setattr(products, "shapes", lambda quick: [
        ("forward", n, K, M) for n, K, M in products.TARGET_SHAPES])
    threads = torch.get_num_threads()
    main(["--quick", "--sections", "peak", "--out", str(tmp_path)])
    assert torch.get_num_threads() == threads           # the one-thread timing puts it back
    rows = list(csv.DictReader(open(tmp_path / "cpu.csv")))
    top = {r["metric"]: r["value"] for r in rows if r["section"] == "peak"}
    assert "vector registers" in top["ISA"]
    assert float(top["FMA peak, one core"]) > 1
    prods = [r for r in rows if r["section"] == "products"]
    assert {r["provider"] for r in prods} == {"fastrnn panels", "fastrnn dot (gemm_nt)",
                                              "torch.mm"}
    assert {r["metric"] for r in prods} == {"forward 32x512 @ 512x2048",
                                            "forward 16x128 @ 128x512"}
    assert all(float(r["value"]) > 0 for r in prods)
    report = (tmp_path / "report.md").read_text()
    assert "## FMA peak and the step products" in report
    assert "| forward 32x512 @ 512x2048 |" in report


def test_fma_probe_ir_runs():
    # the compiled loop computes what its IR says: 1 FMA chain step, a*m + c from 1.0
    from bench import peak
    fn, _ = peak._loop(peak.isa()[1], chains=2)
    assert fn(1, 2.0, 1.0) == pytest.approx(2 * 3.0)      # two chains, each 1*2+1, summed
    assert fn(2, 2.0, 1.0) == pytest.approx(2 * 7.0)      # (1*2+1)*2+1


def test_phases_section(tmp_path, monkeypatch):
    # the quick run cut to one cell and shape: every phase of both modes in the CSV and
    # the report, and the phases (all but the rest, which absorbs noise) within the layer
    from bench import phases
    monkeypatch.setattr(phases, "CELLS", ["lstm"])
    monkeypatch.setattr(phases, "QUICK_SHAPES", [(20, 4, 16)])
    monkeypatch.setattr(phases, "QUICK_THREADS_SHAPE", (10, 1, 8))
    main(["--quick", "--sections", "phases", "--out", str(tmp_path)])
    rows = [r for r in csv.DictReader(open(tmp_path / "cpu.csv")) if r["section"] == "phases"]
    peak = [r for r in rows if r["provider"] == "none"]
    assert len(peak) == 1 and float(peak[0]["value"]) > 1
    got = {(r["mode"], r["metric"]): r for r in rows if r["provider"] == "fastrnn-numba"}
    for mode in ("fwd", "fwdbwd"):
        names = phases.PHASES if mode == "fwdbwd" else \
            [p for p in phases.PHASES if p != "weight gradients"]
        assert {m for md, m in got if md == mode} == set(names) | {"layer"}
        assert all(float(got[(mode, p)]["value"]) >= 0 for p in names)
        for p in ("input projection", "step products"):
            assert float(got[(mode, p)]["gflops"]) > 0
            assert float(got[(mode, p)]["torch_mm_gflops"]) > 0
    report = (tmp_path / "report.md").read_text()
    assert "## Where the time goes" in report
    assert "| lstm | (20, 4, 16) | fwdbwd |" in report
    threads = [r for r in csv.DictReader(open(tmp_path / "cpu.csv")) if r["section"] == "threads"]
    assert [r["metric"] for r in threads] == ["LSTM fwd+bwd, 1 thread(s)",
                                              f"LSTM fwd+bwd, {os.cpu_count()} thread(s)"]
    assert all(float(r["value"]) > 0 and r["H"] == "8" for r in threads)
