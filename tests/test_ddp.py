"""Multi-process training: fastrnn layers under DistributedDataParallel (two gloo
processes on the CPU) get the gradients of one process over the whole batch.

Each rank runs every model on its half of the batch (mean loss over its half); DDP
averages the gradients, which is the gradient of the full batch's mean loss, computed
here in a single process with the same seed. Every cell kind: the RNN, GRU and LSTM
layers (with options) and the three cells stepped over time.
"""
import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import fastrnn

T, B, I, H = 5, 6, 4, 3
CASES = {
    "rnn_2_layers": lambda: fastrnn.RNN(I, H, num_layers=2),
    "gru_bidirectional": lambda: fastrnn.GRU(I, H, bidirectional=True),
    "lstm_proj_size": lambda: fastrnn.LSTM(I, H, proj_size=2),
    "rnn_cell": lambda: fastrnn.RNNCell(I, H),
    "gru_cell": lambda: fastrnn.GRUCell(I, H),
    "lstm_cell": lambda: fastrnn.LSTMCell(I, H),
}


class _Model(torch.nn.Module):
    """A layer, or a cell stepped over time; -> the outputs at every step."""

    def __init__(self, name):
        super().__init__()
        torch.manual_seed(0)
        self.net, self.cell = CASES[name](), name.endswith("cell")

    def forward(self, x):
        if not self.cell:
            return self.net(x)[0]
        state, outs = None, []
        for xt in x:
            state = self.net(xt, state)
            outs.append(state[0] if isinstance(state, tuple) else state)
        return torch.stack(outs)


def _batch():
    return torch.randn(T, B, I, generator=torch.Generator().manual_seed(1))


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def _worker(rank, world, init_file, out_dir):
    import numba
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        x = _batch()[:, rank * B // world:(rank + 1) * B // world]
        for name in CASES:
            model = _Model(name)
            ddp = torch.nn.parallel.DistributedDataParallel(model)
            ddp(x).pow(2).mean().backward()
            torch.save(_grads(model), os.path.join(out_dir, f"{name}.{rank}.pt"))
        # no rank tears its connections down while the other may still use them (a
        # gloo thread that loses its peer mid-operation aborts the process)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_ddp_gradients_equal_one_process_over_the_whole_batch():
    world = 2
    # one process over the whole batch first: the mean over the two equal halves' means
    # is the full batch's mean. It also compiles (or loads) every kernel the ranks use,
    # so the two ranks never compile into the same cache at once (fresh-clone CI runs
    # saw a rank abort, SIGABRT, when they did)
    want = {}
    for name in CASES:
        model = _Model(name)
        model(_batch()).pow(2).mean().backward()
        want[name] = _grads(model)
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(world, os.path.join(tmp, "init"), tmp), nprocs=world,
                 join=True)
        for name in CASES:
            for rank in range(world):
                got = torch.load(os.path.join(tmp, f"{name}.{rank}.pt"))
                assert got.keys() == want[name].keys()
                for k in want[name]:
                    torch.testing.assert_close(got[k], want[name][k], rtol=1e-5, atol=1e-6,
                                               msg=lambda m, k=k: f"{name} {k}: {m}")


@pytest.mark.parametrize("name", list(CASES))
def test_a_rank_alone_differs_from_the_average(name):
    # the comparison above can fail: one half's gradient is not the full batch's
    model, full = _Model(name), _Model(name)
    model(_batch()[:, :B // 2]).pow(2).mean().backward()
    full(_batch()).pow(2).mean().backward()
    assert any(not torch.allclose(a, b, rtol=1e-5, atol=1e-6)
               for a, b in zip(_grads(model).values(), _grads(full).values()))
