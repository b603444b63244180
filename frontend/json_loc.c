/* json_loc.c — validates JSON text, records where each value starts, and parses it with
 * cJSON; then attaches the recorded positions to the cJSON nodes.
 *
 * Our scanner and cJSON's tree both list values in document pre-order (a value, then its
 * children in order), so the k-th value the scanner saw is the k-th node of a pre-order walk
 * of the tree. The scanner is stricter than cJSON where cJSON would silently read something
 * else than the text says: numbers follow JSON's grammar (no leading zeros) and must be finite
 * doubles, and strings may not contain NUL (cJSON's C strings would end there).
 */
#include "json_loc.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "diag.h"

#define NO_KEY SIZE_MAX
/* cJSON refuses deeper nesting; we stop at the same depth with a clearer message. */
#define MAX_DEPTH 1000

struct JsonSpan {
    const cJSON *node;
    size_t key_off; /* NO_KEY for array elements and the root */
    size_t val_off;
};

/* ---- the scanner ---------------------------------------------------------------------- */

typedef struct Scanner {
    const char *s;
    size_t n, pos;
    JsonSpan *spans; /* in pre-order; node filled in later */
    size_t n_spans, cap_spans;
    int depth;
    const char *err; /* static message, NULL while fine */
    size_t err_off;
} Scanner;

static int scan_fail(Scanner *sc, size_t off, const char *msg) {
    if (!sc->err) {
        sc->err = msg;
        sc->err_off = off;
    }
    return -1;
}

