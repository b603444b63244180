/* session.c — a model instance on a backend: one device buffer per state tensor (sized from
 * its CapStateInfo), one arena as large as the largest entry's, and running an entry: each
 * step's CapBufRefs become device pointers (arena + offset, state, the caller's input or
 * output) and the step goes to the backend, in order.
 *
 * Ownership: the session owns its state, arena and scratch arrays; the model is borrowed.
 */
#include "cap_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int max_kernel_args(const CapArtifact *a) {
    int n = 1;
    for (int i = 0; i < a->n_kernels; i++)
        if (a->kernels[i].n_args > n) n = a->kernels[i].n_args;
    return n;
}

static int max_entry_io(const CapArtifact *a) {
    int n = 1;
    for (int i = 0; i < a->n_entries; i++)
        if (a->entries[i].n_inputs + a->entries[i].n_outputs > n)
            n = a->entries[i].n_inputs + a->entries[i].n_outputs;
    return n;
}

static CapStatus alloc_state(CapSession *s, char *err, size_t err_size) {
    const CapArtifact *a = cap_model_artifact(s->m);
    s->state = calloc((size_t)(a->n_state ? a->n_state : 1), sizeof *s->state);
    if (!s->state) return cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    for (int i = 0; i < a->n_state; i++) {
        CapStatus st = s->be->alloc(s->ctx, cap_tensor_bytes(&a->state[i].t), &s->state[i], err,
                                    err_size);
        if (st) return st;
    }
    return CAP_OK;
}

/* Selects and opens the backend, and writes the note on the choice. auto falls back to cpu
 * when cuda is usable but cannot run this model (no image for the GPU, ...), and says why. */
static CapStatus open_backend(CapSession *s, CapBackendKind kind, char *err, size_t err_size) {
    CapStatus st = cap_backend_select(kind, &s->be, s->note, sizeof s->note, err, err_size);
    if (!st) st = s->be->open(s->m, &s->ctx, err, err_size);
    if (st && kind == CAP_BACKEND_AUTO && s->be == &cap_backend_cuda) {
        snprintf(s->note, sizeof s->note, "backend auto: using cpu (cuda: %.200s)", err);
        s->be = &cap_backend_cpu;
        st = s->be->open(s->m, &s->ctx, err, err_size);
    } else if (!st && s->be->describe) {
        char desc[200];
        s->be->describe(s->ctx, desc, sizeof desc);
        snprintf(s->note, sizeof s->note, "backend %s: using %s (%s)",
                 kind == CAP_BACKEND_AUTO ? "auto" : s->be->name, s->be->name, desc);
    }
    return st;
}

/* Hyperparameters (CAP_STATE_HPARAM: the learning rates) hold their artifact's value from the
 * start: no file ever carries them, so a session that only loads a checkpoint or weights
 * (never cap_session_init) still trains with the lr it was compiled with. */
static CapStatus fill_hparams(CapSession *s, char *err, size_t err_size) {
    const CapArtifact *a = cap_model_artifact(s->m);
    for (int i = 0; i < a->n_state; i++) {
        const CapStateInfo *si = &a->state[i];
        if (si->kind != CAP_STATE_HPARAM) continue;
        if (si->t.dtype != CAP_DT_F32 || si->t.numel != 1)
            return cap_fail(err, err_size, CAP_E_FORMAT,
                            "hyperparameter '%s' is not one f32 value", si->t.name);
        float v = 0;
        CapStatus st = cap_init_state(si, i, 0, &v, err, err_size);
        if (!st) st = s->be->copy_in(s->ctx, s->state[i], &v, sizeof v, err, err_size);
        if (st) return st;
    }
    return CAP_OK;
}

CapStatus cap_session_new(const CapModel *m, CapBackendKind kind, CapSession **out, char *err,
                          size_t err_size) {
    if (!m || !out) return cap_fail(err, err_size, CAP_E_ARG, "cap_session_new: NULL argument");
    *out = NULL;
    CapSession *s = calloc(1, sizeof *s);
    if (!s) return cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    s->m = m;
    s->threads = cap_default_threads();
    const CapArtifact *a = cap_model_artifact(m);
    CapStatus st = open_backend(s, kind, err, err_size);
    if (st) {
        s->be = NULL;
        cap_session_free(s);
        return st;
    }
    s->bufs = calloc((size_t)max_kernel_args(a), sizeof *s->bufs);
    s->dev_io = calloc((size_t)max_entry_io(a), sizeof *s->dev_io);
    if (!s->bufs || !s->dev_io) st = cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    if (!st) st = alloc_state(s, err, err_size);
    if (!st) st = fill_hparams(s, err, err_size);
    CapCounts c;
    cap_model_counts(m, &c);
    if (!st && c.max_arena_bytes > 0)
        st = s->be->alloc(s->ctx, (size_t)c.max_arena_bytes, &s->arena, err, err_size);
    if (st) {
        cap_session_free(s);
        return st;
    }
    *out = s;
    return CAP_OK;
}

