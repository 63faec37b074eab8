"""Direct convolution (implicit GEMM through indirection pointers), its transpose, and linear.

Layers of the implementation, BLIS style:
  micro-kernel  kernels/igemm/f32_igemm_*__ISA.c     registers only, chosen in kernels/igemm/igemm.h
  tiles         kernels/conv/f32_conv_direct__ISA.c  indirection pointers for one tile, loop over panels
  this module   argument checks, weight packing, OpenMP over independent tiles
Every output element is computed inside one tile with a fixed summation order, so results are
bitwise identical for any number of threads.
"""
import numpy as np

from cython.parallel cimport parallel, prange, threadid
from libc.math cimport INFINITY

from cconv._runtime cimport current_isa, data_ptr, resolve_threads, threads_for
from cconv._cache import empty_aligned, scratch
from cconv._depthwise import depthwise_backward_data, depthwise_backward_weight, depthwise_forward
from cconv._winograd import (winograd_backward_data, winograd_backward_weight, winograd_choose,
                             winograd_supported)
from cconv._winograd cimport (WinogradWeights, _padded_bias, _prepare, _run as _winograd_run,
                              _transform)
from cconv._validation import (as_float32, as_nhwc, check_finite, check_shape, check_workspace,
                               conv_output_size, conv_padding, conv_workspace_bytes,
                               get_memory_limit, pair)

from cconv._info import last_level_cache_bytes
from cconv._kernels cimport (FC_IGEMM_ACCUMULATE, FC_IGEMM_STREAM, cconv_ftz_enter,
                             cconv_ftz_restore, f32_igemm_config, f32_igemm_select)

cdef extern from "conv/conv_direct.h":
    struct cconv_conv_shape:
        size_t batch, in_h, in_w, in_c
        size_t out_h, out_w, out_c
        size_t kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w
        ptrdiff_t pad_top, pad_left
        size_t groups
    struct cconv_conv_phase:
        size_t ih0, iw0, rows, cols, n_taps, row_taps
        const size_t* tap_kh
        const size_t* tap_kw
    struct cconv_conv_direct_kernels:
        void (*forward_tiles)(const cconv_conv_shape*, const f32_igemm_config*, const float*,
                              const float*, const float*, float*, const float*, size_t, size_t,
                              float, float, int, const float**, float**, float*) noexcept nogil
        void (*backward_data_tiles)(const cconv_conv_shape*, const f32_igemm_config*,
                                    const cconv_conv_phase*, const float*, const float*, float*,
                                    const float*, size_t, size_t, int, const float**,
                                    float**, float*) noexcept nogil
        void (*backward_data_col2im)(const cconv_conv_shape*, const f32_igemm_config*,
                                     const float*, const float*, float*, size_t, float*,
                                     const float**, float**) noexcept nogil
        void (*backward_weight_part)(const cconv_conv_shape*, const f32_igemm_config*,
                                     const float*, const float*, float*, size_t, size_t, size_t,
                                     size_t, size_t, size_t, float*, float*, size_t*,
                                     const float**, float**) noexcept nogil
        void (*forward_planar)(const cconv_conv_shape*, size_t, const float*, const float*,
                               const float*, float*, size_t, size_t, size_t, float, float,
                               float*) noexcept nogil
        void (*backward_weight_planar)(const cconv_conv_shape*, const float*, const float*,
                                       double*, size_t, size_t, size_t, float*,
                                       float*) noexcept nogil
        void (*sum_rows)(size_t, size_t, const float*, size_t, size_t, float*) noexcept nogil
    enum:
        CCONV_PLANAR_MAX_TAPS
        CCONV_PLANAR_WG_CHANNELS
    cconv_conv_direct_kernels cconv_conv_direct_select(int isa) nogil
    size_t cconv_planar_width(const cconv_conv_shape* s) nogil
    size_t cconv_planar_plane_floats(const cconv_conv_shape* s, size_t block_rows) nogil
    size_t cconv_planar_grad_plane_floats(const cconv_conv_shape* s, size_t block_rows) nogil
    size_t cconv_planar_forward_channels(size_t out_c) nogil
    size_t cconv_weight_grad_slab_floats(const cconv_conv_shape* s, size_t slab_rows) nogil
    size_t cconv_weight_grad_image_floats(const cconv_conv_shape* s) nogil
    size_t cconv_weight_grad_slab_rows_in(const cconv_conv_shape* s, size_t slab_rows) nogil
    size_t cconv_weight_grad_phase_width(const cconv_conv_shape* s) nogil

# Backward-weight blocking; what sums into which dw depends on the shape only, never on the
# thread count: floats of one slab of transposed input rows (256 KiB, within L2), floats of the
# dy band that one micro-kernel call reads (64 KiB, within L2: a deeper kc outweighs L1), the most
# parts of the output rows (each summing into its own dw), the least work of a part (absolute and
# per float of its dw) and the partial sums held at once (16 MiB).
DEF WEIGHT_GRAD_SLAB_FLOATS = 65536
DEF WEIGHT_GRAD_BAND_FLOATS = 16384
DEF WEIGHT_GRAD_MAX_ITEMS = 16
DEF WEIGHT_GRAD_PART_MIN_FLOPS = 1e6
DEF WEIGHT_GRAD_PART_FLOPS_PER_FLOAT = 1024
DEF WEIGHT_GRAD_PARTIAL_FLOATS = 4194304
# A pointwise layer's weight gradient (1x1, stride 1, no padding, one group) is one GEMM over
# the pixels, dw (out_c, in_c) = dy^T x, with both operands read in place: A is dy read column
# by column (the MR rows of a register tile are adjacent floats of a pixel: one cache line), B
# is x's rows. The general path would first transpose all of x into slabs. Its pixels go in
# blocks whose dy and x take this many bytes (a quarter of a 1 MiB L2), each passed by every
# tile of dw while it stays in cache.
DEF POINTWISE_WEIGHT_GRAD_BLOCK_BYTES = 262144
# The direct forward writes outputs larger than a quarter of the last-level cache (shared with
# the inputs, the weights, the next op and the other cores) with streaming stores: such an
# output would leave the cache before the next op reads it, and streaming saves reading each
# line from memory before writing it (pointwise 64 -> 128 on 32 x 28 x 28: 1.3-1.4x).
STREAM_OUTPUT_MIN_BYTES = last_level_cache_bytes() // 4
# Backward-data switches from the stride-phase GEMM (SIMD across input channels) to col2im (SIMD
# across taps x input channels) below this many input channels per group.
DEF COL2IM_MAX_CHANNELS = 8
# Forward and backward-data cut the pixel tiles into this many runs of consecutive tiles per
# thread, handed out as threads come free (schedule="dynamic"), so that a thread the OS or a
# neighbour slows down leaves less behind. Each run writes its own outputs: the result does not
# depend on which thread ran it. The weight gradient's items go out the same way.
DEF TILE_RUNS_PER_THREAD = 4
# First layers (up to this many input channels, one group, stride 1) run the planar kernels in
# the forward and weight-gradient passes: SIMD lanes over output pixels, where the implicit GEMM
# would fill them with a few output channels. A block of output rows holds about this many
# (virtual) pixels: the forward's a few dozen register tiles, the weight gradient's more (each
# block ends in horizontal sums); the weight gradient's blocks go to a fixed number of items.
DEF PLANAR_MAX_IN_CHANNELS = 3
# ... and up to this many output channels: the planar kernels move every output (and, for the
# weight gradient, every dy) element through a transpose, which costs more than the lanes it
# fills once the output channels fill a vector. The forward's transposes are 8 x 8 blocks (a
# fraction of a cycle per element): 3 -> 16 channels, 3x3 runs planar. The weight gradient's
# are a cycle per element: at 3 -> 16 channels the implicit GEMM is 2.2x faster.
DEF PLANAR_FORWARD_MAX_OUT_CHANNELS = 16
DEF PLANAR_WEIGHT_GRAD_MAX_OUT_CHANNELS = 8
DEF PLANAR_FORWARD_BLOCK_PIXELS = 512
DEF PLANAR_WEIGHT_GRAD_BLOCK_PIXELS = 2048
DEF PLANAR_WEIGHT_GRAD_ITEMS = 16
# Activations fused into a convolution's store are clamps (NaN kept): [cmin, cmax].
_ACTIVATIONS = {None: (-INFINITY, INFINITY), "relu": (0.0, INFINITY), "relu6": (0.0, 6.0)}

# The zero row that stands in for padding, shared by every call (kernels only read it); the
# buffers it outgrew are kept, since a call on another thread may still read one.
cdef const float[::1] _zero_row = np.zeros(4096, np.float32)
_outgrown_zero_rows = []


cdef const float* zeros_at_least(size_t n) except NULL:
    global _zero_row
    if <size_t>_zero_row.shape[0] < n:
        _outgrown_zero_rows.append(_zero_row)
        _zero_row = np.zeros(n, np.float32)
    return &_zero_row[0]
_FLOAT32 = np.dtype(np.float32)


# ----------------------------------------------------------------------------- argument handling

cdef class _Conv:
    """Validated geometry of one convolution y = conv(x, w) (x: its input, y: its output)."""
    cdef cconv_conv_shape s
    cdef readonly tuple in_shape, out_shape, kernel
    cdef readonly Py_ssize_t groups


