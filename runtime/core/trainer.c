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
 *
 * Data parallel (opts->comm, docs/distributed.md): a step is train_grads on this process's
 * shard, one allreduce of [loss, stop flag, token count, every gradient] (each scaled by the
 * shard's token count, so the sum divided by the global count is the global batch's mean),
 * then apply_grads with the averaged values: every process applies the same update to the
 * same weights. Every process sees the same averaged loss and gradient norm, so all take the
 * same non-finite decision, and the stop flag makes them stop at the same step.
 */
#include "cap_internal.h"
#include "files.h"
#include "safetensors.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct StepOutputs {
    const CapEntry *e;
    void **outs;           /* per output: host buffer, NULL for "@X" state outputs */
    int loss, lr, grad_norm; /* output indices or -1 */
    const float *loss_at;  /* data parallel: the averaged loss (apply_grads has no output) */
} StepOutputs;

/* Data parallel: train_grads' outputs and apply_grads' inputs. The loss and gradients of
 * train_grads are written straight into the bucket that is allreduced, and apply_grads
 * reads them from there: no copies. */
enum { BUCKET_LOSS, BUCKET_STOP, BUCKET_WEIGHT, BUCKET_GRADS };
typedef struct DistStep {
    const CapEntry *g;      /* train_grads */
    void **g_outs;          /* into bucket (loss, grad.*) or owned (running.*) */
    char *g_owned;          /* per output: 1 if g_outs[i] is malloc'ed */
    float *bucket;
    int64_t n;              /* floats in bucket */
    const void **a_in;      /* apply_grads' inputs */
} DistStep;

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
    if (so->loss < 0 && strcmp(e->name, "apply_grads") != 0)
        return cap_fail(err, err_size, CAP_E_UNSUPPORTED,
                        "entry 'train_step' has no scalar output 'loss'");
    return CAP_OK;
}

static double scalar(const StepOutputs *so, int i) {
    return i < 0 ? NAN : (double)*(const float *)so->outs[i];
}

