/* vocab.c — building, saving, loading and using the vocabulary (rules in vocab.h). */
#include "vocab.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data.h"
#include "data_internal.h"
#include "data_rng.h"
#include "text.h"

const char *const vocab_specials[VOCAB_N_SPECIAL] = {"<pad>", "<start>", "<end>", "<unk>"};

/* ---- the hash table (token -> id) ------------------------------------------------------------ */

static uint32_t tok_hash(const char *s, size_t n) {
    return (uint32_t)data_fnv1a(s, n);
}

/* Slot of token in table (the empty slot where it would go if absent). */
static uint32_t find_slot(const int32_t *table, int32_t size, char *const *tokens, const char *s,
                          size_t n) {
    uint32_t mask = (uint32_t)size - 1;
    uint32_t h = tok_hash(s, n) & mask;
    while (table[h] >= 0) {
        const char *t = tokens[table[h]];
        if (strlen(t) == n && memcmp(t, s, n) == 0) return h;
        h = (h + 1) & mask;
    }
    return h;
}

/* A growable token -> count map used while building, and the id table of a Vocab. */
typedef struct TokMap {
    char **tokens;
    int64_t *counts;
    int32_t n, cap;
    int32_t *table;
    int32_t table_size;
} TokMap;

static int map_rehash(TokMap *m, int32_t size) {
    int32_t *t = malloc((size_t)size * sizeof *t);
    if (!t) return -1;
    for (int32_t i = 0; i < size; i++) t[i] = -1;
    for (int32_t i = 0; i < m->n; i++)
        t[find_slot(t, size, m->tokens, m->tokens[i], strlen(m->tokens[i]))] = i;
    free(m->table);
    m->table = t;
    m->table_size = size;
    return 0;
}

/* Id of token in m, adding it (count 0) if new; -1 if out of memory. */
static int32_t map_intern(TokMap *m, const char *s, size_t n) {
    uint32_t h = find_slot(m->table, m->table_size, m->tokens, s, n);
    if (m->table[h] >= 0) return m->table[h];
    if (m->n == m->cap) {
        int32_t cap = m->cap ? m->cap * 2 : 64;
        char **t = realloc(m->tokens, (size_t)cap * sizeof *t);
        if (t) m->tokens = t;
        int64_t *c = realloc(m->counts, (size_t)cap * sizeof *c);
        if (c) m->counts = c;
        if (!t || !c) return -1;
        m->cap = cap;
    }
    char *copy = malloc(n + 1);
    if (!copy) return -1;
    memcpy(copy, s, n);
    copy[n] = 0;
    int32_t id = m->n++;
    m->tokens[id] = copy;
    m->counts[id] = 0;
    m->table[h] = id;
    if (2 * m->n >= m->table_size && map_rehash(m, m->table_size * 2)) return -1;
    return id;
}

static void map_free(TokMap *m) {
    for (int32_t i = 0; i < m->n; i++) free(m->tokens[i]);
    free(m->tokens);
    free(m->counts);
    free(m->table);
}

static Vocab *vocab_from_map(TokMap *m) {
    Vocab *v = malloc(sizeof *v);
    if (!v) return NULL;
    *v = (Vocab){m->tokens, m->counts, m->n, m->table, m->table_size};
    memset(m, 0, sizeof *m);
    return v;
}

void vocab_free(Vocab *v) {
    if (!v) return;
    for (int32_t i = 0; i < v->size; i++) free(v->tokens[i]);
    free(v->tokens);
    free(v->counts);
    free(v->table);
    free(v);
}

int32_t vocab_id(const Vocab *v, const char *token, size_t len) {
    int32_t id = v->table[find_slot(v->table, v->table_size, v->tokens, token, len)];
    return id >= 0 ? id : VOCAB_UNK;
}

const char *vocab_token(const Vocab *v, int32_t id) {
    return id >= 0 && id < v->size ? v->tokens[id] : vocab_specials[VOCAB_UNK];
}

/* ---- building ------------------------------------------------------------------------------ */

typedef struct CountCtx {
    TokMap *m;
    int failed;
} CountCtx;

static int count_token(const char *tok, size_t len, void *ctx) {
    CountCtx *c = ctx;
    int32_t id = map_intern(c->m, tok, len);
    if (id < 0) return c->failed = 1;
    c->m->counts[id]++;
    return 0;
}

typedef struct Ranked {
    int64_t count;
    const char *token;
} Ranked;

static int by_count(const void *a, const void *b) {
    const Ranked *x = a, *y = b;
    if (x->count != y->count) return x->count > y->count ? -1 : 1;
    return strcmp(x->token, y->token);
}

