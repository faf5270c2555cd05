"""Worst-case error of the Numba float32 tanh over every float32 input."""
import numpy as np

from fastrnn.kernels.numba.activations import tanh_array

MAX_REL = 4e-7      # about 6.7 ulp of float32 (2^-24 = 6e-8)


def _eval(x):
    y = np.empty_like(x)
    tanh_array(x, y)
    return y


def test_tanh_every_float32_in_the_curved_range():
    # every positive float32 from 2^-12 to 9.5 (~134M values, in chunks); tanh is odd
    lo = np.array(2.0 ** -12, np.float32).view(np.uint32)
    hi = np.array(9.5, np.float32).view(np.uint32)
    worst = 0.0
    for start in range(int(lo), int(hi) + 1, 1 << 24):
        bits = np.arange(start, min(start + (1 << 24), int(hi) + 1), dtype=np.uint32)
        x = bits.view(np.float32)
        y = _eval(x).astype(np.float64)
        ref = np.tanh(x.astype(np.float64))
        worst = max(worst, float(np.max(np.abs(y - ref) / ref)))
        assert np.all(y <= 1.0)
        assert np.array_equal(_eval(-x), -_eval(x))
    assert worst < MAX_REL, worst


def test_tanh_tiny_saturated_and_special():
    tiny = np.array([0.0, -0.0, 1e-45, 1e-30, 1e-10, 2.0 ** -12], np.float32)
    y = _eval(tiny)
    # below 2^-12, tanh(x) = x (1 - x^2/3) rounds to within a few ulp of x
    assert np.all(np.abs(y.astype(np.float64) - tiny) <= MAX_REL * np.abs(tiny))
    big = np.array([9.0, 9.5, 20.0, 1e30, np.float32(3.4e38), np.inf], np.float32)
    assert np.all(_eval(big) == 1.0) and np.all(_eval(-big) == -1.0)
    assert np.isnan(_eval(np.array([np.nan], np.float32)))[0]


def test_sigmoid_every_float32_absolute_error():
    # sigmoid = (1 + tanh(x/2)) / 2: absolute error below 2.5e-7 (measured 2.1e-7, ~3.5 ulp
    # near 1) over every float32
    # with |x| in [2^-12, 40] (beyond, it saturates to exactly 0 or 1); x -> -x too
    from fastrnn.kernels.numba.activations import sigmoid_array
    lo = np.array(2.0 ** -12, np.float32).view(np.uint32)
    hi = np.array(40.0, np.float32).view(np.uint32)
    worst = 0.0
    for start in range(int(lo), int(hi) + 1, 1 << 24):
        x = np.arange(start, min(start + (1 << 24), int(hi) + 1), dtype=np.uint32).view(np.float32)
        for xs in (x, -x):
            y = np.empty_like(xs)
            sigmoid_array(xs, y)
            ref = 1.0 / (1.0 + np.exp(-xs.astype(np.float64)))
            worst = max(worst, float(np.max(np.abs(y - ref))))
            assert np.all((y >= 0) & (y <= 1))
    assert worst < 2.5e-7, worst


def test_float64_tanh_and_sigmoid():
    # the vectorisable float64 versions (Cody-Waite exp): dense grid, tiny magnitudes,
    # saturation and overflow territory, both signs. Measured: tanh 8.2e-16 relative
    # (about 4 ulp), sigmoid 2.2e-16 absolute.
    from fastrnn.kernels.numba.activations import sigmoid_array
    x = np.concatenate([np.linspace(-60.0, 60.0, 2_000_001), np.geomspace(1e-300, 1.0, 50_000),
                        [0.0, 700.0, 710.0, 1e300, np.inf]])
    x = np.concatenate([x, -x])
    y = np.empty_like(x)
    tanh_array(x, y)
    ref = np.tanh(x)
    assert np.max(np.abs(y - ref) / np.maximum(np.abs(ref), 1e-300)) < 2e-15
    assert np.all(np.abs(y) <= 1.0) and np.array_equal(y[x == np.inf], [1.0])
    sigmoid_array(x, y)
    with np.errstate(over="ignore"):
        ref = 1.0 / (1.0 + np.exp(-x))
    assert np.max(np.abs(y - ref)) < 5e-16
    normal = ref > 1e-300      # below, the clamped exp stops at sigmoid(-708) ~ 3e-308
    assert np.max(np.abs(y - ref)[normal] / ref[normal]) < 2e-15
    nan = np.array([np.nan])
    tanh_array(nan, y[:1])
    assert np.isnan(y[0])
    sigmoid_array(nan, y[:1])
    assert np.isnan(y[0])
