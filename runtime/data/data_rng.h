/* data_rng.h — the counter-based random numbers of the data pipeline: the few draws the data
 * code needs, on Philox4x32-10 (support/philox.h, shared with the rest of the runtime), each
 * keyed so that it depends only on what it is about:
 *
 *   shuffle of epoch e, step i      key {seed, DATA_RNG_TAG}, counter {i, e, 1, 0}
 *   caption choice (epoch e, image) key {seed, DATA_RNG_TAG}, counter {image, e, 2, 0}
 *   hash split of an image key      key {0, DATA_RNG_SPLIT}, counter {fnv lo, fnv hi, 3, 0}
 *   synthetic scene i               key {seed, DATA_RNG_SYNTH}, counter {i, draw, 4, 0}
 *
 * Nothing here has state: a draw is a pure function of its key and counter, so a resumed run,
 * a worker thread or another machine gets the same numbers.
 */
#ifndef DATA_RNG_H
#define DATA_RNG_H

#include <stddef.h>
#include <stdint.h>

#define DATA_RNG_TAG 0x44415441u   /* "DATA" */
#define DATA_RNG_SPLIT 0x53504C54u /* "SPLT" */
#define DATA_RNG_SYNTH 0x53594E54u /* "SYNT" */

/* 64 random bits of (key, counter): out[0] | out[1] << 32. */
uint64_t data_rand64(uint32_t k0, uint32_t k1, uint32_t c0, uint32_t c1, uint32_t c2);

/* Uniform integer in [0, n) for n >= 1 (64-bit draw mod n; the bias is below 2^-32). */
uint32_t data_rand_below(uint64_t bits, uint32_t n);

/* 64-bit FNV-1a of bytes. */
uint64_t data_fnv1a(const void *bytes, size_t n);

/* Fisher-Yates: perm[0..n) = a permutation of 0..n-1 for (seed, epoch): perm starts as the
 * identity, then for i = n-1 down to 1 swap perm[i] with perm[j], j = below(i + 1) drawn from
 * counter {i, epoch, 1, 0}. */
void data_shuffle(int32_t *perm, int32_t n, uint32_t seed, uint32_t epoch);

#endif
