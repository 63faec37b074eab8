/* Kernel test harness: main program and the shared helpers of harness.h.
 *
 * usage: harness [--isa NAME] [--family NAME] [--seed N] [--verbose]
 *
 * For every SIMD instruction set this CPU runs (other than scalar), runs every family of
 * families.h through its select function against the scalar kernels. Prints one line per ISA
 * with its case count, then "N passed, M failed"; the exit status is 1 when a case failed.
 */
#include "harness.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "families.h"

#define DECLARE_FAMILY(name) void family_##name(struct harness* h, int isa);
HARNESS_FAMILIES(DECLARE_FAMILY)
#undef DECLARE_FAMILY

struct family {
    const char* name;
    void (*run)(struct harness* h, int isa);
};

#define FAMILY_ENTRY(name) {#name, family_##name},
static const struct family FAMILIES[] = {HARNESS_FAMILIES(FAMILY_ENTRY)};
#undef FAMILY_ENTRY

static const char* const ISA_NAMES[] = {"scalar", "avx2", "avx512", "neon"};
#define N_ISAS (sizeof ISA_NAMES / sizeof ISA_NAMES[0])

#define GUARD_BYTES 128
#define GUARD_BYTE 0xA5
#define JUNK_BYTE 0x7B

/* ---------------------------------------------------------------------------- random numbers */

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint64_t harness_u64(struct harness* h) {
    h->rng += 0x9E3779B97F4A7C15ull;
    return mix64(h->rng);
}

size_t harness_range(struct harness* h, size_t lo, size_t hi) {
    return lo + (size_t)(harness_u64(h) % (uint64_t)(hi - lo + 1));
}

float harness_uniform(struct harness* h, float lo, float hi) {
    const double u = (double)(harness_u64(h) >> 11) * 0x1.0p-53;
    float x = (float)(lo + (hi - lo) * u);
    return x < hi ? x : lo;
}

