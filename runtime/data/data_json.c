/* data_json.c — the JSON formats. COCO captions JSON (captions_train2017.json and files like it):
 *   {"images": [{"id": N, "file_name": "x.jpg", "split"?: "train"}, ...],
 *    "annotations": [{"image_id": N, "caption": "A man ..."}, ...]}
 * plus the Karpathy split JSON (data_load_karpathy, below, shares the JSON helpers):
 *   {"images": [{"filename": "x.jpg", "filepath"?: "val2014", "split": "train|val|test|restval",
 *                "cocoid"?|"imgid"?: N, "sentences": [{"raw": "...", "tokens": [...]}, ...]}]}
 *
 * COCO has no splits: an image's split is, in order of precedence, the spec's split= option,
 * the image's own "split" key (a capc extension that the synthetic set writes), or the fixed
 * hash split of its file_name (data_hash_split: 90/5/5). Errors name the file and the record
 * ("annotations[12]: missing key 'caption'"); JSON syntax errors give line and column.
 */
#include "data_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

/* Whether text[i..i+5] is the escape \u0000. */
static int is_nul_escape(const char *text, size_t i) {
    return text[i] == '\\' && text[i + 1] == 'u' && strncmp(text + i + 2, "0000", 4) == 0;
}

/* Drops every \u0000 escape inside a string, in place, warning with its line and column.
 * Why: cJSON hands strings back NUL-terminated, so a \u0000 would silently cut a caption or
 * a file name short; docs/data.md says a NUL is dropped with a warning, as a raw NUL byte in
 * a caption would be by text_utf8_repair. Outside strings nothing is changed (a backslash
 * there is a syntax error that cJSON reports). Returns the new length. */
static size_t drop_nul_escapes(DataBuilder *b, const char *path, char *text, size_t len) {
    size_t o = 0;
    int in_string = 0, line = 1, col = 1;
    for (size_t i = 0; i < len;) {
        if (in_string && is_nul_escape(text, i)) {
            b->ds->stats.bad_utf8_captions++;
            db_warn(b, "%s:%d:%d: \\u0000 (NUL) in a string dropped", path, line, col);
            i += 6;
            col += 6;
            continue;
        }
        size_t step = in_string && text[i] == '\\' && i + 1 < len ? 2 : 1;
        if (text[i] == '"') in_string = !in_string;
        if (text[i] == '\n') {
            line++;
            col = 0;
        }
        col += (int)step;
        for (size_t k = 0; k < step; k++) text[o++] = text[i++];
    }
    text[o] = 0;
    return o;
}

/* Parses path as JSON into *root (caller deletes); warnings go to b. A raw NUL byte is an
 * error: JSON allows none (in a string it must be written \u0000), and cJSON would stop
 * reading at it, ignoring the rest of the file. */
static CapStatus parse_json_file(DataBuilder *b, const char *path, cJSON **root, char *err,
                                 size_t err_size) {
    char *text;
    size_t len;
    *root = NULL;
    CapStatus st = data_read_file(path, &text, &len, err, err_size);
    if (st != CAP_OK) return st;
    const char *nul = memchr(text, 0, len);
    int line, col;
    if (nul) {
        data_line_col(text, (size_t)(nul - text), &line, &col);
        free(text);
        return data_fail(err, err_size, CAP_E_FORMAT,
                         "%s:%d:%d: NUL byte (not allowed in JSON; write \\u0000 in a string)",
                         path, line, col);
    }
    len = drop_nul_escapes(b, path, text, len);
    const char *end = NULL;
    *root = cJSON_ParseWithOpts(text, &end, 1); /* nothing but whitespace after the value */
    if (!*root) {
        size_t off = end ? (size_t)(end - text) : 0;
        data_line_col(text, off, &line, &col);
        st = data_fail(err, err_size, CAP_E_FORMAT, "%s:%d:%d: JSON syntax error", path, line, col);
    } else if (!cJSON_IsObject(*root)) {
        cJSON_Delete(*root);
        *root = NULL;
        st = data_fail(err, err_size, CAP_E_FORMAT, "%s: expected a JSON object at the top", path);
    }
    free(text);
    return st;
}

/* The array root[key], or an error. */
static const cJSON *get_array(const cJSON *root, const char *key, const char *path, char *err,
                              size_t err_size) {
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!a) data_fail(err, err_size, CAP_E_FORMAT, "%s: missing key '%s'", path, key);
    else if (!cJSON_IsArray(a))
        data_fail(err, err_size, CAP_E_FORMAT, "%s: '%s' is not an array", path, key);
    else return a;
    return NULL;
}

typedef struct Record {
    const char *path;   /* file */
    const char *array;  /* "images" */
    int index;
    char *err;
    size_t err_size;
} Record;

