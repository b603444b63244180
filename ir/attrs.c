/* attrs.c — attribute values in IR text syntax (parse and format), shared by the IR parser,
 * the printer and the op table's defaults; plus the small shape helpers of ops.h.
 *
 * Floats print with the shortest "%.Ng" that reads back to the same double and always carry a
 * '.', 'e', "inf" or "nan", so a reader tells 2.0 from 2 without knowing the schema.
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "strbuf.h"

const char *attr_kind_name(AttrKind k) {
    switch (k) {
    case ATTR_INT: return "int";
    case ATTR_FLOAT: return "float";
    case ATTR_BOOL: return "bool";
    case ATTR_INTS: return "int list";
    case ATTR_STRING: return "string";
    case ATTR_FLOATS: return "float list";
    }
    return "?";
}

int axis_normalize(int64_t axis, int rank) {
    if (axis < 0) axis += rank;
    return axis >= 0 && axis < rank ? (int)axis : -1;
}

bool shape_broadcast(const Shape *a, const Shape *b, Shape *out) {
    if (!shape_known(a) || !shape_known(b)) return false;
    int rank = a->rank > b->rank ? a->rank : b->rank;
    Shape r = shape_scalar();
    r.rank = rank;
    for (int i = 0; i < rank; i++) {
        /* Align from the right: missing leading axes act as size 1. */
        int ia = i - (rank - a->rank), ib = i - (rank - b->rank);
        int64_t da = ia >= 0 ? a->dims[ia] : 1, db = ib >= 0 ? b->dims[ib] : 1;
        if (da != db && da != 1 && db != 1) return false;
        r.dims[i] = da == 1 ? db : da;
    }
    *out = r;
    return true;
}

/* ---- formatting ----------------------------------------------------------------------- */

/* snprintf-style output that keeps counting past the end of the buffer. */
typedef struct Out {
    char *buf;
    size_t size, len;
} Out;

static void out_printf(Out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out_printf(Out *o, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *dst = o->len < o->size ? o->buf + o->len : NULL;
    size_t room = o->len < o->size ? o->size - o->len : 0;
    int n = vsnprintf(dst, room, fmt, ap);
    va_end(ap);
    if (n > 0) o->len += (size_t)n;
}

static void format_float(Out *o, double x) {
    if (isnan(x)) {
        out_printf(o, "nan");
        return;
    }
    if (isinf(x)) {
        out_printf(o, x < 0 ? "-inf" : "inf");
        return;
    }
    char text[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(text, sizeof text, "%.*g", prec, x);
        if (strtod(text, NULL) == x) break;
    }
    /* %g drops the point of integral values; put it back so the value reads as a float. */
    if (!strpbrk(text, ".e")) strcat(text, ".0");
    out_printf(o, "%s", text);
}

static void format_string(Out *o, const char *s) {
    out_printf(o, "\"");
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p == '"' || *p == '\\') out_printf(o, "\\%c", *p);
        else if (*p == '\n') out_printf(o, "\\n");
        else if (*p == '\t') out_printf(o, "\\t");
        else if (*p < 0x20 || *p == 0x7f) out_printf(o, "\\x%02x", *p);
        else out_printf(o, "%c", *p);
    }
    out_printf(o, "\"");
}

int attr_format(const AttrValue *v, char *buf, size_t size) {
    Out o = {buf, size, 0};
    if (size) buf[0] = '\0';
    switch (v->kind) {
    case ATTR_INT: out_printf(&o, "%lld", (long long)v->i); break;
    case ATTR_BOOL: out_printf(&o, "%s", v->i ? "true" : "false"); break;
    case ATTR_FLOAT: format_float(&o, v->f); break;
    case ATTR_INTS:
        out_printf(&o, "[");
        for (int i = 0; i < v->n_ints; i++)
            out_printf(&o, "%s%lld", i ? "," : "", (long long)v->ints[i]);
        out_printf(&o, "]");
        break;
    case ATTR_STRING: format_string(&o, v->s); break;
    case ATTR_FLOATS:
        out_printf(&o, "[");
        for (int i = 0; i < v->n_floats; i++) {
            if (i) out_printf(&o, ",");
            format_float(&o, v->floats[i]);
        }
        out_printf(&o, "]");
        break;
    }
    return (int)o.len;
}

/* ---- parsing -------------------------------------------------------------------------- */

typedef struct Lex {
    const char *p;
    char *err;
    size_t err_size;
} Lex;

