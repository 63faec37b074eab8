"""Winograd convolution F(4x4, 3x3) and F(2x2, 3x3): 3x3 kernels, stride 1, dilation 1, one group.

Layers of the implementation:
  kernels/winograd/f32_wino{2,4}x3__ISA.c  one block of tiles: input transform, alpha^2 igemm
                                  GEMMs, output transform with bias and clamp (winograd.h there)
  this module                     argument checks, weight transform, block sizing, OpenMP: one
                                  equal share of the tiles per thread, in cache-sized blocks
Every output element is computed inside one block, from its own tile only, with the igemm
micro-kernel's fixed summation order: results are bitwise identical for any number of threads.

The backward-data pass of a stride-1 3x3 convolution is a 3x3 convolution of dy with the
weights rotated by 180 degrees and their in/out channels swapped, padded by 2 - pad: the same
kernels, with the weights read through other strides.
"""
import operator

import numpy as np

from cython.parallel cimport parallel, prange, threadid
from libc.math cimport INFINITY, isnan
from libc.stdint cimport uintptr_t
from libc.stdlib cimport free, malloc
from libc.string cimport memset

from cconv._runtime cimport current_isa, data_ptr, resolve_threads, threads_for
from cconv._cache import scratch as _scratch
from cconv._validation import (as_float32, as_nhwc, check_finite, check_shape, check_workspace,
                               pair)

from cconv._kernels cimport (FC_IGEMM_ACCUMULATE, cconv_ftz_enter, cconv_ftz_restore,
                             f32_igemm_config, f32_igemm_select)

cdef extern from "winograd/winograd.h":
    struct cconv_wino_shape:
        size_t batch, in_h, in_w, in_c
        size_t out_h, out_w, out_c
        ptrdiff_t pad_top, pad_left
        size_t tiles_h, tiles_w
        size_t v_row, v_plane, m_row, m_plane, co_chunk
    struct cconv_wino_scratch:
        float* v
        float* m
        const float** a_rows
        float** c_rows
        const float* zero
    ctypedef void (*f32_wino_block_fn)(const cconv_wino_shape*, const f32_igemm_config*,
                                       const float*, const float*, const float*, float*, size_t,
                                       size_t, float, float, const cconv_wino_scratch*) noexcept nogil
    ctypedef void (*f32_wino_weights_fn)(size_t, size_t, const float*, ptrdiff_t, ptrdiff_t,
                                         ptrdiff_t, ptrdiff_t, size_t, size_t,
                                         float*) noexcept nogil
    struct cconv_wino_wgrad_scratch:
        float* v
        float* ydy
        const float** a_rows
        float** c_rows
        const float* zero
    ctypedef void (*f32_wino_wgrad_block_fn)(const cconv_wino_shape*, const f32_igemm_config*,
                                             const float*, const float*, float*, size_t, size_t,
                                             size_t, size_t, int,
                                             const cconv_wino_wgrad_scratch*) noexcept nogil
    ctypedef void (*f32_wino_wgrad_out_fn)(size_t, size_t, const float*, size_t, size_t, size_t,
                                           size_t, float*) noexcept nogil
    struct f32_wino_config:
        f32_wino_block_fn block
        f32_wino_weights_fn weights
        f32_wino_wgrad_block_fn wgrad_block
        f32_wino_wgrad_out_fn wgrad_out
        size_t m
        size_t alpha
    f32_wino_config f32_wino_select(int isa, int m) nogil

# Bytes of one block's transformed input V and GEMM output M together: they stay in the L2
# cache (1-2 MiB per core on current x86 cores) between the transforms and the GEMMs.
cdef size_t BLOCK_BYTES = 512 * 1024
# Output channels per pass of GEMMs + output transform (rounded to the micro-kernel's NR): M
# holds one chunk, so that wide layers keep more tiles per block.
cdef size_t CO_CHUNK = 64
# Per-thread copies of the transformed weights (when the caller did not transform them) up to
# this many bytes in all; above it, one copy that the threads share.
cdef size_t PRIVATE_WEIGHT_BYTES = 32 * 1024 * 1024
DEF ALIGN_FLOATS = 16  # 64-byte rows and planes
# Weight gradient: the most parts the tiles are split into (each part sums into its own M, the
# parts are added in order; the count depends on the shape only, never on the threads), the
# fewest tiles a part gets, and the partial sums held at once (16 MiB). A part's M goes out to
# memory and is read back once to be added: per element, 2 tiles' FMAs against 8 bytes of
# traffic, so 256 tiles keep that to a few percent of the part's work. Threads beyond the parts
# split the input channels instead (_run_weight_grad).
cdef size_t WGRAD_MAX_PARTS = 16
cdef size_t WGRAD_MIN_PART_TILES = 256
cdef size_t WGRAD_PARTIAL_FLOATS = 4194304



