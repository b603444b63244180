/* ir.c — dtypes, shapes, the module/function/value/op builder, attribute access, value
 * naming and the internal-error tier (see ir.h for the contract).
 *
 * Value names are unique per function. Lookups go through a hash index kept beside the arena
 * (a Module's layout is public, so the index lives in struct Arena). The index is a cache
 * that is validated on every hit: an entry only counts if the value still has that name and
 * still sits in its function's value array, so renames and passes that drop values never
 * make it lie.
 */
#include "ir.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "ops.h"

const SrcLoc SRCLOC_NONE = {NULL, 0, 0};

/* ---- dtypes and shapes ---------------------------------------------------------------- */

static const char *const DTYPE_NAMES[DT_COUNT] = {"f32", "i32", "bf16", "f16"};

const char *dtype_name(DType dtype) {
    return dtype >= 0 && dtype < DT_COUNT ? DTYPE_NAMES[dtype] : "?";
}

bool dtype_from_name(const char *name, DType *dtype) {
    for (int i = 0; i < DT_COUNT; i++) {
        if (strcmp(DTYPE_NAMES[i], name) == 0) {
            *dtype = (DType)i;
            return true;
        }
    }
    return false;
}

int dtype_size(DType dtype) {
    switch (dtype) {
    case DT_F32:
    case DT_I32: return 4;
    case DT_BF16:
    case DT_F16: return 2;
    default: return 0;
    }
}

bool dtype_is_float(DType dtype) { return dtype != DT_I32; }

Shape shape_unknown(void) {
    Shape s;
    memset(&s, 0, sizeof s);
    s.rank = -1;
    return s;
}

Shape shape_scalar(void) {
    Shape s;
    memset(&s, 0, sizeof s);
    return s;
}

Shape shape_make(int rank, const int64_t *dims) {
    IR_ASSERT(rank >= -1 && rank <= IR_MAX_RANK);
    Shape s = shape_scalar();
    s.rank = rank;
    for (int i = 0; i < rank; i++) s.dims[i] = dims[i];
    return s;
}

Shape shape_of(int rank, ...) {
    IR_ASSERT(rank >= 0 && rank <= IR_MAX_RANK);
    int64_t dims[IR_MAX_RANK];
    va_list ap;
    va_start(ap, rank);
    for (int i = 0; i < rank; i++) dims[i] = va_arg(ap, int64_t);
    va_end(ap);
    return shape_make(rank, dims);
}

bool shape_known(const Shape *s) { return s->rank >= 0; }

bool shape_equal(const Shape *a, const Shape *b) {
    if (a->rank != b->rank) return false;
    for (int i = 0; i < a->rank; i++)
        if (a->dims[i] != b->dims[i]) return false;
    return true;
}

int64_t shape_numel(const Shape *s) {
    if (s->rank < 0) return -1;
    int64_t n = 1;
    for (int i = 0; i < s->rank; i++) {
        int64_t d = s->dims[i];
        if (d < 0) return -1;
        if (d == 0) return 0;
        if (n > IR_MAX_NUMEL / d) return -1; /* checked before multiplying: no overflow */
        n *= d;
    }
    return n;
}

char *type_format(DType dtype, const Shape *s, char *buf, size_t size) {
    if (size == 0) return buf;
    if (!shape_known(s)) {
        snprintf(buf, size, "?");
        return buf;
    }
    size_t len = (size_t)snprintf(buf, size, "%s[", dtype_name(dtype));
    for (int i = 0; i < s->rank && len < size; i++)
        len += (size_t)snprintf(buf + len, size - len, "%s%lld", i ? "," : "",
                                (long long)s->dims[i]);
    if (len < size) snprintf(buf + len, size - len, "]");
    return buf;
}

/* ---- internal errors ------------------------------------------------------------------ */

static int64_t work_units;
void ir_work_add(int64_t units) { work_units += units; }
int64_t ir_work_total(void) { return work_units; }

void ir_bug_at(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "capc: internal error at %s:%d: ", file, line);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (this is a bug in capc)\n");
    va_end(ap);
    fflush(stderr);
    abort();
}

