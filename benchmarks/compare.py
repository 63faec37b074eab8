"""fastcnn vs the numpy reference vs PyTorch, side by side: see fastcnn/benchmark.py."""
import sys

try:  # before fastcnn, so that PyTorch's OpenMP runtime (which fastcnn's extensions then share)
    import torch  # noqa: F401  keeps PyTorch's defaults; the whole-model figures of fastcnn are
except ImportError:  # taken in a process without PyTorch (fastcnn.benchmark.measure_fastcnn_times)
    pass

from fastcnn.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
