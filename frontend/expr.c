/* expr.c — a recursive-descent evaluator for model-file expressions.
 *
 * It evaluates while it parses. The branch not taken by `?:`, `&&` or `||` is still parsed
 * (so a syntax error anywhere is reported) but evaluated in "skip" mode: no name lookups and
 * no arithmetic errors, as in C, where `n > 0 ? m / n : 0` must not fail for n == 0.
 *
 * Precedence, loosest first: ?: (right-assoc), ||, &&, == !=, < <= > >=, + -, * / %, unary
 * - + !.
 */
#include "expr.h"
#include "strbuf.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_NESTING 200

typedef struct Parser {
    const char *s;
    size_t pos;
    ExprLookup lookup;
    void *ctx;
    ExprError *err;
    int skip;  /* > 0 while in a branch that is not taken */
    int depth; /* nesting, to bound recursion on hostile input */
} Parser;

ExprValue expr_int(int64_t i) { return (ExprValue){true, i, (double)i}; }
ExprValue expr_real(double f) { return (ExprValue){false, 0, f}; }
double expr_to_double(ExprValue v) { return v.is_int ? (double)v.i : v.f; }
bool expr_truthy(ExprValue v) { return v.is_int ? v.i != 0 : v.f != 0.0; }

int expr_format(ExprValue v, char *buf, size_t size) {
    if (v.is_int) return snprintf(buf, size, "%lld", (long long)v.i);
    for (int prec = 1; prec <= 17; prec++) {
        char tmp[64];
        snprintf(tmp, sizeof tmp, "%.*g", prec, v.f);
        if (strtod(tmp, NULL) == v.f || prec == 17) return snprintf(buf, size, "%s", tmp);
    }
    return 0;
}

bool expr_is_name(const char *s) {
    if (!s || !(isalpha((unsigned char)*s) || *s == '_')) return false;
    for (s++; *s; s++)
        if (!(isalnum((unsigned char)*s) || *s == '_')) return false;
    return true;
}

static int fail(Parser *p, size_t off, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(Parser *p, size_t off, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err->msg, sizeof p->err->msg, fmt, ap);
    va_end(ap);
    p->err->offset = off;
    return -1;
}

static void skip_space(Parser *p) {
    while (p->s[p->pos] == ' ' || p->s[p->pos] == '\t') p->pos++;
}

/* Consumes tok (after spaces) if it is next; "<" must not match the start of "<=". */
static bool accept(Parser *p, const char *tok) {
    skip_space(p);
    size_t n = strlen(tok);
    if (strncmp(p->s + p->pos, tok, n) != 0) return false;
    if (n == 1 && strchr("<>=!&|", tok[0]) && p->s[p->pos + 1] == '=') return false;
    if (n == 1 && (tok[0] == '&' || tok[0] == '|') && p->s[p->pos + 1] == tok[0]) return false;
    p->pos += n;
    return true;
}

static int parse_cond(Parser *p, ExprValue *v);

static int parse_number(Parser *p, ExprValue *v) {
    size_t start = p->pos;
    const char *s = p->s;
    size_t i = p->pos;
    bool real = false;
    /* As in JSON: "016" is not 16 (a reader may take it for octal). */
    if (s[i] == '0' && isdigit((unsigned char)s[i + 1]))
        return fail(p, start, "bad number: leading zeros are not allowed");
    while (isdigit((unsigned char)s[i])) i++;
    if (s[i] == '.') {
        real = true;
        i++;
        while (isdigit((unsigned char)s[i])) i++;
    }
    if ((s[i] == 'e' || s[i] == 'E') &&
        (isdigit((unsigned char)s[i + 1]) ||
         ((s[i + 1] == '+' || s[i + 1] == '-') && isdigit((unsigned char)s[i + 2])))) {
        real = true;
        i += 2;
        while (isdigit((unsigned char)s[i])) i++;
    }
    if (isalpha((unsigned char)s[i]) || s[i] == '_') return fail(p, start, "bad number");
    char buf[64];
    if (i - start >= sizeof buf) return fail(p, start, "number too long");
    memcpy(buf, s + start, i - start);
    buf[i - start] = '\0';
    p->pos = i;
    errno = 0;
    if (real) {
        *v = expr_real(strtod(buf, NULL));
        if (!isfinite(v->f)) return fail(p, start, "number %s is larger than the largest double", buf);
    } else {
        long long n = strtoll(buf, NULL, 10);
        if (errno == ERANGE) return fail(p, start, "integer %s is too large", buf);
        *v = expr_int(n);
    }
    return 0;
}

