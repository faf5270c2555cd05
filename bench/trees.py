"""Section ``trees``: the tree nets' kernels on real forests, the ASTs of the standard
library's functions (fastrnn.models.ast_task), batches of 1, 32 and 256 trees.

Providers, same weights and inputs: fastrnn-numba (the level-batched kernels), torch-levels
(the same level-by-level schedule in plain PyTorch: per level one gather of the
children, index_add for the sums, one matmul; autograd for the backward), and reference
(fastrnn.reference: one node at a time, the usual recursive code). Nodes per second,
forward and forward+backward, ChildSumTreeLSTM and TreeRNN (binary: the same ASTs in their
left-child right-sibling form, every node kept), H = 128 on 64-wide embeddings. The
level-batched baselines are checked against the reference in tests/test_trees.py.
"""
import ast

import numpy as np
import torch

from fastrnn import Forest, reference
from fastrnn.models import ChildSumTreeLSTM, TreeRNN

from .harness import child_setup, run_child
from .models import alternate

# forward+backward on this 2-core CPU: fastrnn's rate at least this many times each
# baseline's, at every batch size (the report marks each row)
TARGETS = {"torch-levels": 3.0, "reference": 20.0}


def _level_batched_child_sum(xproj, forest, w_hh):
    """Child-Sum Tree-LSTM level by level in plain PyTorch (the bench's baseline)."""
    H = w_hh.shape[1]
    inv = torch.empty(forest.n, dtype=torch.int64)
    inv[torch.from_numpy(forest.order)] = torch.arange(forest.n)
    parent = torch.from_numpy(forest.parent)
    kids_all = torch.from_numpy(forest.child_idx)
    hs_, cs_ = [], []
    for lev in range(forest.levels):
        a0, a1 = forest.level_ptr[lev], forest.level_ptr[lev + 1]
        nodes = torch.from_numpy(forest.order[a0:a1])
        x = xproj[nodes]
        pre = torch.zeros(len(nodes), 3 * H, dtype=x.dtype)
        fc = torch.zeros(len(nodes), H, dtype=x.dtype)
        if lev:
            h_so_far, c_so_far = torch.cat(hs_), torch.cat(cs_)
            lo, hi = forest.child_ptr[nodes.numpy()], forest.child_ptr[nodes.numpy() + 1]
            kids = kids_all[torch.from_numpy(np.concatenate(
                [np.arange(a, b) for a, b in zip(lo, hi)]).astype(np.int64))]
            local = inv[parent[kids]] - a0                     # the parent's row in this level
            hk, ck = h_so_far[inv[kids]], c_so_far[inv[kids]]
            hsum = torch.zeros(len(nodes), H, dtype=x.dtype).index_add(0, local, hk)
            pre = hsum @ w_hh[:3 * H].t()
            f = torch.sigmoid(x[local, 3 * H:] + hk @ w_hh[3 * H:].t())
            fc = fc.index_add(0, local, f * ck)
        i = torch.sigmoid(x[:, :H] + pre[:, :H])
        o = torch.sigmoid(x[:, H:2 * H] + pre[:, H:2 * H])
        u = torch.tanh(x[:, 2 * H:3 * H] + pre[:, 2 * H:])
        c = i * u + fc
        hs_.append(o * torch.tanh(c))
        cs_.append(c)
    out = torch.cat(hs_)
    return out[inv], torch.cat(cs_)[inv]


def _level_batched_tree_rnn(xproj, forest, w_hh):
    """TreeRNN level by level in plain PyTorch: per level one gather of the children into
    their slots and one matmul."""
    H = xproj.shape[1]
    N = w_hh.shape[1] // H
    inv = torch.empty(forest.n, dtype=torch.int64)
    inv[torch.from_numpy(forest.order)] = torch.arange(forest.n)
    table = forest.child_table(N)
    hs_ = []
    for lev in range(forest.levels):
        a0, a1 = forest.level_ptr[lev], forest.level_ptr[lev + 1]
        nodes = torch.from_numpy(forest.order[a0:a1])
        pre = xproj[nodes]
        if lev:
            so_far = torch.cat(hs_ + [xproj.new_zeros(1, H)])        # last row: no child
            slots = table[nodes]
            rows = torch.where(slots < 0, len(so_far) - 1, inv[slots.clamp(min=0)])
            pre = pre + so_far[rows].reshape(len(nodes), N * H) @ w_hh.t()
        hs_.append(torch.tanh(pre))
    return torch.cat(hs_)[inv]


