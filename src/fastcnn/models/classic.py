"""The small classic architectures. Each returns a fresh ``Sequential`` (initialised from the generator
that :func:`fastcnn.manual_seed` seeds) whose layer indices match the PyTorch ``nn.Sequential``
written the same way, so PyTorch weights load with ``load_state_dict``."""
from ..graph import Sequential
from ..nn import (BatchNorm2d, Conv2d, Flatten, GlobalAvgPool2d, Linear, MaxPool2d, ReLU,
                  Residual)


def lenet5(num_classes=10):
    """LeNet-5 (LeCun et al. 1998) for 28x28x1 digits, in its common modern form.

    The 32x32 input of the original becomes 28x28 with padding 2 on the first convolution (the
    same 28x28x6 feature maps); ReLU replaces the scaled tanh, max pooling the trainable
    sub-sampling, the C3 layer is fully connected to S2 and the RBF output layer is a Linear
    layer of logits::

        Conv2d(1, 6, 5, padding=2) ReLU MaxPool2d(2)      28x28x6 -> 14x14x6
        Conv2d(6, 16, 5)           ReLU MaxPool2d(2)      10x10x16 -> 5x5x16
        Flatten Linear(400, 120) ReLU Linear(120, 84) ReLU Linear(84, num_classes)

    61,706 parameters for 10 classes.
    """
    return Sequential(
        Conv2d(1, 6, 5, padding=2), ReLU(), MaxPool2d(2),
        Conv2d(6, 16, 5), ReLU(), MaxPool2d(2),
        Flatten(),
        Linear(16 * 5 * 5, 120), ReLU(),
        Linear(120, 84), ReLU(),
        Linear(84, num_classes),
        input_shape=(28, 28, 1),
    )


def _basic_block(in_channels, out_channels, stride):
    body = Sequential(
        Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        BatchNorm2d(out_channels), ReLU(),
        Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        BatchNorm2d(out_channels),
    )
    shortcut = None
    if stride != 1 or in_channels != out_channels:
        shortcut = Sequential(Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                              BatchNorm2d(out_channels))
    return Residual(body, shortcut)


def resnet20(num_classes=10):
    """ResNet-20 for 32x32x3 images (He et al. 2016, section 4.2: CIFAR-10).

    A 3x3 convolution with 16 channels, then three stages of three basic blocks (16, 32 and 64
    channels; the first block of stages 2 and 3 halves the resolution with stride 2), global
    average pooling and a Linear classifier. Each block is
    ``Residual(body=Sequential(conv3x3, BN, ReLU, conv3x3, BN), shortcut)`` followed by a ReLU;
    where the shape changes, the shortcut is a 1x1 stride-2 convolution with batch norm (the
    paper's option B), else the identity. About 0.27 M parameters.
    """
    layers = [Conv2d(3, 16, 3, padding=1, bias=False), BatchNorm2d(16), ReLU()]
    in_channels = 16
    for out_channels, stride in ((16, 1), (32, 2), (64, 2)):
        for block in range(3):
            layers += [_basic_block(in_channels, out_channels, stride if block == 0 else 1), ReLU()]
            in_channels = out_channels
    layers += [GlobalAvgPool2d(), Flatten(), Linear(64, num_classes)]
    return Sequential(*layers, input_shape=(32, 32, 3))


def small_cnn(input_shape=(28, 28, 1), num_classes=10):
    """A small, fast CNN for digit tasks: 8x8 (scikit-learn's digits) or 28x28 (MNIST) images.

    Two 3x3 convolutions with 16 and 32 channels (padding 1), each followed by ReLU and a 2x2
    max pool, then Linear(flat, 64), ReLU, Linear(64, num_classes).
    """
    h, w, c = (int(v) for v in input_shape)
    flat = 32 * (h // 2 // 2) * (w // 2 // 2)
    if flat == 0:
        raise ValueError(f"small_cnn: input {input_shape} is too small (at least 4x4)")
    return Sequential(
        Conv2d(c, 16, 3, padding=1), ReLU(), MaxPool2d(2),
        Conv2d(16, 32, 3, padding=1), ReLU(), MaxPool2d(2),
        Flatten(), Linear(flat, 64), ReLU(), Linear(64, num_classes),
        input_shape=(h, w, c),
    )
