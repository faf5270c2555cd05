"""Elman RNN cases: fastrnn (numba) against torch.nn.RNN on the CPU, float32."""
import torch

SHAPES = [(100, 8, 32), (100, 32, 128), (256, 64, 512)]     # (T, B, I=H)
MODES = ["fwd", "fwdbwd"]


def flops(mode, T, B, I, H):
    # forward: input GEMM + recurrent GEMM; backward adds dx, dW_ih, dW_hh, dh
    fwd = 2 * T * B * H * (I + H)
    return fwd if mode == "fwd" else 3 * fwd


def make_step(module, mode, T, B, I, H):
    """A zero-argument callable running one forward (and backward) of ``module``."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(T, B, I, generator=g)
    h0 = torch.randn(1, B, H, generator=g)
    if mode == "fwd":
        def step():
            with torch.no_grad():
                module(x, h0)
        return step
    xr = x.clone().requires_grad_()

    def step():
        out, h_n = module(xr, h0)
        (out.sum() + h_n.sum()).backward()
    return step


def modules(I, H, fastrnn=None):
    torch.manual_seed(0)
    ref = torch.nn.RNN(I, H)
    mods = {"torch": ref}
    if fastrnn is not None:
        ours = fastrnn.RNN(I, H)
        ours.load_state_dict(ref.state_dict())
        ours.backend = "numba"
        mods["fastrnn-numba"] = ours
    return mods
