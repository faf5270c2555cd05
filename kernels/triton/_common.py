"""Device helpers shared by the persistent Triton kernels (see rnn.py for the legend).

Every kernel owns a tile of U hidden units x BB batch rows (program ids 0 and 1) and
runs processing steps [s_begin, s_end). With PERSIST the launch covers the whole
sequence and a barrier over the programs of a batch tile separates the steps; without
it the launcher runs one step per launch (the same body, the launch boundary being the
barrier), which is also how TRITON_INTERPRET=1 runs it: the interpreter runs programs
one after another, so a barrier over several programs would never open there.
"""
import triton
import triton.language as tl

# the argument types a kernel can declare, as triton.compile's signature spells them
# ("data": a pointer to the layer's dtype, fixed per compile)
ARG_TYPES = {"data": None, "fp32": "*fp32", "i64": "*i64", "i32": "*i32", "int": "i32"}


def arg_types(**groups):
    """Declares the type of every runtime (non-constexpr) argument of a kernel, for the
    ahead-of-time compiles of resources.py: ``groups`` maps a type of ARG_TYPES to the
    space-separated names of its arguments. An argument left out fails the compile (and
    tests/test_triton_aot.py) rather than being guessed from its name."""
    unknown = set(groups) - set(ARG_TYPES)
    if unknown:
        raise ValueError(f"unknown argument types {sorted(unknown)}; choose from {list(ARG_TYPES)}")

    def declare(kernel):
        kernel.arg_types = {n: t for t, names in groups.items() for n in names.split()}
        return kernel
    return declare


@triton.jit
def tanh(x):
    # 1 - 2 / (exp(2x) + 1): saturates to +-1 without overflow for large |x|
    return 1.0 - 2.0 / (tl.exp(2.0 * x) + 1.0)


@triton.jit
def sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _rows(lengths_ptr, row0, row_end, BB: tl.constexpr):
    # [BB] rows of this program, whether each exists, its length; the tile's step count
    offs_b = row0 + tl.program_id(1).to(tl.int64) * BB + tl.arange(0, BB)
    row_ok = offs_b < row_end
    lens = tl.load(lengths_ptr + offs_b, mask=row_ok, other=0)
    return offs_b, row_ok, lens, tl.max(lens, axis=0)


@triton.jit
def _units(W, U: tl.constexpr):
    # [U] hidden units of this program out of W
    offs_u = tl.program_id(0) * U + tl.arange(0, U)
    return offs_u, offs_u < W


@triton.jit
def step_time(s, lens, REVERSE: tl.constexpr):
    # [BB] time index of every row at processing step s (reverse: from the row's own end)
    if REVERSE:
        return (lens - 1 - s).to(tl.int64)
    return (tl.zeros_like(lens) + s).to(tl.int64)


@triton.jit
def _wtile(w_ptr, off, ld, k0, K, offs_u, u_ok, BK: tl.constexpr, ROWS: tl.constexpr = False):
    # [BK, U] = w[off + k * ld + u] for k in [k0, k0 + BK): the weights of this program's
    # units. ROWS: ``w`` is held as torch holds a weight, [units, K] (the forward kernels
    # read W_ih, W_hh and W_hr so: no transposed copy per call, a kernel launch each on
    # a GPU): element (k, u) is w[(off + u) * K + k], and ld is not used
    offs_k = k0 + tl.arange(0, BK)
    mask = (offs_k < K)[:, None] & u_ok[None, :]
    if ROWS:
        return tl.load(w_ptr + (off + offs_u[None, :]).to(tl.int64) * K + offs_k[:, None],
                       mask=mask, other=0.0)
    return tl.load(w_ptr + off + offs_k[:, None].to(tl.int64) * ld + offs_u[None, :],
                   mask=mask, other=0.0)


@triton.jit
def _arows(a_ptr, ld, col, k0, K, offs_b, row_ok, dt: tl.constexpr, BK: tl.constexpr):
    # [BB, BK] = a[rows, col + k0 : col + k0 + BK] of an exchange buffer written by other
    # programs: .cg reads L2, never a stale L1 line
    offs_k = k0 + tl.arange(0, BK)
    return tl.load(a_ptr + offs_b[:, None] * ld + col + offs_k[None, :],
                   mask=row_ok[:, None] & (offs_k < K)[None, :], other=0.0,
                   cache_modifier=".cg").to(dt)


@triton.jit
def _wonchip(w_ptr, off, ld, K, offs_u, u_ok, BK: tl.constexpr, BK2: tl.constexpr,
             ROWS: tl.constexpr = False):
    # a weight tile held on chip for the whole sequence: k in [0, BK) and, where K is not
    # a power of two, the tail [BK, BK + BK2) (plan.split: H=768 is 512 + 256, 96 KB a
    # program for an LSTM in bf16, where one padded chunk of 1024 was 128 KB and spilled)
    head = _wtile(w_ptr, off, ld, 0, K, offs_u, u_ok, BK, ROWS)
    tail = 0
    if BK2 > 0:
        tail = _wtile(w_ptr, off, ld, BK, K, offs_u, u_ok, BK2, ROWS)
    return head, tail