int cap_session_set_threads(CapSession *s, int n) {
    if (!s) return 0;
    s->threads = n > 0 ? n : cap_default_threads();
    return s->threads;
}

void cap_session_free(CapSession *s) {
    if (!s) return;
    if (s->be) {
        const CapArtifact *a = cap_model_artifact(s->m);
        if (s->state)
            for (int i = 0; i < a->n_state; i++)
                if (s->state[i]) s->be->free(s->ctx, s->state[i]);
        if (s->arena) s->be->free(s->ctx, s->arena);
        s->be->close(s->ctx);
    }
    free(s->state);
    free(s->bufs);
    free(s->dev_io);
    free(s);
}

const CapModel *cap_session_model(const CapSession *s) { return s->m; }
const char *cap_session_backend_name(const CapSession *s) { return s->be->name; }
const char *cap_session_backend_note(const CapSession *s) { return s->note; }

static CapStatus check_state_index(const CapSession *s, int index, char *err, size_t err_size) {
    if (index < 0 || index >= cap_model_artifact(s->m)->n_state)
        return cap_fail(err, err_size, CAP_E_ARG, "state index %d out of range", index);
    return CAP_OK;
}

CapStatus cap_session_read_state(const CapSession *s, int index, void *dst, char *err,
                                 size_t err_size) {
    CapStatus st = check_state_index(s, index, err, err_size);
    if (st) return st;
    const CapTensorInfo *t = &cap_model_artifact(s->m)->state[index].t;
    return s->be->copy_out(s->ctx, dst, s->state[index], cap_tensor_bytes(t), err, err_size);
}

CapStatus cap_session_write_state(CapSession *s, int index, const void *src, char *err,
                                  size_t err_size) {
    CapStatus st = check_state_index(s, index, err, err_size);
    if (st) return st;
    const CapTensorInfo *t = &cap_model_artifact(s->m)->state[index].t;
    s->derived_stale = 1;
    s->state_writes++;
    return s->be->copy_in(s->ctx, s->state[index], src, cap_tensor_bytes(t), err, err_size);
}

CapStatus cap_session_init(CapSession *s, uint32_t seed, char *err, size_t err_size) {
    const CapArtifact *a = cap_model_artifact(s->m);
    size_t max_bytes = 4;
    for (int i = 0; i < a->n_state; i++)
        if (cap_tensor_bytes(&a->state[i].t) > max_bytes) max_bytes = cap_tensor_bytes(&a->state[i].t);
    void *host = malloc(max_bytes);
    if (!host) return cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    CapStatus st = CAP_OK;
    for (int i = 0; i < a->n_state && !st; i++) {
        st = cap_init_state(&a->state[i], i, seed, host, err, err_size);
        if (!st) st = cap_session_write_state(s, i, host, err, err_size);
    }
    free(host);
    return st;
}

/* ---- running an entry ---------------------------------------------------------------------- */

/* Device pointers for the entry's inputs and outputs: the caller's own buffers on a host-memory
 * backend, else device copies (inputs copied in here). dev_io[0..n_in) inputs, then outputs. */
static CapStatus bind_io(CapSession *s, const CapEntry *e, const void *const *inputs,
                         void *const *outputs, char *err, size_t err_size) {
    memset(s->dev_io, 0, (size_t)(e->n_inputs + e->n_outputs) * sizeof *s->dev_io);
    for (int i = 0; i < e->n_inputs; i++) {
        if (!inputs || !inputs[i])
            return cap_fail(err, err_size, CAP_E_ARG, "entry '%s': input '%s' is NULL", e->name,
                            e->inputs[i].name);
        size_t bytes = cap_tensor_bytes(&e->inputs[i]);
        if (s->be->host_memory) {
            /* Kernels never write their inputs; the cast only fits the kernel signature. */
            s->dev_io[i] = (void *)inputs[i];
            continue;
        }
        CapStatus st = s->be->alloc(s->ctx, bytes, &s->dev_io[i], err, err_size);
        if (!st) st = s->be->copy_in(s->ctx, s->dev_io[i], inputs[i], bytes, err, err_size);
        if (st) return st;
    }
    for (int i = 0; i < e->n_outputs; i++) {
        int si = e->output_state ? e->output_state[i] : -1;
        void **slot = &s->dev_io[e->n_inputs + i];
        if (si >= 0) {
            *slot = s->state[si]; /* "@X": written in place */
            continue;
        }
        if (!outputs || !outputs[i])
            return cap_fail(err, err_size, CAP_E_ARG, "entry '%s': output '%s' is NULL", e->name,
                            e->outputs[i].name);
        if (s->be->host_memory) *slot = outputs[i];
        else {
            CapStatus st = s->be->alloc(s->ctx, cap_tensor_bytes(&e->outputs[i]), slot, err,
                                        err_size);
            if (st) return st;
        }
    }
    return CAP_OK;
}

