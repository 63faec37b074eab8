"""fc.onnx.load: files written by PyTorch's exporter and by hand give ONNX Runtime's outputs,
train, keep their initializer names, and bad files are clear errors."""
import io

import numpy as np
import pytest

import fastcnn as fc

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from conftest import relative_error  # noqa: E402


def run_ort(model_bytes, feeds):
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def make_model(nodes, inputs, outputs, initializers=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def tensor_info(name, shape, rank=4):
    """A float tensor's type; ``shape`` None: ``rank`` axes of unknown size."""
    return helper.make_tensor_value_info(name, TensorProto.FLOAT,
                                         [None] * rank if shape is None else shape)


# --- models exported by PyTorch -----------------------------------------------------------------
@pytest.fixture(scope="module")
def torch_models():
    torch = pytest.importorskip("torch")
    import torch_zoo
    torch.manual_seed(0)
    made = {}
    for name, net in (("resnet18", torch_zoo.resnet18(10)),
                      ("mobilenet_v2", torch_zoo.mobilenet_v2(10))):
        net.eval()
        for m in net.modules():   # running statistics that matter
            if isinstance(m, torch.nn.BatchNorm2d):   # (distinct: the exporter merges
                m.running_mean.uniform_(-0.3, 0.3)        # initializers of equal values)
                m.running_var.uniform_(0.5, 2.0)
                with torch.no_grad():
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.2, 0.2)
        files = {}
        for folded in (True, False):
            f = io.BytesIO()
            torch.onnx.export(net, torch.randn(2, 3, 48, 48), f, input_names=["image"],
                              output_names=["logits"], opset_version=17, dynamo=False,
                              dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}},
                              training=(torch.onnx.TrainingMode.EVAL if folded else
                                        torch.onnx.TrainingMode.PRESERVE))
            files["folded" if folded else "bn"] = f.getvalue()
        made[name] = (net, files)
    return made


@pytest.mark.torch
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
@pytest.mark.parametrize("variant", ["folded", "bn"])
def test_pytorch_exports_give_onnx_runtimes_outputs(torch_models, name, variant, rng):
    _, files = torch_models[name]
    data = files[variant]
    model = fc.onnx.load(data)
    x = rng.standard_normal((3, 3, 48, 48)).astype(np.float32)
    expected = run_ort(data, {"image": x})[0]
    assert relative_error(model.predict(x), expected) < 1e-4
    nhwc = fc.onnx.load(data, layout="nhwc")
    assert relative_error(nhwc.predict(x.transpose(0, 2, 3, 1)), expected) < 1e-4
    names = {t.name for t in onnx.load_from_string(data).graph.initializer}
    assert {k for k, _ in model.named_parameters()} <= names | {
        k for k in model.state_dict() if k.endswith(".value")}


@pytest.mark.torch
def test_keys_are_the_exporters_names_so_pytorch_state_dicts_load(torch_models, rng):
    net, files = torch_models["resnet18"]
    model = fc.onnx.load(files["bn"])
    state = model.state_dict()
    torch_state = net.state_dict()
    shared = [k for k in state if k in torch_state]
    assert "conv1.weight" in shared and "fc.weight" in shared and "layer4.1.bn2.running_var" in shared
    for k in shared:
        np.testing.assert_array_equal(state[k], torch_state[k].numpy())
    # replace the weights by name: the model follows
    model.load_state_dict({k: v * 0.5 if k == "fc.weight" else v for k, v in state.items()})
    np.testing.assert_array_equal(dict(model.named_parameters())["fc.weight"].data,
                                  state["fc.weight"] * 0.5)


