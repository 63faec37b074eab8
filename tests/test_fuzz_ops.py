"""Property-based tests of every public op of cconv: random shapes (degenerate ones included),
strides, paddings, dilations, groups, dtypes, memory layouts and values (NaN, Inf, huge,
denormal) on every ISA and thread count. Each case must give the reference's result or a
ValueError that names the op; never a crash, a hang or a wrong answer. See fuzzing.py.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import cconv
from fastcnn import reference as ref
from fuzzing import (arrays, as_seen, compare, dims, fuzz, reaches, run_case, runtime, shapes,
                     uniform)


def _abs(*arrays_):
    return [None if a is None else np.abs(a) for a in arrays_]


# ---------------------------------------------------------------------------------------------
# Elementwise: activations, add, dropout
# ---------------------------------------------------------------------------------------------
UNARY = {
    "relu": (cconv.relu, ref.relu),
    "sigmoid": (cconv.sigmoid, ref.sigmoid),
    "tanh": (cconv.tanh, ref.tanh),
}
BINARY = {  # op(dy, other) -> reference on the float64 values
    "relu_backward": (cconv.relu_backward, ref.relu_backward),
    "sigmoid_backward": (cconv.sigmoid_backward, ref.sigmoid_backward),
    "tanh_backward": (cconv.tanh_backward, ref.tanh_backward),
    "add": (cconv.add, ref.add),
}


def _other_shape(data, shape):
    """Mostly the same shape; sometimes a different one (the op must refuse it)."""
    if data.draw(uniform()) < 0.1:
        other = data.draw(shapes(max_rank=3, big=False))
        return other
    return shape


@pytest.mark.parametrize("name", sorted(UNARY))
@fuzz()
@given(data=st.data())
def test_unary(name, data):
    fn, reference = UNARY[name]
    with runtime(data) as threads:
        x = data.draw(arrays(data.draw(shapes())))
        run_case(name, lambda: fn(x, n_threads=threads), lambda: reference(as_seen(x)))


@fuzz()
@given(data=st.data())
def test_leaky_relu(data):
    with runtime(data) as threads:
        x = data.draw(arrays(data.draw(shapes())))
        slope = data.draw(st.one_of(st.floats(-2, 2), st.sampled_from([0.0, 0.01, np.nan, np.inf])))
        valid = bool(np.isfinite(slope))
        run_case("leaky_relu", lambda: cconv.leaky_relu(x, slope, n_threads=threads),
                 lambda: ref.leaky_relu(as_seen(x), np.float64(np.float32(slope))), valid)
        dy = data.draw(arrays(_other_shape(data, np.shape(x))))
        valid = valid and np.shape(dy) == np.shape(x)
        run_case("leaky_relu_backward",
                 lambda: cconv.leaky_relu_backward(dy, x, slope, n_threads=threads),
                 lambda: ref.leaky_relu_backward(as_seen(dy), as_seen(x),
                                                 np.float64(np.float32(slope))), valid)


@pytest.mark.parametrize("name", sorted(BINARY))
@fuzz()
@given(data=st.data())
def test_binary(name, data):
    fn, reference = BINARY[name]
    with runtime(data) as threads:
        shape = data.draw(shapes())
        a = data.draw(arrays(shape))
        b = data.draw(arrays(_other_shape(data, shape)))
        if name in ("sigmoid_backward", "tanh_backward") and np.shape(b) == shape:
            b = np.clip(as_seen(b), -1, 1)   # a forward output
        run_case(name, lambda: fn(a, b, n_threads=threads),
                 lambda: reference(as_seen(a), as_seen(b)), np.shape(b) == shape)


@fuzz()
@given(data=st.data())
def test_add_backward(data):
    with runtime(data) as threads:
        dy = data.draw(arrays(data.draw(shapes())))

        def check(out, expected):
            for o, e in zip(out, expected):
                compare("add_backward", o, e, exact=True)
            assert out[0] is not out[1]
        run_case("add_backward", lambda: cconv.add_backward(dy, n_threads=threads),
                 lambda: ref.add_backward(as_seen(dy, flush=False)), check=check)


@fuzz()
@given(data=st.data())
def test_dropout(data):
    with runtime(data) as threads:
        x = data.draw(arrays(data.draw(shapes())))
        p = data.draw(st.one_of(st.sampled_from([0.0, 0.5, 0.999, 1.0, -0.1, np.nan]),
                                st.floats(0, 0.99)))
        seed = data.draw(st.one_of(st.integers(0, 2**64 - 1), st.sampled_from([-1, 2**70, 1.5])))
        valid = 0 <= p < 1 and isinstance(seed, int)

        def check(out, expected):
            y, mask = out
            assert mask.dtype == np.uint8 and mask.shape == np.shape(x)
            np.testing.assert_array_equal(mask, expected[1], err_msg="dropout mask")
            compare("dropout", y, expected[0], tol=1e-6)
        out = run_case("dropout", lambda: cconv.dropout(x, p, seed, n_threads=threads),
                       lambda: ref.dropout(as_seen(x), np.float64(p), seed), valid, check)
        if out is None:
            return
        dy = data.draw(arrays(np.shape(x)))
        mask = out[1] if data.draw(st.booleans()) else out[1].astype(bool)
        run_case("dropout_backward", lambda: cconv.dropout_backward(dy, mask, p, n_threads=threads),
                 lambda: ref.dropout_backward(as_seen(dy), out[1], np.float64(p)),
                 check=lambda a, e: compare("dropout_backward", a, e, tol=1e-6))


# ---------------------------------------------------------------------------------------------
# Softmax and the fused cross-entropy
# ---------------------------------------------------------------------------------------------
@st.composite
def _matrix_shape(draw):
    """(N, C), sometimes degenerate or of another rank."""
    kind = draw(uniform())
    if kind < 0.05:
        return draw(shapes(max_rank=4, big=False))
    if kind < 0.1:
        return (draw(st.integers(1, 4)), draw(st.integers(16000, 40000)))
    return (draw(dims(1, 40)), draw(dims(1, 40)))


@fuzz()
@given(data=st.data())
def test_softmax(data):
    with runtime(data) as threads:
        shape = data.draw(_matrix_shape())
        x = data.draw(arrays(shape))
        valid = len(shape) == 2 and 0 not in shape
        y = run_case("softmax", lambda: cconv.softmax(x, n_threads=threads),
                     lambda: ref.softmax(as_seen(x)), valid)
        if y is None:
            return
        dy = data.draw(arrays(_other_shape(data, shape)))
        run_case("softmax_backward", lambda: cconv.softmax_backward(dy, y, n_threads=threads),
                 lambda: ref.softmax_backward(as_seen(dy), as_seen(y)), np.shape(dy) == shape)


@fuzz()
@given(data=st.data())
def test_softmax_cross_entropy(data):
    with runtime(data) as threads:
        shape = data.draw(_matrix_shape())
        logits = data.draw(arrays(shape))
        n = shape[0] if shape else 0
        c = shape[1] if len(shape) > 1 else 1
        rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
        labels = rng.integers(0, max(c, 1), size=n)
        bad_labels = int(data.draw(uniform()) * 20)
        if bad_labels == 0 and n:
            labels[rng.integers(n)] = data.draw(st.sampled_from([-1, c, 2**40]))
        elif bad_labels == 1:
            labels = labels.astype(np.float64) + data.draw(st.sampled_from([0.0, 0.5]))
        elif bad_labels == 2:
            labels = labels[: max(n - 1, 0)]
        elif bad_labels == 3:
            labels = labels.astype(data.draw(st.sampled_from([np.uint8, np.int32, np.uint64])))
        smoothing = data.draw(st.sampled_from([-0.1, 1.5, np.nan])) if data.draw(uniform()) < 0.05 \
            else data.draw(st.sampled_from([0.0, 0.1, 0.5, 1.0]))
        lab = np.asarray(labels)
        valid = (len(shape) == 2 and 0 not in shape and lab.shape == (n,)
                 and bool(np.all(np.mod(lab, 1) == 0)) and lab.min() >= 0 and lab.max() < c
                 and 0 <= smoothing <= 1)

        def check(out, expected):
            loss, probs = out
            assert isinstance(loss, float)
            compare("softmax_cross_entropy", np.float32(loss), expected[0], tol=1e-5)
            compare("softmax_cross_entropy", probs, expected[1])

        out = run_case(
            "softmax_cross_entropy",
            lambda: cconv.softmax_cross_entropy(logits, labels, smoothing, n_threads=threads),
            lambda: ref.softmax_cross_entropy(as_seen(logits), lab.astype(np.int64), smoothing),
            valid, check)
        if out is None:
            return
        probs = out[1]
        ps = as_seen(probs)
        target = np.full(ps.shape, smoothing / c)
        target[np.arange(n), lab.astype(np.int64)] += 1 - smoothing
        run_case("softmax_cross_entropy_backward",
                 lambda: cconv.softmax_cross_entropy_backward(probs, labels, smoothing,
                                                              n_threads=threads),
                 lambda: ref.softmax_cross_entropy_backward(ps, lab.astype(np.int64), smoothing),
                 check=lambda a, e: compare("softmax_cross_entropy_backward", a, e, tol=1e-5,
                                            magnitude=(np.abs(ps) + target) / n))


# ---------------------------------------------------------------------------------------------
# Batch normalisation
# ---------------------------------------------------------------------------------------------
@st.composite
def _channels_last_shape(draw):
    kind = draw(uniform())
    if kind < 0.05:
        return draw(shapes(max_rank=4, big=False))
    if kind < 0.1:
        return (draw(st.integers(1, 3)), draw(st.integers(200, 600)), draw(dims(1, 70)))
    rank = draw(st.integers(2, 4))
    return tuple(draw(dims(1, 9)) for _ in range(rank - 1)) + (draw(dims(1, 40)),)


def _channel_vector(data, c, positive=False):
    """A per-channel parameter: sometimes of the wrong length or with NaN/Inf (refused)."""
    shape = (c,) if data.draw(uniform()) >= 0.05 else (c + 1,)
    return data.draw(arrays(shape, positive=positive, specials=data.draw(uniform()) < 0.1))


@fuzz()
@given(data=st.data())
def test_batch_norm(data):
    with runtime(data) as threads:
        shape = data.draw(_channels_last_shape())
        x = data.draw(arrays(shape))
        c = shape[-1] if shape else 1
        w, b = _channel_vector(data, c), _channel_vector(data, c)
        eps = data.draw(st.sampled_from([0.0, -1.0, np.nan])) if data.draw(uniform()) < 0.05 \
            else data.draw(st.sampled_from([1e-5, 1e-3, 1.0]))
        xs, ws, bs = as_seen(x), as_seen(w), as_seen(b)
        rows = int(np.prod(shape[:-1])) if shape else 0
        params_ok = (len(shape) >= 2 and 0 not in shape and ws.shape == (c,) and bs.shape == (c,)
                     and np.isfinite(ws).all() and np.isfinite(bs).all() and eps > 0)

        def check(out, expected):
            axes = tuple(range(len(shape) - 1))
            with np.errstate(all="ignore"):   # the statistics' terms: |x| and x^2
                mags = (None, np.abs(xs).mean(axis=axes), (xs * xs).mean(axis=axes))
            for name, o, e, mag in zip(("y", "mean", "var"), out, expected, mags):
                compare(f"batch_norm_forward_train.{name}", o, e, tol=2e-5, magnitude=mag)
        out = run_case("batch_norm_forward_train",
                       lambda: cconv.batch_norm_forward_train(x, w, b, eps, n_threads=threads),
                       lambda: ref.batch_norm_forward_train(xs, ws, bs, eps),
                       params_ok and rows >= 2, check)

        rm, rv = _channel_vector(data, c), _channel_vector(data, c, positive=True)
        if data.draw(uniform()) < 0.1:
            rv = -as_seen(rv)
        rms, rvs = as_seen(rm), as_seen(rv)
        run_case("batch_norm_forward_eval",
                 lambda: cconv.batch_norm_forward_eval(x, w, b, rm, rv, eps, n_threads=threads),
                 lambda: ref.batch_norm_forward_eval(xs, ws, bs, rms, rvs, eps),
                 params_ok and rms.shape == (c,) and rvs.shape == (c,)
                 and np.isfinite(rms).all() and np.isfinite(rvs).all() and (rvs >= 0).all(),
                 check=lambda a, e: compare("batch_norm_forward_eval", a, e, tol=2e-5))
        if out is None:
            return
        _, mean, var = out
        dy = data.draw(arrays(_other_shape(data, shape)))

        dys = as_seen(dy)

        def check_backward(res, expected):
            # Sums over the batch cancel: errors are relative to the size of the terms.
            with np.errstate(all="ignore"):
                invstd = 1 / np.sqrt(as_seen(var) + eps)
                xhat = np.abs((xs - as_seen(mean)) * invstd)
                axes = tuple(range(len(shape) - 1))
                db_mag = np.abs(dys).sum(axis=axes)
                dw_mag = (np.abs(dys) * xhat).sum(axis=axes)
                dx_mag = np.abs(ws) * invstd * (np.abs(dys) + db_mag / rows + xhat * dw_mag / rows)
            for name, o, e, mag in zip(("dx", "dweight", "dbias"), res, expected,
                                       (dx_mag, dw_mag, db_mag)):
                compare(f"batch_norm_backward.{name}", o, e, tol=5e-5, magnitude=mag)
        run_case("batch_norm_backward",
                 lambda: cconv.batch_norm_backward(dy, x, w, mean, var, eps, n_threads=threads),
                 lambda: ref.batch_norm_backward(dys, xs, ws, as_seen(mean), as_seen(var), eps),
                 np.shape(dy) == shape and np.isfinite(mean).all() and np.isfinite(var).all(),
                 check_backward)


# ---------------------------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------------------------
def _int_or_pair(lo, hi):
    return st.one_of(st.integers(lo, hi), st.tuples(st.integers(lo, hi), st.integers(lo, hi)))


@st.composite
def _pool_case(draw, dilation):
    """(shape, kernel, stride, padding, dilation, ceil_mode): mostly valid geometry (padding at
    most half the kernel), sometimes not, sometimes absurd values or a wrong rank."""
    kernel = (draw(st.integers(1, 6)), draw(st.integers(1, 6)))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    if draw(uniform()) < 0.1:
        padding = (draw(st.integers(0, 4)), draw(st.integers(0, 4)))
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 4), st.integers(1, 4))))
    dil = (draw(st.integers(1, 3)), draw(st.integers(1, 3))) if dilation else (1, 1)
    args = [kernel, stride, padding, dil]
    for i in range(4):  # an int stands for a square pair
        if args[i] is not None and args[i][0] == args[i][1] and draw(st.booleans()):
            args[i] = args[i][0]
    if draw(uniform()) < 0.0333:  # absurd but representable values
        which = draw(st.integers(0, 3 if dilation else 2))
        args[which] = draw(st.sampled_from([0, -1, 2**31, 2**40, 10**30, 2.0, "3", (1, 2, 3)]))
    shape = (draw(st.integers(1, 3)), draw(dims(1, 13)), draw(dims(1, 13)), draw(dims(1, 40)))
    if draw(uniform()) < 0.05:
        shape = draw(shapes(max_rank=5, big=False))
    return (shape, *args, draw(st.booleans()))


def _pool_valid(shape, kernel, stride, padding, dil, ceil):
    """Whether the reference's geometry accepts the arguments (and the input is non-empty)."""
    if len(shape) != 4 or 0 in shape:
        return False
    def ok(v):
        return isinstance(v, int) or (isinstance(v, tuple) and len(v) == 2
                                      and all(isinstance(e, int) for e in v))
    if not all(ok(v) for v in (kernel, padding, dil)) or not (stride is None or ok(stride)):
        return False
    k = ref._pool_pair(kernel)
    s = k if stride is None else ref._pool_pair(stride)
    p, d = ref._pool_pair(padding), ref._pool_pair(dil)
    if min(k + s + d) < 1 or min(p) < 0 or max(k + s + p + d) > 2**31 - 1:
        return False
    try:
        ref._pool_setup(shape, kernel, stride, padding, dil, ceil)
    except ValueError:
        return False
    return True