float harness_normal(struct harness* h) {
    const double u1 = ((double)(harness_u64(h) >> 11) + 1.0) * 0x1.0p-53;
    const double u2 = (double)(harness_u64(h) >> 11) * 0x1.0p-53;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

int harness_chance(struct harness* h, unsigned num, unsigned den) {
    return harness_u64(h) % den < num;
}

size_t harness_pick(struct harness* h, const size_t* values, size_t count) {
    return values[harness_range(h, 0, count - 1)];
}

void harness_fill(struct harness* h, float* x, size_t n, float lo, float hi, int specials) {
    static const float special[] = {NAN, -NAN, INFINITY, -INFINITY, 0.0f, -0.0f,
                                    1e-30f, -1e-30f, 1e30f, -1e30f, 100.0f, -100.0f};
    for (size_t i = 0; i < n; i++) {
        x[i] = harness_uniform(h, lo, hi);
        if (specials && harness_chance(h, 1, 16))
            x[i] = special[harness_range(h, 0, sizeof special / sizeof special[0] - 1)];
    }
}

const size_t HARNESS_LENGTHS[] = {0,  1,  2,  3,  4,  5,  6,   7,   8,   9,   12,  15,
                                   16, 17, 23, 24, 31, 32, 33,  47,  48,  49,  63,  64,
                                   65, 96, 127, 128, 129, 255, 256, 257, 1000, 1031};
const size_t HARNESS_N_LENGTHS = sizeof HARNESS_LENGTHS / sizeof HARNESS_LENGTHS[0];

/* ------------------------------------------------------------------------------------ buffers */

static void free_buffers(struct harness* h) {
    for (size_t i = 0; i < h->n_buffers; i++) free(h->buffers[i].block);
    h->n_buffers = 0;
}

static void* new_buffer(struct harness* h, size_t bytes, size_t element) {
    if (h->n_buffers == HARNESS_MAX_BUFFERS) {
        fprintf(stderr, "harness: more than %d live buffers at case %s (call harness_free)\n",
                HARNESS_MAX_BUFFERS, h->case_name);
        exit(2);
    }
    /* 0 to 3 elements past a 64-byte boundary: most vector accesses are unaligned. */
    const size_t misalign = harness_range(h, 0, 3) * element;
    const size_t offset = GUARD_BYTES + misalign;
    const size_t total = (offset + bytes + GUARD_BYTES + 63) / 64 * 64;
    unsigned char* block = aligned_alloc(64, total);
    if (block == NULL) {
        fprintf(stderr, "harness: out of memory\n");
        exit(2);
    }
    memset(block, GUARD_BYTE, offset);
    memset(block + offset, JUNK_BYTE, bytes);
    memset(block + offset + bytes, GUARD_BYTE, GUARD_BYTES);
    h->buffers[h->n_buffers++] = (struct harness_buffer){block, offset, bytes};
    return block + offset;
}

float* harness_floats(struct harness* h, size_t n) { return new_buffer(h, n * sizeof(float), sizeof(float)); }
double* harness_doubles(struct harness* h, size_t n) { return new_buffer(h, n * sizeof(double), sizeof(double)); }
int32_t* harness_i32(struct harness* h, size_t n) { return new_buffer(h, n * sizeof(int32_t), sizeof(int32_t)); }
int64_t* harness_i64(struct harness* h, size_t n) { return new_buffer(h, n * sizeof(int64_t), sizeof(int64_t)); }
uint8_t* harness_u8(struct harness* h, size_t n) { return new_buffer(h, n, 1); }
void** harness_ptrs(struct harness* h, size_t n) { return new_buffer(h, n * sizeof(void*), sizeof(void*)); }

float* harness_copy_floats(struct harness* h, const float* x, size_t n) {
    float* y = harness_floats(h, n);
    if (n) memcpy(y, x, n * sizeof(float));
    return y;
}

/* ------------------------------------------------------------------------------------ reports */

static void report(struct harness* h, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

static void report(struct harness* h, const char* fmt, ...) {
    h->case_failed = 1;
    if (h->reports++ >= h->max_reports) {
        if (h->reports == h->max_reports + 1)
            printf("  (further failure messages suppressed)\n");
        return;
    }
    printf("FAIL %s/%s [%s]: ", h->isa_name, h->family, h->case_name);
    va_list args;
    va_start(args, fmt);
    vprintf(fmt, args);
    va_end(args);
    printf("\n");
}

int harness_expect(struct harness* h, int ok, const char* fmt, ...) {
    if (ok) return 1;
    char message[512];
    va_list args;
    va_start(args, fmt);
    vsnprintf(message, sizeof message, fmt, args);
    va_end(args);
    report(h, "%s", message);
    return 0;
}

int harness_expect_own_kernel(struct harness* h, const char* what, const void* isa_fn,
                              const void* scalar_fn) {
    return harness_expect(h, isa_fn != scalar_fn,
                          "%s: the %s table holds the scalar kernel (no %s kernel to test)", what,
                          h->isa_name, h->isa_name);
}

static uint32_t bits_f32(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}

static int same_bits_f32(float a, float b) {
    if (isnan(a) && isnan(b)) return 1;
    uint32_t ua, ub;
    memcpy(&ua, &a, 4);
    memcpy(&ub, &b, 4);
    return ua == ub;
}

static int same_bits_f64(double a, double b) {
    if (isnan(a) && isnan(b)) return 1;
    uint64_t ua, ub;
    memcpy(&ua, &a, 8);
    memcpy(&ub, &b, 8);
    return ua == ub;
}

/* 1 if got is within tolerance of want (see harness.h). */
static int close_enough(double got, double want, double rtol, double atol) {
    if (isnan(want) || isnan(got)) return isnan(want) && isnan(got);
    if (isinf(want) || isinf(got)) return got == want;
    return fabs(got - want) <= rtol * fabs(want) + atol;
}

int harness_expect_f32(struct harness* h, const char* what, size_t n, const float* got,
                       const float* want, double rtol, double atol) {
    const int exact = rtol == 0.0 && atol == 0.0;
    size_t bad = 0, first = 0;
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        const int ok = exact ? same_bits_f32(got[i], want[i])
                             : close_enough(got[i], want[i], rtol, atol);
        if (!ok) {
            if (bad++ == 0) first = i;
            continue;
        }
        if (!exact && isfinite(want[i])) {
            const double e = fabs((double)got[i] - (double)want[i]);
            if (e > worst) worst = e;
        }
    }
    if (bad == 0) return 1;
    report(h, "%s: %zu of %zu elements differ; first at %zu: got %.9g (0x%08x), scalar %.9g "
              "(0x%08x)%s",
           what, bad, n, first, got[first], bits_f32(got[first]), want[first],
           bits_f32(want[first]), exact ? ", bits must match" : "");
    return 0;
}

int harness_expect_f32_close(struct harness* h, const char* what, size_t n, const float* got,
                             const float* want, double tol) {
    return harness_expect_f32(h, what, n, got, want, tol, tol * harness_max_abs(n, want) + 1e-37);
}

int harness_expect_f64(struct harness* h, const char* what, size_t n, const double* got,
                       const double* want, double rtol, double atol) {
    const int exact = rtol == 0.0 && atol == 0.0;
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++) {
        const int ok = exact ? same_bits_f64(got[i], want[i])
                             : close_enough(got[i], want[i], rtol, atol);
        if (!ok && bad++ == 0) first = i;
    }
    if (bad == 0) return 1;
    report(h, "%s: %zu of %zu elements differ; first at %zu: got %.17g, scalar %.17g", what, bad,
           n, first, got[first], want[first]);
    return 0;
}