@pytest.mark.torch
def test_fit_on_an_image_folder_with_a_frozen_backbone_and_export(torch_models, tmp_path, rng):
    """The frozen weights stay bit-identical, the head learns, and ONNX Runtime runs the
    exported file to fastcnn's predictions."""
    Image = pytest.importorskip("PIL.Image")
    for name, colour in (("blue", (0, 0, 1)), ("red", (1, 0, 0))):
        (tmp_path / "images" / name).mkdir(parents=True)
        for i in range(6):
            pixels = np.clip(np.array(colour) * 200 + rng.normal(30, 20, (56, 60, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(
                tmp_path / "images" / name / f"{i}.{'png' if i % 2 else 'jpg'}")
    folder = fc.datasets.ImageFolder(tmp_path / "images", 48, mean="imagenet")
    _, files = torch_models["mobilenet_v2"]
    model = fc.onnx.load(files["folded"], layout="nhwc")   # the folder gives NHWC batches
    head = [k for k, _ in model.named_parameters()][-2:]
    for key, p in model.named_parameters():
        p.requires_grad = key in head
    before = {k: p.data.copy() for k, p in model.named_parameters()}
    model.compile(optimizer=fc.SGD(lr=0.1, momentum=0.9), loss=fc.CrossEntropyLoss())
    model.fit(folder, epochs=2, batch_size=4, verbose=0)
    for key, p in model.named_parameters():
        if key in head:
            assert not np.array_equal(p.data, before[key])
        else:
            np.testing.assert_array_equal(p.data, before[key])

    exported = fc.onnx.export(model, tmp_path / "finetuned.onnx", layout="nchw")
    x = np.concatenate([xb for xb, _ in folder.loader(batch_size=5).eval_batches()])
    expected = run_ort(exported.SerializeToString(), {"image": x.transpose(0, 3, 1, 2)})[0]
    assert relative_error(model.predict(x), expected) < 1e-4


@pytest.mark.torch
def test_an_imported_model_saves_with_its_names(torch_models, tmp_path, rng):
    _, files = torch_models["resnet18"]
    model = fc.onnx.load(files["bn"])
    fc.save(model, tmp_path / "r.fcnn")
    again = fc.load(tmp_path / "r.fcnn")
    assert list(again.state_dict()) == list(model.state_dict())
    x = rng.standard_normal((2, 3, 48, 48)).astype(np.float32)
    np.testing.assert_array_equal(again.predict(x), model.predict(x))


# --- graphs written by hand ---------------------------------------------------------------------
def _conv_bn_relu_pool(rng):
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "c.weight")
    b = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "c.bias")
    fc_w = numpy_helper.from_array(rng.standard_normal((5, 4 * 2 * 3)).astype(np.float32), "fc.w")
    # the flatten older exporters write: Shape -> Gather -> Unsqueeze -> Concat -> Reshape
    nodes = [
        helper.make_node("Conv", ["x", "c.weight", "c.bias"], ["c"], pads=[0, 1, 1, 0]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[3, 3], strides=[2, 2],
                         auto_pad="SAME_UPPER"),
        helper.make_node("Shape", ["p"], ["s"]),
        helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.array(0))),
        helper.make_node("Gather", ["s", "zero"], ["n"]),
        helper.make_node("Constant", [], ["axes"], value=numpy_helper.from_array(np.array([0]))),
        helper.make_node("Unsqueeze", ["n", "axes"], ["n1"]),
        helper.make_node("Constant", [], ["minus1"], value=numpy_helper.from_array(np.array([-1]))),
        helper.make_node("Concat", ["n1", "minus1"], ["shape"], axis=0),
        helper.make_node("Reshape", ["p", "shape"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc.w"], ["y"], transB=1, alpha=0.5),
        helper.make_node("LogSoftmax", ["y"], ["out"], axis=1),
    ]
    return make_model(nodes, [tensor_info("x", ["N", 3, 5, 6])], [tensor_info("out", ["N", 5])],
                      [w, b, fc_w], opset=13)


def test_hand_written_graph_with_a_shape_chain(rng):
    proto = _conv_bn_relu_pool(rng)
    data = proto.SerializeToString()
    model = fc.onnx.load(data)
    x = rng.standard_normal((2, 3, 5, 6)).astype(np.float32)
    assert relative_error(model.predict(x), run_ort(data, {"x": x})[0]) < 1e-5
    assert not any(type(layer).__name__ == "Gather" for layer in model.layers)
    assert [k for k, _ in model.named_parameters()][:2] == ["c.weight", "c.bias"]
    # the alpha-scaled Gemm weight is not the file's any more: it keeps a layer key
    assert "fc.w" not in dict(model.named_parameters())


@pytest.mark.parametrize("op,attrs", [
    ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_LOWER")),
    ("MaxPool", dict(kernel_shape=[3, 3], pads=[2, 0, 1, 1])),
    ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1, pads=[1, 1, 1, 1])),
    ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")),
    ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER",
                         count_include_pad=1)),
    ("AveragePool", dict(kernel_shape=[2, 3], pads=[1, 2, 0, 2], count_include_pad=1)),
    ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1, pads=[0, 1, 1, 0])),
])
def test_onnx_pooling_beyond_pytorchs_limits(op, attrs, rng):
    proto = make_model([helper.make_node(op, ["x"], ["y"], **attrs)],
                       [tensor_info("x", ["N", 3, 7, 8])], [tensor_info("y", None)])
    data = proto.SerializeToString()
    model = fc.onnx.load(data)
    x = rng.standard_normal((2, 3, 7, 8)).astype(np.float32)
    expected = run_ort(data, {"x": x})[0]
    model.train()
    y = model.forward(x)
    assert relative_error(y, expected) < 1e-6
    # the gradient of the padded path, against finite differences (a sum of the outputs)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = model.backward(dy)
    v = rng.standard_normal(x.shape).astype(np.float32)
    eps = 1e-3
    numeric = np.sum((model.forward(x + eps * v).astype(np.float64) -
                      model.forward(x - eps * v)) * dy) / (2 * eps)
    assert abs(numeric - np.sum(dx * v)) <= 2e-3 * max(abs(numeric), 1)


