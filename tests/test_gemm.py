"""The Numba step product ``gemm_nt`` (out[:n] = a[:n] @ W^T) against numpy.

Its tile has 4 rows x 3 weight rows, with 2- and 1-row tails, a plain loop for the
last M % 3 features, and passes over ROW_BLOCK rows at a time: the shapes below
hit every tail, more than one row block, and n smaller than the buffers' rows
(rows past n must stay untouched, as the kernels rely on for finished rows).
"""
import numpy as np
import pytest

from fastrnn.kernels.numba._gemm import ROW_BLOCK, gemm_nt


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 7, ROW_BLOCK, ROW_BLOCK + 1, 2 * ROW_BLOCK + 3])
@pytest.mark.parametrize("K,M", [(1, 1), (5, 2), (33, 4), (128, 512), (67, 100)])
def test_gemm_nt_matches_numpy(dtype, n, K, M):
    rng = np.random.default_rng(n * 1000 + K + M)
    rows = n + 3
    a = rng.standard_normal((rows, K)).astype(dtype)
    w = rng.standard_normal((M, K)).astype(dtype)
    out = np.full((rows, M), np.nan, dtype)
    gemm_nt(a, w, out, n)
    ref = a[:n].astype(np.float64) @ w.T.astype(np.float64)
    tol = (2e-6 if dtype == np.float32 else 1e-13) * np.sqrt(K) * (1 + np.abs(ref))
    assert np.all(np.abs(out[:n] - ref) <= tol)
    assert np.all(np.isnan(out[n:]))      # rows past n are not written


# The packed-panel product of the sequence kernels (kernels/numba/_panels.py): row
# counts below, at and past the tile's MR rows with every tail, a partial last panel
# (M % NR), K = 1, and row slices with a stride larger than K (the BPTT's [T, B, G]).
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 7, 8, 9, 13, 17, 33])
@pytest.mark.parametrize("K,M", [(1, 1), (5, 2), (33, 40), (128, 512), (67, 100)])
def test_gemm_packed_matches_numpy(dtype, n, K, M):
    import torch
    from fastrnn.kernels.numba._panels import gemm_packed, pack, panel_width
    rng = np.random.default_rng(n * 1000 + K + M)
    a = rng.standard_normal((n + 3, K + 2)).astype(dtype)[:, 1:K + 1]    # row stride K + 2
    b = rng.standard_normal((M, K)).astype(dtype).T                       # [K, M], transposed
    out = np.full((n + 3, M), np.nan, dtype)
    panels = pack(torch.from_numpy(b))
    nr = panel_width(dtype)
    assert panels.shape == (-(-M // nr), K, nr)
    gemm_packed(a, panels, out, n)
    ref = a[:n].astype(np.float64) @ b.astype(np.float64)
    tol = (2e-6 if dtype == np.float32 else 1e-13) * np.sqrt(K) * (1 + np.abs(ref))
    assert np.all(np.abs(out[:n] - ref) <= tol)
    assert np.all(np.isnan(out[n:]))      # rows past n are not written


# The layers' GEMMs outside the recurrences (kernels/numba/matmul.py): every stored
# layout of both operands (row-major, or stored transposed as W^T and dgates^T are),
# more than one block of K (_KC), row tails past a job's _MC rows and the tile's MR,
# a partial last panel, a bias row or a full [m, n] addend, and the empty cases.
MM_SHAPES = [(1, 1, 1), (5, 7, 3), (70, 513, 33), (130, 1100, 65), (64, 512, 32), (3, 0, 4),
             (0, 4, 5)]


def _operand(rows, cols, transposed, dtype, g):
    import torch
    if transposed:
        return torch.randn(cols, rows, dtype=dtype, generator=g).t()
    return torch.randn(rows, cols, dtype=dtype, generator=g)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("m,K,n", MM_SHAPES)
@pytest.mark.parametrize("a_t", [False, True])
@pytest.mark.parametrize("b_t", [False, True])
@pytest.mark.parametrize("add", [None, "row", "full"])
def test_matmul_matches_torch(dtype, m, K, n, a_t, b_t, add):
    import torch
    from fastrnn.kernels.numba import mm
    from fastrnn.kernels.numba.matmul import _KC, _MC
    assert (130, 1100) > (_MC, 2 * _KC)        # the shapes cross a job's rows and K blocks
    dt = getattr(torch, dtype)
    g = torch.Generator().manual_seed(m * 7 + K * 3 + n)
    a, b = _operand(m, K, a_t, dt, g), _operand(K, n, b_t, dt, g)
    c = None if add is None else torch.randn((1 if add == "row" else m, n), dtype=dt,
                                             generator=g)
    c = c[0] if add == "row" else c
    got = mm(a, b, c)
    ref = a.double() @ b.double() + (0 if c is None else c.double())
    assert got.shape == (m, n) and got.dtype == dt
    tol = (2e-6 if dtype == "float32" else 1e-13) * (K ** 0.5 + 1)
    assert torch.all((got.double() - ref).abs() <= tol * (1 + ref.abs())), (got - ref).abs().max()


def test_the_own_gemm_is_taken_where_it_measured_faster(monkeypatch):
    # mm_pays: only on the CPUs where matmul measured faster than torch.mm (OWN), from
    # MIN_FLOPS; FASTRNN_OWN_GEMM forces the CPU check either way
    from fastrnn.kernels.numba import matmul
    for forced in ("0", "1"):
        monkeypatch.setenv("FASTRNN_OWN_GEMM", forced)
        assert matmul._measured_faster() is (forced == "1")
    monkeypatch.setattr(matmul, "MIN_FLOPS", 1e9)
    for own in (False, True):
        monkeypatch.setattr(matmul, "OWN", own)
        assert matmul.mm_pays(16384, 512, 2048) is own             # 34 GFLOP
        assert matmul.mm_pays(3200, 128, 512) is False              # 0.42 GFLOP


def test_matmul_is_deterministic_on_any_thread_count():
    # each element is summed in one order (K blocks in turn, a tile's k loop) whichever
    # thread takes its rows
    import torch
    from fastrnn.kernels.numba import mm
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1100, 200, generator=g).t(), torch.randn(1100, 70, generator=g)
    threads = torch.get_num_threads()
    try:
        runs = []
        for n in (1, threads, threads):
            torch.set_num_threads(n)
            runs.append(mm(a, b))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(runs[0], r) for r in runs[1:])
