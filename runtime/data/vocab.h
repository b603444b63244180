/* vocab.h — the word vocabulary: id <-> token, built from a dataset's train split, saved as a
 * text file (one token per line; line i, counted from 0, is id i), carried in checkpoints as
 * the same text (vocab_to_string / vocab_from_string).
 *
 * Ids 0..3 are always the specials <pad>, <start>, <end>, <unk> (VOCAB_PAD ...). Building keeps
 * every token seen at least min_count times in the train split's captions, ordered by count
 * (descending), ties by byte order, after the specials. Encoding tokenizes with text.h and
 * maps unknown tokens to <unk>.
 *
 * Ownership: a Vocab owns its strings; vocab_free releases it. Functions that fail return a
 * CapStatus and write a message naming the file (and line) into err.
 */
#ifndef VOCAB_H
#define VOCAB_H

#include <stddef.h>
#include <stdint.h>

#include "cap.h"

#define VOCAB_PAD 0
#define VOCAB_START 1
#define VOCAB_END 2
#define VOCAB_UNK 3
#define VOCAB_N_SPECIAL 4

struct Dataset;

typedef struct Vocab {
    char **tokens;     /* tokens[id], owned */
    int64_t *counts;   /* train-split count per id when built (0 for specials / loaded) */
    int32_t size;
    int32_t *table;    /* open-addressing hash table of ids, -1 = empty */
    int32_t table_size; /* a power of two, > 2 * size */
} Vocab;

extern const char *const vocab_specials[VOCAB_N_SPECIAL]; /* "<pad>", "<start>", "<end>", "<unk>" */

/* Counts tokens over the captions of the train-split images of ds and keeps those seen at
 * least min_count (>= 1) times. */
CapStatus vocab_build(const struct Dataset *ds, int min_count, Vocab **out, char *err,
                      size_t err_size);

/* From a list of tokens (specials first, as in a file). Checks: the first four are the
 * specials, no duplicates, no empty token, no whitespace inside a token. `what` names the
 * source in messages ("vocab.txt"). */
CapStatus vocab_from_string(const char *text, const char *what, Vocab **out, char *err,
                            size_t err_size);
/* One token per line, each ending in '\n'. Caller frees. NULL if out of memory. */
char *vocab_to_string(const Vocab *v);

CapStatus vocab_load(const char *path, Vocab **out, char *err, size_t err_size);
/* Writes atomically (PATH.tmp, then rename). */
CapStatus vocab_save(const Vocab *v, const char *path, char *err, size_t err_size);
void vocab_free(Vocab *v);

/* Id of token (len bytes), or VOCAB_UNK. */
int32_t vocab_id(const Vocab *v, const char *token, size_t len);
/* Token of id, or "<unk>" when out of range. */
const char *vocab_token(const Vocab *v, int32_t id);

/* ids[0..max_len) = <start> tokens... <end> then <pad> (0) to max_len (>= 2). When the caption
 * has more than max_len - 2 tokens, the first max_len - 2 are kept and <end> is still last.
 * Returns the number of ids before the padding, or -1 if out of memory. */
int vocab_encode(const Vocab *v, const char *text, int32_t *ids, int max_len);

/* The words of ids: stops at <end>, skips <pad> and <start>, joins with single spaces, except
 * that the punctuation tokens . , ! ? ; : attach to the word before. Writes at most size
 * bytes (NUL included) into buf; returns the length it needed (like snprintf). */
size_t vocab_decode(const Vocab *v, const int32_t *ids, int n, char *buf, size_t size);

#endif
