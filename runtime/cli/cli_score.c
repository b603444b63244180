/* cli_score.c — `cap score RESULTS.json --refs CAPTIONS.json [--tokenizer ptb|none]`: scores
 * a COCO results file (read by runtime/caption/results.c) with BLEU and CIDEr-D
 * (docs/metrics.md). It returns its exit status and never exits.
 */
#include "cap_internal.h"
#include "cli_common.h"
#include "cli_score.h"
#include "metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SCORE_ERR 1024

/* ---- the command ------------------------------------------------------------------------- */

static const OptSpec SCORE_OPTIONS[] = {
    {"--refs", 0, OPT_VALUE, OPT_REQUIRED, "CAPTIONS.json",
     "the COCO captions file with the references", NULL},
    {"--tokenizer", 0, OPT_VALUE, 0, "ptb|none",
     "ptb (default) lowercases and strips punctuation like pycocoevalcap's PTB tokenizer; "
     "none scores the captions split on whitespace, as they are", NULL},
    OPT_END,
};

const OptCommand CAP_SCORE_COMMAND = {
    .prog = "cap score",
    .synopsis = "RESULTS.json --refs CAPTIONS.json [--tokenizer ptb|none]",
    .summary = "BLEU-1..4 and CIDEr-D of a COCO results file (no cap.so; docs/metrics.md)",
    .about = "Scores a COCO results file ([{\"image_id\", \"caption\"}]) against a COCO "
             "captions file: BLEU-1..4 and CIDEr-D as pycocoevalcap computes them "
             "(docs/metrics.md).",
    .tables = {SCORE_OPTIONS, CAP_VERBOSE_OPTIONS},
    .min_pos = 1,
    .max_pos = 1,
    .pos_missing = "cap score needs a RESULTS.json",
};

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

/* Loads, scores and prints; returns 0, or 1 after the message. */
static int score(const char *results, const char *refs, int ptb) {
    char err[SCORE_ERR];
    CapScoreSet s;
    double bleu[CAP_BLEU_N], cider = 0;
    CapStatus st = cap_score_set_load(results, refs, &s, err, sizeof err);
    if (!st && ptb) st = tokenize_set(&s, err, sizeof err);
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

static int score_command(const OptResult *o) {
    char err[SCORE_ERR];
    int tokenizer = opt_choice(o, "--tokenizer", "ptb|none", 0, err, sizeof err);
    return tokenizer < 0 ? opt_fail(o->cmd, "%s", err)
                         : score(o->pos[0], opt_str(o, "--refs"), tokenizer == 0);
}

int cap_cmd_score(int argc, char **argv) {
    return opt_run(&CAP_SCORE_COMMAND, argc, argv, score_command);
}
