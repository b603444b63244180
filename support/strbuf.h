/* strbuf.h — a growable, NUL-terminated string: the one string builder of capc.
 *
 * Ownership: a StrBuf owns its data (unless made with strbuf_init_fixed). Start from
 * `StrBuf b = {0}`, append, then either strbuf_take (the caller owns the string) or
 * strbuf_free.
 *
 * Errors: an append that cannot allocate sets `failed` and every later append does nothing,
 * so a caller appends freely and checks once at the end (strbuf_take returns NULL, or read
 * `failed`); what to do about out of memory stays the caller's convention. The functions
 * that can fail also return false.
 *
 * A fixed StrBuf (strbuf_init_fixed) writes into the caller's array and never allocates:
 * what does not fit is cut off (and `failed` set), the text always NUL-terminated. */
#ifndef CAPC_STRBUF_H
#define CAPC_STRBUF_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct StrBuf {
    char *data;  /* NUL-terminated; NULL until the first append (growable buffers) */
    size_t len;  /* bytes before the NUL */
    size_t cap;  /* bytes allocated (fixed: the array's size) */
    bool failed; /* an allocation failed (fixed: text was cut off): the content is incomplete */
    bool fixed;  /* data is the caller's array: never reallocated nor freed */
} StrBuf;

/* A StrBuf over the caller's array buf[0..size) (size >= 1): set to "". */
void strbuf_init_fixed(StrBuf *b, char *buf, size_t size);

/* Makes room for `extra` more bytes (and the NUL). False (and `failed` set) when it cannot:
 * out of memory, or a fixed buffer too small. */
bool strbuf_reserve(StrBuf *b, size_t extra);

/* Appends s[0..n) (which may contain NUL bytes). False if anything was lost. */
bool strbuf_append(StrBuf *b, const char *s, size_t n);
bool strbuf_puts(StrBuf *b, const char *s);
bool strbuf_putc(StrBuf *b, char c);
bool strbuf_printf(StrBuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
bool strbuf_vprintf(StrBuf *b, const char *fmt, va_list ap);

/* Empties b ("") and keeps its memory for reuse; a failed b can be used again. */
void strbuf_clear(StrBuf *b);

/* Takes the string out of b, which is left empty: the caller frees it. NULL (and the
 * content freed) if an allocation failed; "" if nothing was appended. Not for fixed. */
char *strbuf_take(StrBuf *b);

/* Frees what b holds and leaves it empty (a fixed buffer is only emptied). */
void strbuf_free(StrBuf *b);

#endif
