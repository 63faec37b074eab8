/* The kernel families the harness runs, in order. Adding a family: write family_<name>.c (see
 * harness.h) and add X(<name>) here. */
#ifndef CCONV_HARNESS_FAMILIES_H
#define CCONV_HARNESS_FAMILIES_H

#define HARNESS_FAMILIES(X) \
    X(activation)           \
    X(eltwise)              \
    X(softmax)              \
    X(batchnorm)            \
    X(pool)                 \
    X(upsample)             \
    X(igemm)                \
    X(conv)                 \
    X(dwconv)               \
    X(winograd)             \
    X(optim)                \
    X(peak)

#endif
