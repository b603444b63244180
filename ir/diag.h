/* diag.h — filling a Diag (ir.h), for every part of the compiler, and printing user-facing
 * errors the way compilers do:
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

/* No message, no location. */
void diag_clear(Diag *d);

/* Sets d's message only; the location is left as it is. */
void diag_msg(Diag *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void diag_vmsg(Diag *d, const char *fmt, va_list ap);

/* "internal error: MESSAGE (this is a bug in capc)" at loc: what capc reports when it finds
 * its own mistake. Returns -1. */
int diag_internal(Diag *d, SrcLoc loc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* "cannot WHAT 'PATH': strerror(err)", no location; a path too long for the message is cut
 * (after 900 bytes) so that the reason always shows. Returns -1. */
int diag_path_error(Diag *d, const char *what, const char *path, int err);
/* mkdir -p dir (support/files.h); a failure is "cannot create directory 'PATH': REASON" in d,
 * naming the part that could not be made. Returns 0 or -1. */
int diag_make_dirs(Diag *d, const char *dir);

/* Same as diag_set, at a location in a file whose name the caller does not keep: the name is
 * copied into d->file and loc.file is DIAG_FILE_IN_DIAG, which diag_print reads as d->file. */
extern const char DIAG_FILE_IN_DIAG[];
void diag_set_in_file(Diag *d, const char *file, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Prints "FILE:LINE:COL: error: MSG" (or "capc: error: MSG" without a location). If the file
 * can be read, the offending line and a caret under the column follow. */
void diag_print(FILE *out, const Diag *d);

#endif
