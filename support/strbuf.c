/* strbuf.c — the growable string (strbuf.h). */
#include "strbuf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STRBUF_FIRST_CAP 256

void strbuf_init_fixed(StrBuf *b, char *buf, size_t size) {
    b->data = buf;
    b->len = 0;
    b->cap = size;
    b->failed = false;
    b->fixed = true;
    buf[0] = '\0';
}

/* Grows a heap buffer to hold at least `need` bytes. */
static bool grow(StrBuf *b, size_t need) {
    size_t cap = b->cap ? b->cap : STRBUF_FIRST_CAP;
    while (cap < need) {
        if (cap > SIZE_MAX / 2) return false;
        cap *= 2;
    }
    char *data = realloc(b->data, cap);
    if (!data) return false;
    b->data = data;
    b->cap = cap;
    return true;
}

bool strbuf_reserve(StrBuf *b, size_t extra) {
    if (b->failed) return false;
    bool too_big = extra > SIZE_MAX - b->len - 1;
    if (!too_big && b->len + extra + 1 <= b->cap) return true;
    if (too_big || b->fixed || !grow(b, b->len + extra + 1)) {
        b->failed = true;
        return false;
    }
    return true;
}

/* A fixed buffer without room for all of s: keeps what fits. */
static bool append_cut(StrBuf *b, const char *s, size_t n) {
    size_t room = b->cap - 1 - b->len;
    memcpy(b->data + b->len, s, n < room ? n : room);
    b->len += n < room ? n : room;
    b->data[b->len] = '\0';
    b->failed = true;
    return false;
}

bool strbuf_append(StrBuf *b, const char *s, size_t n) {
    if (b->failed && !b->fixed) return false;
    if (!strbuf_reserve(b, n)) return b->fixed ? append_cut(b, s, n) : false;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
    return true;
}

bool strbuf_puts(StrBuf *b, const char *s) { return strbuf_append(b, s, strlen(s)); }

bool strbuf_putc(StrBuf *b, char c) { return strbuf_append(b, &c, 1); }

bool strbuf_vprintf(StrBuf *b, const char *fmt, va_list ap) {
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0) {
        b->failed = true;
        return false;
    }
    if (!strbuf_reserve(b, (size_t)n)) {
        if (!b->fixed) return false;
        vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap); /* cut off */
        b->len += strlen(b->data + b->len);
        return false;
    }
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return true;
}

bool strbuf_printf(StrBuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    bool ok = strbuf_vprintf(b, fmt, ap);
    va_end(ap);
    return ok;
}

void strbuf_clear(StrBuf *b) {
    b->len = 0;
    b->failed = false;
    if (b->data) b->data[0] = '\0';
}

char *strbuf_take(StrBuf *b) {
    char *s = b->failed ? NULL : b->data;
    if (b->failed) free(b->data);
    else if (!s) s = calloc(1, 1); /* nothing appended: "" */
    memset(b, 0, sizeof *b);
    return s;
}

void strbuf_free(StrBuf *b) {
    if (b->fixed) {
        strbuf_clear(b);
        return;
    }
    free(b->data);
    memset(b, 0, sizeof *b);
}
