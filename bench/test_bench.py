"""pytest-benchmark view of the standard cases: ``pytest bench/ --benchmark-only``.

One benchmark per (case, provider), grouped by case so that the providers of a
case are compared side by side; track regressions with ``--benchmark-autosave``
and ``--benchmark-compare``. Warm-up (JIT compilation) happens before timing.
The full report with speedups, sweeps and plots is ``python -m bench``.
"""
import pytest

from bench import cases, matrix

PROVIDERS = ["fastrnn-numba", "torch"]


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("case", matrix.standard() + matrix.extras())
def test_case(benchmark, case, provider):
    why = cases.unavailable(provider, "cpu")
    if why:
        pytest.skip(why)
    step = cases.make_step(cases.modules(case, [provider])[provider], case)
    step()                                  # warm-up: JIT compilation is never timed
    benchmark.group = case
    benchmark.extra_info["gflop"] = cases.flops(case) / 1e9
    rounds = 3 if cases.flops(case) > 2e9 else 10
    benchmark.pedantic(step, rounds=rounds, iterations=1, warmup_rounds=1)
