/* model.c — loading cap.so: dlopen, the `cap_artifact` symbol, its version, and a check of
 * every table in it (state shapes, entries, steps, buffer references) so that a session can
 * trust the artifact and never touch memory outside a buffer. Also the small helpers every
 * runtime file uses (status names, error messages, tensor type strings, counts, config).
 */
#include "cap_internal.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

const char *cap_status_name(CapStatus s) {
    switch (s) {
    case CAP_OK: return "ok";
    case CAP_E_ARG: return "bad argument";
    case CAP_E_IO: return "i/o error";
    case CAP_E_FORMAT: return "malformed input";
    case CAP_E_VERSION: return "version mismatch";
    case CAP_E_MISMATCH: return "tensor mismatch";
    case CAP_E_BACKEND: return "backend unavailable";
    case CAP_E_NOMEM: return "out of memory";
    case CAP_E_UNSUPPORTED: return "unsupported by this cap.so";
    case CAP_E_NONFINITE: return "non-finite training step";
    }
    return "unknown status";
}

char *cap_dims_str(int rank, const int64_t *dims, char *buf, size_t size) {
    size_t n = 0;
    n += (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < rank && n < size; i++)
        n += (size_t)snprintf(buf + n, size - n, i ? ",%lld" : "%lld", (long long)dims[i]);
    if (n < size) snprintf(buf + n, size - n, "]");
    return buf;
}

size_t cap_tensor_bytes(const CapTensorInfo *t) { return (size_t)t->numel * 4; }

char *cap_tensor_type_str(const CapTensorInfo *t, char *buf, size_t size) {
    char dims[160];
    snprintf(buf, size, "%s%s", t->dtype == CAP_DT_I32 ? "i32" : "f32",
             cap_dims_str(t->rank, t->dims, dims, sizeof dims));
    return buf;
}

/* ---- validation ---------------------------------------------------------------------------- */

static CapStatus check_tensor(const CapTensorInfo *t, const char *what, char *err,
                              size_t err_size) {
    if (!t->name) return cap_fail(err, err_size, CAP_E_FORMAT, "%s without a name", what);
    if (t->dtype != CAP_DT_F32 && t->dtype != CAP_DT_I32)
        return cap_fail(err, err_size, CAP_E_FORMAT, "%s '%s': unknown dtype %d", what, t->name,
                        (int)t->dtype);
    if (t->rank < 0 || t->rank > CAP_MAX_RANK)
        return cap_fail(err, err_size, CAP_E_FORMAT, "%s '%s': rank %d", what, t->name,
                        (int)t->rank);
    int64_t n = 1;
    for (int i = 0; i < t->rank; i++) {
        if (t->dims[i] < 0 || (t->dims[i] > 0 && n > INT64_MAX / 8 / t->dims[i]))
            return cap_fail(err, err_size, CAP_E_FORMAT, "%s '%s': bad dimension %lld", what,
                            t->name, (long long)t->dims[i]);
        n *= t->dims[i];
    }
    if (n != t->numel)
        return cap_fail(err, err_size, CAP_E_FORMAT,
                        "%s '%s': numel %lld does not match its shape (%lld)", what, t->name,
                        (long long)t->numel, (long long)n);
    return CAP_OK;
}

/* The bytes available behind a reference of entry e, from its offset on. */
static CapStatus ref_limit(const CapArtifact *a, const CapEntry *e, const CapBufRef *r,
                           int64_t *limit) {
    int64_t size;
    switch (r->space) {
    case CAP_BUF_ARENA: size = e->arena_bytes; break;
    case CAP_BUF_STATE:
        if (r->index < 0 || r->index >= a->n_state) return CAP_E_FORMAT;
        size = a->state[r->index].t.numel * 4;
        break;
    case CAP_BUF_INPUT:
        if (r->index < 0 || r->index >= e->n_inputs) return CAP_E_FORMAT;
        size = e->inputs[r->index].numel * 4;
        break;
    case CAP_BUF_OUTPUT:
        if (r->index < 0 || r->index >= e->n_outputs) return CAP_E_FORMAT;
        size = e->outputs[r->index].numel * 4;
        break;
    default: return CAP_E_FORMAT;
    }
    if (r->offset < 0 || r->offset > size) return CAP_E_FORMAT;
    *limit = size - r->offset;
    return CAP_OK;
}

