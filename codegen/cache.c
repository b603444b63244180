/* cache.c — the kernel cache on disk (cache.h says what it promises).
 *
 * Layout: DIR/v1/KK/KEY, KEY the 64 hex digits of the key and KK its first two (so no
 * directory holds more than a few hundred entries). An entry is
 *     "capc-cache-1\n"  u64 payload size (little-endian)  SHA-256 of the payload  payload
 * A hit touches the entry's mtime, which is what least-recently-used eviction sorts by.
 * Temp files are DIR/v1/KK/.tmp-PID-N; a writer killed before its rename leaves one behind,
 * and eviction removes those older than an hour (a live writer finishes in seconds).
 */
#define _GNU_SOURCE /* utimensat, AT_FDCWD */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "diag.h"
#include "package.h"

static const char MAGIC[] = "capc-cache-1\n";
#define MAGIC_LEN (sizeof MAGIC - 1)
#define HEADER_LEN (MAGIC_LEN + 8 + 32)
#define STALE_TEMP_SECONDS 3600

struct KernelCache {
    char *root; /* DIR, as given */
    char *dir;  /* DIR/v1 */
    int64_t max_bytes;
    pthread_mutex_t lock; /* the stats, the warning flag and the temp counter */
    KernelCacheStats stats;
    int warned_write;
    unsigned temp_counter;
};

char *kcache_default_dir(void) {
    const char *v = getenv("CAPC_CACHE_DIR");
    if (v != NULL && *v != '\0') return strdup(v);
    const char *base = getenv("XDG_CACHE_HOME"), *tail = "/capc";
    if (base == NULL || *base == '\0') {
        base = getenv("HOME");
        tail = "/.cache/capc";
    }
    if (base == NULL || *base == '\0') return NULL;
    size_t size = strlen(base) + strlen(tail) + 1;
    char *dir = malloc(size);
    if (dir != NULL) snprintf(dir, size, "%s%s", base, tail);
    return dir;
}

/* Can a file be created in dir? (Permission bits say nothing for root; trying does.) */
static int probe_writable(const char *dir) {
    size_t size = strlen(dir) + 32;
    char *path = malloc(size);
    if (path == NULL) return ENOMEM;
    snprintf(path, size, "%s/.probe-XXXXXX", dir);
    int fd = mkstemp(path);
    int err = fd < 0 ? errno : 0;
    if (fd >= 0) {
        close(fd);
        unlink(path);
    }
    free(path);
    return err;
}

KernelCache *kcache_open(const char *dir, int64_t max_bytes, char *why, size_t why_size) {
    why[0] = '\0';
    size_t size = strlen(dir) + 8;
    char *v1 = malloc(size);
    KernelCache *c = calloc(1, sizeof *c);
    if (v1 == NULL || c == NULL) {
        snprintf(why, why_size, "out of memory");
        free(v1);
        free(c);
        return NULL;
    }
    snprintf(v1, size, "%s/v1", dir);
    Diag d = {0};
    int err = diag_make_dirs(&d, v1) != 0 ? -1 : probe_writable(v1);
    if (err != 0) {
        if (err > 0) snprintf(why, why_size, "cannot write the cache directory '%s': %s", dir, strerror(err));
        else snprintf(why, why_size, "%s", d.msg);
        free(v1);
        free(c);
        return NULL;
    }
    c->dir = v1;
    c->root = strdup(dir);
    if (c->root == NULL) {
        snprintf(why, why_size, "out of memory");
        free(v1);
        free(c);
        return NULL;
    }
    c->max_bytes = max_bytes > 0 ? max_bytes : KCACHE_DEFAULT_MAX_BYTES;
    pthread_mutex_init(&c->lock, NULL);
    return c;
}

const char *kcache_dir(const KernelCache *c) { return c->root; }

void kcache_key(unsigned char key[32], const char *const *parts, const size_t *lengths, int n) {
    Sha256 s;
    sha256_init(&s);
    for (int i = 0; i < n; i++) {
        unsigned char len[8];
        for (int b = 0; b < 8; b++) len[b] = (unsigned char)((uint64_t)lengths[i] >> (8 * b));
        sha256_update(&s, len, sizeof len);
        sha256_update(&s, parts[i], lengths[i]);
    }
    sha256_final(&s, key);
}

