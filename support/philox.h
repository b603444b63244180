/* philox.h — Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3"), the
 * one copy in capc, header-only so that the compiler, libcaprt and libcapdata share it without
 * linking each other. The reference interpreter's dropout (ir/philox.c), weight init, dropout
 * seeds, sampling and the data pipeline all draw from it; the generated kernels carry the same
 * arithmetic in their prelude (codegen/prelude.c), and the tests pin both to the same
 * known-answer vectors. A draw is a pure function of (counter, key). */
#ifndef CAP_PHILOX_H
#define CAP_PHILOX_H

#include <stdint.h>

static inline void philox4x32_10(const uint32_t ctr[4], const uint32_t key[2],
                                 uint32_t out[4]) {
    uint32_t x0 = ctr[0], x1 = ctr[1], x2 = ctr[2], x3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int round = 0; round < 10; round++) {
        uint64_t p0 = (uint64_t)0xD2511F53u * x0;
        uint64_t p1 = (uint64_t)0xCD9E8D57u * x2;
        uint32_t y0 = (uint32_t)(p1 >> 32) ^ x1 ^ k0;
        uint32_t y2 = (uint32_t)(p0 >> 32) ^ x3 ^ k1;
        x0 = y0;
        x1 = (uint32_t)p1;
        x2 = y2;
        x3 = (uint32_t)p0;
        k0 += 0x9E3779B9u; /* golden ratio */
        k1 += 0xBB67AE85u; /* sqrt(3) - 1 */
    }
    out[0] = x0;
    out[1] = x1;
    out[2] = x2;
    out[3] = x3;
}

#endif