/* ---- growable arrays ------------------------------------------------------------------ */

/* Makes room for one more element in *items (count n, capacity *cap). */
static void grow(void **items, int n, int *cap, size_t elem) {
    if (n < *cap) return;
    int new_cap = *cap ? *cap * 2 : 8;
    void *p = realloc(*items, (size_t)new_cap * elem);
    if (!p) ir_bug("out of memory growing an array to %d elements", new_cap);
    *items = p;
    *cap = new_cap;
}
#define GROW(arr, n, cap) grow((void **)&(arr), (n), &(cap), sizeof *(arr))

/* ---- the value-name index ------------------------------------------------------------- */

/* Two kinds of entries share the table: names ("x.1" -> its value) and suffix hints
 * ("\1x" -> hint = a lower bound of the smallest free N in "x.<N>"), so that
 * adding many values that ask for the same name stays linear instead of probing x.1, x.2, ...
 * from the start every time. */
typedef struct NameEntry {
    const Function *fn; /* NULL: empty slot */
    const char *name;   /* the key as inserted (arena string, never changes) */
    uint64_t hash;
    union {             /* the key says which: "\1..." and params hold a hint */
        Value *value;
        long hint;
    };
} NameEntry;

typedef struct NameIndex {
    NameEntry *slots;
    size_t cap, used; /* cap is a power of two; used counts stale entries too */
} NameIndex;

/* Module params share the index under this key instead of a function's: entry hint = the
 * param's index in m->params (like a suffix hint, whose keys start with \1). */
static const Function PARAM_NAMES;

static uint64_t name_hash(const Function *fn, const char *name) {
    uint64_t h = 1469598103934665603ull ^ (uint64_t)(uintptr_t)fn;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        h ^= *p;
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

static void name_index_free(NameIndex *ix) {
    if (!ix) return;
    free(ix->slots);
    free(ix);
}

/* True if the entry still describes a live value of fn with exactly that name. */
static bool entry_live(const NameEntry *e, const Function *fn, const char *name) {
    const Value *v = e->value;
    return v && v->fn == fn && v->id >= 0 && v->id < fn->n_values && fn->values[v->id] == v &&
           (v->name == e->name || strcmp(v->name, name) == 0);
}

static void name_index_put_slot(NameIndex *ix, NameEntry e) {
    size_t mask = ix->cap - 1;
    for (size_t i = e.hash & mask;; i = (i + 1) & mask) {
        NameEntry *s = &ix->slots[i];
        if (!s->fn) {
            *s = e;
            ix->used++;
            return;
        }
        if (s->fn == e.fn && s->hash == e.hash && strcmp(s->name, e.name) == 0) {
            *s = e; /* same key: the newer value wins (the old one was renamed away) */
            return;
        }
    }
}

static void name_index_rehash(NameIndex *ix) {
    NameEntry *old = ix->slots;
    size_t old_cap = ix->cap;
    ix->cap = old_cap ? old_cap * 2 : 64;
    ix->slots = calloc(ix->cap, sizeof *ix->slots);
    if (!ix->slots) ir_bug("out of memory growing the value-name index");
    ix->used = 0;
    /* Stale entries (a renamed or removed value) move too: lookups validate every hit, a
     * stale key is overwritten when its name is given again, and checking each entry's value
     * here (two cache misses per entry of a table of millions) cost more than the table
     * space they take. */
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].fn) name_index_put_slot(ix, old[i]);
    free(old);
}

/* Inserts e, growing the table first when it is three quarters full. (At half load the
 * probes were fewer but no faster to find at 1,000 layers, and the table 130 MB larger.) */
static void name_index_insert(NameIndex *ix, NameEntry e) {
    if ((ix->used + 1) * 4 > ix->cap * 3) name_index_rehash(ix);
    name_index_put_slot(ix, e);
}

static NameIndex *module_names(Module *m) {
    if (!m->arena->names) {
        m->arena->names = calloc(1, sizeof(NameIndex));
        if (!m->arena->names) ir_bug("out of memory");
    }
    return m->arena->names;
}

