/* philox.c — Philox4x32-10 counter-based random numbers (Salmon et al., SC'11) and the
 * dropout keep decision built on it. The reference interpreter, the C kernels and the CUDA
 * kernels all use exactly this arithmetic so dropout masks agree bit for bit everywhere. */
#include "interp.h"

/* Multipliers and Weyl key increments from the Philox paper. */
#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

/* Full 32x32 -> 64-bit product split into its high and low words. */
static void mulhilo32(uint32_t a, uint32_t b, uint32_t *hi, uint32_t *lo) {
    uint64_t p = (uint64_t)a * (uint64_t)b;
    *hi = (uint32_t)(p >> 32);
    *lo = (uint32_t)p;
}

static void philox_round(uint32_t ctr[4], const uint32_t key[2]) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo32(PHILOX_M0, ctr[0], &hi0, &lo0);
    mulhilo32(PHILOX_M1, ctr[2], &hi1, &lo1);
    uint32_t next[4] = {hi1 ^ ctr[1] ^ key[0], lo1, hi0 ^ ctr[3] ^ key[1], lo0};
    for (int i = 0; i < 4; i++) ctr[i] = next[i];
}

void philox4x32_10(const uint32_t counter[4], const uint32_t key[2], uint32_t out[4]) {
    uint32_t ctr[4] = {counter[0], counter[1], counter[2], counter[3]};
    uint32_t k[2] = {key[0], key[1]};
    /* Ten rounds; the key is bumped between rounds (nine times), as in Random123. */
    for (int r = 0; r < 10; r++) {
        if (r > 0) {
            k[0] += PHILOX_W0;
            k[1] += PHILOX_W1;
        }
        philox_round(ctr, k);
    }
    for (int i = 0; i < 4; i++) out[i] = ctr[i];
}

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
