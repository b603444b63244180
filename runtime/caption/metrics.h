/* metrics.h — caption metrics as the COCO caption evaluation (pycocoevalcap) computes them:
 * corpus BLEU-1..4 ("closest" reference length, no smoothing) and CIDEr-D (n = 1..4,
 * sigma 6, document frequencies from the evaluated references); a PTB-like tokenizer; COCO
 * results/captions files; the `cap score` command. docs/metrics.md has the exact formulas,
 * the constants and what differs from pycocoevalcap (its Java PTB tokenizer).
 *
 * Sentences given to the metric functions are already tokenized: tokens separated by
 * whitespace (pycocoevalcap's str.split()); case and every character are significant.
 * Nothing here keeps state between calls; outputs are owned by the caller.
 */
#ifndef CAP_METRICS_H
#define CAP_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "cap.h"

#define CAP_BLEU_N 4
#define CAP_BLEU_TINY 1e-15 /* added to match counts (so 0 matches give ~0, not 0/0) */
#define CAP_BLEU_SMALL 1e-9 /* added to guess counts and the reference length */
#define CAP_CIDER_N 4
#define CAP_CIDER_SIGMA 6.0

/* One evaluated image: its candidate and its references (n_refs >= 1), all tokenized. */
typedef struct CapScoreItem {
    const char *candidate;
    const char *const *refs;
    int n_refs;
} CapScoreItem;

/* Corpus totals BLEU is computed from (pycocoevalcap prints them with verbose=1). */
typedef struct CapBleuCounts {
    double testlen;                 /* candidate tokens, summed */
    double reflen;                  /* "closest" reference length, summed */
    double guess[CAP_BLEU_N];       /* candidate n-grams (n = 1..4), summed */
    double correct[CAP_BLEU_N];     /* clipped matches, summed */
} CapBleuCounts;

/* BLEU-1..4 from corpus totals: bleu[n-1] = (prod_{k<n} (correct_k + tiny) /
 * (guess_k + small))^(1/n), times exp(1 - 1/r) when r = (testlen + tiny) / (reflen + small)
 * is below 1. */
void cap_bleu_from_counts(const CapBleuCounts *c, double bleu[CAP_BLEU_N]);

/* Corpus BLEU over n items; counts (may be NULL) receives the totals. Fails on n < 1, an
 * item without references or a NULL sentence. */
CapStatus cap_bleu(const CapScoreItem *items, int n, double bleu[CAP_BLEU_N],
                   CapBleuCounts *counts, char *err, size_t err_size);

/* CIDEr-D over n items: *mean is the corpus score (mean over images), per_image (may be NULL)
 * receives n per-image scores. Same failures as cap_bleu. */
CapStatus cap_cider_d(const CapScoreItem *items, int n, double *mean, double *per_image,
                      char *err, size_t err_size);

/* The PTB-like tokenizer (docs/metrics.md): lowercase, split punctuation and clitics, drop
 * the tokens pycocoevalcap drops. Returns a malloc'ed string of tokens joined by single
 * spaces (free() it), or NULL when out of memory. */
char *cap_ptb_tokenize(const char *text);

/* ---- COCO files ----------------------------------------------------------------------- */

/* A results file ([{"image_id", "caption"}]) written atomically (temporary file + rename). */
CapStatus cap_write_coco_results(const char *path, const int64_t *image_ids,
                                 const char *const *captions, int n, char *err,
                                 size_t err_size);

/* Raw (untokenized) captions of the results file at results_path matched with the
 * references of the COCO captions file at refs_path, in results order. */
typedef struct CapScoreSet {
    int n;
    int64_t *image_ids;
    char **candidates;   /* n strings */
    char ***refs;        /* n arrays of n_refs[i] strings */
    int *n_refs;
} CapScoreSet;

/* Errors name the file and the record: malformed JSON, a record without an integer
 * image_id or a string caption, a result for an image the captions file lacks or that has
 * no captions, two results for one image, an empty results list. */
CapStatus cap_score_set_load(const char *results_path, const char *refs_path,
                             CapScoreSet *out, char *err, size_t err_size);
void cap_score_set_free(CapScoreSet *s);

#endif /* CAP_METRICS_H */