def _geometry(op, x_shape, w_shape, stride, padding, dilation, groups):
    """Check a convolution's arguments and return its _Conv (shapes in the forward direction)."""
    if len(w_shape) != 4:
        raise ValueError(f"{op}: weight must be (out_channels, in_channels/groups, kh, kw), "
                         f"got shape {tuple(w_shape)}")
    if groups < 1 or x_shape[3] % groups or w_shape[0] % groups:
        raise ValueError(f"{op}: groups={groups} must divide in_channels ({x_shape[3]}) and "
                         f"out_channels ({w_shape[0]})")
    if w_shape[1] * groups != x_shape[3]:
        raise ValueError(f"{op}: input has {x_shape[3]} channels but weight {tuple(w_shape)} with "
                         f"groups={groups} expects {w_shape[1] * groups} (input shape {tuple(x_shape)})")
    if 0 in w_shape:
        raise ValueError(f"{op}: weight has an empty dimension, shape {tuple(w_shape)}")
    kernel = (int(w_shape[2]), int(w_shape[3]))
    stride = pair(op, "stride", stride, minimum=1)
    dilation = pair(op, "dilation", dilation, minimum=1)
    pads = conv_padding(op, padding, kernel, stride, dilation, x_shape[1:3])
    out_hw = conv_output_size(op, x_shape[1:3], kernel, stride, pads, dilation, x_shape)
    g = _Conv()
    g.s.batch, g.s.in_h, g.s.in_w, g.s.in_c = x_shape
    g.s.out_h, g.s.out_w, g.s.out_c = out_hw[0], out_hw[1], w_shape[0]
    g.s.kernel_h, g.s.kernel_w = kernel
    g.s.stride_h, g.s.stride_w = stride
    g.s.dilation_h, g.s.dilation_w = dilation
    g.s.pad_top, g.s.pad_left = pads[0][0], pads[1][0]
    g.s.groups = groups
    g.in_shape = tuple(map(int, x_shape))
    g.out_shape = (int(x_shape[0]), out_hw[0], out_hw[1], int(w_shape[0]))
    g.kernel = kernel
    g.groups = groups
    return g


