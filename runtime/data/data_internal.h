/* data_internal.h — what the dataset readers (data_json.c: COCO and Karpathy; data_flickr.c)
 * share: a builder that collects images and captions in file order, applies the rules every
 * format follows (UTF-8 repair, empty captions, orphans, duplicates, images without captions)
 * and produces a Dataset with captions grouped by image. Not part of any public API.
 */
#ifndef DATA_INTERNAL_H
#define DATA_INTERNAL_H

#include "data.h"
#include "errmsg.h"

#include <stdarg.h>

/* The id of an image whose id is not known yet (Flickr30k names that do not start with a
 * number get theirs after the whole file is read). No reader produces it: JSON ids are
 * checked to be below 9e15 in magnitude. */
#define DB_NO_ID INT64_MIN

typedef struct DataBuilder {
    Dataset *ds;        /* being built; owned until db_finish hands it over */
    int32_t cap_images; /* allocated length of ds->images */
    char **keys;        /* per image: its lookup key (owned) */
    int32_t *table;     /* key -> image index, open addressing, -1 empty */
    int32_t *id_table;  /* image id -> image index, same size, -1 empty (DB_NO_ID not in it) */
    int32_t table_size;
    char *err;          /* where db_add_image writes its error (db_init's err) */
    size_t err_size;
    int32_t *cap_image; /* per pending caption: image index */
    char **cap_text;    /* per pending caption: text (owned) */
    int32_t n_pending, cap_pending;
} DataBuilder;

/* Starts a dataset read from `source`, images under image_dir (NULL or "" = the source's
 * directory). */
CapStatus db_init(DataBuilder *b, DataFormat f, const char *source, const char *image_dir,
                  char *err, size_t err_size);
/* Adds an image under lookup key `key` whose file is IMAGE_DIR/rel_path, and sets *index to
 * its index. The same image again (same key, file and id) is counted and warned with
 * `where`, and *index is -1: the first one is kept. Two different images under one key or
 * one id are an error naming `where`, both files and the id, because `cap eval` writes one
 * result per image id and `cap score` refuses a results file with an id twice. Errors (also
 * out of memory) are written to the builder's err. */
CapStatus db_add_image(DataBuilder *b, const char *key, const char *rel_path, int64_t id,
                       DataSplit split, const char *where, int32_t *index);
/* Index of the image with id, or -1. */
int32_t db_find_id(const DataBuilder *b, int64_t id);
/* Index of the image with key, or -1. */
int32_t db_find_image(const DataBuilder *b, const char *key);
/* Adds caption bytes [0, n) to image index img: repairs UTF-8 (warns), trims, skips empty
 * ones (warns). Returns 0, or -1 if out of memory. */
int db_add_caption(DataBuilder *b, int32_t img, const char *text, size_t n, const char *where);
/* Records a warning (counted by the caller in ds->stats). */
void db_warn(DataBuilder *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Groups captions, drops images without captions, counts splits. On success *out owns the
 * dataset; on failure (no images left) everything is freed. The builder is consumed. */
CapStatus db_finish(DataBuilder *b, Dataset **out, char *err, size_t err_size);
/* Frees a builder that will not be finished. */
void db_abort(DataBuilder *b);

/* data_load_coco with rule_given: whether split= was given (then it beats per-image "split"
 * keys, even split=hash). */
CapStatus data_coco_load(const char *path, const char *image_dir, DataSplitRule rule,
                         int rule_given, Dataset **out, char *err, size_t err_size);

/* The split that rule gives the image whose key (file name) is key: the rule's split, or for
 * DATA_SPLIT_HASH data_hash_split(key). */
DataSplit data_rule_split(DataSplitRule rule, const char *key);

/* Reads a whole file (NUL-terminated; *len excludes the NUL). Caller frees. Also used by
 * `cap score` (cli_score.c) for its JSON files. */
CapStatus data_read_file(const char *path, char **text, size_t *len, char *err,
                         size_t err_size);
/* Line (1-based) and column of byte offset off in text. */
void data_line_col(const char *text, size_t off, int *line, int *col);
/* Writes "fmt" into err and returns code (support/errmsg.h). */
#define data_fail(err, err_size, code, ...) ((CapStatus)errmsg_fail(err, err_size, code, __VA_ARGS__))
/* A malloc'ed string "a/b" (just b if a is empty or b is absolute). */
char *data_join_path(const char *a, const char *b);
/* The directory part of path ("." if none), malloc'ed. */
char *data_dirname(const char *path);

#endif
