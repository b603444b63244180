/* passes.h — the pass pipeline. Each pass lives in its own file whose top comment says what
 * it does and what it keeps true. pipeline.c lists the passes in order; with a dump directory
 * it writes the IR after each stage as NN-NAME.ir and NN-NAME.dot. */
#ifndef CAPC_PASSES_H
#define CAPC_PASSES_H

#include "ir.h"

/* A pass transforms m in place. Returns 0, or -1 with d filled (d->loc set when the problem
 * is in the user's model file). */
typedef int (*PassFn)(Module *m, Diag *d);

typedef struct Pass {
    const char *name; /* used in dump file names: 01-shapes.ir */
    PassFn run;
} Pass;

/* Shape inference: fills every value's dtype and shape from the op table's shape rules,
 * reporting the first mismatch at the op's model-file location. Then verifies the module
 * with shapes required. */
int pass_infer_shapes(Module *m, Diag *d);

typedef struct PipelineOptions {
    const char *dump_dir; /* NULL: no dumps */
    int verbose;          /* print each stage's name and time to stderr */
} PipelineOptions;

/* Writes the "00-frontend" dump (if asked) and runs every pass in order, verifying between
 * passes. Returns 0, or -1 with d filled. */
int pipeline_run(Module *m, const PipelineOptions *opts, Diag *d);

/* Writes DIR/NAME.ir and DIR/NAME.dot; creates DIR if needed. Returns 0 or -1 with d. */
int dump_module(const Module *m, const char *dir, const char *stem, Diag *d);

#endif
