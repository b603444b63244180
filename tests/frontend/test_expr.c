/* test_expr.c — the expression language (frontend/expr.h): int vs real arithmetic, floor
 * division, precedence, comparisons, logic, ?:, short-circuit, name lookup, interpolation,
 * and errors with their offsets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "expr.h"

/* Names: a=7, b=2, r=0.5; "abort" simulates a callback that reported its own error. */
static int lookup(void *ctx, const char *name, ExprValue *out) {
    (void)ctx;
    if (!strcmp(name, "a")) *out = expr_int(7);
    else if (!strcmp(name, "b")) *out = expr_int(2);
    else if (!strcmp(name, "r")) *out = expr_real(0.5);
    else if (!strcmp(name, "abort")) return EXPR_ABORT;
    else return EXPR_UNDEFINED;
    return EXPR_FOUND;
}

static ExprValue eval_ok(const char *text) {
    ExprValue v;
    ExprError err;
    int rc = expr_eval(text, lookup, NULL, &v, &err);
    if (rc) fail_msg("'%s' failed: %s", text, err.msg);
    return v;
}

static void assert_int_result(const char *text, int64_t want) {
    ExprValue v = eval_ok(text);
    if (!v.is_int) fail_msg("'%s' is real %g, want int %lld", text, v.f, (long long)want);
    if (v.i != want) fail_msg("'%s' = %lld, want %lld", text, (long long)v.i, (long long)want);
}

static void assert_real_result(const char *text, double want) {
    ExprValue v = eval_ok(text);
    if (v.is_int) fail_msg("'%s' is int %lld, want real %g", text, (long long)v.i, want);
    if (v.f != want) fail_msg("'%s' = %.17g, want %.17g", text, v.f, want);
}

static void assert_error(const char *text, const char *msg, size_t offset) {
    ExprValue v;
    ExprError err;
    assert_int_equal(expr_eval(text, lookup, NULL, &v, &err), -1);
    if (strcmp(err.msg, msg) != 0) fail_msg("'%s': message '%s', want '%s'", text, err.msg, msg);
    if (err.offset != offset) fail_msg("'%s': offset %zu, want %zu", text, err.offset, offset);
}

static void test_arithmetic(void **state) {
    (void)state;
    assert_int_result("1 + 2 * 3", 7);
    assert_int_result("(1 + 2) * 3", 9);
    assert_int_result("a / b", 3);       /* integer division floors */
    assert_int_result("-7 / 2", -4);     /* floor, not truncation */
    assert_int_result("-7 % 2", 1);      /* consistent with floor division */
    assert_int_result("7 % -2", -1);
    assert_int_result("2 * a - -b", 16);
    assert_int_result("+3", 3);
    assert_real_result("7 / 2.0", 3.5);  /* any real makes it real */
    assert_real_result("a * r", 3.5);
    assert_real_result("1e-5", 1e-5);
    assert_real_result("2.", 2.0);
    assert_real_result(".25 * 4", 1.0);
    assert_int_result("9223372036854775807", INT64_MAX);
}

static void test_logic(void **state) {
    (void)state;
    assert_int_result("a > b", 1);
    assert_int_result("a <= b", 0);
    assert_int_result("a >= 7 && b == 2", 1);
    assert_int_result("a != 7 || !b", 0);
    assert_int_result("!0", 1);
    assert_int_result("r < 1", 1);
    assert_int_result("2 == 2.0", 1);
    assert_int_result("a > b ? 10 : 20", 10);
    assert_int_result("0 ? 1 : 0 ? 2 : 3", 3); /* right-associative */
    assert_int_result("1 + 1 == 2 && 3 > 2", 1);
    /* The branch not taken is parsed but not evaluated: no lookup, no division error. */
    assert_int_result("b > 0 ? a / b : undefined_name", 3);
    assert_int_result("0 && 1 / 0", 0);
    assert_int_result("1 || nothing", 1);
    assert_int_result("b == 0 ? 0 : a % b", 1);
}