@fuzz(80)
@given(data=st.data())
def test_max_pool(data):
    with runtime(data) as threads:
        shape, kernel, stride, padding, dil, ceil = data.draw(_pool_case(dilation=True))
        x = data.draw(arrays(shape))
        xs = as_seen(x, flush=False)
        valid = _pool_valid(shape, kernel, stride, padding, dil, ceil)

        def check(out, expected):
            compare("max_pool2d", out[0], expected[0], exact=True)
            assert out[1].dtype == np.int32
            np.testing.assert_array_equal(out[1], expected[1], err_msg="max_pool2d indices")
        out = run_case("max_pool2d",
                       lambda: cconv.max_pool2d(x, kernel, stride, padding, dil, ceil,
                                                n_threads=threads),
                       lambda: ref.max_pool2d(xs, kernel, stride, padding, dil, ceil),
                       valid, check)
        if out is None:
            return
        y, idx = out
        dy = data.draw(arrays(y.shape))
        corrupt = int(data.draw(uniform()) * 8)
        if corrupt == 0:
            idx = idx.copy()
            idx.reshape(-1)[0] = data.draw(st.sampled_from([-2, shape[1] * shape[2], 2**31 - 1]))
        elif corrupt == 1:
            idx = idx.astype(data.draw(st.sampled_from([np.int64, np.float64, np.uint16])))
        run_case("max_pool2d_backward",
                 lambda: cconv.max_pool2d_backward(dy, idx, shape, n_threads=threads),
                 lambda: ref.max_pool2d_backward(as_seen(dy), np.asarray(idx, np.int64), shape),
                 valid=None if corrupt == 1 else corrupt != 0,
                 check=lambda a, e: compare(
                     "max_pool2d_backward", a, e, tol=1e-5,
                     magnitude=ref.max_pool2d_backward(np.abs(as_seen(dy)),
                                                       np.asarray(idx, np.int64), shape)))


