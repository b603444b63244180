/* cli_score.c — `cap score RESULTS.json --refs CAPTIONS.json [--tokenizer ptb|none]`: scores
 * a COCO results file (read by runtime/caption/results.c) with BLEU and CIDEr-D
 * (docs/metrics.md). It returns its exit status and never exits.
 */
#include "cap_internal.h"
#include "cli_score.h"
#include "metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SCORE_ERR 1024

/* ---- the command ------------------------------------------------------------------------- */

static const char SCORE_USAGE[] =
    "usage: cap score RESULTS.json --refs CAPTIONS.json [--tokenizer ptb|none]\n"
    "  scores a COCO results file ([{\"image_id\", \"caption\"}]) against a COCO captions\n"
    "  file: BLEU-1..4 and CIDEr-D as pycocoevalcap computes them (docs/metrics.md).\n"
    "  --tokenizer ptb (default) lowercases and strips punctuation like pycocoevalcap's\n"
    "  PTB tokenizer; none scores the captions split on whitespace, as they are.\n";

static int score_usage_error(const char *msg, const char *arg) {
    fprintf(stderr, "cap: error: ");
    fprintf(stderr, msg, arg);
    fprintf(stderr, " (see cap score --help)\n");
    return 2;
}

typedef struct ScoreArgs {
    const char *results, *refs, *tokenizer;
} ScoreArgs;

/* 0 to run, -1 after --help, else the exit status of a usage error. */
static int parse_score_args(int argc, char **argv, ScoreArgs *a) {
    memset(a, 0, sizeof *a);
    a->tokenizer = "ptb";
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (strcmp(s, "-h") == 0 || strcmp(s, "--help") == 0) {
            fputs(SCORE_USAGE, stdout);
            return -1;
        }
        const char **slot = NULL;
        size_t k = 0;
        if (strncmp(s, "--refs", 6) == 0 && (s[6] == 0 || s[6] == '=')) slot = &a->refs, k = 6;
        else if (strncmp(s, "--tokenizer", 11) == 0 && (s[11] == 0 || s[11] == '='))
            slot = &a->tokenizer, k = 11;
        if (slot) {
            if (s[k] == '=') *slot = s + k + 1;
            else if (i + 1 < argc) *slot = argv[++i];
            else return score_usage_error("option '%s' needs a value", s);
        } else if (s[0] == '-' && s[1]) {
            return score_usage_error("unknown option '%s'", s);
        } else if (!a->results) {
            a->results = s;
        } else {
            return score_usage_error("unexpected argument '%s'", s);
        }
    }
    if (!a->results) return score_usage_error("cap score needs a RESULTS.json%s", "");
    if (!a->refs) return score_usage_error("cap score needs --refs CAPTIONS.json%s", "");
    if (strcmp(a->tokenizer, "ptb") && strcmp(a->tokenizer, "none"))
        return score_usage_error("--tokenizer is ptb or none, not '%s'", a->tokenizer);
    return 0;
}

/* Replaces every caption of s by its PTB-like tokenization. */
static CapStatus tokenize_set(CapScoreSet *s, char *err, size_t err_size) {
    for (int i = 0; i < s->n; i++)
        for (int r = -1; r < s->n_refs[i]; r++) {
            char **slot = r < 0 ? &s->candidates[i] : &s->refs[i][r];
            char *t = cap_ptb_tokenize(*slot);
            if (!t) return cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
            free(*slot);
            *slot = t;
        }
    return CAP_OK;
}

static CapStatus score_set(const CapScoreSet *s, double bleu[CAP_BLEU_N], double *cider,
                           char *err, size_t err_size) {
    CapScoreItem *items = calloc(s->n > 0 ? (size_t)s->n : 1, sizeof *items);
    if (!items) return cap_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    for (int i = 0; i < s->n; i++)
        items[i] = (CapScoreItem){s->candidates[i], (const char *const *)s->refs[i], s->n_refs[i]};
    CapStatus st = cap_bleu(items, s->n, bleu, NULL, err, err_size);
    if (!st) st = cap_cider_d(items, s->n, cider, NULL, err, err_size);
    free(items);
    return st;
}

int cap_cmd_score(int argc, char **argv) {
    ScoreArgs a;
    int rc = parse_score_args(argc, argv, &a);
    if (rc) return rc < 0 ? 0 : rc;
    char err[SCORE_ERR];
    CapScoreSet s;
    double bleu[CAP_BLEU_N], cider = 0;
    CapStatus st = cap_score_set_load(a.results, a.refs, &s, err, sizeof err);
    if (!st && strcmp(a.tokenizer, "ptb") == 0) st = tokenize_set(&s, err, sizeof err);
    if (!st) st = score_set(&s, bleu, &cider, err, sizeof err);
    cap_score_set_free(&s);
    if (st) {
        fprintf(stderr, "cap: error: %s\n", err);
        return 1;
    }
    for (int n = 0; n < CAP_BLEU_N; n++) printf("BLEU-%d: %.12g\n", n + 1, bleu[n]);
    printf("CIDEr-D: %.12g\n", cider);
    return 0;
}