/* The vocabulary of the tokens of `all` with count >= min_count, specials first. */
static CapStatus select_tokens(const TokMap *all, int min_count, Vocab **out, char *err,
                               size_t err_size) {
    Ranked *order = malloc(((size_t)all->n + 1) * sizeof *order);
    TokMap kept = {0};
    CapStatus st = CAP_OK;
    if (!order || map_rehash(&kept, 64)) st = CAP_E_NOMEM;
    int32_t n = 0;
    for (int32_t i = 0; !st && i < all->n; i++)
        if (all->counts[i] >= min_count) order[n++] = (Ranked){all->counts[i], all->tokens[i]};
    if (!st) qsort(order, (size_t)n, sizeof *order, by_count);
    for (int i = 0; !st && i < VOCAB_N_SPECIAL; i++)
        if (map_intern(&kept, vocab_specials[i], strlen(vocab_specials[i])) < 0) st = CAP_E_NOMEM;
    for (int32_t i = 0; !st && i < n; i++) {
        int32_t before = kept.n;
        int32_t id = map_intern(&kept, order[i].token, strlen(order[i].token));
        if (id < 0) st = CAP_E_NOMEM;
        else if (kept.n > before) kept.counts[id] = order[i].count; /* a word spelt "<unk>" stays special */
    }
    free(order);
    if (st || !(*out = vocab_from_map(&kept))) {
        map_free(&kept);
        return data_fail(err, err_size, CAP_E_NOMEM, "vocabulary: out of memory");
    }
    return CAP_OK;
}

CapStatus vocab_build(const Dataset *ds, int min_count, Vocab **out, char *err, size_t err_size) {
    *out = NULL;
    if (min_count < 1) return data_fail(err, err_size, CAP_E_ARG, "--min-count must be >= 1");
    TokMap all = {0};
    CountCtx ctx = {&all, 0};
    if (map_rehash(&all, 1024)) return data_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    for (int32_t i = 0; i < ds->n_images && !ctx.failed; i++) {
        const DataImage *im = &ds->images[i];
        if (im->split != DATA_TRAIN) continue;
        for (int32_t c = 0; c < im->n_captions && !ctx.failed; c++)
            if (text_tokenize(ds->captions[im->first_caption + c], count_token, &ctx) < 0)
                ctx.failed = 1;
    }
    CapStatus st = ctx.failed ? data_fail(err, err_size, CAP_E_NOMEM, "out of memory")
                              : select_tokens(&all, min_count, out, err, err_size);
    map_free(&all);
    return st;
}

/* ---- text form ----------------------------------------------------------------------------- */

char *vocab_to_string(const Vocab *v) {
    size_t n = 1;
    for (int32_t i = 0; i < v->size; i++) n += strlen(v->tokens[i]) + 1;
    char *s = malloc(n), *p = s;
    if (!s) return NULL;
    for (int32_t i = 0; i < v->size; i++) {
        size_t k = strlen(v->tokens[i]);
        memcpy(p, v->tokens[i], k);
        p[k] = '\n';
        p += k + 1;
    }
    *p = 0;
    return s;
}

/* Refuses a token that is not well-formed UTF-8, naming the byte. Why: tokens go into the
 * checkpoint's JSON header as they are, and a JSON reader (Python's json) refuses invalid
 * UTF-8; the tokenizer never makes such a token from repaired captions either. `off` is the
 * line's byte offset in the text. */
static CapStatus check_utf8(const char *what, int line, const char *s, size_t n, size_t off,
                            char *err, size_t err_size) {
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        int len = text_utf8_seq_len(u + i, n - i);
        if (len == 0)
            return data_fail(err, err_size, CAP_E_FORMAT,
                             "%s:%d: invalid UTF-8: byte 0x%02X at column %zu (byte offset %zu)",
                             what, line, u[i], i + 1, off + i);
        i += (size_t)len;
    }
    return CAP_OK;
}

static CapStatus check_line(const char *what, int line, const char *s, size_t n, size_t off,
                            char *err, size_t err_size) {
    if (n == 0) return data_fail(err, err_size, CAP_E_FORMAT, "%s:%d: empty token", what, line);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= ' ' || s[i] == 0x7f) /* the tokenizer's separators */
            return data_fail(err, err_size, CAP_E_FORMAT,
                             "%s:%d: whitespace or a control byte inside a token", what, line);
    CapStatus st = check_utf8(what, line, s, n, off, err, err_size);
    if (st) return st;
    if (line <= VOCAB_N_SPECIAL) {
        const char *want = vocab_specials[line - 1];
        if (strlen(want) != n || memcmp(want, s, n))
            return data_fail(err, err_size, CAP_E_FORMAT,
                             "%s:%d: expected '%s' (the first lines are <pad> <start> <end> <unk>)",
                             what, line, want);
    }
    return CAP_OK;
}

