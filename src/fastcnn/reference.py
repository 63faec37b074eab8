"""Plain-numpy implementation of every op of the compiled op set, forward and backward.

Written for clarity, not speed: the oracle the tests compare against and the baseline the
benchmarks measure. Same conventions as ``cconv``: NHWC activations, PyTorch-order parameters.
Every function computes in the dtype it is given (pass float64 for a tight oracle).
"""
import numpy as np