def test_unsupported_operator_names_the_node_the_operator_and_the_opset():
    proto = make_model([helper.make_node("Relu", ["x"], ["r"], name="act"),
                        helper.make_node("Elu", ["r"], ["y"], name="strange")],
                       [tensor_info("x", ["N", 4])], [tensor_info("y", ["N", 4])], opset=15)
    with pytest.raises(ValueError, match=r"'strange': operator Elu \(opset 15\) is not "
                                         r"supported; fastcnn reads .*Conv"):
        fc.onnx.load(proto.SerializeToString())


def test_bad_files_are_clear_errors(tmp_path, rng):
    data = _conv_bn_relu_pool(rng).SerializeToString()
    with pytest.raises(ValueError, match="not a readable ONNX model|not valid ONNX"):
        fc.onnx.load(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable ONNX model|not valid ONNX"):
        fc.onnx.load(b"\x08\x07garbage" * 50)
    (tmp_path / "bad.onnx").write_bytes(b"\xff" * 100)
    with pytest.raises(ValueError):
        fc.onnx.load(str(tmp_path / "bad.onnx"))
    with pytest.raises(ValueError, match="layout"):
        fc.onnx.load(data, layout="nwhc")


def test_dynamic_sizes_need_input_shape(rng):
    proto = make_model([helper.make_node("GlobalAveragePool", ["x"], ["y"])],
                       [tensor_info("x", ["N", 3, "H", "W"])], [tensor_info("y", None)])
    with pytest.raises(ValueError, match="input_shape"):
        fc.onnx.load(proto)
    model = fc.onnx.load(proto, input_shape=(3, 9, 5))
    x = rng.standard_normal((2, 3, 9, 5)).astype(np.float32)
    np.testing.assert_allclose(model.predict(x), x.mean(axis=(2, 3), keepdims=True), rtol=1e-5,
                               atol=1e-6)


def test_a_constant_weight_from_the_graph_is_required():
    proto = make_model([helper.make_node("Conv", ["x", "w"], ["y"])],
                       [tensor_info("x", ["N", 3, 5, 5]), tensor_info("w", [2, 3, 1, 1])],
                       [tensor_info("y", None)])
    with pytest.raises(ValueError, match="weight must be an initializer"):
        fc.onnx.load(proto)


def test_layouts_meet_where_branches_join(rng):
    """A channels-last branch (Conv) and a channels-first one (Transpose-free arithmetic on the
    input) added together, then concatenated and reduced: a transpose only where a layout
    changes (the input to the convolution's, the product to the sum's, the output back), and
    none when the model takes channels-last."""
    w = numpy_helper.from_array(rng.standard_normal((3, 3, 1, 1)).astype(np.float32), "w")
    scale = numpy_helper.from_array(rng.standard_normal((1, 3, 1, 1)).astype(np.float32), "s")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("Mul", ["x", "s"], ["m"]),
             helper.make_node("Add", ["c", "m"], ["a"]),
             helper.make_node("Concat", ["a", "x"], ["cat"], axis=1),
             helper.make_node("ReduceMean", ["cat"], ["mean"], axes=[2], keepdims=0),
             helper.make_node("Softmax", ["mean"], ["y"], axis=1)]
    proto = make_model(nodes, [tensor_info("x", ["N", 3, 4, 5])], [tensor_info("y", None)],
                       [w, scale], opset=17)
    proto.graph.output[0].CopyFrom(tensor_info("y", None, rank=3))
    data = proto.SerializeToString()
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    for layout, xs in (("nchw", x), ("nhwc", x.transpose(0, 2, 3, 1))):
        model = fc.onnx.load(data, layout=layout)
        expected = run_ort(data, {"x": x})[0]
        got = model.predict(xs)
        if layout == "nhwc":
            got = got.transpose(0, 2, 1)   # a rank-3 output comes back channels-last
        assert relative_error(got, expected) < 1e-5
        permutes = sum(type(layer).__name__ == "Permute" for layer in model.layers)
        assert permutes == (3 if layout == "nchw" else 0)


def test_a_channels_last_array_given_to_an_nchw_model_says_how_to_fix_it():
    proto = make_model([helper.make_node("Relu", ["x"], ["y"])],
                       [tensor_info("x", ["N", 3, 8, 8])], [tensor_info("y", ["N", 3, 8, 8])])
    model = fc.onnx.load(proto)
    with pytest.raises(ValueError, match=r"\(N, 3, 8, 8\) \(the file's layout\), got \(2, 8, 8, "
                                         r"3\): channels last\? .*x.transpose\(0, 3, 1, 2\)"):
        model.predict(np.zeros((2, 8, 8, 3), np.float32))