static void skip_ws(Scanner *sc) {
    while (sc->pos < sc->n) {
        char c = sc->s[sc->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        sc->pos++;
    }
}

static int peek(const Scanner *sc) { return sc->pos < sc->n ? (unsigned char)sc->s[sc->pos] : -1; }

static int add_span(Scanner *sc, size_t key_off, size_t val_off) {
    if (sc->n_spans == sc->cap_spans) {
        size_t cap = sc->cap_spans ? 2 * sc->cap_spans : 64;
        JsonSpan *p = realloc(sc->spans, cap * sizeof *p);
        if (!p) return scan_fail(sc, val_off, "out of memory");
        sc->spans = p;
        sc->cap_spans = cap;
    }
    sc->spans[sc->n_spans++] = (JsonSpan){NULL, key_off, val_off};
    return 0;
}

static int is_hex(int c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* At an opening quote; leaves pos after the closing quote. */
static int scan_string(Scanner *sc) {
    size_t start = sc->pos++;
    while (sc->pos < sc->n) {
        char c = sc->s[sc->pos];
        if (c == '"') {
            sc->pos++;
            return 0;
        }
        if (c == '\n') return scan_fail(sc, start, "malformed JSON: unterminated string");
        if (c == '\0') return scan_fail(sc, sc->pos, "a string may not contain a NUL byte: it would "
                                                   "cut the string short");
        if (c == '\\') {
            size_t esc = sc->pos;
            if (sc->pos + 1 >= sc->n) break;
            char e = sc->s[sc->pos + 1];
            if (e == 'u') {
                for (int i = 2; i < 6; i++)
                    if (sc->pos + i >= sc->n || !is_hex((unsigned char)sc->s[sc->pos + i]))
                        return scan_fail(sc, esc, "malformed JSON: bad \\u escape in string");
                /* cJSON decodes into C strings, so a NUL would silently cut the string
                 * short ("1\u0000+2" would read as "1"): refuse it. */
                if (memcmp(sc->s + sc->pos + 2, "0000", 4) == 0)
                    return scan_fail(sc, esc, "a string may not contain \\u0000 (NUL): it would cut "
                                              "the string short");
                sc->pos += 6;
                continue;
            }
            if (!strchr("\"\\/bfnrt", e) || e == '\0')
                return scan_fail(sc, esc, "malformed JSON: bad escape in string");
            sc->pos += 2;
            continue;
        }
        sc->pos++;
    }
    return scan_fail(sc, start, "malformed JSON: unterminated string");
}

static int scan_value(Scanner *sc, size_t key_off);

static int scan_object(Scanner *sc) {
    sc->pos++; /* '{' */
    skip_ws(sc);
    if (peek(sc) == '}') {
        sc->pos++;
        return 0;
    }
    for (;;) {
        skip_ws(sc);
        if (peek(sc) != '"') {
            if (peek(sc) == '}') return scan_fail(sc, sc->pos, "malformed JSON: trailing ',' before '}'");
            return scan_fail(sc, sc->pos, "malformed JSON: expected a string key");
        }
        size_t key_off = sc->pos;
        if (scan_string(sc)) return -1;
        skip_ws(sc);
        if (peek(sc) != ':') return scan_fail(sc, sc->pos, "malformed JSON: expected ':' after the key");
        sc->pos++;
        if (scan_value(sc, key_off)) return -1;
        skip_ws(sc);
        int c = peek(sc);
        sc->pos++;
        if (c == '}') return 0;
        if (c != ',') return scan_fail(sc, sc->pos - 1, "malformed JSON: expected ',' or '}'");
    }
}

static int scan_array(Scanner *sc) {
    sc->pos++; /* '[' */
    skip_ws(sc);
    if (peek(sc) == ']') {
        sc->pos++;
        return 0;
    }
    for (;;) {
        skip_ws(sc);
        if (peek(sc) == ']') return scan_fail(sc, sc->pos, "malformed JSON: trailing ',' before ']'");
        if (scan_value(sc, NO_KEY)) return -1;
        skip_ws(sc);
        int c = peek(sc);
        sc->pos++;
        if (c == ']') return 0;
        if (c != ',') return scan_fail(sc, sc->pos - 1, "malformed JSON: expected ',' or ']'");
    }
}

static int scan_word(Scanner *sc, const char *word) {
    size_t len = strlen(word);
    if (sc->n - sc->pos < len || memcmp(sc->s + sc->pos, word, len) != 0)
        return scan_fail(sc, sc->pos, "malformed JSON: expected a value");
    sc->pos += len;
    return 0;
}

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

/* JSON's number grammar, -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?, checked here because
 * cJSON reads whatever strtod accepts: "016" would silently be 16 (a reader may mean octal 14),
 * and "1e999" would be an infinity that reaches attributes such as attn_scale. */
static int scan_number(Scanner *sc) {
    size_t start = sc->pos, i = sc->pos;
    const char *s = sc->s;
    if (i < sc->n && s[i] == '-') i++;
    if (i >= sc->n || !is_digit(s[i])) return scan_fail(sc, start, "malformed JSON: bad number");
    if (s[i] == '0' && i + 1 < sc->n && is_digit(s[i + 1]))
        return scan_fail(sc, start, "malformed JSON: leading zero in a number (JSON has none: "
                                    "write 16, not 016)");
    while (i < sc->n && is_digit(s[i])) i++;
    if (i < sc->n && s[i] == '.') {
        if (++i >= sc->n || !is_digit(s[i]))
            return scan_fail(sc, start, "malformed JSON: bad number (a digit must follow '.')");
        while (i < sc->n && is_digit(s[i])) i++;
    }
    if (i < sc->n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < sc->n && (s[i] == '+' || s[i] == '-')) i++;
        if (i >= sc->n || !is_digit(s[i]))
            return scan_fail(sc, start, "malformed JSON: bad number (a digit must follow the exponent)");
        while (i < sc->n && is_digit(s[i])) i++;
    }
    /* Trailing number characters ("1.2.3", "1-2") are part of the same bad token. */
    if (i < sc->n && s[i] != '\0' && strchr("0123456789+-.eE", s[i]))
        return scan_fail(sc, start, "malformed JSON: bad number");
    sc->pos = i;
    /* The text is valid; its value must also be a finite double. strtod needs a terminated
     * copy (the text is not NUL-terminated here); no model needs a number of 512 characters. */
    char buf[512];
    size_t len = i - start;
    if (len >= sizeof buf)
        return scan_fail(sc, start, "number too long (at most 511 characters)");
    memcpy(buf, s + start, len);
    buf[len] = '\0';
    if (!isfinite(strtod(buf, NULL)))
        return scan_fail(sc, start, "number out of range: larger than the largest double (about 1.8e308)");
    return 0;
}

static int scan_value(Scanner *sc, size_t key_off) {
    skip_ws(sc);
    size_t off = sc->pos;
    int c = peek(sc);
    if (c < 0) return scan_fail(sc, off, "malformed JSON: unexpected end of file");
    if (add_span(sc, key_off, off)) return -1;
    switch (c) {
    case '{':
    case '[': {
        if (++sc->depth > MAX_DEPTH) return scan_fail(sc, off, "malformed JSON: nesting too deep");
        int rc = c == '{' ? scan_object(sc) : scan_array(sc);
        sc->depth--;
        return rc;
    }
    case '"': return scan_string(sc);
    case 't': return scan_word(sc, "true");
    case 'f': return scan_word(sc, "false");
    case 'n': return scan_word(sc, "null");
    default:
        if (c == '-' || (c >= '0' && c <= '9')) return scan_number(sc);
        return scan_fail(sc, off, "malformed JSON: expected a value");
    }
}

/* ---- positions ------------------------------------------------------------------------ */

static int build_lines(JsonDoc *doc) {
    size_t n = 1;
    for (size_t i = 0; i < doc->len; i++) n += doc->text[i] == '\n';
    doc->line_starts = malloc(n * sizeof *doc->line_starts);
    if (!doc->line_starts) return -1;
    doc->n_lines = 0;
    doc->line_starts[doc->n_lines++] = 0;
    for (size_t i = 0; i < doc->len; i++)
        if (doc->text[i] == '\n') doc->line_starts[doc->n_lines++] = i + 1;
    return 0;
}

SrcLoc json_offset_loc(const JsonDoc *doc, size_t offset) {
    SrcLoc loc = {doc->file, 0, 0};
    if (!doc->line_starts) return loc;
    size_t lo = 0, hi = doc->n_lines; /* last line start <= offset */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (doc->line_starts[mid] <= offset) lo = mid;
        else hi = mid;
    }
    loc.line = (int)lo + 1;
    loc.col = (int)(offset - doc->line_starts[lo]) + 1;
    return loc;
}

