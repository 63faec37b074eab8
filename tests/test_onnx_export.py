"""fc.onnx.export: every layer family, the zoo and graph models give ONNX Runtime the outputs
fastcnn computes (channels-first files by default, the model's own layout with 'nhwc'), the
files pass onnx.checker's full check, keep the state-dict keys as initializer names, and read
back with fc.onnx.load into the same model."""
import io

import numpy as np
import pytest

import fastcnn as fc

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from conftest import relative_error  # noqa: E402


# --- helpers -----------------------------------------------------------------------------------------
def to_nchw(a):
    a = np.asarray(a)
    if a.ndim >= 3:
        return np.ascontiguousarray(a.transpose((0, a.ndim - 1) + tuple(range(1, a.ndim - 1))))
    return a


def run_ort(proto, feeds):
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def all_layers(layer):
    yield layer
    for _, child in layer.named_children():
        yield from all_layers(child)


def randomize_batch_norm(model, rng):
    """Running statistics and affine parameters that matter."""
    for layer in all_layers(model):
        if isinstance(layer, fc.BatchNorm2d):
            c = layer.num_features
            layer.running_mean = rng.normal(0, 0.5, c).astype(np.float32)
            layer.running_var = rng.uniform(0.5, 2.0, c).astype(np.float32)
            if layer.affine:
                layer.weight.data = rng.uniform(0.5, 1.5, c).astype(np.float32)
                layer.bias.data = rng.normal(0, 0.2, c).astype(np.float32)
    return model


def check(model, xs, opset=17, layout=None, input_shape=None, tol=1e-5):
    """Export, run with ONNX Runtime, compare with model.forward; returns the proto."""
    model.eval()
    several = isinstance(xs, list)
    xs_list = xs if several else [xs]
    expected = model.forward(xs if several else xs_list[0])
    expected = expected if isinstance(expected, list) else [expected]
    proto = fc.onnx.export(model, opset=opset, layout=layout, input_shape=input_shape)
    nchw = layout != "nhwc" and not (isinstance(model, fc.onnx.OnnxModel))
    convert = to_nchw if nchw else np.asarray
    names = [i.name for i in proto.graph.input]
    feeds = {n: convert(x).astype(np.float32) for n, x in zip(names, xs_list)}
    got = run_ort(proto, feeds)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        e = convert(e)
        assert g.shape == e.shape
        assert relative_error(g, e) <= tol, relative_error(g, e)
    return proto


def ops(proto):
    return [n.op_type for n in proto.graph.node]


def seq(*layers, shape):
    return fc.Sequential(*layers, input_shape=shape)


@pytest.fixture
def x8(rng):
    return rng.standard_normal((2, 8, 8, 3)).astype(np.float32)


# --- convolutions ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [
    dict(kernel_size=3), dict(kernel_size=3, padding=1), dict(kernel_size=(3, 2), padding=(1, 0)),
    dict(kernel_size=3, padding=((0, 2), (1, 0))), dict(kernel_size=3, padding="same"),
    dict(kernel_size=4, stride=2, padding="same"), dict(kernel_size=3, padding="valid"),
    dict(kernel_size=3, dilation=2, padding=2), dict(kernel_size=3, stride=2, bias=False),
    dict(kernel_size=3, groups=3, padding=1), dict(kernel_size=1)])
def test_conv2d(kwargs, x8):
    out = 6 if kwargs.get("groups", 1) == 3 else 4
    proto = check(seq(fc.Conv2d(3, out, **kwargs), shape=(8, 8, 3)), x8)
    assert ops(proto) == ["Conv"]


@pytest.mark.parametrize("kwargs", [dict(kernel_size=3), dict(kernel_size=3, padding=1),
                                    dict(kernel_size=4, padding="same"),
                                    dict(kernel_size=3, stride=2, dilation=2, groups=2)])