@triton.jit
def _product(a_ptr, a_ld, a_col, K, offs_b, row_ok, w_ptr, w_off, w_ld, offs_u, u_ok, w_onchip,
             dt: tl.constexpr, PRECISION: tl.constexpr, ONCHIP: tl.constexpr, BB: tl.constexpr,
             U: tl.constexpr, BK: tl.constexpr, ROWS: tl.constexpr = False, w_tail=0,
             BK2: tl.constexpr = 0):
    # [BB, U] = a[rows, a_col : a_col + K] @ w[w_off + k * w_ld + units], fp32 (ROWS: w
    # in torch's layout, see _wtile). ONCHIP: the weight tiles are ``w_onchip`` and
    # ``w_tail`` (_wonchip), loaded once by the caller; otherwise w is streamed chunk by chunk
    acc = tl.zeros((BB, U), tl.float32)
    if ONCHIP:
        acc += tl.dot(_arows(a_ptr, a_ld, a_col, 0, K, offs_b, row_ok, dt, BK), w_onchip,
                      input_precision=PRECISION)
        if BK2 > 0:
            acc += tl.dot(_arows(a_ptr, a_ld, a_col, BK, K, offs_b, row_ok, dt, BK2), w_tail,
                          input_precision=PRECISION)
    else:
        for k0 in range(0, K, BK):
            acc += tl.dot(_arows(a_ptr, a_ld, a_col, k0, K, offs_b, row_ok, dt, BK),
                          _wtile(w_ptr, w_off, w_ld, k0, K, offs_u, u_ok, BK, ROWS),
                          input_precision=PRECISION)
    return acc


@triton.jit
def _gate_dots(h, a0, a1, a2, a3, w0, w1, w2, w3, PRECISION: tl.constexpr, NG: tl.constexpr):
    # one chunk of h [BB, BK] times each gate's weight chunk [BK, U], added to the gates'
    # accumulators (NG = 3 for a GRU: the fourth is left as it is)
    a0 += tl.dot(h, w0, input_precision=PRECISION)
    a1 += tl.dot(h, w1, input_precision=PRECISION)
    a2 += tl.dot(h, w2, input_precision=PRECISION)
    if NG == 4:
        a3 += tl.dot(h, w3, input_precision=PRECISION)
    return a0, a1, a2, a3


@triton.jit
def _fwd_step(s, lens, row_ok, hbuf_ptr, h0_ptr, B, W, REVERSE: tl.constexpr):
    """A forward step's rows: (running [BB], at its last step [BB], time [BB], the state
    buffer slot read (h0 at step 0), the slot written) of a ping-pong buffer [2, B, W]."""
    act = (s < lens) & row_ok
    src = hbuf_ptr + (s % 2) * B * W
    if s == 0:
        src = h0_ptr
    return act, act & (s == lens - 1), step_time(s, lens, REVERSE), src, \
        hbuf_ptr + ((s + 1) % 2) * B * W


@triton.jit
def _input_gate(x_ptr, wx_ptr, q, G, I, H, offs_b, row_ok, offs_u, u_ok,
                dt: tl.constexpr, PRECISION: tl.constexpr, BB: tl.constexpr, U: tl.constexpr,
                BKX: tl.constexpr):
    # the fused step's input product for gate q: x [B, I] @ W_ih^T [I, G] (q-th block, this
    # program's units); the biases come in as the step's xproj [1, B, G] (plan.step_bias)
    return _product(x_ptr, I, 0, I, offs_b, row_ok, wx_ptr, q * H, G, offs_u, u_ok, 0, dt,
                    PRECISION, False, BB, U, BKX, True)


@triton.jit
def _x_part(xproj_ptr, xo, ma, q, H, x_ptr, wx_ptr, G, I, offs_b, row_ok, offs_u, u_ok,
            dt: tl.constexpr, PRECISION: tl.constexpr, BB: tl.constexpr, U: tl.constexpr,
            BKX: tl.constexpr, FUSE_X: tl.constexpr):
    # gate q's input part at this step, [BB, U] fp32: xproj's; with FUSE_X (a fused step)
    # xproj holds the per-row biases and x @ W_ih^T is formed here, the product first so
    # that the load is not live across it (loading first spilled GRU/LSTM bf16 on sm_90)
    if FUSE_X:
        v = _input_gate(x_ptr, wx_ptr, q, G, I, H, offs_b, row_ok, offs_u, u_ok, dt,
                        PRECISION, BB, U, BKX) + _gate_in(xproj_ptr, xo, q, H, ma)
    else:
        v = _gate_in(xproj_ptr, xo, q, H, ma)
    return v