static void test_errors(void **state) {
    (void)state;
    assert_error("2 * hidden", "undefined variable 'hidden'", 4);
    assert_error("(a + 1", "expected ')' to close '('", 6);
    assert_error("a + ", "expression ends where a value was expected", 4);
    assert_error("a b", "unexpected 'b' after the expression", 2);
    assert_error("a / 0", "division by zero", 2);
    assert_error("a % (b - 2)", "modulo by zero", 2);
    assert_error("a )", "unmatched ')'", 2);
    assert_error("3x", "bad number", 0);
    assert_error("9223372036854775807 + 1", "integer overflow", 20);
    assert_error("99999999999999999999", "integer 99999999999999999999 is too large", 0);
    assert_error("a $ b", "unexpected '$' after the expression", 2);
    assert_error("", "expression ends where a value was expected", 0);
    assert_error("1 ? 2", "expected ':' in '?:'", 5);
    /* A callback's own error stops evaluation without a second message. */
    ExprValue v;
    ExprError err;
    assert_int_equal(expr_eval("1 + abort", lookup, NULL, &v, &err), -1);
    assert_true(err.aborted);
    /* Deep nesting is an error, not a stack overflow. */
    char deep[2100];
    memset(deep, '(', 1000);
    strcpy(deep + 1000, "1");
    assert_int_equal(expr_eval(deep, lookup, NULL, &v, &err), -1);
    assert_string_equal(err.msg, "expression nested too deeply");
}

static void test_interpolate(void **state) {
    (void)state;
    ExprError err;
    char *s = expr_interpolate("layers.{a - 1}.conv{b}", lookup, NULL, &err);
    assert_non_null(s);
    assert_string_equal(s, "layers.6.conv2");
    free(s);
    s = expr_interpolate("plain", lookup, NULL, &err);
    assert_string_equal(s, "plain");
    free(s);
    assert_null(expr_interpolate("x{r}", lookup, NULL, &err));
    assert_string_equal(err.msg, "'{...}' in a name must be an integer, got 0.5");
    assert_int_equal(err.offset, 2);
    assert_null(expr_interpolate("x.{nope}", lookup, NULL, &err));
    assert_string_equal(err.msg, "undefined variable 'nope'");
    assert_int_equal(err.offset, 3); /* offset in the whole string */
    assert_null(expr_interpolate("x.{a", lookup, NULL, &err));
    assert_int_equal(err.offset, 2);
}

static void test_functions(void **state) {
    (void)state;
    assert_real_result("sqrt(16)", 4.0);
    assert_real_result("1 / sqrt(64 / 4)", 0.25); /* the attention scale 1/sqrt(d/heads) */
    assert_int_result("min(3, 2 + 2)", 3);
    assert_int_result("max(-1, 0)", 0);
    assert_real_result("max(1, 2.5)", 2.5);
    assert_int_result("1 ? 2 : sqrt(-1)", 2); /* the branch not taken is not evaluated */
    assert_error("cbrt(8)", "unknown function 'cbrt' (known: sqrt, min, max)", 0);
    assert_error("sqrt(-4)", "sqrt of a negative number (-4)", 0);
    assert_error("min(1)", "min() takes 2 arguments", 5);
}

static void test_format_and_names(void **state) {
    (void)state;
    char buf[64];
    expr_format(expr_real(0.1), buf, sizeof buf);
    assert_string_equal(buf, "0.1");
    expr_format(expr_real(1e-5), buf, sizeof buf);
    assert_string_equal(buf, "1e-05");
    expr_format(expr_int(-3), buf, sizeof buf);
    assert_string_equal(buf, "-3");
    assert_true(expr_is_name("dec_layers"));
    assert_true(expr_is_name("_x1"));
    assert_false(expr_is_name("1x"));
    assert_false(expr_is_name("a.b"));
    assert_false(expr_is_name(""));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_arithmetic), cmocka_unit_test(test_logic),
        cmocka_unit_test(test_errors),     cmocka_unit_test(test_interpolate),
        cmocka_unit_test(test_format_and_names), cmocka_unit_test(test_functions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