/* DIR/v1/KK/KEY (malloc'd); with subdir_only, DIR/v1/KK. */
static char *entry_path(const KernelCache *c, const unsigned char key[32], int subdir_only) {
    char hex[65];
    sha256_hex(key, hex);
    size_t size = strlen(c->dir) + 80;
    char *path = malloc(size);
    if (path == NULL) return NULL;
    if (subdir_only) snprintf(path, size, "%s/%.2s", c->dir, hex);
    else snprintf(path, size, "%s/%.2s/%s", c->dir, hex, hex);
    return path;
}

static void count(KernelCache *c, int *field) {
    pthread_mutex_lock(&c->lock);
    (*field)++;
    pthread_mutex_unlock(&c->lock);
}

/* The whole file (malloc'd) or NULL; a missing file is a plain miss (errno ENOENT). */
static unsigned char *read_all(const char *path, size_t *size) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return NULL;
    struct stat st;
    unsigned char *buf = NULL;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0 &&
        (buf = malloc((size_t)st.st_size)) != NULL) {
        size_t got = 0;
        while (got < (size_t)st.st_size) {
            ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            got += (size_t)n;
        }
        *size = got;
    }
    close(fd);
    return buf;
}

/* The payload's offset when the entry is whole, else -1 with what is wrong in why. */
static int check_entry(const unsigned char *buf, size_t size, const char **why) {
    if (size < HEADER_LEN || memcmp(buf, MAGIC, MAGIC_LEN) != 0) {
        *why = "bad header";
        return -1;
    }
    uint64_t n = 0;
    for (int b = 0; b < 8; b++) n |= (uint64_t)buf[MAGIC_LEN + (size_t)b] << (8 * b);
    if (n != size - HEADER_LEN) {
        *why = "wrong size";
        return -1;
    }
    unsigned char sum[32];
    Sha256 s;
    sha256_init(&s);
    sha256_update(&s, buf + HEADER_LEN, (size_t)n);
    sha256_final(&s, sum);
    if (memcmp(sum, buf + MAGIC_LEN + 8, 32) != 0) {
        *why = "checksum mismatch";
        return -1;
    }
    return (int)HEADER_LEN;
}

int kcache_get(KernelCache *c, const unsigned char key[32], unsigned char **data, size_t *size) {
    *data = NULL;
    *size = 0;
    char *path = entry_path(c, key, 0);
    size_t n = 0;
    unsigned char *buf = path != NULL ? read_all(path, &n) : NULL;
    const char *why = NULL;
    int at = buf != NULL ? check_entry(buf, n, &why) : -1;
    if (buf != NULL && at < 0) {
        fprintf(stderr, "capc: warning: cache entry %s is damaged (%s): deleted, compiling it "
                "again\n", path, why);
        unlink(path);
        count(c, &c->stats.damaged);
    }
    if (at < 0) {
        free(buf);
        free(path);
        count(c, &c->stats.misses);
        return 0;
    }
    utimensat(AT_FDCWD, path, NULL, 0); /* recently used: last to be evicted */
    free(path);
    memmove(buf, buf + at, n - (size_t)at);
    *data = buf;
    *size = n - (size_t)at;
    count(c, &c->stats.hits);
    return 1;
}

static int write_all(int fd, const void *data, size_t size) {
    const unsigned char *p = data;
    while (size > 0) {
        ssize_t n = write(fd, p, size);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        p += n;
        size -= (size_t)n;
    }
    return 0;
}

static void warn_write(KernelCache *c, const char *path, int err) {
    pthread_mutex_lock(&c->lock);
    int first = !c->warned_write;
    c->warned_write = 1;
    pthread_mutex_unlock(&c->lock);
    if (first)
        fprintf(stderr, "capc: warning: cannot write to the cache (%s: %s); going on without "
                "storing\n", path, strerror(err));
}

void kcache_put(KernelCache *c, const unsigned char key[32], const void *data, size_t size) {
    char *sub = entry_path(c, key, 1), *path = entry_path(c, key, 0);
    char *tmp = sub != NULL ? malloc(strlen(sub) + 48) : NULL;
    if (tmp == NULL) goto done;
    pthread_mutex_lock(&c->lock);
    unsigned serial = c->temp_counter++;
    pthread_mutex_unlock(&c->lock);
    snprintf(tmp, strlen(sub) + 48, "%s/.tmp-%ld-%u", sub, (long)getpid(), serial);
    if (mkdir(sub, 0777) != 0 && errno != EEXIST) {
        warn_write(c, sub, errno);
        goto done;
    }
    unsigned char header[HEADER_LEN];
    memcpy(header, MAGIC, MAGIC_LEN);
    for (int b = 0; b < 8; b++) header[MAGIC_LEN + (size_t)b] = (unsigned char)((uint64_t)size >> (8 * b));
    Sha256 s;
    sha256_init(&s);
    sha256_update(&s, data, size);
    sha256_final(&s, header + MAGIC_LEN + 8);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        warn_write(c, tmp, errno);
        goto done;
    }
    int bad = write_all(fd, header, sizeof header) != 0 || write_all(fd, data, size) != 0;
    int err = errno;
    if (close(fd) != 0 && !bad) {
        bad = 1;
        err = errno;
    }
    /* rename is atomic: readers see the old entry, none, or the whole new one */
    if (!bad && rename(tmp, path) != 0) {
        bad = 1;
        err = errno;
    }
    if (bad) {
        unlink(tmp);
        warn_write(c, path, err);
    } else {
        count(c, &c->stats.stored);
    }
