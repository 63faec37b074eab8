"""cconv: fastcnn's compiled op set.

NHWC float32 activations, PyTorch-order parameters, forward and backward of every op, C SIMD
micro-kernels (AVX-512, AVX2+FMA, scalar; NEON on ARM64) chosen at import, OpenMP threads.
Every function takes an optional ``n_threads`` (default: :func:`get_num_threads`).
"""
import os

# How long an OpenMP thread that has run out of work spins before it sleeps. Spinning without
# bound (OMP_WAIT_POLICY=ACTIVE, or libgomp's default of a few ms) stalls badly when the cores
# are shared with other busy processes (measured: 10-50x slower training epochs on a loaded
# 2-core machine). Sleeping at once (PASSIVE) makes every parallel region pay tens of
# microseconds to wake a thread: a training step runs 185 regions (ResNet-20) with Python
# between them. A bounded spin of about the gap between two ops (GOMP_SPINCOUNT=1000: 1000
# pause instructions, 25 us on the 2-core Zen 4, 3-50 us elsewhere) keeps the threads awake
# through a step and lets them sleep soon after. Measured on the 2-core machine, 2 threads,
# best steps of 4 processes each, spin vs sleep: LeNet-5 2.27-2.43 ms vs 2.60-2.72; ResNet-20
# 149-156 ms vs 155-171. Beside a second process training on the same 2 cores the step is
# 13-16% slower than with PASSIVE (ResNet-20 320 vs 282 ms, LeNet-5 4.3 vs 3.7); small ops stay
# on one thread either way (_runtime.min_parallel_work), so batch-1 inference beside a trainer
# keeps its speed (0.61 ms median vs 0.54). Set before the first extension module loads the
# runtime; any OMP_WAIT_POLICY or GOMP_SPINCOUNT of the user's wins (OMP_WAIT_POLICY=PASSIVE:
# sleep at once). (When another library started the OpenMP runtime first, this comes too late.)
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "1000"


def _keep_freed_memory():
    """glibc hands arrays above a (self-adjusting) threshold out as fresh mmap'd pages and
    returns them on free, so a training step, which allocates and frees the same activations
    every time, pays page faults on every one of them (measured: 15-20% of a ResNet-20 or
    LeNet-5 training step on the 2-core machine). Serving them from the heap and keeping freed
    memory for the next step removes that; the peak stays what the step needs. Skipped when
    the user tunes malloc through its own environment variables, or sets FASTCNN_KEEP_MEMORY=0."""
    import ctypes  # not ctypes.util: its find_library costs 20 ms of `import fastcnn`
    if os.environ.get("FASTCNN_KEEP_MEMORY", "1") == "0" or any(
            k.startswith("MALLOC_") for k in os.environ):
        return False
    try:
        libc = ctypes.CDLL(None)  # the symbols the process has loaded: the C library's among them
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # glibc only: the M_* numbers below are glibc's
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    return bool(mallopt(M_MMAP_THRESHOLD, 256 << 20)) and bool(mallopt(M_TRIM_THRESHOLD, 1 << 30))


_keep_freed_memory()

from ._runtime import (available_isas, get_isa, get_num_threads, measure_peak_gflops,
                       min_parallel_work, physical_cores, set_isa, set_num_threads)
from ._info import info
from ._validation import get_memory_limit, set_memory_limit

from ._conv import (Conv2dPlan, bias_backward, conv2d, conv2d_algorithm, conv2d_backward_data,
                    conv2d_backward_weight,
                    conv_transpose2d, conv_transpose2d_backward_data,
                    conv_transpose2d_backward_weight, linear, linear_backward_data,
                    linear_backward_weight)
from ._activation import (add, add_backward, add_relu_backward, dropout, dropout_backward,
                          gelu, gelu_backward, hardsigmoid, hardsigmoid_backward, hardswish,
                          hardswish_backward, leaky_relu, leaky_relu_backward,
                          mul_channel_gate, mul_channel_gate_backward, relu, relu6,
                          relu6_backward, relu_backward, sigmoid, sigmoid_backward, silu,
                          silu_backward, softmax, softmax_backward, tanh, tanh_backward)
from ._batchnorm import batch_norm_backward, batch_norm_forward_eval, batch_norm_forward_train
from ._loss import softmax_cross_entropy, softmax_cross_entropy_backward
from ._optim import adam_update, sgd_update
from ._pool import (avg_pool2d, avg_pool2d_backward, global_avg_pool2d,
                    global_avg_pool2d_backward, max_pool2d, max_pool2d_backward, sum_pool2d,
                    sum_pool2d_backward)
from ._upsample import (upsample_bilinear2d, upsample_bilinear2d_backward, upsample_nearest2d,
                        upsample_nearest2d_backward)

__version__ = "0.1.0"