/* Built-in functions: sqrt(x) (real), min(a, b), max(a, b) (int if both are ints). They make
 * derived sizes such as an attention scale 1/sqrt(d/heads) expressible in the config. */
static int parse_call(Parser *p, const char *name, size_t start, ExprValue *v) {
    int arity = strcmp(name, "sqrt") == 0 ? 1
                : (strcmp(name, "min") == 0 || strcmp(name, "max") == 0) ? 2 : 0;
    if (arity == 0) return fail(p, start, "unknown function '%s' (known: sqrt, min, max)", name);
    p->pos++; /* '(' */
    ExprValue args[2];
    for (int i = 0; i < arity; i++) {
        if (i > 0 && !accept(p, ",")) return fail(p, p->pos, "%s() takes %d arguments", name, arity);
        if (parse_cond(p, &args[i])) return -1;
    }
    if (!accept(p, ")")) return fail(p, p->pos, "expected ')' to close %s(", name);
    if (p->skip) {
        *v = expr_int(0);
        return 0;
    }
    if (arity == 1) {
        double x = expr_to_double(args[0]);
        if (x < 0) return fail(p, start, "sqrt of a negative number (%g)", x);
        *v = expr_real(sqrt(x));
        return 0;
    }
    bool want_min = name[1] == 'i';
    if (args[0].is_int && args[1].is_int) {
        bool first = want_min ? args[0].i <= args[1].i : args[0].i >= args[1].i;
        *v = first ? args[0] : args[1];
    } else {
        double a = expr_to_double(args[0]), b = expr_to_double(args[1]);
        *v = expr_real(want_min ? fmin(a, b) : fmax(a, b));
    }
    return 0;
}

static int parse_name(Parser *p, ExprValue *v) {
    size_t start = p->pos;
    while (isalnum((unsigned char)p->s[p->pos]) || p->s[p->pos] == '_') p->pos++;
    char name[128];
    size_t n = p->pos - start;
    if (n >= sizeof name) return fail(p, start, "name too long");
    memcpy(name, p->s + start, n);
    name[n] = '\0';
    skip_space(p);
    if (p->s[p->pos] == '(') return parse_call(p, name, start, v);
    if (p->skip) {
        *v = expr_int(0);
        return 0;
    }
    int rc = p->lookup ? p->lookup(p->ctx, name, v) : EXPR_UNDEFINED;
    if (rc == EXPR_ABORT) {
        p->err->aborted = true;
        p->err->msg[0] = '\0';
        p->err->offset = start;
        return -1;
    }
    if (rc != EXPR_FOUND) return fail(p, start, "undefined variable '%s'", name);
    return 0;
}

static int parse_primary(Parser *p, ExprValue *v) {
    skip_space(p);
    char c = p->s[p->pos];
    if (isdigit((unsigned char)c) || (c == '.' && isdigit((unsigned char)p->s[p->pos + 1])))
        return parse_number(p, v);
    if (isalpha((unsigned char)c) || c == '_') return parse_name(p, v);
    if (c == '(') {
        p->pos++;
        if (parse_cond(p, v)) return -1;
        if (!accept(p, ")")) return fail(p, p->pos, "expected ')' to close '('");
        return 0;
    }
    if (c == '\0') return fail(p, p->pos, "expression ends where a value was expected");
    return fail(p, p->pos, "unexpected '%c' where a value was expected", c);
}

static int parse_unary(Parser *p, ExprValue *v) {
    if (++p->depth > MAX_NESTING) return fail(p, p->pos, "expression nested too deeply");
    int rc;
    skip_space(p);
    size_t at = p->pos;
    if (accept(p, "!")) {
        rc = parse_unary(p, v);
        if (!rc) *v = expr_int(!expr_truthy(*v));
    } else if (accept(p, "-")) {
        rc = parse_unary(p, v);
        if (!rc && v->is_int) {
            if (v->i == INT64_MIN && !p->skip) rc = fail(p, at, "integer overflow");
            else v->i = -v->i, v->f = (double)v->i;
        } else if (!rc) {
            v->f = -v->f;
        }
    } else if (accept(p, "+")) {
        rc = parse_unary(p, v);
    } else {
        rc = parse_primary(p, v);
    }
    p->depth--;
    return rc;
}

