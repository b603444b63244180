/* frontend.h — model JSON (docs/model-format.md) -> IR module with a `forward` function.
 *
 * The frontend evaluates config expressions (with -D overrides), expands blocks, scopes and
 * repeats, declares parameters under their PyTorch state_dict names, and emits ops with
 * unknown result shapes: the shape pass (passes/shapes.c) infers them. Every op and param
 * carries the SrcLoc of the JSON node it came from, so later errors point into the file.
 */
#ifndef CAPC_FRONTEND_H
#define CAPC_FRONTEND_H

#include "ir.h"

typedef struct ConfigOverride {
    const char *name;  /* as given after -D, before '=' */
    const char *value; /* text after '=' */
} ConfigOverride;

/* Parses a "-D name=value" argument (without the -D) into o, pointing into arg.
 * Returns 0, or -1 with d->msg set ("bad -D 'x': expected NAME=VALUE"). */
int frontend_parse_define(const char *arg, ConfigOverride *o, Diag *d);

/* Reads the model file at path and builds a module. On success returns the module (caller
 * frees with module_free). On failure returns NULL with d->msg and d->loc (file, line, col)
 * describing the first error. Never exits, never aborts on bad input. */
Module *frontend_load_file(const char *path, const ConfigOverride *overrides, int n_overrides,
                           Diag *d);
/* Same, from text in memory; filename is used in locations. */
Module *frontend_load_text(const char *text, size_t len, const char *filename,
                           const ConfigOverride *overrides, int n_overrides, Diag *d);

#endif