done:
    free(tmp);
    free(sub);
    free(path);
}

/* ---- eviction ---------------------------------------------------------------------------- */

typedef struct Entry {
    char *path;
    int64_t bytes;
    struct timespec used;
} Entry;

typedef struct Entries {
    Entry *items;
    int n, cap;
    int64_t total;
} Entries;

static int older_first(const void *pa, const void *pb) {
    const Entry *a = pa, *b = pb;
    if (a->used.tv_sec != b->used.tv_sec) return a->used.tv_sec < b->used.tv_sec ? -1 : 1;
    if (a->used.tv_nsec != b->used.tv_nsec) return a->used.tv_nsec < b->used.tv_nsec ? -1 : 1;
    return strcmp(a->path, b->path);
}

static void add_entry(Entries *es, char *path, const struct stat *st) {
    if (es->n == es->cap) {
        int cap = es->cap ? 2 * es->cap : 256;
        Entry *items = realloc(es->items, sizeof *items * (size_t)cap);
        if (items == NULL) {
            free(path);
            return;
        }
        es->items = items;
        es->cap = cap;
    }
    es->items[es->n++] = (Entry){path, (int64_t)st->st_size, st->st_mtim};
    es->total += (int64_t)st->st_size;
}

/* Every entry of one KK directory into es; stale temp files are removed on the way. */
static void scan_subdir(const char *sub, Entries *es, time_t now) {
    DIR *dp = opendir(sub);
    if (dp == NULL) return;
    struct dirent *ent;
    while ((ent = readdir(dp)) != NULL) {
        if (strcmp(ent->d_name, ".") == 0 || strcmp(ent->d_name, "..") == 0) continue;
        size_t size = strlen(sub) + strlen(ent->d_name) + 2;
        char *path = malloc(size);
        if (path == NULL) continue;
        snprintf(path, size, "%s/%s", sub, ent->d_name);
        struct stat st;
        if (lstat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
            free(path);
            continue;
        }
        if (ent->d_name[0] == '.') { /* a temp file (or the write probe) */
            if (now - st.st_mtime > STALE_TEMP_SECONDS) unlink(path);
            free(path);
            continue;
        }
        add_entry(es, path, &st);
    }
    closedir(dp);
}

static void evict(KernelCache *c) {
    Entries es = {0};
    time_t now = time(NULL);
    DIR *dp = opendir(c->dir);
    if (dp == NULL) return;
    struct dirent *ent;
    while ((ent = readdir(dp)) != NULL) {
        if (strlen(ent->d_name) != 2 || ent->d_name[0] == '.') continue;
        size_t size = strlen(c->dir) + 4;
        char *sub = malloc(size);
        if (sub == NULL) continue;
        snprintf(sub, size, "%s/%s", c->dir, ent->d_name);
        scan_subdir(sub, &es, now);
        free(sub);
    }
    closedir(dp);
    int64_t goal = c->max_bytes / 10 * 9;
    if (es.total > c->max_bytes) {
        qsort(es.items, (size_t)es.n, sizeof *es.items, older_first);
        /* Another capc may be evicting too: an entry already gone is simply skipped. */
        for (int i = 0; i < es.n && es.total > goal; i++) {
            if (unlink(es.items[i].path) == 0 || errno == ENOENT) {
                es.total -= es.items[i].bytes;
                c->stats.evicted++;
            }
        }
    }
    c->stats.bytes = es.total;
    for (int i = 0; i < es.n; i++) free(es.items[i].path);
    free(es.items);
}

void kcache_close(KernelCache *c, KernelCacheStats *stats) {
    if (c == NULL) return;
    if (c->stats.stored > 0) evict(c);
    if (stats != NULL) *stats = c->stats;
    pthread_mutex_destroy(&c->lock);
    free(c->dir);
    free(c->root);
    free(c);
}
