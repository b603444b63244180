/* cli_common.c — the options and notes every `cap` command shares (cli_common.h). */
#include "cli_common.h"

#include <stdio.h>
#include <string.h>

#define VERBOSE_OPTION                                                                        \
    {"--verbose", 'v', OPT_COUNTED, 0, NULL, "also say why --backend auto chose the cpu", NULL}

const OptSpec CAP_SESSION_OPTIONS[] = {
    {"--backend", 0, OPT_VALUE, 0, "auto|cpu|cuda",
     "where to run (default auto: cuda if a GPU is usable and cap.so has an image for it)",
     NULL},
    {"--threads", 0, OPT_VALUE, 0, "N",
     "CPU threads, 1..4096 (default: OMP_NUM_THREADS, else every CPU this process may use)",
     NULL},
    VERBOSE_OPTION,
    OPT_END,
};

const OptSpec CAP_VERBOSE_OPTIONS[] = {
    VERBOSE_OPTION,
    OPT_END,
};

void cap_cli_backend_note(const CapSession *s, int verbose) {
    const char *note = cap_session_backend_note(s);
    if (*note && (verbose || !strstr(note, "auto: using cpu"))) fprintf(stderr, "cap: %s\n", note);
}
