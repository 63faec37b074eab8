"""Shared machinery of the property-based tests (hypothesis) of test_fuzz_ops.py and
test_fuzz_layers.py.

Every case draws an instruction set, a thread count, shapes (degenerate ones included), and
arrays with a random dtype, memory layout (Fortran order, strided, reversed, transposed,
broadcast, read-only, nested lists) and values (normal, wide-ranged, ties, NaN, +-Inf, huge,
denormal, -0.0). The op under test must then either return the reference's result or raise a
ValueError that names it; anything else (another exception, a wrong or missing result, a
crash) fails the test.

Runs are reproducible: hypothesis is derandomized (the examples depend on the test's code only)
and keeps no database. ``FASTCNN_FUZZ_EXAMPLES=N`` sets the examples per test (default 40;
``FASTCNN_FUZZ_PROFILE=emulated``, which tests/aarch64_suite.py sets, runs 8 under qemu).
"""
import contextlib
import os

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

import cconv
from conftest import record_fuzz_case

ISAS = cconv.available_isas()
FLT_MAX = float(np.finfo(np.float32).max)

_PROFILE_EXAMPLES = {"ci": 40, "emulated": 8}


def examples(default=None):
    """Examples per property test: FASTCNN_FUZZ_EXAMPLES, else the profile's count."""
    env = os.environ.get("FASTCNN_FUZZ_EXAMPLES")
    if env:
        return max(1, int(env))
    base = _PROFILE_EXAMPLES.get(os.environ.get("FASTCNN_FUZZ_PROFILE", "ci"), 40)
    return base if default is None else max(1, base * default // 40)


def fuzz(max_examples=None):
    """hypothesis settings of every fuzz test: bounded, derandomized, no deadline."""
    return settings(max_examples=examples(max_examples), deadline=None, derandomize=True,
                    database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much,
                                           HealthCheck.function_scoped_fixture])


def uniform():
    """A float in [0, 1) for "how often" decisions. hypothesis favours boundary values of its
    own integers and floats (good for sizes, bad for probabilities), so this one comes from a
    seeded generator."""
    return st.integers(0, 2**32 - 1).map(lambda seed: float(np.random.default_rng(seed).random()))


# --- runtime: ISA and threads ------------------------------------------------------------------
@contextlib.contextmanager
def runtime(data):
    """Draw an ISA (set for the case) and a thread count (returned)."""
    previous = cconv.get_isa()
    cconv.set_isa(data.draw(st.sampled_from(ISAS), label="isa"))
    try:
        yield data.draw(st.sampled_from([None, 1, 2, 3]), label="n_threads")
    finally:
        cconv.set_isa(previous)


# --- shapes ------------------------------------------------------------------------------------
def dims(lo=1, hi=12):
    """A dimension: mostly small, sometimes 1, sometimes at or around a SIMD width."""
    return st.one_of(st.integers(lo, hi), st.sampled_from([v for v in (1, 7, 8, 9, 15, 16, 17, 33)
                                                            if lo <= v <= max(hi, 17)]))


@st.composite
def shapes(draw, min_rank=0, max_rank=4, empty=True, big=True):
    """Any shape: 0-d to 4-d, sometimes with an empty axis, sometimes large (several chunks)."""
    rank = draw(st.integers(min_rank, max_rank))
    if big and rank >= 1 and draw(uniform()) < 0.1:
        head = draw(st.integers(1, 3))
        return (head,) + (1,) * (rank - 2) + (draw(st.integers(11000, 40000)),) if rank >= 2 \
            else (draw(st.integers(16000, 70000)),)
    shape = tuple(draw(dims()) for _ in range(rank))
    if empty and rank >= 1 and draw(uniform()) < 0.05:
        axis = draw(st.integers(0, rank - 1))
        shape = shape[:axis] + (0,) + shape[axis + 1:]
    return shape


# --- arrays ------------------------------------------------------------------------------------
SPECIAL_VALUES = (np.nan, np.inf, -np.inf, 1e18, -1e18, 3e-40, -0.0)
LAYOUTS = ("c",) * 6 + ("fortran", "strided", "reversed", "transposed", "readonly", "broadcast",
                        "list")
DTYPES = (np.float32,) * 6 + (np.float64, np.float16, np.int32)


