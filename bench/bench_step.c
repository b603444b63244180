/* bench_step.c — times one entry point of a cap.so on a backend:
 *
 *   cap_bench_step cap.so [cpu|cuda|auto] [entry=train_step] [iters=20] [warmup=3]
 *
 * Weights from cap_session_init (seed 0); inputs random but valid (f32 in [-1, 1], "caption"
 * ids in [3, vocab) after a start token, other i32 inputs small). Each timed run is one
 * cap_session_run, which ends with the backend's synchronize, so the wall time per run is
 * the step's time including its input copies. Prints one line:
 *   train_step cuda: median 1.234 ms, min 1.200 ms (20 runs after 3 warm-up; NOTE)
 * Exit 0 on success, 1 on an error (the runtime's message). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cap.h"

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static double urand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}

static void fill_input(const CapTensorInfo *t, int64_t vocab, void *p) {
    for (int64_t k = 0; k < t->numel; k++) {
        if (t->dtype == CAP_DT_F32) ((float *)p)[k] = (float)(2 * urand() - 1);
        else if (strcmp(t->name, "caption") == 0 && vocab > 3)
            ((int32_t *)p)[k] = (t->rank == 2 && k % t->dims[1] == 0)
                                    ? 1 : 3 + (int32_t)(urand() * (double)(vocab - 3));
        else ((int32_t *)p)[k] = (int32_t)(urand() * 1000);
    }
}

static int fail(const char *what, const char *err) {
    fprintf(stderr, "cap_bench_step: %s: %s\n", what, err);
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: cap_bench_step cap.so [cpu|cuda|auto] [entry] [iters] [warmup]\n");
        return 2;
    }
    const char *backend = argc > 2 ? argv[2] : "auto", *entry = argc > 3 ? argv[3] : "train_step";
    int iters = argc > 4 ? atoi(argv[4]) : 20, warmup = argc > 5 ? atoi(argv[5]) : 3;
    if (iters < 1) iters = 1;
    char err[2048];
    CapModel *m = NULL;
    CapSession *s = NULL;
    CapBackendKind kind;
    if (cap_backend_parse(backend, &kind)) return fail("backend", "auto, cpu or cuda");
    if (cap_model_open(argv[1], &m, err, sizeof err)) return fail(argv[1], err);
    int ei = cap_model_find_entry(m, entry), rc = 0;
    if (ei < 0) rc = fail(entry, "no such entry point");
    else if (cap_session_new(m, kind, &s, err, sizeof err)) rc = fail("session", err);
    else if (cap_session_init(s, 0, err, sizeof err)) rc = fail("init", err);
    if (rc) {
        cap_session_free(s);
        cap_model_close(m);
        return rc;
    }
    const CapArtifact *a = cap_model_artifact(m);
    const CapEntry *e = &a->entries[ei];
    void **in = calloc((size_t)e->n_inputs + 1, sizeof *in);
    void **out = calloc((size_t)e->n_outputs + 1, sizeof *out);
    for (int i = 0; i < e->n_inputs; i++) {
        in[i] = malloc(cap_tensor_bytes(&e->inputs[i]) + 4);
        fill_input(&e->inputs[i], a->vocab_size, in[i]);
    }
    for (int i = 0; i < e->n_outputs; i++)
        if (!e->output_state || e->output_state[i] < 0)
            out[i] = calloc(1, cap_tensor_bytes(&e->outputs[i]) + 4);
    double *t = calloc((size_t)iters, sizeof *t);
    for (int i = 0; i < warmup + iters && !rc; i++) {
        double t0 = now_ms();
        if (cap_session_run(s, entry, (const void *const *)in, out, err, sizeof err))
            rc = fail(entry, err);
        if (i >= warmup) t[i - warmup] = now_ms() - t0;
    }
    if (!rc) {
        qsort(t, (size_t)iters, sizeof *t, cmp_double);
        const char *note = cap_session_backend_note(s);
        printf("%s %s: median %.3f ms, min %.3f ms (%d runs after %d warm-up%s%s)\n", entry,
               cap_session_backend_name(s), t[iters / 2], t[0], iters, warmup,
               *note ? "; " : "", note);
    }
    for (int i = 0; i < e->n_inputs; i++) free(in[i]);
    for (int i = 0; i < e->n_outputs; i++) free(out[i]);
    free(in);
    free(out);
    free(t);
    cap_session_free(s);
    cap_model_close(m);
    return rc;
}