static double loss_of(const StepOutputs *so) {
    return so->loss_at ? (double)*so->loss_at : scalar(so, so->loss);
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

/* A log line was written and flushed; a full disk or a closed pipe is an error, not an
 * empty log discovered after the run. */
static CapStatus log_written(const CapTrainOptions *o, FILE *log, char *err, size_t err_size) {
    if (fflush(log) == 0 && !ferror(log)) return CAP_OK;
    return cap_fail(err, err_size, CAP_E_IO, "%s: cannot write the log: %s", o->log_path,
                    strerror(errno));
}

/* Named metrics an evaluation added to a step (validation loss, scores). */
enum { MAX_EVAL_METRICS = 8 };
typedef struct Extra {
    const char *keys[MAX_EVAL_METRICS];
    double values[MAX_EVAL_METRICS];
    int n;
} Extra;

static CapStatus report(const CapTrainOptions *o, FILE *log, const Progress *p, int64_t step,
                        double loss, double lr, double gn, int out_of_time, const Extra *x,
                        char *err, size_t err_size) {
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
    if (o->progress && x->n) {
        fprintf(o->progress, "eval at step %lld:", (long long)step);
        for (int i = 0; i < x->n; i++) fprintf(o->progress, "  %s %.6g", x->keys[i], x->values[i]);
        fprintf(o->progress, "\n");
        fflush(o->progress);
    }
    if (log) {
        fprintf(log, "{\"step\":%lld", (long long)step);
        json_num(log, "loss", loss, "%.9g");
        json_num(log, "lr", lr, "%.9g");
        json_num(log, "grad_norm", gn, "%.9g");
        json_num(log, "samples_per_s", sps, "%.3f");
        json_num(log, "elapsed_s", el, "%.3f");
        for (int i = 0; i < x->n; i++) json_num(log, x->keys[i], x->values[i], "%.9g");
        fprintf(log, "}\n");
        return log_written(o, log, err, err_size);
    }
    return CAP_OK;
}

/* The entry whose outputs (loss, lr, grad_norm, state) a step reports. */
static const char *step_entry(const CapTrainOptions *o) {
    if (o->comm) return "apply_grads";
    return o->next_batch && o->entry ? o->entry : "train_step";
}

static CapStatus check_options(const CapSession *s, const CapTrainOptions *o,
                               const CapTrainMeta *meta, char *err, size_t err_size) {
    if (!o->next_batch && (!o->batch_paths || o->n_batches <= 0))
        return cap_fail(err, err_size, CAP_E_ARG, "no batch files to train on");
    if (o->comm && (!o->next_batch || !o->comm->allreduce_sum || o->comm->size < 1))
        return cap_fail(err, err_size, CAP_E_ARG, "data-parallel training needs a batch source "
                        "and an allreduce");
    if (o->comm && cap_model_find_entry(s->m, "train_grads") < 0)
        return cap_fail(err, err_size, CAP_E_UNSUPPORTED, "%s has no entry point 'train_grads' "
                        "(was it compiled without a train section?)", cap_model_path(s->m));
    if (cap_model_find_entry(s->m, step_entry(o)) < 0)
        return cap_fail(err, err_size, CAP_E_UNSUPPORTED,
                        "%s has no entry point '%s' (was it compiled without a train "
                        "section%s?)", cap_model_path(s->m), step_entry(o),
                        o->comm ? ", or by a capc older than data-parallel training" : "");
    if (!o->next_batch && meta->step > 0 && meta->n_batches != 0 &&
        meta->n_batches != o->n_batches)
        return cap_fail(err, err_size, CAP_E_ARG,
                        "the checkpoint was trained on %lld batch files, this run has %d: "
                        "resume with the same batch files", (long long)meta->n_batches,
                        o->n_batches);
    return CAP_OK;
}

/* The checkpoint, with the source's metadata when there is a source. */
static CapStatus save(const CapSession *s, const CapTrainOptions *o, const CapTrainMeta *meta,
                      char *err, size_t err_size) {
    const char *keys[16], *values[16];
    int n = o->checkpoint_meta ? o->checkpoint_meta(o->source, keys, values, 16) : 0;
    return cap_save_checkpoint_extra(s, o->out_path, meta, keys, values, n, err, err_size);
}

int cap_parse_duration(const char *text, double *seconds) {
    char *end = NULL;
    errno = 0;
    double v = text ? strtod(text, &end) : 0;
    if (!text || end == text || errno || !isfinite(v) || v <= 0) return -1;
    double unit = !*end || strcmp(end, "s") == 0 ? 1 : strcmp(end, "m") == 0 ? 60
                : strcmp(end, "h") == 0 ? 3600 : 0;
    if (unit == 0 || v * unit > 1e9) return -1;
    *seconds = v * unit;
    return 0;
}

/* ---- non-finite steps ------------------------------------------------------------------- */

int cap_nonfinite_parse(const char *name, CapNonFinite *out) {
    if (!name || strcmp(name, "stop") == 0) *out = CAP_NONFINITE_STOP;
    else if (strcmp(name, "skip") == 0) *out = CAP_NONFINITE_SKIP;
    else return -1;
    return 0;
}

/* The first element of t's data that is NaN or infinite, or -1. */
static int64_t first_nonfinite_element(const CapTensorInfo *t, const float *data) {
    for (int64_t k = 0; k < t->numel; k++)
        if (!isfinite(data[k])) return k;
    return -1;
}

static int describe(const char *what, const CapTensorInfo *t, const float *data, char *buf,
                    size_t size) {
    int64_t k = t->dtype == CAP_DT_F32 && data ? first_nonfinite_element(t, data) : -1;
    if (k < 0) return 0;
    char at[160];
    snprintf(buf, size, "%s '%s'%s = %g", what, t->name, cap_index_str(t, k, at, sizeof at),
             (double)data[k]);
    return 1;
}

/* The gradients of the step's batch, through train_grads when the model has it and its
 * inputs are the step entry's (by name): the first non-finite one, named. */
static int describe_gradients(CapSession *s, const CapEntry *e, const void *const *in,
                              char *buf, size_t size) {
    int gi = cap_model_find_entry(s->m, "train_grads");
    if (gi < 0) return 0;
    const CapEntry *g = &cap_model_artifact(s->m)->entries[gi];
    const void **gin = calloc((size_t)g->n_inputs + 1, sizeof *gin);
    void **outs = calloc((size_t)g->n_outputs + 1, sizeof *outs);
    int found = 0, ok = gin && outs;
    for (int i = 0; ok && i < g->n_inputs; i++) {
        for (int j = 0; j < e->n_inputs && !gin[i]; j++)
            if (strcmp(g->inputs[i].name, e->inputs[j].name) == 0) gin[i] = in[j];
        ok = gin[i] != NULL;
    }
    for (int i = 0; ok && i < g->n_outputs; i++) ok = (outs[i] = malloc(cap_tensor_bytes(&g->outputs[i]) + 1)) != NULL;
    char err[256];
    if (ok && cap_session_run(s, "train_grads", gin, outs, err, sizeof err) == CAP_OK)
        for (int i = 0; !found && i < g->n_outputs; i++)
            if (strncmp(g->outputs[i].name, "grad.", 5) == 0)
                found = describe("the gradient", &g->outputs[i], outs[i], buf, size);
    for (int i = 0; outs && i < g->n_outputs; i++) free(outs[i]);
    free(outs);
    free(gin);
    return found;
}

/* Names the first non-finite tensor of a failed step, in the order a reader would look:
 * the batch's inputs, the state (weights loaded non-finite), then the gradients. The step
 * itself changed nothing (the compiled guard), so the state read here is the step's input. */
static void name_first_nonfinite(CapSession *s, const CapEntry *e, const void *const *in,
                                 char *buf, size_t size) {
    for (int i = 0; i < e->n_inputs; i++)
        if (strcmp(e->inputs[i].name, "rng") != 0 && describe("input", &e->inputs[i], in[i], buf, size))
            return;
    const CapArtifact *a = cap_model_artifact(s->m);
    float *data = NULL;
    for (int i = 0; i < a->n_state; i++) {
        const CapTensorInfo *t = &a->state[i].t;
        if (t->dtype != CAP_DT_F32) continue;
        float *grown = realloc(data, cap_tensor_bytes(t) + 1);
        if (!grown) break;
        data = grown;
        char err[256];
        if (cap_session_read_state(s, i, data, err, sizeof err) == CAP_OK &&
            describe("the state tensor", t, data, buf, size)) {
            free(data);
            return;
        }
    }
    free(data);
    if (describe_gradients(s, e, in, buf, size)) return;
    snprintf(buf, size, "no input, state tensor or gradient: the loss itself");
}

/* Loss spikes: a finite loss this many standard deviations above the mean of the last
 * SPIKE_WINDOW finite losses (once at least SPIKE_MIN_SEEN were seen) gets a warning. */
enum { SPIKE_WINDOW = 100, SPIKE_MIN_SEEN = 20 };
#define SPIKE_Z 6.0

typedef struct LossWindow {
    double v[SPIKE_WINDOW];
    int n, next;
} LossWindow;

/* z-score of loss against the window (0 while too few are in it), then adds it. */
static double loss_z(LossWindow *w, double loss) {
    double z = 0;
    if (w->n >= SPIKE_MIN_SEEN) {
        double mean = 0, var = 0;
        for (int i = 0; i < w->n; i++) mean += w->v[i];
        mean /= w->n;
        for (int i = 0; i < w->n; i++) var += (w->v[i] - mean) * (w->v[i] - mean);
        double sd = sqrt(var / (w->n - 1));
        z = sd > 0 ? (loss - mean) / sd : 0;
    }
    w->v[w->next] = loss;
    w->next = (w->next + 1) % SPIKE_WINDOW;
    if (w->n < SPIKE_WINDOW) w->n++;
    return z;
}

/* ---- one step ----------------------------------------------------------------------------- */

/* What one step ran on: the inputs (the batch's or the source's) and where they came from. */
typedef struct StepBatch {
    const void **in;
    CapBatch *b;        /* batch files: the open batch (owned) */
    int64_t samples;
    char where[600];    /* "batches/b3.safetensors" or "the batch at data position 12" */
} StepBatch;

static void step_batch_free(StepBatch *sb) {
    cap_batch_free(sb->b);
    free(sb->in);
}

/* The inputs of the step at meta: the next batch file, or the source's next batch (whose
 * ids are checked here; batch files check theirs when opened). */
static CapStatus step_batch(CapSession *s, const CapTrainOptions *o, const CapTrainMeta *meta,
                            const CapEntry *e, const int32_t rng[2], StepBatch *sb, char *err,
                            size_t err_size) {
    *sb = (StepBatch){.in = calloc((size_t)e->n_inputs + 1, sizeof *sb->in)};
    if (!sb->in) return cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    CapStatus st;
    if (o->next_batch) {
        snprintf(sb->where, sizeof sb->where, "the batch at data position %lld",
                 (long long)meta->data_position);
        st = o->next_batch(o->source, sb->in, &sb->samples, err, err_size);
        for (int i = 0; !st && i < e->n_inputs; i++)
            if (strcmp(e->inputs[i].name, "rng") == 0) sb->in[i] = rng;
        if (!st) st = cap_check_ids(s->m, e, sb->in, sb->where, err, err_size);
        return st;
    }
    const char *path = o->batch_paths[meta->data_position % o->n_batches];
    snprintf(sb->where, sizeof sb->where, "%s", path);
    st = cap_batch_open(s->m, "train_step", path, &sb->b, err, err_size);
    if (!st) {
        cap_batch_inputs(sb->b, rng, sb->in);
        sb->samples = cap_batch_size(sb->b);
    }
    return st;
}

/* ---- data parallel ------------------------------------------------------------------------- */

static void dist_free(DistStep *d) {
    for (int i = 0; d->g_outs && i < d->g->n_outputs; i++)
        if (d->g_owned && d->g_owned[i]) free(d->g_outs[i]);
    free(d->g_outs);
    free(d->g_owned);
    free(d->bucket);
    free(d->a_in);
}

static int output_named(const CapEntry *e, const char *name) {
    for (int i = 0; i < e->n_outputs; i++)
        if (strcmp(e->outputs[i].name, name) == 0) return i;
    return -1;
}

/* Lays out the bucket (loss, stop, weight, then train_grads' gradients in output order) and
 * points apply_grads' inputs at it by name. */
static CapStatus dist_new(const CapSession *s, const CapEntry *a, DistStep *d, char *err,
                          size_t err_size) {
    const CapArtifact *art = cap_model_artifact(s->m);
    *d = (DistStep){.g = &art->entries[cap_model_find_entry(s->m, "train_grads")]};
    const CapEntry *g = d->g;
    int64_t n = BUCKET_GRADS;
    int loss = -1;
    for (int i = 0; i < g->n_outputs; i++) {
        if (strcmp(g->outputs[i].name, "loss") == 0) loss = i;
        if (strncmp(g->outputs[i].name, "grad.", 5) != 0) continue;
        if (g->outputs[i].dtype != CAP_DT_F32) /* the bucket is f32 */
            return cap_fail(err, err_size, CAP_E_UNSUPPORTED, "%s: data-parallel training "
                            "needs f32 gradients ('%s' is not)", cap_model_path(s->m),
                            g->outputs[i].name);
        n += g->outputs[i].numel;
    }
    if (loss < 0 || g->outputs[loss].numel != 1)
        return cap_fail(err, err_size, CAP_E_FORMAT, "%s: train_grads has no scalar output "
                        "'loss'", cap_model_path(s->m));
    d->n = n;
    d->bucket = calloc((size_t)n, sizeof *d->bucket);
    d->g_outs = calloc((size_t)g->n_outputs + 1, sizeof *d->g_outs);
    d->g_owned = calloc((size_t)g->n_outputs + 1, 1);
    d->a_in = calloc((size_t)a->n_inputs + 1, sizeof *d->a_in);
    if (!d->bucket || !d->g_outs || !d->g_owned || !d->a_in)
        return cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    int64_t at = BUCKET_GRADS;
    for (int i = 0; i < g->n_outputs; i++) {
        if (i == loss) {
            d->g_outs[i] = d->bucket + BUCKET_LOSS;
        } else if (strncmp(g->outputs[i].name, "grad.", 5) == 0) {
            d->g_outs[i] = d->bucket + at;
            at += g->outputs[i].numel;
        } else {
            d->g_owned[i] = 1;
            if (!(d->g_outs[i] = malloc(cap_tensor_bytes(&g->outputs[i]) + 1)))
                return cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
        }
    }
    for (int j = 0; j < a->n_inputs; j++) {
        int i = output_named(g, a->inputs[j].name);
        if (i < 0 || g->outputs[i].numel != a->inputs[j].numel)
            return cap_fail(err, err_size, CAP_E_FORMAT, "%s: invalid artifact: apply_grads "
                            "input '%s' is no output of train_grads", cap_model_path(s->m),
                            a->inputs[j].name);
        d->a_in[j] = d->g_outs[i];
    }
    return CAP_OK;
}

/* One data-parallel step on this process's shard: train_grads, the allreduce, apply_grads.
 * *stop: in, this process wants to stop after this step; out, some process does. */
static CapStatus dist_step(CapSession *s, const CapTrainOptions *o, DistStep *d,
                           const StepBatch *sb, StepOutputs *so, int *stop, char *err,
                           size_t err_size) {
    CapStatus st = cap_session_run(s, "train_grads", sb->in, d->g_outs, err, err_size);
    if (st) return st;
    double w = o->loss_weight ? o->loss_weight(o->source) : 1.0;
    /* A shard with no loss terms (all padding) has a NaN mean: it adds nothing, as its
     * samples add nothing to the single-process mean. */
    float wf = (float)w;
    for (int64_t k = 0; k < d->n; k++)
        d->bucket[k] = k == BUCKET_STOP ? (float)(*stop != 0)
                     : k == BUCKET_WEIGHT ? wf
                     : w > 0 ? d->bucket[k] * wf : 0.0f;
    st = o->comm->allreduce_sum(o->comm->ctx, d->bucket, d->n, err, err_size);
    if (st) return st;
    *stop = d->bucket[BUCKET_STOP] > 0;
    float total = d->bucket[BUCKET_WEIGHT];
    for (int64_t k = 0; k < d->n; k++)
        if (k != BUCKET_STOP && k != BUCKET_WEIGHT) d->bucket[k] /= total;
    so->loss_at = d->bucket + BUCKET_LOSS;
    return cap_session_run(s, "apply_grads", d->a_in, so->outs, err, err_size);
}

/* A step whose loss or gradient norm is not finite: train_step left every state tensor as
 * it was. Skip: warn and count; stop: name the first non-finite tensor and fail. */
static CapStatus nonfinite_step(CapSession *s, const CapTrainOptions *o, CapTrainMeta *meta,
                                const StepOutputs *so, const StepBatch *sb, FILE *log,
                                char *err, size_t err_size) {
    char what[700];
    name_first_nonfinite(s, so->e, sb->in, what, sizeof what);
    double loss = loss_of(so), gn = scalar(so, so->grad_norm);
    if (log) {
        fprintf(log, "{\"skipped_before_step\":%lld,\"data_position\":%lld", (long long)meta->step + 1,
                (long long)meta->data_position);
        json_num(log, "loss", loss, "%.9g");
        json_num(log, "grad_norm", gn, "%.9g");
        fprintf(log, "}\n");
        CapStatus st = log_written(o, log, err, err_size);
        if (st) return st;
    }
    if (o->on_nonfinite == CAP_NONFINITE_SKIP) {
        meta->skipped++;
        fprintf(stderr, "cap: warning: %s: loss %g, grad_norm %g: step skipped (nothing was "
                "updated); first non-finite: %s\n", sb->where, loss, gn, what);
        return CAP_OK;
    }
    return cap_fail(err, err_size, CAP_E_NONFINITE,
                    "%s: loss %g, grad_norm %g at step %lld: nothing was updated; first "
                    "non-finite: %s (--on-nonfinite=skip skips such batches)", sb->where, loss,
                    gn, (long long)meta->step + 1, what);
}

/* One step: batch, run, counters. *advanced = 1 when the step updated the state. */
/* d: data parallel (NULL: one process); *stop as dist_step's. */
static CapStatus train_one(CapSession *s, const CapTrainOptions *o, CapTrainMeta *meta,
                           StepOutputs *so, DistStep *d, FILE *log, int64_t *samples,
                           int *advanced, int *stop, char *err, size_t err_size) {
    /* Rank 0 draws the single-process dropout stream; the others their own, so that their
     * masks differ (docs/distributed.md). */
    uint32_t stream = meta->seed ^ (d && o->comm->rank ? (uint32_t)o->comm->rank * 0x9E3779B9u : 0u);
    int32_t rng[2] = {(int32_t)stream, (int32_t)meta->step};
    StepBatch sb;
    *advanced = 0;
    CapStatus st = step_batch(s, o, meta, d ? d->g : so->e, rng, &sb, err, err_size);
    if (!st && d) st = dist_step(s, o, d, &sb, so, stop, err, err_size);
    else if (!st) st = cap_session_run(s, step_entry(o), sb.in, so->outs, err, err_size);
    if (!st) {
        double loss = loss_of(so), gn = scalar(so, so->grad_norm);
        if (isfinite(loss) && (so->grad_norm < 0 || isfinite(gn))) {
            /* every rank's shard is the same size: the global batch is size times it */
            *samples += sb.samples * (d ? o->comm->size : 1);
            meta->step++;
            *advanced = 1;
        } else {
            /* data parallel: the inputs to name are apply_grads' (the averaged gradients) */
            StepBatch view = sb;
            if (d) view.in = d->a_in;
            st = nonfinite_step(s, o, meta, so, &view, log, err, err_size);
        }
        meta->data_position++;
    }
    step_batch_free(&sb);
    return st;
}

/* Consecutive skipped steps after which training stops: every batch failing means the
 * problem is not in the data. */
enum { MAX_CONSECUTIVE_SKIPS = 50 };

static CapStatus train_loop(CapSession *s, const CapTrainOptions *o, CapTrainMeta *meta,
                            StepOutputs *so, DistStep *d, FILE *log, char *err,
                            size_t err_size) {
    Progress p = {now_s(), meta->step, 0};
    LossWindow window = {{0}, 0, 0};
    int consecutive_skips = 0;
    while (meta->step < o->steps) {
        int advanced;
        /* Data parallel: each process's clock is read before the step's allreduce, which
         * tells all of them whether any is out of time, so they stop at the same step. */
        int any_out = d && o->max_seconds > 0 && now_s() - p.t0 >= o->max_seconds;
        CapStatus st = train_one(s, o, meta, so, d, log, &p.samples, &advanced, &any_out, err,
                                 err_size);
        if (st) return st;
        int out_of_time = d ? any_out : o->max_seconds > 0 && now_s() - p.t0 >= o->max_seconds;
        if (!advanced) {
            if (++consecutive_skips >= MAX_CONSECUTIVE_SKIPS)
                return cap_fail(err, err_size, CAP_E_NONFINITE,
                                "%d steps in a row had a non-finite loss or gradient norm: "
                                "stopping (the state is the one of step %lld)",
                                consecutive_skips, (long long)meta->step);
            if (out_of_time) break;
            continue;
        }
        consecutive_skips = 0;
        double loss = loss_of(so), lr = scalar(so, so->lr), gn = scalar(so, so->grad_norm);
        Extra x = {.n = 0};
        if (o->evaluate && o->eval_every > 0 && meta->step % o->eval_every == 0) {
            x.n = o->evaluate(o->source, meta->step, x.keys, x.values, MAX_EVAL_METRICS, err,
                              err_size);
            if (x.n < 0) return CAP_E_IO;
        }
        double z = loss_z(&window, loss);
        if (z > SPIKE_Z && (!d || o->comm->rank == 0)) /* every rank has the same loss */
            fprintf(stderr, "cap: warning: step %lld: loss %g is a spike, %.1f standard "
                    "deviations above the mean of the last %d steps\n", (long long)meta->step,
                    loss, z, window.n - 1);
        if ((st = report(o, log, &p, meta->step, loss, lr, gn, out_of_time, &x, err, err_size)))
            return st;
        int stop = out_of_time || (o->on_step && o->on_step(o->user, meta->step, loss, lr, gn));
        if (o->out_path && o->save_every > 0 && meta->step % o->save_every == 0 &&
            meta->step < o->steps && (st = save(s, o, meta, err, err_size)))
            return st;
        if (stop) break;
    }
    return CAP_OK;
}

/* Batch files are opened (shapes and ids checked) before the first step, so a bad file
 * fails the run at once rather than hours in. */
static CapStatus check_batch_files(const CapSession *s, const CapTrainOptions *o, char *err,
                                   size_t err_size) {
    for (int i = 0; !o->next_batch && i < o->n_batches; i++) {
        CapBatch *b = NULL;
        CapStatus st = cap_batch_open(s->m, "train_step", o->batch_paths[i], &b, err, err_size);
        cap_batch_free(b);
        if (st) return st;
    }
    return CAP_OK;
}

/* Every output location is checked before the first step (a missing directory found at the
 * first save would lose the run), and no output may be an input of the run. */
static CapStatus check_outputs(const CapTrainOptions *o, char *err, size_t err_size) {
    char msg[1024];
    const char *const *batches = o->next_batch ? NULL : o->batch_paths;
    int n = o->next_batch ? 0 : o->n_batches;
    int bad = (o->out_path && file_check_new_output(o->out_path, "--out", batches, n, msg, sizeof msg)) ||
              (o->log_path && file_check_new_output(o->log_path, "--log", batches, n, msg, sizeof msg));
    if (bad) return cap_fail(err, err_size, CAP_E_ARG, "%s", msg);
    if (o->log_path && o->out_path &&
        (strcmp(o->log_path, o->out_path) == 0 || file_same(o->log_path, o->out_path)))
        return cap_fail(err, err_size, CAP_E_ARG, "--log and --out are the same file '%s': the "
                        "checkpoint would replace the log", o->out_path);
    return CAP_OK;
}

/* On a resume, the log loses what the interrupted run wrote after the checkpoint's step
 * (those steps are about to run again): it is cut after its last line whose step is at most
 * `step`; an unfinished last line (a kill mid-write) goes too. */
static CapStatus log_cut(const char *path, int64_t step, char *err, size_t err_size) {
    FILE *f = fopen(path, "rb");
    if (!f) return CAP_OK; /* no log yet: fopen "a" creates it */
    long keep = 0, at = 0;
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        size_t len = strlen(line);
        long long n = -1;
        if (line[len - 1] != '\n' ||
            (sscanf(line, "{\"step\":%lld", &n) != 1 &&
             sscanf(line, "{\"skipped_before_step\":%lld", &n) != 1) ||
            n > step)
            break;
        at += (long)len;
        keep = at;
    }
    fclose(f);
    if (truncate(path, keep) != 0)
        return cap_fail(err, err_size, CAP_E_IO, "%s: cannot cut the log back to step %lld: %s",
                        path, (long long)step, strerror(errno));
    return CAP_OK;
}