def test_conv1d_and_1d_layers(kwargs, rng):
    model = seq(fc.Conv1d(4, 6, **kwargs), fc.BatchNorm1d(6), fc.ReLU(),
                fc.MaxPool1d(2, ceil_mode=True), fc.AvgPool1d(2, padding=1), shape=(13, 4))
    randomize_batch_norm(model, rng)
    check(model, rng.standard_normal((2, 13, 4)).astype(np.float32))
    model = seq(fc.Conv1d(4, 6, 3, padding=1), fc.MaxPool1d(3, stride=1, padding=1, dilation=1),
                fc.AdaptiveAvgPool1d(4), shape=(12, 4))
    check(model, rng.standard_normal((2, 12, 4)).astype(np.float32))
    check(seq(fc.AdaptiveAvgPool1d(1), shape=(12, 4)),
          rng.standard_normal((2, 12, 4)).astype(np.float32))


@pytest.mark.parametrize("kwargs", [dict(kernel_size=2, stride=2), dict(kernel_size=3, padding=1),
                                    dict(kernel_size=3, stride=2, padding=1, output_padding=1),
                                    dict(kernel_size=3, stride=2, dilation=2, groups=3),
                                    dict(kernel_size=(2, 3), stride=(2, 1), bias=False)])
def test_conv_transpose2d(kwargs, rng):
    x = rng.standard_normal((2, 5, 5, 3)).astype(np.float32)
    check(seq(fc.ConvTranspose2d(3, 6, **kwargs), shape=(5, 5, 3)), x)


# --- pooling -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("layer", [
    lambda: fc.MaxPool2d(2), lambda: fc.MaxPool2d(3, stride=2, padding=1),
    lambda: fc.MaxPool2d(3, stride=2, ceil_mode=True), lambda: fc.MaxPool2d(2, dilation=2),
    lambda: fc.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
    lambda: fc.AvgPool2d(2), lambda: fc.AvgPool2d(3, stride=2, padding=1),
    lambda: fc.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
    lambda: fc.AvgPool2d(3, stride=2, ceil_mode=True),
    lambda: fc.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
    lambda: fc.SumPool2d(2), lambda: fc.SumPool2d(3, stride=2, padding=1),
    lambda: fc.GlobalAvgPool2d(), lambda: fc.AdaptiveAvgPool2d(1),
    lambda: fc.AdaptiveMaxPool2d(1), lambda: fc.AdaptiveAvgPool2d((3, 1)),
    lambda: fc.AdaptiveMaxPool2d(3), lambda: fc.AdaptiveAvgPool2d((None, 3))])
@pytest.mark.parametrize("size", [9, 10, 11])
def test_pooling(layer, size, rng):
    if size != 9 and "Adaptive" in type(layer()).__name__:
        pytest.skip("uneven adaptive windows are refused (see below)")
    shape = (size, size if "Adaptive" in type(layer()).__name__ else size + 1, 3)
    check(seq(layer(), shape=shape), rng.standard_normal((2,) + shape).astype(np.float32))


def test_adaptive_pooling_of_uneven_sizes_is_refused(rng):
    with pytest.raises(ValueError, match="AdaptiveAvgPool2d.*divide evenly"):
        fc.onnx.export(seq(fc.AdaptiveAvgPool2d(4), shape=(9, 9, 3)))


# --- normalisation -----------------------------------------------------------------------------------
def test_batch_norm_is_exported_with_running_statistics(x8, rng):
    model = seq(fc.Conv2d(3, 4, 3, padding=1), fc.BatchNorm2d(4, eps=1e-3, momentum=0.2),
                fc.ReLU(), fc.BatchNorm2d(4, affine=False), fc.Flatten(), fc.Linear(256, 5),
                fc.BatchNorm1d(5), shape=(8, 8, 3))
    randomize_batch_norm(model, rng)
    model[3].running_mean = rng.normal(0, 1, 4).astype(np.float32)
    proto = check(model, x8)
    assert ops(proto).count("BatchNormalization") == 3
    bn = next(n for n in proto.graph.node if n.op_type == "BatchNormalization")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in bn.attribute}
    assert attrs["epsilon"] == pytest.approx(1e-3) and attrs["momentum"] == pytest.approx(0.8)


def test_batch_norm_without_running_statistics_is_refused():
    model = seq(fc.BatchNorm2d(3, track_running_stats=False), shape=(4, 4, 3))
    with pytest.raises(ValueError, match="track_running_stats"):
        fc.onnx.export(model)


