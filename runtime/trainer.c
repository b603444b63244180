/* trainer.c — the training loop: train_step over a sequence of batch files, with a progress
 * line, a metrics.jsonl log and checkpoints.
 *
 * Determinism: step t (the count of updates done before it, 0 for the first) runs on batch
 * paths[data_position % n] with rng = (seed, t); both live in the checkpoint with every state
 * tensor, so a resumed run computes what the uninterrupted run would have, bit for bit on the
 * cpu backend. The loss/lr/grad_norm printed are train_step's outputs of those names (the loss
 * of the batch before the update, the lr the update used, the gradient norm before clipping).
 * Instead of batch files, a caller may hand batches in through opts->next_batch (a dataset
 * loader: train_data.c); its position then travels as extra checkpoint metadata.
 */
#include "cap_internal.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct StepOutputs {
    const CapEntry *e;
    void **outs;           /* per output: host buffer, NULL for "@X" state outputs */
    int loss, lr, grad_norm; /* output indices or -1 */
} StepOutputs;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void outputs_free(StepOutputs *so) {
    for (int i = 0; so->outs && i < so->e->n_outputs; i++) free(so->outs[i]);
    free(so->outs);
}

/* A scalar f32 output named `name`, or -1. */
static int scalar_output(const CapEntry *e, const char *name) {
    for (int i = 0; i < e->n_outputs; i++)
        if (strcmp(e->outputs[i].name, name) == 0 && e->outputs[i].numel == 1 &&
            e->outputs[i].dtype == CAP_DT_F32 && !(e->output_state && e->output_state[i] >= 0))
            return i;
    return -1;
}

static CapStatus outputs_new(const CapEntry *e, StepOutputs *so, char *err, size_t err_size) {
    *so = (StepOutputs){.e = e};
    so->outs = calloc((size_t)e->n_outputs + 1, sizeof *so->outs);
    if (!so->outs) return cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    for (int i = 0; i < e->n_outputs; i++) {
        if (e->output_state && e->output_state[i] >= 0) continue;
        so->outs[i] = malloc(cap_tensor_bytes(&e->outputs[i]) + 1);
        if (!so->outs[i]) return cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    }
    so->loss = scalar_output(e, "loss");
    so->lr = scalar_output(e, "lr");
    so->grad_norm = scalar_output(e, "grad_norm");
    if (so->loss < 0)
        return cap_fail(err, err_size, CAP_E_UNSUPPORTED,
                        "entry 'train_step' has no scalar output 'loss'");
    return CAP_OK;
}

static double scalar(const StepOutputs *so, int i) {
    return i < 0 ? NAN : (double)*(const float *)so->outs[i];
}