CapStatus cap_train(CapSession *s, const CapTrainOptions *o, CapTrainMeta *meta, char *err,
                    size_t err_size) {
    if (meta->step == 0) {
        meta->seed = o->seed;
        meta->data_position = 0;
    }
    meta->skipped = 0;
    CapStatus st = check_options(s, o, meta, err, err_size);
    if (!st) st = check_outputs(o, err, err_size);
    if (!st) st = check_batch_files(s, o, err, err_size);
    if (!st && o->log_path && meta->step > 0) st = log_cut(o->log_path, meta->step, err, err_size);
    if (st) return st;
    int stale = o->out_path ? st_remove_stale_temps(o->out_path) : 0;
    if (stale)
        fprintf(stderr, "cap: removed %d temporary file%s left by an interrupted save of %s\n",
                stale, stale == 1 ? "" : "s", o->out_path);
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
    DistStep dist = {0}, *d = NULL;
    if (!st && o->comm) {
        st = dist_new(s, so.e, &dist, err, err_size);
        d = &dist;
    }
    if (!st) st = train_loop(s, o, meta, &so, d, log, err, err_size);
    if (d) dist_free(d);
    if (log && fclose(log) != 0 && !st)
        st = cap_fail(err, err_size, CAP_E_IO, "%s: cannot write the log: %s", o->log_path,
                      strerror(errno));
    outputs_free(&so);
    /* after a non-finite stop the state is still the last good step's: keep it */
    if ((!st || st == CAP_E_NONFINITE) && o->out_path) {
        char save_err[512];
        CapStatus saved = save(s, o, meta, st ? save_err : err, st ? sizeof save_err : err_size);
        size_t used = strlen(err);
        if (st && !saved && used < err_size)
            snprintf(err + used, err_size - used, "; %s holds step %lld", o->out_path,
                     (long long)meta->step);
        if (!st) st = saved;
    }
    return st;
}