static NameEntry *name_index_find_hashed(const NameIndex *ix, const Function *f, const char *key,
                                         uint64_t h) {
    if (!ix || !ix->cap) return NULL;
    size_t mask = ix->cap - 1;
    for (size_t i = h & mask; ix->slots[i].fn; i = (i + 1) & mask) {
        NameEntry *e = &ix->slots[i];
        if (e->fn == f && e->hash == h && strcmp(e->name, key) == 0) return e;
    }
    return NULL;
}

static NameEntry *name_index_find(const NameIndex *ix, const Function *f, const char *key) {
    return ix && ix->cap ? name_index_find_hashed(ix, f, key, name_hash(f, key)) : NULL;
}

/* The key of the suffix hint of base (its first len bytes), "\1base", into buf (of at least
 * len + 2 bytes). */
static const char *hint_key(char *buf, const char *base, size_t len) {
    buf[0] = '\1';
    memcpy(buf + 1, base, len);
    buf[len + 1] = '\0';
    return buf;
}

/* The entry of base's suffix hint in f, or NULL when none is recorded (then the hint is 1). */
static NameEntry *suffix_hint_entry(Function *f, const char *base, size_t len) {
    char key[600];
    return name_index_find(f->module->arena->names, f, hint_key(key, base, len));
}

/* Sets base's hint; e is its entry from suffix_hint_entry (NULL: none), with nothing
 * inserted into the index since. */
static void set_suffix_hint(Function *f, NameEntry *e, const char *base, size_t len, long hint) {
    if (e) {
        e->hint = hint;
        return;
    }
    char key[600];
    hint_key(key, base, len);
    name_index_insert(module_names(f->module),
                      (NameEntry){f, arena_strndup(f->module->arena, key, len + 1),
                                  name_hash(f, key), {.hint = hint}});
}

/* A name "base.<N>" given up by a rename makes N free again: lower base's hint to it. */
static void release_suffix(Function *f, const char *name) {
    const char *dot = strrchr(name, '.');
    if (!dot || !dot[1] || strlen(name) >= 512) return;
    for (const char *q = dot + 1; *q; q++)
        if (*q < '0' || *q > '9') return;
    long n = strtol(dot + 1, NULL, 10);
    char base[512];
    size_t len = (size_t)(dot - name);
    memcpy(base, name, len);
    base[len] = '\0';
    NameEntry *e = suffix_hint_entry(f, base, len);
    if (n >= 1 && n < (e ? e->hint : 1)) set_suffix_hint(f, e, base, len, n);
}

/* The live value of f named name (hash h), or NULL. */
static Value *find_value_hashed(const Function *f, const char *name, uint64_t h) {
    if (name[0] == '\1') return NULL; /* a suffix hint's key: no value has it */
    const NameEntry *e = name_index_find_hashed(f->module->arena->names, f, name, h);
    return e && entry_live(e, f, name) ? e->value : NULL;
}

Value *func_find_value(const Function *f, const char *name) {
    const NameIndex *ix = f->module->arena->names;
    return ix && ix->cap ? find_value_hashed(f, name, name_hash(f, name)) : NULL;
}

/* ---- value naming --------------------------------------------------------------------- */

static bool name_char_ok(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '.';
}

/* Writes prefix (may be empty) and n >= 0 in decimal at buf, NUL-terminated; returns the
 * length. snprintf's formatting machinery was ~4% of a deep model's IR passes. */
static size_t put_number(char *buf, const char *prefix, long n) {
    size_t len = strlen(prefix);
    memcpy(buf, prefix, len);
    char digits[24];
    int k = 0;
    do {
        digits[k++] = (char)('0' + n % 10);
        n /= 10;
    } while (n > 0);
    while (k > 0) buf[len++] = digits[--k];
    buf[len] = '\0';
    return len;
}