/* Frees device copies (non-host backends), copying outputs back first when copy_back. */
static CapStatus unbind_io(CapSession *s, const CapEntry *e, void *const *outputs,
                           int copy_back, char *err, size_t err_size) {
    if (s->be->host_memory) return CAP_OK;
    CapStatus st = CAP_OK;
    for (int i = 0; i < e->n_outputs; i++) {
        int si = e->output_state ? e->output_state[i] : -1;
        void *d = s->dev_io[e->n_inputs + i];
        if (si >= 0 || !d) continue;
        if (copy_back && !st)
            st = s->be->copy_out(s->ctx, outputs[i], d, cap_tensor_bytes(&e->outputs[i]), err,
                                 err_size);
        s->be->free(s->ctx, d);
    }
    for (int i = 0; i < e->n_inputs; i++)
        if (s->dev_io[i]) s->be->free(s->ctx, s->dev_io[i]);
    return st;
}

/* A reference's address: its tensor's, plus its offset (a view that starts inside it). */
static void *resolve(const CapSession *s, const CapEntry *e, const CapBufRef *r) {
    char *base = NULL;
    switch (r->space) {
    case CAP_BUF_ARENA: base = s->arena; break;
    case CAP_BUF_STATE: base = s->state[r->index]; break;
    case CAP_BUF_INPUT: base = s->dev_io[r->index]; break;
    case CAP_BUF_OUTPUT: base = s->dev_io[e->n_inputs + r->index]; break;
    }
    return base != NULL ? base + r->offset : NULL; /* model.c checked every reference */
}

static CapStatus run_steps(CapSession *s, const CapEntry *e, char *err, size_t err_size) {
    const CapArtifact *a = cap_model_artifact(s->m);
    for (int i = 0; i < e->n_steps; i++) {
        const CapStep *st = &e->steps[i];
        for (int j = 0; j < st->n_args; j++) s->bufs[j] = resolve(s, e, &st->args[j]);
        CapStatus rc = s->be->run_step(s->ctx, &a->kernels[st->kernel], s->bufs, err, err_size);
        if (rc) return rc;
    }
    return s->be->sync(s->ctx, err, err_size);
}

static CapStatus run_entry(CapSession *s, const CapEntry *e, const void *const *inputs,
                           void *const *outputs, char *err, size_t err_size) {
    const CapArtifact *a = cap_model_artifact(s->m);
    if (a->set_threads) a->set_threads(s->threads); /* for this calling thread's kernels */
    CapStatus st = bind_io(s, e, inputs, outputs, err, err_size);
    if (!st) st = run_steps(s, e, err, err_size);
    CapStatus st2 = unbind_io(s, e, outputs, !st, err, err_size);
    return st ? st : st2;
}

/* Derived state (CAP_STATE_DERIVED: frozen BatchNorms folded into their convolutions) is
 * recomputed by the "fold" entry whenever state was written from outside since it last ran:
 * before the first entry that might read it. Entries never write what "fold" reads. */
static CapStatus refresh_derived(CapSession *s, char *err, size_t err_size) {
    if (!s->derived_stale) return CAP_OK;
    int fi = cap_model_find_entry(s->m, "fold");
    s->derived_stale = 0;
    if (fi < 0) return CAP_OK;
    CapStatus st = run_entry(s, &cap_model_artifact(s->m)->entries[fi], NULL, NULL, err, err_size);
    if (st) s->derived_stale = 1;
    return st;
}

CapStatus cap_session_run(CapSession *s, const char *entry, const void *const *inputs,
                          void *const *outputs, char *err, size_t err_size) {
    if (!s || !entry) return cap_fail(err, err_size, CAP_E_ARG, "cap_session_run: NULL argument");
    CapStatus st = refresh_derived(s, err, err_size);
    if (st) return st;
    int ei = cap_model_find_entry(s->m, entry);
    if (ei < 0)
        return cap_fail(err, err_size, CAP_E_UNSUPPORTED, "%s has no entry point '%s'",
                        cap_model_path(s->m), entry);
    return run_entry(s, &cap_model_artifact(s->m)->entries[ei], inputs, outputs, err,
                     err_size);
}