static int lex_fail(Lex *lx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int lex_fail(Lex *lx, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (lx->err_size) vsnprintf(lx->err, lx->err_size, fmt, ap);
    va_end(ap);
    return -1;
}

static void skip_space(Lex *lx) {
    while (*lx->p == ' ' || *lx->p == '\t') lx->p++;
}

static int parse_int(Lex *lx, int64_t *out) {
    const char *start = lx->p;
    const char *q = start + (*start == '-' || *start == '+');
    if (!isdigit((unsigned char)*q)) return lex_fail(lx, "expected an integer");
    errno = 0;
    char *end;
    long long v = strtoll(start, &end, 10);
    if (errno == ERANGE) return lex_fail(lx, "integer out of range");
    lx->p = end;
    *out = v;
    return 0;
}

static int parse_float(Lex *lx, double *out) {
    const char *s = lx->p;
    const char *q = s + (*s == '-' || *s == '+');
    /* Only the spellings the printer writes (plus plain numbers): strtod also takes hex and
     * "infinity", which would not round-trip. */
    if (strncmp(q, "inf", 3) == 0 && !isalnum((unsigned char)q[3])) {
        *out = *s == '-' ? -INFINITY : INFINITY;
        lx->p = q + 3;
        return 0;
    }
    if (strncmp(q, "nan", 3) == 0 && !isalnum((unsigned char)q[3])) {
        *out = NAN;
        lx->p = q + 3;
        return 0;
    }
    if (!isdigit((unsigned char)*q) && !(*q == '.' && isdigit((unsigned char)q[1])))
        return lex_fail(lx, "expected a number");
    if (q[0] == '0' && (q[1] == 'x' || q[1] == 'X')) return lex_fail(lx, "expected a number");
    char *end;
    *out = strtod(s, &end);
    lx->p = end;
    return 0;
}

static int parse_bool(Lex *lx, int64_t *out) {
    if (strncmp(lx->p, "true", 4) == 0 && !isalnum((unsigned char)lx->p[4])) {
        *out = 1;
        lx->p += 4;
        return 0;
    }
    if (strncmp(lx->p, "false", 5) == 0 && !isalnum((unsigned char)lx->p[5])) {
        *out = 0;
        lx->p += 5;
        return 0;
    }
    return lex_fail(lx, "expected true or false");
}

static int parse_ints(Module *m, Lex *lx, AttrValue *v) {
    if (*lx->p != '[') return lex_fail(lx, "expected '[' to start an int list");
    lx->p++;
    int64_t vals[64];
    int n = 0;
    skip_space(lx);
    if (*lx->p != ']') {
        for (;;) {
            skip_space(lx);
            if (n == 64) return lex_fail(lx, "int list longer than 64 elements");
            if (parse_int(lx, &vals[n]) != 0) return -1;
            n++;
            skip_space(lx);
            if (*lx->p == ']') break;
            if (*lx->p != ',') return lex_fail(lx, "expected ',' or ']' in int list");
            lx->p++;
        }
    }
    lx->p++;
    int64_t *ints = module_alloc(m, sizeof(int64_t) * (size_t)(n ? n : 1));
    memcpy(ints, vals, sizeof(int64_t) * (size_t)n);
    v->ints = ints;
    v->n_ints = n;
    return 0;
}

/* Like an int list: the same 64-element bound, and each element in parse_float's spellings
 * (so nan and inf scalars round-trip as the printer writes them). */
static int parse_floats(Module *m, Lex *lx, AttrValue *v) {
    if (*lx->p != '[') return lex_fail(lx, "expected '[' to start a float list");
    lx->p++;
    double vals[64];
    int n = 0;
    skip_space(lx);
    if (*lx->p != ']') {
        for (;;) {
            skip_space(lx);
            if (n == 64) return lex_fail(lx, "float list longer than 64 elements");
            if (parse_float(lx, &vals[n]) != 0) return -1;
            n++;
            skip_space(lx);
            if (*lx->p == ']') break;
            if (*lx->p != ',') return lex_fail(lx, "expected ',' or ']' in float list");
            lx->p++;
        }
    }
    lx->p++;
    double *floats = module_alloc(m, sizeof(double) * (size_t)(n ? n : 1));
    memcpy(floats, vals, sizeof(double) * (size_t)n);
    v->floats = floats;
    v->n_floats = n;
    return 0;
}

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* One escape after a backslash; returns the byte or -1. */
static int parse_escape(Lex *lx) {
    char c = *lx->p++;
    switch (c) {
    case '"': return '"';
    case '\\': return '\\';
    case 'n': return '\n';
    case 't': return '\t';
    case 'x': {
        int hi = hex_digit(lx->p[0]), lo = hi >= 0 ? hex_digit(lx->p[1]) : -1;
        if (lo < 0 || (hi == 0 && lo == 0)) return lex_fail(lx, "bad \\x escape in string");
        lx->p += 2;
        return hi * 16 + lo;
    }
    default: return lex_fail(lx, "unknown escape '\\%c' in string", c ? c : '0');
    }
}

static int parse_string(Module *m, Lex *lx, const char **out) {
    if (*lx->p != '"') return lex_fail(lx, "expected a string in double quotes");
    lx->p++;
    StrBuf buf = {0};
    for (;;) {
        char c = *lx->p;
        if (c == '\0' || c == '\n') {
            strbuf_free(&buf);
            return lex_fail(lx, "unterminated string");
        }
        lx->p++;
        if (c == '"') break;
        int byte = (unsigned char)c;
        if (c == '\\' && (byte = parse_escape(lx)) < 0) {
            strbuf_free(&buf);
            return -1;
        }
        strbuf_putc(&buf, (char)byte);
    }
    char *text = strbuf_take(&buf);
    if (!text) return lex_fail(lx, "out of memory");
    *out = module_strdup(m, text);
    free(text);
    return 0;
}

int attr_parse(Module *m, AttrKind kind, const char *text, AttrValue *v, char *err,
               size_t err_size) {
    Lex lx = {text, err, err_size};
    AttrValue r;
    memset(&r, 0, sizeof r);
    r.kind = kind;
    int rc = -1;
    skip_space(&lx);
    switch (kind) {
    case ATTR_INT: rc = parse_int(&lx, &r.i); break;
    case ATTR_FLOAT: rc = parse_float(&lx, &r.f); break;
    case ATTR_BOOL: rc = parse_bool(&lx, &r.i); break;
    case ATTR_INTS: rc = parse_ints(m, &lx, &r); break;
    case ATTR_STRING: rc = parse_string(m, &lx, &r.s); break;
    case ATTR_FLOATS: rc = parse_floats(m, &lx, &r); break;
    }
    if (rc != 0) return -1;
    skip_space(&lx);
    if (*lx.p != '\0')
        return lex_fail(&lx, "unexpected '%.20s' after %s value", lx.p, attr_kind_name(kind));
    *v = r;
    return 0;
}
