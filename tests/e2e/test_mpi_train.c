/* test_mpi_train.c — data-parallel `mpirun -np 2 cap train --data` (docs/distributed.md)
 * against one process, on the cpu backend.
 *
 * Setup (once): the synthetic shapes set (`cap data synth`, 300 images of 64x64), its
 * vocabulary, and the tiny captioner compiled three times by CAPC_BIN at 64x64:
 * `-D bn_train=0 -D dropout=0` at batch 8 (per process) and 16 (one process), and with the
 * defaults (BatchNorm in training mode, dropout 0.1) at batch 8.
 *   - equivalence: 2 processes at batch 8 log the same 20 losses as 1 process at batch 16,
 *     within 1e-5 relative (the only difference is the order of float sums: the gradients
 *     are reduced per process, then added); the learning rates are identical; rank 0 alone
 *     writes the log (20 lines, not 40).
 *   - resume: a 2-process run stopped at step 10 (rank 0's checkpoint) and resumed by 2
 *     processes logs bit for bit the losses of the uninterrupted run; resumed by 1 process
 *     at batch 16, the same losses within 1e-5.
 *   - defaults: with per-process BatchNorm statistics and dropout streams the 2-process run
 *     trains: its last five losses average at most 80% of its first five (the single-process
 *     run goes from about 45 to 27 in these 20 steps).
 * MPI_BIN is mpirun; the test is registered only when CMake found MPI and it. Root needs
 * --allow-run-as-root, and a machine with fewer cores than processes --oversubscribe.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include <cmocka.h>

#include "passes/testfiles.h"

#define STEPS 20
#define TOL 1e-5

static char tmpdir[256], spec[600], vocab_path[600];
static char eq8[600], eq16[600], def8[600];
static const char *cap, *mpirun;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static const char *env_or(const char *name, const char *dflt) {
    const char *s = getenv(name);
    return s && *s ? s : dflt;
}

static int run_cmd(const char *cmd) {
    int rc = system(cmd);
    return rc == -1 ? -1 : WEXITSTATUS(rc);
}

/* Runs cmd with its output in tmpdir/out.txt; a non-zero exit fails the test with both. */
static void run_ok(const char *cmd) {
    char out[700], full[8192];
    snprintf(out, sizeof out, "%s/out.txt", tmpdir);
    snprintf(full, sizeof full, "%s >%s 2>&1", cmd, out);
    int rc = run_cmd(full);
    if (rc == 0) return;
    static char shown[16384]; /* fail_msg does not return: nothing may stay allocated */
    char *text = read_text_file(out);
    snprintf(shown, sizeof shown, "%s", text ? text : "(no output)");
    free(text);
    fail_msg("exit %d: %s\n%s", rc, cmd, shown);
}

static int compile(const char *out, const char *flags) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s %s/models/captioner_tiny.json --target=cpu -D image=64 -D "
             "vocab=$(wc -l <%s) %s -o %s", env_or("CAPC_BIN", "capc"),
             env_or("CAPC_SOURCE_DIR", "."), vocab_path, flags, out);
    int rc = run_cmd(cmd);
    if (rc) fprintf(stderr, "setup: failed: %s\n", cmd);
    return rc;
}

static int setup(void **state) {
    (void)state;
    cap = env_or("CAP_BIN", "cap");
    mpirun = env_or("MPI_BIN", "mpirun");
    snprintf(tmpdir, sizeof tmpdir, "%s/capc_mpi_XXXXXX", env_or("TMPDIR", "/tmp"));
    if (!mkdtemp(tmpdir)) return -1;
    double t0 = now();
    snprintf(spec, sizeof spec, "coco:%s/syn/captions.json", tmpdir);
    snprintf(vocab_path, sizeof vocab_path, "%s/vocab.txt", tmpdir);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s data synth --out %s/syn --images 300 --seed 1 --size 64 "
             ">/dev/null && %s vocab --data %s --min-count 2 -o %s >/dev/null", cap, tmpdir,
             cap, spec, vocab_path);
    if (run_cmd(cmd)) return fprintf(stderr, "setup: failed: %s\n", cmd), -1;
    snprintf(eq8, sizeof eq8, "%s/eq8.so", tmpdir);
    snprintf(eq16, sizeof eq16, "%s/eq16.so", tmpdir);
    snprintf(def8, sizeof def8, "%s/def8.so", tmpdir);
    if (compile(eq8, "-D bn_train=0 -D dropout=0 -D batch=8") ||
        compile(eq16, "-D bn_train=0 -D dropout=0 -D batch=16") ||
        compile(def8, "-D batch=8"))
        return -1;
    printf("setup: data and three compiles in %.1f s\n", now() - t0);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return run_cmd(cmd) == 0 ? 0 : -1;
}

/* ---- runs and logs ------------------------------------------------------------------------- */

typedef struct Log {
    int n;
    double loss[64], lr[64];
    char text[64][40]; /* the loss as logged (%.9g): for bit-for-bit comparisons */
} Log;

