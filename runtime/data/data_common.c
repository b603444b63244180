/* data_common.c — the dataset builder shared by the readers, spec parsing, splits, and
 * data_load / data_free (see data.h and data_internal.h). */
#include "data_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data_rng.h"
#include "files.h"
#include "text.h"

/* ---- small helpers ------------------------------------------------------------------------ */

CapStatus data_read_file(const char *path, char **text, size_t *len, char *err,
                         size_t err_size) {
    switch (file_read_all(path, text, len)) {
    case FILE_READ_OK: return CAP_OK;
    case FILE_READ_CANNOT_OPEN:
        return data_fail(err, err_size, CAP_E_IO, "%s: cannot open: %s", path, strerror(errno));
    case FILE_READ_NO_MEMORY:
        return data_fail(err, err_size, CAP_E_NOMEM, "%s: out of memory reading it", path);
    default: return data_fail(err, err_size, CAP_E_IO, "%s: read error", path);
    }
}

void data_line_col(const char *text, size_t off, int *line, int *col) {
    int l = 1, c = 1;
    for (size_t i = 0; i < off && text[i]; i++) {
        if (text[i] == '\n') {
            l++;
            c = 1;
        } else c++;
    }
    *line = l;
    *col = c;
}

char *data_join_path(const char *a, const char *b) {
    size_t na = a ? strlen(a) : 0, nb = strlen(b);
    if (na == 0 || b[0] == '/') na = 0;
    char *s = malloc(na + nb + 2);
    if (!s) return NULL;
    if (na) {
        memcpy(s, a, na);
        if (a[na - 1] != '/') s[na++] = '/';
    }
    memcpy(s + na, b, nb + 1);
    return s;
}

char *data_dirname(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return strdup(".");
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    char *s = malloc(n + 1);
    if (!s) return NULL;
    memcpy(s, path, n);
    s[n] = 0;
    return s;
}

/* ---- splits and formats -------------------------------------------------------------------- */

const char *data_split_name(DataSplit s) {
    static const char *names[] = {"train", "val", "test"};
    return (unsigned)s < DATA_N_SPLITS ? names[s] : "?";
}

int data_split_parse(const char *name, DataSplit *out) {
    if (strcmp(name, "train") == 0 || strcmp(name, "restval") == 0) *out = DATA_TRAIN;
    else if (strcmp(name, "val") == 0) *out = DATA_VAL;
    else if (strcmp(name, "test") == 0) *out = DATA_TEST;
    else return -1;
    return 0;
}

const char *data_format_name(DataFormat f) {
    return f == DATA_COCO ? "coco" : f == DATA_FLICKR30K ? "flickr30k" : "karpathy";
}

DataSplit data_hash_split(const char *key, size_t len) {
    uint64_t h = data_fnv1a(key, len);
    uint64_t r = data_rand64(0, DATA_RNG_SPLIT, (uint32_t)h, (uint32_t)(h >> 32), 3);
    uint32_t bucket = data_rand_below(r, 100);
    return bucket < 90 ? DATA_TRAIN : bucket < 95 ? DATA_VAL : DATA_TEST;
}

DataSplit data_rule_split(DataSplitRule rule, const char *key) {
    switch (rule) {
    case DATA_SPLIT_ALL_TRAIN: return DATA_TRAIN;
    case DATA_SPLIT_ALL_VAL: return DATA_VAL;
    case DATA_SPLIT_ALL_TEST: return DATA_TEST;
    default: return data_hash_split(key, strlen(key));
    }
}

int32_t *data_split_images(const Dataset *ds, DataSplit split, int32_t *n) {
    *n = 0;
    int32_t count = ds->n_per_split[split];
    if (count == 0) return NULL;
    int32_t *idx = malloc((size_t)count * sizeof *idx);
    if (!idx) {
        *n = -1;
        return NULL;
    }
    for (int32_t i = 0; i < ds->n_images; i++)
        if (ds->images[i].split == split) idx[(*n)++] = i;
    return idx;
}

/* ---- spec strings ------------------------------------------------------------------------- */