/* buf[0..len) is free in f, or held by v: the name to give v (its hash in *hash). */
static bool name_free(Function *f, const Value *v, const char *buf, uint64_t *hash) {
    *hash = name_hash(f, buf);
    const Value *holder = find_value_hashed(f, buf, *hash);
    return !holder || holder == v;
}

/* Picks a name for v that is free in its function: the requested one with characters outside
 * the text form's [A-Za-z0-9_.] replaced by '_', else "<name>.<N>" with the smallest free
 * N >= 1; no name at all gives "t<N>" with N from the value's id upwards. Sets *hash to the
 * name's index hash. */
static const char *unique_name(Function *f, const Value *v, const char *want, uint64_t *hash) {
    Module *m = f->module;
    char buf[512];
    size_t len = 0;
    if (want && *want) {
        for (; want[len] && len < sizeof buf - 24; len++)
            buf[len] = name_char_ok(want[len]) ? want[len] : '_';
        buf[len] = '\0';
        if (name_free(f, v, buf, hash)) return arena_strndup(m->arena, buf, len);
        NameEntry *hint = suffix_hint_entry(f, buf, len);
        buf[len] = '.';
        for (long n = hint ? hint->hint : 1;; n++) {
            size_t full = len + 1 + put_number(buf + len + 1, "", n);
            if (name_free(f, v, buf, hash)) {
                char *name = arena_strndup(m->arena, buf, full);
                buf[len] = '\0';
                set_suffix_hint(f, hint, buf, len, n + 1);
                return name;
            }
        }
    }
    for (long n = v->id;; n++) {
        size_t full = put_number(buf, "t", n);
        if (name_free(f, v, buf, hash)) return arena_strndup(m->arena, buf, full);
    }
}

void value_rename(Value *v, const char *name) {
    const char *old = v->name;
    uint64_t h;
    v->name = unique_name(v->fn, v, name, &h);
    if (old && *old && strcmp(old, v->name) != 0) release_suffix(v->fn, old);
    NameIndex *ix = module_names(v->fn->module);
    name_index_insert(ix, (NameEntry){v->fn, v->name, h, {.value = v}});
}

static Value *new_value(Function *f, const char *name, DType dtype, Shape shape, Op *def) {
    Value *v = module_alloc(f->module, sizeof *v);
    v->id = f->n_values;
    v->dtype = dtype;
    v->shape = shape;
    v->def = def;
    v->fn = f;
    GROW(f->values, f->n_values, f->cap_values);
    f->values[f->n_values++] = v;
    v->name = ""; /* unique_name reads it only through the index */
    value_rename(v, name);
    return v;
}

/* ---- modules -------------------------------------------------------------------------- */

Module *module_new(const char *name) {
    Module *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->arena = arena_new();
    if (!m->arena) {
        free(m);
        return NULL;
    }
    m->name = module_strdup(m, name ? name : "");
    return m;
}

static void function_free_arrays(Function *f) {
    free(f->inputs);
    free(f->ops);
    free(f->outputs);
    free(f->output_names);
    free(f->values);
    free(f->groups);
}

void module_free(Module *m) {
    if (!m) return;
    for (int i = 0; i < m->n_funcs; i++) function_free_arrays(m->funcs[i]);
    free(m->funcs);
    free(m->cfuncs);
    free(m->input_files);
    free(m->params);
    free(m->config);
    name_index_free(m->arena->names);
    arena_free(m->arena);
    free(m);
}

void *module_alloc(Module *m, size_t size) { return arena_alloc(m->arena, size); }

const char *module_strdup(Module *m, const char *s) {
    return s ? arena_strdup(m->arena, s) : NULL;
}

void module_set_config(Module *m, const char *name, double value, bool is_int) {
    for (int i = 0; i < m->n_config; i++) {
        if (strcmp(m->config[i].name, name) == 0) {
            m->config[i].value = value;
            m->config[i].is_int = is_int;
            return;
        }
    }
    GROW(m->config, m->n_config, m->cap_config);
    m->config[m->n_config++] = (ConfigVar){module_strdup(m, name), value, is_int};
}