@pytest.mark.parametrize("opset", [13, 17])
def test_group_norm_and_layer_norm(opset, rng):
    def randomize(layer):
        layer.weight.data = rng.uniform(0.5, 1.5, layer.weight.shape).astype(np.float32)
        layer.bias.data = rng.normal(0, 0.3, layer.bias.shape).astype(np.float32)
        return layer
    x = (rng.standard_normal((2, 6, 6, 8)) * 2 + 1).astype(np.float32)
    model = seq(randomize(fc.GroupNorm(2, 8)), randomize(fc.LayerNorm(8)),
                fc.GroupNorm(4, 8, affine=False), fc.LayerNorm(8, elementwise_affine=False),
                shape=(6, 6, 8))
    proto = check(model, x, opset=opset)
    assert ("LayerNormalization" in ops(proto)) == (opset >= 17)
    v = rng.standard_normal((3, 8)).astype(np.float32)
    check(seq(randomize(fc.GroupNorm(2, 8)), randomize(fc.LayerNorm(8)), shape=(8,)), v,
          opset=opset)
    s = rng.standard_normal((2, 5, 8)).astype(np.float32)
    check(seq(randomize(fc.GroupNorm(4, 8)), randomize(fc.LayerNorm(8)), shape=(5, 8)), s,
          opset=opset)


# --- activations -------------------------------------------------------------------------------------
ACTIVATIONS = [fc.ReLU, lambda: fc.LeakyReLU(0.2), fc.ReLU6, fc.Sigmoid, fc.Tanh, fc.Softmax,
               fc.Hardsigmoid, fc.Hardswish, fc.SiLU, fc.GELU, lambda: fc.GELU("tanh"),
               fc.Identity, lambda: fc.PReLU(), lambda: fc.PReLU(4), lambda: fc.Clip(-0.5, 1.0),
               lambda: fc.Clip(None, 0.3), lambda: fc.Clip(-0.2), lambda: fc.Rescaling(0.5, 1.0),
               lambda: fc.Rescaling(2.0)]


@pytest.mark.parametrize("opset", [11, 13, 17, 20])
@pytest.mark.parametrize("make", ACTIVATIONS)
def test_activations(make, opset, rng):
    x = (rng.standard_normal((2, 5, 5, 3)) * 4).astype(np.float32)
    act = make()
    if isinstance(act, fc.PReLU):
        act.weight.data = rng.uniform(0.05, 0.5, act.weight.shape).astype(np.float32)
    model = seq(fc.Conv2d(3, 4, 1), act, shape=(5, 5, 3))
    proto = check(model, x, opset=opset)
    if isinstance(act, fc.GELU):
        assert ("Gelu" in ops(proto)) == (opset >= 20)
    # after a Flatten too: the 2-D layout
    model = seq(fc.Conv2d(3, 4, 1), fc.GlobalAvgPool2d(), make(), shape=(5, 5, 3))
    check(model, x, opset=opset)


def test_dropout_exports_as_nothing(x8):
    model = seq(fc.Conv2d(3, 4, 3), fc.Dropout(0.5), fc.Dropout2d(0.3), fc.DropPath(0.2),
                fc.ReLU(), shape=(8, 8, 3))
    model.train()     # the mode does not matter: the file is the inference graph
    proto = check(model, x8)
    assert ops(proto) == ["Conv", "Relu"]


# --- merging, shapes ---------------------------------------------------------------------------------
def test_graph_model_with_merges_and_shapes(rng):
    inp = fc.Input((8, 8, 3), name="image")
    a = fc.Conv2d(3, 4, 3, padding=1, name="a")(inp)
    b = fc.Conv2d(3, 4, 1, name="b")(inp)
    s = fc.Add(name="add")([a, b])
    gate = fc.Sigmoid()(fc.Conv2d(4, 4, 1)(fc.AdaptiveAvgPool2d(1)(s)))
    m = fc.Multiply(name="se")([s, gate])
    flat_gate = fc.Sigmoid()(fc.GlobalAvgPool2d()(m))
    m2 = fc.Multiply(name="channel_gate")([m, flat_gate])
    c = fc.Concatenate(name="concat")([m2, fc.ReLU()(a), b])
    c2 = fc.Concatenate(axis=1, name="rows")([c, c])
    up = fc.Upsample(scale_factor=2)(fc.MaxPool2d(2)(c2))
    p = fc.ZeroPad2d((1, 0, 2, 1))(up)
    three = fc.Add(name="add3")([a, b, s])
    model = fc.Model(inp, [p, three])
    x = rng.standard_normal((2, 8, 8, 3)).astype(np.float32)
    proto = check(model, x)
    assert "Transpose" not in ops(proto)
    assert [i.name for i in proto.graph.input] == ["image"]
    assert [o.name for o in proto.graph.output] == ["output", "output_1"]