def _pack_panels(a, size_t nr):
    """(groups, taps, k, n) -> (groups, n_panels, taps, k, nr): NR-wide panels, zero-padded."""
    groups, taps, k, n = a.shape
    panels = -(-n // nr)
    out = np.zeros((groups, taps, k, panels * nr), np.float32)
    out[..., :n] = a
    return np.ascontiguousarray(out.reshape(groups, taps, k, panels, nr).transpose(0, 3, 1, 2, 4))


_ALGOS = ("auto", "direct", "winograd")
# The Winograd weight gradient's GEMMs run SIMD across output channels and rows across input
# channels: with fewer input channels than a register tile has rows, the direct one is faster
# (measured on Zen 4: 3 input channels 0.8x of direct, 8 and more 1.6-3x).
DEF WINOGRAD_WEIGHT_GRAD_MIN_IN_CHANNELS = 8
# It also sums 36 transformed products per (input, output) channel pair over the tiles: deep
# layers on small images have too few tiles for what the transforms and that large transformed
# dw cost. Winograd's weight gradient runs from one tile per WINOGRAD_WEIGHT_GRAD_PAIRS_PER_TILE
# channel pairs on (measured on Zen 4, 2 threads, batch 16, tiles : pairs, direct vs Winograd:
# 512 channels on 4x4 images 1 : 16384, 20.6 vs 35.1 ms; 256 on 7x7 1 : 1024, 7.0 vs 8.8;
# 128 on 14x14 1 : 64, 5.7 vs 4.3; ResNet-20's 64 on 8x8 at batch 64, 1 : 16, Winograd 1.8x).
DEF WINOGRAD_WEIGHT_GRAD_PAIRS_PER_TILE = 256
# The same holds for the forward pass of first layers: with 1-3 input channels the input
# transform costs more than the multiplications it saves (measured on Zen 4, 3 -> 16 channels,
# 32x32: direct 1.0-1.4x faster at batch 64, 1.25x at batch 1; 4 channels: even; 8: Winograd
# 1.2x faster).
DEF WINOGRAD_FORWARD_MIN_IN_CHANNELS = 4


cdef size_t _winograd_tiles(_Conv g, int tile):
    """How many output tiles of tile x tile pixels the batch has (0: no Winograd tile)."""
    if tile == 0:
        return 0
    return g.s.batch * ((g.s.out_h + tile - 1) // tile) * ((g.s.out_w + tile - 1) // tile)


def _algorithm(op, _Conv g, algo, backward_data=False, backward_weight=False):
    """(name, winograd tile) that runs this convolution's forward, backward-data or
    backward-weight pass.

    'auto': depthwise layers run the depthwise kernels; 3x3 stride-1 single-group layers run
    Winograd with the tile winograd_choose measured best for the pass's output size (F(4x4) on
    all but tiny images; the weight gradient takes the forward pass's, and only from
    WINOGRAD_WEIGHT_GRAD_MIN_IN_CHANNELS input channels and with enough tiles for its channel
    pairs (WINOGRAD_WEIGHT_GRAD_PAIRS_PER_TILE); the forward pass only from
    WINOGRAD_FORWARD_MIN_IN_CHANNELS on), everything else the direct implicit GEMM. 'winograd' forces Winograd (F(4x4) unless the output is too small for it),
    'direct' the implicit GEMM.
    """
    if algo not in _ALGOS:
        raise ValueError(f"{op}: algo must be one of {', '.join(map(repr, _ALGOS))}, got {algo!r}")
    if _is_depthwise(g) and algo != "winograd":
        return "depthwise", 0
    if algo == "direct":
        return "direct", 0
    w_shape = (g.s.in_c, g.s.out_c) if backward_data else (g.s.out_c, g.s.in_c // g.s.groups)
    w_shape += g.kernel
    stride, dilation = (g.s.stride_h, g.s.stride_w), (g.s.dilation_h, g.s.dilation_w)
    out_h, out_w = (g.s.in_h, g.s.in_w) if backward_data else (g.s.out_h, g.s.out_w)
    if algo == "winograd":
        if not winograd_supported(w_shape, stride, dilation, g.s.groups):
            raise ValueError(f"{op}: algo='winograd' needs a 3x3 kernel, stride 1, dilation 1 and "
                             f"one group; got kernel {g.kernel}, stride {stride}, dilation "
                             f"{dilation}, groups {g.s.groups}")
        tile = winograd_choose(w_shape, out_h, out_w, stride, dilation, g.s.groups, g.s.batch)
        return "winograd", tile or 2
    tile = winograd_choose(w_shape, out_h, out_w, stride, dilation, g.s.groups, g.s.batch)
    if backward_weight and (g.s.in_c < WINOGRAD_WEIGHT_GRAD_MIN_IN_CHANNELS or
                            _winograd_tiles(g, tile) * WINOGRAD_WEIGHT_GRAD_PAIRS_PER_TILE
                            < g.s.in_c * g.s.out_c):
        tile = 0
    if not (backward_data or backward_weight) and g.s.in_c < WINOGRAD_FORWARD_MIN_IN_CHANNELS:
        tile = 0
    return ("winograd", tile) if tile else ("direct", 0)


cdef enum Pass:
    FORWARD, BACKWARD_DATA, BACKWARD_WEIGHT


cdef str _direct_path(_Conv g, Pass which):
    """The kernels the direct algorithm runs for a pass of this shape, chosen here only:
      forward          'planar' (first layers: few channels, stride 1; SIMD over pixels) or
                       'igemm' (implicit GEMM through indirection pointers, SIMD over channels);
      backward_data    'col2im' (few input channels per group: one GEMM, then each column added
                       to its pixel) or 'igemm' (one implicit GEMM per stride phase);
      backward_weight  'planar', 'pointwise-gemm' (1x1 stride 1: one GEMM over the pixels, x
                       read in place) or 'im2col-gemm' (transposed input slabs times dy)."""
    if which == FORWARD:
        return "planar" if _is_planar(g, PLANAR_FORWARD_MAX_OUT_CHANNELS) else "igemm"
    if which == BACKWARD_DATA:
        return "col2im" if g.s.in_c // g.s.groups < COL2IM_MAX_CHANNELS else "igemm"
    if _is_planar(g, PLANAR_WEIGHT_GRAD_MAX_OUT_CHANNELS):
        return "planar"
    if _is_pointwise_gemm(g, f32_igemm_select(current_isa(), g.s.in_c).nr):
        return "pointwise-gemm"
    return "im2col-gemm"


def conv2d_algorithm(input_shape, weight_shape, stride=1, padding=0, dilation=1, groups=1,
                     algo="auto", backward_data=False, backward_weight=False):
    """The kernels conv2d (or, with ``backward_data``, conv2d_backward_data, with
    ``backward_weight``, conv2d_backward_weight) runs for these shapes, on the current ISA:
    'depthwise', 'winograd-f4', 'winograd-f2', or the direct algorithm's path for the pass:
    'direct-planar', 'direct-igemm', 'direct-col2im', 'direct-pointwise-gemm' or
    'direct-im2col-gemm' (see _direct_path)."""
    op = "conv2d_algorithm"
    if backward_data and backward_weight:
        raise ValueError(f"{op}: backward_data and backward_weight exclude each other")
    g = _geometry(op, tuple(int(v) for v in input_shape), tuple(int(v) for v in weight_shape),
                  stride, padding, dilation, groups)
    name, tile = _algorithm(op, g, algo, backward_data, backward_weight)
    if name == "winograd":
        return f"winograd-f{tile}"
    if name == "direct":
        return "direct-" + _direct_path(g, BACKWARD_DATA if backward_data else
                                        BACKWARD_WEIGHT if backward_weight else FORWARD)
    return name


# ----------------------------------------------------------------------------- the three passes

cdef bint _is_depthwise(_Conv g):
    """One filter per channel: the dedicated depthwise kernels (SIMD across channels) run it."""
    return g.s.groups == g.s.in_c == g.s.out_c and g.s.groups > 1


cdef bint _is_planar(_Conv g, size_t max_out_channels):
    """A first layer that the planar kernels run (forward: up to PLANAR_FORWARD_MAX_OUT_CHANNELS
    output channels; weight gradient: up to PLANAR_WEIGHT_GRAD_MAX_OUT_CHANNELS)."""
    return (g.s.groups == 1 and g.s.in_c <= PLANAR_MAX_IN_CHANNELS
            and g.s.out_c <= max_out_channels and g.s.stride_h == 1
            and g.s.stride_w == 1
            and g.s.in_c * g.s.kernel_h * g.s.kernel_w <= CCONV_PLANAR_MAX_TAPS)


cdef size_t _planar_block_rows(_Conv g, size_t pixels, size_t min_blocks):
    """Output rows per planar block: about ``pixels`` virtual pixels, and rows cut evenly
    into at least ``min_blocks`` blocks over the batch where the image has rows for them."""
    cdef size_t out_h = g.s.out_h
    cdef size_t rows = max(1, min(out_h, pixels // cconv_planar_width(&g.s)))
    cdef size_t per_image = (out_h + rows - 1) // rows
    if g.s.batch * per_image < min_blocks:
        per_image = min(out_h, (min_blocks + g.s.batch - 1) // g.s.batch)
    rows = (out_h + per_image - 1) // per_image
    return rows


def _pack_forward(_Conv g, name, int tile, w, b, int isa, int n_threads, bint keep):
    """The weights and bias of a forward pass of algorithm ``name`` in the layout its kernels
    read, for ISA ``isa``: what a Conv2dPlan keeps (``keep``) between calls. Winograd weights
    for one call only are transformed inside the call's own parallel region instead."""
    cdef size_t groups = g.s.groups, taps = g.s.kernel_h * g.s.kernel_w
    cdef size_t cin_g = g.s.in_c // groups, cout_g = g.s.out_c // groups
    cdef f32_igemm_config cfg
    cdef WinogradWeights u
    if name == "depthwise":
        return w, b
    if name == "winograd":
        u = _transform(w, tile, False, isa, n_threads) if keep else _prepare(w, tile, False, isa)
        return u, _padded_bias(b, u.n, u.nr)
    if _direct_path(g, FORWARD) == "planar":
        # [channel block][tap][cb], taps in PyTorch's order; bias padded with zeros
        cb = cconv_planar_forward_channels(g.s.out_c)
        blocks = (g.s.out_c + cb - 1) // cb
        packed = np.zeros((blocks * cb, cin_g * taps), np.float32)
        packed[:g.s.out_c] = w.reshape(g.s.out_c, -1)
        pb = np.zeros(blocks * cb, np.float32)
        if b is not None:
            pb[:g.s.out_c] = b
        return np.ascontiguousarray(packed.reshape(blocks, cb, -1).transpose(0, 2, 1)).reshape(-1), pb
    cfg = f32_igemm_select(isa, cout_g)
    packed = _pack_panels(w.reshape(groups, cout_g, cin_g, taps).transpose(0, 3, 2, 1), cfg.nr)
    pb = None if b is None else _pack_panels(b.reshape(groups, 1, 1, cout_g), cfg.nr).reshape(-1)
    return packed.reshape(-1), pb


cdef _forward_packed(_Conv g, name, x, pw, pb, float cmin, float cmax, int n_threads):
    """y = conv(x) with the weights and bias _pack_forward made for algorithm ``name`` and
    the current ISA."""
    if name == "direct":
        return _forward_direct(g, x, pw, pb, cmin, cmax, n_threads)
    if name == "winograd":
        return _winograd_run(x, pw, pb, g.s.pad_top, g.s.pad_left, g.s.out_h, g.s.out_w,
                             cmin, cmax, n_threads)
    return depthwise_forward(x, pw, pb, (g.s.stride_h, g.s.stride_w),
                             (g.s.dilation_h, g.s.dilation_w), g.s.pad_top, g.s.pad_left,
                             g.s.out_h, g.s.out_w, cmin, cmax, n_threads)


cdef _forward_planar(_Conv g, x, pw_, pb_, float cmin, float cmax, int n_threads):
    """The planar first-layer forward with the weights and bias _pack_forward made for it."""
    cdef cconv_conv_direct_kernels kern = cconv_conv_direct_select(current_isa())
    cdef size_t cb = cconv_planar_forward_channels(g.s.out_c)
    cdef size_t block_rows = _planar_block_rows(g, PLANAR_FORWARD_BLOCK_PIXELS,
                                                2 * <size_t>n_threads)
    cdef size_t blocks = g.s.batch * ((g.s.out_h + block_rows - 1) // block_rows)
    cdef size_t stage_floats = g.s.in_c * cconv_planar_plane_floats(&g.s, block_rows)
    cdef float[::1] stage = scratch("conv.planar_stage", n_threads * stage_floats)
    cdef const float[::1] pw = pw_
    cdef const float[::1] pb = pb_
    y = np.empty(g.out_shape, np.float32)
    cdef float[::1] yv = y.reshape(-1)
    cdef const float[::1] xv = x.reshape(-1)
    cdef Py_ssize_t runs = min(blocks, <size_t>n_threads * TILE_RUNS_PER_THREAD), run
    cdef int tid
    cdef unsigned ftz
    with nogil, parallel(num_threads=n_threads):
        tid = threadid()
        ftz = cconv_ftz_enter()
        for run in prange(runs, schedule="dynamic"):
            kern.forward_planar(&g.s, cb, &xv[0], &pw[0], &pb[0], &yv[0], block_rows,
                                run * blocks // runs, (run + 1) * blocks // runs, cmin, cmax,
                                &stage[tid * stage_floats])
        cconv_ftz_restore(ftz)
    return y


cdef _forward_direct(_Conv g, x, pw_, pb_, float cmin, float cmax, int n_threads):
    """The implicit GEMM with weights (and bias) packed in NR-wide panels (_pack_forward)."""
    if _direct_path(g, FORWARD) == "planar":
        return _forward_planar(g, x, pw_, pb_, cmin, cmax, n_threads)
    cdef size_t groups = g.s.groups, taps = g.s.kernel_h * g.s.kernel_w
    cdef size_t cin_g = g.s.in_c // groups, cout_g = g.s.out_c // groups
    cdef f32_igemm_config cfg = f32_igemm_select(current_isa(), cout_g)
    cdef cconv_conv_direct_kernels tiles_fn = cconv_conv_direct_select(current_isa())
    cdef const float* pw = <const float*>data_ptr(pw_)
    cdef const float* bias_ptr = NULL
    if pb_ is not None:
        bias_ptr = <const float*>data_ptr(pb_)
    cdef size_t pixels = g.s.batch * g.s.out_h * g.s.out_w
    # An output too big to stay in cache for the next op is written with streaming stores
    # (no read of each line before it is written), into cache-line aligned rows.
    cdef int store_flags = 0
    if 4 * pixels * g.s.out_c > STREAM_OUTPUT_MIN_BYTES:
        store_flags = FC_IGEMM_STREAM
        y = empty_aligned(g.out_shape)
    else:
        y = np.empty(g.out_shape, np.float32)
    cdef float* yp = <float*>data_ptr(y)
    cdef const float* xp = <const float*>data_ptr(x)
    cdef const float* zero = zeros_at_least(g.s.kernel_w * cin_g)
    cdef size_t tiles = (pixels + cfg.mr - 1) // cfg.mr
    # A few runs of consecutive tiles per thread: each call steps from tile to tile without
    # working out its position again.
    cdef Py_ssize_t runs = min(tiles, <size_t>n_threads * TILE_RUNS_PER_THREAD), run
    # One scratch buffer: each thread's A pointers (taps x MR) followed by its C pointers (MR),
    # then each thread's edge rows.
    cdef size_t thread_pointers = (taps + 1) * cfg.mr
    cdef size_t edge_floats = cfg.mr * taps * cin_g
    work = scratch("conv.forward", n_threads * (thread_pointers * sizeof(size_t) // sizeof(float)
                                                + edge_floats))
    cdef size_t* pointers = <size_t*>data_ptr(work)
    cdef float* edge_scratch = <float*>(pointers + n_threads * thread_pointers)
    cdef int tid
    cdef unsigned ftz
    with nogil, parallel(num_threads=n_threads):
        tid = threadid()
        ftz = cconv_ftz_enter()
        for run in prange(runs, schedule="dynamic"):
            tiles_fn.forward_tiles(&g.s, &cfg, xp, pw, bias_ptr, yp, zero,
                                   run * tiles // runs, (run + 1) * tiles // runs, cmin, cmax,
                                   store_flags,
                                   <const float**>&pointers[tid * thread_pointers],
                                   <float**>&pointers[tid * thread_pointers + taps * cfg.mr],
                                   &edge_scratch[tid * edge_floats])
        cconv_ftz_restore(ftz)
    return y


cdef _backward_data(_Conv g, dy, w, int n_threads):
    if _is_depthwise(g):
        return depthwise_backward_data(dy, w, g.in_shape, (g.s.stride_h, g.s.stride_w),
                                       (g.s.dilation_h, g.s.dilation_w), g.s.pad_top,
                                       g.s.pad_left, n_threads)
    cdef size_t groups = g.s.groups
    cdef size_t cin_g = g.s.in_c // groups, cout_g = g.s.out_c // groups
    if _direct_path(g, BACKWARD_DATA) == "col2im":
        return _backward_data_col2im(g, dy, w, n_threads)
    cdef f32_igemm_config cfg = f32_igemm_select(current_isa(), cin_g)
    cdef cconv_conv_direct_kernels tiles_fn = cconv_conv_direct_select(current_isa())
    w5 = w.reshape(groups, cout_g, cin_g, g.s.kernel_h, g.s.kernel_w)
    # Input pixel ih receives tap k iff ih + pad - k*dilation is a multiple of the stride: split
    # the input pixels into stride_h x stride_w phases, each a dense convolution over its taps
    # (no scatter, no atomics, no multiplications by the zeros a strided dilation would insert).
    # (Python ints: C's unsigned arithmetic would wrap the negative numerators.)
    sh, sw, dh, dw = int(g.s.stride_h), int(g.s.stride_w), int(g.s.dilation_h), int(g.s.dilation_w)
    pad_top, pad_left = int(g.s.pad_top), int(g.s.pad_left)
    phase_taps_h = [[k for k in range(int(g.s.kernel_h)) if (ih0 + pad_top - k * dh) % sh == 0]
                    for ih0 in range(min(sh, int(g.s.in_h)))]
    phase_taps_w = [[k for k in range(int(g.s.kernel_w)) if (iw0 + pad_left - k * dw) % sw == 0]
                    for iw0 in range(min(sw, int(g.s.in_w)))]
    # Every pixel is written once by its phase; pixels of phases no tap reaches stay zero. A dx
    # too big to stay in cache is streamed, as the forward's output.
    cdef int store_flags = 0
    if all(phase_taps_h) and all(phase_taps_w):
        if 4 * g.s.batch * g.s.in_h * g.s.in_w * g.s.in_c > STREAM_OUTPUT_MIN_BYTES:
            store_flags = FC_IGEMM_STREAM
            dx = empty_aligned(g.in_shape)
        else:
            dx = np.empty(g.in_shape, np.float32)
    else:
        dx = np.zeros(g.in_shape, np.float32)
    cdef float[::1] dxv = dx.reshape(-1)
    cdef const float[::1] dyv = dy.reshape(-1)
    cdef const float* zero = zeros_at_least(g.s.kernel_w * cout_g)
    # One pointer per kernel row of a phase when its taps read consecutive dy pixels.
    cdef bint merged = groups == 1 and g.s.dilation_w == 1
    cdef size_t edge_floats = cfg.mr * g.s.kernel_h * g.s.kernel_w * cout_g
    cdef float[::1] edge_scratch = scratch("conv.edge_rows", n_threads * edge_floats)
    cdef size_t[::1] kh_list, kw_list
    cdef const float[::1] pw
    cdef cconv_conv_phase phase
    cdef size_t[::1] a_scratch, c_scratch
    cdef Py_ssize_t tiles, runs, run
    cdef int tid
    cdef unsigned ftz
    for ih0, taps_h in enumerate(phase_taps_h):
        for iw0, taps_w in enumerate(phase_taps_w):
            taps_w = list(taps_w)
            if not taps_h or not taps_w:
                continue  # no tap reaches these pixels: their gradient stays zero
            if merged:
                taps_w.reverse()  # descending kw: ascending dy columns
            kh_list = np.repeat(np.array(taps_h, np.uintp), len(taps_w))
            kw_list = np.tile(np.array(taps_w, np.uintp), len(taps_h))
            wt = w5[:, :, :, np.asarray(kh_list), np.asarray(kw_list)]  # (g, cout_g, cin_g, T)
            pw = _pack_panels(wt.transpose(0, 3, 1, 2), cfg.nr).reshape(-1)
            phase.ih0, phase.iw0 = ih0, iw0
            phase.rows = (g.s.in_h - ih0 + g.s.stride_h - 1) // g.s.stride_h
            phase.cols = (g.s.in_w - iw0 + g.s.stride_w - 1) // g.s.stride_w
            phase.n_taps = kh_list.shape[0]
            phase.row_taps = len(taps_w) if merged else 0
            phase.tap_kh, phase.tap_kw = &kh_list[0], &kw_list[0]
            tiles = (g.s.batch * phase.rows * phase.cols + cfg.mr - 1) // cfg.mr
            runs = min(tiles, n_threads * TILE_RUNS_PER_THREAD)
            a_scratch = scratch("conv.a_rows", n_threads * phase.n_taps * cfg.mr, np.uintp)
            c_scratch = scratch("conv.c_rows", n_threads * cfg.mr, np.uintp)
            with nogil, parallel(num_threads=n_threads):
                tid = threadid()
                ftz = cconv_ftz_enter()
                for run in prange(runs, schedule="dynamic"):
                    tiles_fn.backward_data_tiles(
                        &g.s, &cfg, &phase, &dyv[0], &pw[0], &dxv[0], zero,
                        run * tiles // runs, (run + 1) * tiles // runs, store_flags,
                        <const float**>&a_scratch[tid * phase.n_taps * cfg.mr],
                        <float**>&c_scratch[tid * cfg.mr], &edge_scratch[tid * edge_floats])
                cconv_ftz_restore(ftz)
    return dx


cdef _backward_data_col2im(_Conv g, dy, w, int n_threads):
    cdef size_t groups = g.s.groups, taps = g.s.kernel_h * g.s.kernel_w
    cdef size_t cin_g = g.s.in_c // groups, cout_g = g.s.out_c // groups
    cdef size_t K = taps * cin_g
    cdef f32_igemm_config cfg = f32_igemm_select(current_isa(), K)
    cdef cconv_conv_direct_kernels tiles_fn = cconv_conv_direct_select(current_isa())
    wt = w.reshape(groups, cout_g, cin_g, taps).transpose(0, 1, 3, 2).reshape(groups, 1, cout_g, K)
    cdef const float[::1] pw = _pack_panels(wt, cfg.nr).reshape(-1)
    dx = np.zeros(g.in_shape, np.float32)
    cdef float[::1] dxv = dx.reshape(-1)
    cdef const float[::1] dyv = dy.reshape(-1)
    cdef size_t width = (K + cfg.nr - 1) // cfg.nr * cfg.nr
    cdef float[::1] dcol = scratch("col2im.dcol", n_threads * cfg.mr * width)
    cdef size_t[::1] a_scratch = scratch("conv.a_rows", n_threads * cfg.mr, np.uintp)
    cdef size_t[::1] c_scratch = scratch("conv.c_rows", n_threads * cfg.mr, np.uintp)
    cdef Py_ssize_t tiles = g.s.batch * groups, tile
    cdef int tid
    cdef unsigned ftz
    with nogil, parallel(num_threads=n_threads):
        tid = threadid()
        ftz = cconv_ftz_enter()
        for tile in prange(tiles, schedule="static"):
            tiles_fn.backward_data_col2im(&g.s, &cfg, &dyv[0], &pw[0], &dxv[0], tile,
                                           &dcol[tid * cfg.mr * width],
                                           <const float**>&a_scratch[tid * cfg.mr],
                                           <float**>&c_scratch[tid * cfg.mr])
        cconv_ftz_restore(ftz)
    return dx


cdef class _WeightGradPlan:
    """How backward_weight_part's work is cut for one shape: the shape it runs on (a pointwise
    convolution is seen as one image whose rows are long runs of pixels), the micro-kernel, the
    items (parts of the output rows x blocks of K's rows), slab and band heights, and the bytes
    all of it needs."""
    cdef cconv_conv_shape s
    cdef f32_igemm_config cfg
    cdef size_t K, n_parts, n_kblocks, slab_rows, band_rows, slab_floats, band_floats
    cdef object workspace_bytes

    def __init__(self, _Conv g, int n_threads):
        self.s = g.s
        cdef cconv_conv_shape* s = &self.s
        cdef size_t pixels = s.batch * s.out_h * s.out_w, cols = 1, d
        if (s.kernel_h == 1 and s.kernel_w == 1 and s.stride_h == 1 and s.stride_w == 1
                and s.pad_top == 0 and s.pad_left == 0):
            # Pixels are independent: make rows of up to 128 of them (the micro-kernel's kc).
            for d in range(1, min(pixels, 128) + 1):
                if pixels % d == 0:
                    cols = d
            if cols < 16 and s.out_w > cols:
                cols = s.out_w
            s.batch, s.in_h, s.out_h = 1, pixels // cols, pixels // cols
            s.in_w = s.out_w = cols
        cdef size_t cin_g = s.in_c // s.groups, cout_g = s.out_c // s.groups
        self.K = s.kernel_h * s.kernel_w * cin_g
        self.cfg = f32_igemm_select(current_isa(), cout_g)
        cdef size_t rows = s.batch * s.out_h, part_floats = s.out_c * self.K
        cdef size_t m_tiles = (self.K + self.cfg.mr - 1) // self.cfg.mr
        # Parts of the rows, each summing into its own dw^T: a power of two, at most 16. Each
        # part writes its dw^T out and reads it back for the final sum, memory traffic that is
        # only worth it with WEIGHT_GRAD_PART_FLOPS_PER_FLOAT FLOPs of work per float of dw^T.
        # The shape alone sets it, so the result does not depend on the thread count.
        self.n_parts = _weight_grad_parts(2.0 * rows * s.out_w * part_floats, rows,
                                          part_floats)
        # Blocks of K only where there are fewer parts than threads: each block transposes the
        # whole slab again. A row of dw^T is computed the same way in any block.
        self.n_kblocks = max(1, min(m_tiles, (n_threads + self.n_parts - 1) // self.n_parts))
        self.band_rows = max(1, WEIGHT_GRAD_BAND_FLOATS // (s.out_w * self.cfg.nr))
        cdef size_t row_floats = s.in_c * s.stride_w * cconv_weight_grad_phase_width(s)
        cdef size_t rows_in = max(1, WEIGHT_GRAD_SLAB_FLOATS // row_floats)
        cdef size_t halo = (s.kernel_h - 1) * s.dilation_h + 1
        self.slab_rows = (rows_in - halo) // s.stride_h + 1 if rows_in > halo else 1
        self.slab_rows = min(self.slab_rows, s.out_h, (rows + self.n_parts - 1) // self.n_parts)
        # Small images: a slab and its one band of whole images, as many as the band, the slab
        # and a part hold, so that the micro-kernel runs deep (kc * ks) per call.
        cdef size_t images = min(self.band_rows // s.out_h, rows // self.n_parts // s.out_h,
                                 WEIGHT_GRAD_SLAB_FLOATS
                                 // (s.in_c * cconv_weight_grad_image_floats(s)))
        if images >= 2:
            self.slab_rows = self.band_rows = images * s.out_h
        elif self.slab_rows >= self.band_rows:
            self.slab_rows -= self.slab_rows % self.band_rows
        else:
            self.band_rows = self.slab_rows
        self.slab_floats = cconv_weight_grad_slab_floats(s, self.slab_rows)
        self.band_floats = self.band_rows * s.out_w * self.cfg.nr
        per_thread = (4 * (self.slab_floats + self.band_floats) + 8 * (self.K + self.band_rows)
                      + 8 * self.cfg.mr * (self.band_rows + 1))
        partial_sums = 4 * part_floats * (self.n_parts + (2 if self.n_parts > 1 else 1))
        self.workspace_bytes = partial_sums + n_threads * per_thread + 4096


cdef size_t _weight_grad_parts(double flops, size_t rows, size_t part_floats):
    """Parts of the rows, each summing into its own dw^T: a power of two, at most
    WEIGHT_GRAD_MAX_ITEMS. Each part writes its dw^T out and reads it back for the final sum,
    memory traffic that is only worth it with WEIGHT_GRAD_PART_FLOPS_PER_FLOAT FLOPs of work
    per float of dw^T. The shape alone sets it, so the result does not depend on the thread
    count."""
    cdef double part_min = max(WEIGHT_GRAD_PART_MIN_FLOPS,
                               WEIGHT_GRAD_PART_FLOPS_PER_FLOAT * part_floats)
    cdef size_t n_parts = 1
    while (2 * n_parts <= min(WEIGHT_GRAD_MAX_ITEMS, rows,
                              WEIGHT_GRAD_PARTIAL_FLOATS // part_floats)
           and flops / (2 * n_parts) >= part_min):
        n_parts *= 2
    return n_parts


cdef bint _is_pointwise_gemm(_Conv g, size_t nr):
    """A 1x1 layer whose weight gradient is one GEMM over the pixels with x's rows read in
    place as whole NR-wide panels (in_c a multiple of NR: no panel reads past a row)."""
    return (g.s.kernel_h == 1 and g.s.kernel_w == 1 and g.s.stride_h == 1 and g.s.stride_w == 1
            and g.s.pad_top == 0 and g.s.pad_left == 0 and g.s.out_h == g.s.in_h
            and g.s.out_w == g.s.in_w and g.s.groups == 1 and g.s.in_c % nr == 0)


cdef void _pointwise_weight_grad_part(const f32_igemm_config* cfg, const float* x,
                                      const float* dy, float* dw, size_t in_c, size_t out_c,
                                      size_t p_begin, size_t p_end, size_t m_begin,
                                      size_t m_end, size_t block, const float** a_ptrs,
                                      float** c_rows) noexcept nogil:
    """Rows [m_begin, m_end) of dw (out_c, in_c) = dy^T x over the pixels [p_begin, p_end), in
    blocks of ``block`` pixels: the first block initialises them, the others add to them."""
    cdef size_t MR = cfg.mr, NR = cfg.nr, p0 = p_begin, kc, m0, mr, i, j0
    cdef int flags = 0
    while p0 < p_end:
        kc = min(block, p_end - p0)
        m0 = m_begin
        while m0 < m_end:
            mr = min(MR, m_end - m0)
            for i in range(MR):  # rows past mr read row m0 and are not stored
                a_ptrs[i] = dy + p0 * out_c + m0 + (i if i < mr else 0)
                c_rows[i] = dw + (m0 + (i if i < mr else 0)) * in_c
            j0 = 0
            while j0 < in_c:
                cfg.ukernel(mr, NR, kc, 1, a_ptrs, 0, out_c, NULL, x + p0 * in_c + j0, in_c,
                            NULL, c_rows, j0, flags, -INFINITY, INFINITY)
                j0 += NR
            m0 += MR
        flags = FC_IGEMM_ACCUMULATE
        p0 += kc


cdef _backward_weight_pointwise(op, _Conv g, f32_igemm_config cfg, x, dy, int n_threads):
    """The pointwise weight gradient (POINTWISE_WEIGHT_GRAD_BLOCK_BYTES): parts of the pixels
    (_weight_grad_parts), each summing into its own dw, summed in part order; blocks of dw's
    rows as well when there are fewer parts than threads."""
    cdef size_t pixels = g.s.batch * g.s.out_h * g.s.out_w
    cdef size_t in_c = g.s.in_c, out_c = g.s.out_c, part_floats = in_c * out_c
    cdef size_t MR = cfg.mr, m_tiles = (out_c + MR - 1) // MR
    cdef size_t n_parts = _weight_grad_parts(2.0 * pixels * part_floats, pixels, part_floats)
    cdef size_t n_mblocks = max(1, min(m_tiles, (n_threads + n_parts - 1) // n_parts))
    cdef size_t block = max(1, POINTWISE_WEIGHT_GRAD_BLOCK_BYTES // (4 * (in_c + out_c)))
    check_workspace(op, 4 * part_floats * (n_parts + 2) + 16 * n_threads * MR)
    partial = scratch("weight_grad.partial", n_parts * part_floats).reshape(n_parts, part_floats)
    cdef float[::1] pv = partial.reshape(-1)
    cdef size_t[::1] pointers = scratch("conv.pointers", n_threads * 2 * MR, np.uintp)
    cdef const float* xp = <const float*>data_ptr(x)
    cdef const float* dyp = <const float*>data_ptr(dy)
    cdef Py_ssize_t item
    cdef size_t part, mb
    cdef int tid
    cdef unsigned ftz
    with nogil, parallel(num_threads=n_threads):
        tid = threadid()
        ftz = cconv_ftz_enter()
        for item in prange(<Py_ssize_t>(n_parts * n_mblocks), schedule="dynamic"):
            part = item // n_mblocks
            mb = item % n_mblocks
            _pointwise_weight_grad_part(&cfg, xp, dyp, &pv[part * part_floats], in_c, out_c,
                                        pixels * part // n_parts, pixels * (part + 1) // n_parts,
                                        m_tiles * mb // n_mblocks * MR,
                                        min(out_c, m_tiles * (mb + 1) // n_mblocks * MR), block,
                                        <const float**>&pointers[tid * 2 * MR],
                                        <float**>&pointers[tid * 2 * MR + MR])
        cconv_ftz_restore(ftz)
    # summed over the parts in float64 and in part order, threads splitting the columns
    dw = partial[0].copy() if n_parts == 1 else _sum_rows(partial, n_threads)
    return dw.reshape(out_c, in_c, 1, 1)


cdef _backward_weight(_Conv g, _WeightGradPlan plan, x, dy, int n_threads):
    cdef const cconv_conv_shape* s = &plan.s
    cdef f32_igemm_config cfg = plan.cfg
    cdef cconv_conv_direct_kernels tiles_fn = cconv_conv_direct_select(current_isa())
    cdef size_t rows = s.batch * s.out_h, part_floats = s.out_c * plan.K
    cdef size_t n_parts = plan.n_parts, n_kblocks = plan.n_kblocks
    cdef size_t m_tiles = (plan.K + cfg.mr - 1) // cfg.mr
    cdef const float[::1] xv = x.reshape(-1)
    cdef const float[::1] dyv = dy.reshape(-1)
    partial = scratch("weight_grad.partial", n_parts * part_floats).reshape(n_parts, part_floats)
    cdef float[::1] pv = partial.reshape(-1)
    cdef float[::1] slab = scratch("weight_grad.slab", n_threads * plan.slab_floats)
    cdef float[::1] b_pack = scratch("weight_grad.b_pack", n_threads * plan.band_floats)
    cdef size_t n_offsets = plan.K + plan.band_rows, n_ptrs = cfg.mr * plan.band_rows
    cdef size_t[::1] offsets = scratch("weight_grad.offsets", n_threads * n_offsets, np.uintp)
    cdef size_t[::1] a_ptrs = scratch("weight_grad.a_ptrs", n_threads * n_ptrs, np.uintp)
    cdef size_t[::1] c_rows = scratch("weight_grad.c_rows", n_threads * cfg.mr, np.uintp)
    cdef Py_ssize_t item
    cdef size_t part, kb, m_begin, m_end
    cdef int tid
    cdef unsigned ftz
    with nogil, parallel(num_threads=n_threads):
        tid = threadid()
        ftz = cconv_ftz_enter()
        for item in prange(<Py_ssize_t>(n_parts * n_kblocks), schedule="dynamic"):
            part = item // n_kblocks
            kb = item % n_kblocks
            m_begin = m_tiles * kb // n_kblocks * cfg.mr
            m_end = min(plan.K, m_tiles * (kb + 1) // n_kblocks * cfg.mr)
            tiles_fn.backward_weight_part(s, &cfg, &xv[0], &dyv[0], &pv[part * part_floats],
                                          rows * part // n_parts, rows * (part + 1) // n_parts,
                                          m_begin, m_end, plan.slab_rows, plan.band_rows,
                                          &slab[tid * plan.slab_floats],
                                          &b_pack[tid * plan.band_floats],
                                          &offsets[tid * n_offsets],
                                          <const float**>&a_ptrs[tid * n_ptrs],
                                          <float**>&c_rows[tid * cfg.mr])
        cconv_ftz_restore(ftz)
    # dw^T summed over the parts in float64 and in part order, threads splitting the columns.
    dwt = partial[0] if n_parts == 1 else _sum_rows(partial, n_threads)
    # dw^T [group][tap][ci][co] to PyTorch's [group * co][ci][kh][kw], always a fresh array.
    cdef size_t groups = s.groups, cin_g = s.in_c // groups, cout_g = s.out_c // groups
    dw = np.empty((s.out_c, cin_g, s.kernel_h, s.kernel_w), np.float32)
    dw.reshape(groups, cout_g, cin_g, s.kernel_h, s.kernel_w)[...] = dwt.reshape(
        groups, s.kernel_h, s.kernel_w, cin_g, cout_g).transpose(0, 4, 3, 1, 2)
    return dw


cdef _backward_weight_planar(op, _Conv g, x, dy, int n_threads):
    """The planar weight gradient: blocks of output rows cut into PLANAR_WEIGHT_GRAD_ITEMS
    items by the shape alone, each summing into its own float64 dw, summed in item order."""
    cdef cconv_conv_direct_kernels kern = cconv_conv_direct_select(current_isa())
    cdef size_t taps = g.s.in_c * g.s.kernel_h * g.s.kernel_w
    cdef size_t block_rows = _planar_block_rows(g, PLANAR_WEIGHT_GRAD_BLOCK_PIXELS, 1)
    cdef size_t blocks = g.s.batch * ((g.s.out_h + block_rows - 1) // block_rows)
    cdef Py_ssize_t items = min(blocks, PLANAR_WEIGHT_GRAD_ITEMS), item
    cdef size_t stage_floats = g.s.in_c * cconv_planar_plane_floats(&g.s, block_rows)
    cdef size_t co_pad = ((g.s.out_c + CCONV_PLANAR_WG_CHANNELS - 1) // CCONV_PLANAR_WG_CHANNELS
                          * CCONV_PLANAR_WG_CHANNELS)
    cdef size_t dstage_floats = co_pad * cconv_planar_grad_plane_floats(&g.s, block_rows)
    check_workspace(op, 8 * items * g.s.out_c * taps
                    + 4 * n_threads * (stage_floats + dstage_floats))
    partial = np.zeros((items, g.s.out_c * taps), np.float64)
    cdef double[:, ::1] pv = partial
    cdef float[::1] stage = scratch("conv.planar_stage", n_threads * stage_floats)
    cdef float[::1] dstage = scratch("conv.planar_grad_stage", n_threads * dstage_floats)
    cdef const float[::1] xv = x.reshape(-1)
    cdef const float[::1] dyv = dy.reshape(-1)
    cdef int tid
    cdef unsigned ftz
    with nogil, parallel(num_threads=n_threads):
        tid = threadid()
        ftz = cconv_ftz_enter()
        for item in prange(items, schedule="static"):
            kern.backward_weight_planar(&g.s, &xv[0], &dyv[0], &pv[item, 0], block_rows,
                                        item * blocks // items, (item + 1) * blocks // items,
                                        &stage[tid * stage_floats], &dstage[tid * dstage_floats])
        cconv_ftz_restore(ftz)
    dw = partial[0] if items == 1 else np.add.reduce(partial, axis=0)
    return dw.astype(np.float32).reshape(g.s.out_c, g.s.in_c, g.s.kernel_h, g.s.kernel_w)


cdef _sum_rows(a, int n_threads):
    """Columns of the 2-D float32 ``a`` summed over its rows in float64, in row order."""
    cdef size_t rows = a.shape[0], cols = a.shape[1]
    out = np.empty(cols, np.float32)
    cdef const float[::1] av = a.reshape(-1)
    cdef float[::1] ov = out
    cdef Py_ssize_t blocks = (cols + 255) // 256, blk
    cdef cconv_conv_direct_kernels tiles_fn = cconv_conv_direct_select(current_isa())
    for blk in prange(blocks, nogil=True, num_threads=n_threads, schedule="static"):
        tiles_fn.sum_rows(rows, cols, &av[0], blk * 256, min((blk + 1) * 256, cols), &ov[0])
    return out


# ----------------------------------------------------------------------------- public functions

def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, activation=None,
           algo="auto", n_threads=None):
    """2-D convolution of NHWC ``x`` with ``w`` (out, in/groups, kh, kw), plus bias.

    padding: int, pair, ((top, bottom), (left, right)), 'same' or 'valid'.
    activation: None, 'relu' or 'relu6', fused into the store. Returns y (N, Ho, Wo, out).
    (:class:`Conv2dPlan` runs the same convolution many times without preparing it again.)
    """
    op = "conv2d"
    x = as_nhwc(op, "input", x)
    w = as_float32(op, "weight", w)
    cmin, cmax = _activation_bounds(op, activation)
    g = _geometry(op, x.shape, w.shape, stride, padding, dilation, groups)
    check_finite(op, "weight", w)
    b = _bias(op, b, w.shape[0])
    cdef _Conv conv = g
    cdef int nt = threads_for(resolve_threads(n_threads), _flops(conv))
    check_workspace(op, conv_workspace_bytes("forward", conv.in_shape, conv.out_shape, w.shape,
                                             groups, nt))
    name, tile = _algorithm(op, conv, algo)
    pw, pb = _pack_forward(conv, name, tile, w, b, current_isa(), nt, False)
    return _forward_packed(conv, name, x, pw, pb, cmin, cmax, nt)


def _activation_bounds(op, activation):
    if activation not in _ACTIVATIONS:
        raise ValueError(f"{op}: activation must be None, 'relu' or 'relu6', got {activation!r}")
    return _ACTIVATIONS[activation]


def _bias(op, b, size_t out_channels):
    """None, or the bias as a finite float32 (out_channels,) array."""
    if b is not None:
        b = as_float32(op, "bias", b)
        check_shape(op, "bias", b, (out_channels,))
        check_finite(op, "bias", b)
    return b


cdef double _flops(_Conv g):
    """Multiply-adds x 2 of the forward pass (and of each backward pass)."""
    return (2.0 * g.s.batch * g.s.out_h * g.s.out_w * g.s.out_c * (g.s.in_c // g.s.groups)
            * g.s.kernel_h * g.s.kernel_w)


cdef class _PlanShape:
    """What a Conv2dPlan works out once per input shape."""
    cdef _Conv g
    cdef object name        # the forward algorithm: 'direct', 'winograd', 'depthwise'
    cdef int tile           # Winograd's output tile (0 otherwise)
    cdef double flops
    cdef object ws_fixed, ws_thread  # workspace bytes: ws_fixed + threads * ws_thread


cdef class Conv2dPlan:
    """:func:`conv2d` with fixed weights and arguments, prepared for repeated calls.

        plan = cconv.Conv2dPlan(w, b, padding=1, activation="relu")
        y = plan(x)   # the same bits as cconv.conv2d(x, w, b, padding=1, activation="relu")

    The weights and the bias are checked and copied once (``plan.weight`` and ``plan.bias``,
    read-only: make a new plan when the weights change), packed (or Winograd-transformed) once
    per algorithm and ISA; the geometry, the algorithm and the workspace size are worked out
    once per input shape (the last few shapes are kept). A call on an input of a shape seen
    before does none of that. Bad input raises conv2d's ValueErrors. Several threads may call
    one plan at once.
    """
    cdef readonly object weight, bias, stride, padding, dilation, activation, algo
    cdef readonly Py_ssize_t groups
    cdef float cmin, cmax
    cdef dict _shapes      # input shape -> _PlanShape
    cdef dict _packed      # (algorithm, tile, ISA) -> (packed weights, packed bias)

    def __init__(self, w, b=None, stride=1, padding=0, dilation=1, groups=1, activation=None,
                 algo="auto"):
        op = "conv2d"
        w = np.array(as_float32(op, "weight", w))   # a copy of its own
        if w.ndim != 4 or 0 in w.shape:
            raise ValueError(f"{op}: weight must be (out_channels, in_channels/groups, kh, kw), "
                             f"got shape {w.shape}")
        check_finite(op, "weight", w)
        b = _bias(op, b, w.shape[0])
        if b is not None:
            b = np.array(b)
            b.flags.writeable = False
        w.flags.writeable = False
        self.cmin, self.cmax = _activation_bounds(op, activation)
        if algo not in _ALGOS:
            raise ValueError(f"{op}: algo must be one of {', '.join(map(repr, _ALGOS))}, "
                             f"got {algo!r}")
        self.weight, self.bias, self.activation, self.algo = w, b, activation, algo
        self.stride = pair(op, "stride", stride, minimum=1)
        self.dilation = pair(op, "dilation", dilation, minimum=1)
        conv_padding(op, padding, w.shape[2:], self.stride, self.dilation, (1, 1))  # its form
        self.padding, self.groups = padding, groups
        self._shapes, self._packed = {}, {}

    def __repr__(self):
        return (f"Conv2dPlan(weight {self.weight.shape}, bias={self.bias is not None}, "
                f"stride={self.stride}, padding={self.padding!r}, dilation={self.dilation}, "
                f"groups={self.groups}, activation={self.activation!r}, algo={self.algo!r})")

    def algorithm(self, input_shape):
        """The forward kernels this plan runs on inputs of ``input_shape`` (NHWC), named as
        :func:`conv2d_algorithm` names them."""
        cdef _PlanShape ps = self._shape(tuple(int(v) for v in input_shape))
        if ps.name == "winograd":
            return f"winograd-f{ps.tile}"
        return "direct-" + _direct_path(ps.g, FORWARD) if ps.name == "direct" else ps.name

    cdef _PlanShape _shape(self, tuple shape):
        cdef _PlanShape ps = self._shapes.get(shape)
        if ps is not None:
            return ps
        op = "conv2d"
        if len(shape) != 4 or 0 in shape:
            as_nhwc(op, "input", np.empty(shape, np.float32))  # raises conv2d's error
        ps = _PlanShape()
        ps.g = _geometry(op, shape, self.weight.shape, self.stride, self.padding, self.dilation,
                         self.groups)
        ps.name, ps.tile = _algorithm(op, ps.g, self.algo)
        ps.flops = _flops(ps.g)
        ps.ws_fixed = conv_workspace_bytes("forward", shape, ps.g.out_shape, self.weight.shape,
                                           self.groups, 0)
        ps.ws_thread = conv_workspace_bytes("forward", shape, ps.g.out_shape, self.weight.shape,
                                            self.groups, 1) - ps.ws_fixed
        if len(self._shapes) >= 8:   # a model run on ever new shapes keeps its memory flat
            self._shapes = {}
        self._shapes[shape] = ps
        return ps

    def __call__(self, x, n_threads=None):
        """conv2d(x, ...) with this plan's weights and arguments."""
        if not (type(x) is np.ndarray and x.dtype is _FLOAT32 and x.flags.c_contiguous):
            x = as_nhwc("conv2d", "input", x)
        cdef _PlanShape ps = self._shape(x.shape)
        cdef int isa = current_isa()
        cdef int nt = threads_for(resolve_threads(n_threads), ps.flops)
        nbytes = ps.ws_fixed + nt * ps.ws_thread
        if nbytes > get_memory_limit():
            check_workspace("conv2d", nbytes)
        key = (ps.name, ps.tile, isa)
        packed = self._packed.get(key)
        if packed is None:
            packed = _pack_forward(ps.g, ps.name, ps.tile, self.weight, self.bias, isa, nt, True)
            self._packed[key] = packed
        return _forward_packed(ps.g, ps.name, x, packed[0], packed[1], self.cmin, self.cmax, nt)


def conv2d_backward_data(dy, w, input_shape, stride=1, padding=0, dilation=1, groups=1,
                         algo="auto", n_threads=None):
    """Gradient of conv2d with respect to its input: dx with shape ``input_shape``.

    ``algo`` as in conv2d (Winograd runs 3x3 stride-1 layers: dx is a 3x3 convolution of dy)."""
    op = "conv2d_backward_data"
    w = as_float32(op, "weight", w)
    input_shape = tuple(int(v) for v in input_shape)
    if len(input_shape) != 4 or 0 in input_shape:
        raise ValueError(f"{op}: input_shape must be a non-empty NHWC shape, got {input_shape}")
    g = _geometry(op, input_shape, w.shape, stride, padding, dilation, groups)
    dy = as_nhwc(op, "grad_output", dy)
    check_shape(op, "grad_output", dy, g.out_shape)
    cdef _Conv conv = g
    cdef int nt = threads_for(resolve_threads(n_threads), _flops(conv))
    check_workspace(op, conv_workspace_bytes("backward_data", g.in_shape, g.out_shape, w.shape,
                                             groups, nt))
    name, tile = _algorithm(op, conv, algo, backward_data=True)
    if name == "winograd":
        return winograd_backward_data(dy, w, input_shape, conv.s.pad_top, conv.s.pad_left, tile,
                                      nt)
    return _backward_data(g, dy, w, nt)


def conv2d_backward_weight(x, dy, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                           algo="auto", n_threads=None):
    """Gradient of conv2d with respect to its weight, in PyTorch order (out, in/groups, kh, kw).

    ``algo`` as in conv2d: 3x3 stride-1 single-group layers with 8 or more input channels run
    Winograd F(3x3, m x m) (the forward F(m x m, 3x3) transposed) with the forward pass's tile,
    the rest the direct GEMM."""
    op = "conv2d_backward_weight"
    x = as_nhwc(op, "input", x)
    dy = as_nhwc(op, "grad_output", dy)
    kh, kw = pair(op, "kernel_size", kernel_size, minimum=1)
    if groups < 1 or x.shape[3] % groups:
        raise ValueError(f"{op}: groups={groups} must divide in_channels ({x.shape[3]})")
    w_shape = (dy.shape[3], x.shape[3] // groups, kh, kw)
    g = _geometry(op, x.shape, w_shape, stride, padding, dilation, groups)
    check_shape(op, "grad_output", dy, g.out_shape)
    cdef _Conv conv = g
    cdef int threads = threads_for(resolve_threads(n_threads), _flops(conv))
    name, tile = _algorithm(op, conv, algo, backward_weight=True)
    if name == "winograd":
        return winograd_backward_weight(x, dy, conv.s.pad_top, conv.s.pad_left, tile, threads)
    if name == "depthwise":
        check_workspace(op, conv_workspace_bytes("backward_weight", g.in_shape, g.out_shape,
                                                 w_shape, groups, threads))
        return depthwise_backward_weight(x, dy, g.kernel, (conv.s.stride_h, conv.s.stride_w),
                                         (conv.s.dilation_h, conv.s.dilation_w), conv.s.pad_top,
                                         conv.s.pad_left, threads)
    path = _direct_path(conv, BACKWARD_WEIGHT)
    if path == "planar":
        return _backward_weight_planar(op, conv, x, dy, threads)
    if path == "pointwise-gemm":
        return _backward_weight_pointwise(op, conv, f32_igemm_select(current_isa(), conv.s.in_c),
                                          x, dy, threads)
    plan = _WeightGradPlan(g, threads)
    check_workspace(op, plan.workspace_bytes)
    return _backward_weight(g, plan, x, dy, threads)


def bias_backward(dy, n_threads=None):
    """Gradient of a bias: dy summed over every axis but the last (float64 sums, fixed order)."""
    op = "bias_backward"
    dy = as_float32(op, "grad_output", dy)
    if dy.ndim < 1 or dy.shape[dy.ndim - 1] == 0:
        raise ValueError(f"{op}: grad_output needs a non-empty last axis, got shape {dy.shape}")
    cdef size_t cols = dy.shape[dy.ndim - 1], rows = dy.size // cols
    db = np.zeros(cols, np.float32)
    if rows == 0:
        return db
    cdef const float[::1] dyv = dy.reshape(-1)
    cdef float[::1] dbv = db
    cdef Py_ssize_t blocks = (cols + 15) // 16, blk
    cdef int n = threads_for(min(resolve_threads(n_threads), blocks), 2.0 * rows * cols)
    cdef cconv_conv_direct_kernels tiles_fn = cconv_conv_direct_select(current_isa())
    # Threads split the channels, each summing all rows of its channels in row order.
    for blk in prange(blocks, nogil=True, num_threads=n, schedule="static"):
        tiles_fn.sum_rows(rows, cols, &dyv[0], blk * 16, min((blk + 1) * 16, cols), &dbv[0])
    return db


def conv_transpose2d(x, w, b=None, stride=1, padding=0, output_padding=0, dilation=1, groups=1,
                     algo="auto", n_threads=None):
    """Transposed convolution: ``w`` is (in, out/groups, kh, kw) as in PyTorch's ConvTranspose2d.

    It is conv2d's backward-data pass, run on x as if x were a convolution's output gradient
    (``algo`` as conv2d_backward_data's).
    """
    op = "conv_transpose2d"
    x = as_nhwc(op, "input", x)
    w = as_float32(op, "weight", w)
    if w.ndim != 4:
        raise ValueError(f"{op}: weight must be (in_channels, out_channels/groups, kh, kw), got {w.shape}")
    if groups < 1 or w.shape[0] % groups:
        raise ValueError(f"{op}: groups={groups} must divide in_channels ({w.shape[0]})")
    if x.shape[3] != w.shape[0]:
        raise ValueError(f"{op}: input has {x.shape[3]} channels but weight {w.shape} expects "
                         f"{w.shape[0]} (input shape {x.shape})")
    check_finite(op, "weight", w)
    out_shape = conv_transpose2d_output_shape(op, x.shape, w.shape, stride, padding,
                                              output_padding, dilation, groups)
    y = conv2d_backward_data(x, w, out_shape, stride, padding, dilation, groups, algo=algo,
                             n_threads=n_threads)
    if b is not None:
        b = as_float32(op, "bias", b)
        check_shape(op, "bias", b, (out_shape[3],))
        check_finite(op, "bias", b)
        y += b
    return y


def conv_transpose2d_output_shape(op, x_shape, w_shape, stride, padding, output_padding, dilation,
                                  groups):
    """(N, Ho, Wo, out) of a transposed convolution, PyTorch's formula."""
    stride = pair(op, "stride", stride, minimum=1)
    dilation = pair(op, "dilation", dilation, minimum=1)
    pad = pair(op, "padding", padding, minimum=0)
    out_pad = pair(op, "output_padding", output_padding, minimum=0)
    for s, d, p in zip(stride, dilation, out_pad):
        if p >= s and p >= d:
            raise ValueError(f"{op}: output_padding {out_pad} must be smaller than stride "
                             f"{stride} or dilation {dilation}")
    out = []
    for size, k, s, p, d, op_ in zip(x_shape[1:3], w_shape[2:4], stride, pad, dilation, out_pad):
        o = (size - 1) * s - 2 * p + d * (k - 1) + op_ + 1
        if o < 1:
            raise ValueError(f"{op}: output would be empty: input {tuple(x_shape)}, weight "
                             f"{tuple(w_shape)}, stride {stride}, padding {pad}")
        out.append(o)
    return (x_shape[0], out[0], out[1], w_shape[1] * groups)


def conv_transpose2d_backward_data(dy, w, stride=1, padding=0, dilation=1, groups=1,
                                   n_threads=None):
    """Gradient of conv_transpose2d with respect to its input: a plain conv2d of dy."""
    return conv2d(dy, w, None, stride, padding, dilation, groups, n_threads=n_threads)


def conv_transpose2d_backward_weight(x, dy, kernel_size, stride=1, padding=0, dilation=1,
                                     groups=1, n_threads=None):
    """Gradient of conv_transpose2d's weight (in, out/groups, kh, kw): conv2d's weight gradient
    with the roles of input and output swapped."""
    op = "conv_transpose2d_backward_weight"
    x = as_nhwc(op, "input", x)
    dy = as_nhwc(op, "grad_output", dy)
    if groups < 1 or dy.shape[3] % groups or x.shape[3] % groups:
        raise ValueError(f"{op}: groups={groups} must divide the channels of input {x.shape} "
                         f"and grad_output {dy.shape}")
    return conv2d_backward_weight(dy, x, kernel_size, stride, padding, dilation, groups,
                                  n_threads=n_threads)


def linear(x, w, b=None, activation=None, n_threads=None):
    """y = x w^T + b for x (N, in), w (out, in): a 1x1 convolution of a 1x1 image.
    activation: None, 'relu' or 'relu6', fused into the store."""
    op = "linear"
    x = as_float32(op, "input", x, ndim=2)
    w = as_float32(op, "weight", w, ndim=2)
    if x.shape[0] == 0:
        raise ValueError(f"{op}: empty batch, input shape {x.shape}")
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"{op}: input has {x.shape[1]} features but weight {w.shape} expects "
                         f"{w.shape[1]} (input shape {x.shape})")
    check_finite(op, "weight", w)
    b = _bias(op, b, w.shape[0])
    cdef float cmin, cmax
    cmin, cmax = _activation_bounds(op, activation)
    cdef size_t n = x.shape[0], out = w.shape[0], fin = w.shape[1]
    # y (n, out) = x (n, in) w^T (in, out): x's rows in place, w transposed once
    return _matmul(x, n, fin, fin, 1, np.ascontiguousarray(w.T), out,
                   threads_for(resolve_threads(n_threads), 2.0 * n * out * fin), b, cmin, cmax)


cdef _matmul(a, size_t m, size_t k, size_t a_row, size_t a_k, b, size_t n, int n_threads,
             bias=None, float cmin=-INFINITY, float cmax=INFINITY):
    """c (m, n) = clamp(A b + bias) for A[i, p] = a.flat[i * a_row + p * a_k] (a C-contiguous
    float32 array), b (k, n) C-contiguous float32 and bias (n,) or None, with the micro-kernel
    reading A and b in place (b's last, partial panel is copied with zero padding: the kernel
    reads whole NR-wide rows). Each element of c is one kernel call's sum over all k in order:
    the result does not depend on the thread count."""
    cdef f32_igemm_config cfg = f32_igemm_select(current_isa(), n)
    cdef size_t MR = cfg.mr, NR = cfg.nr
    cdef Py_ssize_t m_tiles = (m + MR - 1) // MR, panels = (n + NR - 1) // NR
    cdef Py_ssize_t full_panels = n // NR, item
    cdef const float[::1] av = a.reshape(-1)
    cdef const float[::1] bv = b.reshape(-1)
    cdef const float[::1] tailv, biasv
    cdef const float* tail = NULL
    cdef const float* bias_ptr = NULL
    if bias is not None:
        biasv = _padded_bias(bias, n, NR)
        bias_ptr = &biasv[0]
    if full_panels < panels:
        t = np.zeros((k, NR), np.float32)
        t[:, :n - full_panels * NR] = b[:, full_panels * NR:]
        tailv = t.reshape(-1)
        tail = &tailv[0]
    c = np.empty((m, n), np.float32)
    cdef float[::1] cv = c.reshape(-1)
    cdef size_t[::1] pointers = scratch("conv.pointers", n_threads * 2 * MR, np.uintp)
    cdef const float** a_ptrs
    cdef float** c_ptrs
    cdef size_t i, m0, j0, mr, nc
    cdef int tid = 0
    cdef unsigned ftz
    with nogil, parallel(num_threads=n_threads):
        tid = threadid()
        ftz = cconv_ftz_enter()
        for item in prange(m_tiles * panels, schedule="static"):
            a_ptrs = <const float**>&pointers[tid * 2 * MR]
            c_ptrs = <float**>&pointers[tid * 2 * MR + MR]
            m0 = (item // panels) * MR
            j0 = (item % panels) * NR
            mr = min(MR, m - m0)
            nc = min(NR, n - j0)
            for i in range(MR):   # rows past mr read row m0 and are not stored
                a_ptrs[i] = &av[(m0 + (i if i < mr else 0)) * a_row]
                c_ptrs[i] = &cv[(m0 + (i if i < mr else 0)) * n]
            cfg.ukernel(mr, nc, k, 1, a_ptrs, 0, a_k, NULL,
                        &bv[j0] if <Py_ssize_t>(j0 // NR) < full_panels else tail,
                        n if <Py_ssize_t>(j0 // NR) < full_panels else NR,
                        bias_ptr + j0 if bias_ptr != NULL else NULL, c_ptrs, j0, 0, cmin, cmax)
        cconv_ftz_restore(ftz)
    return c


def linear_backward_data(dy, w, n_threads=None):
    """dx = dy w for linear's output gradient dy (N, out) and weight w (out, in)."""
    op = "linear_backward_data"
    dy = as_float32(op, "grad_output", dy, ndim=2)
    w = as_float32(op, "weight", w, ndim=2)
    if dy.shape[1] != w.shape[0]:
        raise ValueError(f"{op}: grad_output {dy.shape} does not match weight {w.shape}")
    cdef size_t n = dy.shape[0], out = w.shape[0], fin = w.shape[1]
    if n == 0:
        raise ValueError(f"{op}: empty batch, grad_output shape {dy.shape}")
    # dx (n, in) = dy (n, out) w (out, in): dy's rows and w's rows read in place
    return _matmul(dy, n, out, out, 1, w, fin,
                   threads_for(resolve_threads(n_threads), 2.0 * n * out * fin))


def linear_backward_weight(x, dy, n_threads=None):
    """dw = dy^T x, shape (out, in)."""
    op = "linear_backward_weight"
    x = as_float32(op, "input", x, ndim=2)
    dy = as_float32(op, "grad_output", dy, ndim=2)
    if x.shape[0] != dy.shape[0]:
        raise ValueError(f"{op}: input {x.shape} and grad_output {dy.shape} differ in batch size")
    cdef size_t n = x.shape[0], out = dy.shape[1], fin = x.shape[1]
    if n == 0:
        raise ValueError(f"{op}: empty batch, input shape {x.shape}")
    # dw (out, in) = dy^T (out, n) x (n, in): dy read column by column (k stride out), x's rows
    # in place
    return _matmul(dy, out, n, 1, out, x, fin,
                   threads_for(resolve_threads(n_threads), 2.0 * n * out * fin))
