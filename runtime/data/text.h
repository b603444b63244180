/* text.h — caption text: UTF-8 repair and the tokenizer that the vocabulary and the loader
 * share (docs/data.md, "Tokenizer").
 *
 * Tokenizer, exactly:
 *   1. ASCII letters are lowercased; bytes >= 0x80 (UTF-8 sequences) are kept as they are.
 *   2. ASCII whitespace (space, \t, \n, \v, \f, \r) and control bytes separate tokens.
 *   3. A word is a maximal run of word bytes: ASCII letters and digits and bytes >= 0x80, plus
 *      an apostrophe or hyphen that has a word byte on both sides ("t-shirt", "man's").
 *   4. Every other printable ASCII byte (punctuation: . , ! ? ; : " ( ) ' - and so on, when
 *      not inside a word) is a token of its own.
 * So "A man's T-shirt, (red)." -> a | man's | t-shirt | , | ( | red | ) | .
 */
#ifndef TEXT_H
#define TEXT_H

#include <stddef.h>

/* Called once per token with the lowercased token (NUL-terminated, valid during the call).
 * Returning nonzero stops the tokenizer. */
typedef int (*TextTokenFn)(const char *token, size_t len, void *ctx);

/* Tokenizes text (NUL-terminated), calling fn (may be NULL) per token. Returns the number of
 * tokens handed to fn (the one that stopped it included), or -1 if out of memory. */
int text_tokenize(const char *text, TextTokenFn fn, void *ctx);

/* Number of tokens of text (0 for an empty or all-space caption). */
int text_count_tokens(const char *text);

/* A newly allocated copy of bytes[0..n) that is valid UTF-8: each byte that does not start a
 * well-formed sequence (overlong forms, surrogates and code points above U+10FFFF included)
 * is replaced by U+FFFD. *n_replaced gets how many bytes were replaced (may be NULL). The
 * caller frees the result; NULL if out of memory. */
char *text_utf8_repair(const char *bytes, size_t n, int *n_replaced);

/* Length of the well-formed UTF-8 sequence at s (1..4), or 0 if s[0..n) does not start one. */
int text_utf8_seq_len(const unsigned char *s, size_t n);

/* Trims ASCII whitespace at both ends, in place; returns s. */
char *text_trim(char *s);

#endif