@pytest.mark.parametrize("kind", ["avg", "avg_exclude_pad", "sum"])
@fuzz(60)
@given(data=st.data())
def test_sum_and_avg_pool(kind, data):
    with runtime(data) as threads:
        shape, kernel, stride, padding, _, ceil = data.draw(_pool_case(dilation=False))
        x = data.draw(arrays(shape))
        xs = as_seen(x)
        valid = _pool_valid(shape, kernel, stride, padding, 1, ceil)
        if kind == "sum":
            op, fwd, bwd, kw = "sum_pool2d", cconv.sum_pool2d, cconv.sum_pool2d_backward, {}
            rfwd, rbwd = ref.sum_pool2d, ref.sum_pool2d_backward
        else:
            op, fwd, bwd = "avg_pool2d", cconv.avg_pool2d, cconv.avg_pool2d_backward
            rfwd, rbwd = ref.avg_pool2d, ref.avg_pool2d_backward
            kw = {"count_include_pad": kind == "avg"}
        y = run_case(op, lambda: fwd(x, kernel, stride, padding, ceil, n_threads=threads, **kw),
                     lambda: rfwd(xs, kernel, stride, padding, ceil, **kw), valid,
                     check=lambda a, e: compare(op, a, e, tol=1e-5, magnitude=rfwd(
                         np.abs(xs), kernel, stride, padding, ceil, **kw)))
        # The backward takes the input shape: also without a forward (absurd shapes included).
        in_shape = shape
        if data.draw(uniform()) < 0.1:
            in_shape = data.draw(st.sampled_from([(1, 2**20, 2**20, 1), (2**40, 1, 1, 1),
                                                  (1, 0, 3, 3), (1, 3, 3), (1.5, 3, 3, 1)]))
            valid = False
        out_shape = y.shape if y is not None else (shape[0] if shape else 1, 2, 2, 3)
        dy = data.draw(arrays(_other_shape(data, out_shape)))
        run_case(f"{op}_backward",
                 lambda: bwd(dy, in_shape, kernel, stride, padding, ceil, n_threads=threads, **kw),
                 lambda: rbwd(as_seen(dy), in_shape, kernel, stride, padding, ceil, **kw),
                 valid and np.shape(dy) == out_shape,
                 check=lambda a, e: compare(f"{op}_backward", a, e, tol=1e-5, magnitude=rbwd(
                     np.abs(as_seen(dy)), in_shape, kernel, stride, padding, ceil, **kw)))


