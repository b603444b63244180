/* results.c — the COCO files behind `cap score` and `cap eval --results`: reading a results file ([{"image_id", "caption"}]) against a COCO
 * captions file ({"annotations": [{"image_id", "caption"}, ...]}), writing a results file.
 *
 * As pycocoevalcap's COCOEvalCap does, the images scored are the images of the results file;
 * captions-file images without a result are ignored. A result for an image with no captions
 * in the captions file, two results for one image (pycocoevalcap's scorers assert one
 * hypothesis per image) and an empty results list are errors naming the file and record.
 * docs/metrics.md describes the files.
 */
#include "cap_internal.h"
#include "data_internal.h" /* data_read_file */
#include "metrics.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


/* ---- reading ----------------------------------------------------------------------------- */

static CapStatus read_json(const char *path, cJSON **out, char *err, size_t err_size) {
    char *text;
    size_t len;
    CapStatus st = data_read_file(path, &text, &len, err, err_size);
    if (st) return st;
    const char *end = NULL;
    *out = cJSON_ParseWithOpts(text, &end, 1);
    if (!*out) {
        size_t off = end ? (size_t)(end - text) : 0;
        free(text);
        return cap_fail(err, err_size, CAP_E_FORMAT, "%s: malformed JSON near byte %zu", path, off);
    }
    free(text);
    return CAP_OK;
}

/* The record's integer image_id and string caption. */
static CapStatus record_fields(const char *path, const char *what, int index, const cJSON *rec,
                               int64_t *id, const char **caption, char *err, size_t err_size) {
    const cJSON *jid = cJSON_IsObject(rec) ? cJSON_GetObjectItemCaseSensitive(rec, "image_id") : NULL;
    const cJSON *jc = cJSON_IsObject(rec) ? cJSON_GetObjectItemCaseSensitive(rec, "caption") : NULL;
    if (!cJSON_IsObject(rec))
        return cap_fail(err, err_size, CAP_E_FORMAT, "%s: %s %d is not an object", path, what, index);
    if (!cJSON_IsNumber(jid) || !(fabs(jid->valuedouble) <= 9007199254740992.0) ||
        jid->valuedouble != (double)(int64_t)jid->valuedouble)
        return cap_fail(err, err_size, CAP_E_FORMAT, "%s: %s %d: \"image_id\" must be an integer",
                        path, what, index);
    if (!cJSON_IsString(jc))
        return cap_fail(err, err_size, CAP_E_FORMAT, "%s: %s %d (image_id %lld): \"caption\" must "
                        "be a string", path, what, index, (long long)jid->valuedouble);
    *id = (int64_t)jid->valuedouble;
    *caption = jc->valuestring;
    return CAP_OK;
}

typedef struct IdIndex {
    int64_t id;
    int index; /* record position */
} IdIndex;

static int id_index_cmp(const void *x, const void *y) {
    const IdIndex *a = x, *b = y;
    if (a->id != b->id) return a->id < b->id ? -1 : 1;
    return a->index < b->index ? -1 : a->index > b->index;
}

/* First entry with id in sorted v[0..n), or n. */
static int lower_bound(const IdIndex *v, int n, int64_t id) {
    int lo = 0, hi = n;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (v[mid].id < id) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

/* The annotations of the captions file, sorted by image id (then file order). */
static CapStatus load_refs(const char *path, const cJSON *root, IdIndex **out, int *n_out,
                           char *err, size_t err_size) {
    const cJSON *anns = cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "annotations") : NULL;
    if (!cJSON_IsArray(anns))
        return cap_fail(err, err_size, CAP_E_FORMAT, "%s: not a COCO captions file (no "
                        "\"annotations\" array)", path);
    int n = cJSON_GetArraySize(anns), i = 0;
    IdIndex *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    if (!v) return cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    const cJSON *a;
    cJSON_ArrayForEach(a, anns) {
        const char *cap;
        CapStatus st = record_fields(path, "annotation", i, a, &v[i].id, &cap, err, err_size);
        if (st) {
            free(v);
            return st;
        }
        v[i].index = i;
        i++;
    }
    qsort(v, (size_t)n, sizeof *v, id_index_cmp);
    *out = v;
    *n_out = n;
    return CAP_OK;
}

static CapStatus check_results(const char *path, const cJSON *res, IdIndex *ids, int n,
                               char *err, size_t err_size) {
    if (!cJSON_IsArray(res))
        return cap_fail(err, err_size, CAP_E_FORMAT, "%s: a results file is a JSON array of "
                        "{\"image_id\", \"caption\"} records", path);
    if (n == 0) return cap_fail(err, err_size, CAP_E_FORMAT, "%s: no results", path);
    int i = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, res) {
        const char *cap;
        CapStatus st = record_fields(path, "record", i, r, &ids[i].id, &cap, err, err_size);
        if (st) return st;
        ids[i].index = i;
        i++;
    }
    qsort(ids, (size_t)n, sizeof *ids, id_index_cmp);
    for (i = 1; i < n; i++)
        if (ids[i].id == ids[i - 1].id)
            return cap_fail(err, err_size, CAP_E_FORMAT, "%s: records %d and %d are both for "
                            "image_id %lld (one caption per image)", path, ids[i - 1].index,
                            ids[i].index, (long long)ids[i].id);
    return CAP_OK;
}