def _tuning(block_bytes=None, co_chunk=None, private_weight_bytes=None, wgrad_part_tiles=None):
    """Read or set the blocking parameters (for measurements and tests): returns the previous
    values."""
    global BLOCK_BYTES, CO_CHUNK, PRIVATE_WEIGHT_BYTES, WGRAD_MIN_PART_TILES
    previous = (BLOCK_BYTES, CO_CHUNK, PRIVATE_WEIGHT_BYTES, WGRAD_MIN_PART_TILES)
    if wgrad_part_tiles is not None:
        WGRAD_MIN_PART_TILES = max(1, int(wgrad_part_tiles))
    if private_weight_bytes is not None:
        PRIVATE_WEIGHT_BYTES = max(0, int(private_weight_bytes))
    if block_bytes is not None:
        BLOCK_BYTES = max(1, int(block_bytes))
    if co_chunk is not None:
        CO_CHUNK = max(1, int(co_chunk))
    return previous


# ----------------------------------------------------------------------------- weights

cdef class WinogradWeights:
    """3x3 weights transformed (U = G g G^T) and packed in NR-wide panels for one ISA.

    Made by :func:`winograd_transform_weights`; pass it as ``w`` to :func:`winograd_forward`
    (``backward_data=False``) or :func:`winograd_backward_data` (``backward_data=True``) to skip
    the transform. It stays valid until the weights it was made from change.
    """
    # attributes: see _winograd.pxd

    def __repr__(self):
        return (f"WinogradWeights(tile={self.tile}, backward_data={bool(self.backward_data)}, "
                f"weight_shape={self.weight_shape}, nr={self.nr})")


cdef struct _WeightJob:  # the transform of one WinogradWeights, for nogil loops over its panels
    f32_wino_weights_fn fn
    size_t n_out, k, nr, panels
    const float* w
    ptrdiff_t s_n, s_k, s_i, s_j
    float* packed


cdef WinogradWeights _prepare(w, int tile, bint backward, int isa):
    """WinogradWeights for the GEMMs of one pass, (K x N) = (Cin x Cout) forward and
    (Cout x Cin) backward, not yet transformed (packed is None)."""
    cdef size_t cout = w.shape[0], cin = w.shape[1]
    cdef size_t n_out = cin if backward else cout
    cdef WinogradWeights u = WinogradWeights.__new__(WinogradWeights)
    u.tile, u.backward_data, u.weight_shape = tile, backward, tuple(int(v) for v in w.shape)
    u.isa, u.nr, u.n = isa, f32_igemm_select(isa, n_out).nr, n_out
    u.k = cout if backward else cin
    u.packed, u._w, u._ready = None, w, False
    return u