void module_add_input_file(Module *m, const char *path) {
    GROW(m->input_files, m->n_input_files, m->cap_input_files);
    m->input_files[m->n_input_files++] = module_strdup(m, path);
}

const ConfigVar *module_find_config(const Module *m, const char *name) {
    for (int i = 0; i < m->n_config; i++)
        if (strcmp(m->config[i].name, name) == 0) return &m->config[i];
    return NULL;
}

Param *module_add_param(Module *m, const char *name, DType dtype, Shape shape, ParamKind kind,
                        bool trainable, const char *init, SrcLoc loc) {
    if (module_find_param(m, name)) return NULL;
    Param *p = module_alloc(m, sizeof *p);
    p->name = module_strdup(m, name);
    p->dtype = dtype;
    p->shape = shape;
    p->kind = kind;
    p->trainable = kind == PARAM_WEIGHT && trainable;
    p->init = module_strdup(m, init ? init : "");
    p->loc = loc;
    GROW(m->params, m->n_params, m->cap_params);
    m->params[m->n_params++] = p;
    NameIndex *ix = module_names(m);
    name_index_insert(ix, (NameEntry){&PARAM_NAMES, p->name, name_hash(&PARAM_NAMES, p->name),
                                      {.hint = m->n_params - 1}});
    return p;
}

int module_param_index(const Module *m, const char *name) {
    const NameEntry *e = name_index_find(m->arena->names, &PARAM_NAMES, name);
    return e ? (int)e->hint : -1;
}

Param *module_find_param(const Module *m, const char *name) {
    int i = module_param_index(m, name);
    return i >= 0 ? m->params[i] : NULL;
}

bool param_hparam_value(const Param *p, double *value) {
    if (p == NULL || p->kind != PARAM_HPARAM || p->init == NULL ||
        strncmp(p->init, "const(", 6) != 0)
        return false;
    const char *start = p->init + 6;
    char *end;
    double v = strtod(start, &end);
    if (end == start || strcmp(end, ")") != 0 || !isfinite(v)) return false;
    *value = v;
    return true;
}

void hparam_init_string(double value, char *buf, size_t size) {
    /* The shortest form that reads back exactly: "const(0.001)", not 17 digits. */
    for (int digits = 1; digits <= 17; digits++) {
        snprintf(buf, size, "const(%.*g)", digits, value);
        if (strtod(buf + 6, NULL) == value) return;
    }
}

Function *module_add_function(Module *m, const char *name) {
    if (module_find_function(m, name)) return NULL;
    Function *f = module_alloc(m, sizeof *f);
    f->name = module_strdup(m, name);
    f->module = m;
    GROW(m->funcs, m->n_funcs, m->cap_funcs);
    m->funcs[m->n_funcs++] = f;
    return f;
}

Function *module_find_function(const Module *m, const char *name) {
    for (int i = 0; i < m->n_funcs; i++)
        if (strcmp(m->funcs[i]->name, name) == 0) return m->funcs[i];
    return NULL;
}

int64_t module_count_parameters(const Module *m, bool trainable_only) {
    int64_t total = 0;
    for (int i = 0; i < m->n_params; i++) {
        const Param *p = m->params[i];
        if (p->kind != PARAM_WEIGHT || (trainable_only && !p->trainable)) continue;
        int64_t n = shape_numel(&p->shape);
        if (n > 0) total += n;
    }
    return total;
}

int64_t module_count_buffer_elements(const Module *m) {
    int64_t total = 0;
    for (int i = 0; i < m->n_params; i++) {
        int64_t n = shape_numel(&m->params[i]->shape);
        if (m->params[i]->kind == PARAM_BUFFER && n > 0) total += n;
    }
    return total;
}

/* ---- functions ------------------------------------------------------------------------ */

Value *func_add_input(Function *f, const char *name, DType dtype, Shape shape) {
    Value *v = new_value(f, name, dtype, shape, NULL);
    GROW(f->inputs, f->n_inputs, f->cap_inputs);
    f->inputs[f->n_inputs++] = v;
    return v;
}

