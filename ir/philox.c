/* philox.c — the dropout keep decision on Philox4x32-10 (support/philox.h). The reference
 * interpreter, the C kernels and the CUDA kernels all use exactly this arithmetic so dropout
 * masks agree bit for bit everywhere. */
#include "interp.h"
#include "philox.h"

bool dropout_keep(uint32_t seed, uint32_t step, uint32_t stream, uint64_t index, double p) {
    const uint32_t counter[4] = {(uint32_t)(index & 0xffffffffu), (uint32_t)(index >> 32), stream,
                                 step};
    const uint32_t key[2] = {seed, 0x9E3779B9u};
    uint32_t r[4];
    philox4x32_10(counter, key, r);
    /* 24 high bits give a uniform in [0, 1) that float32 represents exactly, so the CUDA and
     * C kernels can compute the same u in single precision. */
    double u = (double)(r[0] >> 8) * (1.0 / 16777216.0);
    return u >= p;
}