static CapStatus check_steps(const CapArtifact *a, const CapEntry *e, char *err,
                             size_t err_size) {
    for (int s = 0; s < e->n_steps; s++) {
        const CapStep *st = &e->steps[s];
        if (st->kernel < 0 || st->kernel >= a->n_kernels)
            return cap_fail(err, err_size, CAP_E_FORMAT, "entry '%s' step %d: kernel %d of %d",
                            e->name, s, (int)st->kernel, (int)a->n_kernels);
        const CapKernel *k = &a->kernels[st->kernel];
        if (st->n_args != k->n_args || (st->n_args > 0 && !st->args))
            return cap_fail(err, err_size, CAP_E_FORMAT,
                            "entry '%s' step %d: %d arguments for kernel '%s' of %d", e->name,
                            s, (int)st->n_args, k->name, (int)k->n_args);
        for (int i = 0; i < st->n_args; i++) {
            const CapBufRef *r = &st->args[i];
            int64_t limit = 0;
            if (ref_limit(a, e, r, &limit) != CAP_OK || r->bytes < 0 || r->bytes > limit)
                return cap_fail(err, err_size, CAP_E_FORMAT,
                                "entry '%s' step %d (kernel '%s') argument %d: reference "
                                "(space %d, index %d, offset %lld, %lld bytes) is out of range",
                                e->name, s, k->name, i, (int)r->space, (int)r->index,
                                (long long)r->offset, (long long)r->bytes);
        }
    }
    return CAP_OK;
}

static CapStatus check_entry(const CapArtifact *a, const CapEntry *e, char *err,
                             size_t err_size) {
    if (!e->name) return cap_fail(err, err_size, CAP_E_FORMAT, "an entry without a name");
    if (e->n_inputs < 0 || e->n_outputs < 0 || e->n_steps < 0 || e->arena_bytes < 0 ||
        (e->n_inputs && !e->inputs) || (e->n_outputs && !e->outputs) ||
        (e->n_steps && !e->steps))
        return cap_fail(err, err_size, CAP_E_FORMAT, "entry '%s': malformed tables", e->name);
    CapStatus st;
    for (int i = 0; i < e->n_inputs; i++)
        if ((st = check_tensor(&e->inputs[i], "input", err, err_size))) return st;
    for (int i = 0; i < e->n_outputs; i++) {
        if ((st = check_tensor(&e->outputs[i], "output", err, err_size))) return st;
        int si = e->output_state ? e->output_state[i] : -1;
        if (si >= a->n_state || (si >= 0 && a->state[si].t.numel != e->outputs[i].numel))
            return cap_fail(err, err_size, CAP_E_FORMAT,
                            "entry '%s' output '%s': bad state index %d", e->name,
                            e->outputs[i].name, si);
    }
    return check_steps(a, e, err, err_size);
}

static CapStatus check_artifact(const CapArtifact *a, char *err, size_t err_size) {
    if (a->n_state < 0 || a->n_entries < 0 || a->n_kernels < 0 || (a->n_state && !a->state) ||
        (a->n_entries && !a->entries) || (a->n_kernels && !a->kernels))
        return cap_fail(err, err_size, CAP_E_FORMAT, "malformed tables");
    CapStatus st;
    for (int i = 0; i < a->n_state; i++) {
        if ((st = check_tensor(&a->state[i].t, "state", err, err_size))) return st;
        if (a->state[i].kind < CAP_STATE_WEIGHT || a->state[i].kind > CAP_STATE_HPARAM)
            return cap_fail(err, err_size, CAP_E_FORMAT, "state '%s': unknown kind %d",
                            a->state[i].t.name, (int)a->state[i].kind);
    }
    for (int i = 0; i < a->n_kernels; i++)
        if (!a->kernels[i].name || a->kernels[i].n_args < 0 ||
            (a->n_cuda_images > 0 && (a->kernels[i].cuda_module < 0 ||
                                      a->kernels[i].cuda_module >= a->n_cuda_modules)))
            return cap_fail(err, err_size, CAP_E_FORMAT, "kernel %d: malformed", i);
    if (a->n_cuda_images < 0 || (a->n_cuda_images > 0 && (!a->cuda_images || a->n_cuda_modules < 1)))
        return cap_fail(err, err_size, CAP_E_FORMAT, "malformed CUDA image table");
    for (int i = 0; i < a->n_cuda_images; i++)
        if (!a->cuda_images[i].arch || !a->cuda_images[i].data || a->cuda_images[i].module < 0 ||
            a->cuda_images[i].module >= a->n_cuda_modules)
            return cap_fail(err, err_size, CAP_E_FORMAT, "CUDA image %d: malformed", i);
    for (int i = 0; i < a->n_entries; i++)
        if ((st = check_entry(a, &a->entries[i], err, err_size))) return st;
    return CAP_OK;
}

/* ---- open / close -------------------------------------------------------------------------- */

