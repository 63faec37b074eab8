"""U-Net (Ronneberger et al. 2015) for segmentation: a graph model with the layout and
state-dict keys of the common PyTorch port (milesial/Pytorch-UNet, transposed-convolution
upsampling): ``inc.double_conv.0.weight``, ``down1.maxpool_conv.1.double_conv.3.weight``,
``up1.up.weight``, ``up1.conv.double_conv.4.running_var``, ``outc.conv.bias``.

Four levels down and four up, ``base`` channels at the top doubling at each level (16, 32, 64,
128, 256 for base=16; the paper's is base=64):

    inc     DoubleConv(in, base)                       (3x3 conv, BN, ReLU) x 2, no conv bias
    downK   MaxPool2d(2), DoubleConv                   K = 1..4
    upK     ConvTranspose2d(c, c/2, 2, stride 2), zero padding up to the skip's size,
            Concatenate([skip, upsampled]), DoubleConv(c, c/2)
    outc    Conv2d(base, num_classes, 1)               per-pixel logits (N, H, W, num_classes)

The output has the input's height and width, for any input of at least 16x16 (sizes that are
not multiples of 16 are padded on the way up, as the PyTorch port does).
"""
from .. import nn as L
from ..graph import Model, Sequential
from .resnet import image_input


def _wrap(shape, layer, name):
    """A one-layer Model named ``name`` holding ``layer`` (a PyTorch module with one child)."""
    inp = L.Input(shape)
    return Model(inp, layer(inp), name=name)


def _double_conv(shape, out_channels, name):
    """DoubleConv: a module whose ``double_conv`` is (Conv2d 3x3, BatchNorm2d, ReLU) x 2."""
    return _wrap(shape, Sequential(L.Conv2d(shape[2], out_channels, 3, padding=1, bias=False),
                                   L.BatchNorm2d(out_channels), L.ReLU(),
                                   L.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
                                   L.BatchNorm2d(out_channels), L.ReLU(), name="double_conv"),
                 name)


def _down(shape, out_channels, name):
    """Down: ``maxpool_conv`` = (MaxPool2d(2), DoubleConv)."""
    pooled = L.MaxPool2d(2).output_shape(shape)
    return _wrap(shape, Sequential(L.MaxPool2d(2), _double_conv(pooled, out_channels, "1"),
                                   name="maxpool_conv"), name)


def _up(shape, skip_shape, out_channels, name):
    """Upsample ``shape`` (c channels) to c/2 channels at twice the size, pad to the skip's
    size, concatenate [skip, upsampled], DoubleConv(c, out_channels)."""
    x_in, skip = L.Input(shape), L.Input(skip_shape)
    c = shape[2]
    x = L.ConvTranspose2d(c, c // 2, 2, stride=2, name="up")(x_in)
    dy, dx = skip_shape[0] - x.shape[0], skip_shape[1] - x.shape[1]
    if dy or dx:
        x = L.ZeroPad2d((dx // 2, dx - dx // 2, dy // 2, dy - dy // 2), name="pad")(x)
    x = L.Concatenate(name="concat")([skip, x])
    x = _double_conv(x.shape, out_channels, "conv")(x)
    return Model([x_in, skip], x, name=name)


def unet(in_channels=3, num_classes=2, base=16, input_shape=(256, 256)):
    """The classic 4-level U-Net; 1.9 M parameters for base=16 (31 M for base=64).
    ``input_shape`` is (H, W) or (H, W, in_channels)."""
    inp = image_input(input_shape, "unet", channels=in_channels)
    if inp.shape[2] != in_channels:
        raise ValueError(f"unet: input_shape {tuple(input_shape)} has {inp.shape[2]} channels, "
                         f"in_channels is {in_channels}")
    if min(inp.shape[:2]) < 16:
        raise ValueError(f"unet: input_shape {inp.shape} is too small (4 poolings: at least "
                         f"16x16)")
    c = [base * 2 ** k for k in range(5)]
    skips = [_double_conv(inp.shape, c[0], "inc")(inp)]
    for k in range(1, 5):
        skips.append(_down(skips[-1].shape, c[k], f"down{k}")(skips[-1]))
    x = skips.pop()
    for k in range(1, 5):
        skip = skips.pop()
        x = _up(x.shape, skip.shape, c[4 - k], f"up{k}")([x, skip])
    out = _wrap(x.shape, L.Conv2d(c[0], num_classes, 1, name="conv"), "outc")(x)
    return Model(inp, out)