@fuzz()
@given(data=st.data())
def test_global_avg_pool(data):
    with runtime(data) as threads:
        shape = data.draw(st.one_of(
            st.tuples(st.integers(1, 3), dims(1, 13), dims(1, 13), dims(1, 80)),
            shapes(max_rank=5, big=False)))
        x = data.draw(arrays(shape))
        xs = as_seen(x)
        valid = len(shape) == 4 and 0 not in shape
        run_case("global_avg_pool2d", lambda: cconv.global_avg_pool2d(x, n_threads=threads),
                 lambda: ref.global_avg_pool2d(xs), valid,
                 check=lambda a, e: compare("global_avg_pool2d", a, e,
                                            magnitude=ref.global_avg_pool2d(np.abs(xs))))
        in_shape = shape
        if data.draw(uniform()) < 0.1:
            in_shape = (1, 10**6, 10**6, 1)
            valid = False
        dy_shape = (shape[0], shape[3]) if valid else (1, 1)
        dy = data.draw(arrays(_other_shape(data, dy_shape)))
        run_case("global_avg_pool2d_backward",
                 lambda: cconv.global_avg_pool2d_backward(dy, in_shape, n_threads=threads),
                 lambda: ref.global_avg_pool2d_backward(as_seen(dy), in_shape),
                 valid and np.shape(dy) == dy_shape)