def _binary(fn):
    """The tree made binary without dropping a node (left-child right-sibling): a
    node's first child goes in its slot 0, each further child in slot 1 of the sibling
    before it. -> (parent, slot) lists, nodes in breadth-first order."""
    nodes, kids = [fn], []
    for node in nodes:                       # grows while it runs: every node once
        ks = list(ast.iter_child_nodes(node))
        kids.append(range(len(nodes), len(nodes) + len(ks)))
        nodes.extend(ks)
    parent, slot = [-1] * len(nodes), [0] * len(nodes)
    for me, ks in enumerate(kids):
        for i, k in enumerate(ks):
            parent[k], slot[k] = (me, 0) if i == 0 else (k - 1, 1)
    return parent, slot


def _forests(quick):
    from fastrnn.models.ast_task import functions
    data = functions(per_family=40 if quick else 60)
    out = {}
    for B in (1, 32) if quick else (1, 32, 256):
        fns = [fn for _, fn in data[:B]]
        cs, _ = Forest.from_trees(fns)
        parents, slots = [], []
        for fn in fns:
            p, sl = _binary(fn)
            base = len(parents)
            parents += [q + base if q >= 0 else -1 for q in p]
            slots += sl
        out[B] = (cs, Forest(parents, slots))
    return out


def _measure(quick, device, only=None):
    """{metric: (nodes, {provider: median seconds})}, providers alternated in this
    process; ``only``: time that one provider and skip the others."""
    torch.manual_seed(0)
    E, H = 64, 128
    cs_model, rnn_model = ChildSumTreeLSTM(E, H).to(device), TreeRNN(E, H).to(device)
    ours, backend = ("fastrnn-triton", "triton") if device == "cuda" else \
        ("fastrnn-numba", "numba")
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    out = {}
    for B, (cs_forest, bin_forest) in _forests(quick).items():
        for name, model, forest, ref, levels in (
                ("ChildSumTreeLSTM", cs_model, cs_forest, reference.child_sum_tree_lstm,
                 _level_batched_child_sum),
                ("TreeRNN (binary)", rnn_model, bin_forest, reference.tree_rnn,
                 _level_batched_tree_rnn)):
            x = torch.randn(forest.n, E, device=device)
            w_ih, w_hh, b = model.weight_ih, model.weight_hh, model.bias
            model.backend = backend

            def first(out):
                return out[0] if isinstance(out, tuple) else out
            fns = {ours: lambda: first(model(x, forest)),
                   "reference": lambda: first(ref(torch.nn.functional.linear(x, w_ih, b), forest,
                                                  w_hh))}
            fns["torch-levels"] = lambda: first(levels(torch.nn.functional.linear(
                x, w_ih, b), forest, w_hh))
            if only is not None:
                fns = {only: fns[only]}
            for mode in ("fwd", "fwdbwd"):
                if mode == "fwd":
                    calls = {p: (lambda f=f: (torch.no_grad()(f)(), sync())) for p, f in fns.items()}
                else:
                    calls = {p: (lambda f=f: (f().sum().backward(), sync())) for p, f in fns.items()}
                reps = 3 if quick or B == 256 else 10
                # a turn of a short call (one tree: under a millisecond) is several calls
                # in a row, timed together (bench.models.alternate)
                t = alternate({p: c for p, c in calls.items() if p != "reference"}, reps,
                              block=max(1, 2000 // forest.n))
                if "reference" in calls and (device == "cpu" or B < 256):
                    # one node at a time: seconds at 256 trees, so timed less, on its own
                    t.update(alternate({"reference": calls["reference"]}, 1 if B == 256 else
                                       3 if B == 32 else reps, warmup=0 if B == 256 else 1))
                out[f"{name}, {B} AST trees ({forest.n} nodes, {forest.levels} levels), "
                    f"{'forward' if mode == 'fwd' else 'forward+backward'}"] = (forest.n, t)
    return out


def run(quick=False, device="cpu"):
    """-> list of (metric, unit, {provider: nodes/s}). On the CPU, fastrnn and
    torch-levels are also timed alone, each in a child process of its own, and keep the
    faster of their two medians, as in the matrix (on 2 cores one provider's thread
    pool, still spinning, slows the next one in a shared process). On CUDA
    (``python -m bench --gpu``) fastrnn runs the Triton kernels ("fastrnn-triton") and
    the per-node reference is left out at 256 trees."""
    res = _measure(quick, device)
    if device == "cpu":
        for p in ("fastrnn-numba", "torch-levels"):
            for metric, t in run_child("bench.trees", "--alone", p,
                                       *(["--quick"] if quick else [])).items():
                res[metric][1][p] = min(res[metric][1][p], t)
    return [(metric, "nodes/s", {p: n / v for p, v in t.items()})
            for metric, (n, t) in res.items()]


if __name__ == "__main__":          # a child process of run(): one provider alone
    import argparse
    import json
    ap = argparse.ArgumentParser()
    ap.add_argument("--alone", required=True)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    child_setup(args.alone)
    print(json.dumps({m: t[args.alone] for m, (_, t) in _measure(args.quick, "cpu",
                                                                 args.alone).items()}))
