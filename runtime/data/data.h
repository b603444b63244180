/* data.h — captioning datasets in memory: images (path, id, split) with their captions, read
 * from COCO captions JSON, Flickr30k (token file or Kaggle CSV) or the Karpathy split JSON,
 * chosen by a spec string `FORMAT:PATH[,IMAGE_DIR][,split=...]` (docs/data.md).
 *
 * What is an error and what is a warning (docs/data.md, "Malformed input"):
 *   errors (nothing is loaded; the message names the file and line or record):
 *     unreadable file, JSON syntax, a missing or mistyped key, broken CSV quoting, a token
 *     file line without '#N<TAB>', an unknown split name, no images left at all;
 *   warnings (counted in DataStats, the first few kept as messages):
 *     a caption for an image id that is not in images[] (skipped), an empty caption
 *     (skipped), an image without captions (dropped), bytes that are not UTF-8 (each replaced
 *     by U+FFFD), an exact repeat of an image (same file, same id: the first is kept);
 *     two different images with one id are an error (results files hold one caption per id).
 *
 * Ownership: a Dataset owns every string in it; data_free releases it all.
 */
#ifndef DATA_H
#define DATA_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "cap.h"

typedef enum DataSplit { DATA_TRAIN = 0, DATA_VAL = 1, DATA_TEST = 2, DATA_N_SPLITS = 3 } DataSplit;

typedef enum DataFormat { DATA_COCO, DATA_FLICKR30K, DATA_KARPATHY } DataFormat;

/* How images get a split when the file has none (COCO, Flickr30k). */
typedef enum DataSplitRule {
    DATA_SPLIT_HASH = 0, /* 90% train, 5% val, 5% test by a fixed hash of the image's key */
    DATA_SPLIT_ALL_TRAIN, DATA_SPLIT_ALL_VAL, DATA_SPLIT_ALL_TEST,
} DataSplitRule;

typedef struct DataImage {
    char *path;          /* image file: IMAGE_DIR/file_name (owned) */
    int64_t id;          /* COCO id, Flickr30k number from the file name, or Karpathy index */
    DataSplit split;
    int32_t first_caption; /* captions[first_caption .. first_caption + n_captions) */
    int32_t n_captions;  /* >= 1 */
} DataImage;

typedef struct DataStats {
    int64_t orphan_captions;   /* captions for image ids not in the file: skipped */
    int64_t empty_captions;    /* captions with no tokens: skipped */
    int64_t bad_utf8_captions; /* captions with invalid UTF-8 bytes replaced by U+FFFD */
    int64_t images_without_captions; /* dropped */
    int64_t duplicate_images;  /* the same image (id and file) twice: the first kept */
} DataStats;

#define DATA_MAX_WARNINGS 8

typedef struct Dataset {
    DataFormat format;
    char *source;        /* the annotations file (owned) */
    char *image_dir;     /* owned */
    DataImage *images;
    int32_t n_images;
    char **captions;     /* grouped by image, in file order within an image (owned) */
    int32_t n_captions;
    int32_t n_per_split[DATA_N_SPLITS];
    DataStats stats;
    char *warnings[DATA_MAX_WARNINGS]; /* the first warnings, "FILE:LINE: ..." (owned) */
    int n_warnings;
} Dataset;

/* Parses "coco:ann.json,imgs,split=hash" into its parts (no file access). Returns 0, or -1
 * with a message. */
typedef struct DataSpec {
    DataFormat format;
    char path[1024];
    char image_dir[1024]; /* "" when not given */
    DataSplitRule split_rule;
    int split_given;
} DataSpec;
int data_spec_parse(const char *spec, DataSpec *out, char *err, size_t err_size);

/* Loads a dataset from a spec string ("coco:...", "flickr30k:...", "karpathy:..."). */
CapStatus data_load(const char *spec, Dataset **out, char *err, size_t err_size);

/* The readers behind data_load. image_dir NULL or "" = the annotations file's directory
 * (Karpathy: see docs/data.md). */
CapStatus data_load_coco(const char *path, const char *image_dir, DataSplitRule rule,
                         Dataset **out, char *err, size_t err_size);
CapStatus data_load_flickr30k(const char *path, const char *image_dir, DataSplitRule rule,
                              Dataset **out, char *err, size_t err_size);
CapStatus data_load_karpathy(const char *path, const char *image_dir, Dataset **out,
                             char *err, size_t err_size);

void data_free(Dataset *ds);
/* Prints the dataset's warnings ("cap: warning: FILE:LINE: ...") and a count of the rest. */
void data_print_warnings(const Dataset *ds, FILE *to);

const char *data_split_name(DataSplit s);           /* "train", "val", "test" */
int data_split_parse(const char *name, DataSplit *out); /* 0 or -1; "restval" -> train */
const char *data_format_name(DataFormat f);

/* The hash split of an image key (bytes): 90% train, 5% val, 5% test, fixed for all runs. */
DataSplit data_hash_split(const char *key, size_t len);

/* Indices (into ds->images) of the images of split, in file order; *n gets the count. The
 * caller frees. NULL with *n = 0 if there are none (or out of memory: *n = -1). */
int32_t *data_split_images(const Dataset *ds, DataSplit split, int32_t *n);

#endif