int harness_expect_i32(struct harness* h, const char* what, size_t n, const int32_t* got,
                       const int32_t* want) {
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++)
        if (got[i] != want[i] && bad++ == 0) first = i;
    if (bad == 0) return 1;
    report(h, "%s: %zu of %zu elements differ; first at %zu: got %d, scalar %d", what, bad, n,
           first, (int)got[first], (int)want[first]);
    return 0;
}

int harness_expect_u8(struct harness* h, const char* what, size_t n, const uint8_t* got,
                      const uint8_t* want) {
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++)
        if (got[i] != want[i] && bad++ == 0) first = i;
    if (bad == 0) return 1;
    report(h, "%s: %zu of %zu elements differ; first at %zu: got %u, scalar %u", what, bad, n,
           first, (unsigned)got[first], (unsigned)want[first]);
    return 0;
}

double harness_max_abs(size_t n, const float* x) {
    double m = 0.0;
    for (size_t i = 0; i < n; i++)
        if (isfinite(x[i]) && fabs((double)x[i]) > m) m = fabs((double)x[i]);
    return m;
}

/* -------------------------------------------------------------------------------------- cases */

static void close_case(struct harness* h) {
    if (!h->case_open) return;
    for (size_t b = 0; b < h->n_buffers; b++) {
        const struct harness_buffer* buf = &h->buffers[b];
        const unsigned char* lo = buf->block;
        const unsigned char* hi = buf->block + buf->offset + buf->bytes;
        for (size_t i = 0; i < buf->offset; i++)
            if (lo[i] != GUARD_BYTE) {
                report(h, "buffer %zu: written %zu bytes before its start", b, buf->offset - i);
                memset(buf->block, GUARD_BYTE, buf->offset);  /* report it once */
                break;
            }
        for (size_t i = GUARD_BYTES; i-- > 0;)
            if (hi[i] != GUARD_BYTE) {
                report(h, "buffer %zu (%zu bytes): written %zu bytes past its end", b, buf->bytes,
                       i + 1);
                memset(buf->block + buf->offset + buf->bytes, GUARD_BYTE, GUARD_BYTES);
                break;
            }
    }
    h->cases++;
    h->family_cases++;
    if (h->case_failed) {
        h->failed++;
        h->family_failed++;
    }
    if (h->verbose > 1) printf("  %-6s %s\n", h->case_failed ? "FAIL" : "ok", h->case_name);
    h->case_open = 0;
    h->case_failed = 0;
}

