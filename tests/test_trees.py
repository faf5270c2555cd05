"""Tree nets: the level-batched kernels against the per-node recursion of fastrnn.reference,
on outputs and every gradient, over forests of every shape; the forest's checks."""
import ast
import logging
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import fastrnn

from fastrnn import Forest, ForestError, reference
from fastrnn.cells import CELLS
from fastrnn.models import ChildSumTreeLSTM, NaryTreeLSTM, TreeRNN

from helpers import assert_close, oldest_triton_env


def _random_tree(rng, n, max_children):
    # parent of node i (i >= 1) drawn among earlier nodes that still have room
    parent, kids = [-1], [0]
    for i in range(1, n):
        room = [j for j in range(i) if kids[j] < max_children]
        p = rng.choice(room)
        parent.append(p)
        kids[p] += 1
        kids.append(0)
    return parent


def _forest(kind, arity=2):
    """A named forest: one batch mixing single leaves, chains, full and skewed trees."""
    rng = random.Random(7)
    if kind == "leaf":
        return Forest([-1])
    if kind == "chain":
        return Forest([-1] + list(range(19)))                  # depth = nodes
    if kind == "full":
        return Forest([-1] + [(i - 1) // 2 for i in range(1, 31)])
    if kind == "skewed":                                      # a comb: every left child a leaf
        parent = [-1]
        for d in range(12):
            parent += [2 * d, 2 * d]
        return Forest(parent)
    if kind == "wide":                                        # 0-20 children (Child-Sum)
        parent = [-1] + [0] * 20 + [1] * 3 + [2] * 7
        return Forest(parent)
    if kind == "star":                                        # one node, 21 children
        return Forest([-1] + [0] * 21)
    # "mixed": a batch of all of the above plus random trees, numbered one after another
    parents = []
    for part in ([-1], [-1, 0, 1, 2], [-1, 0, 0, 1, 1, 2, 2],
                 _random_tree(rng, 40, arity), _random_tree(rng, 9, arity), [-1, 0]):
        base = len(parents)
        parents += [p + base if p >= 0 else -1 for p in part]
    return Forest(parents)


KINDS = ["leaf", "chain", "full", "skewed", "mixed"]
MODELS = [("tree_rnn", lambda: TreeRNN(3, 5)), ("tree_rnn relu", lambda: TreeRNN(3, 5, 3, "relu")),
          ("nary", lambda: NaryTreeLSTM(3, 5)), ("nary3", lambda: NaryTreeLSTM(3, 5, arity=3)),
          ("child_sum", lambda: ChildSumTreeLSTM(3, 5))]


def _oracle(model, x, forest):
    """The module's forward as autograd through fastrnn.reference's per-node recursion."""
    cell = CELLS[model._cell]
    opts = {o: getattr(model, o) for o in cell.options}
    return getattr(reference, cell.reference[0])(F.linear(x, model.weight_ih, model.bias),
                                                 forest, model.weight_hh, **opts)


def _run(model, x, forest, backend):
    """Outputs and every gradient of one forward and backward on ``backend``, or through
    the oracle (``backend="oracle"``)."""
    model.backend = backend
    for p in model.parameters():
        p.grad = None
    leaf = x.clone().requires_grad_()
    out = _oracle(model, leaf, forest) if backend == "oracle" else model(leaf, forest)
    out = out if isinstance(out, tuple) else (out,)
    g = torch.Generator().manual_seed(1)
    torch.autograd.backward(out, [torch.randn(t.shape, generator=g, dtype=torch.float64)
                                  .to(t.dtype) for t in out])
    return [t.detach() for t in out] + [leaf.grad] + [p.grad.clone() for p in model.parameters()]


# nodes with 0-21 children ("wide", "star"): Child-Sum, and an N-ary net of arity 21 (one
# of lower arity refuses them)
CASES = [(name, make, kind) for name, make in MODELS for kind in KINDS] + \
    [("child_sum", MODELS[-1][1], "wide"), ("nary21", lambda: NaryTreeLSTM(3, 5, 21), "wide"),
     ("nary21", lambda: NaryTreeLSTM(3, 5, 21), "star")]


@pytest.mark.parametrize("backend", ["numba", "reference"])
@pytest.mark.parametrize("name,make,kind", CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_cpu_backends_match_the_per_node_recursion(backend, name, make, kind):
    model = make().double()
    forest = _forest(kind, getattr(model, "arity", 2))
    x = torch.randn(forest.n, 3, dtype=torch.float64)
    got, ref = _run(model, x, forest, backend), _run(model, x, forest, "oracle")
    names = ["h", "c"][:len(got) - 5] + ["x", "weight_ih", "weight_hh", "bias"]
    for what, a, b in zip(names, got, ref):
        assert_close(a, b, 1e-12, what)


@pytest.mark.parametrize("name,make", MODELS, ids=[m[0] for m in MODELS])
def test_the_own_gemm_matches_the_per_node_recursion(name, make, own_gemm):
    # the input projection and the weight gradients on the Numba backend's own GEMM
    model = make().double()
    forest = _forest("mixed", getattr(model, "arity", 2))
    x = torch.randn(forest.n, 3, dtype=torch.float64)
    got, ref = _run(model, x, forest, "numba"), _run(model, x, forest, "oracle")
    assert own_gemm
    names = ["h", "c"][:len(got) - 5] + ["x", "weight_ih", "weight_hh", "bias"]
    for what, a, b in zip(names, got, ref):
        assert_close(a, b, 1e-12, what)


GRADCHECKS = [(cls, "gradcheck", "mixed") for cls in (TreeRNN, NaryTreeLSTM, ChildSumTreeLSTM)] + \
    [(cls, "gradgradcheck", "full") for cls in (TreeRNN, ChildSumTreeLSTM)]


@pytest.mark.parametrize("cls,check,kind", GRADCHECKS,
                         ids=[f"{c.__name__}-{k}" for c, k, _ in GRADCHECKS])
def test_gradcheck_float64(cls, check, kind):
    # gradgradcheck: under create_graph the Functions differentiate the per-node
    # recursion instead of running the kernels
    forest = _forest(kind)
    model = cls(2, 3).double()
    model.backend = "numba"
    x = torch.randn(forest.n, 2, dtype=torch.float64, requires_grad=True)
    names = [n for n, _ in model.named_parameters()]

    def f(x, *ps):
        return torch.func.functional_call(model, dict(zip(names, ps)), (x, forest))
    ps = [p.detach().clone().requires_grad_() for p in model.parameters()]
    assert getattr(torch.autograd, check)(f, (x, *ps))


@pytest.mark.parametrize("backend", ["numba", "reference"])
@pytest.mark.parametrize("cls", [NaryTreeLSTM, ChildSumTreeLSTM])
def test_a_loss_on_the_roots_h_only_without_bias(backend, cls):
    # c unused: its gradient arrives as None, and the rows of h not at a root get none
    forest = _forest("mixed")
    model = cls(3, 5, bias=False).double()
    x = torch.randn(forest.n, 3, dtype=torch.float64)
    got = []
    for run in (backend, "oracle"):
        model.backend = run
        model.zero_grad()
        leaf = x.clone().requires_grad_()
        h = (_oracle(model, leaf, forest) if run == "oracle" else model(leaf, forest))[0]
        (h[torch.from_numpy(forest.roots)] ** 2).sum().backward()
        got.append([leaf.grad, model.weight_ih.grad, model.weight_hh.grad])
    for what, a, b in zip(["x", "weight_ih", "weight_hh"], *got):
        assert_close(a, b, 1e-12, what)


def test_by_level_renumbers_the_same_trees():
    forest = _forest("mixed")
    view, order, inv = forest.by_level()
    assert (view.order == range(forest.n)).all() and (inv[order] == torch.arange(forest.n)).all()
    assert view.level_ptr.tolist() == forest.level_ptr.tolist()
    assert (view.height == forest.height[order.numpy()]).all()
    old = {(int(p), int(k), int(s)) for p, k, s in zip(forest.parent[forest.child_idx],
                                                       forest.child_idx, forest.child_slot)}
    new = {(int(order[p]), int(order[k]), int(s))
           for p, k, s in zip(view.parent[view.child_idx], view.child_idx, view.child_slot)}
    assert old == new and len(view.child_idx) == len(forest.child_idx)
    assert sorted(order[view.roots].tolist()) == forest.roots.tolist()
    for p in range(view.n):                      # each node's children stay in slot order
        kids = view.child_idx[view.child_ptr[p]:view.child_ptr[p + 1]]
        assert (view.parent[kids] == p).all() and (view.height[kids] < view.height[p]).all()
    assert view.by_level() == (view, None, None)     # already by level: itself


@pytest.mark.parametrize("name,make", MODELS[:1] + MODELS[2:], ids=[m[0] for m in MODELS[:1] + MODELS[2:]])
def test_numba_launchers_agree_on_any_numbering(name, make):
    # the Functions pass the forest by level; the launchers take any numbering (their
    # by-level shortcuts, as Child-Sum's consecutive links, must not change a result)
    from fastrnn.backends import REGISTRY
    kernels, model = REGISTRY["numba"].kernels(), make().double()
    forest = _forest("mixed", getattr(model, "arity", 2))
    view, order, inv = forest.by_level()
    cell = model._cell
    g = torch.Generator().manual_seed(3)
    xproj = torch.randn(forest.n, model.weight_ih.shape[0], generator=g, dtype=torch.float64)
    w = model.weight_hh.detach()
    opts = {"nonlinearity": model.nonlinearity} if cell == "tree_rnn" else {}
    res = []
    for f, rows in ((forest, None), (view, order)):
        x = xproj if rows is None else xproj[rows]
        out = getattr(kernels, f"{cell}_fwd")(xproj=x, w_hh=w, forest=f.tensors(), **opts)
        out = out if isinstance(out, tuple) else (out,)
        grads = [torch.randn(forest.n, 5, generator=torch.Generator().manual_seed(4 + i),
                             dtype=torch.float64) for i in range(len(out[:2]))]
        if rows is not None:
            grads = [t[rows] for t in grads]
        saved = dict(h=out[0]) if cell == "tree_rnn" else dict(c=out[1], gates=out[2])
        if cell == "child_sum_tree_lstm":
            saved["fgates"] = out[3]
        named = dict(zip(["grad_h", "grad_c"], grads))
        back = getattr(kernels, f"{cell}_bwd")(**named, **saved, w_hh=w, forest=f.tensors(),
                                                **opts)
        back = back if isinstance(back, tuple) else (back,)
        per_node = [t if rows is None else t[inv] for t in list(out[:2]) + [back[-1]]]
        res.append(per_node)
    names = ["h", "grad_xproj"] if cell == "tree_rnn" else ["h", "c", "grad_xproj"]
    for what, a, b in zip(names, *res):
        assert_close(a, b, 1e-12, what)


def test_index_tensors_go_to_a_device_once():
    # on CUDA each call would otherwise copy the schedule's index tensors from the host;
    # "meta" stands in for a device here
    from fastrnn.autograd import _on
    forest = _forest("mixed")
    _, order, _ = forest.by_level()
    assert _on(forest, torch.device("cpu"), "to levels", order) is order
    first = _on(forest, torch.device("meta"), "to levels", order)
    assert first.device.type == "meta" and first.shape == order.shape
    assert _on(forest, torch.device("meta"), "to levels", order) is first


def test_float32():
    forest = _forest("mixed")
    for make in (lambda: TreeRNN(3, 5), lambda: ChildSumTreeLSTM(3, 5)):
        model = make()
        x = torch.randn(forest.n, 3)
        got, ref = _run(model, x, forest, "numba"), _run(model.double(), x.double(), forest,
                                                         "oracle")
        for a, b in zip(got, ref):
            assert_close(a, b, 2e-5)


def test_forest_from_trees_nested_ast_and_nltk_like():
    class Tree(list):                        # nltk.Tree's interface: label() and children
        def __init__(self, label, kids):
            super().__init__(kids)
            self._label = label

        def label(self):
            return self._label
    f, labels = Forest.from_trees([("S", ("NP", "I"), ("VP", "run")), Tree("S", ["a", "b"]),
                                   ast.parse("x = 1")])
    assert labels[:7] == ["S", "NP", "I", "VP", "run", "S", "a"]
    assert labels[8:] == ["Module", "Assign", "Name", "Store", "Constant"]
    assert f.parent.tolist()[:8] == [-1, 0, 1, 0, 3, -1, 5, 5]
    assert f.roots.tolist() == [0, 5, 8] and f.levels == 4


@pytest.mark.parametrize("trees,message", [
    (("S", ("NP", "I"), "run"), "one tree"),              # a tree, not a list of trees
    (ast.parse("x = 1"), "one tree"),
    ([("S", ["NP", "VP"])], "a list inside a tree"),       # children in a list: one leaf
])
def test_from_trees_refuses_what_would_build_other_trees(trees, message):
    with pytest.raises(TypeError, match=message):
        Forest.from_trees(trees)


@pytest.mark.parametrize("make,error,message", [
    (lambda x: x.double(), ValueError, "does not match weight dtype"),
    (lambda x: x.long(), TypeError, "floating-point"),
    (lambda x: x.to("meta"), RuntimeError, "not at the same device"),
])
def test_tree_nets_name_a_wrong_input_before_any_kernel(make, error, message, caplog):
    forest = Forest([-1, 0, 0, 1])
    for net in (fastrnn.TreeRNN(4, 5), fastrnn.NaryTreeLSTM(4, 5), fastrnn.ChildSumTreeLSTM(4, 5)):
        with caplog.at_level(logging.INFO, logger="fastrnn"), pytest.raises(error, match=message):
            net(make(torch.randn(4, 4)), forest)
        assert "falling back" not in caplog.text        # no misleading backend line first


@pytest.mark.parametrize("parent,message", [
    ([-1, 2, 1], "cycle"), ([-1, 5], "out of range"), ([0], "its own parent"), ([], "at least one"),
])
def test_bad_forests_fail_before_any_kernel(parent, message):
    with pytest.raises(ForestError, match=message):
        Forest(parent)


def test_two_parents_and_too_many_children():
    with pytest.raises(ForestError, match="two parents"):
        Forest.from_children([[1, 2], [2], []])
    with pytest.raises(ForestError, match="out of range"):
        Forest.from_children([[1, 7], []])
    forest = Forest([-1, 0, 0, 0])
    with pytest.raises(ForestError, match="3 children: more than 2"):
        TreeRNN(3, 4)(torch.randn(4, 3), forest)
    with pytest.raises(ForestError, match="more than 2"):
        Forest([-1, 0, 0, 0], max_children=2)
    with pytest.raises(ValueError, match="one row per node"):
        ChildSumTreeLSTM(3, 4)(torch.randn(5, 3), forest)


def test_the_benchmarks_level_batched_baselines_match_the_reference():
    from bench.trees import _level_batched_child_sum, _level_batched_tree_rnn
    from fastrnn import reference
    forest, H = _forest("mixed"), 5
    g = torch.Generator().manual_seed(2)
    xproj = torch.randn(forest.n, 4 * H, generator=g, dtype=torch.float64)
    w_cs = torch.randn(4 * H, H, generator=g, dtype=torch.float64) / 3
    w_rnn = torch.randn(H, 2 * H, generator=g, dtype=torch.float64) / 3
    for a, b in zip(_level_batched_child_sum(xproj, forest, w_cs),
                    reference.child_sum_tree_lstm(xproj, forest, w_cs)):
        assert_close(a, b, 1e-12, "child-sum")
    assert_close(_level_batched_tree_rnn(xproj[:, :H], forest, w_rnn),
                 reference.tree_rnn(xproj[:, :H], forest, w_rnn), 1e-12, "tree rnn")


def test_ast_task_tree_lstm_beats_the_bag_of_node_types():
    # a small version of `python -m fastrnn.models.ast_task` (docs/models/trees.md: 55.4% against 39.5%)
    from fastrnn.models import ast_task as task
    data = task.functions(per_family=150)
    split = int(0.8 * len(data))
    train, test = data[:split], data[split:]
    labels = task.Labels(fn for _, fn in train)
    torch.manual_seed(0)
    bag, _, _ = task.run(task.BagClassifier(len(labels), len(task.FAMILIES)), train, test,
                         labels, 400, lr=0.2, log=None)
    torch.manual_seed(0)
    tree, _, _ = task.run(task.TreeClassifier(len(labels), len(task.FAMILIES)), train, test,
                          labels, 400, log=None)
    assert tree > bag + 0.03, f"tree {tree:.1%} vs bag {bag:.1%}"


TRITON_MODELS = [("tree_rnn", lambda: TreeRNN(3, 20)),
                 ("tree_rnn relu 3", lambda: TreeRNN(3, 20, 3, "relu")),
                 ("nary", lambda: NaryTreeLSTM(3, 20)), ("nary3", lambda: NaryTreeLSTM(3, 20, 3)),
                 ("child_sum", lambda: ChildSumTreeLSTM(3, 20))]
TRITON_CASES = [(n, m, k) for n, m in TRITON_MODELS for k in KINDS] + \
    [("child_sum", TRITON_MODELS[-1][1], "wide"),
     # 21 children: the arity is a runtime loop, one build for every arity (its N x N
     # forget-gate products make this the slowest case under the interpreter: H = 16)
     ("nary21", lambda: NaryTreeLSTM(3, 16, 21), "star")]


@pytest.mark.parametrize("name,make,kind", TRITON_CASES, ids=[f"{c[0]}-{c[2]}" for c in TRITON_CASES])
def test_triton_kernels_match_the_per_node_recursion(name, make, kind):
    # under TRITON_INTERPRET=1 (conftest): one launch per level, programs one by one;
    # H=20: two unit blocks, one of them partial
    model = make()
    forest = _forest(kind, getattr(model, "arity", 2))
    x = torch.randn(forest.n, 3)
    got = _run(model, x, forest, "triton")
    ref = _run(model.double(), x.double(), forest, "oracle")
    names = ["h", "c"][:len(got) - 5] + ["x", "weight_ih", "weight_hh", "bias"]
    for what, a, b in zip(names, got, ref):
        assert_close(a, b, 2e-5, what)


def test_lstm_tree_kernels_pass_under_the_oldest_triton():
    # the Child-Sum and N-ary kernels (21 children included) under Triton 3.6's
    # interpreter, torch 2.11's Triton, in a child whose path puts it first (with numpy
    # < 2.4, which that interpreter needs; tests/test_triton_aot.py compiles the kernels
    # there for sm_80 and sm_90a)
    env = oldest_triton_env(dict(os.environ, TRITON_INTERPRET="1"))
    run = ("import sys, pytest, triton; print('triton', triton.__version__); "
           "sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', '-W', "
           "'ignore::DeprecationWarning', 'test_trees.py', '-k', "
           "'triton_kernels and (child_sum or nary) and (mixed or wide or star)']))")
    r = subprocess.run([sys.executable, "-c", run], cwd=Path(__file__).parent, env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert r.stdout.startswith("triton 3.6.") and "\n5 passed" in r.stdout, r.stdout[-2000:]


def test_the_benchmarks_binary_form_keeps_every_ast_node():
    # left-child right-sibling: slot 0 = first child, slot 1 = next sibling
    import ast
    from bench.trees import _binary
    fn = ast.parse("def f(a, b):\n    x = a + b\n    return g(x, 1, 2)\n").body[0]
    parent, slot = _binary(fn)
    nodes = list(ast.walk(fn))
    assert len(parent) == len(nodes)
    forest = Forest(parent, slot)
    assert forest.arity == 2 and list(forest.roots) == [0]
    kids = list(ast.iter_child_nodes(fn))            # arguments, Assign, Return
    assert parent[1:4] == [0, 1, 2] and slot[1:4] == [0, 1, 1]
    assert len(kids) == 3
