/* model_eval.h — helpers shared by the whole-model gradient tests (test_autodiff.c,
 * test_golden.c, test_decode_step.c): load a model file through the frontend and the shape pass, append the
 * backward program, and run functions in the float64 reference interpreter by output name.
 * Every helper fails the current CMocka test (with the message) instead of returning errors.
 */
#ifndef CAPC_TESTS_PASSES_MODEL_EVAL_H
#define CAPC_TESTS_PASSES_MODEL_EVAL_H

#include "interp.h"
#include "ir.h"

/* Loads SOURCE_DIR/path with "-D name=value" defines ("batch=2", ...) and infers shapes. */
Module *load_model(const char *path, const char *const *defines, int n_defines);

/* The value f returns under output name `name` (fails the test if there is none). */
Value *output_value(const Function *f, const char *name);

/* Runs autodiff_append on f's output `loss_name` and adds an output "grad.<param>" for every
 * weight that gets a gradient. Returns how many did. */
int append_gradients(Function *f, const char *loss_name);

/* Index of output `name` in f->outputs, or -1. */
int output_index(const Function *f, const char *name);

/* ref_run with the store as parameter lookup; outputs malloc'd array of f->n_outputs tensors
 * (free with free_outputs). */
RefTensor *run_function(const Function *f, const RefTensor *inputs, RefStore *params);
void free_outputs(const Function *f, RefTensor *outs);

/* Small deterministic generator (splitmix64) for test data. */
typedef struct TestRng {
    uint64_t state;
} TestRng;
double rng_uniform(TestRng *r); /* [0, 1) */
int64_t rng_below(TestRng *r, int64_t n);

/* Fills store with random values for every param of m: positive running variances, norm
 * weights near 1, small biases and running means, other weights with variance 1/fan_in (so
 * activations stay O(1)). */
void random_params(const Module *m, RefStore *store, TestRng *rng);

#endif
