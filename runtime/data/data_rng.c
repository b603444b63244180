/* data_rng.c — the data pipeline's keyed draws on Philox4x32-10 (support/philox.h). */
#include "data_rng.h"

#include "philox.h"

uint64_t data_rand64(uint32_t k0, uint32_t k1, uint32_t c0, uint32_t c1, uint32_t c2) {
    const uint32_t ctr[4] = {c0, c1, c2, 0};
    const uint32_t key[2] = {k0, k1};
    uint32_t r[4];
    philox4x32_10(ctr, key, r);
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
