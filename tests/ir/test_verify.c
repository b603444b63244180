/* test_verify.c — the verifier accepts well-formed modules and rejects each broken invariant
 * with a message that names the problem: operand counts, use before definition, values of
 * another function, undeclared parameters, parameter ops of the wrong type, unknown shapes
 * when shapes are required, and recorded shapes that disagree with the op's shape rule.
 *
 * The shape-rule cases need ir/shape_rules.c (infer_NAME) to be implemented.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ops.h"

static Module *parse_ok(const char *text) {
    Diag d;
    Module *m = ir_parse(text, "test.ir", &d);
    if (!m) fail_msg("parse: %s", d.msg);
    return m;
}

/* Verifies and expects failure with a message containing want. */
static void expect_reject(Module *m, bool require_shapes, const char *want) {
    Diag d;
    if (ir_verify_module(m, require_shapes, &d) == 0) fail_msg("accepted; wanted \"%s\"", want);
    if (!strstr(d.msg, want)) fail_msg("got \"%s\", wanted \"%s\"", d.msg, want);
}

static void expect_accept(const Module *m, bool require_shapes) {
    Diag d;
    if (ir_verify_module(m, require_shapes, &d) != 0) fail_msg("rejected: %s", d.msg);
}

static const char *const GOOD = "module \"good\"\n"
                                "param @w : f32[5,4] init=\"zeros\"\n"
                                "func @f(%x : f32[2,4]) {\n"
                                "  %w = param() {name=\"w\"} : f32[5,4]\n"
                                "  %y = linear(%x, %w) : f32[2,5]\n"
                                "  %z = relu(%y) : f32[2,5]\n"
                                "  return z=%z\n"
                                "}\n";

static void test_accepts_good_module_without_shapes(void **state) {
    (void)state;
    Module *m = parse_ok(GOOD);
    expect_accept(m, false);
    module_free(m);
    m = parse_ok("module \"u\"\nfunc @f(%x : f32[3]) {\n  %y = relu(%x) : ?\n  return y=%y\n}\n");
    expect_accept(m, false);
    module_free(m);
}

static void test_accepts_good_module_with_shapes(void **state) {
    (void)state;
    Module *m = parse_ok(GOOD);
    expect_accept(m, true);
    module_free(m);
}

static void test_rejects_wrong_operand_count(void **state) {
    (void)state;
    Module *m = module_new("m");
    Function *f = module_add_function(m, "f");
    Value *x = func_add_input(f, "x", DT_F32, shape_of(1, (int64_t)3));
    Value *two[2] = {x, x};
    Op *r = func_add_op(f, OP_RELU, two, 2, "r", SRCLOC_NONE);
    r->loc = (SrcLoc){"model.json", 7, 9};
    Diag d;
    assert_int_equal(ir_verify_module(m, false, &d), -1);
    assert_non_null(strstr(d.msg, "relu %r has 2 operands, needs 1"));
    assert_int_equal(d.loc.line, 7);
    assert_int_equal(d.loc.col, 9);
    module_free(m);

    m = module_new("m");
    f = module_add_function(m, "f");
    x = func_add_input(f, "x", DT_F32, shape_of(1, (int64_t)3));
    func_add_op(f, OP_LINEAR, &x, 1, "l", SRCLOC_NONE);
    expect_reject(m, false, "needs 2 to 3");
    module_free(m);

    m = module_new("m");
    f = module_add_function(m, "f");
    func_add_op(f, OP_CONCAT, NULL, 0, "c", SRCLOC_NONE);
    expect_reject(m, false, "needs at least 1");
    module_free(m);
}

static void test_rejects_use_before_def(void **state) {
    (void)state;
    Module *m = module_new("m");
    Function *f = module_add_function(m, "f");
    Value *x = func_add_input(f, "x", DT_F32, shape_of(1, (int64_t)3));
    Op *a = func_add_op(f, OP_RELU, &x, 1, "a", SRCLOC_NONE);
    Op *b = func_add_op(f, OP_NEG, &a->result, 1, "b", SRCLOC_NONE);
    expect_accept(m, false);
    /* Swap the two ops: %b now reads %a before %a is defined. */
    f->ops[0] = b;
    f->ops[1] = a;
    expect_reject(m, false, "neg %b uses %a before its definition");
    module_free(m);
}

static void test_rejects_value_from_other_function(void **state) {
    (void)state;
    Module *m = module_new("m");
    Function *f = module_add_function(m, "f");
    Function *g = module_add_function(m, "g");
    Value *x = func_add_input(f, "x", DT_F32, shape_of(1, (int64_t)3));
    func_add_op(g, OP_RELU, &x, 1, "r", SRCLOC_NONE);
    expect_reject(m, false, "uses %x of function @f");
    module_free(m);

    m = module_new("m");
    f = module_add_function(m, "f");
    g = module_add_function(m, "g");
    x = func_add_input(f, "x", DT_F32, shape_of(1, (int64_t)3));
    func_add_output(g, "out", x);
    expect_reject(m, false, "output 'out' is not a value of this function");
    module_free(m);
}

static void test_rejects_undefined_param(void **state) {
    (void)state;
    Module *m = parse_ok("module \"m\"\nfunc @f() {\n  %w = param() {name=\"nope\"} : ?\n"
                         "  return w=%w\n}\n");
    Diag d;
    assert_int_equal(ir_verify_module(m, false, &d), -1);
    assert_non_null(strstr(d.msg, "undeclared parameter @nope"));
    assert_string_equal(d.loc.file, "test.ir"); /* the op's location from the parser */
    assert_int_equal(d.loc.line, 3);
    module_free(m);
}