static int cmp_span(const void *a, const void *b) {
    uintptr_t x = (uintptr_t)((const JsonSpan *)a)->node, y = (uintptr_t)((const JsonSpan *)b)->node;
    return x < y ? -1 : x > y;
}

static const JsonSpan *find_span(const JsonDoc *doc, const cJSON *node) {
    if (!node || !doc->spans) return NULL;
    JsonSpan key = {node, 0, 0};
    return bsearch(&key, doc->spans, doc->n_spans, sizeof key, cmp_span);
}

bool json_doc_has(const JsonDoc *doc, const cJSON *node) { return find_span(doc, node) != NULL; }

SrcLoc json_loc(const JsonDoc *doc, const cJSON *node) {
    const JsonSpan *sp = find_span(doc, node);
    if (!sp) return (SrcLoc){doc->file, 0, 0};
    return json_offset_loc(doc, sp->val_off);
}

SrcLoc json_key_loc(const JsonDoc *doc, const cJSON *node) {
    const JsonSpan *sp = find_span(doc, node);
    if (!sp) return (SrcLoc){doc->file, 0, 0};
    return json_offset_loc(doc, sp->key_off == NO_KEY ? sp->val_off : sp->key_off);
}

/* Bytes that a \uXXXX escape decodes to in UTF-8 (a surrogate half counts as 2: the pair
 * makes 4). */
static size_t utf8_len_of_escape(const char *hex) {
    unsigned v = (unsigned)strtoul((char[5]){hex[0], hex[1], hex[2], hex[3], 0}, NULL, 16);
    if (v < 0x80) return 1;
    if (v < 0x800) return 2;
    if (v >= 0xD800 && v <= 0xDFFF) return 2;
    return 3;
}

SrcLoc json_string_loc(const JsonDoc *doc, const cJSON *node, size_t index) {
    const JsonSpan *sp = find_span(doc, node);
    if (!sp || doc->text[sp->val_off] != '"') return json_loc(doc, node);
    size_t raw = sp->val_off + 1, decoded = 0;
    while (raw < doc->len && doc->text[raw] != '"' && decoded < index) {
        if (doc->text[raw] == '\\' && raw + 1 < doc->len) {
            if (doc->text[raw + 1] == 'u' && raw + 5 < doc->len) {
                decoded += utf8_len_of_escape(doc->text + raw + 2);
                raw += 6;
            } else {
                decoded++;
                raw += 2;
            }
        } else {
            decoded++;
            raw++;
        }
    }
    return json_offset_loc(doc, raw);
}