# ---------------------------------------------------------------------------------------------
# Optimizer updates (in place; no denormal flushing)
# ---------------------------------------------------------------------------------------------
def _hyper(data, name, good, bad=(-1.0, np.nan, np.inf)):
    if data.draw(uniform()) < 0.04:
        return data.draw(st.sampled_from(bad)), False
    return data.draw(st.sampled_from(good)), True


def _f32(x):
    """A writeable C-contiguous float32 copy (0-d stays 0-d)."""
    return np.array(as_seen(x, flush=False), dtype=np.float32, order="C")


def _param(data, shape):
    """The parameter: a writeable contiguous float32 array, sometimes not (refused)."""
    p = _f32(data.draw(arrays(shape, specials=False)))
    if data.draw(uniform()) < 0.05:
        return p.astype(np.float64), False
    return p, True


@fuzz()
@given(data=st.data())
def test_sgd_update(data):
    with runtime(data) as threads:
        shape = data.draw(shapes(big=True))
        p, ok = _param(data, shape)
        g = data.draw(arrays(_other_shape(data, shape)))
        lr, ok1 = _hyper(data, "lr", [0.0, 0.1, 1e-3, 10.0])
        momentum, ok2 = _hyper(data, "momentum", [0.0, 0.0, 0.9])
        dampening, ok3 = _hyper(data, "dampening", [0.0, 0.1], bad=(-1.0, 2.0, np.nan))
        wd, ok4 = _hyper(data, "weight_decay", [0.0, 1e-2])
        l1, ok5 = _hyper(data, "l1", [0.0, 1e-3])
        l2, ok6 = _hyper(data, "l2", [0.0, 1e-3])
        nesterov, first = data.draw(st.booleans()), data.draw(st.booleans())
        buf = _f32(data.draw(arrays(shape, specials=False))) \
            if momentum or data.draw(st.booleans()) else None
        valid = ok and all((ok1, ok2, ok3, ok4, ok5, ok6)) and np.shape(g) == shape \
            and not (momentum and buf is None)
        p64 = as_seen(p, flush=False)
        b64 = None if buf is None else as_seen(buf, flush=False)
        kw = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=wd,
                  nesterov=nesterov, l1=l1, l2=l2, first_step=first)
        f32 = {k: (float(np.float32(v)) if isinstance(v, float) else v) for k, v in kw.items()}

        def check(out, expected):
            assert out is p
            compare("sgd_update", p, expected, tol=1e-5)
            if momentum:
                compare("sgd_update.momentum_buffer", buf, b64, tol=1e-5)
        run_case("sgd_update", lambda: cconv.sgd_update(p, g, buf, n_threads=threads, **kw),
                 lambda: ref.sgd_update(p64, as_seen(g, flush=False), b64, **f32), valid, check)


@fuzz()
@given(data=st.data())
def test_adam_update(data):
    with runtime(data) as threads:
        shape = data.draw(shapes(big=True))
        p, ok = _param(data, shape)
        g = data.draw(arrays(_other_shape(data, shape)))
        m = _f32(data.draw(arrays(shape, specials=False)))
        v = _f32(data.draw(arrays(shape, specials=False, positive=True)))
        step, ok0 = _hyper(data, "step", [1, 2, 10, 10**6], bad=(0, -3, 1.5))
        lr, ok1 = _hyper(data, "lr", [1e-3, 0.1])
        b1, ok2 = _hyper(data, "beta1", [0.9, 0.0], bad=(1.0, -0.1, np.nan))
        b2, ok3 = _hyper(data, "beta2", [0.999, 0.5], bad=(1.0, 2.0, np.nan))
        eps, ok4 = _hyper(data, "eps", [1e-8, 1e-3, 0.0])
        wd, ok5 = _hyper(data, "weight_decay", [0.0, 1e-2])
        decoupled = data.draw(st.booleans())
        valid = ok and all((ok0, ok1, ok2, ok3, ok4, ok5)) and np.shape(g) == shape
        p64, m64, v64 = (as_seen(a, flush=False) for a in (p, m, v))
        kw = dict(step=step, lr=lr, beta1=b1, beta2=b2, eps=eps, weight_decay=wd,
                  decoupled=decoupled)
        f32 = {k: (float(np.float32(v)) if isinstance(v, float) else v) for k, v in kw.items()}

        def check(out, expected):
            compare("adam_update", p, expected, tol=2e-5)
            compare("adam_update.exp_avg", m, m64, tol=1e-5)
            compare("adam_update.exp_avg_sq", v, v64, tol=1e-5)
        run_case("adam_update", lambda: cconv.adam_update(p, g, m, v, n_threads=threads, **kw),
                 lambda: ref.adam_update(p64, as_seen(g, flush=False), m64, v64, **f32),
                 valid, check)


