/* safetensors.c — a validating safetensors reader and an atomic writer (see safetensors.h).
 *
 * Keeps true: a StFile handed out by st_parse/st_read_file has passed every check listed in
 * safetensors.h, so every tensor's bytes lie inside the buffer and match its dtype and shape;
 * nothing is ever read outside the buffer, whatever the input. The writer never leaves a
 * partly written file at the target path.
 */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <dirent.h>

#include <cjson/cJSON.h>

#include "files.h"

/* ---- dtypes ------------------------------------------------------------------------------ */

static const struct {
    const char *name;
    int size;
} DTYPES[ST_DTYPE_COUNT] = {
    [ST_BOOL] = {"BOOL", 1}, [ST_U8] = {"U8", 1},   [ST_I8] = {"I8", 1},
    [ST_U16] = {"U16", 2},   [ST_I16] = {"I16", 2}, [ST_F16] = {"F16", 2},
    [ST_BF16] = {"BF16", 2}, [ST_U32] = {"U32", 4}, [ST_I32] = {"I32", 4},
    [ST_F32] = {"F32", 4},   [ST_U64] = {"U64", 8}, [ST_I64] = {"I64", 8},
    [ST_F64] = {"F64", 8},
};

const char *st_dtype_name(StDType dt) {
    return (unsigned)dt < ST_DTYPE_COUNT ? DTYPES[dt].name : "?";
}

int st_dtype_size(StDType dt) { return (unsigned)dt < ST_DTYPE_COUNT ? DTYPES[dt].size : 0; }

bool st_dtype_from_name(const char *name, StDType *dt) {
    for (int i = 0; i < ST_DTYPE_COUNT; i++)
        if (strcmp(DTYPES[i].name, name) == 0) {
            *dt = (StDType)i;
            return true;
        }
    return false;
}

/* ---- small helpers ----------------------------------------------------------------------- */