const char *json_type_name(const cJSON *node) {
    if (!node) return "nothing";
    if (cJSON_IsString(node)) return "a string";
    if (cJSON_IsNumber(node)) return "a number";
    if (cJSON_IsBool(node)) return "a bool";
    if (cJSON_IsNull(node)) return "null";
    if (cJSON_IsArray(node)) return "a list";
    if (cJSON_IsObject(node)) return "an object";
    return "an unknown JSON value";
}

/* ---- attaching and checking ----------------------------------------------------------- */

static void attach(const cJSON *node, JsonSpan *spans, size_t n, size_t *k) {
    if (*k < n) spans[*k].node = node;
    (*k)++;
    for (const cJSON *c = node->child; c; c = c->next) attach(c, spans, n, k);
}

/* The first member of any object whose key repeats an earlier key of the same object. */
static const cJSON *find_duplicate_key(const cJSON *node) {
    if (cJSON_IsObject(node))
        for (const cJSON *a = node->child; a; a = a->next)
            for (const cJSON *b = node->child; b != a; b = b->next)
                if (a->string && b->string && strcmp(a->string, b->string) == 0) return a;
    for (const cJSON *c = node->child; c; c = c->next) {
        const cJSON *dup = find_duplicate_key(c);
        if (dup) return dup;
    }
    return NULL;
}

static int fail_at(JsonDoc *doc, Diag *d, size_t off, const char *msg) {
    diag_set(d, json_offset_loc(doc, off), "%s", msg);
    json_doc_free(doc);
    return -1;
}

int json_doc_parse(JsonDoc *doc, const char *text, size_t len, const char *file, Diag *d) {
    memset(doc, 0, sizeof *doc);
    doc->text = text;
    doc->len = len;
    doc->file = file;
    if (build_lines(doc)) return fail_at(doc, d, 0, "out of memory");

    Scanner sc = {.s = text, .n = len};
    /* cJSON skips a UTF-8 byte order mark; so do we. */
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) sc.pos = 3;
    if (scan_value(&sc, NO_KEY) == 0) {
        skip_ws(&sc);
        if (sc.pos < sc.n) scan_fail(&sc, sc.pos, "malformed JSON: unexpected text after the end");
    }
    doc->spans = sc.spans;
    doc->n_spans = sc.n_spans;
    if (sc.err) return fail_at(doc, d, sc.err_off, sc.err);

    const char *end = NULL;
    doc->root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!doc->root) {
        size_t off = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
        return fail_at(doc, d, off, "malformed JSON");
    }
    size_t k = 0;
    attach(doc->root, doc->spans, doc->n_spans, &k);
    if (k != doc->n_spans) return fail_at(doc, d, 0, "malformed JSON (unsupported construct)");
    qsort(doc->spans, doc->n_spans, sizeof *doc->spans, cmp_span);

    const cJSON *dup = find_duplicate_key(doc->root);
    if (dup) {
        diag_set(d, json_key_loc(doc, dup), "duplicate key '%s'", dup->string);
        json_doc_free(doc);
        return -1;
    }
    return 0;
}

void json_doc_free(JsonDoc *doc) {
    cJSON_Delete(doc->root);
    free(doc->spans);
    free(doc->line_starts);
    doc->root = NULL;
    doc->spans = NULL;
    doc->line_starts = NULL;
    doc->n_spans = doc->n_lines = 0;
}

bool json_number_is_int(const JsonDoc *doc, const cJSON *node) {
    const JsonSpan *sp = find_span(doc, node);
    if (!sp || !cJSON_IsNumber(node)) return false;
    for (size_t i = sp->val_off; i < doc->len && strchr("0123456789+-.eE", doc->text[i]) && doc->text[i]; i++)
        if (doc->text[i] == '.' || doc->text[i] == 'e' || doc->text[i] == 'E') return false;
    return true;
}
