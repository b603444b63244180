/* op_test_util.h — small helpers the ir/ op tests share: build a one-function module from
 * type strings ("f32[2,3]"), add ops with attributes, run shape rules, and run the reference
 * interpreter on hand-written data. Header-only (static functions) to keep tests standalone. */
#ifndef CAPC_TESTS_OP_TEST_UTIL_H
#define CAPC_TESTS_OP_TEST_UTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#include <cmocka.h>

#include "interp.h"
#include "ops.h"

#define TU_MAX_INPUTS 16

typedef struct TestCtx {
    Module *m;
    Function *f;
    const double *data[TU_MAX_INPUTS]; /* data for f->inputs[i], NULL = zeros */
    RefStore params;
} TestCtx;

static inline void tu_open(TestCtx *c) {
    memset(c, 0, sizeof *c);
    c->m = module_new("test");
    c->f = module_add_function(c->m, "f");
    ref_store_init(&c->params);
}

static inline void tu_close(TestCtx *c) {
    ref_store_free(&c->params);
    module_free(c->m);
}

/* Parses "f32[2,3]" / "i32[]" into dtype and shape (test inputs are trusted). */
static inline void tu_parse_type(const char *text, DType *dt, Shape *s) {
    char name[8] = {0};
    const char *br = strchr(text, '[');
    assert_non_null(br);
    memcpy(name, text, (size_t)(br - text));
    assert_true(dtype_from_name(name, dt));
    s->rank = 0;
    const char *p = br + 1;
    while (*p && *p != ']') {
        char *end;
        s->dims[s->rank++] = strtoll(p, &end, 10);
        p = *end == ',' ? end + 1 : end;
    }
}

static inline Shape tu_shape(const char *type) {
    DType dt;
    Shape s;
    tu_parse_type(type, &dt, &s);
    return s;
}

/* A function input of the given type; data (may be NULL) is what ref tests feed it. */
static inline Value *tu_in(TestCtx *c, const char *type, const double *data) {
    DType dt;
    Shape s;
    tu_parse_type(type, &dt, &s);
    assert_true(c->f->n_inputs < TU_MAX_INPUTS);
    c->data[c->f->n_inputs] = data;
    return func_add_input(c->f, NULL, dt, s);
}

/* An op by name over NULL-terminated operands. */
static inline Op *tu_op(TestCtx *c, const char *name, ...) {
    Value *ins[TU_MAX_INPUTS];
    int n = 0;
    va_list ap;
    va_start(ap, name);
    for (Value *v; (v = va_arg(ap, Value *)) != NULL;) ins[n++] = v;
    va_end(ap);
    int kind = op_kind_from_name(name);
    assert_true(kind >= 0);
    return func_add_op(c->f, kind, ins, n, NULL, SRCLOC_NONE);
}

static inline void tu_ints(Op *op, const char *attr, int n, ...) {
    int64_t v[IR_MAX_RANK + 2];
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++) v[i] = (int64_t)va_arg(ap, int);
    va_end(ap);
    op_set_ints(op, attr, v, n);
}

/* Runs the op's shape rule; on success stores the result type on the op's value. */
static inline int tu_infer(Op *op, char *err, size_t err_size) {
    DType dt;
    Shape s;
    err[0] = 0;
    int rc = op_info(op->kind)->infer_shape(op, &dt, &s, err, err_size);
    if (rc == 0) {
        op->result->dtype = dt;
        op->result->shape = s;
    }
    return rc;
}

/* Asserts that the op's shape rule succeeds with the given result type. */
static inline void tu_expect_type(Op *op, const char *want) {
    char err[1024], got[128];
    if (tu_infer(op, err, sizeof err) != 0) fail_msg("%s: unexpected error: %s", op_info(op->kind)->name, err);
    type_format(op->result->dtype, &op->result->shape, got, sizeof got);
    if (strcmp(got, want) != 0)
        fail_msg("%s: inferred %s, expected %s", op_info(op->kind)->name, got, want);
}

/* Asserts that the op's shape rule fails and the message contains each NULL-terminated
 * fragment (and always the op's name). */
static inline void tu_expect_error(Op *op, ...) {
    char err[1024];
    const char *name = op_info(op->kind)->name;
    if (tu_infer(op, err, sizeof err) == 0) fail_msg("%s: expected an error, got success", name);
    if (strncmp(err, name, strlen(name)) != 0)
        fail_msg("%s: message does not start with the op name: %s", name, err);
    va_list ap;
    va_start(ap, op);
    for (const char *frag; (frag = va_arg(ap, const char *)) != NULL;)
        if (!strstr(err, frag)) fail_msg("%s: message \"%s\" lacks \"%s\"", name, err, frag);
    va_end(ap);
}

/* Infers op's type, makes it the function's only output and runs ref_run with the inputs'
 * data. Returns ref_run's status; *out receives the result (caller frees). */
static inline int tu_run(TestCtx *c, Op *op, RefTensor *out, char *err, size_t err_size) {
    if (tu_infer(op, err, err_size) != 0) fail_msg("shape rule failed: %s", err);
    func_add_output(c->f, "out", op->result);
    RefTensor ins[TU_MAX_INPUTS];
    for (int i = 0; i < c->f->n_inputs; i++) {
        const Value *v = c->f->inputs[i];
        assert_int_equal(ref_tensor_init(&ins[i], v->dtype, v->shape), 0);
        if (c->data[i])
            memcpy(ins[i].data, c->data[i], (size_t)shape_numel(&v->shape) * sizeof(double));
    }
    err[0] = 0;
    int rc = ref_run(c->f, ins, ref_store_lookup, &c->params, out, NULL, err, err_size);
    for (int i = 0; i < c->f->n_inputs; i++) ref_tensor_free(&ins[i]);
    return rc;
}

/* Runs the op and compares with want (n values; -inf/inf/NaN compare exactly). */
static inline void tu_expect_values(TestCtx *c, Op *op, const char *type, const double *want,
                                    int64_t n, double tol) {
    char err[1024], got_type[128];
    RefTensor out;
    if (tu_run(c, op, &out, err, sizeof err) != 0) fail_msg("ref_run failed: %s", err);
    type_format(out.dtype, &out.shape, got_type, sizeof got_type);
    if (strcmp(got_type, type) != 0) {
        ref_tensor_free(&out);
        fail_msg("%s: result type %s, expected %s", op_info(op->kind)->name, got_type, type);
    }
    assert_int_equal(ref_tensor_numel(&out), n);
    for (int64_t i = 0; i < n; i++) {
        double g = out.data[i], w = want[i];
        bool same = (isnan(w) && isnan(g)) || (isinf(w) && g == w) ||
                    (isfinite(w) && fabs(g - w) <= tol * (1.0 + fabs(w)));
        if (!same) {
            ref_tensor_free(&out);
            fail_msg("%s: element %lld is %.17g, expected %.17g", op_info(op->kind)->name,
                     (long long)i, g, w);
        }
    }
    ref_tensor_free(&out);
}

/* Runs the op expecting a data-dependent error whose message contains frag. */
static inline void tu_expect_run_error(TestCtx *c, Op *op, const char *frag) {
    char err[1024];
    RefTensor out;
    if (tu_run(c, op, &out, err, sizeof err) == 0) {
        ref_tensor_free(&out);
        fail_msg("%s: expected a run error", op_info(op->kind)->name);
    }
    if (!strstr(err, frag)) fail_msg("message \"%s\" lacks \"%s\"", err, frag);
    if (!strstr(err, op_info(op->kind)->name)) fail_msg("message \"%s\" lacks the op name", err);
}

#endif
