/* cap.h — the public C API of libcaprt: load a cap.so that capc compiled, make a session of
 * it on a backend (cpu, or cuda: docs/gpu.md), fill its state (init, weights files,
 * checkpoints), feed batches and run its entry points (train_step, eval_loss, ...), and run a
 * whole training loop. docs/api.md describes it with examples (C and Python ctypes).
 *
 * Conventions:
 * - Every function that can fail returns a CapStatus (0 = CAP_OK) and writes a one-line,
 *   human-readable message into the caller's buffer `err` of `err_size` bytes (may be NULL/0).
 *   Nothing in the library exits or prints to stderr on its own.
 * - Ownership: an object returned through an `out` pointer belongs to the caller, who frees
 *   it with the matching *_free / *_close function (those accept NULL). A CapModel must
 *   outlive every session made from it; a session must outlive every batch used with it
 *   only while running. Pointers returned by accessors (names, infos) point into cap.so or
 *   the object and stay valid as long as that object.
 * - Tensor data crossing the API is host memory in native layout (little-endian f32 / i32,
 *   row-major, contiguous), sized exactly as the CapTensorInfo says.
 */
#ifndef CAP_H
#define CAP_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "cap_artifact.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum CapStatus {
    CAP_OK = 0,
    CAP_E_ARG = 1,      /* bad argument: unknown entry, NULL pointer, bad option */
    CAP_E_IO = 2,       /* a file could not be read or written */
    CAP_E_FORMAT = 3,   /* a file or cap.so is malformed */
    CAP_E_VERSION = 4,  /* cap.so has another artifact version */
    CAP_E_MISMATCH = 5, /* a tensor's name, shape or dtype differs from what was compiled */
    CAP_E_BACKEND = 6,  /* the backend is not usable (no CUDA driver, no cpu kernels) */
    CAP_E_NOMEM = 7,
    CAP_E_UNSUPPORTED = 8, /* cap.so lacks the entry point the request needs */
    CAP_E_NONFINITE = 9,   /* a training step's loss or gradient norm was NaN or infinite */
} CapStatus;

const char *cap_status_name(CapStatus s); /* "ok", "bad argument", ... (static) */

/* ---- models (a loaded cap.so) ------------------------------------------------------------- */

typedef struct CapModel CapModel;

/* dlopens path, finds `cap_artifact`, checks its version and that every entry's steps refer
 * to existing kernels, states, inputs and outputs within their sizes. */
CapStatus cap_model_open(const char *path, CapModel **out, char *err, size_t err_size);
void cap_model_close(CapModel *m);

const CapArtifact *cap_model_artifact(const CapModel *m);
const char *cap_model_path(const CapModel *m);
/* Index of the entry / state of that name, or -1. */
int cap_model_find_entry(const CapModel *m, const char *name);
int cap_model_find_state(const CapModel *m, const char *name);

typedef struct CapCounts {
    int64_t params;          /* elements of all WEIGHT states */
    int64_t trainable;       /* elements of trainable WEIGHT states */
    int64_t buffer_elems;    /* elements of BUFFER states */
    int64_t optim_elems;     /* elements of OPTIM states */
    int64_t derived_elems;   /* elements of DERIVED states (frozen BatchNorms folded) */
    int n_weights, n_trainable, n_buffers, n_optim, n_derived;
    int64_t max_arena_bytes; /* max over entries: the arena a session allocates */
    int64_t state_bytes;     /* bytes of all state tensors */
    int n_hparams;           /* HPARAM states: hyperparameters (learning rates), one f32 each */
} CapCounts;
void cap_model_counts(const CapModel *m, CapCounts *out);

/* Integer value of config variable `name` in the compiled config_json; 0 if found, else -1. */
int cap_model_config_int(const CapModel *m, const char *name, int64_t *value);

/* Bytes of one tensor (numel x 4: both dtypes are 4 bytes). */
size_t cap_tensor_bytes(const CapTensorInfo *t);
/* "f32[2,3,128,128]" into buf. Returns buf. */
char *cap_tensor_type_str(const CapTensorInfo *t, char *buf, size_t size);

/* ---- backends ------------------------------------------------------------------------------ */

typedef enum CapBackendKind { CAP_BACKEND_AUTO = 0, CAP_BACKEND_CPU = 1, CAP_BACKEND_CUDA = 2 }
    CapBackendKind;

