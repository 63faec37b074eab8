"""Ready-made architectures: the small classics (LeNet-5, ResNet-20) as Sequential models, and
torchvision's architectures as graph models with torchvision's state-dict keys."""
from .classic import lenet5, resnet20, small_cnn