/* err = "WHERE: message". Always returns -1. */
static int fail(char *err, size_t err_size, const char *where, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(char *err, size_t err_size, const char *where, const char *fmt, ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(err, err_size, "%s: %s", where, msg);
    return -1;
}

static uint64_t load_le(const uint8_t *p, int bytes) {
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static void store_le(uint8_t *p, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* ---- small floats (F16: 5 exponent bits, 10 mantissa; BF16: 8 and 7) ---------------------- */

static double small_float_to_f64(uint32_t bits, int exp_bits, int mant_bits) {
    uint32_t mant = bits & ((1u << mant_bits) - 1);
    uint32_t e = (bits >> mant_bits) & ((1u << exp_bits) - 1);
    int bias = (1 << (exp_bits - 1)) - 1;
    double sign = (bits >> (exp_bits + mant_bits)) & 1 ? -1.0 : 1.0;
    if (e == (1u << exp_bits) - 1) return mant ? NAN : sign * INFINITY;
    if (e == 0) return sign * ldexp((double)mant, 1 - bias - mant_bits);
    return sign * ldexp((double)(mant | (1u << mant_bits)), (int)e - bias - mant_bits);
}

/* Rounds to nearest, ties to even (rint in the default rounding mode). */
static uint32_t f64_to_small_float(double x, int exp_bits, int mant_bits) {
    uint32_t sign = signbit(x) ? 1u << (exp_bits + mant_bits) : 0;
    uint32_t inf = ((1u << exp_bits) - 1) << mant_bits;
    int bias = (1 << (exp_bits - 1)) - 1;
    double a = fabs(x);
    if (isnan(x)) return sign | inf | (1u << (mant_bits - 1));
    /* Halfway between the largest finite value and the next power of two rounds to inf. */
    if (a >= ldexp(2.0 - ldexp(1.0, -mant_bits - 1), bias)) return sign | inf;
    if (a < ldexp(1.0, 1 - bias)) /* subnormal; a carry into the exponent encodes correctly */
        return sign | (uint32_t)rint(ldexp(a, bias - 1 + mant_bits));
    int e;
    double frac = frexp(a, &e); /* a = frac * 2^e, frac in [0.5, 1) */
    uint32_t mant = (uint32_t)rint(ldexp(frac * 2.0 - 1.0, mant_bits));
    uint32_t biased = (uint32_t)(e - 1 + bias);
    return sign | ((biased << mant_bits) + mant); /* mant == 2^mant_bits carries */
}

/* ---- element conversion -------------------------------------------------------------------- */

static double element_to_f64(StDType dt, const uint8_t *p) {
    int size = DTYPES[dt].size;
    uint64_t u = load_le(p, size);
    switch (dt) {
    case ST_BOOL: return u != 0;
    case ST_U8: case ST_U16: case ST_U32: case ST_U64: return (double)u;
    case ST_I8: return (double)(int8_t)u;
    case ST_I16: return (double)(int16_t)u;
    case ST_I32: return (double)(int32_t)u;
    case ST_I64: return (double)(int64_t)u;
    case ST_F16: return small_float_to_f64((uint32_t)u, 5, 10);
    case ST_BF16: return small_float_to_f64((uint32_t)u, 8, 7);
    case ST_F32: {
        uint32_t b = (uint32_t)u;
        float f;
        memcpy(&f, &b, sizeof f);
        return f;
    }
    case ST_F64: {
        double d;
        memcpy(&d, &u, sizeof d);
        return d;
    }
    default: return NAN;
    }
}

static uint64_t f64_to_element(StDType dt, double x) {
    switch (dt) {
    case ST_BOOL: return x != 0;
    case ST_U8: case ST_U16: case ST_U32: case ST_U64: return (uint64_t)x;
    case ST_I8: case ST_I16: case ST_I32: case ST_I64: return (uint64_t)(int64_t)x;
    case ST_F16: return f64_to_small_float(x, 5, 10);
    case ST_BF16: return f64_to_small_float(x, 8, 7);
    case ST_F32: {
        float f = (float)x;
        uint32_t b;
        memcpy(&b, &f, sizeof b);
        return b;
    }
    case ST_F64: {
        uint64_t b;
        memcpy(&b, &x, sizeof b);
        return b;
    }
    default: return 0;
    }
}

void st_to_f64(const StTensor *t, double *out) {
    int size = DTYPES[t->dtype].size;
    for (int64_t i = 0; i < t->numel; i++) out[i] = element_to_f64(t->dtype, t->data + i * size);
}

void st_from_f64(StDType dtype, const double *in, int64_t n, void *out) {
    int size = DTYPES[dtype].size;
    uint8_t *p = out;
    for (int64_t i = 0; i < n; i++) store_le(p + i * size, f64_to_element(dtype, in[i]), size);
}

/* ---- reading: header entries ----------------------------------------------------------------- */

/* Largest integer a JSON number (a double in cJSON) holds exactly. */
#define MAX_JSON_INT 9007199254740992.0

/* A non-negative integral JSON number, or -1. */
static int64_t json_index(const cJSON *n) {
    if (!cJSON_IsNumber(n)) return -1;
    double v = n->valuedouble;
    if (!(v >= 0 && v <= MAX_JSON_INT) || v != floor(v)) return -1;
    return (int64_t)v;
}

static int parse_shape(const cJSON *shape, StTensor *t, const char *where, char *err,
                       size_t err_size) {
    if (!cJSON_IsArray(shape))
        return fail(err, err_size, where, "tensor '%s': shape is not an array", t->name);
    t->rank = cJSON_GetArraySize(shape);
    if (t->rank > ST_MAX_RANK)
        return fail(err, err_size, where, "tensor '%s': rank %d exceeds %d", t->name, t->rank,
                    ST_MAX_RANK);
    int64_t numel = 1;
    int i = 0;
    for (const cJSON *d = shape->child; d; d = d->next, i++) {
        int64_t v = json_index(d);
        if (v < 0)
            return fail(err, err_size, where,
                        "tensor '%s': shape entry %d is not a non-negative integer", t->name, i);
        t->shape[i] = v;
        /* Keep numel * 8 bytes representable: anything bigger cannot be in a file anyway. */
        if (v != 0 && numel > (INT64_MAX / 8) / v)
            return fail(err, err_size, where, "tensor '%s': shape is absurdly large", t->name);
        numel *= v;
    }
    t->numel = numel;
    return 0;
}

static int parse_offsets(const cJSON *offs, StTensor *t, const char *where, char *err,
                         size_t err_size) {
    int64_t b = -1, e = -1;
    if (cJSON_IsArray(offs) && cJSON_GetArraySize(offs) == 2) {
        b = json_index(offs->child);
        e = json_index(offs->child->next);
    }
    if (b < 0 || e < 0 || e < b)
        return fail(err, err_size, where,
                    "tensor '%s': data_offsets must be [begin, end] with 0 <= begin <= end",
                    t->name);
    t->offset = (size_t)b;
    t->nbytes = (size_t)(e - b);
    return 0;
}

/* One tensor entry: exactly the keys dtype, shape, data_offsets. */
static int parse_tensor(const cJSON *entry, StTensor *t, const char *where, char *err,
                        size_t err_size) {
    if (!cJSON_IsObject(entry))
        return fail(err, err_size, where, "tensor '%s': entry is not an object", t->name);
    const cJSON *dtype = NULL, *shape = NULL, *offs = NULL;
    for (const cJSON *k = entry->child; k; k = k->next) {
        const cJSON **slot = strcmp(k->string, "dtype") == 0          ? &dtype
                             : strcmp(k->string, "shape") == 0        ? &shape
                             : strcmp(k->string, "data_offsets") == 0 ? &offs
                                                                      : NULL;
        if (!slot)
            return fail(err, err_size, where, "tensor '%s': unknown key '%s'", t->name,
                        k->string);
        if (*slot)
            return fail(err, err_size, where, "tensor '%s': duplicate key '%s'", t->name,
                        k->string);
        *slot = k;
    }
    if (!dtype || !shape || !offs)
        return fail(err, err_size, where, "tensor '%s': missing '%s'", t->name,
                    !dtype ? "dtype" : !shape ? "shape" : "data_offsets");
    if (!cJSON_IsString(dtype) || !st_dtype_from_name(dtype->valuestring, &t->dtype))
        return fail(err, err_size, where, "tensor '%s': unknown dtype %s%s%s", t->name,
                    cJSON_IsString(dtype) ? "'" : "", cJSON_IsString(dtype) ? dtype->valuestring
                                                                             : "(not a string)",
                    cJSON_IsString(dtype) ? "'" : "");
    if (parse_shape(shape, t, where, err, err_size) != 0) return -1;
    if (parse_offsets(offs, t, where, err, err_size) != 0) return -1;
    uint64_t want = (uint64_t)t->numel * (uint64_t)DTYPES[t->dtype].size;
    if (want != t->nbytes)
        return fail(err, err_size, where,
                    "tensor '%s': %s shape of %lld elements needs %llu bytes, data_offsets "
                    "give %zu",
                    t->name, DTYPES[t->dtype].name, (long long)t->numel,
                    (unsigned long long)want, t->nbytes);
    return 0;
}

static int parse_metadata(const cJSON *meta, StFile *f, char *err, size_t err_size) {
    if (!cJSON_IsObject(meta))
        return fail(err, err_size, f->path, "__metadata__ is not an object");
    int n = cJSON_GetArraySize(meta);
    f->meta_keys = calloc((size_t)n + 1, sizeof *f->meta_keys);
    f->meta_values = calloc((size_t)n + 1, sizeof *f->meta_values);
    if (!f->meta_keys || !f->meta_values) return fail(err, err_size, f->path, "out of memory");
    for (const cJSON *k = meta->child; k; k = k->next) {
        if (!cJSON_IsString(k))
            return fail(err, err_size, f->path, "__metadata__ value of '%s' is not a string",
                        k->string);
        f->meta_keys[f->n_meta] = strdup(k->string);
        f->meta_values[f->n_meta] = strdup(k->valuestring);
        if (!f->meta_keys[f->n_meta] || !f->meta_values[f->n_meta])
            return fail(err, err_size, f->path, "out of memory");
        f->n_meta++;
    }
    return 0;
}

static int parse_entries(const cJSON *root, StFile *f, char *err, size_t err_size) {
    int n = cJSON_GetArraySize(root);
    f->tensors = calloc((size_t)n + 1, sizeof *f->tensors);
    if (!f->tensors) return fail(err, err_size, f->path, "out of memory");
    bool seen_meta = false;
    for (const cJSON *k = root->child; k; k = k->next) {
        if (strcmp(k->string, "__metadata__") == 0) {
            if (seen_meta) return fail(err, err_size, f->path, "duplicate __metadata__");
            seen_meta = true;
            if (parse_metadata(k, f, err, err_size) != 0) return -1;
            continue;
        }
        if (k->string[0] == '\0') return fail(err, err_size, f->path, "empty tensor name");
        if (st_find(f, k->string))
            return fail(err, err_size, f->path, "tensor '%s' appears twice", k->string);
        StTensor *t = &f->tensors[f->n];
        t->name = strdup(k->string);
        if (!t->name) return fail(err, err_size, f->path, "out of memory");
        f->n++;
        if (parse_tensor(k, t, f->path, err, err_size) != 0) return -1;
    }
    return 0;
}

/* ---- reading: layout of the data section ---------------------------------------------------- */

/* Orders tensor pointers (all into one array) by byte range, then by position in the header.
 * Sorting pointers keeps qsort free of shared state: readers may run on several threads. */
static int by_offset(const void *a, const void *b) {
    const StTensor *x = *(const StTensor *const *)a, *y = *(const StTensor *const *)b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    if (x->nbytes != y->nbytes) return x->nbytes < y->nbytes ? -1 : 1;
    return x < y ? -1 : x > y;
}

/* The byte ranges, sorted, must tile [0, data_size) exactly. */
static int check_layout(StFile *f, const uint8_t *data, size_t data_size, char *err,
                        size_t err_size) {
    for (int i = 0; i < f->n; i++) {
        StTensor *t = &f->tensors[i];
        if (t->offset > data_size || t->nbytes > data_size - t->offset)
            return fail(err, err_size, f->path,
                        "tensor '%s': data_offsets [%zu, %zu] run past the end of the data "
                        "(%zu bytes): file truncated?",
                        t->name, t->offset, t->offset + t->nbytes, data_size);
        t->data = data + t->offset;
    }
    const StTensor **order = malloc(sizeof *order * ((size_t)f->n + 1));
    if (!order) return fail(err, err_size, f->path, "out of memory");
    for (int i = 0; i < f->n; i++) order[i] = &f->tensors[i];
    qsort(order, (size_t)f->n, sizeof *order, by_offset);
    size_t expect = 0;
    int rc = 0;
    const StTensor *prev = NULL;
    for (int i = 0; i < f->n && rc == 0; i++) {
        const StTensor *t = order[i];
        if (t->offset < expect)
            rc = fail(err, err_size, f->path, "tensor '%s': data_offsets overlap tensor '%s'",
                      t->name, prev->name);
        else if (t->offset > expect)
            rc = fail(err, err_size, f->path,
                      "tensor '%s': data_offsets leave a gap of %zu bytes before it",
                      t->name, t->offset - expect);
        expect = t->offset + t->nbytes;
        prev = t;
    }
    free(order);
    if (rc == 0 && expect != data_size)
        rc = fail(err, err_size, f->path,
                  "%zu trailing bytes after the last tensor's data", data_size - expect);
    return rc;
}

/* ---- reading: the whole file ------------------------------------------------------------------ */

static bool only_whitespace(const char *p, const char *end) {
    for (; p < end; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') return false;
    return true;
}

static int parse_header(StFile *f, char *err, size_t err_size) {
    if (f->size < 8)
        return fail(err, err_size, f->path,
                    "%zu bytes is too short for a safetensors file (not safetensors?)", f->size);
    uint64_t n = load_le(f->buf, 8);
    if (n > ST_MAX_HEADER)
        return fail(err, err_size, f->path,
                    "header length %llu exceeds the limit of %llu bytes (not safetensors?)",
                    (unsigned long long)n, (unsigned long long)ST_MAX_HEADER);
    if (n > f->size - 8)
        return fail(err, err_size, f->path,
                    "header length %llu runs past the end of the file (%zu bytes): truncated?",
                    (unsigned long long)n, f->size);
    const char *hdr = (const char *)f->buf + 8, *end = NULL;
    if (n == 0 || hdr[0] != '{')
        return fail(err, err_size, f->path,
                    "header does not start with '{' (not a safetensors file?)");
    cJSON *root = cJSON_ParseWithLengthOpts(hdr, (size_t)n, &end, 0);
    int rc = 0;
    if (!root)
        rc = fail(err, err_size, f->path, "header is not valid JSON (near byte %td of it)",
                  cJSON_GetErrorPtr() ? cJSON_GetErrorPtr() - hdr : (ptrdiff_t)0);
    else if (!cJSON_IsObject(root))
        rc = fail(err, err_size, f->path, "header is not a JSON object");
    else if (!only_whitespace(end, hdr + n))
        rc = fail(err, err_size, f->path, "header has text after its JSON object");
    if (rc == 0) rc = parse_entries(root, f, err, err_size);
    cJSON_Delete(root);
    if (rc == 0) rc = check_layout(f, f->buf + 8 + n, f->size - 8 - (size_t)n, err, err_size);
    return rc;
}

int st_parse(uint8_t *buf, size_t size, const char *name, StFile *out, char *err,
             size_t err_size) {
    memset(out, 0, sizeof *out);
    out->buf = buf;
    out->size = size;
    out->path = strdup(name ? name : "(memory)");
    if (!out->path) {
        st_free(out);
        return fail(err, err_size, name ? name : "(memory)", "out of memory");
    }
    if (parse_header(out, err, err_size) != 0) {
        st_free(out);
        return -1;
    }
    return 0;
}

static int read_all(const char *path, uint8_t **buf, size_t *size, char *err, size_t err_size) {
    char *data;
    switch (file_read_all(path, &data, size)) {
    case FILE_READ_OK: *buf = (uint8_t *)data; return 0;
    case FILE_READ_CANNOT_OPEN:
        return fail(err, err_size, path, "cannot open: %s", strerror(errno));
    case FILE_READ_NO_MEMORY: return fail(err, err_size, path, "cannot read: out of memory");
    default: return fail(err, err_size, path, "cannot read: %s", strerror(EIO));
    }
}

int st_read_file(const char *path, StFile *out, char *err, size_t err_size) {
    memset(out, 0, sizeof *out);
    uint8_t *buf = NULL;
    size_t size = 0;
    if (read_all(path, &buf, &size, err, err_size) != 0) return -1;
    return st_parse(buf, size, path, out, err, err_size);
}

void st_free(StFile *f) {
    if (!f) return;
    for (int i = 0; i < f->n; i++) free(f->tensors[i].name);
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_values[i]);
    }
    free(f->tensors);
    free(f->meta_keys);
    free(f->meta_values);
    free(f->buf);
    free(f->path);
    memset(f, 0, sizeof *f);
}

const StTensor *st_find(const StFile *f, const char *name) {
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

const char *st_metadata(const StFile *f, const char *key) {
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta_keys[i], key) == 0) return f->meta_values[i];
    return NULL;
}

/* ---- writing ------------------------------------------------------------------------------------ */

static int64_t tensor_bytes(const StWriteTensor *t) {
    int64_t n = DTYPES[t->dtype].size;
    for (int d = 0; d < t->rank; d++) n *= t->shape[d];
    return n;
}

static int check_write_args(const char *path, const StWriteTensor *ts, int n, char *err,
                            size_t err_size) {
    for (int i = 0; i < n; i++) {
        const StWriteTensor *t = &ts[i];
        if (!t->name || !t->name[0] || strcmp(t->name, "__metadata__") == 0)
            return fail(err, err_size, path, "tensor %d: invalid name", i);
        if ((unsigned)t->dtype >= ST_DTYPE_COUNT || t->rank < 0 || t->rank > ST_MAX_RANK)
            return fail(err, err_size, path, "tensor '%s': invalid dtype or rank", t->name);
        for (int d = 0; d < t->rank; d++)
            if (t->shape[d] < 0 || t->shape[d] > (int64_t)1 << 40)
                return fail(err, err_size, path, "tensor '%s': invalid shape", t->name);
        for (int j = 0; j < i; j++)
            if (strcmp(ts[j].name, t->name) == 0)
                return fail(err, err_size, path, "tensor '%s' given twice", t->name);
    }
    return 0;
}

/* The header JSON, padded with spaces to a multiple of 8 bytes; malloc'd, *len set. */
static char *build_header(const StWriteTensor *ts, int n, const char *const *meta_keys,
                          const char *const *meta_values, int n_meta, size_t *len) {
    cJSON *root = cJSON_CreateObject();
    bool ok = root != NULL;
    if (ok && n_meta > 0) {
        cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
        for (int i = 0; ok && i < n_meta; i++)
            ok = meta && cJSON_AddStringToObject(meta, meta_keys[i], meta_values[i]);
    }
    double offset = 0;
    for (int i = 0; ok && i < n; i++) {
        cJSON *e = cJSON_AddObjectToObject(root, ts[i].name);
        ok = e && cJSON_AddStringToObject(e, "dtype", DTYPES[ts[i].dtype].name);
        cJSON *shape = ok ? cJSON_AddArrayToObject(e, "shape") : NULL;
        for (int d = 0; ok && d < ts[i].rank; d++)
            ok = shape && cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)ts[i].shape[d]));
        double range[2] = {offset, offset + (double)tensor_bytes(&ts[i])};
        cJSON *offs = ok ? cJSON_CreateDoubleArray(range, 2) : NULL;
        ok = offs && cJSON_AddItemToObject(e, "data_offsets", offs);
        offset = range[1];
    }
    char *text = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (!text) return NULL;
    size_t raw = strlen(text), padded = (raw + 7) / 8 * 8;
    char *out = realloc(text, padded + 1);
    if (!out) {
        free(text);
        return NULL;
    }
    memset(out + raw, ' ', padded - raw);
    out[padded] = '\0';
    *len = padded;
    return out;
}

