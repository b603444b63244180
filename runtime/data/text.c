/* text.c — UTF-8 repair and the caption tokenizer (rules in text.h). */
#include "text.h"

#include <stdlib.h>
#include <string.h>

static int is_space(unsigned char c) {
    return c == ' ' || (c >= '\t' && c <= '\r');
}

static int is_word_byte(unsigned char c) {
    return c >= 0x80 || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int is_joiner(unsigned char c) {
    return c == '\'' || c == '-';
}

static char lower(unsigned char c) {
    return (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
}

/* Length of the word starting at s (s[0] is a word byte). */
static size_t word_len(const unsigned char *s) {
    size_t i = 0;
    for (;;) {
        while (is_word_byte(s[i])) i++;
        if (is_joiner(s[i]) && is_word_byte(s[i + 1])) i++;
        else return i;
    }
}

int text_tokenize(const char *text, TextTokenFn fn, void *ctx) {
    const unsigned char *s = (const unsigned char *)text;
    char *buf = malloc(strlen(text) + 1);
    if (!buf) return -1;
    int count = 0;
    while (*s) {
        if (is_space(*s) || *s < 0x20 || *s == 0x7f) {
            s++;
            continue;
        }
        size_t n = is_word_byte(*s) ? word_len(s) : 1;
        for (size_t i = 0; i < n; i++) buf[i] = lower(s[i]);
        buf[n] = 0;
        count++;
        if (fn && fn(buf, n, ctx)) break;
        s += n;
    }
    free(buf);
    return count;
}

int text_count_tokens(const char *text) {
    return text_tokenize(text, NULL, NULL);
}

int text_utf8_seq_len(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    if (c < 0x80) return 1;
    int len;
    unsigned lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0;      /* no overlong forms */
        if (c == 0xED) hi = 0x9F;      /* no surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;      /* <= U+10FFFF */
    } else return 0;
    if ((size_t)len > n) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (int i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xBF) return 0;
    return len;
}

char *text_utf8_repair(const char *bytes, size_t n, int *n_replaced) {
    const unsigned char *s = (const unsigned char *)bytes;
    char *out = malloc(3 * n + 1); /* each bad byte becomes 3 bytes (EF BF BD) */
    if (!out) return NULL;
    size_t o = 0;
    int bad = 0;
    for (size_t i = 0; i < n;) {
        int len = text_utf8_seq_len(s + i, n - i);
        if (len == 0 || (len == 1 && s[i] == 0)) {
            if (s[i] == 0) { /* an embedded NUL would cut the caption: drop it as bad input */
                i++;
                bad++;
                continue;
            }
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
            bad++;
            continue;
        }
        memcpy(out + o, s + i, (size_t)len);
        o += (size_t)len;
        i += (size_t)len;
    }
    out[o] = 0;
    if (n_replaced) *n_replaced = bad;
    return out;
}

char *text_trim(char *s) {
    size_t n = strlen(s);
    while (n && is_space((unsigned char)s[n - 1])) s[--n] = 0;
    size_t k = 0;
    while (is_space((unsigned char)s[k])) k++;
    if (k) memmove(s, s + k, n - k + 1);
    return s;
}