@pytest.mark.parametrize("kwargs", [dict(scale_factor=2), dict(size=(7, 5)),
                                    dict(scale_factor=2, mode="bilinear"),
                                    dict(size=(9, 6), mode="bilinear"),
                                    dict(size=(3, 7), mode="bilinear", align_corners=True),
                                    dict(size=(3, 2), mode="bilinear"),
                                    dict(size=(1, 3), mode="bilinear"),
                                    dict(scale_factor=(3, 2), mode="bilinear",
                                         align_corners=True), dict(size=(2, 3))])
@pytest.mark.parametrize("opset", [11, 13, 18])
def test_upsample(kwargs, opset, rng):
    x = rng.standard_normal((2, 4, 5, 3)).astype(np.float32)
    check(seq(fc.Upsample(**kwargs), shape=(4, 5, 3)), x, opset=opset)


def test_flatten_linear_and_nested_sequentials(x8):
    model = seq(fc.Conv2d(3, 4, 3), fc.Sequential(fc.ReLU(), fc.Sequential(fc.MaxPool2d(2))),
                fc.Flatten(), fc.Linear(36, 7), fc.Flatten(), fc.Linear(7, 3, bias=False),
                shape=(8, 8, 3))
    proto = check(model, x8)
    assert ops(proto) == ["Conv", "Relu", "MaxPool", "Flatten", "Gemm", "Gemm"]


def test_tensor_layers(rng):
    inp = fc.Input((4, 6, 3))
    x = fc.Permute((3, 1, 2))(inp)                  # (3, 4, 6): stored NCHW
    x = fc.ConstantArithmetic("mul", (1, 3, 1, 1))(x)
    x = fc.Permute((2, 3, 1))(x)                    # back to NHWC: no node either way
    y = fc.Conv2d(3, 5, 1)(x)
    r = fc.Reshape((4, 30))(y)
    r = fc.SoftmaxAxis(2, log=True)(r)
    r = fc.Reshape((4, 6, 5))(r)
    z = fc.Arithmetic("sub")([y, r])
    z = fc.Arithmetic("div")([z, fc.ConstantArithmetic("add", (5,), reverse=True)(
        fc.Reduce("mean", (1, 2), keepdims=True)(y))])
    z = fc.ConstantArithmetic("prelu", (1, 1, 1, 5))(z)
    z = fc.ConstantArithmetic("div", (6, 1), reverse=True)(z)
    q = fc.Reduce("sum", (3,), keepdims=True)(z)
    q = fc.Pad(((1, 0), (0, 2), (0, 0)), mode="reflect")(q)
    w = fc.Pad(((1, 1), (2, 0), (0, 1)), value=-1.5)(z)
    e = fc.Pad(((0, 1), (1, 1), (0, 0)), mode="edge")(z)
    m = fc.MatMul((5, 2))(fc.Permute((1, 2, 3))(z))
    s = fc.SoftmaxAxis(1)(fc.Arithmetic("add")([z, fc.Permute((2, 1, 3))(
        fc.Permute((2, 1, 3))(z)), z]))
    mm = fc.Arithmetic("mul")([fc.Reduce("mean", (2,), keepdims=True)(z), z])
    model = fc.Model(inp, [q, w, e, m, s, mm])
    for layer in model.layers:
        for p in layer.parameters():
            p.data = rng.uniform(0.5, 1.5, p.shape).astype(np.float32)
    x = rng.standard_normal((2, 4, 6, 3)).astype(np.float32)
    proto = check(model, x, tol=1e-5)
    for opset in (11, 13, 18):
        check(model, x, opset=opset)
    for opset in (17,):
        check(model, x, layout="nhwc", opset=opset)
    assert "Transpose" in ops(proto)     # the reshapes work on the stored order


