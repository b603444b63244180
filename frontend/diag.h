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

/* Prints "FILE:LINE:COL: error: MSG" (or "capc: error: MSG" without a location). If the file
 * can be read, the offending line and a caret under the column follow. */
void diag_print(FILE *out, const Diag *d);

#endif