cdef size_t _packed_size(WinogradWeights u):
    cdef size_t alpha = u.tile + 2
    return alpha * alpha * ((u.n + u.nr - 1) // u.nr) * u.k * u.nr


cdef _WeightJob _job(WinogradWeights u, float* packed):
    cdef _WeightJob job
    cdef const float[::1] wv = u._w.reshape(-1)
    cdef size_t cin = u._w.shape[1]
    job.fn = f32_wino_select(u.isa, u.tile).weights
    job.n_out, job.k, job.nr = u.n, u.k, u.nr
    job.panels = (u.n + u.nr - 1) // u.nr
    job.packed = packed
    if u.backward_data:  # g'(ci, co)[i][j] = w[co, ci, 2 - i, 2 - j]
        job.w = &wv[0] + 8
        job.s_n, job.s_k, job.s_i, job.s_j = 9, cin * 9, -3, -1
    else:
        job.w = &wv[0]
        job.s_n, job.s_k, job.s_i, job.s_j = cin * 9, 9, 3, 1
    return job


cdef inline void _run_job(const _WeightJob* job, size_t panel, float* packed) noexcept nogil:
    job.fn(job.n_out, job.k, job.w, job.s_n, job.s_k, job.s_i, job.s_j, job.nr, panel, packed)


cdef WinogradWeights _transform(w, int tile, bint backward, int isa, int n_threads):
    cdef WinogradWeights u = _prepare(w, tile, backward, isa)
    u.packed = np.empty(_packed_size(u), np.float32)
    cdef float[::1] pv = u.packed
    cdef _WeightJob job = _job(u, &pv[0])
    cdef Py_ssize_t p
    with nogil:
        for p in prange(<Py_ssize_t>job.panels, num_threads=n_threads, schedule="static"):
            _run_job(&job, p, job.packed)
    u._ready = True
    return u


def _check_tile(op, tile):
    if tile not in (2, 4):
        raise ValueError(f"{op}: tile must be 2 (F(2x2,3x3)) or 4 (F(4x4,3x3)), got {tile!r}")
    return int(tile)


def _check_weight(op, w):
    w = as_float32(op, "weight", w)
    if w.ndim != 4 or w.shape[2:] != (3, 3) or 0 in w.shape:
        raise ValueError(f"{op}: weight must be (out_channels, in_channels, 3, 3), got shape "
                         f"{w.shape}")
    check_finite(op, "weight", w)
    return w


def winograd_transform_weights(w, tile=4, backward_data=False, n_threads=None):
    """Transform 3x3 weights ``w`` (out, in, 3, 3) for F(tile x tile, 3x3), packed for the ISA
    in use: the part of a Winograd convolution that depends on the weights only (cacheable)."""
    op = "winograd_transform_weights"
    tile = _check_tile(op, tile)
    w = _check_weight(op, w)
    return _transform(w, tile, bool(backward_data), current_isa(), _threads(op, n_threads))


cdef WinogradWeights _weights(op, w, int tile, bint backward):
    """``w`` as transformed weights for this pass and the current ISA."""
    cdef WinogradWeights u
    if isinstance(w, WinogradWeights):
        u = w
        if u.tile != tile or u.backward_data != backward:
            raise ValueError(f"{op}: transformed weights {u!r} do not match tile={tile}, "
                             f"backward_data={bool(backward)}")
        if u.isa != current_isa():  # the ISA cap changed since: pack again for this one
            return _prepare(u._w, tile, backward, current_isa())
        return u
    # Transformed inside the convolution's own parallel region (_run).
    return _prepare(_check_weight(op, w), tile, backward, current_isa())


# ----------------------------------------------------------------------------- argument helpers

cdef int _threads(op, n_threads) except -1:
    try:
        return resolve_threads(n_threads)
    except ValueError as exc:
        raise ValueError(f"{op}: {exc}") from None


def _int(op, name, value, minimum):
    try:
        v = operator.index(value)
    except TypeError:
        raise ValueError(f"{op}: {name} must be an int, got {value!r}") from None
    if v < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {v}")
    return int(v)


def winograd_supported(w_shape, stride=1, dilation=1, groups=1):
    """Whether a convolution with weight shape ``w_shape`` (out, in/groups, kh, kw), ``stride``,
    ``dilation`` and ``groups`` can run as Winograd F(m x m, 3x3): 3x3, stride 1, dilation 1,
    one group."""
    try:
        shape = tuple(int(v) for v in w_shape)
        st = pair("winograd_supported", "stride", stride, minimum=1)
        dil = pair("winograd_supported", "dilation", dilation, minimum=1)
        g = operator.index(groups)
    except (TypeError, ValueError):
        return False
    return (len(shape) == 4 and shape[2:] == (3, 3) and min(shape) >= 1 and st == (1, 1)
            and dil == (1, 1) and g == 1)


# Measured on a 2-core Zen 4 (AVX-512), 2 threads, 3x3 layers with 1 to 512 channels and 2x2 to
# 56x56 images: the Winograd kernels run their multiplications about 1.25x slower than the direct
# convolution runs its own (the transforms' share), and beat it at every channel count, 1 and 3
# included. What decides is the multiplication count per output tile.
_WINOGRAD_COST = 1.25
# Rows of the GEMMs' register tile: the tiles of a batch are computed in groups of this many,
# the last group in a register tile of a half or a quarter of the rows when it fits one.
_GEMM_ROWS = 8


def _gemm_rows(tiles):
    """The rows the GEMMs compute for ``tiles`` rows (see _GEMM_ROWS)."""
    full, tail = divmod(tiles, _GEMM_ROWS)
    for height in (_GEMM_ROWS // 4, _GEMM_ROWS // 2, _GEMM_ROWS):
        if tail <= height:
            return full * _GEMM_ROWS + (height if tail else 0)


def winograd_choose(w_shape, out_h, out_w, stride=1, dilation=1, groups=1, batch=None):
    """The algorithm for ``algo='auto'``: 4 (F(4x4,3x3)), 2 (F(2x2,3x3)) or 0 (direct).

    Counts multiplications per output channel pair: direct 9 per output pixel, F(m x m) (m+2)^2
    per m x m tile (tiles past the edge included; with ``batch``, the rows the GEMMs compute
    for the batch's tiles (_gemm_rows), which matters for a small batch of small images), the
    latter weighted by the measured cost of the transforms; the cheapest wins, F(2x2) on a tie
    with F(4x4) (fewer transforms). Winograd wins everywhere but on outputs one pixel high or
    wide. Used for every pass (the backward-data pass has the input's height and width as its
    output).
    """
    if not winograd_supported(w_shape, stride, dilation, groups):
        return 0
    oh, ow = int(out_h), int(out_w)
    if oh < 1 or ow < 1:
        return 0
    n = 1 if batch is None else max(1, int(batch))
    best, best_cost = 0, 9.0 * oh * ow * n
    for m in (2, 4):
        tiles = n * (-(-oh // m)) * (-(-ow // m))
        if batch is not None:
            tiles = _gemm_rows(tiles)
        cost = _WINOGRAD_COST * tiles * (m + 2) ** 2
        if cost < best_cost:
            best, best_cost = m, cost
    return best


# ----------------------------------------------------------------------------- the run

cdef _padded_bias(b, size_t n, size_t nr):
    """The bias (n,) zero-padded to whole NR-wide panels, as _run reads it (None stays None)."""
    if b is None:
        return None
    return np.concatenate([b, np.zeros((n + nr - 1) // nr * nr - n, np.float32)])


cdef _run(x, WinogradWeights u, b, ptrdiff_t pad_top, ptrdiff_t pad_left, size_t out_h,
          size_t out_w, float cmin, float cmax, int n_threads):
    """y (N, out_h, out_w, u.n) = 3x3 conv of x (N, H, W, u.k) with the transformed weights;
    b: None or _padded_bias(bias, u.n, u.nr)."""
    cdef int isa = current_isa()
    cdef f32_wino_config wc = f32_wino_select(isa, u.tile)
    cdef f32_igemm_config cfg = f32_igemm_select(isa, u.n)
    assert cfg.nr == u.nr
    cdef cconv_wino_shape s
    cdef size_t alpha2 = wc.alpha * wc.alpha
    s.batch, s.in_h, s.in_w, s.in_c = x.shape
    s.out_h, s.out_w, s.out_c = out_h, out_w, u.n
    s.pad_top, s.pad_left = pad_top, pad_left
    s.tiles_h = (out_h + wc.m - 1) // wc.m
    s.tiles_w = (out_w + wc.m - 1) // wc.m
    cdef size_t total = s.batch * s.tiles_h * s.tiles_w
    cdef size_t panels = (s.out_c + cfg.nr - 1) // cfg.nr
    s.co_chunk = min(panels, max(1, CO_CHUNK // cfg.nr)) * cfg.nr
    cdef size_t vc = (s.in_c + ALIGN_FLOATS - 1) // ALIGN_FLOATS * ALIGN_FLOATS
    cdef size_t mc = (s.co_chunk + ALIGN_FLOATS - 1) // ALIGN_FLOATS * ALIGN_FLOATS

    # Each thread takes one equal share of the tiles, in blocks of `cap` tiles: V and M of one
    # block within BLOCK_BYTES, a multiple of MR. (Results do not depend on the blocking: see
    # the module doc.)
    cdef size_t mr = cfg.mr
    cdef size_t per_tile = alpha2 * (vc + mc) * 4
    cdef size_t cap = max(mr, BLOCK_BYTES // per_tile // mr * mr)
    cdef size_t share = ((total + n_threads - 1) // n_threads + mr - 1) // mr * mr
    cdef size_t per_share = (share + cap - 1) // cap
    cap = ((share + per_share - 1) // per_share + mr - 1) // mr * mr
    # V[xi][t][c] and M[xi][t][c]; the extra line between planes keeps them off one cache set.
    s.v_row, s.v_plane = vc, cap * vc + ALIGN_FLOATS
    s.m_row, s.m_plane = mc, cap * mc + ALIGN_FLOATS
    cdef size_t v_floats = alpha2 * s.v_plane + ALIGN_FLOATS
    cdef size_t m_floats = alpha2 * s.m_plane + ALIGN_FLOATS
    # Scratch kept between calls (no page faults of fresh memory on every call), one buffer
    # carved into every thread's V and M, the zero row and every thread's row pointers (whole
    # 64-byte lines each: the pointers stay 8-byte aligned).
    cdef size_t zero_floats = (s.in_c + ALIGN_FLOATS - 1) // ALIGN_FLOATS * ALIGN_FLOATS
    cdef size_t row_floats = 2 * cap * sizeof(size_t) // sizeof(float)
    work = _scratch("winograd.forward", n_threads * (v_floats + m_floats + row_floats)
                    + zero_floats)
    cdef float* vbuf = <float*>data_ptr(work)
    cdef float* mbuf = vbuf + n_threads * v_floats
    cdef float* zero = mbuf + n_threads * m_floats
    memset(zero, 0, zero_floats * sizeof(float))
    cdef size_t* rows = <size_t*>(zero + zero_floats)
    cdef const float* xp = <const float*>data_ptr(x)
    # Weights transformed by the caller are shared by the threads. Otherwise every thread
    # transforms all of them into its own copy (up to PRIVATE_WEIGHT_BYTES in all): the
    # transform is cheap next to the GEMMs, and reading the half that another core has just
    # written costs more than writing it again.
    cdef bint pending = not u._ready
    cdef size_t u_floats = _packed_size(u)
    cdef bint private = pending and n_threads * u_floats * 4 <= PRIVATE_WEIGHT_BYTES
    u_buf = (u.packed if u._ready else
             np.empty((n_threads if private else 1) * u_floats, np.float32))
    cdef float* u_shared = <float*>data_ptr(u_buf)
    cdef float* u_mine
    cdef _WeightJob job
    if pending:
        job = _job(u, u_shared)
    cdef const float* bias = NULL
    if b is not None:  # zero-padded to whole NR-wide panels (_padded_bias), read by the micro-kernel
        assert b.dtype == np.float32 and <size_t>b.shape[0] == panels * cfg.nr
        bias = <const float*>data_ptr(b)
    y = np.empty((s.batch, out_h, out_w, s.out_c), np.float32)
    cdef float* yp = <float*>data_ptr(y)

    cdef cconv_wino_scratch* scratch = <cconv_wino_scratch*>malloc(n_threads * sizeof(cconv_wino_scratch))
    if scratch == NULL:
        raise MemoryError()
    cdef int t
    for t in range(n_threads):
        scratch[t].v = <float*>((<uintptr_t>&vbuf[t * v_floats] + 63) & ~(<uintptr_t>63))
        scratch[t].m = <float*>((<uintptr_t>&mbuf[t * m_floats] + 63) & ~(<uintptr_t>63))
        scratch[t].a_rows = <const float**>&rows[2 * t * cap]
        scratch[t].c_rows = <float**>&rows[(2 * t + 1) * cap]
        scratch[t].zero = zero
    cdef Py_ssize_t part, p, q
    cdef size_t tile0, end
    cdef int tid
    cdef unsigned ftz
    try:
        with nogil, parallel(num_threads=n_threads):
            tid = threadid()
            ftz = cconv_ftz_enter()
            u_mine = u_shared
            if private:
                u_mine = u_shared + tid * u_floats
                for p in range(<Py_ssize_t>job.panels):
                    _run_job(&job, p, u_mine)
            elif pending:  # one shared copy, the threads split its panels
                for q in prange(<Py_ssize_t>job.panels, schedule="static"):
                    _run_job(&job, q, u_shared)
            for part in prange(n_threads, schedule="static", chunksize=1):
                tile0 = part * share
                end = min(total, tile0 + share)
                while tile0 < end:
                    wc.block(&s, &cfg, xp, u_mine, bias, yp, tile0, min(cap, end - tile0),
                             cmin, cmax, &scratch[tid])
                    tile0 = tile0 + cap
            cconv_ftz_restore(ftz)
    finally:
        free(scratch)
    return y


# ----------------------------------------------------------------------------- public functions

def winograd_forward(x, w, b, pad_top, pad_left, out_h, out_w, cmin=-INFINITY, cmax=INFINITY,
                     tile=4, n_threads=None):
    """y = clamp(conv3x3(x, w) + b, cmin, cmax) by Winograd F(tile x tile, 3x3).

    x: NHWC (N, H, W, Cin); w: (Cout, Cin, 3, 3), or winograd_transform_weights(w, tile);
    b: (Cout,) or None. Stride 1, dilation 1; padding pad_top/pad_left, the bottom/right padding
    implied by the output size (out_h, out_w), which must be >= 0. cmin/cmax: the fused
    activation's clamp (-inf/inf: none, 0/inf: ReLU); NaN propagates. Returns y (N, out_h,
    out_w, Cout).

    The transforms mix the pixels of a tile: a NaN or Inf input makes NaN of every output of the
    tiles that read it (a direct convolution limits it to the outputs whose window holds it).
    """
    op = "winograd_forward"
    tile = _check_tile(op, tile)
    x = as_nhwc(op, "input", x)
    cdef int nt = _threads(op, n_threads)
    pt, pl = _int(op, "pad_top", pad_top, 0), _int(op, "pad_left", pad_left, 0)
    oh, ow = _int(op, "out_h", out_h, 1), _int(op, "out_w", out_w, 1)
    n, h, wd, cin = x.shape
    if oh + 2 - pt - h < 0 or ow + 2 - pl - wd < 0:
        raise ValueError(f"{op}: output {oh}x{ow} is too small for input {x.shape} with padding "
                         f"top {pt}, left {pl} (bottom/right padding would be negative)")
    try:
        lo, hi = float(cmin), float(cmax)
    except (TypeError, ValueError):
        raise ValueError(f"{op}: cmin/cmax must be floats, got {cmin!r}, {cmax!r}") from None
    if isnan(lo) or isnan(hi) or lo > hi:
        raise ValueError(f"{op}: clamp bounds must satisfy cmin <= cmax, got {cmin}, {cmax}")
    cdef WinogradWeights u = _weights(op, w, tile, False)
    if u.k != cin:
        raise ValueError(f"{op}: input has {cin} channels but weight {u.weight_shape} expects "
                         f"{u.k} (input shape {x.shape})")
    if b is not None:
        b = as_float32(op, "bias", b)
        check_shape(op, "bias", b, (u.n,))
        check_finite(op, "bias", b)
    nt = threads_for(nt, 2.0 * n * oh * ow * u.n * cin * 9)
    return _run(x, u, _padded_bias(b, u.n, u.nr), pt, pl, oh, ow, lo, hi, nt)


def winograd_backward_data(dy, w, input_shape, pad_top, pad_left, tile=4, n_threads=None):
    """dx of y = conv3x3(x, w) (stride 1, padding pad_top/pad_left, the bottom/right padding
    implied by the shapes) for the output gradient dy (N, Ho, Wo, Cout), by Winograd
    F(tile x tile, 3x3): a 3x3 convolution of dy with w rotated by 180 degrees, in/out channels
    swapped, padding 2 - pad. w: (Cout, Cin, 3, 3), or winograd_transform_weights(w, tile,
    backward_data=True). Returns dx with shape ``input_shape`` (N, H, W, Cin).
    """
    op = "winograd_backward_data"
    tile = _check_tile(op, tile)
    try:
        shape = tuple(operator.index(v) for v in input_shape)
    except TypeError:
        raise ValueError(f"{op}: input_shape must be 4 ints (N, H, W, C), got {input_shape!r}") from None
    if len(shape) != 4 or min(shape) < 1:
        raise ValueError(f"{op}: input_shape must be 4 positive ints (N, H, W, C), got {input_shape!r}")
    dy = as_nhwc(op, "grad_output", dy)
    cdef int nt = _threads(op, n_threads)
    pt, pl = _int(op, "pad_top", pad_top, 0), _int(op, "pad_left", pad_left, 0)
    n, h, wd, cin = shape
    cdef WinogradWeights u = _weights(op, w, tile, True)
    if u.n != cin:
        raise ValueError(f"{op}: input_shape {shape} has {cin} channels but weight "
                         f"{u.weight_shape} expects {u.n}")
    if dy.shape[0] != n or dy.shape[3] != u.k:
        raise ValueError(f"{op}: grad_output {dy.shape} does not match input_shape {shape} and "
                         f"weight {u.weight_shape}")
    oh, ow = dy.shape[1], dy.shape[2]
    if oh + 2 - pt - h < 0 or ow + 2 - pl - wd < 0:
        raise ValueError(f"{op}: grad_output {dy.shape} is too small for input_shape {shape} with "
                         f"padding top {pt}, left {pl} (bottom/right padding would be negative)")
    nt = threads_for(nt, 2.0 * n * h * wd * u.n * u.k * 9)
    return _run(dy, u, None, 2 - pt, 2 - pl, h, wd, -INFINITY, INFINITY, nt)


cdef size_t _wgrad_slices(size_t parts, size_t rows, size_t threads):
    """Slices per part (at most ``rows``) so that parts x slices share out over the threads with
    no more than 1/8 of the time idle (or as close as ``rows`` allows); 1 when the parts do."""
    cdef size_t n, items, best = 1
    cdef double use, best_use = 0.0
    for n in range(1, max(1, rows) + 1):
        items = parts * n
        use = <double>items / (threads * ((items + threads - 1) // threads))
        if use > best_use + 1e-9:
            best, best_use = n, use
        if use >= 0.875:
            break
    return best


cdef _run_weight_grad(x, dy, ptrdiff_t pad_top, ptrdiff_t pad_left, int tile, int n_threads):
    """dw (Cout, Cin, 3, 3) = sum over dy's tiles of G^T [(A dy A^T) . (B^T x B)] G."""
    op = "winograd_backward_weight"
    cdef int isa = current_isa()
    cdef f32_wino_config wc = f32_wino_select(isa, tile)
    cdef cconv_wino_shape s
    s.batch, s.in_h, s.in_w, s.in_c = x.shape
    s.out_h, s.out_w, s.out_c = dy.shape[1], dy.shape[2], dy.shape[3]
    cdef f32_igemm_config cfg = f32_igemm_select(isa, s.out_c)
    cdef size_t alpha2 = wc.alpha * wc.alpha, cin = s.in_c, cout = s.out_c
    s.pad_top, s.pad_left = pad_top, pad_left
    s.tiles_h = (s.out_h + wc.m - 1) // wc.m
    s.tiles_w = (s.out_w + wc.m - 1) // wc.m
    s.co_chunk = cout
    cdef size_t total = s.batch * s.tiles_h * s.tiles_w
    cdef size_t m_floats = alpha2 * cin * cout
    cdef size_t n_parts = max(1, min(WGRAD_MAX_PARTS, total // WGRAD_MIN_PART_TILES,
                                     WGRAD_PARTIAL_FLOATS // m_floats))
    # V[xi][t][ci] and Ydy[xi][t][co] of one block of tiles within BLOCK_BYTES; Ydy rows hold
    # whole NR-wide panels, which the micro-kernel reads in place.
    cdef size_t vc = (cin + ALIGN_FLOATS - 1) // ALIGN_FLOATS * ALIGN_FLOATS
    cdef size_t yc = (cout + cfg.nr - 1) // cfg.nr * cfg.nr
    yc = (yc + ALIGN_FLOATS - 1) // ALIGN_FLOATS * ALIGN_FLOATS
    cdef size_t cap = max(1, BLOCK_BYTES // (alpha2 * (vc + yc) * 4))
    cap = min(cap, (total + n_parts - 1) // n_parts)
    # Parts that do not share out evenly over the threads: each part's input channels (rows of
    # M) are split in slices of whole 64-byte rows, one work item per (part, slice). The blocks,
    # and so every row's sums, stay the same: the slices change who computes a row, not what.
    cdef size_t n_slices = _wgrad_slices(n_parts, vc // ALIGN_FLOATS, n_threads)
    cdef size_t width = (vc // ALIGN_FLOATS + n_slices - 1) // n_slices * ALIGN_FLOATS
    n_slices = (cin + width - 1) // width
    s.v_row, s.v_plane = width, cap * width + ALIGN_FLOATS
    s.m_row, s.m_plane = yc, cap * yc + ALIGN_FLOATS
    cdef size_t v_floats = alpha2 * s.v_plane + ALIGN_FLOATS
    cdef size_t y_floats = alpha2 * s.m_plane + ALIGN_FLOATS
    check_workspace(op, 4 * (n_parts + 3) * m_floats
                    + 4 * n_threads * (v_floats + y_floats + 4 * cfg.mr))
    # Scratch kept between calls. Ydy's pad columns (past out_c) hold whatever a previous call
    # left: the micro-kernel reads them into columns it never stores.
    cdef float[::1] pv = _scratch("winograd_wgrad.partial", n_parts * m_floats)
    cdef float[::1] vbuf = _scratch("winograd_wgrad.v", n_threads * v_floats)
    cdef float[::1] ybuf = _scratch("winograd_wgrad.ydy", n_threads * y_floats)
    cdef size_t[::1] rows = _scratch("winograd_wgrad.rows", 2 * n_threads * cfg.mr, np.uintp)
    zero_buf = _scratch("winograd_wgrad.zero", max(cin, cout, ALIGN_FLOATS))
    zero_buf.fill(0.0)
    cdef const float[::1] zero = zero_buf
    cdef const float[::1] xv = x.reshape(-1)
    cdef const float[::1] dyv = dy.reshape(-1)
    cdef cconv_wino_wgrad_scratch* scratch = <cconv_wino_wgrad_scratch*>malloc(
        n_threads * sizeof(cconv_wino_wgrad_scratch))
    if scratch == NULL:
        raise MemoryError()
    cdef int t
    for t in range(n_threads):
        scratch[t].v = <float*>((<uintptr_t>&vbuf[t * v_floats] + 63) & ~(<uintptr_t>63))
        scratch[t].ydy = <float*>((<uintptr_t>&ybuf[t * y_floats] + 63) & ~(<uintptr_t>63))
        scratch[t].a_rows = <const float**>&rows[2 * t * cfg.mr]
        scratch[t].c_rows = <float**>&rows[(2 * t + 1) * cfg.mr]
        scratch[t].zero = &zero[0]
    cdef Py_ssize_t item
    cdef size_t part, k0, tile0, end
    cdef int tid, flags
    cdef unsigned ftz
    try:
        with nogil, parallel(num_threads=n_threads):
            tid = threadid()
            ftz = cconv_ftz_enter()
            for item in prange(<Py_ssize_t>(n_parts * n_slices), schedule="static"):
                part = item // n_slices
                k0 = item % n_slices * width
                tile0 = total * part // n_parts
                end = total * (part + 1) // n_parts
                flags = 0
                while tile0 < end:
                    wc.wgrad_block(&s, &cfg, &xv[0], &dyv[0], &pv[part * m_floats], tile0,
                                   min(cap, end - tile0), k0, min(cin, k0 + width), flags,
                                   &scratch[tid])
                    flags = FC_IGEMM_ACCUMULATE
                    tile0 = tile0 + cap
            cconv_ftz_restore(ftz)
    finally:
        free(scratch)
    # The parts summed in order and transformed, threads splitting the input channels.
    dwt = np.empty((3, 3, cin, cout), np.float32)
    cdef float[::1] dv = dwt.reshape(-1)
    cdef Py_ssize_t k
    for k in prange(<Py_ssize_t>cin, nogil=True, num_threads=n_threads, schedule="static"):
        wc.wgrad_out(cin, cout, &pv[0], n_parts, m_floats, k, k + 1, &dv[0])
    return np.ascontiguousarray(dwt.transpose(3, 2, 0, 1))


def winograd_backward_weight(x, dy, pad_top, pad_left, tile=4, n_threads=None):
    """dw (Cout, Cin, 3, 3) of y = conv3x3(x, w) (stride 1, one group, padding pad_top/pad_left,
    the bottom/right padding implied by the shapes) for the output gradient dy (N, Ho, Wo, Cout),
    by Winograd F(3x3, tile x tile): per tile of dy, G^T [(A dy A^T) . (B^T x B)] G (the forward
    F(tile x tile, 3x3) transposed), the sum over the tiles taken before the last transform.
    Parts of the tiles are summed in a fixed order: the result does not depend on the threads.
    """
    op = "winograd_backward_weight"
    tile = _check_tile(op, tile)
    x = as_nhwc(op, "input", x)
    dy = as_nhwc(op, "grad_output", dy)
    cdef int nt = _threads(op, n_threads)
    pt, pl = _int(op, "pad_top", pad_top, 0), _int(op, "pad_left", pad_left, 0)
    n, h, wd, cin = x.shape
    if dy.shape[0] != n:
        raise ValueError(f"{op}: input {x.shape} and grad_output {dy.shape} differ in batch size")
    oh, ow = dy.shape[1], dy.shape[2]
    if oh + 2 - pt - h < 0 or ow + 2 - pl - wd < 0:
        raise ValueError(f"{op}: grad_output {dy.shape} is too small for input {x.shape} with "
                         f"padding top {pt}, left {pl} (bottom/right padding would be negative)")
    nt = threads_for(nt, 2.0 * n * oh * ow * dy.shape[3] * cin * 9)
    return _run_weight_grad(x, dy, pt, pl, tile, nt)