static CapStatus fill_item(CapScoreSet *s, int k, const cJSON *rec, const cJSON *anns,
                           const IdIndex *refs, int n_refs_all, const char *res_path,
                           const char *refs_path, int index, char *err, size_t err_size) {
    int64_t id = (int64_t)cJSON_GetObjectItemCaseSensitive(rec, "image_id")->valuedouble;
    int lo = lower_bound(refs, n_refs_all, id), hi = lo;
    while (hi < n_refs_all && refs[hi].id == id) hi++;
    if (hi == lo)
        return cap_fail(err, err_size, CAP_E_FORMAT, "%s: record %d: image_id %lld has no "
                        "captions in %s", res_path, index, (long long)id, refs_path);
    s->image_ids[k] = id;
    s->candidates[k] = strdup(cJSON_GetObjectItemCaseSensitive(rec, "caption")->valuestring);
    s->refs[k] = calloc((size_t)(hi - lo), sizeof **s->refs);
    if (!s->candidates[k] || !s->refs[k]) return cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    s->n_refs[k] = hi - lo;
    for (int j = lo; j < hi; j++) {
        const cJSON *a = cJSON_GetArrayItem(anns, refs[j].index);
        s->refs[k][j - lo] = strdup(cJSON_GetObjectItemCaseSensitive(a, "caption")->valuestring);
        if (!s->refs[k][j - lo]) return cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    }
    return CAP_OK;
}

static CapStatus build_set(const char *res_path, const char *refs_path, const cJSON *res,
                           const cJSON *refs_root, CapScoreSet *s, char *err, size_t err_size) {
    int n = cJSON_IsArray(res) ? cJSON_GetArraySize(res) : 0, n_refs_all = 0;
    IdIndex *ids = malloc((size_t)(n ? n : 1) * sizeof *ids), *refs = NULL;
    if (!ids) return cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    CapStatus st = check_results(res_path, res, ids, n, err, err_size);
    if (!st) st = load_refs(refs_path, refs_root, &refs, &n_refs_all, err, err_size);
    free(ids);
    if (st) return st;
    s->n = n;
    s->image_ids = calloc((size_t)n, sizeof *s->image_ids);
    s->candidates = calloc((size_t)n, sizeof *s->candidates);
    s->refs = calloc((size_t)n, sizeof *s->refs);
    s->n_refs = calloc((size_t)n, sizeof *s->n_refs);
    if (!s->image_ids || !s->candidates || !s->refs || !s->n_refs)
        st = cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    const cJSON *anns = cJSON_GetObjectItemCaseSensitive(refs_root, "annotations"), *rec;
    int k = 0;
    cJSON_ArrayForEach(rec, res) {
        if (st) break;
        st = fill_item(s, k, rec, anns, refs, n_refs_all, res_path, refs_path, k, err, err_size);
        k++;
    }
    free(refs);
    return st;
}

CapStatus cap_score_set_load(const char *results_path, const char *refs_path,
                             CapScoreSet *out, char *err, size_t err_size) {
    memset(out, 0, sizeof *out);
    cJSON *res = NULL, *refs = NULL;
    CapStatus st = read_json(results_path, &res, err, err_size);
    if (!st) st = read_json(refs_path, &refs, err, err_size);
    if (!st) st = build_set(results_path, refs_path, res, refs, out, err, err_size);
    cJSON_Delete(res);
    cJSON_Delete(refs);
    if (st) cap_score_set_free(out);
    return st;
}

void cap_score_set_free(CapScoreSet *s) {
    for (int i = 0; i < s->n; i++) {
        if (s->candidates) free(s->candidates[i]);
        if (s->refs && s->refs[i]) {
            for (int r = 0; r < s->n_refs[i]; r++) free(s->refs[i][r]);
            free(s->refs[i]);
        }
    }
    free(s->image_ids);
    free(s->candidates);
    free(s->refs);
    free(s->n_refs);
    memset(s, 0, sizeof *s);
}

/* ---- writing ----------------------------------------------------------------------------- */

CapStatus cap_write_coco_results(const char *path, const int64_t *image_ids,
                                 const char *const *captions, int n, char *err,
                                 size_t err_size) {
    cJSON *arr = cJSON_CreateArray();
    for (int i = 0; arr && i < n; i++) {
        cJSON *rec = cJSON_CreateObject();
        if (!rec || !cJSON_AddItemToArray(arr, rec) ||
            !cJSON_AddNumberToObject(rec, "image_id", (double)image_ids[i]) ||
            !cJSON_AddStringToObject(rec, "caption", captions[i] ? captions[i] : "")) {
            cJSON_Delete(arr);
            arr = NULL;
        }
    }
    char *text = arr ? cJSON_Print(arr) : NULL;
    cJSON_Delete(arr);
    if (!text) return cap_fail(err, err_size, CAP_E_NOMEM, "%s: out of memory", path);
    size_t plen = strlen(path) + 8;
    char *tmp = malloc(plen);
    CapStatus st = CAP_OK;
    if (!tmp) st = cap_fail(err, err_size, CAP_E_NOMEM, "%s: out of memory", path);
    FILE *f = NULL;
    if (!st) {
        snprintf(tmp, plen, "%s.tmp", path);
        f = fopen(tmp, "wb");
        if (!f) st = cap_fail(err, err_size, CAP_E_IO, "%s: cannot write: %s", tmp, strerror(errno));
    }
    if (f) {
        int bad = fputs(text, f) < 0 || fputc('\n', f) == EOF;
        bad = fclose(f) != 0 || bad;
        if (bad) st = cap_fail(err, err_size, CAP_E_IO, "%s: write error", tmp);
        else if (rename(tmp, path) != 0)
            st = cap_fail(err, err_size, CAP_E_IO, "%s: cannot rename to %s: %s", tmp, path,
                          strerror(errno));
        if (st) remove(tmp);
    }
    free(tmp);
    cJSON_free(text);
    return st;
}