static CapStatus rec_fail(const Record *r, const char *what, const char *key) {
    return data_fail(r->err, r->err_size, CAP_E_FORMAT, "%s: %s[%d]: %s '%s'", r->path, r->array,
                     r->index, what, key);
}

static CapStatus rec_string(const Record *r, const cJSON *o, const char *key, int required,
                            const char **out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    *out = NULL;
    if (!v) return required ? rec_fail(r, "missing key", key) : CAP_OK;
    if (!cJSON_IsString(v)) return rec_fail(r, "expected a string for", key);
    *out = v->valuestring;
    return CAP_OK;
}

static CapStatus rec_int(const Record *r, const cJSON *o, const char *key, int required,
                         int64_t *out, int *found) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (found) *found = v != NULL;
    if (!v) return required ? rec_fail(r, "missing key", key) : CAP_OK;
    double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    if (!(d == floor(d) && fabs(d) < 9e15)) return rec_fail(r, "expected an integer for", key);
    *out = (int64_t)d;
    return CAP_OK;
}

static CapStatus rec_split(const Record *r, const char *name, DataSplit *out) {
    if (data_split_parse(name, out) == 0) return CAP_OK;
    return data_fail(r->err, r->err_size, CAP_E_FORMAT,
                     "%s: %s[%d]: unknown split '%s' (train, val, test or restval)", r->path,
                     r->array, r->index, name);
}

static CapStatus nomem(const char *path, char *err, size_t err_size) {
    return data_fail(err, err_size, CAP_E_NOMEM, "%s: out of memory", path);
}

/* ---- COCO ----------------------------------------------------------------------------------- */

static CapStatus coco_image(DataBuilder *b, const cJSON *o, Record *r, DataSplitRule rule,
                            int rule_given) {
    if (!cJSON_IsObject(o)) return rec_fail(r, "expected an object, not", "value");
    int64_t id = 0;
    const char *file = NULL, *split_name = NULL;
    CapStatus st = rec_int(r, o, "id", 1, &id, NULL);
    if (!st) st = rec_string(r, o, "file_name", 1, &file);
    if (!st) st = rec_string(r, o, "split", 0, &split_name);
    if (st) return st;
    DataSplit split = data_rule_split(rule, file);
    if (split_name && !rule_given && (st = rec_split(r, split_name, &split))) return st;
    char key[32], where[1200];
    snprintf(key, sizeof key, "%lld", (long long)id);
    snprintf(where, sizeof where, "%s: images[%d]", r->path, r->index);
    int32_t img;
    return db_add_image(b, key, file, id, split, where, &img);
}

static CapStatus coco_annotation(DataBuilder *b, const cJSON *o, Record *r) {
    if (!cJSON_IsObject(o)) return rec_fail(r, "expected an object, not", "value");
    int64_t id = 0;
    const char *caption = NULL;
    CapStatus st = rec_int(r, o, "image_id", 1, &id, NULL);
    if (!st) st = rec_string(r, o, "caption", 1, &caption);
    if (st) return st;
    char key[32], where[1200];
    snprintf(key, sizeof key, "%lld", (long long)id);
    snprintf(where, sizeof where, "%s: annotations[%d]", r->path, r->index);
    int32_t img = db_find_image(b, key);
    if (img < 0) {
        b->ds->stats.orphan_captions++;
        db_warn(b, "%s: caption for image_id %lld, which is not in images[]; skipped", where,
                (long long)id);
        return CAP_OK;
    }
    if (db_add_caption(b, img, caption, strlen(caption), where)) return nomem(r->path, r->err, r->err_size);
    return CAP_OK;
}

static CapStatus coco_fill(DataBuilder *b, const cJSON *root, const char *path,
                           DataSplitRule rule, int rule_given, char *err, size_t err_size) {
    const cJSON *images = get_array(root, "images", path, err, err_size);
    const cJSON *anns = images ? get_array(root, "annotations", path, err, err_size) : NULL;
    if (!anns) return CAP_E_FORMAT;
    Record r = {path, "images", 0, err, err_size};
    const cJSON *o;
    CapStatus st;
    cJSON_ArrayForEach(o, images) {
        if ((st = coco_image(b, o, &r, rule, rule_given))) return st;
        r.index++;
    }
    r = (Record){path, "annotations", 0, err, err_size};
    cJSON_ArrayForEach(o, anns) {
        if ((st = coco_annotation(b, o, &r))) return st;
        r.index++;
    }
    return CAP_OK;
}

CapStatus data_coco_load(const char *path, const char *image_dir, DataSplitRule rule,
                           int rule_given, Dataset **out, char *err, size_t err_size) {
    *out = NULL;
    cJSON *root;
    DataBuilder b;
    CapStatus st = db_init(&b, DATA_COCO, path, image_dir, err, err_size);
    if (st) return st;
    st = parse_json_file(&b, path, &root, err, err_size);
    if (!st) st = coco_fill(&b, root, path, rule, rule_given, err, err_size);
    cJSON_Delete(root);
    if (st) {
        db_abort(&b);
        return st;
    }
    return db_finish(&b, out, err, err_size);
}

