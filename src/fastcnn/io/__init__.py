"""Model files: fastcnn's own ``.fcnn`` format (see :mod:`fastcnn.io.fcnn`), and PyTorch
checkpoints and safetensors files read without PyTorch (:mod:`fastcnn.io.state_dict_files`)."""
from .fcnn import Checkpoint, load, load_training_state, read_checkpoint_info, save
from .state_dict_files import load_state_dict_file

__all__ = ["Checkpoint", "load", "load_state_dict_file", "load_training_state",
           "read_checkpoint_info", "save"]