@st.composite
def arrays(draw, shape, specials=True, layouts=True, dtypes=True, positive=False, scale=1.0):
    """An array of ``shape`` with random values, dtype and memory layout.

    The values the op sees are ``as_seen(result)`` (float32 conversion included): compute the
    reference from those.
    """
    shape = tuple(shape)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1), label="seed"))
    kind = draw(st.sampled_from(("normal", "normal", "wide", "ties")), label="values")
    if kind == "normal":
        x = rng.standard_normal(shape)
    elif kind == "wide":
        x = rng.standard_normal(shape) * 10.0 ** rng.uniform(-6, 6, shape)
    else:
        x = rng.integers(-2, 3, shape).astype(np.float64)
    x = np.abs(x) + 0.5 if positive else x * scale
    size = int(np.prod(shape, dtype=np.int64))
    dtype = draw(st.sampled_from(DTYPES), label="dtype") if dtypes else np.float32
    if specials and size and dtype is not np.int32 and draw(uniform()) < 0.25:
        flat = x.reshape(-1)
        for _ in range(draw(st.integers(1, min(4, size)))):
            value = draw(st.sampled_from(SPECIAL_VALUES), label="special")
            if positive and not value > 0:
                continue
            flat[rng.integers(size)] = value
    if dtype is np.float16 and not specials:
        x = np.clip(x, -6e4, 6e4)             # no overflow to Inf in the conversion either
    if dtype is np.int32:
        x = np.round(x).astype(np.int32)
    else:
        with np.errstate(over="ignore"):
            x = x.astype(dtype)
    layout = draw(st.sampled_from(LAYOUTS), label="layout") if layouts else "c"
    return _layout(x, layout, rng)


def _layout(x, layout, rng):
    x = np.asarray(x)
    if layout == "fortran" and x.ndim:
        return np.asfortranarray(x)
    if layout == "strided" and x.ndim:
        big = np.zeros(tuple(2 * s for s in x.shape), dtype=x.dtype)
        view = big[tuple(slice(None, None, 2) for _ in x.shape)]
        view[...] = x
        return view
    if layout == "reversed" and x.ndim:
        return x[::-1].copy()[::-1]
    if layout == "transposed" and x.ndim >= 2:
        return np.ascontiguousarray(x.T).T
    if layout == "readonly":
        x = x.copy()
        x.setflags(write=False)
        return x
    if layout == "broadcast" and x.ndim and x.size:
        axis = int(rng.integers(x.ndim))
        return np.broadcast_to(np.take(x, [0], axis=axis), x.shape)
    if layout == "list" and 0 < x.size <= 4096:   # (an empty list loses its shape)
        return x.tolist()
    return x


FLT_MIN = float(np.finfo(np.float32).tiny)


