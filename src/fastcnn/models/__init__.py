"""Ready-made architectures: the small classics (LeNet-5, ResNet-20) as Sequential models, and
torchvision's architectures as graph models with torchvision's state-dict keys."""
from .classic import lenet5, resnet20, small_cnn
from .efficientnet import efficientnet_b0
from .mobilenet import mobilenet_v2
from .resnet import resnet18, resnet34, resnet50
from .unet import unet
from .vgg import vgg11_bn, vgg16
