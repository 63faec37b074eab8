"""Property-based tests of every fastcnn layer: random constructor arguments, input shapes,
dtypes, memory layouts and values (NaN, Inf, huge) in training and evaluation mode. The forward
output and the backward's input and parameter gradients must be the reference's, or the layer
refuses with a ValueError that names it (or the op it calls). See fuzzing.py."""
import copy

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastcnn as fc
from fastcnn import reference as ref
from fuzzing import arrays, as_seen, compare, dims, fuzz, reaches, run_case, runtime, uniform


def _input(data, shape, **kw):
    """The layer's input: mostly of ``shape``, sometimes of another rank or channel count."""
    u = data.draw(uniform())
    if u < 0.03:
        shape = shape[:-1] + (shape[-1] + 1,)
    elif u < 0.05:
        shape = shape[1:]
    elif u < 0.06:
        shape = (0,) + shape[1:]
    return data.draw(arrays(shape, **kw)), shape


def _forward_backward(name, layer, x, reference, backward_reference, valid, data, names,
                      nonfinite=None, grads_nonfinite=None, tol=1e-4, magnitudes=None):
    """Forward (against reference(xs)), then backward with a random dy: dx and every parameter
    gradient against backward_reference(xs, dys) -> (dx, {param: grad})."""
    xs = as_seen(x)
    mags = magnitudes or {}
    none = lambda xs_, dys_: None      # noqa: E731
    y = run_case(name, lambda: layer.forward(x), lambda: reference(xs), valid,
                 lambda a, e: compare(name, a, e, tol=tol, magnitude=mags.get("y", none)(xs, None),
                                      nonfinite=None if nonfinite is None else nonfinite("y")),
                 names)
    if y is None or backward_reference is None:
        return
    dy = data.draw(arrays(y.shape, specials=False))
    dys = as_seen(dy)
    layer.zero_grad()
    dx = layer.backward(dy)
    with np.errstate(all="ignore"):
        dx_ref, grads = backward_reference(xs, dys)
    if dx_ref is not None:
        compare(f"{name}.backward", np.asarray(dx, np.float32), dx_ref, tol=tol,
                magnitude=mags.get("dx", none)(xs, dys),
                nonfinite=None if nonfinite is None else nonfinite("dx"))
    for pname, g in grads.items():
        got = getattr(layer, pname).grad
        assert got is not None, f"{name}: no gradient for {pname}"
        compare(f"{name}.{pname}.grad", got, g, tol=tol,
                magnitude=mags.get(pname, none)(xs, dys),
                nonfinite=None if grads_nonfinite is None else grads_nonfinite(pname))


def _square(v):
    return v if isinstance(v, int) else tuple(v)


# ---------------------------------------------------------------------------------------------
@fuzz(60)
@given(data=st.data())
def test_conv2d_layer(data):
    with runtime(data):
        groups = data.draw(st.sampled_from([1, 1, 2, 3]))
        cin, cout = groups * data.draw(dims(1, 6)), groups * data.draw(dims(1, 6))
        k = data.draw(st.one_of(st.integers(1, 4), st.tuples(st.integers(1, 4), st.integers(1, 4))))
        kw = dict(stride=data.draw(st.integers(1, 3)), dilation=data.draw(st.integers(1, 2)),
                  padding=data.draw(st.one_of(st.integers(0, 2), st.sampled_from(["same", "valid"]))),
                  groups=groups)
        layer = fc.Conv2d(cin, cout, k, bias=data.draw(st.booleans()), **kw)
        x, shape = _input(data, (data.draw(st.integers(1, 3)), data.draw(dims(1, 10)),
                                 data.draw(dims(1, 10)), cin))
        w = lambda: as_seen(layer.weight.data)                      # noqa: E731
        b = lambda: None if layer.bias is None else as_seen(layer.bias.data)   # noqa: E731
        ks = layer.kernel_size
        valid = len(shape) == 4 and shape[-1] == cin and 0 not in shape
        if valid:
            try:
                out = fc.Conv2d.output_shape(layer, shape[1:])
                valid = min(out) >= 1
            except ValueError:
                valid = False

        def bwd(xs, dys):
            grads = {"weight": ref.conv2d_backward_weight(xs, dys, ks, **kw)}
            if layer.bias is not None:
                grads["bias"] = ref.bias_backward(dys)
            return ref.conv2d_backward_data(dys, w(), xs.shape, **kw), grads

        _forward_backward("Conv2d", layer, x, lambda xs: ref.conv2d(xs, w(), b(), **kw), bwd,
                          valid, data, ("Conv2d", "conv2d"),
                          nonfinite=lambda what: reaches(
                              lambda x_, w_: ref.conv2d(x_, w_, **kw), x, layer.weight.data)
                          if what == "y" else np.zeros(np.shape(x), bool),
                          grads_nonfinite=lambda p: _weight_reach(x, layer, kw, p),
                          magnitudes={"y": lambda xs, _: ref.conv2d(np.abs(xs), np.abs(w()),
                                                              None if b() is None else np.abs(b()),
                                                              **kw)})


