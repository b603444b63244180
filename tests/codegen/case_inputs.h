/* case_inputs.h — the random inputs of the per-op kernel cases (op_cases.h), shared so that
 * test_c_kernels and test_cuda_kernels feed every case the very same numbers.
 * xorshift64*, seeded per case; draw() shapes a value by the operand's mode letter:
 * 'p' positive (variances), 's' small integers, 'i' valid ids below id_limit, else [-2, 2).
 * Values are rounded to f32 where the kernel reads f32, so the reference sees the same input. */
#ifndef CAPC_TESTS_CODEGEN_CASE_INPUTS_H
#define CAPC_TESTS_CODEGEN_CASE_INPUTS_H

#include <math.h>
#include <stdint.h>

static uint64_t rng_state;

static inline double uniform(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 2685821657736338717ULL) >> 11) * (1.0 / 9007199254740992.0);
}

static inline double draw(char mode, int64_t id_limit) {
    switch (mode) {
    case 'p': return (float)(0.5 + 1.5 * uniform());
    case 's': return (double)((int)(uniform() * 5) - 2);
    case 'i': return (double)(int64_t)(uniform() * (double)id_limit);
    default: return (float)(-2.0 + 4.0 * uniform());
    }
}

/* x, or (a quarter of the time) NaN, +-inf or a signed zero instead: the special-value pass
 * of the kernel tests (applied to f32 operands only, so ids stay valid). */
static inline double with_specials(double x) {
    static const double special[] = {NAN, INFINITY, -INFINITY, 0.0, -0.0};
    double u = uniform();
    return u < 0.25 ? special[(int)(u * 20) % 5] : x;
}

#endif
