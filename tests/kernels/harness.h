/* Kernel test harness: every micro-kernel of a SIMD instruction set against the scalar kernel.
 *
 * A family test (family_<name>.c) defines `void family_<name>(struct harness* h, int isa)`; it
 * takes the ISA's kernel table and the scalar one from the family's `..._select` function and, for
 * each case of a seeded sweep of shapes:
 *
 *     harness_free(h);                          frees the buffers of the previous cases
 *     harness_case(h, "vrelu n=%zu", n);        closes the previous case, names this one
 *     float* x = harness_floats(h, n);          buffers at odd offsets, with guard zones
 *     ... run the scalar kernel and the ISA's kernel on copies of the same inputs ...
 *     harness_expect_f32(h, "y", n, got, want, 0, 0);   exact; or _f32_close, _i32, ...
 *
 * and, once, harness_expect_own_kernel for each entry of the ISA's table (an entry that is the
 * scalar function means the ISA has no kernel of its own: a failure, not a vacuous pass).
 * Closing a case checks the guard zones of every live buffer and counts the case. Buffers live
 * until harness_free, so a case may use what an earlier one computed.
 *
 * The list of families is families.h; registering a new family is one line there.
 */
#ifndef CCONV_HARNESS_H
#define CCONV_HARNESS_H

#include <stddef.h>
#include <stdint.h>

#include "core/isa.h"

#define HARNESS_MAX_BUFFERS 128

struct harness_buffer {
    unsigned char* block;   /* aligned_alloc'd: guard, payload, guard */
    size_t offset;          /* payload start within the block */
    size_t bytes;           /* payload size */
};

struct harness {
    /* configuration */
    int verbose;
    size_t max_reports;     /* detailed failure messages printed per run */
    uint64_t seed;
    /* current family, ISA and case */
    const char* family;
    const char* isa_name;
    char case_name[256];
    int case_open;
    int case_failed;
    uint64_t rng;
    struct harness_buffer buffers[HARNESS_MAX_BUFFERS];
    size_t n_buffers;
    /* counts for the current ISA and family */
    size_t cases, failed;
    size_t family_cases, family_failed;
    size_t reports;
};

/* ---------------------------------------------------------------------------- random numbers */

uint64_t harness_u64(struct harness* h);
/* Uniform integer in [lo, hi]. */
size_t harness_range(struct harness* h, size_t lo, size_t hi);
/* Uniform float in [lo, hi). */
float harness_uniform(struct harness* h, float lo, float hi);
/* Standard normal (Box-Muller). */
float harness_normal(struct harness* h);
/* 1 with probability num/den. */
int harness_chance(struct harness* h, unsigned num, unsigned den);
/* An element of `values` (count entries). */
size_t harness_pick(struct harness* h, const size_t* values, size_t count);

/* Fill x[0..n) with uniform values in [lo, hi); with `specials`, about one element in 16 is
 * replaced by one of NaN, +-Inf, +-0, +-tiny, +-huge. */
void harness_fill(struct harness* h, float* x, size_t n, float lo, float hi, int specials);

/* Vector lengths every family sweeps: around the widths of every ISA (1, 4, 8, 16 lanes and
 * their unrolled multiples), below, at and above each, plus a few long ones. */
extern const size_t HARNESS_LENGTHS[];
extern const size_t HARNESS_N_LENGTHS;

/* ------------------------------------------------------------------------------------ cases */

/* Start a case: closes the previous one and names this one (printf format). */
void harness_case(struct harness* h, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

/* Closes the open case and frees every buffer. */
void harness_free(struct harness* h);

/* Buffers, live until harness_free: the payload starts 0 to 3
 * elements past a 64-byte boundary (so vector loads are unaligned in most cases) and is
 * followed and preceded by guard bytes that closing a case checks. Contents: a fixed junk
 * pattern (1.3e36, not NaN): an output element that a kernel leaves unwritten shows up. */
float* harness_floats(struct harness* h, size_t n);
double* harness_doubles(struct harness* h, size_t n);
int32_t* harness_i32(struct harness* h, size_t n);
int64_t* harness_i64(struct harness* h, size_t n);
uint8_t* harness_u8(struct harness* h, size_t n);
void** harness_ptrs(struct harness* h, size_t n);
/* A copy of x[0..n) in a new buffer of the case. */
float* harness_copy_floats(struct harness* h, const float* x, size_t n);

/* Comparisons; `what` names the output in failure messages. Each returns 1 when it passes.
 * f32/f64: |got - want| <= rtol |want| + atol element by element; NaN must face NaN and an
 * infinity the same infinity. rtol = atol = 0 asks for the same bits (NaN payloads aside). */
int harness_expect_f32(struct harness* h, const char* what, size_t n, const float* got,
                       const float* want, double rtol, double atol);
int harness_expect_f64(struct harness* h, const char* what, size_t n, const double* got,
                       const double* want, double rtol, double atol);
int harness_expect_i32(struct harness* h, const char* what, size_t n, const int32_t* got,
                       const int32_t* want);
int harness_expect_u8(struct harness* h, const char* what, size_t n, const uint8_t* got,
                      const uint8_t* want);
/* |got - want| <= tol (|want| + max |want|): relative to the element and to the output's largest
 * magnitude, for results of float sums whose order or FMA use differs between ISAs. */
int harness_expect_f32_close(struct harness* h, const char* what, size_t n, const float* got,
                             const float* want, double tol);
/* A failed check of a condition that is not an array comparison. */
int harness_expect(struct harness* h, int ok, const char* fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The largest finite |x[i]| (0 when there is none): the scale of "relative to the output". */
double harness_max_abs(size_t n, const float* x);

/* A family's kernel table entry for this ISA is the scalar one: the ISA has no kernel of its own
 * and the comparison would be vacuous. Counted as a failed case. Returns 1 if it differs. */
int harness_expect_own_kernel(struct harness* h, const char* what, const void* isa_fn,
                              const void* scalar_fn);

#endif