static int copy_field(char *dst, size_t size, const char *s, size_t n) {
    if (n >= size) return -1;
    memcpy(dst, s, n);
    dst[n] = 0;
    return 0;
}

static int parse_split_option(const char *v, DataSpec *out) {
    static const struct { const char *name; DataSplitRule rule; } rules[] = {
        {"hash", DATA_SPLIT_HASH}, {"train", DATA_SPLIT_ALL_TRAIN},
        {"val", DATA_SPLIT_ALL_VAL}, {"test", DATA_SPLIT_ALL_TEST}};
    for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++) {
        if (strcmp(v, rules[i].name) == 0) {
            out->split_rule = rules[i].rule;
            out->split_given = 1;
            return 0;
        }
    }
    return -1;
}

/* One ",field" after the path: "split=..." or the image directory. */
static int parse_spec_field(const char *f, size_t n, DataSpec *out, char *err, size_t err_size) {
    char field[1024];
    if (copy_field(field, sizeof field, f, n))
        return data_fail(err, err_size, CAP_E_ARG, "--data: field too long"), -1;
    if (strncmp(field, "split=", 6) == 0) {
        if (out->format == DATA_KARPATHY)
            return data_fail(err, err_size, CAP_E_ARG,
                             "--data: karpathy files carry their own splits; split= does not apply"), -1;
        if (parse_split_option(field + 6, out))
            return data_fail(err, err_size, CAP_E_ARG,
                             "--data: split=%s: expected hash, train, val or test", field + 6), -1;
        return 0;
    }
    if (out->image_dir[0])
        return data_fail(err, err_size, CAP_E_ARG,
                         "--data: two image directories ('%s' and '%s')", out->image_dir, field), -1;
    if (!field[0]) return data_fail(err, err_size, CAP_E_ARG, "--data: empty image directory"), -1;
    strcpy(out->image_dir, field);
    return 0;
}

int data_spec_parse(const char *spec, DataSpec *out, char *err, size_t err_size) {
    memset(out, 0, sizeof *out);
    const char *colon = strchr(spec, ':');
    size_t fl = colon ? (size_t)(colon - spec) : 0;
    if (colon && fl == 4 && strncmp(spec, "coco", 4) == 0) out->format = DATA_COCO;
    else if (colon && fl == 9 && strncmp(spec, "flickr30k", 9) == 0) out->format = DATA_FLICKR30K;
    else if (colon && fl == 8 && strncmp(spec, "karpathy", 8) == 0) out->format = DATA_KARPATHY;
    else
        return data_fail(err, err_size, CAP_E_ARG,
                         "--data '%s': expected FORMAT:PATH with FORMAT coco, flickr30k or karpathy",
                         spec), -1;
    const char *p = colon + 1;
    size_t n = strcspn(p, ",");
    if (n == 0) return data_fail(err, err_size, CAP_E_ARG, "--data '%s': no file after ':'", spec), -1;
    if (copy_field(out->path, sizeof out->path, p, n))
        return data_fail(err, err_size, CAP_E_ARG, "--data: path too long"), -1;
    p += n;
    while (*p == ',') {
        p++;
        n = strcspn(p, ",");
        if (parse_spec_field(p, n, out, err, err_size)) return -1;
        p += n;
    }
    return 0;
}

CapStatus data_load(const char *spec, Dataset **out, char *err, size_t err_size) {
    DataSpec s;
    *out = NULL;
    if (data_spec_parse(spec, &s, err, err_size)) return CAP_E_ARG;
    if (s.format == DATA_COCO)
        return data_coco_load(s.path, s.image_dir, s.split_rule, s.split_given, out, err,
                              err_size);
    if (s.format == DATA_FLICKR30K)
        return data_load_flickr30k(s.path, s.image_dir, s.split_rule, out, err, err_size);
    return data_load_karpathy(s.path, s.image_dir, out, err, err_size);
}

