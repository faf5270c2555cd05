"""A batch of trees as flat arrays, and its level schedule (the tree kernels' input).

Nodes of every tree in the batch are numbered 0..n-1. The user gives, per node, its
parent (-1 for a root) and optionally its slot (position among its siblings); trees of
any shapes and sizes share one batch. ``Forest`` checks the structure and computes, once
per batch on the host in O(nodes):

    height [n]          0 for a leaf, 1 + the largest child's height otherwise
    order [n]           the nodes sorted by height (a level's nodes are contiguous)
    level_ptr [L+1]     level l is order[level_ptr[l]:level_ptr[l+1]]
    child_ptr [n+1]     node j's children are child_idx[child_ptr[j]:child_ptr[j+1]],
    child_idx [E]       in slot order; child_slot [E] their slots
    roots [R]           the roots, in node order (one per tree)

Every child sits one level or more below its parent, so a level's nodes depend only on
nodes of lower levels: the kernels run the forest bottom-up one level at a time (all of a
level's nodes in one product) and back-propagate top-down.
"""
import numpy as np
import torch


class ForestError(ValueError):
    """A malformed batch of trees, reported before any kernel runs."""


class Forest:
    """A batch of trees as flat arrays, checked and scheduled once, on the host.

    Args:
        parent: [n] parent index of every node, -1 for a root (a sequence or tensor).
        slot: [n] position of each node among its siblings (N-ary nets), or None for
            the order of the nodes.
        max_children: refuse nodes with more children.

    Attributes: ``n`` nodes, ``roots``, ``levels``, ``arity`` (most children of a node),
    and the level schedule the kernels run (``order``, ``level_ptr``, ``child_ptr``,
    ``child_idx``, ``child_slot``). ``Forest.from_trees`` builds one from nested tuples,
    ``ast`` trees or nltk.Tree-like objects.

    Raises:
        ForestError: no node, a parent out of range, a cycle, a node with two parents,
            two children in one slot, or more than ``max_children`` children.
    """

    def __init__(self, parent, slot=None, max_children=None):
        parent = np.asarray(torch.as_tensor(parent).cpu(), dtype=np.int64).reshape(-1)
        n = len(parent)
        if n == 0:
            raise ForestError("a forest needs at least one node")
        if ((parent < -1) | (parent >= n)).any():
            bad = int(np.flatnonzero((parent < -1) | (parent >= n))[0])
            raise ForestError(f"node {bad}'s parent {parent[bad]} is out of range [-1, {n})")
        if (parent == np.arange(n)).any():
            raise ForestError(f"node {int(np.flatnonzero(parent == np.arange(n))[0])} is its "
                              "own parent (a cycle)")
        inner = parent >= 0
        # children in slot order: by (parent, slot), slot defaulting to node order
        if slot is None:
            kids = np.flatnonzero(inner)
            kids = kids[np.argsort(parent[kids], kind="stable")]
            counts = np.bincount(parent[kids], minlength=n)
            ptr = np.concatenate([[0], np.cumsum(counts)])
            slots = np.arange(len(kids)) - ptr[parent[kids]]
        else:
            slot = np.asarray(torch.as_tensor(slot).cpu(), dtype=np.int64).reshape(-1)
            if slot.shape != (n,) or (slot[inner] < 0).any():
                raise ForestError("slot must give every node a position >= 0 among its siblings")
            kids = np.flatnonzero(inner)
            kids = kids[np.lexsort((slot[kids], parent[kids]))]
            slots = slot[kids]
            same = (parent[kids][1:] == parent[kids][:-1]) & (slots[1:] == slots[:-1])
            if same.any():
                k = kids[1:][same][0]
                raise ForestError(f"two children of node {parent[k]} share slot {slot[k]}")
            counts = np.bincount(parent[kids], minlength=n)
            ptr = np.concatenate([[0], np.cumsum(counts)])
        if max_children is not None and len(kids) and slots.max() >= max_children:
            k = kids[int(np.argmax(slots))]
            raise ForestError(f"node {parent[k]} has a child in slot {slots.max()}: more than "
                              f"{max_children} children for an {max_children}-ary tree")
        self.n, self.parent = n, parent
        self.child_ptr, self.child_idx, self.child_slot = ptr, kids, slots
        self.height = self._heights()
        self.order = np.argsort(self.height, kind="stable")
        levels = np.bincount(self.height)
        self.level_ptr = np.concatenate([[0], np.cumsum(levels)])
        self.roots = np.flatnonzero(~inner)
        self.arity = int(counts.max()) if n else 0

    def _heights(self):
        # Kahn's order from the leaves up: a node gets its height once all its children
        # have theirs; a node never reached sits on a cycle
        n, parent = self.n, self.parent
        pending = np.diff(self.child_ptr).copy()
        height = np.zeros(n, dtype=np.int64)
        frontier = np.flatnonzero(pending == 0)
        done = 0
        while len(frontier):
            done += len(frontier)
            up = parent[frontier]
            keep = up >= 0
            up, h = up[keep], height[frontier][keep] + 1
            np.maximum.at(height, up, h)
            np.subtract.at(pending, up, 1)
            cand = np.unique(up)
            frontier = cand[pending[cand] == 0]
        if done != n:
            stuck = int(np.flatnonzero(pending > 0)[0])
            raise ForestError(f"the parent links form a cycle (through node {stuck})")
        return height

    @property
    def levels(self):
        return len(self.level_ptr) - 1

    def by_level(self):
        """(forest, order, inverse): the same trees with the nodes renumbered by level
        (node p of ``forest`` is node ``order[p]`` of this one, so its ``order`` is
        0..n-1 and a level's nodes are consecutive rows), and the two int64 CPU
        permutations between the numberings (``inverse[j]``: node j's new number); made
        once. The tree Functions run the kernels on it: a level's rows of every per-node
        array are then one contiguous block instead of rows scattered over the batch
        (Child-Sum at 13,403 AST nodes: forward kernel 15.3 -> 12.8 ms, backward 18.8
        -> 14.9 ms, docs/notes.md). For a forest already in level order: (self, None,
        None)."""
        if getattr(self, "_by_level", None) is None:
            n, order = self.n, self.order
            if (order == np.arange(n)).all():
                self._by_level = (self, None, None)
            else:
                inv = np.empty(n, dtype=np.int64)
                inv[order] = np.arange(n)
                view = Forest.__new__(Forest)
                counts = np.diff(self.child_ptr)[order]
                view.n, view.arity = n, self.arity
                view.parent = np.where(self.parent[order] >= 0, inv[self.parent[order]], -1)
                view.child_ptr = np.concatenate([[0], np.cumsum(counts)])
                # new edge e belongs to new node p: old edge child_ptr[order[p]] + its rank
                old = np.repeat(self.child_ptr[order] - view.child_ptr[:-1], counts) + \
                    np.arange(len(self.child_idx))
                view.child_idx, view.child_slot = inv[self.child_idx[old]], self.child_slot[old]
                view.height, view.order = self.height[order], np.arange(n)
                view.level_ptr, view.roots = self.level_ptr, np.sort(inv[self.roots])
                self._by_level = (view, torch.from_numpy(order.astype(np.int64)),
                                  torch.from_numpy(inv))
        return self._by_level

    def tensors(self):
        """The schedule as int64 CPU tensors (the launchers' arguments), made once."""
        if getattr(self, "_tensors", None) is None:
            t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))  # noqa: E731
            self._tensors = dict(order=t(self.order), level_ptr=t(self.level_ptr),
                                 child_ptr=t(self.child_ptr), child_idx=t(self.child_idx),
                                 child_slot=t(self.child_slot))
        return self._tensors

    def links(self, slot=None):
        """(parents, children): int64 CPU tensors of the child links in edge order, only
        those in ``slot`` if given; made once per slot."""
        cache = self.__dict__.setdefault("_links", {})
        if slot not in cache:
            kids = self.child_idx if slot is None else self.child_idx[self.child_slot == slot]
            cache[slot] = (torch.from_numpy(self.parent[kids].copy()),
                           torch.from_numpy(np.ascontiguousarray(kids)))
        return cache[slot]

    def child_table(self, arity):
        """[n, arity] child index per slot, -1 where a node has no child in a slot."""
        table = np.full((self.n, arity), -1, dtype=np.int64)
        parents = np.repeat(np.arange(self.n), np.diff(self.child_ptr))
        table[parents, self.child_slot] = self.child_idx
        return torch.from_numpy(table)

    @classmethod
    def from_children(cls, children, max_children=None):
        """children: a list, per node, of its children's indices (in slot order)."""
        n = len(children)
        parent = np.full(n, -1, dtype=np.int64)
        slot = np.zeros(n, dtype=np.int64)
        for p, kids in enumerate(children):
            for s, k in enumerate(kids):
                if not 0 <= k < n:
                    raise ForestError(f"node {p} lists child {k}, out of range [0, {n})")
                if parent[k] != -1:
                    raise ForestError(f"node {k} has two parents ({parent[k]} and {p})")
                parent[k], slot[k] = p, s
        return cls(parent, slot, max_children)

    @classmethod
    def from_trees(cls, trees, max_children=None):
        """-> (Forest, labels): the nodes of every tree in pre-order, and each node's label.

        A tree is a nested tuple ``(label, child, child, ...)`` with any other value a
        leaf label; a Python ``ast.AST`` (label: the node's class name, children:
        ``ast.iter_child_nodes``); or anything with ``label()`` and iteration over its
        children, as ``nltk.Tree`` (duck-typed; its leaves are labels)."""
        import ast
        if isinstance(trees, tuple) or isinstance(trees, ast.AST) or _labelled(trees):
            raise TypeError("Forest.from_trees takes a list of trees, and this is one tree "
                            f"({type(trees).__name__}): pass [tree]")
        parent, labels = [], []
        stack = [(t, -1) for t in reversed(list(trees))]
        while stack:
            node, up = stack.pop()
            me = len(parent)
            parent.append(up)
            if isinstance(node, ast.AST):
                labels.append(type(node).__name__)
                kids = list(ast.iter_child_nodes(node))
            elif _labelled(node):
                labels.append(node.label())
                kids = list(node)
            elif isinstance(node, tuple) and node:
                labels.append(node[0])
                kids = list(node[1:])
            elif isinstance(node, (list, dict, set)):
                raise TypeError(f"a {type(node).__name__} inside a tree, {node!r:.60}: a node "
                                "is a tuple (label, child, child, ...), its children the items "
                                "after the label (('S', 'NP', 'VP'), not ('S', ['NP', 'VP']))")
            else:
                labels.append(node)
                kids = []
            stack.extend((k, me) for k in reversed(kids))
        return cls(parent, None, max_children), labels


def _labelled(node):
    # a tree node of a tree library, as nltk.Tree: label() and iteration over its children
    return hasattr(node, "label") and callable(node.label)