static int write_fully(int fd, const void *data, size_t n) {
    const uint8_t *p = data;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int write_contents(int fd, const char *header, size_t hlen, const StWriteTensor *ts,
                          int n) {
    uint8_t len8[8];
    store_le(len8, hlen, 8);
    if (write_fully(fd, len8, 8) != 0 || write_fully(fd, header, hlen) != 0) return -1;
    for (int i = 0; i < n; i++)
        if (write_fully(fd, ts[i].data, (size_t)tensor_bytes(&ts[i])) != 0) return -1;
    return fsync(fd);
}

/* fsync of the directory holding path, so the rename itself is durable (best effort). */
static void sync_parent_dir(const char *path) {
    char *dir = strdup(path);
    if (!dir) return;
    char *slash = strrchr(dir, '/');
    const char *d = slash == dir ? "/" : slash ? (*slash = '\0', dir) : ".";
    int fd = open(d, O_RDONLY);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    free(dir);
}

/* The mode a rewritten file keeps: the existing file's (a 0600 checkpoint stays 0600), else
 * what open(2) would give a new file under the umask. */
static mode_t file_mode_for(const char *path) {
    struct stat st;
    if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) return st.st_mode & 07777;
    mode_t mask = umask(0);
    umask(mask);
    return 0666 & ~mask;
}