@pytest.mark.parametrize("layout", [None, "nhwc"])
def test_arithmetic_of_samples_of_different_ranks(layout, rng):
    inp = fc.Input((4, 5, 3))
    vec = fc.Input((3,))
    rows = fc.Input((5, 3))
    out = fc.Arithmetic("mul")([inp, vec])
    out = fc.Arithmetic("add")([out, rows, vec])
    model = fc.Model([inp, vec, rows], [fc.Conv2d(3, 2, 1)(out), fc.Arithmetic("sub")([vec, out])])
    xs = [rng.standard_normal((3, 4, 5, 3)).astype(np.float32),
          rng.standard_normal((3, 3)).astype(np.float32),
          rng.standard_normal((3, 5, 3)).astype(np.float32)]
    check(model, xs, layout=layout)


def test_arithmetic_broadcasts_and_reshapes_of_unit_axes_need_no_transpose(rng):
    inp = fc.Input((4, 5, 3))
    vec = fc.Input((3,))
    gate = fc.Reshape((1, 1, 3))(vec)       # (1, 1, C) stored is (C, 1, 1) in ONNX: a Reshape
    out = fc.Arithmetic("mul")([inp, gate])
    out = fc.Arithmetic("sub")([out, fc.Reduce("mean", (1,), keepdims=True)(out)])
    model = fc.Model([inp, vec], [fc.Conv2d(3, 2, 1)(out), fc.Flatten()(gate)])
    xs = [rng.standard_normal((3, 4, 5, 3)).astype(np.float32),
          rng.standard_normal((3, 3)).astype(np.float32)]
    proto = check(model, xs)
    assert "Transpose" not in ops(proto)
    check(model, xs, layout="nhwc")


# --- the zoo, graph models ---------------------------------------------------------------------------
def test_lenet5(rng):
    model = fc.models.lenet5()
    proto = check(model, rng.standard_normal((2, 28, 28, 1)).astype(np.float32))
    assert "Transpose" not in ops(proto)
    assert [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] \
        == ["N", 1, 28, 28]


def test_resnet20(rng):
    model = randomize_batch_norm(fc.models.resnet20(), rng)
    proto = check(model, rng.standard_normal((2, 32, 32, 3)).astype(np.float32), tol=1e-4)
    assert "Transpose" not in ops(proto)
    assert ops(proto).count("BatchNormalization") == 21


def test_mobilenet_v2(rng):
    model = randomize_batch_norm(fc.models.mobilenet_v2(num_classes=10, input_shape=(32, 32, 3)),
                                 rng)
    proto = check(model, rng.standard_normal((2, 32, 32, 3)).astype(np.float32), tol=1e-4)
    assert "Transpose" not in ops(proto) and "Dropout" not in ops(proto)
    keys = set(model.state_dict()) - {k for k in model.state_dict()
                                      if k.endswith("num_batches_tracked")}
    assert keys == {i.name for i in proto.graph.initializer} & keys
    assert keys <= {i.name for i in proto.graph.initializer}


def test_unet_output_is_nchw(rng):
    model = randomize_batch_norm(fc.models.unet(in_channels=2, num_classes=3, base=4,
                                                input_shape=(20, 20)), rng)
    x = rng.standard_normal((2, 20, 20, 2)).astype(np.float32)
    proto = check(model, x, tol=1e-4)
    dims = [d.dim_param or d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim]
    assert dims == ["N", 3, 20, 20]
    assert "Transpose" not in ops(proto)
    check(model, x, layout="nhwc", tol=1e-4)


