"""Every sequence cell of the table on every backend against autograd of fastrnn.reference
(tests/helpers.py, ``check``): outputs, final states, every gradient. The reference
backend's launchers (BPTT written out in torch) are checked like the kernels."""
import pytest
import torch

from helpers import SHAPES, TOL, assert_close, check, function, layer_inputs, oracle

from fastrnn import autograd
from fastrnn.backends import REGISTRY
from fastrnn.cells import CELLS, SEQUENCE

# every sequence cell, and each value of its options (the RNN's two nonlinearities)
VARIANTS = [(c, {"nonlinearity": f}) if "nonlinearity" in CELLS[c].options else (c, {})
            for c in SEQUENCE for f in (("tanh", "relu") if "nonlinearity" in CELLS[c].options
                                        else (None,))]
IDS = [c + "".join(f"-{v}" for v in o.values()) for c, o in VARIANTS]
CPU = ["numba", "reference"]
# the interpreter is slow: tiny shapes, both layouts (H <= 32 on chip, larger tiled for fp32),
# tiles of the hidden dim crossed
INTERPRETER_SHAPES = [(1, 2, 5), (6, 3, 20), (5, 17, 40)]
PROJ = [c for c in SEQUENCE if CELLS[c].projection]


@pytest.mark.parametrize("cell,opts", VARIANTS, ids=IDS)
@pytest.mark.parametrize("backend", CPU)
@pytest.mark.parametrize("T,B,H", SHAPES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_backends_match_the_reference(cell, opts, backend, T, B, H, reverse, dtype):
    check(cell, backend, T, B, H, dtype, reverse=reverse, **opts)


@pytest.mark.parametrize("cell", list(SEQUENCE) + [f"{c}:proj" for c in PROJ])
@pytest.mark.parametrize("backend", CPU)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("lengths", [[5, 1, 3, 5, 2], [2, 2, 2, 2, 2], [1, 5, 4, 3, 2]])
def test_cpu_backends_varlen(cell, backend, reverse, lengths):
    # variable lengths take the kernels' gather path (rows out of order, own time index)
    check(cell.split(":")[0], backend, 5, 5, 9, torch.float32,
          P=4 if cell.endswith(":proj") else None, lengths=torch.tensor(lengths), reverse=reverse)


@pytest.mark.parametrize("cell", PROJ)
@pytest.mark.parametrize("backend", CPU)
@pytest.mark.parametrize("T,B,H,P", [(6, 3, 5, 2), (9, 4, 33, 17), (4, 5, 130, 64)])
@pytest.mark.parametrize("reverse", [False, True])
def test_cpu_backends_projection(cell, backend, T, B, H, P, reverse):
    check(cell, backend, T, B, H, torch.float32, P=P, reverse=reverse)


@pytest.mark.parametrize("cell", [c for c in SEQUENCE if CELLS[c].b_hn])
@pytest.mark.parametrize("backend", CPU)
def test_cpu_backends_without_bias(cell, backend):
    check(cell, backend, 6, 3, 7, torch.float32, bias=False)


@pytest.mark.parametrize("cell,opts", VARIANTS, ids=IDS)
@pytest.mark.parametrize("T,B,H", INTERPRETER_SHAPES)
@pytest.mark.parametrize("reverse", [False, True])
def test_triton_interpreter_matches_the_reference(cell, opts, T, B, H, reverse):
    check(cell, "triton", T, B, H, torch.float32, reverse=reverse, **opts)


@pytest.mark.parametrize("cell", PROJ)
@pytest.mark.parametrize("reverse", [False, True])
def test_triton_interpreter_projection(cell, reverse):
    check(cell, "triton", 4, 3, 20, torch.float32, P=7, reverse=reverse)


@pytest.mark.parametrize("cell", SEQUENCE)
@pytest.mark.parametrize("reverse", [False, True])
def test_triton_interpreter_varlen(cell, reverse):
    check(cell, "triton", 4, 3, 7, torch.float32, lengths=torch.tensor([4, 1, 3]), reverse=reverse)
    check(cell, "triton", 4, 3, 40, torch.float32, P=3 if cell in PROJ else None,
          lengths=torch.tensor([4, 1, 3]), reverse=reverse)
    # 16-bit storage, fp32 accumulation: error of the order of fp16's epsilon. bf16 is
    # covered by the gpu test only: the interpreter's tl.dot on bf16 operands returns
    # garbage (numpy has no bfloat16), checked with a one-line kernel on triton 3.9.
    check(cell, "triton", 4, 3, 7, torch.float16, lengths=torch.tensor([2, 4, 3]),
          reverse=reverse)


@pytest.mark.parametrize("cell", SEQUENCE)
@pytest.mark.parametrize("backend", CPU)
def test_gradcheck_float64(cell, backend):
    for lengths, reverse in [(None, False), (torch.tensor([4, 2, 3]), True)]:
        args = layer_inputs(cell, 4, 3, 5, torch.float64, P=3)
        inputs = [None if t is None else t.clone().requires_grad_() for t in args.values()]
        assert torch.autograd.gradcheck(function(cell, backend, lengths, reverse), inputs)


@pytest.mark.parametrize("cell", SEQUENCE)
def test_gradgradcheck_float64(cell):
    # backward of backward: the Function recomputes with the reference (autograd.py)
    inputs = [None if t is None else t.clone().requires_grad_()
              for t in layer_inputs(cell, 3, 2, 4, torch.float64).values()]
    assert torch.autograd.gradgradcheck(function(cell, "numba"), inputs)


@pytest.mark.parametrize("cell", SEQUENCE)
def test_xproj_not_saved_when_it_can_be_recomputed(cell):
    # xproj is a layer's largest tensor; with xproj_fn the Function must not keep it
    args = layer_inputs(cell, 4, 3, 5, torch.float64)
    xproj = args["xproj"].requires_grad_()
    rest = list(args.values())[1:]
    fn, be = getattr(autograd, CELLS[cell].function), REGISTRY["numba"]
    opts = ["tanh"] * len(CELLS[cell].options)
    out = fn.apply(xproj, *rest, None, False, *opts, be, lambda: xproj * 1)[0]
    saved = [t for t in out.grad_fn.saved_tensors if t is not None]
    assert all(t.data_ptr() != xproj.data_ptr() for t in saved)
    out = fn.apply(xproj, *rest, None, False, *opts, be)[0]
    assert any(t.data_ptr() == xproj.data_ptr() for t in out.grad_fn.saved_tensors
               if t is not None)


@pytest.mark.parametrize("backend", ["numba", "triton", "reference"])   # triton: the interpreter
@pytest.mark.parametrize("cell,P", [(c, None) for c in SEQUENCE] + [(c, 3) for c in PROJ])
@pytest.mark.parametrize("lengths", [None, [4, 1, 3]])
def test_inference_saves_nothing(backend, cell, P, lengths):
    # save=False: the same outputs and final states, bit for bit (NaN-poisoned, so an
    # element left unwritten fails), and what only backward reads is not allocated
    launch = getattr(REGISTRY[backend].kernels(), f"{cell}_fwd")
    kw = dict(layer_inputs(cell, 4, 3, 7, torch.float32, P), reverse=True,
              lengths=None if lengths is None else torch.tensor(lengths),
              **{o: "tanh" for o in CELLS[cell].options})
    full, bare = launch(**kw), launch(**kw, save=False)
    n = 1 + len(CELLS[cell].states)
    for a, b in zip(full[:n], bare[:n]):
        assert torch.equal(a, b)
    assert [t.numel() for t in bare[n:]] == [0] * (len(full) - n)


@pytest.mark.parametrize("cell", SEQUENCE)
def test_layers_under_no_grad_skip_the_functions(cell, monkeypatch):
    import fastrnn
    m = getattr(fastrnn, CELLS[cell].torch_layer)(5, 7, num_layers=2, bidirectional=True)
    x = torch.randn(6, 3, 5)
    out, _ = m(x)
    fn = getattr(autograd, CELLS[cell].function)

    def fail(*a):
        raise AssertionError("the Function ran under no_grad")
    monkeypatch.setattr(fn, "apply", fail)
    with torch.no_grad():
        assert torch.equal(m(x)[0], out.detach())
    with pytest.raises(AssertionError, match="the Function ran"):
        m(x)                # with grad: the Function, which saves for backward


@pytest.mark.gpu
@pytest.mark.parametrize("cell", SEQUENCE)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, TOL[torch.bfloat16])])
def test_triton_gpu(cell, dtype, tol, monkeypatch):
    # IEEE fp32 products (TF32 follows cudnn.allow_tf32, as torch's cuDNN RNNs)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    lengths = torch.randint(1, 41, (20,))
    check(cell, "triton", 40, 20, 96, dtype, P=48 if cell in PROJ else None, lengths=lengths,
          reverse=True, device="cuda", tol=tol)