static int64_t floor_div(int64_t a, int64_t b) {
    int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) q--;
    return q;
}

static int64_t floor_mod(int64_t a, int64_t b) { return a - floor_div(a, b) * b; }

/* Applies an arithmetic operator; ints stay ints unless either side is real. */
static int arith(Parser *p, char op, size_t at, ExprValue a, ExprValue b, ExprValue *out) {
    if (a.is_int && b.is_int) {
        int64_t r = 0;
        bool ovf = false;
        switch (op) {
        case '+': ovf = __builtin_add_overflow(a.i, b.i, &r); break;
        case '-': ovf = __builtin_sub_overflow(a.i, b.i, &r); break;
        case '*': ovf = __builtin_mul_overflow(a.i, b.i, &r); break;
        case '/':
        case '%':
            if (b.i == 0) {
                if (p->skip) break;
                return fail(p, at, "%s by zero", op == '/' ? "division" : "modulo");
            }
            if (a.i == INT64_MIN && b.i == -1) ovf = true;
            else r = op == '/' ? floor_div(a.i, b.i) : floor_mod(a.i, b.i);
            break;
        }
        if (ovf && !p->skip) return fail(p, at, "integer overflow");
        *out = expr_int(r);
        return 0;
    }
    double x = expr_to_double(a), y = expr_to_double(b), r = 0;
    switch (op) {
    case '+': r = x + y; break;
    case '-': r = x - y; break;
    case '*': r = x * y; break;
    case '/':
    case '%':
        if (y == 0.0) {
            if (p->skip) break;
            return fail(p, at, "%s by zero", op == '/' ? "division" : "modulo");
        }
        r = op == '/' ? x / y : x - y * floor(x / y);
        break;
    }
    /* An infinity would flow into attributes and shapes as if it were a number. */
    if (!isfinite(r) && !p->skip) return fail(p, at, "real overflow (the result is not finite)");
    *out = expr_real(r);
    return 0;
}

static int parse_mul(Parser *p, ExprValue *v) {
    if (parse_unary(p, v)) return -1;
    for (;;) {
        skip_space(p);
        size_t at = p->pos;
        char op = p->s[p->pos];
        if (op != '*' && op != '/' && op != '%') return 0;
        p->pos++;
        ExprValue r;
        if (parse_unary(p, &r) || arith(p, op, at, *v, r, v)) return -1;
    }
}

static int parse_add(Parser *p, ExprValue *v) {
    if (parse_mul(p, v)) return -1;
    for (;;) {
        skip_space(p);
        size_t at = p->pos;
        char op = p->s[p->pos];
        if (op != '+' && op != '-') return 0;
        p->pos++;
        ExprValue r;
        if (parse_mul(p, &r) || arith(p, op, at, *v, r, v)) return -1;
    }
}

static bool compare(const char *op, ExprValue a, ExprValue b) {
    int c;
    if (a.is_int && b.is_int) c = (a.i > b.i) - (a.i < b.i);
    else {
        double x = expr_to_double(a), y = expr_to_double(b);
        c = (x > y) - (x < y);
    }
    if (!strcmp(op, "==")) return c == 0;
    if (!strcmp(op, "!=")) return c != 0;
    if (!strcmp(op, "<")) return c < 0;
    if (!strcmp(op, "<=")) return c <= 0;
    if (!strcmp(op, ">")) return c > 0;
    return c >= 0;
}

/* One precedence level of comparison operators from ops (NULL-terminated). */
static int parse_compare(Parser *p, ExprValue *v, const char *const *ops,
                         int (*next)(Parser *, ExprValue *)) {
    if (next(p, v)) return -1;
    for (;;) {
        const char *op = NULL;
        for (int i = 0; ops[i] && !op; i++)
            if (accept(p, ops[i])) op = ops[i];
        if (!op) return 0;
        ExprValue r;
        if (next(p, &r)) return -1;
        *v = expr_int(compare(op, *v, r));
    }
}