void harness_case(struct harness* h, const char* fmt, ...) {
    close_case(h);
    va_list args;
    va_start(args, fmt);
    vsnprintf(h->case_name, sizeof h->case_name, fmt, args);
    va_end(args);
    h->case_open = 1;
    h->case_failed = 0;
}

void harness_free(struct harness* h) {
    close_case(h);
    free_buffers(h);
}

/* ----------------------------------------------------------------------------------------- main */

static uint64_t hash_name(const char* s) {
    uint64_t z = 1469598103934665603ull;
    for (; *s; s++) z = (z ^ (unsigned char)*s) * 1099511628211ull;
    return z;
}

static void usage(const char* argv0) {
    fprintf(stderr, "usage: %s [--isa NAME] [--family NAME] [--seed N] [--verbose|-v]...\n", argv0);
    exit(2);
}

int main(int argc, char** argv) {
    struct harness h;
    memset(&h, 0, sizeof h);
    h.seed = 20240607;
    h.max_reports = 40;
    const char* only_isa = NULL;
    const char* only_family = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--isa") && i + 1 < argc) only_isa = argv[++i];
        else if (!strcmp(argv[i], "--family") && i + 1 < argc) only_family = argv[++i];
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc) h.seed = strtoull(argv[++i], NULL, 0);
        else if (!strcmp(argv[i], "--verbose") || !strcmp(argv[i], "-v")) h.verbose++;
        else usage(argv[0]);
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    /* The ops run their kernels with denormals flushed (cconv_ftz_enter): so does the harness. */
    cconv_ftz_enter();

    const unsigned supported = cconv_supported_isas();
    printf("kernel harness, seed %llu; this CPU runs:", (unsigned long long)h.seed);
    for (unsigned i = 0; i < N_ISAS; i++)
        if (supported & (1u << i)) printf(" %s", ISA_NAMES[i]);
    printf("\n");

    size_t total = 0, total_failed = 0, isas_run = 0;
    for (unsigned isa = 1; isa < N_ISAS; isa++) {
        if (!(supported & (1u << isa))) continue;
        if (only_isa && strcmp(only_isa, ISA_NAMES[isa])) continue;
        isas_run++;
        h.isa_name = ISA_NAMES[isa];
        h.cases = h.failed = 0;
        char detail[1024] = "";
        size_t used = 0;
        for (size_t f = 0; f < sizeof FAMILIES / sizeof FAMILIES[0]; f++) {
            if (only_family && strcmp(only_family, FAMILIES[f].name)) continue;
            h.family = FAMILIES[f].name;
            h.family_cases = h.family_failed = 0;
            /* The same cases for every ISA: the seed depends on the family only. */
            h.rng = mix64(h.seed ^ hash_name(FAMILIES[f].name));
            FAMILIES[f].run(&h, (int)isa);
            harness_free(&h);
            if (h.verbose)
                printf("  %s/%s: %zu cases, %zu failed\n", h.isa_name, h.family, h.family_cases,
                       h.family_failed);
            if (used < sizeof detail)
                used += (size_t)snprintf(detail + used, sizeof detail - used, "%s%s %zu",
                                         used ? ", " : "", h.family, h.family_cases);
        }
        printf("%s: %zu cases, %zu failed (%s)\n", h.isa_name, h.cases, h.failed, detail);
        total += h.cases;
        total_failed += h.failed;
    }
    if (isas_run == 0) printf("no SIMD instruction set to test on this CPU\n");
    printf("%zu passed, %zu failed\n", total - total_failed, total_failed);
    return total_failed ? 1 : 0;
}
