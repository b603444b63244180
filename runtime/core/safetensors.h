/* safetensors.h — reading and writing the safetensors format (checkpoints, golden values).
 *
 * The format: 8 bytes little-endian header length N; N bytes of JSON, an object mapping each
 * tensor name to {"dtype": "F32", "shape": [2,3], "data_offsets": [begin, end]} plus an
 * optional "__metadata__" object of string -> string; then the tensors' little-endian bytes.
 * Offsets are relative to the first byte after the header.
 *
 * The reader validates everything before handing out a tensor (st_parse): header length at
 * most ST_MAX_HEADER bytes and inside the file, the header a JSON object with only known keys,
 * no duplicate names, known dtypes, shapes of non-negative integers, numel x dtype size equal
 * to the byte range, byte ranges that tile the data exactly (sorted by offset, the first
 * starting at 0, each starting where the previous ends, the last ending at the end of the
 * file: no gaps, no overlap, no trailing bytes). Every error message names the file and, where
 * there is one, the tensor.
 *
 * The writer writes the header in the order given (tensors contiguous in that order, header
 * padded with spaces to a multiple of 8 bytes) to a temporary file next to the target, fsyncs
 * it, renames it over the target and fsyncs the directory: a crash leaves the old file or the
 * new one, never half of one.
 */
#ifndef CAPC_SAFETENSORS_H
#define CAPC_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The reference implementation's limit on the header size. */
#define ST_MAX_HEADER ((uint64_t)100000000)
#define ST_MAX_RANK 8

typedef enum {
    ST_BOOL, ST_U8, ST_I8, ST_U16, ST_I16, ST_F16, ST_BF16, ST_U32, ST_I32, ST_F32,
    ST_U64, ST_I64, ST_F64, ST_DTYPE_COUNT
} StDType;

const char *st_dtype_name(StDType dt);               /* "F32", ... */
bool st_dtype_from_name(const char *name, StDType *dt);
int st_dtype_size(StDType dt);                       /* bytes per element */

typedef struct StTensor {
    char *name;
    StDType dtype;
    int rank;
    int64_t shape[ST_MAX_RANK];
    int64_t numel;
    size_t offset, nbytes;  /* byte range in the data section */
    const uint8_t *data;    /* points into the file's buffer (little-endian, unaligned) */
} StTensor;

typedef struct StFile {
    char *path;             /* as given, for messages */
    uint8_t *buf;           /* the whole file */
    size_t size;
    StTensor *tensors;      /* in header order */
    int n;
    char **meta_keys, **meta_values; /* __metadata__ in header order */
    int n_meta;
} StFile;

/* Reads and validates path. On success fills *out (free with st_free) and returns 0; else -1
 * with err = "PATH: message" (and *out left empty). */
int st_read_file(const char *path, StFile *out, char *err, size_t err_size);
/* Same from a buffer in memory; takes ownership of buf (malloc'd) in every case. name is used
 * in messages in place of the path. */
int st_parse(uint8_t *buf, size_t size, const char *name, StFile *out, char *err,
             size_t err_size);
void st_free(StFile *f);
/* Deletes the temp files st_write_file left for path when a process died mid-write
 * ("PATH.tmp.XXXXXX", regular files only). Returns how many were removed. Call it only when
 * no other process may be saving to path. */
int st_remove_stale_temps(const char *path);

const StTensor *st_find(const StFile *f, const char *name); /* NULL if absent */
const char *st_metadata(const StFile *f, const char *key);  /* NULL if absent */
/* Converts the tensor's elements to doubles (any dtype; 64-bit integers beyond 2^53 round). */
void st_to_f64(const StTensor *t, double *out);

/* One tensor to write. data holds numel * size bytes in the dtype's little-endian layout. */
typedef struct StWriteTensor {
    const char *name;
    StDType dtype;
    int rank;
    const int64_t *shape;
    const void *data;
} StWriteTensor;

/* Encodes n doubles as dtype (little-endian) into out (n * size bytes). Floats round to
 * nearest (F16/BF16 round to nearest even); integers truncate toward zero. */
void st_from_f64(StDType dtype, const double *in, int64_t n, void *out);

/* Writes the tensors (and metadata pairs, may be 0) atomically to path: a temp file
 * "PATH.tmp.XXXXXX" in the same directory, fsynced, renamed over path. A file rewritten keeps
 * its mode; a new one gets 0666 less the umask. Returns 0 or -1 with err = "PATH: message". */
int st_write_file(const char *path, const StWriteTensor *tensors, int n,
                  const char *const *meta_keys, const char *const *meta_values, int n_meta,
                  char *err, size_t err_size);

#endif