void data_free(Dataset *ds) {
    if (!ds) return;
    for (int32_t i = 0; i < ds->n_images; i++) free(ds->images[i].path);
    for (int32_t i = 0; i < ds->n_captions; i++) free(ds->captions[i]);
    for (int i = 0; i < ds->n_warnings; i++) free(ds->warnings[i]);
    free(ds->images);
    free(ds->captions);
    free(ds->source);
    free(ds->image_dir);
    free(ds);
}

/* ---- the builder -------------------------------------------------------------------------- */

static uint32_t key_hash(const char *key) {
    return (uint32_t)data_fnv1a(key, strlen(key));
}

static uint32_t id_hash(int64_t id) {
    uint64_t x = (uint64_t)id;
    return (uint32_t)data_fnv1a(&x, sizeof x);
}

/* Puts image i into both tables (size: a power of two, at least twice the image count). */
static void table_insert(int32_t *keys, int32_t *ids, int32_t size, const DataBuilder *b,
                         int32_t i) {
    uint32_t mask = (uint32_t)size - 1;
    uint32_t h = key_hash(b->keys[i]) & mask;
    while (keys[h] >= 0) h = (h + 1) & mask;
    keys[h] = i;
    int64_t id = b->ds->images[i].id;
    if (id == DB_NO_ID) return;
    for (h = id_hash(id) & mask; ids[h] >= 0; h = (h + 1) & mask) {}
    ids[h] = i;
}

static int table_grow(DataBuilder *b) {
    int32_t size = b->table_size ? b->table_size * 2 : 1024;
    int32_t *t = malloc((size_t)size * sizeof *t), *ids = malloc((size_t)size * sizeof *ids);
    if (!t || !ids) {
        free(t);
        free(ids);
        return -1;
    }
    for (int32_t i = 0; i < size; i++) t[i] = ids[i] = -1;
    for (int32_t i = 0; i < b->ds->n_images; i++) table_insert(t, ids, size, b, i);
    free(b->table);
    free(b->id_table);
    b->table = t;
    b->id_table = ids;
    b->table_size = size;
    return 0;
}

CapStatus db_init(DataBuilder *b, DataFormat f, const char *source, const char *image_dir,
                  char *err, size_t err_size) {
    memset(b, 0, sizeof *b);
    b->err = err;
    b->err_size = err_size;
    b->ds = calloc(1, sizeof *b->ds);
    if (!b->ds) return data_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    b->ds->format = f;
    b->ds->source = strdup(source);
    b->ds->image_dir = image_dir && *image_dir ? strdup(image_dir) : data_dirname(source);
    if (!b->ds->source || !b->ds->image_dir || table_grow(b)) {
        db_abort(b);
        return data_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    }
    return CAP_OK;
}

void db_warn(DataBuilder *b, const char *fmt, ...) {
    Dataset *ds = b->ds;
    if (ds->n_warnings >= DATA_MAX_WARNINGS) return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char *copy = strdup(msg);
    if (copy) ds->warnings[ds->n_warnings++] = copy;
}

int32_t db_find_image(const DataBuilder *b, const char *key) {
    uint32_t mask = (uint32_t)b->table_size - 1;
    for (uint32_t h = key_hash(key) & mask;; h = (h + 1) & mask) {
        int32_t i = b->table[h];
        if (i < 0) return -1;
        if (strcmp(b->keys[i], key) == 0) return i;
    }
}

int32_t db_find_id(const DataBuilder *b, int64_t id) {
    if (id == DB_NO_ID) return -1;
    uint32_t mask = (uint32_t)b->table_size - 1;
    for (uint32_t h = id_hash(id) & mask;; h = (h + 1) & mask) {
        int32_t i = b->id_table[h];
        if (i < 0 || b->ds->images[i].id == id) return i;
    }
}

static CapStatus builder_nomem(const DataBuilder *b) {
    return data_fail(b->err, b->err_size, CAP_E_NOMEM, "%s: out of memory", b->ds->source);
}

/* The image at `key` or with `id` that is already there (*first), and whether the new one
 * (file `path`) is a plain repeat of it. Returns an error for two different images. */