def test_multi_input_multi_output_model_with_a_shared_layer(rng):
    a, b = fc.Input((6, 6, 2), name="left"), fc.Input((6, 6, 2), name="right")
    shared = fc.Conv2d(2, 3, 3, padding=1, name="shared")
    fa, fb = shared(a), shared(b)
    joined = fc.Concatenate()([fa, fb])
    head = fc.Linear(6, 4, name="head")(fc.GlobalAvgPool2d()(joined))
    model = fc.Model([a, b], [head, fa, joined])
    xs = [rng.standard_normal((3, 6, 6, 2)).astype(np.float32) for _ in range(2)]
    proto = check(model, xs)
    assert [i.name for i in proto.graph.input] == ["left", "right"]
    assert [o.name for o in proto.graph.output] == ["output", "output_1", "output_2"]
    assert [i.name for i in proto.graph.initializer].count("shared.weight") == 1


def test_the_same_tensor_twice_and_an_input_as_outputs(rng):
    inp = fc.Input((5,))
    y = fc.ReLU()(inp)
    model = fc.Model(inp, [y, y, fc.Identity()(inp)])
    check(model, rng.standard_normal((2, 5)).astype(np.float32))


def test_residual_in_a_sequential(x8, rng):
    body = fc.Sequential(fc.Conv2d(4, 4, 3, padding=1), fc.BatchNorm2d(4), fc.ReLU(),
                         fc.Conv2d(4, 4, 3, padding=1), fc.BatchNorm2d(4))
    model = seq(fc.Conv2d(3, 4, 1), fc.Residual(body), fc.ReLU(),
                fc.Residual(fc.Conv2d(4, 6, 3, stride=2, padding=1), fc.Conv2d(4, 6, 1, stride=2)),
                fc.ReLU(), shape=(8, 8, 3))
    randomize_batch_norm(model, rng)
    proto = check(model, x8)
    names = {n.name for n in proto.graph.node}
    assert {"1.body.0", "1.body.1", "1", "3.body", "3.shortcut"} <= names
    assert {"1.body.0.weight", "1.body.1.running_var", "3.shortcut.weight"} <= \
        {i.name for i in proto.graph.initializer}


def test_sequential_without_input_shape_needs_one(x8):
    model = fc.Sequential(fc.Conv2d(3, 4, 3), fc.ReLU(), fc.Flatten())
    with pytest.raises(ValueError, match="input_shape"):
        fc.onnx.export(model)
    check(model, x8, input_shape=(8, 8, 3))


def test_nhwc_layout_takes_the_models_arrays(x8):
    model = seq(fc.Conv2d(3, 4, 3, padding=1), fc.ReLU(), fc.MaxPool2d(2), shape=(8, 8, 3))
    proto = check(model, x8, layout="nhwc")
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", 8, 8, 3]
    assert ops(proto) == ["Transpose", "Conv", "Relu", "MaxPool", "Transpose"]


def test_a_layer_without_an_export_rule_is_named():
    class Custom(fc.ReLU):
        pass
    model = seq(fc.Conv2d(3, 4, 3), Custom(), shape=(8, 8, 3))
    with pytest.raises(ValueError, match=r"Custom '1'.*Conv2d.*Upsample"):
        fc.onnx.export(model)
    with pytest.raises(ValueError, match="layout"):
        fc.onnx.export(fc.models.lenet5(), layout="nwhc")
    with pytest.raises(ValueError, match="opset"):
        fc.onnx.export(fc.models.lenet5(), opset=9)


def test_writes_to_a_path_and_a_file_object(tmp_path, x8):
    model = seq(fc.Conv2d(3, 4, 3), fc.ReLU(), shape=(8, 8, 3))
    proto = fc.onnx.export(model, tmp_path / "m.onnx")
    assert (tmp_path / "m.onnx").read_bytes() == proto.SerializeToString()
    buffer = io.BytesIO()
    fc.onnx.export(model, buffer)
    assert buffer.getvalue() == proto.SerializeToString()
    onnx.checker.check_model(onnx.load(str(tmp_path / "m.onnx")), full_check=True)


def test_initializer_names_are_the_state_dict_keys(rng):
    model = randomize_batch_norm(fc.models.resnet20(), rng)
    proto = fc.onnx.export(model)
    names = {i.name for i in proto.graph.initializer}
    keys = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    assert keys <= names
    from onnx import numpy_helper
    values = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    for k, v in model.state_dict().items():
        if k in keys:
            np.testing.assert_array_equal(values[k], v)


