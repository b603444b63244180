/* sha256.h — SHA-256 (FIPS 180-4), for the kernel cache's content addresses and checksums.
 * Streaming: init, update any number of times, final. */
#ifndef CAPC_CODEGEN_SHA256_H
#define CAPC_CODEGEN_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct Sha256 {
    uint32_t h[8];
    uint64_t bytes;       /* message length so far */
    unsigned char block[64];
    size_t used;          /* bytes waiting in block */
} Sha256;

void sha256_init(Sha256 *s);
void sha256_update(Sha256 *s, const void *data, size_t n);
void sha256_final(Sha256 *s, unsigned char digest[32]);
/* digest as 64 lowercase hex digits into out[65]. */
void sha256_hex(const unsigned char digest[32], char out[65]);

#endif