def _weight_reach(x, layer, kw, pname):
    """Non-finite parameter gradients of a convolution whose input holds NaN/Inf (dy is
    finite): the weight taps that read them; the bias gradient stays finite."""
    if pname == "bias":
        return np.zeros(layer.bias.data.shape, bool)
    xs = as_seen(x)
    bad = (~np.isfinite(xs)).astype(np.float64)
    out = ref.conv2d(np.zeros_like(xs), np.zeros_like(layer.weight.data, dtype=np.float64), **kw)
    return ref.conv2d_backward_weight(bad, np.ones_like(out), layer.kernel_size, **kw) > 0


@fuzz(40)
@given(data=st.data())
def test_conv_transpose2d_layer(data):
    with runtime(data):
        groups = data.draw(st.sampled_from([1, 1, 2]))
        cin, cout = groups * data.draw(dims(1, 6)), groups * data.draw(dims(1, 6))
        stride, dilation = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 2))
        output_padding = data.draw(st.integers(0, max(stride, dilation) - 1))
        kw = dict(stride=stride, padding=data.draw(st.integers(0, 2)), dilation=dilation,
                  groups=groups)
        layer = fc.ConvTranspose2d(cin, cout, data.draw(st.integers(1, 4)),
                                   output_padding=output_padding, bias=data.draw(st.booleans()),
                                   **kw)
        x, shape = _input(data, (data.draw(st.integers(1, 3)), data.draw(dims(1, 8)),
                                 data.draw(dims(1, 8)), cin), specials=False)
        w = as_seen(layer.weight.data)
        b = None if layer.bias is None else as_seen(layer.bias.data)
        valid = len(shape) == 4 and shape[-1] == cin and 0 not in shape
        if valid:
            valid = min(layer.output_shape(shape[1:])[:2]) >= 1
        if valid and output_padding >= stride:
            valid = None   # known issue of cconv.conv_transpose2d (see test_fuzz_ops.py)

        def bwd(xs, dys):
            grads = {"weight": ref.conv_transpose2d_backward_weight(xs, dys, layer.kernel_size, **kw)}
            if b is not None:
                grads["bias"] = ref.bias_backward(dys)
            return ref.conv_transpose2d_backward_data(dys, w, **kw), grads

        _forward_backward("ConvTranspose2d", layer, x,
                          lambda xs: ref.conv_transpose2d(xs, w, b, output_padding=output_padding,
                                                          **kw),
                          bwd, valid, data,
                          ("ConvTranspose2d", "conv_transpose2d", "conv2d_backward_data"))