/* `cap train` by np processes (0: without mpirun) into tmpdir/NAME.{safetensors,jsonl}. */
static void train(int np, const char *so, const char *name, int steps, const char *resume) {
    char launch[1200] = "", from[800] = "", cmd[8192];
    /* In a sanitizer build, LeakSanitizer needs whole stacks to match Open MPI's allocations
     * to the suppressions (LSAN_OPTIONS, mpi_lsan.supp): the fast unwinder stops in MPI's
     * plugins, which are unloaded by then. Other ASAN_OPTIONS are kept. */
    if (np > 0)
        snprintf(launch, sizeof launch, "ASAN_OPTIONS=\"$ASAN_OPTIONS:fast_unwind_on_malloc=0\" "
                 "%s --allow-run-as-root --oversubscribe -np %d ", mpirun, np);
    if (resume) snprintf(from, sizeof from, "--resume %s/%s.safetensors", tmpdir, resume);
    else snprintf(from, sizeof from, "--vocab %s --seed 3", vocab_path);
    snprintf(cmd, sizeof cmd, "%s%s train %s --data %s %s --steps %d --out %s/%s.safetensors "
             "--log %s/%s.jsonl --backend cpu --threads 1 --workers 1 --print-every 0", launch,
             cap, so, spec, from, steps, tmpdir, name, tmpdir, name);
    double t0 = now();
    run_ok(cmd);
    print_message("%s: %.1f s\n", name, now() - t0);
}

static void read_log(const char *name, Log *l) {
    char path[700];
    snprintf(path, sizeof path, "%s/%s.jsonl", tmpdir, name);
    FILE *f = fopen(path, "r");
    if (!f) fail_msg("no log %s", path);
    char line[1024];
    memset(l, 0, sizeof *l);
    while (fgets(line, sizeof line, f)) {
        const char *ls = strstr(line, "\"loss\":"), *lr = strstr(line, "\"lr\":");
        if (!ls || !lr || l->n >= 64) fail_msg("%s: unexpected line %s", path, line);
        l->loss[l->n] = strtod(ls + 7, NULL);
        l->lr[l->n] = strtod(lr + 5, NULL);
        sscanf(ls + 7, "%39[^,]", l->text[l->n]);
        l->n++;
    }
    fclose(f);
}

/* Steps first..last (1-based) of a and b: the largest relative loss difference. */
static double max_rel(const Log *a, const Log *b, int first, int last) {
    double worst = 0;
    for (int i = first - 1; i < last; i++) {
        double r = fabs(a->loss[i] - b->loss[i]) / fabs(b->loss[i]);
        if (!(r <= worst)) worst = r; /* a NaN is the worst */
    }
    return worst;
}

/* ---- tests --------------------------------------------------------------------------------- */

static void test_equivalence(void **state) {
    (void)state;
    train(0, eq16, "one", STEPS, NULL);
    train(2, eq8, "two", STEPS, NULL);
    Log one, two;
    read_log("one", &one);
    read_log("two", &two);
    assert_int_equal(one.n, STEPS);
    assert_int_equal(two.n, STEPS); /* rank 0 alone logs */
    double r = max_rel(&two, &one, 1, STEPS);
    print_message("2 x 8 against 1 x 16: max relative loss difference %.3g over %d steps "
                  "(loss %.6g -> %.6g)\n", r, STEPS, one.loss[0], one.loss[STEPS - 1]);
    assert_true(r <= TOL);
    for (int i = 0; i < STEPS; i++) assert_true(two.lr[i] == one.lr[i]);
}

static void test_resume(void **state) {
    (void)state;
    train(2, eq8, "part", STEPS / 2, NULL);
    char cmd[2000];
    snprintf(cmd, sizeof cmd, "cp %s/part.safetensors %s/part1.safetensors && cp %s/part.jsonl "
             "%s/part1.jsonl", tmpdir, tmpdir, tmpdir, tmpdir);
    run_ok(cmd);
    train(2, eq8, "part", STEPS, "part");   /* resumed by 2 processes */
    train(0, eq16, "part1", STEPS, "part1"); /* resumed by 1 process at the same global batch */
    Log whole, two, one;
    read_log("two", &whole);
    read_log("part", &two);
    read_log("part1", &one);
    assert_int_equal(whole.n, STEPS);
    assert_int_equal(two.n, STEPS);
    assert_int_equal(one.n, STEPS);
    for (int i = 0; i < STEPS; i++)
        if (strcmp(two.text[i], whole.text[i]) != 0)
            fail_msg("step %d: resumed loss %s, uninterrupted %s", i + 1, two.text[i],
                     whole.text[i]);
    double r = max_rel(&one, &whole, STEPS / 2 + 1, STEPS);
    print_message("resumed by 1 process: max relative loss difference %.3g\n", r);
    assert_true(r <= TOL);
}

static void test_defaults_train(void **state) {
    (void)state;
    train(2, def8, "def", STEPS, NULL);
    Log l;
    read_log("def", &l);
    assert_int_equal(l.n, STEPS);
    double first = 0, last = 0;
    for (int i = 0; i < 5; i++) first += l.loss[i], last += l.loss[STEPS - 5 + i];
    print_message("defaults, 2 processes: mean loss of steps 1-5 %.4g, of steps 16-20 %.4g\n",
                  first / 5, last / 5);
    assert_true(isfinite(last) && last <= 0.8 * first);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_equivalence),
        cmocka_unit_test(test_resume),
        cmocka_unit_test(test_defaults_train),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