def as_seen(x, flush=True):
    """The float64 values an op sees after its float32 conversion; with ``flush``, denormals
    read as zero, as they do inside kernels that flush denormals (FTZ/DAZ on x86, FZ on ARM):
    every kernel but the pure copies and selections (max pooling, add_backward) and the
    optimizer updates."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.asarray(np.asarray(x, dtype=np.float32), dtype=np.float64)
    if flush:
        out = np.where(np.abs(out) < FLT_MIN, 0.0, out)
    return out


# --- running and checking a case -----------------------------------------------------------------
def run_case(op, call, reference=None, valid=True, check=None, names=None):
    """Call the op: a ValueError naming ``op`` is a refusal (an error if ``valid`` is True);
    a result is compared with ``reference()`` by ``check(result, expected)`` (an error if
    ``valid`` is False). ``valid=None``: either outcome is acceptable. ``names``: the names a
    refusal may give (default: ``op``). Returns the result, or None after a refusal."""
    try:
        out = call()
    except ValueError as exc:
        message = str(exc)
        assert valid is not True, f"{op}: valid input refused: {message}"
        assert any(name in message for name in (names or (op,))), \
            f"{op}: ValueError does not name the op: {message}"
        record_fuzz_case(op, refused=True)
        return None
    assert valid is not False, f"{op}: invalid input accepted"
    if reference is not None:
        with np.errstate(all="ignore"):
            expected = reference()
            (check or (lambda a, e: compare(op, a, e)))(out, expected)
    record_fuzz_case(op)
    return out


def reaches(forward, *inputs):
    """Where a non-finite input value takes part in a product of a bilinear op (convolution,
    linear): ``forward`` run on 0/1 indicators, each input in turn marking its non-finite
    values against the others' ones. IEEE arithmetic makes exactly those results non-finite
    (a product with NaN or Inf is NaN or Inf, even by zero, and a sum with one stays so), while
    the numpy reference, through BLAS, may skip products by zero."""
    seen = [as_seen(x) for x in inputs]
    total = 0
    for i in range(len(seen)):
        args = [(~np.isfinite(x)).astype(np.float64) if j == i else np.ones_like(x)
                for j, x in enumerate(seen)]
        total = total + forward(*args)
    return np.asarray(total) > 0


def compare(op, actual, expected, tol=1e-5, magnitude=None, exact=False, nonfinite=None,
            ignore=None):
    """``actual`` (float32) against ``expected`` (float64).

    Non-finite values must match: NaN where the reference is NaN, the same infinity where it is
    infinite or beyond float32's range; or, with ``nonfinite`` (a mask, see :func:`reaches`),
    non-finite exactly there. Finite values must agree within ``tol`` relative to the output's
    largest finite magnitude, or per element relative to ``magnitude`` (the reference run on
    absolute values: the size of the terms summed) when given; ``exact``: bit for bit.
    ``ignore``: a mask of elements not compared.
    """
    with np.errstate(all="ignore"):
        return _compare(op, actual, expected, tol, magnitude, exact, nonfinite, ignore)


def _compare(op, actual, expected, tol, magnitude, exact, nonfinite, ignore):
    actual = np.asarray(actual)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{op}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == np.float32, f"{op}: dtype {actual.dtype}"
    a = actual.astype(np.float64)
    if ignore is not None:
        a, expected = np.where(ignore, 0.0, a), np.where(ignore, 0.0, expected)
    if nonfinite is not None:
        where = np.argwhere(np.isfinite(a) == nonfinite)
        assert not len(where), (f"{op}: finite/non-finite mismatch at {where[:3].tolist()}: got "
                                f"{a[tuple(where[0])]}, expected "
                                f"{'non-finite' if nonfinite[tuple(where[0])] else 'finite'}")
        expected = np.where(nonfinite, np.nan, expected)
        a = np.where(nonfinite, np.nan, a)
    nan_e, nan_a = np.isnan(expected), np.isnan(a)
    where = np.argwhere(nan_e != nan_a)
    assert not len(where), (f"{op}: NaN mismatch at {where[:3].tolist()}: got "
                            f"{a[tuple(where[0])]}, expected {expected[tuple(where[0])]}")
    over = ~nan_e & (np.abs(expected) > FLT_MAX)
    where = np.argwhere(over & (a != np.sign(expected) * np.inf))
    assert not len(where), (f"{op}: infinity mismatch at {where[:3].tolist()}: got "
                            f"{a[tuple(where[0])]}, expected {expected[tuple(where[0])]}")
    finite = ~nan_e & ~over
    where = np.argwhere(finite & ~np.isfinite(a))
    assert not len(where), (f"{op}: non-finite result where the reference is finite, at "
                            f"{where[:3].tolist()}: got {a[tuple(where[0])]}, expected "
                            f"{expected[tuple(where[0])]}")
    if not finite.any():
        return 0.0
    if exact:
        same = (a[finite] == expected[finite]).all()
        assert same, f"{op}: not bit-exact"
        return 0.0
    diff = np.abs(a - expected)
    if magnitude is not None:
        mag = np.asarray(magnitude, dtype=np.float64)
        bound = tol * np.where(np.isfinite(mag), mag, np.inf) + 1e-30
        ratio = np.where(finite, diff / bound, 0.0)
        worst = float(ratio.max())
        assert worst <= 1.0, (f"{op}: error {worst * tol:.3g} relative to the terms' magnitude "
                              f"at {np.unravel_index(int(ratio.argmax()), ratio.shape)}")
        return worst * tol
    scale = max(float(np.abs(expected[finite]).max()), 1e-30)
    err = float(diff[finite].max()) / scale
    assert err <= tol, f"{op}: relative error {err:.3g} > {tol:.1g}"
    return err