/* Attributes start at the schema's defaults; required ones at their kind's zero value (an
 * empty string rather than NULL, so printing and strcmp never meet a NULL). */
static void init_attrs(Module *m, Op *op) {
    const OpInfo *info = op_info(op->kind);
    op->attrs = module_alloc(m, sizeof(AttrValue) * (size_t)(info->n_attrs ? info->n_attrs : 1));
    for (int i = 0; i < info->n_attrs; i++) {
        const AttrSpec *spec = &info->attrs[i];
        AttrValue *a = &op->attrs[i];
        a->kind = spec->kind;
        if (spec->kind == ATTR_STRING) a->s = "";
        if (!spec->default_text) continue;
        char err[256];
        if (attr_parse(m, spec->kind, spec->default_text, a, err, sizeof err) != 0)
            ir_bug("op table: bad default for %s.%s: %s", info->name, spec->name, err);
    }
}

Op *func_add_op(Function *f, int kind, Value *const *inputs, int n_inputs, const char *name,
                SrcLoc loc) {
    IR_ASSERT(kind >= 0 && kind < OP_COUNT);
    IR_ASSERT(n_inputs >= 0);
    Module *m = f->module;
    Op *op = module_alloc(m, sizeof *op);
    op->kind = kind;
    op->group = -1;
    op->fn = f;
    op->loc = loc;
    op->n_inputs = n_inputs;
    op->inputs = module_alloc(m, sizeof(Value *) * (size_t)(n_inputs ? n_inputs : 1));
    for (int i = 0; i < n_inputs; i++) op->inputs[i] = inputs[i];
    init_attrs(m, op);
    op->result = new_value(f, name, DT_F32, shape_unknown(), op);
    GROW(f->ops, f->n_ops, f->cap_ops);
    f->ops[f->n_ops++] = op;
    return op;
}

void func_add_output(Function *f, const char *name, Value *v) {
    if (f->n_outputs == f->cap_outputs) {
        int cap = f->cap_outputs;
        GROW(f->outputs, f->n_outputs, cap);
        GROW(f->output_names, f->n_outputs, f->cap_outputs);
    }
    f->outputs[f->n_outputs] = v;
    f->output_names[f->n_outputs] = module_strdup(f->module, name);
    f->n_outputs++;
}

int func_add_group(Function *f, const char *pattern, int first_op, int n_ops) {
    IR_ASSERT(first_op >= 0 && n_ops > 0 && first_op + n_ops <= f->n_ops);
    GROW(f->groups, f->n_groups, f->cap_groups);
    int g = f->n_groups++;
    f->groups[g] = (FusedGroup){module_strdup(f->module, pattern), first_op, n_ops};
    for (int i = first_op; i < first_op + n_ops; i++) {
        IR_ASSERT(f->ops[i]->group < 0);
        f->ops[i]->group = g;
    }
    return g;
}

void func_place_appended(Function *f, int n_before, const int *start, const int *end) {
    IR_ASSERT(f->n_groups == 0 && n_before >= 0 && n_before <= f->n_ops);
    Op **placed = malloc(sizeof *placed * ((size_t)f->n_ops + 1));
    if (!placed) ir_bug("out of memory placing ops");
    int n = 0;
    for (int i = 0; i < n_before; i++) {
        for (int k = start[i]; start[i] >= 0 && k < end[i]; k++) placed[n++] = f->ops[k];
        placed[n++] = f->ops[i];
    }
    IR_ASSERT(n == f->n_ops);
    memcpy(f->ops, placed, sizeof *placed * (size_t)n);
    free(placed);
}

