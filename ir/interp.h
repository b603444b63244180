/* interp.h — the float64 reference interpreter: the oracle every kernel is checked against.
 *
 * It evaluates one function of a module op by op with each op's RefEval from the op table,
 * holding every tensor as doubles (integer tensors as exact doubles). Simple on purpose.
 */
#ifndef CAPC_INTERP_H
#define CAPC_INTERP_H

#include "ir.h"

typedef struct RefTensor {
    DType dtype;
    Shape shape;
    double *data; /* shape_numel(&shape) elements, row-major; owned by the tensor */
} RefTensor;

/* Allocates zeroed data; returns -1 if the shape is unknown or allocation fails. */
int ref_tensor_init(RefTensor *t, DType dtype, Shape shape);
void ref_tensor_free(RefTensor *t); /* frees data; t may be reused afterwards */
int64_t ref_tensor_numel(const RefTensor *t);

/* Where the interpreter finds parameters and buffers: returns NULL if unknown. */
typedef const RefTensor *(*RefParamLookup)(void *ctx, const char *name);

/* A simple name -> tensor store, handy for tests and tools. Owns its tensors. */
typedef struct RefStore {
    char **names;
    RefTensor *tensors;
    int n, cap;
} RefStore;
void ref_store_init(RefStore *s);
void ref_store_free(RefStore *s);
/* Takes ownership of *t (t->data becomes NULL); replaces an entry of the same name. */
int ref_store_put(RefStore *s, const char *name, RefTensor *t);
const RefTensor *ref_store_get(const RefStore *s, const char *name);
RefTensor *ref_store_get_mut(RefStore *s, const char *name);
/* Adapter for RefParamLookup: ctx is a RefStore*. */
const RefTensor *ref_store_lookup(void *ctx, const char *name);

/* Runs f. inputs[i] must match f->inputs[i] in dtype and shape. On success outputs[0..n_outputs)
 * are filled (caller frees each with ref_tensor_free) and 0 is returned; on failure -1 with a
 * message naming the op and value. If all_values is not NULL it receives a malloc'd array of
 * f->n_values tensors (every intermediate; caller frees each and the array). */
int ref_run(const Function *f, const RefTensor *inputs, RefParamLookup lookup, void *ctx,
            RefTensor *outputs, RefTensor **all_values, char *err, size_t err_size);

/* Philox4x32-10 (support/philox.h): counter-based random numbers. Dropout's reference, the
 * C kernels and the CUDA kernels draw the same numbers, so masks agree bit for bit. */
#include "philox.h"
/* Dropout keep decision for one element: counter = {idx lo, idx hi, stream, step},
 * key = {seed, 0x9E3779B9}; u = (out[0] >> 8) * 2^-24; kept iff u >= p. */
bool dropout_keep(uint32_t seed, uint32_t step, uint32_t stream, uint64_t index, double p);

#endif