static void fmt_hms(double s, char *buf, size_t size) {
    if (!(s >= 0) || s > 1e8) {
        snprintf(buf, size, "--:--:--");
        return;
    }
    long t = (long)(s + 0.5);
    snprintf(buf, size, "%02ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
}

static void json_num(FILE *f, const char *key, double v, const char *fmt) {
    fprintf(f, ",\"%s\":", key);
    if (isfinite(v)) fprintf(f, fmt, v);
    else fprintf(f, "null");
}

typedef struct Progress {
    double t0;
    int64_t first_step, samples;
} Progress;

static void report(const CapTrainOptions *o, FILE *log, const Progress *p, int64_t step,
                   double loss, double lr, double gn, int out_of_time) {
    double el = now_s() - p->t0;
    double sps = el > 0 ? (double)p->samples / el : 0;
    int64_t done = step - p->first_step;
    double eta = done > 0 ? el / (double)done * (double)(o->steps - step) : -1;
    if (o->max_seconds > 0 && eta > o->max_seconds - el) eta = o->max_seconds > el ? o->max_seconds - el : 0;
    int last = step == o->steps || out_of_time;
    if (o->progress && o->print_every > 0 &&
        (done == 1 || last || step % o->print_every == 0)) {
        char hms[32];
        fmt_hms(eta, hms, sizeof hms);
        fprintf(o->progress, "step %lld/%lld  loss %.6f  lr %.3g  grad_norm %.4g  %.1f samples/s"
                "  ETA %s\n", (long long)step, (long long)o->steps, loss, lr, gn, sps, hms);
        fflush(o->progress);
    }
    if (log) {
        fprintf(log, "{\"step\":%lld", (long long)step);
        json_num(log, "loss", loss, "%.9g");
        json_num(log, "lr", lr, "%.9g");
        json_num(log, "grad_norm", gn, "%.9g");
        json_num(log, "samples_per_s", sps, "%.3f");
        json_num(log, "elapsed_s", el, "%.3f");
        fprintf(log, "}\n");
        fflush(log);
    }
}

static const char *step_entry(const CapTrainOptions *o) {
    return o->next_batch && o->entry ? o->entry : "train_step";
}

static CapStatus check_options(const CapSession *s, const CapTrainOptions *o,
                               const CapTrainMeta *meta, char *err, size_t err_size) {
    if (!o->next_batch && (!o->batch_paths || o->n_batches <= 0))
        return cap_fail(err, err_size, CAP_E_ARG, "no batch files to train on");
    if (cap_model_find_entry(s->m, step_entry(o)) < 0)
        return cap_fail(err, err_size, CAP_E_UNSUPPORTED,
                        "%s has no entry point '%s' (was it compiled without a train "
                        "section?)", cap_model_path(s->m), step_entry(o));
    if (!o->next_batch && meta->step > 0 && meta->n_batches != 0 &&
        meta->n_batches != o->n_batches)
        return cap_fail(err, err_size, CAP_E_ARG,
                        "the checkpoint was trained on %lld batch files, this run has %d: "
                        "resume with the same batch files", (long long)meta->n_batches,
                        o->n_batches);
    return CAP_OK;
}

/* One step on a batch from o->next_batch: rng = (seed, step) in its slot. */
static CapStatus train_one_source(CapSession *s, const CapTrainOptions *o, CapTrainMeta *meta,
                                  StepOutputs *so, int64_t *samples, char *err,
                                  size_t err_size) {
    const CapEntry *e = so->e;
    const void **in = calloc((size_t)e->n_inputs + 1, sizeof *in);
    if (!in) return cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    int64_t n = 0;
    int32_t rng[2] = {(int32_t)meta->seed, (int32_t)meta->step};
    CapStatus st = o->next_batch(o->source, in, &n, err, err_size);
    for (int i = 0; !st && i < e->n_inputs; i++)
        if (strcmp(e->inputs[i].name, "rng") == 0) in[i] = rng;
    if (!st) st = cap_session_run(s, step_entry(o), in, so->outs, err, err_size);
    free(in);
    if (!st) {
        *samples += n;
        meta->step++;
        meta->data_position++;
    }
    return st;
}

/* The checkpoint, with the source's metadata when there is a source. */
static CapStatus save(const CapSession *s, const CapTrainOptions *o, const CapTrainMeta *meta,
                      char *err, size_t err_size) {
    const char *keys[16], *values[16];
    int n = o->checkpoint_meta ? o->checkpoint_meta(o->source, keys, values, 16) : 0;
    return cap_save_checkpoint_extra(s, o->out_path, meta, keys, values, n, err, err_size);
}

/* One step: batch, run, counters. */
static CapStatus train_one(CapSession *s, const CapTrainOptions *o, CapTrainMeta *meta,
                           StepOutputs *so, int64_t *samples, char *err, size_t err_size) {
    if (o->next_batch) return train_one_source(s, o, meta, so, samples, err, err_size);
    const char *path = o->batch_paths[meta->data_position % o->n_batches];
    CapBatch *b = NULL;
    CapStatus st = cap_batch_open(s->m, "train_step", path, &b, err, err_size);
    if (!st)
        st = cap_session_run_batch(s, "train_step", b, meta->seed, (uint32_t)meta->step,
                                   so->outs, err, err_size);
    if (!st) {
        *samples += cap_batch_size(b);
        meta->step++;
        meta->data_position++;
    }
    cap_batch_free(b);
    return st;
}

static CapStatus train_loop(CapSession *s, const CapTrainOptions *o, CapTrainMeta *meta,
                            StepOutputs *so, FILE *log, char *err, size_t err_size) {
    Progress p = {now_s(), meta->step, 0};
    while (meta->step < o->steps) {
        CapStatus st = train_one(s, o, meta, so, &p.samples, err, err_size);
        if (st) return st;
        double loss = scalar(so, so->loss), lr = scalar(so, so->lr), gn = scalar(so, so->grad_norm);
        int out_of_time = o->max_seconds > 0 && now_s() - p.t0 >= o->max_seconds;
        report(o, log, &p, meta->step, loss, lr, gn, out_of_time);
        int stop = out_of_time || (o->on_step && o->on_step(o->user, meta->step, loss, lr, gn));
        if (o->out_path && o->save_every > 0 && meta->step % o->save_every == 0 &&
            meta->step < o->steps && (st = save(s, o, meta, err, err_size)))
            return st;
        if (stop) break;
    }
    return CAP_OK;
}

CapStatus cap_train(CapSession *s, const CapTrainOptions *o, CapTrainMeta *meta, char *err,
                    size_t err_size) {
    if (meta->step == 0) {
        meta->seed = o->seed;
        meta->data_position = 0;
    }
    CapStatus st = check_options(s, o, meta, err, err_size);
    if (st) return st;
    meta->n_batches = o->n_batches;
    const CapArtifact *a = cap_model_artifact(s->m);
    StepOutputs so;
    st = outputs_new(&a->entries[cap_model_find_entry(s->m, step_entry(o))], &so, err, err_size);
    FILE *log = NULL;
    if (!st && o->log_path) {
        log = fopen(o->log_path, meta->step > 0 ? "a" : "w");
        if (!log)
            st = cap_fail(err, err_size, CAP_E_IO, "%s: cannot open: %s", o->log_path,
                          strerror(errno));
    }
    if (!st) st = train_loop(s, o, meta, &so, log, err, err_size);
    if (log) fclose(log);
    outputs_free(&so);
    if (!st && o->out_path) st = save(s, o, meta, err, err_size);
    return st;
}