@pytest.mark.gpu
@pytest.mark.parametrize("cell", SEQUENCE)
@pytest.mark.parametrize("H", [32, 128, 512])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_gpu_forward_sizes(cell, H, dtype, monkeypatch):
    # the forward launcher alone at the sizes whose plans differ (on chip, streamed)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    args = layer_inputs(cell, 50, 20, H, dtype)
    lengths = torch.randint(1, 51, (20,))
    kw = {k: None if v is None else v.cuda() for k, v in args.items()}
    got = getattr(REGISTRY["triton"].kernels(), f"{cell}_fwd")(
        **kw, lengths=lengths, reverse=True, **{o: "tanh" for o in CELLS[cell].options})
    ref = oracle(cell, lengths, True)(*[None if t is None else t.double() for t in args.values()])
    tol = 1e-4 if dtype == torch.float32 else TOL[torch.bfloat16]
    for name, a, b in zip(["out", "h_n", "c_n"], got, ref):
        assert_close(a.cpu(), b, tol, name)


# The Numba column plan (kernels/numba/_common.column_units): every row in one chunk, the
# hidden units split into slices, one parallel region a step. Forced here to S slices
# (S > the cores is fine: a region's slices need no barrier), on uneven slices too.
COLUMN_CELLS = ["lstm"]