CapStatus data_load_coco(const char *path, const char *image_dir, DataSplitRule rule,
                         Dataset **out, char *err, size_t err_size) {
    /* The public entry cannot tell "hash by default" from "hash asked for"; an explicit rule
     * other than HASH always wins over per-image "split" keys. */
    return data_coco_load(path, image_dir, rule, rule != DATA_SPLIT_HASH, out, err, err_size);
}

/* ---- Karpathy ------------------------------------------------------------------------------ */

/* The caption of sentences[i]: "raw", else the tokens joined by spaces (malloc'ed). */
static CapStatus karpathy_sentence(const cJSON *s, Record *r, char **out) {
    *out = NULL;
    if (!cJSON_IsObject(s)) return rec_fail(r, "expected objects in", "sentences");
    const char *raw;
    CapStatus st = rec_string(r, s, "raw", 0, &raw);
    if (st) return st;
    if (raw) return (*out = strdup(raw)) ? CAP_OK : nomem(r->path, r->err, r->err_size);
    const cJSON *toks = cJSON_GetObjectItemCaseSensitive(s, "tokens");
    if (!toks) return rec_fail(r, "sentence without 'raw' or", "tokens");
    if (!cJSON_IsArray(toks)) return rec_fail(r, "expected an array for", "tokens");
    size_t n = 1;
    const cJSON *t;
    cJSON_ArrayForEach(t, toks) {
        if (!cJSON_IsString(t)) return rec_fail(r, "expected strings in", "tokens");
        n += strlen(t->valuestring) + 1;
    }
    char *s_out = calloc(n, 1);
    if (!s_out) return nomem(r->path, r->err, r->err_size);
    cJSON_ArrayForEach(t, toks) {
        if (*s_out) strcat(s_out, " ");
        strcat(s_out, t->valuestring);
    }
    *out = s_out;
    return CAP_OK;
}

static CapStatus karpathy_image(DataBuilder *b, const cJSON *o, Record *r) {
    if (!cJSON_IsObject(o)) return rec_fail(r, "expected an object, not", "value");
    const char *file, *dir, *split_name;
    int64_t id = r->index;
    int found = 0;
    DataSplit split;
    CapStatus st = rec_string(r, o, "filename", 1, &file);
    if (!st) st = rec_string(r, o, "filepath", 0, &dir);
    if (!st) st = rec_string(r, o, "split", 1, &split_name);
    if (!st) st = rec_split(r, split_name, &split);
    if (!st) st = rec_int(r, o, "cocoid", 0, &id, &found);
    if (!st && !found) st = rec_int(r, o, "imgid", 0, &id, NULL);
    const cJSON *sents = cJSON_GetObjectItemCaseSensitive(o, "sentences");
    if (!st && !sents) st = rec_fail(r, "missing key", "sentences");
    if (!st && !cJSON_IsArray(sents)) st = rec_fail(r, "expected an array for", "sentences");
    if (st) return st;
    char *rel = dir ? data_join_path(dir, file) : strdup(file);
    char where[1200];
    snprintf(where, sizeof where, "%s: images[%d]", r->path, r->index);
    int32_t img = -1;
    st = rel ? db_add_image(b, rel, rel, id, split, where, &img) : nomem(r->path, r->err, r->err_size);
    free(rel);
    if (st || img < 0) return st; /* an error, or the same image again (warned, skipped) */
    const cJSON *s;
    int k = 0;
    cJSON_ArrayForEach(s, sents) {
        char *text;
        if ((st = karpathy_sentence(s, r, &text))) return st;
        snprintf(where, sizeof where, "%s: images[%d].sentences[%d]", r->path, r->index, k++);
        int bad = db_add_caption(b, img, text, strlen(text), where);
        free(text);
        if (bad) return nomem(r->path, r->err, r->err_size);
    }
    return CAP_OK;
}

CapStatus data_load_karpathy(const char *path, const char *image_dir, Dataset **out,
                             char *err, size_t err_size) {
    *out = NULL;
    cJSON *root;
    DataBuilder b;
    CapStatus st = db_init(&b, DATA_KARPATHY, path, image_dir, err, err_size);
    if (st) return st;
    st = parse_json_file(&b, path, &root, err, err_size);
    const cJSON *images = st ? NULL : get_array(root, "images", path, err, err_size);
    if (!st && !images) st = CAP_E_FORMAT;
    Record r = {path, "images", 0, err, err_size};
    const cJSON *o;
    if (!st) cJSON_ArrayForEach(o, images) {
        if ((st = karpathy_image(&b, o, &r))) break;
        r.index++;
    }
    cJSON_Delete(root);
    if (st) {
        db_abort(&b);
        return st;
    }
    return db_finish(&b, out, err, err_size);
}
