/* expr.h — the model format's expression language (docs/model-format.md, "Expressions").
 *
 * Integers and reals are kept apart: integer arithmetic stays exact (int64, overflow is an
 * error) and `/` between integers floors, as shapes need; any real operand makes the result
 * real. Comparisons and logic give the integers 0 and 1. Names are resolved by the caller's
 * lookup callback, so the same evaluator serves config values, shapes, attributes and block
 * arguments.
 */
#ifndef CAPC_EXPR_H
#define CAPC_EXPR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ExprValue {
    bool is_int;
    int64_t i; /* when is_int */
    double f;  /* when !is_int */
} ExprValue;

/* What a lookup callback returns. EXPR_ABORT means the callback has already reported an error
 * of its own (a config cycle, say) and evaluation must stop without another message. */
enum { EXPR_FOUND = 0, EXPR_UNDEFINED = 1, EXPR_ABORT = -1 };
typedef int (*ExprLookup)(void *ctx, const char *name, ExprValue *out);

typedef struct ExprError {
    char msg[256];
    size_t offset; /* byte offset in the expression text where the problem is */
    bool aborted;  /* the lookup callback reported the error; msg is empty */
} ExprError;

ExprValue expr_int(int64_t i);
ExprValue expr_real(double f);
double expr_to_double(ExprValue v);
bool expr_truthy(ExprValue v);
/* Formats an int as "%lld" and a real as the shortest "%.Ng" that reads back exactly. */
int expr_format(ExprValue v, char *buf, size_t size);

/* Evaluates the whole of text. Returns 0, or -1 with err filled. */
int expr_eval(const char *text, ExprLookup lookup, void *ctx, ExprValue *out, ExprError *err);
/* Replaces each `{expr}` in text by the expression's integer value. Returns a malloc'd
 * string (caller frees), or NULL with err filled (offset into text). */
char *expr_interpolate(const char *text, ExprLookup lookup, void *ctx, ExprError *err);
/* True for names an expression can refer to: [A-Za-z_][A-Za-z0-9_]*. */
bool expr_is_name(const char *s);

#endif
