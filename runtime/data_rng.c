/* data_rng.c — Philox4x32-10 and the data pipeline's keyed draws (see data_rng.h). */
#include "data_rng.h"

void data_philox(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
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

uint64_t data_rand64(uint32_t k0, uint32_t k1, uint32_t c0, uint32_t c1, uint32_t c2) {
    const uint32_t ctr[4] = {c0, c1, c2, 0};
    const uint32_t key[2] = {k0, k1};
    uint32_t r[4];
    data_philox(ctr, key, r);
    return (uint64_t)r[0] | (uint64_t)r[1] << 32;
}

uint32_t data_rand_below(uint64_t bits, uint32_t n) {
    return n <= 1 ? 0 : (uint32_t)(bits % n);
}

uint64_t data_fnv1a(const void *bytes, size_t n) {
    const unsigned char *p = bytes;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

void data_shuffle(int32_t *perm, int32_t n, uint32_t seed, uint32_t epoch) {
    for (int32_t i = 0; i < n; i++) perm[i] = i;
    for (int32_t i = n - 1; i >= 1; i--) {
        uint64_t bits = data_rand64(seed, DATA_RNG_TAG, (uint32_t)i, epoch, 1);
        int32_t j = (int32_t)data_rand_below(bits, (uint32_t)i + 1);
        int32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}
