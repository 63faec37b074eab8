"""fastcnn vs the numpy reference vs PyTorch, side by side: see fastcnn/benchmark.py."""
import sys

try:  # before fastcnn, so that PyTorch's OpenMP runtime keeps its own defaults (fastcnn sets
    import torch  # noqa: F401  OMP_WAIT_POLICY=PASSIVE for its runtime when it is imported)
except ImportError:
    pass

from fastcnn.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