# ---------------------------------------------------------------------------------------------
# Convolution, transposed convolution, linear
# ---------------------------------------------------------------------------------------------
@st.composite
def _conv_case(draw):
    """Geometry of a convolution: mostly valid, sometimes mismatched or absurd."""
    groups = draw(st.sampled_from([1, 1, 1, 2, 3, "depthwise"]))
    if groups == "depthwise":
        groups = draw(dims(1, 20))
        cin_g, cout_g = 1, draw(st.sampled_from([1, 1, 2]))
    else:
        cin_g, cout_g = draw(dims(1, 9)), draw(dims(1, 9))
    kernel = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = draw(st.one_of(
        st.integers(0, 3), st.tuples(st.integers(0, 3), st.integers(0, 3)),
        st.tuples(st.tuples(st.integers(0, 3), st.integers(0, 3)),
                  st.tuples(st.integers(0, 3), st.integers(0, 3))),
        st.sampled_from(["same", "valid", "SAME"])))
    shape = (draw(st.integers(1, 3)), draw(dims(1, 12)), draw(dims(1, 12)), cin_g * groups)
    return dict(shape=shape, w_shape=(cout_g * groups, cin_g) + kernel, stride=stride,
                padding=padding, dilation=dilation, groups=groups)


def _conv_output(case):
    """The output shape, or None when the geometry is invalid (computed here, independently)."""
    (n, h, w, c), (co, cig, kh, kw) = case["shape"], case["w_shape"]
    g, s, d, p = case["groups"], case["stride"], case["dilation"], case["padding"]
    if g < 1 or c % g or co % g or cig * g != c or 0 in case["shape"] or 0 in case["w_shape"]:
        return None
    if isinstance(p, str):
        if p.lower() == "valid":
            p = ((0, 0), (0, 0))
        else:
            p = tuple((t // 2, t - t // 2) for t in
                      (max((-(-size // st_) - 1) * st_ + dd * (k - 1) + 1 - size, 0)
                       for size, k, st_, dd in zip((h, w), (kh, kw), s, d)))
    elif isinstance(p, int):
        p = ((p, p), (p, p))
    elif isinstance(p[0], int):
        p = ((p[0], p[0]), (p[1], p[1]))
    out = [(size + lo + hi - dd * (k - 1) - 1) // st_ + 1
           for size, (lo, hi), k, st_, dd in zip((h, w), p, (kh, kw), s, d)]
    return None if min(out) < 1 else (n, out[0], out[1], co)


def _mutate_conv(data, case):
    """Sometimes break one argument: the op must refuse it."""
    u = data.draw(uniform())
    case = dict(case)
    if u < 0.03:
        case["shape"] = case["shape"][:3] + (case["shape"][3] + 1,)      # channel mismatch
    elif u < 0.05:
        case["groups"] = data.draw(st.sampled_from([0, -1, 4, 5]))
    elif u < 0.07:
        case["stride"] = data.draw(st.sampled_from([0, -2, 2**31, 10**20]))
    elif u < 0.09:
        case["dilation"] = data.draw(st.sampled_from([0, 2**40, (1, 2, 3), "2"]))
    elif u < 0.11:
        case["padding"] = data.draw(st.sampled_from([-1, "full", 2**33, ((1, 2),), 1.5]))
    elif u < 0.13:
        case["shape"] = (0,) + case["shape"][1:]
    return case, u >= 0.13


def _weight_grad_reach(inp, grad, forward):
    """Non-finite entries of a weight gradient sum(input tap * grad): a non-finite input value
    reaches the taps that read it; a non-finite gradient value reaches every tap of its output
    channel, for its window covers them all (padding is zeros that take part in the products,
    and 0 * NaN is NaN)."""
    g = as_seen(grad)
    from_input = forward((~np.isfinite(as_seen(inp))).astype(np.float64), np.ones_like(g)) > 0
    channel = ~np.isfinite(g).reshape(-1, g.shape[-1]).all(axis=0)
    return from_input | channel.reshape((-1,) + (1,) * (from_input.ndim - 1))


def _kw(case):
    return {k: case[k] for k in ("stride", "padding", "dilation", "groups")}


@fuzz(120)
@given(data=st.data())
def test_conv2d(data):
    with runtime(data) as threads:
        case, intact = _mutate_conv(data, data.draw(_conv_case()))
        out_shape = _conv_output(case) if intact else None
        x = data.draw(arrays(case["shape"]))
        wt = data.draw(arrays(case["w_shape"], specials=data.draw(uniform()) < 0.05))
        with_bias = data.draw(st.booleans())
        b = data.draw(arrays((case["w_shape"][0] + (data.draw(uniform()) < 0.05),),
                             specials=data.draw(uniform()) < 0.05)) if with_bias else None
        activation = data.draw(st.sampled_from([None, None, "relu", "gelu"]))
        algo = data.draw(st.sampled_from(["auto", "auto", "direct", "fastest"]))
        xs, ws = as_seen(x), as_seen(wt)
        bs = None if b is None else as_seen(b)
        valid = (out_shape is not None and np.isfinite(ws).all() and activation != "gelu"
                 and algo != "fastest"
                 and (bs is None or (bs.shape == (ws.shape[0],) and np.isfinite(bs).all())))
        kw = _kw(case)

        def check(y, expected):
            mag = ref.conv2d(np.abs(xs), np.abs(ws), None if bs is None else np.abs(bs), **kw)
            reach = reaches(lambda x_, w_: ref.conv2d(x_, w_, **kw), x, wt)
            if activation is None:
                compare("conv2d", y, expected, tol=1e-4, magnitude=mag, nonfinite=reach)
            else:   # relu: -Inf becomes 0, NaN stays NaN
                hit = y[reach]
                assert np.all(np.isnan(hit) | (hit >= 0)), "conv2d: relu output below 0"
                compare("conv2d", y, expected, tol=1e-4, magnitude=mag, ignore=reach)
        y = run_case("conv2d", lambda: cconv.conv2d(x, wt, b, activation=activation, algo=algo,
                                                     n_threads=threads, **kw),
                     lambda: ref.conv2d(xs, ws, bs, activation=activation, **kw), valid, check)
        if y is None:
            return
        dy = data.draw(arrays(_other_shape(data, out_shape)))
        dys = as_seen(dy)
        run_case("conv2d_backward_data",
                 lambda: cconv.conv2d_backward_data(dy, wt, case["shape"], n_threads=threads, **kw),
                 lambda: ref.conv2d_backward_data(dys, ws, case["shape"], **kw),
                 np.shape(dy) == out_shape,
                 lambda a, e: compare("conv2d_backward_data", a, e, tol=1e-4,
                                      magnitude=ref.conv2d_backward_data(
                                          np.abs(dys), np.abs(ws), case["shape"], **kw),
                                      nonfinite=reaches(lambda d_, w_: ref.conv2d_backward_data(
                                          d_, w_, case["shape"], **kw), dy, wt)))
        run_case("conv2d_backward_weight",
                 lambda: cconv.conv2d_backward_weight(x, dy, case["w_shape"][2:],
                                                      n_threads=threads, **kw),
                 lambda: ref.conv2d_backward_weight(xs, dys, case["w_shape"][2:], **kw),
                 np.shape(dy) == out_shape,
                 lambda a, e: compare("conv2d_backward_weight", a, e, tol=1e-4,
                                      magnitude=ref.conv2d_backward_weight(
                                          np.abs(xs), np.abs(dys), case["w_shape"][2:], **kw),
                                      nonfinite=_weight_grad_reach(
                                          x, dy, lambda x_, d_: ref.conv2d_backward_weight(
                                              x_, d_, case["w_shape"][2:], **kw))))
        run_case("bias_backward", lambda: cconv.bias_backward(dy, n_threads=threads),
                 lambda: ref.bias_backward(dys), np.ndim(dy) >= 1 and np.shape(dy)[-1] > 0,
                 lambda a, e: compare("bias_backward", a, e, tol=1e-5,
                                      magnitude=ref.bias_backward(np.abs(dys)),
                                      nonfinite=reaches(ref.bias_backward, dy)))


@fuzz(80)
@given(data=st.data())
def test_conv_transpose2d(data):
    with runtime(data) as threads:
        case = data.draw(_conv_case())
        n, h, w_, _ = case["shape"]
        co, cig, kh, kw_ = case["w_shape"]
        g = case["groups"]
        # The transposed convolution's input is the forward's output: (n, h, w, co).
        x_shape = (n, h, w_, co)
        w_shape = (co, cig) + (kh, kw_)
        padding = data.draw(st.one_of(st.integers(0, 3), st.tuples(st.integers(0, 3),
                                                                    st.integers(0, 3))))
        output_padding = data.draw(st.one_of(st.integers(0, 2), st.tuples(st.integers(0, 2),
                                                                          st.integers(0, 2))))
        kw = dict(stride=case["stride"], padding=padding, dilation=case["dilation"], groups=g)
        s, d = case["stride"], case["dilation"]
        p = (padding, padding) if isinstance(padding, int) else padding
        op_ = (output_padding, output_padding) if isinstance(output_padding, int) else output_padding
        out = [(size - 1) * ss - 2 * pp + dd * (k - 1) + o + 1
               for size, ss, pp, dd, k, o in zip((h, w_), s, p, d, (kh, kw_), op_)]
        valid = min(out) >= 1 and all(o < ss or o < dd for o, ss, dd in zip(op_, s, d))
        # Known issue (src/cconv/_conv.pyx): an output_padding allowed by the dilation but not
        # smaller than the stride is refused, by conv2d_backward_data's shape check.
        names = None
        if valid and any(o >= ss for o, ss in zip(op_, s)):
            valid, names = None, ("conv_transpose2d", "conv2d_backward_data")
        x = data.draw(arrays(x_shape))
        wt = data.draw(arrays(w_shape, specials=False))
        b = data.draw(arrays((cig * g,), specials=False)) if data.draw(st.booleans()) else None
        xs, ws = as_seen(x), as_seen(wt)
        bs = None if b is None else as_seen(b)
        y = run_case("conv_transpose2d",
                     lambda: cconv.conv_transpose2d(x, wt, b, output_padding=output_padding,
                                                    n_threads=threads, **kw),
                     lambda: ref.conv_transpose2d(xs, ws, bs, output_padding=output_padding, **kw),
                     valid,
                     lambda a, e: compare("conv_transpose2d", a, e, tol=1e-4,
                                          magnitude=ref.conv_transpose2d(
                                              np.abs(xs), np.abs(ws),
                                              None if bs is None else np.abs(bs),
                                              output_padding=output_padding, **kw),
                                          nonfinite=reaches(lambda x_, w_: ref.conv_transpose2d(
                                              x_, w_, output_padding=output_padding, **kw),
                                              x, wt)),
                     names=names)
        if y is None:
            return
        dy = data.draw(arrays(y.shape))
        dys = as_seen(dy)
        # Its input gradient is a convolution of dy; valid when that convolution's output has
        # the input's shape (output_padding is then dropped again).
        run_case("conv_transpose2d_backward_data",
                 lambda: cconv.conv_transpose2d_backward_data(dy, wt, n_threads=threads, **kw),
                 lambda: ref.conv_transpose2d_backward_data(dys, ws, **kw), True,
                 lambda a, e: compare("conv_transpose2d_backward_data", a, e, tol=1e-4,
                                      magnitude=ref.conv_transpose2d_backward_data(
                                          np.abs(dys), np.abs(ws), **kw),
                                      nonfinite=reaches(lambda d_, w_:
                                                        ref.conv_transpose2d_backward_data(
                                                            d_, w_, **kw), dy, wt)))
        run_case("conv_transpose2d_backward_weight",
                 lambda: cconv.conv_transpose2d_backward_weight(x, dy, (kh, kw_),
                                                                n_threads=threads, **kw),
                 lambda: ref.conv_transpose2d_backward_weight(xs, dys, (kh, kw_), **kw), None,
                 lambda a, e: compare("conv_transpose2d_backward_weight", a, e, tol=1e-4,
                                      magnitude=ref.conv_transpose2d_backward_weight(
                                          np.abs(xs), np.abs(dys), (kh, kw_), **kw),
                                      nonfinite=_weight_grad_reach(
                                          dy, x, lambda d_, x_:
                                          ref.conv_transpose2d_backward_weight(
                                              x_, d_, (kh, kw_), **kw))))


@fuzz()
@given(data=st.data())
def test_linear(data):
    with runtime(data) as threads:
        n, fin, fout = data.draw(st.integers(1, 40)), data.draw(dims(1, 70)), data.draw(dims(1, 40))
        x_shape, w_shape = (n, fin), (fout, fin)
        u = data.draw(uniform())
        if u < 0.04:
            x_shape = (n, fin + 1)
        elif u < 0.07:
            x_shape = (0, fin)
        elif u < 0.1:
            x_shape = (n, 1, fin)
        valid = u >= 0.1
        # Known issue (src/cconv/_conv.pyx): linear checks its weight through conv2d, whose
        # error names conv2d.
        names = ("linear", "conv2d")
        x = data.draw(arrays(x_shape))
        wt = data.draw(arrays(w_shape, specials=data.draw(uniform()) < 0.05))
        b = data.draw(arrays((fout,), specials=False)) if data.draw(st.booleans()) else None
        xs, ws = as_seen(x), as_seen(wt)
        bs = None if b is None else as_seen(b)
        valid = valid and np.isfinite(ws).all()
        y = run_case("linear", lambda: cconv.linear(x, wt, b, n_threads=threads),
                     lambda: ref.linear(xs, ws, bs), valid,
                     lambda a, e: compare("linear", a, e, tol=1e-4, magnitude=ref.linear(
                         np.abs(xs), np.abs(ws), None if bs is None else np.abs(bs)),
                         nonfinite=reaches(ref.linear, x, wt)), names)
        if y is None:
            return
        dy = data.draw(arrays(_other_shape(data, y.shape)))
        dys = as_seen(dy)
        two_d = np.ndim(dy) == 2 and 0 not in np.shape(dy)
        run_case("linear_backward_data",
                 lambda: cconv.linear_backward_data(dy, wt, n_threads=threads),
                 lambda: ref.linear_backward_data(dys, ws),
                 two_d and np.shape(dy)[1] == fout,
                 lambda a, e: compare("linear_backward_data", a, e, tol=1e-4,
                                      magnitude=ref.linear_backward_data(np.abs(dys), np.abs(ws)),
                                      nonfinite=reaches(ref.linear_backward_data, dy, wt)),
                 ("linear_backward_data", "conv2d_backward_data"))
        run_case("linear_backward_weight",
                 lambda: cconv.linear_backward_weight(x, dy, n_threads=threads),
                 lambda: ref.linear_backward_weight(xs, dys), two_d and np.shape(dy)[0] == n,
                 lambda a, e: compare("linear_backward_weight", a, e, tol=1e-4,
                                      magnitude=ref.linear_backward_weight(np.abs(xs),
                                                                           np.abs(dys)),
                                      nonfinite=reaches(ref.linear_backward_weight, x, dy)),
                 ("linear_backward_weight", "conv2d_backward_weight"))
