/* test_kernel_cache.c — the kernel cache (codegen/cache.c) and capc's use of it.
 *
 * The cache alone: SHA-256 against FIPS 180-4's test vectors (one shot and streamed in odd
 * pieces); an entry stored comes back byte for byte; a damaged one (a flipped payload byte, a
 * truncated file) is deleted and is a miss; eviction removes the least recently used entries
 * first, a hit counts as a use, and the cache ends under its limit.
 *
 * capc with it, on tests/codegen/data/package_mlp.json (the first two with all targets when
 * NVRTC is here, so the CUDA images go through the cache too; the others, about the cache's
 * directory and processes rather than what is in it, with the cpu target, which is faster):
 *   - a cold compile, a warm one and one with --no-cache give byte-identical cap.so files, and
 *     the warm one compiles nothing (-v: "0 misses");
 *   - a corrupted entry is rebuilt, with a warning naming it, and the output is unchanged;
 *   - two capc processes filling one empty cache at once both succeed with the same output;
 *   - an unusable cache directory gives exactly one warning and the same output;
 *   - `-D lr=` (lr is state, not kernel source: docs/compile-cache.md) recompiles only the
 *     tables' unit: every kernel unit comes from the cache.
 */
#define _GNU_SOURCE /* utimensat */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "cache.h"
#include "codegen.h"
#include "passes/testfiles.h"

#define MODEL "tests/codegen/data/package_mlp.json"

/* ---- SHA-256 --------------------------------------------------------------------------- */

static void expect_digest(const char *data, size_t n, size_t piece, const char *want) {
    Sha256 s;
    sha256_init(&s);
    for (size_t at = 0; at < n; at += piece)
        sha256_update(&s, data + at, n - at < piece ? n - at : piece);
    unsigned char d[32];
    char hex[65];
    sha256_final(&s, d);
    sha256_hex(d, hex);
    assert_string_equal(hex, want);
}