/* Parses "auto" | "cpu" | "cuda". 0 on success, -1 otherwise. */
int cap_backend_parse(const char *name, CapBackendKind *out);
/* Whether a backend could run here: CAP_OK, or CAP_E_BACKEND with the reason in why
 * ("no usable CUDA driver: libcuda.so.1: cannot open shared object file"). */
CapStatus cap_backend_probe(CapBackendKind kind, char *why, size_t why_size);

/* ---- sessions (a model instance on a backend: state + arena) ------------------------------ */

typedef struct CapSession CapSession;

/* Allocates every state tensor (zero-filled) and one arena (max over entries). With
 * CAP_BACKEND_AUTO the runtime picks the best usable backend (cuda when a GPU is usable and
 * the library has an image for it, else cpu) and
 * cap_session_backend_note says why. */
CapStatus cap_session_new(const CapModel *m, CapBackendKind kind, CapSession **out, char *err,
                          size_t err_size);
void cap_session_free(CapSession *s);
/* How many threads the session's CPU kernels use from now on; n <= 0 restores the default:
 * OMP_NUM_THREADS when set, else the CPUs this process may run on (docs/api.md, "Threads").
 * Returns the number now in effect. Results do not depend on it bit for bit: the order of
 * float sums split over threads does (docs/training.md, "Reproducibility"). */
int cap_session_set_threads(CapSession *s, int n);
const CapModel *cap_session_model(const CapSession *s);
const char *cap_session_backend_name(const CapSession *s); /* "cpu" */
/* One line about how the backend was chosen ("auto: using cpu (cuda: no usable CUDA driver)"),
 * or "" when it was asked for by name. */
const char *cap_session_backend_note(const CapSession *s);

/* Fills every state tensor from its initializer (runtime/core/init.c: PyTorch's defaults; optimizer
 * state and integer state start at zero). Random numbers come from Philox4x32-10 keyed by
 * (seed, state index): the result does not depend on order or on the backend. */
CapStatus cap_session_init(CapSession *s, uint32_t seed, char *err, size_t err_size);

/* Copies state tensor `index` to/from host memory of cap_tensor_bytes(info) bytes. */
CapStatus cap_session_read_state(const CapSession *s, int index, void *dst, char *err,
                                 size_t err_size);
CapStatus cap_session_write_state(CapSession *s, int index, const void *src, char *err,
                                  size_t err_size);

/* Runs entry `entry` once. inputs[i] points to the entry's input i, outputs[i] to room for
 * output i (host memory, sizes as in the entry's infos). Outputs that are new values of a state
 * ("@X", output_state[i] >= 0) are written into the state in place; their outputs[i] may be
 * NULL and is not written. outputs may be NULL when every output is such a state update. */
CapStatus cap_session_run(CapSession *s, const char *entry, const void *const *inputs,
                          void *const *outputs, char *err, size_t err_size);

/* ---- weights and checkpoints (runtime/core/checkpoint.c) ------------------------------------- */

/* Writes WEIGHT and BUFFER states under their names (F32/I32), atomically. */
CapStatus cap_save_weights(const CapSession *s, const char *path, char *err, size_t err_size);
/* Loads WEIGHT and BUFFER states by name. Accepted: F32 (and F64, rounded to nearest f32) for
 * f32 tensors, I32 (and I64 in range) for i32 ones; keys ending in "num_batches_tracked" and
 * optimizer states of this model are ignored; "P.weight" where the model has "P.bias" but no
 * "P.weight" (a tied output layer, e.g. decoder.out.weight) is accepted if it equals a weight
 * of the model, else an error. A missing tensor, a shape or dtype mismatch, or any other extra
 * key is an error naming the tensor (and both shapes). Nothing is changed on error. */
CapStatus cap_load_weights(CapSession *s, const char *path, char *err, size_t err_size);

/* Training position stored with a checkpoint. */
typedef struct CapTrainMeta {
    int64_t step;          /* optimizer updates done */
    uint32_t seed;         /* the run's seed (dropout streams) */
    int64_t data_position; /* index of the next batch in the run's batch sequence */
    int64_t n_batches;     /* number of batch files of the run (checked on resume) */
    int64_t skipped;       /* non-finite steps skipped by this cap_train call (not saved) */
} CapTrainMeta;