CapStatus vocab_from_string(const char *text, const char *what, Vocab **out, char *err,
                            size_t err_size) {
    *out = NULL;
    TokMap m = {0};
    if (map_rehash(&m, 64)) return data_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    CapStatus st = CAP_OK;
    int line = 1;
    for (const char *p = text; *p && !st; line++) {
        size_t n = strcspn(p, "\n");
        size_t k = n && p[n - 1] == '\r' ? n - 1 : n;
        st = check_line(what, line, p, k, (size_t)(p - text), err, err_size);
        int32_t before = m.n;
        if (!st && map_intern(&m, p, k) < 0) st = data_fail(err, err_size, CAP_E_NOMEM, "out of memory");
        if (!st && m.n == before)
            st = data_fail(err, err_size, CAP_E_FORMAT, "%s:%d: duplicate token '%.*s'", what, line,
                           (int)k, p);
        p += n + (p[n] == '\n');
    }
    if (!st && m.n < VOCAB_N_SPECIAL)
        st = data_fail(err, err_size, CAP_E_FORMAT,
                       "%s: %d lines; a vocabulary starts with <pad> <start> <end> <unk>", what, (int)m.n);
    if (!st && !(*out = vocab_from_map(&m))) st = data_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    if (st) map_free(&m);
    return st;
}

CapStatus vocab_load(const char *path, Vocab **out, char *err, size_t err_size) {
    char *text;
    size_t len;
    *out = NULL;
    CapStatus st = data_read_file(path, &text, &len, err, err_size);
    if (st) return st;
    size_t nul = strlen(text);
    if (nul != len) {
        int line, col;
        data_line_col(text, nul, &line, &col);
        st = data_fail(err, err_size, CAP_E_FORMAT, "%s:%d: NUL byte (byte offset %zu)", path,
                       line, nul);
    } else st = vocab_from_string(text, path, out, err, err_size);
    free(text);
    return st;
}

CapStatus vocab_save(const Vocab *v, const char *path, char *err, size_t err_size) {
    char *s = vocab_to_string(v);
    char *tmp = malloc(strlen(path) + 5);
    if (!s || !tmp) {
        free(s);
        free(tmp);
        return data_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    }
    sprintf(tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    CapStatus st = CAP_OK;
    if (!f) st = data_fail(err, err_size, CAP_E_IO, "%s: cannot write: %s", tmp, strerror(errno));
    else {
        size_t n = strlen(s);
        int bad = fwrite(s, 1, n, f) != n;
        bad |= fclose(f) != 0;
        if (bad || rename(tmp, path) != 0) {
            st = data_fail(err, err_size, CAP_E_IO, "%s: cannot write: %s", path, strerror(errno));
            remove(tmp);
        }
    }
    free(s);
    free(tmp);
    return st;
}

/* ---- encode / decode ------------------------------------------------------------------------ */

typedef struct EncodeCtx {
    const Vocab *v;
    int32_t *ids;
    int n, limit; /* limit: how many word ids fit (max_len - 2) */
} EncodeCtx;

static int encode_token(const char *tok, size_t len, void *ctx) {
    EncodeCtx *e = ctx;
    if (e->n >= e->limit) return 1;
    e->ids[1 + e->n++] = vocab_id(e->v, tok, len);
    return 0;
}

int vocab_encode(const Vocab *v, const char *text, int32_t *ids, int max_len) {
    if (max_len < 2) return -1;
    EncodeCtx e = {v, ids, 0, max_len - 2};
    ids[0] = VOCAB_START;
    if (text_tokenize(text, encode_token, &e) < 0) return -1;
    ids[1 + e.n] = VOCAB_END;
    for (int i = e.n + 2; i < max_len; i++) ids[i] = VOCAB_PAD;
    return e.n + 2;
}

static int attaches(const char *t) {
    return t[0] && !t[1] && strchr(".,!?;:", t[0]);
}

size_t vocab_decode(const Vocab *v, const int32_t *ids, int n, char *buf, size_t size) {
    size_t len = 0;
    for (int i = 0; i < n; i++) {
        if (ids[i] == VOCAB_END) break;
        if (ids[i] == VOCAB_PAD || ids[i] == VOCAB_START) continue;
        const char *t = vocab_token(v, ids[i]);
        size_t k = strlen(t);
        int space = len > 0 && !attaches(t);
        for (size_t j = 0; j < k + (size_t)space; j++) {
            char c = space ? (j == 0 ? ' ' : t[j - 1]) : t[j];
            if (len + 1 < size) buf[len] = c;
            len++;
        }
    }
    if (size) buf[len < size ? len : size - 1] = 0;
    return len;
}