/* "NAME.tmp.XXXXXX" of path's base name: what st_write_file's mkstemp makes. */
static bool is_temp_of(const char *entry, const char *base) {
    size_t n = strlen(base);
    if (strncmp(entry, base, n) != 0 || strncmp(entry + n, ".tmp.", 5) != 0) return false;
    return strlen(entry + n + 5) == 6;
}

int st_remove_stale_temps(const char *path) {
    char *copy = strdup(path);
    if (!copy) return 0;
    char *slash = strrchr(copy, '/');
    const char *base = slash ? slash + 1 : copy;
    const char *dir = slash == copy ? "/" : slash ? (*slash = '\0', copy) : ".";
    DIR *d = opendir(dir);
    int removed = 0;
    for (struct dirent *e; d && (e = readdir(d)) != NULL;) {
        if (!is_temp_of(e->d_name, base)) continue;
        char full[4096];
        struct stat st;
        snprintf(full, sizeof full, "%s/%s", dir, e->d_name);
        if (lstat(full, &st) == 0 && S_ISREG(st.st_mode) && unlink(full) == 0) removed++;
    }
    if (d) closedir(d);
    free(copy);
    return removed;
}

int st_write_file(const char *path, const StWriteTensor *tensors, int n,
                  const char *const *meta_keys, const char *const *meta_values, int n_meta,
                  char *err, size_t err_size) {
    if (check_write_args(path, tensors, n, err, err_size) != 0) return -1;
    size_t hlen = 0;
    char *header = build_header(tensors, n, meta_keys, meta_values, n_meta, &hlen);
    if (!header) return fail(err, err_size, path, "out of memory building the header");
    size_t tlen = strlen(path) + 16;
    char *tmp = malloc(tlen);
    int fd = -1;
    if (tmp) {
        snprintf(tmp, tlen, "%s.tmp.XXXXXX", path);
        fd = mkstemp(tmp);
    }
    int rc = 0;
    if (fd < 0) {
        rc = fail(err, err_size, path, "cannot create a temporary file: %s",
                  tmp ? strerror(errno) : "out of memory");
    } else {
        int bad = fchmod(fd, file_mode_for(path)) != 0 ||
                  write_contents(fd, header, hlen, tensors, n) != 0;
        int saved = errno;
        bad = close(fd) != 0 || bad;
        if (bad || rename(tmp, path) != 0) {
            rc = fail(err, err_size, path, "cannot write: %s", strerror(bad ? saved : errno));
            unlink(tmp);
        } else {
            sync_parent_dir(path);
        }
    }
    free(tmp);
    free(header);
    return rc;
}