void func_remove_dead_ops(Function *f) {
    IR_ASSERT(f->n_groups == 0);
    bool *live = calloc((size_t)f->n_values + 1, sizeof *live);
    if (!live) ir_bug("out of memory removing dead ops");
    for (int i = 0; i < f->n_outputs; i++) live[f->outputs[i]->id] = true;
    for (int i = f->n_ops - 1; i >= 0; i--) {
        const Op *op = f->ops[i];
        if (!live[op->result->id]) continue;
        for (int k = 0; k < op->n_inputs; k++) live[op->inputs[k]->id] = true;
    }
    int n_ops = 0, n_values = 0;
    for (int i = 0; i < f->n_ops; i++)
        if (live[f->ops[i]->result->id]) f->ops[n_ops++] = f->ops[i];
    for (int v = 0; v < f->n_values; v++) {
        Value *x = f->values[v];
        if (x->def != NULL && !live[v]) {
            x->id = -1; /* gone: the name index treats it as stale */
            continue;
        }
        x->id = n_values;
        f->values[n_values++] = x;
    }
    f->n_ops = n_ops;
    f->n_values = n_values;
    free(live);
}

void func_clear_groups(Function *f) {
    for (int i = 0; i < f->n_ops; i++) f->ops[i]->group = -1;
    f->n_groups = 0;
}

int op_infer(Op *op, char *err, size_t err_size) {
    DType dtype;
    Shape shape;
    if (op_info(op->kind)->infer_shape(op, &dtype, &shape, err, err_size) != 0) return -1;
    op->result->dtype = dtype;
    op->result->shape = shape;
    return 0;
}

/* Attribute values are immutable once set (setters replace the slot's pointers), so a clone
 * may share lists and strings with the source: both live in the same module arena. */
Function *func_clone(Function *src, const char *new_name) {
    Function *dst = module_add_function(src->module, new_name);
    if (!dst) return NULL;
    Value **map = calloc((size_t)(src->n_values ? src->n_values : 1), sizeof *map);
    IR_ASSERT(map);
    for (int i = 0; i < src->n_inputs; i++) {
        const Value *in = src->inputs[i];
        map[in->id] = func_add_input(dst, in->name, in->dtype, in->shape);
    }
    Value *operands[64];
    for (int i = 0; i < src->n_ops; i++) {
        const Op *op = src->ops[i];
        Value **ins = op->n_inputs <= 64 ? operands : malloc(sizeof(Value *) * (size_t)op->n_inputs);
        IR_ASSERT(ins);
        for (int j = 0; j < op->n_inputs; j++) ins[j] = map[op->inputs[j]->id];
        Op *copy = func_add_op(dst, op->kind, ins, op->n_inputs, op->result->name, op->loc);
        if (ins != operands) free(ins);
        memcpy(copy->attrs, op->attrs, sizeof(AttrValue) * (size_t)op_info(op->kind)->n_attrs);
        copy->result->dtype = op->result->dtype;
        copy->result->shape = op->result->shape;
        map[op->result->id] = copy->result;
    }
    for (int i = 0; i < src->n_outputs; i++)
        func_add_output(dst, src->output_names[i], map[src->outputs[i]->id]);
    for (int g = 0; g < src->n_groups; g++)
        func_add_group(dst, src->groups[g].pattern, src->groups[g].first_op, src->groups[g].n_ops);
    free(map);
    return dst;
}

/* ---- attributes ----------------------------------------------------------------------- */

int op_attr_index(int kind, const char *attr_name) {
    const OpInfo *info = op_info(kind);
    for (int i = 0; i < info->n_attrs; i++)
        if (strcmp(info->attrs[i].name, attr_name) == 0) return i;
    return -1;
}

/* The attribute slot of that name, which must have that kind: anything else is a caller bug. */
static AttrValue *attr_slot(const Op *op, const char *name, AttrKind kind) {
    int i = op_attr_index(op->kind, name);
    const char *op_name = op_info(op->kind)->name;
    if (i < 0) ir_bug("op %s has no attribute '%s'", op_name, name);
    AttrKind have = op_info(op->kind)->attrs[i].kind;
    if (have != kind)
        ir_bug("attribute %s.%s is %s, accessed as %s", op_name, name, attr_kind_name(have),
               attr_kind_name(kind));
    return &op->attrs[i];
}

void op_set_int(Op *op, const char *name, int64_t v) { attr_slot(op, name, ATTR_INT)->i = v; }

void op_set_bool(Op *op, const char *name, bool v) { attr_slot(op, name, ATTR_BOOL)->i = v; }