static CapStatus check_repeat(DataBuilder *b, const char *key, const char *path, int64_t id,
                              const char *where, int32_t *first) {
    int32_t k = db_find_image(b, key);
    if (k < 0) k = db_find_id(b, id);
    *first = k;
    if (k < 0) return CAP_OK;
    const DataImage *old = &b->ds->images[k];
    if (strcmp(old->path, path) == 0 && old->id == id) return CAP_OK;
    if (old->id == id)
        return data_fail(b->err, b->err_size, CAP_E_FORMAT,
                         "%s: image '%s' has id %lld, which is already the id of '%s' (each "
                         "image needs its own id: cap eval writes one result per id)",
                         where, path, (long long)id, old->path);
    return data_fail(b->err, b->err_size, CAP_E_FORMAT,
                     "%s: image '%s' is listed again with id %lld (first with id %lld)", where,
                     path, (long long)id, (long long)old->id);
}

CapStatus db_add_image(DataBuilder *b, const char *key, const char *rel_path, int64_t id,
                       DataSplit split, const char *where, int32_t *index) {
    Dataset *ds = b->ds;
    *index = -1;
    char *path = data_join_path(ds->image_dir, rel_path);
    if (!path) return builder_nomem(b);
    int32_t first;
    CapStatus st = check_repeat(b, key, path, id, where, &first);
    if (st || first >= 0) {
        free(path);
        if (st) return st;
        ds->stats.duplicate_images++;
        db_warn(b, "%s: image '%s' listed again; the first one is kept", where, key);
        return CAP_OK;
    }
    if (ds->n_images == b->cap_images) {
        int32_t cap = b->cap_images ? b->cap_images * 2 : 256;
        DataImage *im = realloc(ds->images, (size_t)cap * sizeof *im);
        if (im) ds->images = im;
        char **keys = im ? realloc(b->keys, (size_t)cap * sizeof *keys) : NULL;
        if (keys) b->keys = keys;
        if (!im || !keys) {
            free(path);
            return builder_nomem(b);
        }
        b->cap_images = cap;
    }
    char *k = strdup(key);
    if (!k || (2 * (ds->n_images + 1) > b->table_size && table_grow(b))) {
        free(k);
        free(path);
        return builder_nomem(b);
    }
    int32_t i = ds->n_images++;
    b->keys[i] = k;
    ds->images[i] = (DataImage){.path = path, .id = id, .split = split};
    table_insert(b->table, b->id_table, b->table_size, b, i);
    *index = i;
    return CAP_OK;
}

int db_add_caption(DataBuilder *b, int32_t img, const char *text, size_t n, const char *where) {
    int replaced = 0;
    char *s = text_utf8_repair(text, n, &replaced);
    if (!s) return -1;
    if (replaced) {
        b->ds->stats.bad_utf8_captions++;
        db_warn(b, "%s: %d byte%s not UTF-8, replaced by U+FFFD", where, replaced,
                replaced == 1 ? " is" : "s are");
    }
    text_trim(s);
    if (text_count_tokens(s) <= 0) {
        free(s);
        b->ds->stats.empty_captions++;
        db_warn(b, "%s: empty caption skipped", where);
        return 0;
    }
    if (b->n_pending == b->cap_pending) {
        int32_t cap = b->cap_pending ? b->cap_pending * 2 : 1024;
        int32_t *ci = realloc(b->cap_image, (size_t)cap * sizeof *ci);
        if (ci) b->cap_image = ci;
        char **ct = realloc(b->cap_text, (size_t)cap * sizeof *ct);
        if (ct) b->cap_text = ct;
        if (!ci || !ct) {
            free(s);
            return -1;
        }
        b->cap_pending = cap;
    }
    b->cap_image[b->n_pending] = img;
    b->cap_text[b->n_pending++] = s;
    return 0;
}

static void free_builder_parts(DataBuilder *b) {
    if (b->keys)
        for (int32_t i = 0; i < b->ds->n_images; i++) free(b->keys[i]);
    free(b->keys);
    free(b->table);
    free(b->id_table);
    b->keys = NULL;
    b->table = NULL;
    b->id_table = NULL;
}

