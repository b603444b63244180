/* test_kill.c — `cap train` killed with SIGKILL at random moments, then resumed.
 *
 * The tiny captioner (-D batch=2) trains on the golden batch for STEPS steps with a checkpoint
 * every step (so many kills land inside a save) and a metrics log. One uninterrupted run is
 * the reference. The interrupted run is started KILLS times (resuming from its checkpoint
 * when there is one) and killed after a random delay each time, then finished. Checked:
 *  - after every kill, the newest checkpoint loads (saves are atomic: temp file + rename);
 *  - the next start removes the temp files a killed save left (none remain at the end);
 *  - the log has every step exactly once (a resume cuts what the killed run logged after its
 *    checkpoint), and each step's loss equals the reference run's, digit for digit;
 *  - the final checkpoint is byte-identical to the reference run's.
 * The delays come from a fixed seed; which kills hit a save depends on the machine's speed,
 * and the test prints how many left a temp file behind. */
#include <dirent.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "cap.h"
#include "capc_compile.h"
#include "safetensors.h"

#define STEPS 600
#define KILLS 20
#define ERR 2048

static char tmpdir[256], so[512], why[ERR], batch[1024];

/* Starts `cap train` on the golden batch with out/log (resuming from out when it exists);
 * returns its pid. stdout and stderr go to dir/run.log. */
static pid_t start_train(const char *out, const char *log) {
    const char *cap = getenv("CAP_BIN");
    char steps[16], runlog[512];
    snprintf(steps, sizeof steps, "%d", STEPS);
    snprintf(runlog, sizeof runlog, "%s/run.log", tmpdir);
    int resume = access(out, F_OK) == 0;
    pid_t pid = fork();
    if (pid == 0) {
        FILE *f = freopen(runlog, "a", stdout);
        if (f) dup2(fileno(stdout), 2);
        char *argv[] = {(char *)(cap ? cap : "cap"), "train", so, "--batches", batch, "--steps",
                        steps, "--out", (char *)out, "--log", (char *)log, "--save-every", "1",
                        "--seed", "5", "--threads", "1", resume ? "--resume" : NULL,
                        (char *)out, NULL};
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

static int wait_exit(pid_t pid) {
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Temp files of out's saves ("NAME.tmp.XXXXXX") in tmpdir. */
static int count_temps(const char *name) {
    DIR *d = opendir(tmpdir);
    int n = 0;
    size_t len = strlen(name);
    for (struct dirent *e; d && (e = readdir(d)) != NULL;)
        n += strncmp(e->d_name, name, len) == 0 && strncmp(e->d_name + len, ".tmp.", 5) == 0;
    if (d) closedir(d);
    return n;
}

/* The checkpoint loads into a fresh session; returns its step. */
static int64_t load_step(const char *path) {
    CapModel *m = NULL;
    CapSession *s = NULL;
    char err[ERR];
    CapTrainMeta meta = {0};
    if (cap_model_open(so, &m, err, sizeof err) || cap_session_new(m, CAP_BACKEND_CPU, &s, err, sizeof err) ||
        cap_load_checkpoint(s, path, &meta, err, sizeof err))
        fail_msg("the newest checkpoint does not load: %s", err);
    cap_session_free(s);
    cap_model_close(m);
    return meta.step;
}

/* The log's loss text per step (losses[step-1]); fails on a duplicate or missing step. */
static void read_log(const char *path, char losses[STEPS][32]) {
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    bool seen[STEPS + 1] = {false};
    char line[1024];
    while (fgets(line, sizeof line, f)) {
        int step = 0;
        char loss[32] = "";
        if (sscanf(line, "{\"step\":%d,\"loss\":%31[^,]", &step, loss) != 2)
            fail_msg("%s: unexpected line %s", path, line);
        if (step < 1 || step > STEPS) fail_msg("%s: step %d out of range", path, step);
        if (seen[step]) fail_msg("%s: step %d logged twice", path, step);
        seen[step] = true;
        snprintf(losses[step - 1], 32, "%s", loss);
    }
    fclose(f);
    for (int s = 1; s <= STEPS; s++)
        if (!seen[s]) fail_msg("%s: step %d missing", path, s);
}

static void expect_same_bytes(const char *a, const char *b) {
    StFile fa, fb;
    char err[ERR];
    if (st_read_file(a, &fa, err, sizeof err) || st_read_file(b, &fb, err, sizeof err))
        fail_msg("%s", err);
    assert_int_equal(fa.size, fb.size);
    assert_memory_equal(fa.buf, fb.buf, fa.size);
    st_free(&fa);
    st_free(&fb);
}

static void test_kill_and_resume(void **unused) {
    (void)unused;
    if (why[0]) fail_msg("capc could not compile the tiny captioner: %s", why);
    char ref[512], ref_log[512], out[512], log[512];
    snprintf(ref, sizeof ref, "%s/ref.safetensors", tmpdir);
    snprintf(ref_log, sizeof ref_log, "%s/ref.jsonl", tmpdir);
    snprintf(out, sizeof out, "%s/ckpt.safetensors", tmpdir);
    snprintf(log, sizeof log, "%s/metrics.jsonl", tmpdir);
    assert_int_equal(wait_exit(start_train(ref, ref_log)), 0);

    srand(20261202);
    int left_temps = 0, loaded = 0;
    for (int k = 0; k < KILLS; k++) {
        pid_t pid = start_train(out, log);
        sleep_ms(100 + rand() % 400);
        kill(pid, SIGKILL);
        wait_exit(pid);
        left_temps += count_temps("ckpt.safetensors") > 0;
        if (access(out, F_OK) == 0) {
            int64_t step = load_step(out);
            loaded++;
            if (step >= STEPS) break; /* finished before the kill */
        }
    }
    assert_int_equal(wait_exit(start_train(out, log)), 0);
    print_message("%d kills: the checkpoint loaded after %d of them, temp files were left after "
                  "%d\n", KILLS, loaded, left_temps);
    assert_int_equal(count_temps("ckpt.safetensors"), 0);
    static char want[STEPS][32], got[STEPS][32];
    read_log(ref_log, want);
    read_log(log, got);
    for (int s = 0; s < STEPS; s++)
        if (strcmp(want[s], got[s]) != 0)
            fail_msg("step %d: loss %s after kills, %s uninterrupted", s + 1, got[s], want[s]);
    expect_same_bytes(ref, out);
}

static int setup(void **unused) {
    (void)unused;
    if (make_temp_dir("capc_kill", tmpdir, sizeof tmpdir) != 0) return -1;
    compile_with_capc(tmpdir, "models/captioner_tiny.json", "--target=cpu -D batch=2", so,
                      sizeof so, why, sizeof why);
    snprintf(batch, sizeof batch, "%s/tests/golden/tiny_batch.safetensors", test_src_dir());
    return 0;
}

static int teardown(void **unused) {
    (void)unused;
    return remove_temp_dir(tmpdir);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_kill_and_resume)};
    return cmocka_run_group_tests(tests, setup, teardown);
}