@pytest.mark.parametrize("cell", COLUMN_CELLS)
@pytest.mark.parametrize("slices", [2, 3])
@pytest.mark.parametrize("T,B,H,lengths", [(5, 1, 20, None), (6, 3, 9, None), (1, 2, 2, None),
                                           (5, 4, 17, [5, 1, 3, 4]), (4, 3, 8, [0, 4, 2])])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_numba_column_plan_matches_the_reference(cell, slices, T, B, H, lengths, reverse, dtype,
                                                  monkeypatch):
    from fastrnn.kernels.numba import _common
    monkeypatch.setattr(_common, "COLUMNS", slices)
    check(cell, "numba", T, B, H, dtype, reverse=reverse,
          lengths=None if lengths is None else torch.tensor(lengths))


@pytest.mark.parametrize("cell", COLUMN_CELLS)
@pytest.mark.parametrize("lengths", [None, [3, 6, 1]])
@pytest.mark.parametrize("reverse", [False, True])
def test_numba_column_plan_is_deterministic(cell, lengths, reverse, monkeypatch):
    # bitwise the same results on 1 and 2 threads and run to run for one split (a
    # slice's loops round like the row plan's but may contract a*b + c the other way:
    # to the row plan it is within float32 rounding), with dL/dh_t (diagnostics) too
    from fastrnn.kernels import numba as backend
    from fastrnn.kernels.numba import _common
    T, B, H = 6, 3, 40
    args = layer_inputs(cell, T, B, H, torch.float32, None, True)
    lens = None if lengths is None else torch.tensor(lengths)
    fwd, bwd = getattr(backend, f"{cell}_fwd"), getattr(backend, f"{cell}_bwd")
    results = {}
    threads = torch.get_num_threads()       # the launchers run on torch's thread count
    try:
        for plan, n in ((False, 1), (2, 1), (2, threads), (2, threads), (3, threads)):
            monkeypatch.setattr(_common, "COLUMNS", plan)
            torch.set_num_threads(n)
            outs, grads = _launch_both(cell, fwd, bwd, args, lens, reverse)
            if lens is not None:        # what is saved for BPTT is defined within each length
                valid = (torch.arange(T)[:, None] < lens[None, :])[..., None]
                outs = outs[:1] + [o if o.shape[:2] != (T, B) else torch.where(valid, o, 0)
                                   for o in outs[1:]]
            results.setdefault(plan, []).append(outs + grads)
    finally:
        torch.set_num_threads(threads)
    for plan in (2,):
        for run in results[plan][1:]:
            for i, (a, b) in enumerate(zip(results[plan][0], run)):
                assert torch.equal(a, b), f"{cell}: output {i} of the {plan}-slice plan varies"
    for plan in (2, 3):
        for i, (a, b) in enumerate(zip(results[False][0], results[plan][0])):
            assert_close(a, b, 1e-6, f"{cell}: output {i}, {plan} slices against rows")


def _launch_both(cell, fwd, bwd, args, lengths, reverse):
    # the launchers' forward then BPTT with seeded output gradients and grad_states
    g = torch.Generator().manual_seed(3)
    xproj, w_hh = args["xproj"], args["w_hh"]
    T, B, _ = xproj.shape
    H = w_hh.shape[1]
    states = [args[k] for k in args if k in ("h0", "c0")]
    if cell == "lstm":
        out, h_n, c_n, gates, cells, _ = fwd(xproj=xproj, h0=states[0], c0=states[1],
                                             w_hh=w_hh, w_hr=None, lengths=lengths,
                                             reverse=reverse)
        rnd = [torch.randn(t.shape, generator=g) for t in (out, h_n, c_n)]
        grad_states = torch.empty(T, B, H)
        grads = bwd(grad_out=rnd[0], grad_hn=rnd[1], grad_cn=rnd[2], c0=states[1], gates=gates,
                    cells=cells, w_hh=w_hh, w_hr=None, lengths=lengths, reverse=reverse,
                    grad_states=grad_states)
        return [out, h_n, c_n, gates, cells], list(grads) + [grad_states]
    raise AssertionError(cell)
