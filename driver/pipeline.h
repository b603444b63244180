/* pipeline.h — capc's whole path from a module the frontend built to cap.so, in one function
 * (pipeline.c): the IR passes, then code generation. */
#ifndef CAPC_PIPELINE_H
#define CAPC_PIPELINE_H

#include "codegen.h"
#include "passes.h"

/* How far to go. */
typedef enum {
    PIPELINE_IR,      /* the IR passes only (shapes, training, fuse) */
    PIPELINE_KERNELS, /* and code generation up to rendered kernels (no files but dumps) */
    PIPELINE_LIBRARY, /* and cap.so */
} PipelineGoal;

/* What code generation made of each entry point (PIPELINE_KERNELS and further). */
typedef struct PipelineReport {
    int n_entries;
    EntryStats *entries;  /* per function of the module, in order */
    int *unfused_kernels; /* per function: the kernels it would run with --no-fuse; -1 for an
                             entry point fusion added (`fold`) */
} PipelineReport;

typedef struct PipelineOptions {
    PassOptions passes;      /* fusion switches */
    const char *dump_dir;    /* NULL: no dumps */
    int verbose;             /* each stage's name and time on stderr */
    bool verify_each;        /* the IR verifier after every IR stage, not only the last one
                                (always so in builds without NDEBUG: the tests') */
    PipelineGoal goal;
    PackageOptions package;  /* PIPELINE_LIBRARY: the output and its targets */
    PipelineReport *report;  /* filled when not NULL; free with pipeline_report_free */
} PipelineOptions;

/* Runs every stage up to opts->goal (opts NULL: the IR passes with the defaults), verifying
 * after each one (the IR after the last IR stage only, unless opts->verify_each): invalid IR
 * or an invalid kernel or memory plan after a stage is a bug in that stage, and the message
 * says which. With a dump directory it writes what each stage
 * left: NN-STAGE.ir and .dot (IR stages), NN-memplan.txt, NN-kernels.c and NN-kernels.cu.
 * Returns 0, or -1 with d filled. */
int pipeline_run(Module *m, const PipelineOptions *opts, Diag *d);
void pipeline_report_free(PipelineReport *r);

/* Calls each(NAME, ctx) for every file name a run with opts writes into opts->dump_dir
 * ("00-frontend.ir", ...; none without a dump directory), so that the caller can refuse a dump
 * that would overwrite one of its inputs before anything runs. Stops at and returns the first
 * non-zero result of each; 0 when all returned 0. */
int pipeline_dump_files(const PipelineOptions *opts, int (*each)(const char *name, void *ctx),
                        void *ctx);

/* Writes DIR/NAME.ir and DIR/NAME.dot; creates DIR if needed. Returns 0 or -1 with d. */
int dump_module(const Module *m, const char *dir, const char *stem, Diag *d);

#endif