@triton.jit
def _grid_sync(sync_ptr, target, PERSIST: tl.constexpr, POLL: tl.constexpr = False):
    # barrier over the programs of this batch tile: arrive (release) and spin (acquire)
    # until the counter reaches target = barriers so far x programs along the units.
    # POLL (a tuning lever, plan.LEVERS): spin on plain volatile loads, which L2 serves
    # to every program at once, instead of atomics that it serialises on the one
    # counter; then one acquire (an atomic reading a count >= target synchronises with
    # every release before it: the increments form one release sequence)
    if PERSIST:
        tl.debug_barrier()
        tl.atomic_add(sync_ptr, 1, sem="release")
        if POLL:
            cur = tl.load(sync_ptr, volatile=True)
            while cur < target:
                cur = tl.load(sync_ptr, volatile=True)
            tl.atomic_add(sync_ptr, 0, sem="acquire")
        else:
            cur = tl.atomic_add(sync_ptr, 0, sem="acquire")
            while cur < target:
                cur = tl.atomic_add(sync_ptr, 0, sem="acquire")
        tl.debug_barrier()


@triton.jit
def _grid_release(sync_ptr, nu, PERSIST: tl.constexpr):
    # after a persistent launch's last barrier: every program leaves once, and the last
    # to leave (the counter then reaches a multiple of nu) sets it back to 0, when no
    # program can still be spinning on it. The launch after it on the stream, or the
    # next replay of a CUDA graph, finds 0: the counter is allocated and zeroed once
    # (plan.barrier_counters), never filled per launch.
    if PERSIST:
        left = tl.atomic_add(sync_ptr, 1, sem="acq_rel")
        if (left + 1) % nu == 0:
            tl.atomic_xchg(sync_ptr, 0, sem="release")


@triton.jit
def _next_x(xproj_ptr, s, lens, row_ok, offs_b, offs_u, u_ok, B, H, G, REVERSE: tl.constexpr,
            NG: tl.constexpr):
    # PREFETCH: the input part of every gate at step s, [BB, U] fp32 each (NG of them; the
    # rest are gate 0's again, unused), loaded before the barrier that opens step s
    t, _, _, act = _step_at(s, lens, row_ok, REVERSE)
    ma = act[:, None] & u_ok[None, :]
    xo = (t[:, None] * B + offs_b[:, None]) * G + offs_u[None, :]
    x0 = _gate_in(xproj_ptr, xo, 0, H, ma)
    x1, x2, x3 = x0, x0, x0
    if NG > 1:
        x1 = _gate_in(xproj_ptr, xo, 1, H, ma)
        x2 = _gate_in(xproj_ptr, xo, 2, H, ma)
    if NG > 3:
        x3 = _gate_in(xproj_ptr, xo, 3, H, ma)
    return x0, x1, x2, x3


@triton.jit
def _dout(ptr, t, mask, offs_b, offs_u, B, W):
    # [BB, U] fp32 of a [T, B, W] per-step tensor at time t [BB] (a backward's dL/d out,
    # the RNN's output, the LSTM's cells)
    return tl.load(ptr + (t[:, None] * B + offs_b[:, None]) * W + offs_u[None, :], mask=mask,
                   other=0.0).to(tl.float32)


@triton.jit
def _step_at(s, lens, row_ok, REVERSE: tl.constexpr):
    # the rows at processing step s, for PREFETCH: (time [BB], the time before [BB], s [BB],
    # running [BB]); the backward asks for s = -1 past step 0, where no row runs
    sv = tl.zeros_like(lens) + s
    return step_time(s, lens, REVERSE), step_time(s - 1, lens, REVERSE), sv, \
        (sv < lens) & (sv >= 0) & row_ok


@triton.jit
def _saved_gates(gates_ptr, t, ma, offs_b, offs_u, B, H):
    # the four [BB, U] fp32 quarters of a saved [T, B, 4H] gate tensor at time t [BB] (the
    # LSTM's i, f, g, o; the GRU's r, z, n and a = W_hn h + b_hn)
    go = (t[:, None] * B + offs_b[:, None]) * (4 * H) + offs_u[None, :]
    return _gate_in(gates_ptr, go, 0, H, ma), _gate_in(gates_ptr, go, 1, H, ma), \
        _gate_in(gates_ptr, go, 2, H, ma), _gate_in(gates_ptr, go, 3, H, ma)


@triton.jit
def _prev_state(ptr, init_ptr, tp, sv, ma, offs_b, offs_u, so, B, H):
    # [BB, U] fp32 of the state a backward step reads from before time t: ptr [T, B, H] at
    # tp, or init_ptr [B, H] (so: its offsets) at step 0 (sv == 0)
    return tl.load(ptr + (tp[:, None] * B + offs_b[:, None]) * H + offs_u[None, :],
                   mask=ma & (sv > 0)[:, None], other=0.0).to(tl.float32) + \
        tl.load(init_ptr + so, mask=ma & (sv == 0)[:, None], other=0.0).to(tl.float32)


@triton.jit
def _gate_in(ptr, off, q, H, mask):
    # [BB, U] fp32 of gate q from a [.., G] per-step tensor (xproj or saved gates)
    return tl.load(ptr + off + q * H, mask=mask, other=0.0).to(tl.float32)