void op_set_float(Op *op, const char *name, double v) {
    attr_slot(op, name, ATTR_FLOAT)->f = v;
}

void op_set_ints(Op *op, const char *name, const int64_t *v, int n) {
    AttrValue *a = attr_slot(op, name, ATTR_INTS);
    IR_ASSERT(n >= 0);
    int64_t *copy = module_alloc(op->fn->module, sizeof(int64_t) * (size_t)(n ? n : 1));
    for (int i = 0; i < n; i++) copy[i] = v[i];
    a->ints = copy;
    a->n_ints = n;
}

void op_set_floats(Op *op, const char *name, const double *v, int n) {
    AttrValue *a = attr_slot(op, name, ATTR_FLOATS);
    IR_ASSERT(n >= 0);
    double *copy = module_alloc(op->fn->module, sizeof(double) * (size_t)(n ? n : 1));
    for (int i = 0; i < n; i++) copy[i] = v[i];
    a->floats = copy;
    a->n_floats = n;
}

void op_set_string(Op *op, const char *name, const char *s) {
    attr_slot(op, name, ATTR_STRING)->s = module_strdup(op->fn->module, s ? s : "");
}

int64_t op_int(const Op *op, const char *name) { return attr_slot(op, name, ATTR_INT)->i; }

bool op_bool(const Op *op, const char *name) { return attr_slot(op, name, ATTR_BOOL)->i != 0; }

double op_float(const Op *op, const char *name) { return attr_slot(op, name, ATTR_FLOAT)->f; }

const int64_t *op_ints(const Op *op, const char *name, int *n) {
    const AttrValue *a = attr_slot(op, name, ATTR_INTS);
    if (n) *n = a->n_ints;
    return a->ints;
}

const double *op_floats(const Op *op, const char *name, int *n) {
    const AttrValue *a = attr_slot(op, name, ATTR_FLOATS);
    if (n) *n = a->n_floats;
    return a->floats;
}

const char *op_string(const Op *op, const char *name) {
    return attr_slot(op, name, ATTR_STRING)->s;
}

/* ---- constant state ---------------------------------------------------------------------- */

struct ConstantState {
    const Param **written; /* state some function returns as @X, sorted by address */
    int n_written;
};

static int cmp_param_ptr(const void *a, const void *b) {
    const Param *x = *(const Param *const *)a, *y = *(const Param *const *)b;
    return x < y ? -1 : x > y;
}

ConstantState *module_constant_state_new(const Module *m) {
    int n = 0;
    for (int i = 0; i < m->n_funcs; i++) n += m->funcs[i]->n_outputs;
    ConstantState *cs = calloc(1, sizeof *cs);
    if (cs == NULL) return NULL;
    cs->written = malloc(sizeof *cs->written * ((size_t)n + 1));
    if (cs->written == NULL) {
        free(cs);
        return NULL;
    }
    for (int i = 0; i < m->n_funcs; i++) {
        const Function *f = m->funcs[i];
        for (int k = 0; k < f->n_outputs; k++) {
            const char *name = f->output_names[k];
            const Param *p = name[0] == '@' ? module_find_param(m, name + 1) : NULL;
            if (p != NULL) cs->written[cs->n_written++] = p;
        }
    }
    qsort(cs->written, (size_t)cs->n_written, sizeof *cs->written, cmp_param_ptr);
    return cs;
}

void constant_state_free(ConstantState *cs) {
    if (cs == NULL) return;
    free(cs->written);
    free(cs);
}

bool constant_state_has(const ConstantState *cs, const Param *p) {
    if (p == NULL || p->trainable || (p->kind != PARAM_WEIGHT && p->kind != PARAM_BUFFER))
        return false;
    return bsearch(&p, cs->written, (size_t)cs->n_written, sizeof p, cmp_param_ptr) == NULL;
}

const Param *value_param(const Module *m, const Value *v) {
    if (v->def == NULL || v->def->kind != OP_PARAM) return NULL;
    return module_find_param(m, op_string(v->def, "name"));
}
