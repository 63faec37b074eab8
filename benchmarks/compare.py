"""fastcnn vs the numpy reference vs PyTorch, side by side: see fastcnn/benchmark.py."""
import sys

from fastcnn.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