/* An hparam (a learning rate) is an f32 scalar whose value is its init "const(V)": the
 * runtime and the interpreter have nothing else to read it from. */
static void test_hparam_needs_a_scalar_value(void **state) {
    (void)state;
    static const struct {
        const char *decl, *want; /* want NULL: accepted */
    } cases[] = {
        {"hparam @train.lr : f32[] init=\"const(0.001)\"", NULL},
        {"hparam @train.lr : f32[] init=\"const(-2.5e-3)\"", NULL},
        {"hparam @train.lr : f32[2] init=\"const(0.001)\"", "must be an f32[] with init"},
        {"hparam @train.lr : i32[] init=\"const(1)\"", "must be an f32[] with init"},
        {"hparam @train.lr : f32[] init=\"zeros\"", "must be an f32[] with init"},
        {"hparam @train.lr : f32[] init=\"const(0.001\"", "must be an f32[] with init"},
        {"hparam @train.lr : f32[] init=\"const(x)\"", "must be an f32[] with init"},
        {"hparam @train.lr : f32[] init=\"const(inf)\"", "must be an f32[] with init"},
        {"hparam @train.lr : f32[] init=\"const(0.1)x\"", "must be an f32[] with init"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char text[256];
        snprintf(text, sizeof text, "module \"m\"\n%s\n", cases[i].decl);
        Module *m = parse_ok(text);
        assert_int_equal(module_find_param(m, "train.lr")->kind, PARAM_HPARAM);
        if (cases[i].want) expect_reject(m, false, cases[i].want);
        else expect_accept(m, true);
        module_free(m);
    }
}

static void test_rejects_param_op_of_wrong_type(void **state) {
    (void)state;
    Module *m = parse_ok("module \"m\"\nparam @w : f32[5,4] init=\"zeros\"\n"
                         "func @f() {\n  %w = param() {name=\"w\"} : f32[4,5]\n"
                         "  return w=%w\n}\n");
    expect_reject(m, false, "param %w is f32[4,5] but @w is declared f32[5,4]");
    module_free(m);
    m = parse_ok("module \"m\"\nparam @w : f32[5,4] init=\"zeros\"\n"
                 "func @f() {\n  %w = param() {name=\"w\"} : i32[5,4]\n  return w=%w\n}\n");
    expect_reject(m, false, "declared f32[5,4]");
    module_free(m);
}

static void test_rejects_unknown_shapes_when_required(void **state) {
    (void)state;
    Module *m = parse_ok("module \"u\"\nfunc @f(%x : f32[3]) {\n  %y = relu(%x) : ?\n"
                         "  return y=%y\n}\n");
    expect_accept(m, false);
    expect_reject(m, true, "relu %y has an unknown shape");
    module_free(m);
    m = parse_ok("module \"u\"\nfunc @f(%x : ?) {\n  return x=%x\n}\n");
    expect_reject(m, true, "input %x has an unknown shape");
    module_free(m);
}

static void test_rejects_shape_that_disagrees_with_rule(void **state) {
    (void)state;
    Module *m = parse_ok("module \"m\"\nfunc @f(%x : f32[2,4], %y : f32[2,4]) {\n"
                         "  %s = add(%x, %y) : f32[2,5]\n  return s=%s\n}\n");
    expect_accept(m, false); /* without shapes the rule is not consulted */
    expect_reject(m, true, "add %s is recorded as f32[2,5] but its shape rule gives f32[2,4]");
    module_free(m);
    m = parse_ok("module \"m\"\nfunc @f(%x : f32[2,4]) {\n"
                 "  %c = cast(%x) {dtype=\"i32\"} : f32[2,4]\n  return c=%c\n}\n");
    expect_reject(m, true, "recorded as f32[2,4] but its shape rule gives i32[2,4]");
    module_free(m);
}

static void test_rejects_bad_attribute_kind_and_outputs(void **state) {
    (void)state;
    Module *m = module_new("m");
    Function *f = module_add_function(m, "f");
    Value *x = func_add_input(f, "x", DT_F32, shape_of(1, (int64_t)3));
    Op *s = func_add_op(f, OP_SCALE, &x, 1, "s", SRCLOC_NONE);
    s->attrs[0].kind = ATTR_INT; /* what a careless pass could do */
    expect_reject(m, false, "attribute 'factor' is int, the schema says float");
    s->attrs[0].kind = ATTR_FLOAT;
    expect_accept(m, false);
    func_add_output(f, "o", s->result);
    func_add_output(f, "o", x);
    expect_reject(m, false, "output 'o' returned twice");
    module_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepts_good_module_without_shapes),
        cmocka_unit_test(test_rejects_wrong_operand_count),
        cmocka_unit_test(test_rejects_use_before_def),
        cmocka_unit_test(test_rejects_value_from_other_function),
        cmocka_unit_test(test_rejects_undefined_param),
        cmocka_unit_test(test_rejects_param_op_of_wrong_type),
        cmocka_unit_test(test_rejects_unknown_shapes_when_required),
        cmocka_unit_test(test_rejects_bad_attribute_kind_and_outputs),
        /* These two need the real shape rules (ir/shape_rules.c). */
        cmocka_unit_test(test_accepts_good_module_with_shapes),
        cmocka_unit_test(test_hparam_needs_a_scalar_value),
        cmocka_unit_test(test_rejects_shape_that_disagrees_with_rule),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