# --- round trips -------------------------------------------------------------------------------------
def round_trip_model(rng):
    inp = fc.Input((12, 12, 3), name="x")
    x = fc.Conv2d(3, 8, 3, padding=1, name="stem")(inp)
    x = fc.ReLU()(fc.BatchNorm2d(8, name="bn")(x))
    skip = x
    x = fc.MaxPool2d(2)(x)
    x = fc.Hardswish()(fc.Conv2d(8, 8, 3, padding=1, groups=8, name="dw")(x))
    x = fc.Upsample(scale_factor=2, mode="bilinear")(x)
    x = fc.Concatenate()([skip, x])
    seg = fc.Conv2d(16, 2, 1, name="seg")(x)
    g = fc.Flatten()(fc.AdaptiveAvgPool2d(1)(x))
    logits = fc.Linear(16, 5, name="fc")(fc.Dropout(0.1)(g))
    return randomize_batch_norm(fc.Model(inp, [logits, seg]), rng)


def test_round_trip_through_load(rng):
    model = round_trip_model(rng)
    model.eval()
    proto = check(model, rng.standard_normal((2, 12, 12, 3)).astype(np.float32))
    loaded = fc.onnx.load(proto)
    loaded.eval()
    x = rng.standard_normal((2, 12, 12, 3)).astype(np.float32)
    for a, b in zip(loaded.forward(to_nchw(x)), model.forward(x)):
        assert relative_error(a, to_nchw(b)) <= 1e-5
    # export again: the file's names, no transposes beyond the first file's
    again = check(loaded, to_nchw(x))
    assert ops(again).count("Transpose") <= ops(proto).count("Transpose")
    assert {i.name for i in proto.graph.initializer} <= {i.name for i in again.graph.initializer}
    assert [i.name for i in again.graph.input] == ["x"]
    feeds = {"x": to_nchw(x)}
    for a, b in zip(run_ort(again, feeds), run_ort(proto, feeds)):
        assert relative_error(a, b) <= 1e-5


@pytest.mark.parametrize("make", ["lenet5", "resnet20", "unet"])
def test_load_then_export_keeps_the_file(make, rng):
    if make == "unet":
        model, shape = fc.models.unet(in_channels=1, num_classes=2, base=4,
                                      input_shape=(16, 16)), (16, 16, 1)
    else:
        model = getattr(fc.models, make)()
        shape = model.input_shape
    randomize_batch_norm(model, rng)
    first = fc.onnx.export(model)
    x = to_nchw(rng.standard_normal((2,) + shape).astype(np.float32))
    for layout in ("nchw", "nhwc"):
        loaded = fc.onnx.load(first, layout=layout)
        second = check(loaded, x if layout == "nchw" else to_nhwc(x), tol=1e-4)
        if layout == "nchw":   # an NHWC file needs its transposes; not an NCHW one
            assert ops(second).count("Transpose") <= ops(first).count("Transpose")
        else:                  # ... and asked for channels first, it is the first file again
            third = fc.onnx.export(loaded, layout="nchw")
            assert ops(third).count("Transpose") <= ops(first).count("Transpose")
            got = run_ort(third, {third.graph.input[0].name: x})[0]
            assert relative_error(got, run_ort(first, {first.graph.input[0].name: x})[0]) <= 1e-5
        feeds_first = {first.graph.input[0].name: x}
        feeds_second = {second.graph.input[0].name: x if layout == "nchw" else to_nhwc(x)}
        a, b = run_ort(first, feeds_first)[0], run_ort(second, feeds_second)[0]
        if layout == "nhwc" and b.ndim == 4:
            b = to_nchw(b)
        assert relative_error(b, a) <= 1e-5
    # the default layout of an OnnxModel is its own: the same file's interface
    assert [i.name for i in check(fc.onnx.load(first), x, tol=1e-4).graph.input] == \
        [i.name for i in first.graph.input]


def to_nhwc(a):
    a = np.asarray(a)
    if a.ndim >= 3:
        return np.ascontiguousarray(a.transpose((0,) + tuple(range(2, a.ndim)) + (1,)))
    return a