static int parse_rel(Parser *p, ExprValue *v) {
    static const char *const ops[] = {"<=", ">=", "<", ">", NULL};
    return parse_compare(p, v, ops, parse_add);
}

static int parse_eq(Parser *p, ExprValue *v) {
    static const char *const ops[] = {"==", "!=", NULL};
    return parse_compare(p, v, ops, parse_rel);
}

static int parse_and(Parser *p, ExprValue *v) {
    if (parse_eq(p, v)) return -1;
    while (accept(p, "&&")) {
        bool left = expr_truthy(*v);
        ExprValue r;
        p->skip += !left;
        int rc = parse_eq(p, &r);
        p->skip -= !left;
        if (rc) return -1;
        *v = expr_int(left && expr_truthy(r));
    }
    return 0;
}

static int parse_or(Parser *p, ExprValue *v) {
    if (parse_and(p, v)) return -1;
    while (accept(p, "||")) {
        bool left = expr_truthy(*v);
        ExprValue r;
        p->skip += left;
        int rc = parse_and(p, &r);
        p->skip -= left;
        if (rc) return -1;
        *v = expr_int(left || expr_truthy(r));
    }
    return 0;
}

static int parse_cond(Parser *p, ExprValue *v) {
    if (++p->depth > MAX_NESTING) return fail(p, p->pos, "expression nested too deeply");
    int rc = parse_or(p, v);
    if (!rc && accept(p, "?")) {
        bool take = expr_truthy(*v);
        ExprValue a, b;
        p->skip += !take;
        rc = parse_cond(p, &a);
        p->skip -= !take;
        if (!rc && !accept(p, ":")) rc = fail(p, p->pos, "expected ':' in '?:'");
        if (!rc) {
            p->skip += take;
            rc = parse_cond(p, &b);
            p->skip -= take;
        }
        if (!rc) *v = take ? a : b;
    }
    p->depth--;
    return rc;
}

int expr_eval(const char *text, ExprLookup lookup, void *ctx, ExprValue *out, ExprError *err) {
    memset(err, 0, sizeof *err);
    Parser p = {text, 0, lookup, ctx, err, 0, 0};
    ExprValue v;
    if (parse_cond(&p, &v)) return -1;
    skip_space(&p);
    if (text[p.pos] != '\0') {
        if (text[p.pos] == ')') return fail(&p, p.pos, "unmatched ')'");
        return fail(&p, p.pos, "unexpected '%c' after the expression", text[p.pos]);
    }
    *out = v;
    return 0;
}

char *expr_interpolate(const char *text, ExprLookup lookup, void *ctx, ExprError *err) {
    memset(err, 0, sizeof *err);
    StrBuf out = {0};
    strbuf_puts(&out, "");
    for (size_t i = 0; text[i];) {
        const char *open = strchr(text + i, '{');
        size_t plain = open ? (size_t)(open - text) - i : strlen(text + i);
        strbuf_append(&out, text + i, plain);
        i += plain;
        if (!open) break;
        const char *close = strchr(open, '}');
        if (!close) {
            snprintf(err->msg, sizeof err->msg, "'{' without a closing '}'");
            err->offset = i;
            strbuf_free(&out);
            return NULL;
        }
        size_t n = (size_t)(close - open) - 1;
        char *inner = malloc(n + 1);
        if (!inner) {
            strbuf_free(&out);
            return NULL;
        }
        memcpy(inner, open + 1, n);
        inner[n] = '\0';
        ExprValue v;
        int rc = expr_eval(inner, lookup, ctx, &v, err);
        free(inner);
        if (!rc && !v.is_int) {
            snprintf(err->msg, sizeof err->msg, "'{...}' in a name must be an integer, got %g", v.f);
            err->offset = 0;
            rc = -1;
        }
        if (rc) {
            err->offset += i + 1;
            strbuf_free(&out);
            return NULL;
        }
        strbuf_printf(&out, "%lld", (long long)v.i);
        i = (size_t)(close - text) + 1;
    }
    return strbuf_take(&out); /* NULL when out of memory */
}
