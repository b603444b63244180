/* lower_key.c — a schedule step's structure as a key, so that a step shaped like an earlier
 * one reuses that one's kernel instead of being lowered again (LowerCache, codegen.h).
 *
 * A deep model's kernels are mostly the same few: every layer repeats them, and every entry
 * point repeats forward's (1,000 encoder layers: ~200 distinct kernels among ~200,000 steps).
 * Lowering (lower.c and the lower_*.c it calls) sees a step only through
 *   - its group's pattern (or that it is a lone op) and its ops in order: kind, attributes,
 *     result dtype and shape;
 *   - each op input: an earlier op of the step (by position) or a read (by position in the
 *     step's reads, which is its argument position after the writes);
 *   - its reads' dtypes and shapes and its writes (by the position of the op defining each);
 *   - for the attention pattern only, which of the step's values the function returns (the
 *     matcher asks: attn_match);
 * and everything it builds into a KernelDesc (buffers, variables, statements) follows from
 * those alone: value names and ids go only into the kernel's name, comment and argument
 * descriptions, which kd_equal ignores. So two steps with equal keys lower to equal
 * descriptions (kd_equal, both forms), and the later one takes the earlier one's kernel with
 * its own arguments (the step's writes, then reads, exactly as lower.c declares them).
 * tests/codegen/test_lower_reuse.c lowers every step of the captioners both ways and compares.
 * Equal descriptions from different keys are still merged by the package (pkg_add_kernel).
 */
#include <stdlib.h>
#include <string.h>

#include "lower.h"

/* One key being built: bytes, grown as needed. */
typedef struct KeyBuf {
    unsigned char *b;
    size_t n, cap;
    bool oom;
} KeyBuf;

static void put(KeyBuf *k, const void *p, size_t n) {
    if (n == 0) return;
    if (k->n + n > k->cap) {
        size_t cap = k->cap ? k->cap * 2 : 256;
        while (cap < k->n + n) cap *= 2;
        unsigned char *b = realloc(k->b, cap);
        if (b == NULL) {
            k->oom = true;
            return;
        }
        k->b = b;
        k->cap = cap;
    }
    memcpy(k->b + k->n, p, n);
    k->n += n;
}

static void put_i64(KeyBuf *k, int64_t v) { put(k, &v, sizeof v); }

static void put_str(KeyBuf *k, const char *s) {
    size_t n = s != NULL ? strlen(s) : 0;
    put_i64(k, s != NULL ? (int64_t)n : -1);
    put(k, s, n);
}

/* v's dtype and shape, and whether the function returns it when `returned` is not NULL. */
static void put_type(KeyBuf *k, const Value *v, const bool *returned) {
    put_i64(k, (int64_t)v->dtype * 64 + v->shape.rank * 2 +
                   (returned != NULL && returned[v->id] ? 1 : 0));
    put(k, v->shape.dims, sizeof v->shape.dims[0] * (size_t)(v->shape.rank > 0 ? v->shape.rank : 0));
}

static void put_attrs(KeyBuf *k, const Op *op) {
    const OpInfo *info = op_info(op->kind);
    for (int i = 0; i < info->n_attrs; i++) {
        const AttrValue *a = &op->attrs[i];
        put_i64(k, a->kind);
        switch (a->kind) {
        case ATTR_INT:
        case ATTR_BOOL: put_i64(k, a->i); break;
        case ATTR_FLOAT: put(k, &a->f, sizeof a->f); break;
        case ATTR_INTS:
            put_i64(k, a->n_ints);
            put(k, a->ints, sizeof *a->ints * (size_t)(a->n_ints > 0 ? a->n_ints : 0));
            break;
        case ATTR_STRING: put_str(k, a->s); break;
        case ATTR_FLOATS:
            put_i64(k, a->n_floats);
            put(k, a->floats, sizeof *a->floats * (size_t)(a->n_floats > 0 ? a->n_floats : 0));
            break;
        }
    }
}

/* Step st's key into k. code[v->id] is scratch (per value of the function, 0 outside a
 * call): set here to 1 + op position for the step's values and -1 - read position for its
 * reads, and cleared again. */
