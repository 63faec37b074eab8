"""The model an ONNX file becomes: a graph model whose state-dict keys are the file's
initializer names."""
from ..graph import Model
from ..nn.registry import register


@register
class OnnxModel(Model):
    """A :class:`fastcnn.Model` read from an ONNX file (made by :func:`fastcnn.onnx.load`).

    Its parameters and buffers are named after the file's initializers where they hold the
    initializer's values as they are (``named_parameters``, ``state_dict``,
    ``load_state_dict``), so a user freezes or replaces them by the names the exporter gave;
    the others keep the ``<layer>.<attribute>`` keys of any graph model. ``layout`` is the
    layout the model takes and returns: 'nchw' (the file's) or 'nhwc'. ``predict`` returns the
    graph's outputs as they are, as ONNX Runtime does (no softmax of its own on logits).
    """

    def __init__(self, inputs, outputs, key_names=None, layout="nchw"):
        super().__init__(inputs, outputs)
        self.key_names = dict(key_names or {})
        self.layout = layout

    def prepare_inputs(self, x):
        try:
            return super().prepare_inputs(x)
        except ValueError as exc:
            if self.layout != "nchw" or len(self.inputs) != 1 or not hasattr(x, "shape"):
                raise
            sample = self.inputs[0].shape
            hint = ""
            if len(x.shape) == len(sample) + 1 and len(sample) >= 2 and x.shape[-1] == sample[0]:
                order = ", ".join(map(str, (0, len(sample)) + tuple(range(1, len(sample)))))
                hint = (f": channels last? this model takes the file's layout, channels first: "
                        f"pass x.transpose({order}), or load the file with layout='nhwc'")
            raise ValueError(f"Model: expected input of shape (N, {', '.join(map(str, sample))}) "
                             f"(the file's layout), got {tuple(x.shape)}{hint}") from exc

    def outputs_are_probabilities(self, i):
        return True   # the file says what its outputs are: predict passes them through

    def _rename(self, key):
        return self.key_names.get(key, key)

    def named_parameters(self, prefix=""):
        for key, p in super().named_parameters():
            yield prefix + self._rename(key), p

    def _state_items(self, prefix=""):
        for key, owner, name, is_param in super()._state_items():
            yield prefix + self._rename(key), owner, name, is_param

    def get_config(self):
        return dict(super().get_config(), key_names=self.key_names, layout=self.layout)

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        key_names, layout = config.pop("key_names", {}), config.pop("layout", "nchw")
        model = Model.from_config.__func__(cls, config)
        model.key_names, model.layout = dict(key_names), layout
        return model
