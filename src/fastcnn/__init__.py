"""fastcnn: train and run convolutional neural networks fast on the CPU."""
from cconv import get_isa, get_num_threads, set_isa, set_num_threads

from . import reference

__version__ = "0.1.0"


def info(measure_peak=False):
    """Version, ISA chosen and available, OpenMP runtime, threads, caches (and measured peak)."""
    from cconv import info as _info
    return _info(measure_peak)