@pytest.mark.parametrize("kind", ["max", "avg", "sum"])
@fuzz(40)
@given(data=st.data())
def test_pooling_layers(kind, data):
    with runtime(data):
        k = (data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4)))
        stride = data.draw(st.one_of(st.none(), st.integers(1, 3)))
        padding = tuple(data.draw(st.integers(0, v // 2)) for v in k)
        ceil = data.draw(st.booleans())
        kw = dict(kernel_size=k, stride=stride, padding=padding, ceil_mode=ceil)
        if kind == "max":
            kw["dilation"] = data.draw(st.integers(1, 2))
            layer, name = fc.MaxPool2d(**kw), "MaxPool2d"
        elif kind == "avg":
            kw["count_include_pad"] = data.draw(st.booleans())
            layer, name = fc.AvgPool2d(**kw), "AvgPool2d"
        else:
            layer, name = fc.SumPool2d(**kw), "SumPool2d"
        x, shape = _input(data, (data.draw(st.integers(1, 3)), data.draw(dims(1, 10)),
                                 data.draw(dims(1, 10)), data.draw(dims(1, 20))))
        valid = len(shape) == 4 and 0 not in shape
        if valid:
            try:
                layer.output_shape(shape[1:])
            except ValueError:
                valid = False
        rkw = dict(kw)
        op = {"max": "max_pool2d", "avg": "avg_pool2d", "sum": "sum_pool2d"}[kind]
        if kind == "max":
            def fwd(xs):
                return ref.max_pool2d(as_seen(x, flush=False), **rkw)[0]

            def bwd(xs, dys):
                _, idx = ref.max_pool2d(as_seen(x, flush=False), **rkw)
                return ref.max_pool2d_backward(dys, idx, xs.shape), {}
        else:
            rfwd = ref.avg_pool2d if kind == "avg" else ref.sum_pool2d
            rbwd = ref.avg_pool2d_backward if kind == "avg" else ref.sum_pool2d_backward

            def fwd(xs):
                return rfwd(xs, **rkw)

            def bwd(xs, dys):
                return rbwd(dys, xs.shape, **rkw), {}
        _forward_backward(name, layer, x, fwd, bwd, valid, data, (name, op),
                          magnitudes=None if kind == "max" else
                          {"y": lambda xs, _: fwd(np.abs(xs))})


@fuzz(40)
@given(data=st.data())
def test_dense_and_normalisation_layers(data):
    with runtime(data):
        which = data.draw(st.sampled_from(["Linear", "BatchNorm2d", "GlobalAvgPool2d"]))
        n = data.draw(st.integers(1, 8))
        if which == "Linear":
            fin, fout = data.draw(dims(1, 40)), data.draw(dims(1, 20))
            layer = fc.Linear(fin, fout, bias=data.draw(st.booleans()))
            x, shape = _input(data, (n, fin))
            w = as_seen(layer.weight.data)
            b = None if layer.bias is None else as_seen(layer.bias.data)

            def bwd(xs, dys):
                grads = {"weight": ref.linear_backward_weight(xs, dys)}
                if b is not None:
                    grads["bias"] = ref.bias_backward(dys)
                return ref.linear_backward_data(dys, w), grads
            bad = ~np.isfinite(as_seen(x))
            _forward_backward(
                "Linear", layer, x, lambda xs: ref.linear(xs, w, b), bwd,
                len(shape) == 2 and shape[1] == fin and shape[0] > 0, data,
                ("Linear", "linear"),
                nonfinite=lambda what: reaches(ref.linear, x, layer.weight.data) if what == "y"
                else np.zeros(np.shape(x), bool),
                grads_nonfinite=lambda p: (np.zeros((fout, fin), bool) | bad.any(axis=0)[None, :])
                if p == "weight" else np.zeros(fout, bool),
                magnitudes={"y": lambda xs, _: ref.linear(np.abs(xs), np.abs(w),
                                                    None if b is None else np.abs(b))})
        elif which == "BatchNorm2d":
            c = data.draw(dims(1, 20))
            layer = fc.BatchNorm2d(c, momentum=data.draw(st.sampled_from([0.1, None, 0.5])),
                                   affine=data.draw(st.booleans()),
                                   track_running_stats=data.draw(st.booleans()))
            training = data.draw(st.booleans())
            layer.train(training)
            if layer.track_running_stats:
                rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
                layer.running_mean = rng.standard_normal(c).astype(np.float32)
                layer.running_var = rng.random(c).astype(np.float32) + 0.5
            x, shape = _input(data, (n, data.draw(dims(1, 6)), data.draw(dims(1, 6)), c),
                              specials=False)
            ones, zeros = np.ones(c), np.zeros(c)
            w = as_seen(layer.weight.data) if layer.affine else ones
            b = as_seen(layer.bias.data) if layer.affine else zeros
            batch_stats = training or not layer.track_running_stats
            rm = None if layer.running_mean is None else as_seen(layer.running_mean)
            rv = None if layer.running_var is None else as_seen(layer.running_var)
            valid = len(shape) == 4 and shape[-1] == c and 0 not in shape
            if valid and batch_stats:
                valid = shape[0] * shape[1] * shape[2] > 1

            def fwd(xs):
                if batch_stats:
                    return ref.batch_norm_forward_train(xs, w, b, layer.eps)[0]
                return ref.batch_norm_forward_eval(xs, w, b, rm, rv, layer.eps)

            def bwd(xs, dys):
                if batch_stats:
                    _, mean, var = ref.batch_norm_forward_train(xs, w, b, layer.eps)
                    dx, dw, db = ref.batch_norm_backward(dys, xs, w, mean, var, layer.eps)
                else:
                    inv = 1 / np.sqrt(rv + layer.eps)
                    dx, dw = dys * w * inv, (dys * (xs - rm) * inv).sum(axis=(0, 1, 2))
                    db = dys.sum(axis=(0, 1, 2))
                return dx, ({"weight": dw, "bias": db} if layer.affine else {})
            def magnitude(part):
                def mag(xs, dys):   # sums over the batch cancel: the size of their terms
                    if batch_stats:
                        _, mean, var = ref.batch_norm_forward_train(xs, w, b, layer.eps)
                    else:
                        mean, var = rm, rv
                    inv = 1 / np.sqrt(var + layer.eps)
                    xhat, rows = np.abs((xs - mean) * inv), xs.size // c
                    db, dw = np.abs(dys).sum(axis=(0, 1, 2)), (np.abs(dys) * xhat).sum(axis=(0, 1, 2))
                    if part == "bias":
                        return db
                    if part == "weight":
                        return dw
                    return np.abs(w) * inv * (np.abs(dys) + (db / rows + xhat * dw / rows
                                                             if batch_stats else 0))
                return mag
            _forward_backward("BatchNorm2d", layer, x, fwd, bwd, valid, data,
                              ("BatchNorm2d", "batch_norm_forward_train",
                               "batch_norm_forward_eval"), tol=2e-4,
                              magnitudes={k: magnitude(k) for k in ("dx", "weight", "bias")})
            if valid and training and layer.track_running_stats:
                assert int(layer.num_batches_tracked) == 1
        else:
            layer = fc.GlobalAvgPool2d()
            x, shape = _input(data, (n, data.draw(dims(1, 9)), data.draw(dims(1, 9)),
                                     data.draw(dims(1, 40))))
            _forward_backward("GlobalAvgPool2d", layer, x, ref.global_avg_pool2d,
                              lambda xs, dys: (ref.global_avg_pool2d_backward(dys, xs.shape), {}),
                              len(shape) == 4 and 0 not in shape, data,
                              ("GlobalAvgPool2d", "global_avg_pool2d"),
                              magnitudes={"y": lambda xs, _: ref.global_avg_pool2d(np.abs(xs))})


@fuzz(60)
@given(data=st.data())
def test_elementwise_layers(data):
    with runtime(data):
        which = data.draw(st.sampled_from(["ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Softmax",
                                           "Flatten", "Dropout"]))
        rank = data.draw(st.sampled_from([2, 4]))
        shape = tuple(data.draw(dims(1, 9)) for _ in range(rank))
        x = data.draw(arrays(shape))
        if which == "ReLU":
            layer, f, g = fc.ReLU(), ref.relu, lambda xs, dys: ref.relu_backward(dys, ref.relu(xs))
        elif which == "LeakyReLU":
            slope = data.draw(st.sampled_from([0.01, 0.2, -0.5]))
            layer = fc.LeakyReLU(slope)
            f = lambda xs: ref.leaky_relu(xs, np.float32(slope))           # noqa: E731
            g = lambda xs, dys: ref.leaky_relu_backward(dys, xs, np.float32(slope))  # noqa: E731
        elif which == "Sigmoid":
            layer, f = fc.Sigmoid(), ref.sigmoid
            g = lambda xs, dys: ref.sigmoid_backward(dys, as_seen(ref.sigmoid(xs)))  # noqa: E731
        elif which == "Tanh":
            layer, f = fc.Tanh(), ref.tanh
            g = lambda xs, dys: ref.tanh_backward(dys, as_seen(np.tanh(xs)))  # noqa: E731
        elif which == "Softmax":
            layer = fc.Softmax()

            def f(xs):
                return ref.softmax(xs.reshape(-1, xs.shape[-1])).reshape(xs.shape)

            def g(xs, dys):
                y = as_seen(f(xs)).reshape(-1, xs.shape[-1])
                return ref.softmax_backward(dys.reshape(y.shape), y).reshape(xs.shape)
        elif which == "Flatten":
            layer = fc.Flatten()

            def f(xs):
                return xs if xs.ndim == 2 else np.moveaxis(xs, -1, 1).reshape(len(xs), -1)

            def g(xs, dys):
                if xs.ndim == 2:
                    return dys
                n, h, w, c = xs.shape
                return np.moveaxis(dys.reshape(n, c, h, w), 1, -1)
        else:
            p = data.draw(st.sampled_from([0.0, 0.3, 0.9]))
            layer = fc.Dropout(p)
            layer.train(data.draw(st.booleans()))
            seed = int(copy.deepcopy(fc.nn.base.rng()).integers(2**63 - 1))
            if layer.training and p > 0:
                f = lambda xs: ref.dropout(xs, p, seed)[0]                  # noqa: E731
                g = lambda xs, dys: ref.dropout_backward(dys, ref.dropout_mask(xs.shape, p, seed), p)  # noqa: E731,E501
            else:
                f, g = (lambda xs: xs), (lambda xs, dys: dys)
        flush = which not in ("Flatten",) and not (which == "Dropout" and not
                                                  (layer.training and layer.p > 0))
        xs = as_seen(x, flush=flush)
        y = run_case(which, lambda: layer.forward(x), lambda: f(xs), True,
                     lambda a, e: compare(which, a, e, tol=1e-5), (which,))
        dy = data.draw(arrays(y.shape, specials=False))
        dys = as_seen(dy, flush=flush)
        mag = None
        with np.errstate(all="ignore"):
            if which == "Softmax":   # y * (dy - sum(dy * y)) cancels: the size of its terms
                ys = np.abs(as_seen(f(xs))).reshape(-1, shape[-1])
                d = np.abs(dys).reshape(ys.shape)
                mag = (ys * (d + (d * ys).sum(axis=1, keepdims=True))).reshape(shape)
            expected = g(xs, dys)
        compare(f"{which}.backward", np.asarray(layer.backward(dy), np.float32), expected,
                tol=1e-5, magnitude=mag)


@fuzz(40)
@given(data=st.data())
def test_residual_and_sequential_models(data):
    """Small random models: predict (in any thread mode) gives the layers composed by hand."""
    with runtime(data):
        c = data.draw(dims(1, 8))
        body = fc.Sequential(fc.Conv2d(c, c, 3, padding=1), fc.ReLU(),
                             fc.Conv2d(c, c, data.draw(st.sampled_from([1, 3])), padding="same"))
        shortcut = data.draw(st.sampled_from([None, "conv"]))
        block = fc.Residual(body, None if shortcut is None else fc.Conv2d(c, c, 1))
        head = data.draw(st.sampled_from(["gap", "flatten"]))
        hw = data.draw(dims(2, 8))
        layers = [block, fc.BatchNorm2d(c), fc.Tanh()]
        if head == "gap":
            layers += [fc.GlobalAvgPool2d(), fc.Flatten(), fc.Linear(c, 4)]
        else:
            layers += [fc.MaxPool2d(2), fc.Flatten(), fc.Linear(c * (hw // 2) ** 2, 4)]
        model = fc.Sequential(*layers)
        model.eval()
        x = data.draw(arrays((data.draw(st.integers(1, 4)), hw, hw, c), specials=False))
        xs = as_seen(x)

        def by_hand(v):
            for layer in model.layers:
                if isinstance(layer, fc.Residual):
                    a = v
                    for sub in layer.body.layers:
                        a = _ref_layer(sub, a)
                    s = v if layer.shortcut is None else _ref_layer(layer.shortcut, v)
                    v = a + s
                else:
                    v = _ref_layer(layer, v)
            return ref.softmax(v)

        run_case("Sequential.predict", lambda: model.predict(x),
                 lambda: by_hand(xs), True,
                 lambda a, e: compare("Sequential.predict", a, e, tol=1e-4), ("Sequential",))
        bad = data.draw(arrays((2, hw, hw, c + 1), specials=False))
        with pytest.raises(ValueError, match="Sequential layer 0 .*Residual|Conv2d"):
            model.predict(bad)


def _ref_layer(layer, v):
    if isinstance(layer, fc.Conv2d):
        return ref.conv2d(v, as_seen(layer.weight.data),
                          None if layer.bias is None else as_seen(layer.bias.data),
                          stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
                          groups=layer.groups)
    if isinstance(layer, fc.ReLU):
        return ref.relu(v)
    if isinstance(layer, fc.Tanh):
        return ref.tanh(v)
    if isinstance(layer, fc.BatchNorm2d):
        return ref.batch_norm_forward_eval(v, as_seen(layer.weight.data),
                                           as_seen(layer.bias.data), as_seen(layer.running_mean),
                                           as_seen(layer.running_var), layer.eps)
    if isinstance(layer, fc.GlobalAvgPool2d):
        return ref.global_avg_pool2d(v)
    if isinstance(layer, fc.MaxPool2d):
        return ref.max_pool2d(v, layer.kernel_size, layer.stride, layer.padding,
                              layer.dilation, layer.ceil_mode)[0]
    if isinstance(layer, fc.Flatten):
        return v if v.ndim == 2 else np.moveaxis(v, -1, 1).reshape(len(v), -1)
    if isinstance(layer, fc.Linear):
        return ref.linear(v, as_seen(layer.weight.data),
                          None if layer.bias is None else as_seen(layer.bias.data))
    raise AssertionError(type(layer))


@fuzz(40)
@given(data=st.data())
def test_layer_constructors_refuse_bad_arguments(data):
    """A constructor takes PyTorch's arguments or refuses them with a ValueError naming it."""
    bad = data.draw(st.sampled_from([0, -3, 2.5, "8", None, 2**40, True]))
    which = data.draw(st.sampled_from(["Conv2d", "ConvTranspose2d", "Linear", "BatchNorm2d",
                                       "MaxPool2d", "AvgPool2d", "Dropout"]))
    build = {
        "Conv2d": lambda: fc.Conv2d(bad, 4, 3),
        "ConvTranspose2d": lambda: fc.ConvTranspose2d(4, bad, 3),
        "Linear": lambda: fc.Linear(5, bad),
        "BatchNorm2d": lambda: fc.BatchNorm2d(bad),
        "MaxPool2d": lambda: fc.MaxPool2d(bad),
        "AvgPool2d": lambda: fc.AvgPool2d(2, stride=bad),
        "Dropout": lambda: fc.Dropout(bad),
    }[which]
    try:
        layer = build()
    except (ValueError, TypeError) as exc:
        assert isinstance(exc, ValueError), f"{which}({bad!r}): {type(exc).__name__}: {exc}"
        assert which in str(exc), str(exc)
        return
    # accepted: only values that are valid for that argument
    assert (which, bad) in (("AvgPool2d", None), ("Dropout", 0)), \
        f"{which} accepted {bad!r}: {layer!r}"