void db_abort(DataBuilder *b) {
    if (!b->ds) return;
    for (int32_t i = 0; i < b->n_pending; i++) free(b->cap_text[i]);
    free(b->cap_text);
    free(b->cap_image);
    b->cap_text = NULL;
    b->cap_image = NULL;
    free_builder_parts(b);
    data_free(b->ds);
    b->ds = NULL;
}

/* Keeps images with captions (in order) and groups their captions by image. */
static CapStatus group_captions(DataBuilder *b, char *err, size_t err_size) {
    Dataset *ds = b->ds;
    int32_t n = ds->n_images;
    int32_t *count = calloc((size_t)n + 1, sizeof *count);
    int32_t *remap = malloc(((size_t)n + 1) * sizeof *remap);
    char **caps = malloc(((size_t)b->n_pending + 1) * sizeof *caps);
    if (!count || !remap || !caps) {
        free(count);
        free(remap);
        free(caps);
        return data_fail(err, err_size, CAP_E_NOMEM, "%s: out of memory", ds->source);
    }
    for (int32_t c = 0; c < b->n_pending; c++) count[b->cap_image[c]]++;
    int32_t kept = 0, next = 0;
    for (int32_t i = 0; i < n; i++) {
        if (count[i] == 0) {
            ds->stats.images_without_captions++;
            free(ds->images[i].path);
            remap[i] = -1;
            continue;
        }
        DataImage im = ds->images[i];
        im.first_caption = next;
        im.n_captions = 0;
        next += count[i];
        remap[i] = kept;
        ds->images[kept++] = im;
    }
    for (int32_t c = 0; c < b->n_pending; c++) {
        DataImage *im = &ds->images[remap[b->cap_image[c]]];
        caps[im->first_caption + im->n_captions++] = b->cap_text[c];
    }
    if (ds->stats.images_without_captions)
        db_warn(b, "%s: %lld image%s without captions dropped", ds->source,
                (long long)ds->stats.images_without_captions,
                ds->stats.images_without_captions == 1 ? "" : "s");
    free(b->cap_text);
    free(b->cap_image);
    b->cap_text = NULL;
    b->cap_image = NULL;
    ds->captions = caps;
    ds->n_captions = b->n_pending;
    b->n_pending = 0;
    ds->n_images = kept;
    free(count);
    free(remap);
    return CAP_OK;
}

CapStatus db_finish(DataBuilder *b, Dataset **out, char *err, size_t err_size) {
    *out = NULL;
    int32_t n_listed = b->ds->n_images;
    free_builder_parts(b); /* keys are freed for all n_images before grouping shrinks it */
    CapStatus st = group_captions(b, err, err_size);
    if (st != CAP_OK) {
        db_abort(b);
        return st;
    }
    Dataset *ds = b->ds;
    if (ds->n_images == 0) {
        st = data_fail(err, err_size, CAP_E_FORMAT, "%s: no images with captions (%d listed)",
                       ds->source, (int)n_listed);
        db_abort(b);
        return st;
    }
    for (int32_t i = 0; i < ds->n_images; i++) ds->n_per_split[ds->images[i].split]++;
    b->ds = NULL;
    *out = ds;
    return CAP_OK;
}

void data_print_warnings(const Dataset *ds, FILE *to) {
    const DataStats *s = &ds->stats;
    for (int i = 0; i < ds->n_warnings; i++) fprintf(to, "cap: warning: %s\n", ds->warnings[i]);
    int64_t total = s->orphan_captions + s->empty_captions + s->bad_utf8_captions +
                    s->images_without_captions + s->duplicate_images;
    if (total > ds->n_warnings)
        fprintf(to, "cap: warning: %s: %lld captions for unknown images, %lld empty captions, "
                "%lld captions with bad UTF-8, %lld images without captions, %lld duplicate images\n",
                ds->source, (long long)s->orphan_captions, (long long)s->empty_captions,
                (long long)s->bad_utf8_captions, (long long)s->images_without_captions,
                (long long)s->duplicate_images);
}
