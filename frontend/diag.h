/* diag.h — printing user-facing errors the way compilers do:
 *   FILE:LINE:COL: error: MESSAGE
 *     the source line
 *         ^
 */
#ifndef CAPC_DIAG_H
#define CAPC_DIAG_H

#include <stdarg.h>
#include <stdio.h>

#include "ir.h"

/* Fills d (message and location). */
void diag_set(Diag *d, SrcLoc loc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void diag_vset(Diag *d, SrcLoc loc, const char *fmt, va_list ap);

/* Same as diag_set, at a location in a file whose name the caller does not keep: the name is
 * copied into d->file and loc.file is DIAG_FILE_IN_DIAG, which diag_print reads as d->file. */
extern const char DIAG_FILE_IN_DIAG[];
void diag_set_in_file(Diag *d, const char *file, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Prints "FILE:LINE:COL: error: MSG" (or "capc: error: MSG" without a location). If the file
 * can be read, the offending line and a caret under the column follow. */
void diag_print(FILE *out, const Diag *d);

#endif
