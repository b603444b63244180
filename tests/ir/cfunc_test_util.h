/* cfunc_test_util.h — a C function for the op-table tests of `call` (shape rule, reference,
 * gradient, kernels), built directly as an expression tree: the tests of the op do not depend
 * on libclang (tests/frontend/test_cfuncs.c covers reading C). Header-only. */
#ifndef CAPC_TESTS_CFUNC_TEST_UTIL_H
#define CAPC_TESTS_CFUNC_TEST_UTIL_H

#include "cfunc.h"

/* "blend"(a, b) = a > b ? a * tanh(b) : exp(a) - b, with its derived gradients "blend.grad0"
 * and "blend.grad1" (operands a, b, dy); registered in m once. Returns "blend". */
static inline const char *tu_cfunc_blend(Module *m) {
    if (module_find_cfunc(m, "blend")) return "blend";
    CfBuilder b = {0};
    int a = cfb_arg(&b, 0), x = cfb_arg(&b, 1);
    int gt = cfb_node(&b, CF_GT, a, x, -1);
    int left = cfb_node(&b, CF_MUL, a, cfb_node(&b, CF_TANH, x, -1, -1), -1);
    int right = cfb_node(&b, CF_SUB, cfb_node(&b, CF_EXP, a, -1, -1), x, -1);
    cfb_node(&b, CF_SELECT, gt, left, right);
    static const char *const params[] = {"a", "b"}, *const gparams[] = {"a", "b", "dy"};
    CFunc *f = module_add_cfunc(m, "blend", 2, params, b.nodes, b.n, SRCLOC_NONE);
    for (int i = 0; i < 2; i++) {
        CfBuilder g = {0};
        if (cfunc_derive(b.nodes, b.n, 2, i, &g) != 0) abort();
        const char *name = i ? "blend.grad1" : "blend.grad0";
        module_add_cfunc(m, name, 3, gparams, g.nodes, g.n, SRCLOC_NONE);
        cfunc_set_grad(m, f, i, name);
        cfb_free(&g);
    }
    cfb_free(&b);
    return "blend";
}

/* "gate"(a, b, t) = a > t ? a * tanh(b) * t : exp(a) - b * t, called with the tensor operands
 * a, b and the scalar argument t (the op's args), with its derived gradients "gate.grad0" and
 * "gate.grad1" in the layout the frontend gives them: (a, b, dy, t) (cfunc.h). Registered
 * in m once. Returns "gate". */
static inline const char *tu_cfunc_gate(Module *m) {
    if (module_find_cfunc(m, "gate")) return "gate";
    CfBuilder b = {0};
    int a = cfb_arg(&b, 0), x = cfb_arg(&b, 1), t = cfb_arg(&b, 2);
    int gt = cfb_node(&b, CF_GT, a, t, -1);
    int th = cfb_node(&b, CF_TANH, x, -1, -1);
    int left = cfb_node(&b, CF_MUL, cfb_node(&b, CF_MUL, a, th, -1), t, -1);
    int right = cfb_node(&b, CF_SUB, cfb_node(&b, CF_EXP, a, -1, -1),
                         cfb_node(&b, CF_MUL, x, t, -1), -1);
    cfb_node(&b, CF_SELECT, gt, left, right);
    static const char *const params[] = {"a", "b", "t"}, *const gparams[] = {"a", "b", "dy", "t"};
    CFunc *f = module_add_cfunc(m, "gate", 3, params, b.nodes, b.n, SRCLOC_NONE);
    static const int move_dy[] = {0, 1, 3, 2}; /* (a, b, t, dy) -> (a, b, dy, t) */
    for (int i = 0; i < 2; i++) {
        CfBuilder g = {0};
        if (cfunc_derive(b.nodes, b.n, 3, i, &g) != 0) abort();
        cfb_remap_args(&g, move_dy);
        const char *name = i ? "gate.grad1" : "gate.grad0";
        module_add_cfunc(m, name, 4, gparams, g.nodes, g.n, SRCLOC_NONE);
        cfunc_set_grad(m, f, i, name);
        cfb_free(&g);
    }
    cfb_free(&b);
    return "gate";
}

#endif
