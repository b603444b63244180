/* cache.h — the on-disk cache of compiled kernels (docs/compile-cache.md).
 *
 * Content-addressed: the key is a SHA-256 over everything that determines the compiled
 * bytes (source, compiler identity and version, options, arch; the caller builds it with
 * kcache_key), the value the compiler's output (a cubin, PTX or an object file). Entries
 * carry a checksum, are written to a temp file and renamed into place (two capc processes
 * sharing a cache never see a half-written entry), and are evicted least recently used first
 * once the cache grows past its limit. Every failure of the cache only costs speed: a damaged
 * entry is deleted and rebuilt, a failed write is skipped, an unusable directory means
 * compiling without the cache. Thread-safe (the packager's worker threads share one). */
#ifndef CAPC_CODEGEN_CACHE_H
#define CAPC_CODEGEN_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "sha256.h"

#define KCACHE_DEFAULT_MAX_BYTES ((int64_t)2 << 30) /* 2 GiB */

typedef struct KernelCache KernelCache;

typedef struct KernelCacheStats {
    int hits, misses, damaged, stored;
    int evicted;
    int64_t bytes; /* the cache's size after eviction (0: not measured: nothing was stored) */
} KernelCacheStats;

/* The directory used when none is given (malloc'd; NULL when no variable says where):
 * $CAPC_CACHE_DIR, else $XDG_CACHE_HOME/capc, else $HOME/.cache/capc. */
char *kcache_default_dir(void);

/* Opens the cache in dir, creating it if missing. NULL when it cannot be created or written:
 * why says so in one line, and the caller compiles without a cache. max_bytes <= 0: the
 * default limit. */
KernelCache *kcache_open(const char *dir, int64_t max_bytes, char *why, size_t why_size);
const char *kcache_dir(const KernelCache *c);

/* A key: SHA-256 over the parts, each preceded by its length (so "ab"+"c" != "a"+"bc"). */
void kcache_key(unsigned char key[32], const char *const *parts, const size_t *lengths, int n);

/* 1 and *data (malloc'd, the caller frees) and *size on a hit; 0 on a miss. A damaged entry
 * (bad header, size or checksum) is deleted with a warning on stderr and is a miss. */
int kcache_get(KernelCache *c, const unsigned char key[32], unsigned char **data, size_t *size);
/* Stores data under key. A failure warns once per cache and is otherwise ignored. */
void kcache_put(KernelCache *c, const unsigned char key[32], const void *data, size_t size);
/* When anything was stored, evicts least recently used entries (and temp files left by
 * killed writers) until the cache is under 90% of its limit; then frees c. */
void kcache_close(KernelCache *c, KernelCacheStats *stats);

#endif