static void test_sha256_vectors(void **state) {
    (void)state;
    static const char *const abc56 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    size_t pieces[] = {1, 3, 63, 64, 65, 1000000};
    for (size_t i = 0; i < sizeof pieces / sizeof pieces[0]; i++) {
        expect_digest("", 0, pieces[i],
                      "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        expect_digest("abc", 3, pieces[i],
                      "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        expect_digest(abc56, strlen(abc56), pieces[i],
                      "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    }
    char *million = malloc(1000000);
    assert_non_null(million);
    memset(million, 'a', 1000000);
    expect_digest(million, 1000000, 4099,
                  "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    free(million);
}

/* ---- the cache alone ------------------------------------------------------------------- */

static char *make_temp_dir(void) {
    const char *base = getenv("TMPDIR");
    char *dir = malloc(4096);
    snprintf(dir, 4096, "%s/capc-cache-test-XXXXXX", base && *base ? base : "/tmp");
    assert_non_null(mkdtemp(dir));
    return dir;
}

static void make_key(unsigned char key[32], const char *text) {
    const char *parts[] = {text};
    size_t lens[] = {strlen(text)};
    kcache_key(key, parts, lens, 1);
}

static char *entry_file(const char *dir, const unsigned char key[32]) {
    char hex[65];
    sha256_hex(key, hex);
    char *path = malloc(4300);
    snprintf(path, 4300, "%s/v1/%.2s/%s", dir, hex, hex);
    return path;
}

static void test_entry_round_trip_and_damage(void **state) {
    (void)state;
    char *dir = make_temp_dir(), why[600];
    KernelCache *c = kcache_open(dir, 0, why, sizeof why);
    if (c == NULL) fail_msg("%s", why);
    unsigned char key[32], other[32];
    make_key(key, "kernel a");
    make_key(other, "kernel b");
    const char payload[] = "\177ELF and some bytes\0with a NUL";
    kcache_put(c, key, payload, sizeof payload);
    kcache_put(c, other, payload, 10);
    unsigned char *data = NULL;
    size_t size = 0;
    assert_int_equal(kcache_get(c, key, &data, &size), 1);
    assert_int_equal(size, sizeof payload);
    assert_memory_equal(data, payload, sizeof payload);
    free(data);

    /* a flipped payload byte: caught by the checksum, deleted, a miss */
    char *path = entry_file(dir, key);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    off_t end = lseek(fd, -3, SEEK_END);
    char byte;
    assert_int_equal(pread(fd, &byte, 1, end), 1);
    byte ^= 0x20;
    assert_int_equal(pwrite(fd, &byte, 1, end), 1);
    close(fd);
    assert_int_equal(kcache_get(c, key, &data, &size), 0);
    assert_null(data);
    assert_false(file_exists(path));
    free(path);

    /* a truncated file (a writer killed mid-rename cannot make one; a full disk can) */
    path = entry_file(dir, other);
    assert_int_equal(truncate(path, 20), 0);
    assert_int_equal(kcache_get(c, other, &data, &size), 0);
    assert_false(file_exists(path));
    free(path);

    KernelCacheStats st;
    kcache_close(c, &st);
    assert_int_equal(st.hits, 1);
    assert_int_equal(st.misses, 2);
    assert_int_equal(st.damaged, 2);
    assert_int_equal(st.stored, 2);
    remove_tree(dir);
    free(dir);
}

static void set_age(const char *path, time_t seconds_ago) {
    struct timespec t[2] = {{time(NULL) - seconds_ago, 0}, {time(NULL) - seconds_ago, 0}};
    assert_int_equal(utimensat(AT_FDCWD, path, t, 0), 0);
}

static void test_eviction_least_recently_used(void **state) {
    (void)state;
    char *dir = make_temp_dir(), why[600];
    /* 20 entries of ~1 KiB under a 12 KiB limit */
    KernelCache *c = kcache_open(dir, 12 * 1024, why, sizeof why);
    if (c == NULL) fail_msg("%s", why);
    char payload[1000];
    memset(payload, 7, sizeof payload);
    unsigned char keys[20][32];
    for (int i = 0; i < 20; i++) {
        char text[32];
        snprintf(text, sizeof text, "entry %d", i);
        make_key(keys[i], text);
        kcache_put(c, keys[i], payload, sizeof payload);
        char *path = entry_file(dir, keys[i]);
        set_age(path, 1000 - i); /* entry 0 the oldest */
        free(path);
    }
    /* a hit on the oldest entry makes it the most recently used */
    unsigned char *data = NULL;
    size_t size = 0;
    assert_int_equal(kcache_get(c, keys[0], &data, &size), 1);
    free(data);
    KernelCacheStats st;
    kcache_close(c, &st);
    assert_true(st.evicted > 0);
    assert_true(st.bytes <= 12 * 1024);
    int kept = 0;
    for (int i = 0; i < 20; i++) {
        char *path = entry_file(dir, keys[i]);
        bool there = file_exists(path);
        free(path);
        kept += there;
        if (i == 0 || i == 19) assert_true(there); /* just used; newest */
        if (i == 1) assert_false(there);            /* the least recently used */
    }
    assert_int_equal(kept, 20 - st.evicted);
    remove_tree(dir);
    free(dir);
}

/* ---- capc with the cache ---------------------------------------------------------------- */

typedef struct Fx {
    char *dir;
    char model[4096];
    const char *target;
} Fx;

static int setup_target(void **state, bool all_targets) {
    Fx *fx = calloc(1, sizeof *fx);
    fx->dir = make_temp_dir();
    snprintf(fx->model, sizeof fx->model, "%s/%s", source_dir(), MODEL);
    fx->target = all_targets && nvrtc_available() ? "--target=all" : "--target=cpu";
    *state = fx;
    return 0;
}

static int setup(void **state) { return setup_target(state, true); }
static int setup_cpu(void **state) { return setup_target(state, false); }

static int teardown(void **state) {
    Fx *fx = *state;
    remove_tree(fx->dir);
    free(fx->dir);
    free(fx);
    return 0;
}

static char *in_dir(const Fx *fx, const char *name) {
    char *path = malloc(4400);
    snprintf(path, 4400, "%s/%s", fx->dir, name);
    return path;
}

/* capc MODEL -o OUT TARGET -v --cache-dir CACHE [extra...]; fails the test unless it exits 0.
 * Returns its stderr (caller frees). */
static char *compile(const Fx *fx, const char *out, const char *cache, const char *extra1,
                     const char *extra2) {
    const char *bin = getenv("CAPC_BIN");
    assert_non_null(bin);
    char *err = in_dir(fx, "stderr.txt");
    char cache_opt[4400];
    snprintf(cache_opt, sizeof cache_opt, "--cache-dir=%s", cache);
    const char *args[] = {fx->model, "-o", out, fx->target, "-v", cache_opt, extra1, extra2, NULL};
    int status = run_program(bin, args, err, NULL);
    char *text = read_text_file(err);
    free(err);
    if (status != 0) fail_msg("capc exited %d:\n%s", status, text);
    return text;
}

static void assert_same_file(const char *a, const char *b) {
    if (!same_file_bytes(a, b)) fail_msg("%s and %s differ", a, b);
}

/* "N misses" from capc -v's cache line, or -1. */
static int misses(const char *log) {
    const char *at = strstr(log, "capc: cache ");
    if (at == NULL) return -1;
    at = strstr(at, " hits, ");
    return at != NULL ? atoi(at + 7) : -1;
}

static int count_lines_with(const char *text, const char *needle) {
    int n = 0;
    for (const char *line = text; line != NULL && *line; ) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        char buf[1024];
        snprintf(buf, sizeof buf, "%.*s", (int)(len < 1023 ? len : 1023), line);
        n += strstr(buf, needle) != NULL;
        line = end ? end + 1 : NULL;
    }
    return n;
}

static void test_warm_compile_is_identical(void **state) {
    Fx *fx = *state;
    char *cache = in_dir(fx, "cache"), *cold = in_dir(fx, "cold.so"), *warm = in_dir(fx, "warm.so"),
         *none = in_dir(fx, "none.so");
    char *log = compile(fx, cold, cache, NULL, NULL);
    assert_true(misses(log) > 0);
    free(log);
    log = compile(fx, warm, cache, NULL, NULL);
    if (misses(log) != 0) fail_msg("a warm compile missed the cache:\n%s", log);
    free(log);
    log = compile(fx, none, cache, "--no-cache", NULL);
    assert_null(strstr(log, "capc: cache "));
    free(log);
    assert_same_file(cold, warm);
    assert_same_file(cold, none);
    free(cache);
    free(cold);
    free(warm);
    free(none);
}

/* Flips a byte in the middle of every entry of the cache: all must be rebuilt. */
static int damage_entries(const char *cache) {
    char cmd[4600];
    snprintf(cmd, sizeof cmd, "find '%s/v1' -type f ! -name '.*' > '%s.list'", cache, cache);
    assert_int_equal(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "%s.list", cache);
    FILE *list = fopen(cmd, "r");
    assert_non_null(list);
    char path[4400];
    int n = 0;
    while (fgets(path, sizeof path, list) != NULL) {
        path[strcspn(path, "\n")] = '\0';
        int fd = open(path, O_RDWR);
        assert_true(fd >= 0);
        off_t mid = lseek(fd, 0, SEEK_END) / 2 + 40;
        char byte = 0;
        assert_int_equal(pread(fd, &byte, 1, mid), 1);
        byte = (char)~byte;
        assert_int_equal(pwrite(fd, &byte, 1, mid), 1);
        close(fd);
        n++;
    }
    fclose(list);
    return n;
}

static void test_damaged_entry_is_rebuilt(void **state) {
    Fx *fx = *state;
    char *cache = in_dir(fx, "damaged-cache"), *first = in_dir(fx, "first.so"),
         *again = in_dir(fx, "again.so");
    free(compile(fx, first, cache, NULL, NULL));
    int n = damage_entries(cache);
    assert_true(n > 0);
    char *log = compile(fx, again, cache, NULL, NULL);
    if (count_lines_with(log, "is damaged") != n)
        fail_msg("want %d 'is damaged' warnings:\n%s", n, log);
    assert_int_equal(misses(log), n);
    free(log);
    assert_same_file(first, again);
    log = compile(fx, again, cache, NULL, NULL); /* rebuilt entries are whole again */
    assert_int_equal(misses(log), 0);
    assert_null(strstr(log, "warning"));
    free(log);
    free(cache);
    free(first);
    free(again);
}

static void test_concurrent_compiles_share_a_cache(void **state) {
    Fx *fx = *state;
    char *cache = in_dir(fx, "shared-cache"), *ref = in_dir(fx, "ref.so"),
         *unused = in_dir(fx, "unused-cache");
    free(compile(fx, ref, unused, "--no-cache", NULL));
    free(unused);
    const char *bin = getenv("CAPC_BIN");
    char cache_opt[4400], out[2][4400], err[2][4400];
    snprintf(cache_opt, sizeof cache_opt, "--cache-dir=%s", cache);
    int pid[2];
    for (int i = 0; i < 2; i++) {
        snprintf(out[i], sizeof out[i], "%s/par%d.so", fx->dir, i);
        snprintf(err[i], sizeof err[i], "%s/par%d.err", fx->dir, i);
        const char *args[] = {fx->model, "-o", out[i], fx->target, cache_opt, NULL};
        pid[i] = start_program(bin, args, err[i], NULL);
    }
    for (int i = 0; i < 2; i++) {
        int status = wait_program(pid[i]);
        char *text = read_text_file(err[i]);
        if (status != 0) fail_msg("concurrent capc %d exited %d:\n%s", i, status, text);
        assert_null(strstr(text, "warning"));
        free(text);
        assert_same_file(ref, out[i]);
    }
    char *log = compile(fx, out[0], cache, NULL, NULL);
    assert_int_equal(misses(log), 0);
    free(log);
    free(cache);
    free(ref);
}

static void test_unusable_cache_dir_warns_once(void **state) {
    Fx *fx = *state;
    char *file = in_dir(fx, "not-a-dir"), *ref = in_dir(fx, "ref2.so"), *out = in_dir(fx, "nc.so");
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fclose(f);
    char cache[4500];
    snprintf(cache, sizeof cache, "%s/cache", file); /* below a regular file: never creatable */
    free(compile(fx, ref, cache, "--no-cache", NULL));
    char *log = compile(fx, out, cache, NULL, NULL);
    if (count_lines_with(log, "warning") != 1 ||
        count_lines_with(log, "compiling without the kernel cache") != 1)
        fail_msg("want exactly one warning about the cache:\n%s", log);
    assert_non_null(strstr(log, "not-a-dir"));
    free(log);
    assert_same_file(ref, out);
    free(file);
    free(ref);
    free(out);
}

static void test_lr_change_compiles_only_the_tables(void **state) {
    Fx *fx = *state;
    char *cache = in_dir(fx, "lr-cache"), *a = in_dir(fx, "lr1.so"), *b = in_dir(fx, "lr2.so");
    free(compile(fx, a, cache, "-D", "lr=0.01"));
    char *log = compile(fx, b, cache, "-D", "lr=0.003");
    /* one miss: the tables' unit, which holds lr's value */
    if (misses(log) != 1) fail_msg("a -D lr= change compiled more than the tables:\n%s", log);
    free(log);
    free(cache);
    free(a);
    free(b);
}

int main(void) {
    const struct CMUnitTest unit[] = {
        cmocka_unit_test(test_sha256_vectors),
        cmocka_unit_test(test_entry_round_trip_and_damage),
        cmocka_unit_test(test_eviction_least_recently_used),
    };
    const struct CMUnitTest cli[] = {
        cmocka_unit_test_setup_teardown(test_warm_compile_is_identical, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damaged_entry_is_rebuilt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_compiles_share_a_cache, setup_cpu, teardown),
        cmocka_unit_test_setup_teardown(test_unusable_cache_dir_warns_once, setup_cpu, teardown),
        cmocka_unit_test_setup_teardown(test_lr_change_compiles_only_the_tables, setup_cpu, teardown),
    };
    int failed = cmocka_run_group_tests_name("kernel_cache", unit, NULL, NULL);
    return failed + cmocka_run_group_tests_name("capc_cache", cli, NULL, NULL);
}