static void step_key(const Schedule *s, const Step *st, int *code, KeyBuf *k) {
    const Function *f = s->f;
    /* Only the attention lowering asks what the function returns (attn_match); elsewhere it
     * would tell apart the same step of two entry points (forward returns what train_step
     * consumes). */
    const char *pattern = st->group >= 0 ? f->groups[st->group].pattern : NULL;
    bool attention = pattern != NULL && strncmp(pattern, "attention", 9) == 0;
    const bool *returned = attention ? s->returned : NULL;
    k->n = 0;
    put_str(k, pattern);
    put_i64(k, st->n_ops);
    put_i64(k, st->n_writes);
    put_i64(k, st->n_reads);
    for (int r = 0; r < st->n_reads; r++) {
        code[st->reads[r]->id] = -1 - r;
        put_type(k, st->reads[r], returned);
    }
    for (int i = 0; i < st->n_ops; i++) {
        const Op *op = f->ops[st->first_op + i];
        put_i64(k, op->kind);
        put_i64(k, op->n_inputs);
        put_type(k, op->result, returned);
        put_attrs(k, op);
        for (int j = 0; j < op->n_inputs; j++) put_i64(k, code[op->inputs[j]->id]);
        code[op->result->id] = 1 + i;
    }
    for (int w = 0; w < st->n_writes; w++) put_i64(k, code[st->writes[w]->id]);
    for (int r = 0; r < st->n_reads; r++) code[st->reads[r]->id] = 0;
    for (int i = 0; i < st->n_ops; i++) code[f->ops[st->first_op + i]->result->id] = 0;
    ir_work_add((int64_t)(k->n / sizeof(int64_t))); /* the key's size: the step's own */
}

/* ---- the cache: open addressing over key hashes ----------------------------------------- */

typedef struct KeySlot {
    uint64_t hash;
    unsigned char *key; /* owned; NULL: empty */
    size_t len;
    const LoweredKernel *kernel;
} KeySlot;

struct LowerCache {
    KeySlot *slots;
    size_t n_slots, n_used;
    KeyBuf buf;
    int *code;
    int n_code;
};

LowerCache *lower_cache_new(void) { return calloc(1, sizeof(LowerCache)); }

void lower_cache_free(LowerCache *c) {
    if (c == NULL) return;
    for (size_t i = 0; i < c->n_slots; i++) free(c->slots[i].key);
    free(c->slots);
    free(c->buf.b);
    free(c->code);
    free(c);
}

static uint64_t key_hash(const unsigned char *b, size_t n) {
    uint64_t h = 0xcbf29ce484222325ULL;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) { /* a word at a time: keys are mostly int64s */
        uint64_t w;
        memcpy(&w, b + i, 8);
        h = (h ^ w) * 0x100000001b3ULL;
        h ^= h >> 29;
    }
    for (; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}

static KeySlot *find(const LowerCache *c, uint64_t hash, const unsigned char *key, size_t len) {
    size_t mask = c->n_slots - 1;
    size_t j = (size_t)hash & mask;
    while (c->slots[j].key != NULL &&
           (c->slots[j].hash != hash || c->slots[j].len != len ||
            memcmp(c->slots[j].key, key, len) != 0))
        j = (j + 1) & mask;
    return &c->slots[j];
}

static int grow(LowerCache *c) {
    size_t n = c->n_slots ? c->n_slots * 2 : 1024;
    KeySlot *slots = calloc(n, sizeof *slots);
    if (slots == NULL) return -1;
    for (size_t i = 0; i < c->n_slots; i++) {
        if (c->slots[i].key == NULL) continue;
        size_t j = (size_t)c->slots[i].hash & (n - 1);
        while (slots[j].key != NULL) j = (j + 1) & (n - 1);
        slots[j] = c->slots[i];
    }
    free(c->slots);
    c->slots = slots;
    c->n_slots = n;
    return 0;
}

int lower_cache_begin(LowerCache *c, const Function *f) {
    if (f->n_values + 1 > c->n_code) {
        free(c->code);
        c->n_code = f->n_values + 1;
        c->code = calloc((size_t)c->n_code, sizeof *c->code);
        if (c->code == NULL) {
            c->n_code = 0;
            return -1;
        }
    }
    return 0;
}

int lower_cache_lookup(LowerCache *c, const Schedule *s, int step, const LoweredKernel **hit,
                       uint64_t *hash) {
    step_key(s, &s->steps[step], c->code, &c->buf);
    if (c->buf.oom) return -1;
    *hash = key_hash(c->buf.b, c->buf.n);
    *hit = NULL;
    if (c->n_slots == 0) return 0;
    KeySlot *slot = find(c, *hash, c->buf.b, c->buf.n);
    *hit = slot->kernel;
    return 0;
}

int lower_cache_add(LowerCache *c, uint64_t hash, const LoweredKernel *k) {
    if ((c->n_used + 1) * 2 > c->n_slots && grow(c) != 0) return -1;
    KeySlot *slot = find(c, hash, c->buf.b, c->buf.n);
    if (slot->key != NULL) return 0; /* there already */
    slot->key = malloc(c->buf.n + 1);
    if (slot->key == NULL) return -1;
    memcpy(slot->key, c->buf.b, c->buf.n);
    slot->len = c->buf.n;
    slot->hash = hash;
    slot->kernel = k;
    c->n_used++;
    return 0;
}
