/* The two OpenMP runtime calls the op set makes, also in a build without OpenMP (which runs
 * every op on one thread: Cython's parallel blocks then compile to plain loops). */
#ifndef CCONV_OPENMP_OR_SERIAL_H
#define CCONV_OPENMP_OR_SERIAL_H
#ifdef _OPENMP
#include <omp.h>
#else
static inline int omp_get_max_threads(void) { return 1; }
static inline void omp_set_num_threads(int n) { (void)n; }
#endif
#endif
