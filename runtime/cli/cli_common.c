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

int cap_cli_session_options(const OptResult *r, CapBackendKind *kind, int *threads) {
    const char *backend = opt_str(r, "--backend");
    long long n = 0;
    char err[512];
    *kind = CAP_BACKEND_AUTO;
    *threads = 0;
    if (backend && cap_backend_parse(backend, kind))
        return opt_fail(r->cmd, "unknown backend '%s' (auto, cpu or cuda)", backend);
    if (opt_int(r, "--threads", 0, 1, 4096, &n, err, sizeof err)) return opt_fail(r->cmd, "%s", err);
    *threads = (int)n;
    return 0;
}

int cap_cli_open_session(const OptResult *r, const CapModel *m, CapSession **s) {
    CapBackendKind kind;
    int threads;
    char err[1024];
    *s = NULL;
    int rc = cap_cli_session_options(r, &kind, &threads);
    if (rc) return rc;
    if (cap_session_new(m, kind, s, err, sizeof err)) {
        fprintf(stderr, "cap: error: %s\n", err);
        return 1;
    }
    cap_session_set_threads(*s, threads);
    cap_cli_backend_note(*s, opt_get(r, "--verbose")->count);
    return 0;
}

void cap_cli_backend_note(const CapSession *s, int verbose) {
    const char *note = cap_session_backend_note(s);
    if (*note && (verbose || !strstr(note, "auto: using cpu"))) fprintf(stderr, "cap: %s\n", note);
}
