"""Model files: fastcnn's own ``.fcnn`` format (see :mod:`fastcnn.io.fcnn`)."""
from .fcnn import Checkpoint, load, load_training_state, read_checkpoint_info, save

__all__ = ["Checkpoint", "load", "load_training_state", "read_checkpoint_info", "save"]
