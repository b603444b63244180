/* sampling.h — choosing the next caption token from logits, independent of the model:
 * temperature, top-k, top-p (nucleus) as the seed captioner does them, sampling with a
 * counter-based per-sample RNG (Philox4x32-10), greedy, and beam search with length
 * normalization driven by a step callback (so decode_step with key/value caches plugs in:
 * the callback is told each beam's parent to reorder its caches). docs/sampling.md has the
 * exact definitions.
 *
 * Logits are f32[V]; functions that filter write -INFINITY over removed tokens, in place.
 * Nothing allocates except cap_logits_top_p and cap_beam_search, which free before
 * returning.
 */
#ifndef CAP_SAMPLING_H
#define CAP_SAMPLING_H

#include <stddef.h>
#include <stdint.h>

#include "cap.h"

#define CAP_TOKEN_END 2 /* <end> in the captioner vocabularies */

/* A per-sample stream: Philox4x32-10 with key (seed, stream) and a 64-bit draw counter. */
typedef struct CapRng {
    uint32_t key[2];
    uint64_t counter;
} CapRng;

void cap_rng_init(CapRng *r, uint32_t seed, uint32_t stream);
/* Uniform in [0, 1) from 53 bits of one Philox block; advances the counter by one. */
double cap_rng_uniform(CapRng *r);

/* logits[i] /= temperature (temperature > 0; the seed divides). */
void cap_logits_temperature(float *logits, int V, float temperature);
/* Keeps the tokens whose logit is >= the k-th largest (ties at the threshold are all kept);
 * k <= 0 or k >= V keeps everything. */
void cap_logits_top_k(float *logits, int V, int k);
/* Nucleus filter: sort descending (ties by lower index first), softmax, cumulative sum;
 * remove tokens where the cumulative sum exceeds p, shifted right by one so that the token
 * crossing p and the first token are always kept. p >= 1 keeps everything. CAP_E_NOMEM or
 * CAP_E_ARG (p <= 0, NaN) on failure. */
CapStatus cap_logits_top_p(float *logits, int V, float p, char *err, size_t err_size);

/* Lowest index of the largest logit (NaN never wins); -1 if all are NaN or V < 1. */
int cap_argmax(const float *logits, int V);
/* Draws from softmax(logits) with one uniform: the first token whose cumulative
 * probability exceeds u * total; -1 if every logit is -inf or NaN. */
int cap_sample_logits(const float *logits, int V, CapRng *rng);

typedef struct CapSampleOptions {
    float temperature; /* <= 0: greedy */
    int top_k;         /* <= 0: off */
    float top_p;       /* >= 1 or <= 0: off */
    int greedy;        /* argmax, ignoring the rest */
} CapSampleOptions;

/* The seed's order: temperature, top-k, top-p, then sample (or argmax when greedy). Modifies
 * logits. *token receives the choice. */
CapStatus cap_sample_next(float *logits, int V, const CapSampleOptions *o, CapRng *rng,
                          int *token, char *err, size_t err_size);

/* ---- beam search ------------------------------------------------------------------------- */

/* One decoding step for n_beams live beams: beam i continues the beam parents[i] of the
 * previous call (-1 on the first call, where the only beam holds <start>) with token
 * last_tokens[i]. Writes logits[i * V + v] for every beam. Returns CAP_OK or an error with
 * the message in err. */
typedef CapStatus (*CapBeamStepFn)(void *ctx, int step, int n_beams, const int32_t *last_tokens,
                                   const int32_t *parents, float *logits, char *err,
                                   size_t err_size);

typedef struct CapBeamOptions {
    int beam_size;        /* >= 1 */
    int max_len;          /* generated tokens at most, <end> included */
    int32_t start_id;     /* fed on the first step */
    int32_t end_id;       /* CAP_TOKEN_END */
    double length_alpha;  /* score = sum log p / length^alpha; 0 = no normalization */
} CapBeamOptions;

/* The best hypothesis: tokens (without <start> and <end>) into out (room for max_len),
 * their count into *out_len, the normalized score into *out_score (may be NULL). */
CapStatus cap_beam_search(CapBeamStepFn step, void *ctx, int V, const CapBeamOptions *o,
                          int32_t *out, int *out_len, double *out_score, char *err,
                          size_t err_size);

#endif /* CAP_SAMPLING_H */