/* Full training state: every state tensor (optimizer moments and step included) plus meta,
 * written to a temp file, fsynced and renamed over path. */
CapStatus cap_save_checkpoint(const CapSession *s, const char *path, const CapTrainMeta *meta,
                              char *err, size_t err_size);
/* Loads a file written by cap_save_checkpoint for the same model (every state must be there
 * with its compiled shape, every tensor of the file must be the model's, as for
 * cap_load_weights, and the `step` tensor must equal the metadata's step); fills *meta. */
CapStatus cap_load_checkpoint(CapSession *s, const char *path, CapTrainMeta *meta, char *err,
                              size_t err_size);
/* What cap_import_weights did: file tensors written into the model, the model's weights and
 * buffers the file did not have (they keep their values: initialize first), and the file's
 * tensors the model has no use for (a classifier head, num_batches_tracked). */
typedef struct CapImportReport {
    int n_loaded;
    char **random; /* model state names, in model order */
    int n_random;
    char **unused; /* file tensor names, in file order */
    int n_unused;
} CapImportReport;
void cap_import_report_free(CapImportReport *r);

/* Fills the model's weights and buffers from a safetensors file of another layout, e.g. a
 * torchvision or timm ResNet (`conv1.weight`, `layer1.0.bn1.running_mean`, ...): file tensor
 * N goes into state prefix+N when the model has it. A shape mismatch is an error naming the
 * tensor, and nothing is written then (all or nothing). F32/F64/F16/BF16 are converted. */
CapStatus cap_import_weights(CapSession *s, const char *path, const char *prefix,
                             CapImportReport *report, char *err, size_t err_size);

/* Config values (the compiled -D settings) of checkpoint `path` that differ from m's, as
 * "lr 0.001 -> 0.0001, batch 16 -> 8" in out; returns how many (0 also when unreadable). */
int cap_checkpoint_config_changes(const CapModel *m, const char *path, char *out, size_t size);

/* cap_save_checkpoint plus n extra metadata pairs (keys must not repeat the standard ones):
 * what a dataset run stores besides the position (data_epoch, data_index, vocab). */
CapStatus cap_save_checkpoint_extra(const CapSession *s, const char *path,
                                    const CapTrainMeta *meta, const char *const *keys,
                                    const char *const *values, int n, char *err,
                                    size_t err_size);
/* Metadata value `key` of a safetensors file (checkpoint or weights): *value is a malloc'ed
 * copy (free() it), or NULL when the file has no such key. */
CapStatus cap_file_metadata(const char *path, const char *key, char **value, char *err,
                            size_t err_size);

/* ---- batches (runtime/core/batch.c) ---------------------------------------------------------- */

typedef struct CapBatch CapBatch;

/* Reads a batch file (safetensors with the entry's data inputs by name, e.g. `image` F32
 * [B,3,H,W], `caption` I32 [B,T]; I64 captions are converted) and checks every tensor against
 * what `entry` was compiled for. On a size mismatch the message says what was compiled and the
 * -D to recompile with. The input named "rng" is not read from the file: it is filled per run
 * by cap_session_run_batch. */
CapStatus cap_batch_open(const CapModel *m, const char *entry, const char *path,
                         CapBatch **out, char *err, size_t err_size);
void cap_batch_free(CapBatch *b);
int64_t cap_batch_size(const CapBatch *b); /* dim 0 of the first data input */

/* Runs entry with the batch's tensors as inputs and rng = (seed, step). */
CapStatus cap_session_run_batch(CapSession *s, const char *entry, const CapBatch *b,
                                uint32_t seed, uint32_t step, void *const *outputs, char *err,
                                size_t err_size);

/* Convenience for the common case: runs `entry` on the batch and returns its output named
 * "loss" in *loss (other non-state outputs are computed and dropped). */
CapStatus cap_session_loss(CapSession *s, const char *entry, const CapBatch *b, uint32_t seed,
                           uint32_t step, double *loss, char *err, size_t err_size);

/* ---- training (runtime/core/trainer.c) ------------------------------------------------------- */

/* What cap_train does with a step whose loss or gradient norm is NaN or infinite. Either way
 * the step changed nothing: train_step only writes its state when both are finite. */
typedef enum {
    CAP_NONFINITE_STOP = 0, /* save the checkpoint (the state before that batch, the position
                               after it) and fail with CAP_E_NONFINITE naming the first
                               non-finite tensor: the default */
    CAP_NONFINITE_SKIP = 1, /* warn, count it in meta->skipped, go on with the next batch */
} CapNonFinite;