static CapStatus open_artifact(CapModel *m, const char *path, char *err, size_t err_size) {
    cap_threads_prepare(); /* libgomp and OpenBLAS read their settings as they load */
    dlerror();
    /* RTLD_LOCAL: two cap.so files loaded side by side keep their kernels apart.
     * RTLD_NODELETE: cap.so's kernels start OpenMP/OpenBLAS thread pools and allocations that
     * outlive any one model; unmapping that code under them at cap_model_close is unsafe. */
    m->handle = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    if (!m->handle) {
        const char *why = dlerror();
        return cap_fail(err, err_size, CAP_E_IO, "%s: cannot load: %s", path,
                        why ? why : "dlopen failed");
    }
    m->a = (const CapArtifact *)dlsym(m->handle, CAP_ARTIFACT_SYMBOL);
    if (!m->a)
        return cap_fail(err, err_size, CAP_E_FORMAT,
                        "%s: not a capc model: no symbol '%s' (was it built by `capc -o`?)",
                        path, CAP_ARTIFACT_SYMBOL);
    if (m->a->version != CAP_ARTIFACT_VERSION)
        return cap_fail(err, err_size, CAP_E_VERSION,
                        "%s: artifact version %u, this runtime reads version %d: recompile it "
                        "with a capc that matches this runtime (capc %s)",
                        path, (unsigned)m->a->version, CAP_ARTIFACT_VERSION, CAPC_VERSION);
    char msg[768] = "";
    CapStatus st = check_artifact(m->a, msg, sizeof msg);
    if (st) return cap_fail(err, err_size, st, "%s: invalid artifact: %s", path, msg);
    return CAP_OK;
}

CapStatus cap_model_open(const char *path, CapModel **out, char *err, size_t err_size) {
    if (!path || !out) return cap_fail(err, err_size, CAP_E_ARG, "cap_model_open: NULL argument");
    *out = NULL;
    CapModel *m = calloc(1, sizeof *m);
    if (!m) return cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    /* dlopen searches the library path for names without a slash; a model file is a path. */
    size_t n = strlen(path);
    m->path = malloc(n + 3);
    if (!m->path) {
        free(m);
        return cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    }
    snprintf(m->path, n + 3, "%s%s", strchr(path, '/') ? "" : "./", path);
    CapStatus st = open_artifact(m, m->path, err, err_size);
    if (st) {
        cap_model_close(m);
        return st;
    }
    if (m->a->config_json) m->config = cJSON_Parse(m->a->config_json);
    *out = m;
    return CAP_OK;
}

void cap_model_close(CapModel *m) {
    if (!m) return;
    cJSON_Delete(m->config);
    if (m->handle) dlclose(m->handle);
    free(m->path);
    free(m);
}

const CapArtifact *cap_model_artifact(const CapModel *m) { return m->a; }
const char *cap_model_path(const CapModel *m) { return m->path; }

int cap_model_find_entry(const CapModel *m, const char *name) {
    for (int i = 0; i < m->a->n_entries; i++)
        if (strcmp(m->a->entries[i].name, name) == 0) return i;
    return -1;
}

int cap_model_find_state(const CapModel *m, const char *name) {
    for (int i = 0; i < m->a->n_state; i++)
        if (strcmp(m->a->state[i].t.name, name) == 0) return i;
    return -1;
}

void cap_model_counts(const CapModel *m, CapCounts *c) {
    memset(c, 0, sizeof *c);
    const CapArtifact *a = m->a;
    for (int i = 0; i < a->n_state; i++) {
        const CapStateInfo *s = &a->state[i];
        c->state_bytes += s->t.numel * 4;
        if (s->kind == CAP_STATE_WEIGHT) {
            c->n_weights++;
            c->params += s->t.numel;
            if (s->trainable) {
                c->n_trainable++;
                c->trainable += s->t.numel;
            }
        } else if (s->kind == CAP_STATE_BUFFER) {
            c->n_buffers++;
            c->buffer_elems += s->t.numel;
        } else if (s->kind == CAP_STATE_DERIVED) {
            c->n_derived++;
            c->derived_elems += s->t.numel;
        } else if (s->kind == CAP_STATE_HPARAM) {
            c->n_hparams++;
        } else {
            c->n_optim++;
            c->optim_elems += s->t.numel;
        }
    }
    for (int i = 0; i < a->n_entries; i++)
        if (a->entries[i].arena_bytes > c->max_arena_bytes)
            c->max_arena_bytes = a->entries[i].arena_bytes;
}

int cap_model_config_int(const CapModel *m, const char *name, int64_t *value) {
    const cJSON *v = m->config ? cJSON_GetObjectItemCaseSensitive(m->config, name) : NULL;
    if (!cJSON_IsNumber(v) || v->valuedouble != (double)(int64_t)v->valuedouble) return -1;
    *value = (int64_t)v->valuedouble;
    return 0;
}
