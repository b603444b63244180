/* cli_common.h — what every `cap` command shares (docs/cli.md): the option tables for the
 * session (--backend, --threads, -v) and for -v alone, and the backend note. */
#ifndef CLI_COMMON_H
#define CLI_COMMON_H

#include "cap.h"
#include "options.h"

/* --backend, --threads, -v/--verbose: every command that runs a cap.so. */
extern const OptSpec CAP_SESSION_OPTIONS[];
/* -v/--verbose alone: the commands without a cap.so (data, vocab, score, plot). */
extern const OptSpec CAP_VERBOSE_OPTIONS[];

/* --backend and --threads from a line parsed with CAP_SESSION_OPTIONS (threads 0: the
 * default). Returns 0, or 2 after the usage message: checked before anything is opened, so a
 * bad option is a bad command line whatever else is wrong. */
int cap_cli_session_options(const OptResult *r, CapBackendKind *kind, int *threads);
/* A session of m on those options, with the backend note; returns 0, 1 (the library's
 * message printed) or 2. */
int cap_cli_open_session(const OptResult *r, const CapModel *m, CapSession **s);

/* The backend choice on stderr: always when cuda was chosen or asked for, but `auto` falling
 * back to the cpu (the normal case on a machine without a GPU) only with -v (verbose). */
void cap_cli_backend_note(const CapSession *s, int verbose);

#endif