/* A duration: "90" or "90s" seconds, "5m" minutes, "2h" or "1.5h" hours (a command line's
 * --time-limit). Returns 0 with *seconds > 0, or -1. */
int cap_parse_duration(const char *text, double *seconds);

/* "stop" or "skip" (a command line's --on-nonfinite); NULL: stop. 0, or -1 if unknown. */
int cap_nonfinite_parse(const char *name, CapNonFinite *out);

/* Data-parallel training (docs/distributed.md): `size` processes train together, each on its
 * own shard of every batch. allreduce_sum sums n floats elementwise over all the processes,
 * in place; every process calls it at the same point with the same n. Only rank 0 should be
 * given out_path, log_path and progress. */
typedef struct CapComm {
    int rank, size;
    void *ctx;
    CapStatus (*allreduce_sum)(void *ctx, float *data, int64_t n, char *err, size_t err_size);
} CapComm;

typedef struct CapTrainOptions {
    const char *const *batch_paths; /* the run's batch files, used in this order, cycling */
    int n_batches;
    int64_t steps;            /* stop when the step count reaches this (total, incl. resumed) */
    double max_seconds;       /* > 0: also stop after the first step that ends this many seconds
                                 into this run (a checkpoint is still written) */
    uint32_t seed;
    const char *out_path;     /* checkpoint written at the end (and every save_every steps) */
    int64_t save_every;       /* 0: only at the end */
    const char *log_path;     /* metrics.jsonl, or NULL; appended to when resuming */
    int64_t print_every;      /* progress line every N steps (and the first and last); 0: never */
    FILE *progress;           /* where progress lines go (NULL: nowhere) */
    /* Called after every step with its metrics (may be NULL). Return nonzero to stop early
     * (a checkpoint is still written). */
    int (*on_step)(void *user, int64_t step, double loss, double lr, double grad_norm);
    void *user;
    /* Instead of batch files (batch_paths unused when next_batch is set): next_batch points
     * inputs[i] at host data for every train_step input i but `rng` (its slot is ignored) and
     * sets *samples to the batch's size; the pointers stay valid until the next call.
     * checkpoint_meta (may be NULL) gives extra metadata pairs for the position after the
     * last batch handed out (at most max; returns how many), saved with every checkpoint. */
    CapStatus (*next_batch)(void *source, const void **inputs, int64_t *samples, char *err,
                            size_t err_size);
    /* The entry each step runs (NULL: train_step); one with train_step's outputs, fed by
     * next_batch (libcaprt's data training runs train_step_cached from cached features). */
    const char *entry;
    int (*checkpoint_meta)(void *source, const char **keys, const char **values, int max);
    void *source;
    CapNonFinite on_nonfinite;
    /* Every eval_every steps (> 0; and never when evaluate is NULL) evaluate(source, step, ...)
     * fills up to max named metrics (validation loss, scores), which go into that step's log
     * line and a progress line; it returns how many, or -1 with err (training stops). */
    int64_t eval_every;
    int (*evaluate)(void *source, int64_t step, const char **keys, double *values, int max,
                    char *err, size_t err_size);
    /* Non-NULL: a data-parallel run (needs next_batch). Each step runs train_grads on this
     * process's batch, averages loss and gradients over the processes with one allreduce,
     * then runs apply_grads, so every process makes the same update. loss_weight (may be
     * NULL: 1) gives the number of terms the last batch's loss is a mean of (the caption
     * tokens that are not padding), so the average is the mean over the global batch. */
    const CapComm *comm;
    double (*loss_weight)(void *source);
} CapTrainOptions;

/* Runs train_step from the session's current state and position *meta (zero it for a fresh
 * run; cap_load_checkpoint fills it for a resume) until opts->steps, then saves a checkpoint.
 * The rng input of step t (0-based count of updates done before it) is (seed, t) and its batch
 * is batch_paths[meta->data_position % n_batches]: a resumed run repeats the uninterrupted
 * one bit for bit on the cpu backend. meta is updated. */
CapStatus cap_train(CapSession *s, const CapTrainOptions *opts, CapTrainMeta *meta, char *err,
                    size_t err_size);

#ifdef __cplusplus
}
#endif

#endif
