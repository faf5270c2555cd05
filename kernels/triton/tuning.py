"""Plans tuned on the device they run on.

plan.py's static order picks the first tiling that fits the device at once; it is not
always the fastest (at the FlashRNN shape on an H200, U=32 with 4 warps beat the static
choice by 15% forward). So where several tilings fit at once (``plan.resident_plans``),
the first launch of a (kernel, shape, batch bucket, dtype, device, Triton) times each
on a short stretch of the call's own sequence (``plan.time_plan``) and keeps the
fastest, in memory and in a small JSON file beside Triton's cache, so that later
processes skip the timing. Residency is checked before any candidate is launched.

- ``FASTRNN_TUNE=0`` turns tuning off: the static order, as under TRITON_INTERPRET=1
  and while a CUDA graph is being captured (no timing there).
- ``FASTRNN_TUNING_CACHE`` names the file (default: ``fastrnn-plans.json`` beside
  Triton's cache folder, ``TRITON_CACHE_DIR`` or ``~/.triton/cache``).
- A missing, unreadable, corrupt or read-only file is never an error: a debug line on
  logger "fastrnn", and the plans are timed again (and kept for the process).

``python -m fastrnn.precompile --gpu`` tunes the standard shapes ahead of time and
prints every candidate's time.
"""
import json
import logging
import os

log = logging.getLogger("fastrnn")

_PLANS = {}           # key -> the plan this process launches
_TIMES = {}           # key -> {plan name: ms}, timed or read in this process


def enabled():
    return os.environ.get("FASTRNN_TUNE", "1") != "0"


def path():
    explicit = os.environ.get("FASTRNN_TUNING_CACHE")
    if explicit:
        return explicit
    triton_cache = os.environ.get("TRITON_CACHE_DIR") or \
        os.path.join(os.path.expanduser("~"), ".triton", "cache")
    return os.path.join(os.path.dirname(os.path.abspath(triton_cache)), "fastrnn-plans.json")


def name(p):
    """A plan's name in the cache and the logs: its tiling."""
    t = p.tiling
    return f"U{t.U} BB{t.BB}{' onchip' if t.onchip else ''} {t.num_warps}w" + \
        (f" r{t.maxnreg}" if t.maxnreg else "") + " prefetch" * t.prefetch + " poll" * t.poll


def _tiling(entry):
    """The Tiling an entry of the file names, or None where the entry is not one."""
    from .plan import Tiling
    try:
        if isinstance(entry.get("ms"), dict):
            return Tiling(**entry["tiling"])
    except (AttributeError, KeyError, TypeError):
        pass
    return None


def _read(file):
    try:
        with open(file) as f:
            data = json.load(f)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return data
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        log.debug("fastrnn tuning: cache %s unusable (%s); timing the plans again", file, e)
        return {}


def _write(file, key, entry):
    # merged with what other processes wrote meanwhile; replaced whole (never half-written)
    try:
        data = _read(file)
        data[key] = entry
        os.makedirs(os.path.dirname(os.path.abspath(file)), exist_ok=True)
        tmp = f"{file}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, file)
    except OSError as e:
        log.debug("fastrnn tuning: cache %s not written (%s); kept for this process", file, e)


def pick(key, static, resident, time_plan):
    """-> the plan to launch for ``key``: ``static`` (plan.py's choice) or one of the
    plans ``resident(tilings)`` admits (the device holds their grid at once; tilings
    None: every candidate), as kept in the file, else the fastest by
    ``time_plan(plan)`` (seconds), which is then kept. Decided once per process."""
    p = _PLANS.get(key)
    if p is None:
        p = _PLANS[key] = _decide(key, static, resident, time_plan)
    return p


def decided(key, static):
    """The plan ``pick`` decided for ``key`` in this process, else ``static``: what a
    CUDA graph capture launches (no timing there), so that it replays what eager ran."""
    return _PLANS.get(key, static)


def _decide(key, static, resident, time_plan):
    file = path()
    entry = _read(file).get(key)
    if entry is not None:
        tiling = _tiling(entry)
        if tiling is not None:
            _TIMES[key] = dict(entry["ms"])
            if tiling == static.tiling:
                return static
            # residency is checked again before a kept tiling is launched
            fit = resident([tiling])
            return fit[0] if fit else static
        log.debug("fastrnn tuning: cache entry for %s unusable; timing again", key)
    plans = [static] + [p for p in resident(None) if p.tiling != static.tiling]
    ms = {name(p): round(time_plan(p) * 1e3, 4) for p in plans} if len(plans) > 1 else {}
    best = min(plans, key=lambda p: ms[name(p)]) if ms else static
    log.debug("fastrnn tuning %s: %s ms, %s", key, ms, name(best))
    _TIMES[key] = ms
    _write(file, key, {"best": name(best), "tiling": best.tiling.__dict__, "ms": ms})
    return best


def timings():
    """{key: {plan name: ms}} of every plan tuned or read in this process."""
    return {k: dict(v) for k, v in _TIMES.items()}
