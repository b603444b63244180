/* test_gradients.c — every op's gradient rule against central finite differences, in float64
 * with the reference interpreter.
 *
 * For each op: a small function whose operands are function inputs filled with random values
 * (fixed seed), the loss L = sum(y * R) for a fixed random R (so dL/dy = R, fed to the rule as
 * the function input dy), the rule's gradient ops appended and evaluated with ref_run, and
 * every coordinate of every differentiable operand compared with
 *   (L(x + h e_j) - L(x - h e_j)) / 2h,  h = 1e-6.
 * Pass criterion: |analytic - fd| <= 1e-6 * max(1, |analytic|, |fd|), a relative error
 * below 1e-6 with an absolute floor near zero (central differences in float64 are good to
 * ~1e-9 here: truncation h^2 ~ 1e-12, rounding ~ 1e-16 * |L| / h).
 *
 * The loop over OP_TABLE fails for an op whose rule is neither checked here nor grad_none
 * with an entry in EXEMPT (which says why it has no gradient). Inputs avoid kinks and ties
 * (relu at 0, equal maxima) by being random: the chance of landing within h of one is ~1e-6.
 */
#include "op_test_util.h"
#include "cfunc_test_util.h"

#define END NULL
#define FD_STEP 1e-6
#define FD_TOL 1e-6

/* ---- random numbers (fixed seed, so failures reproduce) ----------------------------------- */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static double uniform(double lo, double hi) {
    /* splitmix64 */
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return lo + (hi - lo) * (double)(z >> 11) / 9007199254740992.0;
}

/* ---- the checking harness ---------------------------------------------------------------- */

enum { RANDOM = 0, POSITIVE = 1, CONSTANT = 2 }; /* input flags */

typedef struct Check {
    TestCtx c;
    double *owned[TU_MAX_INPUTS];
    bool constant[TU_MAX_INPUTS]; /* f32 inputs that are not differentiated (BN buffers) */
} Check;

static int checked[OP_COUNT];         /* configurations checked per op */
static double worst_error = 0.0;      /* largest |a-b| / max(1,|a|,|b|) seen */
static const char *worst_op = "none";

static void check_open(Check *g) {
    memset(g, 0, sizeof *g);
    tu_open(&g->c);
}

static void check_close(Check *g) {
    for (int i = 0; i < TU_MAX_INPUTS; i++) free(g->owned[i]);
    tu_close(&g->c);
}

/* An f32 input with random values in [-1, 1] (POSITIVE: [0.5, 2]). */
static Value *in(Check *g, const char *type, int flags) {
    Shape s = tu_shape(type);
    int64_t n = shape_numel(&s);
    double *data = malloc(sizeof(double) * (size_t)(n ? n : 1));
    assert_non_null(data);
    for (int64_t i = 0; i < n; i++) data[i] = flags & POSITIVE ? uniform(0.5, 2) : uniform(-1, 1);
    int at = g->c.f->n_inputs;
    g->owned[at] = data;
    g->constant[at] = (flags & CONSTANT) != 0;
    return tu_in(&g->c, type, data);
}

/* An input with the given values (ids, rng): never differentiated. */
static Value *given(Check *g, const char *type, const double *data) {
    return tu_in(&g->c, type, data);
}

static Op *op_of(Check *g, const char *name, Value *a, Value *b, Value *c) {
    return tu_op(&g->c, name, a, b, c, END);
}

/* Runs f on the inputs' data into outs (one tensor per output). */
static void run(Check *g, RefTensor *ins, RefTensor *outs) {
    char err[1024];
    if (ref_run(g->c.f, ins, ref_store_lookup, &g->c.params, outs, NULL, err, sizeof err) != 0)
        fail_msg("ref_run: %s", err);
}

/* L = sum(y * R), evaluating only the first output y. */
static double loss_of(Check *g, RefTensor *ins, const RefTensor *r) {
    RefTensor outs[1 + TU_MAX_INPUTS];
    Function *f = g->c.f;
    int n_outputs = f->n_outputs;
    f->n_outputs = 1; /* only y */
    run(g, ins, outs);
    f->n_outputs = n_outputs;
    double loss = 0.0;
    for (int64_t i = 0; i < ref_tensor_numel(r); i++) loss += outs[0].data[i] * r->data[i];
    ref_tensor_free(&outs[0]);
    return loss;
}

static void compare(const Op *op, int operand, int64_t j, double analytic, double fd) {
    double scale = fmax(1.0, fmax(fabs(analytic), fabs(fd)));
    double rel = fabs(analytic - fd) / scale;
    if (!(rel <= worst_error)) {
        worst_error = rel;
        worst_op = op_info(op->kind)->name;
    }
    if (!(fabs(analytic - fd) <= FD_TOL * scale))
        fail_msg("%s: d loss / d operand %d [%lld]: rule %.12g, finite differences %.12g "
                 "(relative error %.3g)",
                 op_info(op->kind)->name, operand, (long long)j, analytic, fd, rel);
}

/* Checks op's gradient rule on every differentiable operand (f32, not CONSTANT), then closes
 * the check. The op's operands must be function inputs. */
static void check(Check *g, Op *op) {
    Function *f = g->c.f;
    char err[1024];
    if (tu_infer(op, err, sizeof err) != 0) fail_msg("shape rule: %s", err);
    Value *dy = func_add_input(f, "dy", DT_F32, op->result->shape);
    int dy_at = f->n_inputs - 1;
    func_add_output(f, "y", op->result);

    bool need[TU_MAX_INPUTS] = {false};
    int input_of[TU_MAX_INPUTS]; /* operand -> function input index */
    for (int i = 0; i < op->n_inputs; i++) {
        Value *v = op->inputs[i];
        assert_null(v->def);
        input_of[i] = -1;
        for (int k = 0; k < f->n_inputs; k++)
            if (f->inputs[k] == v) input_of[i] = k;
        need[i] = v->dtype == DT_F32 && !g->constant[input_of[i]];
    }
    Value *grads[TU_MAX_INPUTS] = {NULL};
    if (op_info(op->kind)->grad_rule(f, op, dy, need, grads, err, sizeof err) != 0)
        fail_msg("%s gradient rule: %s", op_info(op->kind)->name, err);
    static const char *const out_names[] = {"grad0", "grad1", "grad2", "grad3", "grad4"};
    for (int i = 0; i < op->n_inputs; i++)
        if (need[i]) func_add_output(f, out_names[i], grads[i]);
    /* Autodiff often needs only some operands (frozen weights, ids): asking for one operand
     * alone must build the same gradient. Those outputs follow the full set's. */
    static const char *const alone_names[] = {"alone0", "alone1", "alone2", "alone3", "alone4"};
    for (int i = 0; i < op->n_inputs; i++) {
        if (!need[i]) continue;
        bool only[TU_MAX_INPUTS] = {false};
        only[i] = true;
        Value *alone[TU_MAX_INPUTS] = {NULL};
        if (op_info(op->kind)->grad_rule(f, op, dy, only, alone, err, sizeof err) != 0)
            fail_msg("%s gradient rule for operand %d alone: %s", op_info(op->kind)->name, i, err);
        for (int k = 0; k < op->n_inputs; k++)
            if (k != i && alone[k]) fail_msg("%s: built a gradient for operand %d unasked", op_info(op->kind)->name, k);
        func_add_output(f, alone_names[i], alone[i]);
    }
    Diag d;
    if (ir_verify_function(f, true, &d) != 0) fail_msg("verify: %s", d.msg);

    /* Input tensors; dy's slot gets R. */
    RefTensor ins[TU_MAX_INPUTS], outs[1 + 2 * TU_MAX_INPUTS];
    for (int k = 0; k < f->n_inputs; k++) {
        const Value *v = f->inputs[k];
        assert_int_equal(ref_tensor_init(&ins[k], v->dtype, v->shape), 0);
        for (int64_t j = 0; j < shape_numel(&v->shape); j++)
            ins[k].data[j] = k == dy_at ? uniform(-1, 1) : g->c.data[k] ? g->c.data[k][j] : 0.0;
    }
    run(g, ins, outs);

    int n_needed = 0;
    for (int i = 0; i < op->n_inputs; i++) n_needed += need[i];
    for (int k = 0; k < n_needed; k++) /* the same ops on the same data: the same numbers */
        for (int64_t j = 0; j < ref_tensor_numel(&outs[1 + k]); j++)
            if (outs[1 + k].data[j] != outs[1 + n_needed + k].data[j])
                fail_msg("%s: gradient %d differs when built alone", op_info(op->kind)->name, k);
    int out = 1;
    for (int i = 0; i < op->n_inputs; i++) {
        if (!need[i]) continue;
        RefTensor *x = &ins[input_of[i]];
        for (int64_t j = 0; j < ref_tensor_numel(x); j++) {
            double saved = x->data[j];
            x->data[j] = saved + FD_STEP;
            double up = loss_of(g, ins, &ins[dy_at]);
            x->data[j] = saved - FD_STEP;
            double down = loss_of(g, ins, &ins[dy_at]);
            x->data[j] = saved;
            compare(op, i, j, outs[out].data[j], (up - down) / (2 * FD_STEP));
        }
        out++;
    }
    for (int o = 0; o < f->n_outputs; o++) ref_tensor_free(&outs[o]);
    for (int k = 0; k < f->n_inputs; k++) ref_tensor_free(&ins[k]);
    checked[op->kind]++;
    check_close(g);
}

/* ---- cases: one function per op, each checking one or more configurations ----------------- */

static void unary(const char *name, int flags) {
    Check g;
    check_open(&g);
    Op *op = op_of(&g, name, in(&g, "f32[3,4]", flags), END, END);
    if (op_attr_index(op->kind, "factor") >= 0) op_set_float(op, "factor", -1.5);
    if (op_attr_index(op->kind, "dtype") >= 0) op_set_string(op, "dtype", "f32");
    check(&g, op);
}

static void case_relu(void) { unary("relu", RANDOM); }
static void case_neg(void) { unary("neg", RANDOM); }
static void case_exp(void) { unary("exp", RANDOM); }
static void case_log(void) { unary("log", POSITIVE); }
static void case_sqrt(void) { unary("sqrt", POSITIVE); }
static void case_rsqrt(void) { unary("rsqrt", POSITIVE); }
static void case_tanh(void) { unary("tanh", RANDOM); }
static void case_cos(void) { unary("cos", RANDOM); }
static void case_floor(void) { unary("floor", RANDOM); }
static void case_scale(void) { unary("scale", RANDOM); }
static void case_cast(void) { unary("cast", RANDOM); } /* f32 -> f32 */

static void case_dropout(void) {
    Check g;
    check_open(&g);
    static const double rng[] = {42, 7};
    Op *op = op_of(&g, "dropout", in(&g, "f32[4,8]", RANDOM), given(&g, "i32[2]", rng), END);
    op_set_float(op, "p", 0.3);
    op_set_int(op, "stream", 5);
    check(&g, op);
}

/* Binary ops over shape pairs that exercise numpy broadcasting on either side. */
static void binary(const char *name, int flags_b) {
    static const char *const pairs[][2] = {
        {"f32[3,4]", "f32[3,4]"}, {"f32[2,3,4]", "f32[4]"}, {"f32[3,1]", "f32[1,4]"},
        {"f32[]", "f32[2,3]"},    {"f32[2,1,4]", "f32[3,1]"},
    };
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        Check g;
        check_open(&g);
        Value *a = in(&g, pairs[i][0], RANDOM), *b = in(&g, pairs[i][1], flags_b);
        check(&g, op_of(&g, name, a, b, END));
    }
}

static void case_add(void) { binary("add", RANDOM); }
static void case_sub(void) { binary("sub", RANDOM); }
static void case_mul(void) { binary("mul", RANDOM); }
static void case_div(void) { binary("div", POSITIVE); }
static void case_minimum(void) { binary("minimum", RANDOM); }
static void case_maximum(void) { binary("maximum", RANDOM); }
static void case_equal(void) { binary("equal", RANDOM); }
/* a given 0/1 mask (constant: a nudged 0 would flip the choice), broadcast both ways */
static void case_where(void) {
    static const double mask[] = {1, 0, 0, 1};
    Check g;
    check_open(&g);
    Value *c = given(&g, "f32[4,1]", mask), *a = in(&g, "f32[4,3]", RANDOM), *b = in(&g, "f32[3]", RANDOM);
    check(&g, op_of(&g, "where", c, a, b));
}

static void case_call_scalar_args(void);

/* call: the derived gradient functions of a two-operand C function with a branch, operands
 * broadcast both ways; then the same with a scalar argument */
static void case_call(void) {
    Check g;
    check_open(&g);
    Value *a = in(&g, "f32[3,1]", RANDOM), *b = in(&g, "f32[4]", RANDOM);
    Op *op = op_of(&g, "call", a, b, NULL);
    op_set_string(op, "fn", tu_cfunc_blend(g.c.m));
    check(&g, op);
    case_call_scalar_args();
}

/* call with a scalar argument: the gradients of the tensor operands at t = 0.35 (the scalar
 * is a constant of the op: the check varies only the operands) */
static void case_call_scalar_args(void) {
    Check g;
    check_open(&g);
    Value *a = in(&g, "f32[3,1]", RANDOM), *b = in(&g, "f32[4]", RANDOM);
    Op *op = op_of(&g, "call", a, b, NULL);
    op_set_string(op, "fn", tu_cfunc_gate(g.c.m));
    op_set_floats(op, "args", (const double[]){0.35}, 1);
    check(&g, op);
}

/* ---- layout ------------------------------------------------------------------------------ */

static void case_broadcast(void) {
    static const char *const from[] = {"f32[3,1]", "f32[4]"};
    for (int i = 0; i < 2; i++) {
        Check g;
        check_open(&g);
        Op *op = op_of(&g, "broadcast", in(&g, from[i], RANDOM), END, END);
        tu_ints(op, "shape", 3, 2, 3, 4);
        check(&g, op);
    }
}

static void case_reduce_to_shape(void) {
    Check g;
    check_open(&g);
    Op *op = op_of(&g, "reduce_to_shape", in(&g, "f32[2,3,4]", RANDOM), END, END);
    tu_ints(op, "shape", 2, 3, 1);
    check(&g, op);
    check_open(&g);
    op = op_of(&g, "reduce_to_shape", in(&g, "f32[2,3,4]", RANDOM), END, END);
    tu_ints(op, "shape", 1, 4);
    check(&g, op);
}

static void case_reshape(void) {
    Check g;
    check_open(&g);
    Op *op = op_of(&g, "reshape", in(&g, "f32[2,6]", RANDOM), END, END);
    tu_ints(op, "shape", 3, 3, -1, 2);
    check(&g, op);
}

static void case_transpose(void) {
    Check g;
    check_open(&g);
    Op *op = op_of(&g, "transpose", in(&g, "f32[2,3,4]", RANDOM), END, END);
    tu_ints(op, "perm", 3, 2, 0, 1);
    check(&g, op);
}

static void case_slice(void) {
    Check g;
    check_open(&g);
    Op *op = op_of(&g, "slice", in(&g, "f32[5,4]", RANDOM), END, END);
    op_set_int(op, "axis", 0);
    op_set_int(op, "start", 1);
    op_set_int(op, "end", 5);
    op_set_int(op, "step", 2);
    check(&g, op);
    check_open(&g);
    op = op_of(&g, "slice", in(&g, "f32[2,3,5]", RANDOM), END, END);
    op_set_int(op, "axis", -1);
    op_set_int(op, "start", 0);
    op_set_int(op, "end", 3);
    check(&g, op);
}

static void case_concat(void) {
    Check g;
    check_open(&g);
    Op *op = op_of(&g, "concat", in(&g, "f32[2,3]", RANDOM), in(&g, "f32[2,1]", RANDOM),
                   in(&g, "f32[2,2]", RANDOM));
    op_set_int(op, "axis", 1);
    check(&g, op);
    check_open(&g);
    op = op_of(&g, "concat", in(&g, "f32[1,3]", RANDOM), in(&g, "f32[2,3]", RANDOM), END);
    op_set_int(op, "axis", -2);
    check(&g, op);
}

static void case_embedding(void) {
    Check g;
    check_open(&g);
    static const double ids[] = {1, 3, 1, 0, 3, 3}; /* repeated ids accumulate */
    check(&g, op_of(&g, "embedding", in(&g, "f32[5,3]", RANDOM), given(&g, "i32[2,3]", ids), END));
}

/* ---- reductions ------------------------------------------------------------------------------ */

static void reduction(const char *name) {
    static const struct {
        int n, axes[2];
        bool keepdim;
    } configs[] = {{1, {1}, false}, {2, {0, 2}, true}, {1, {-1}, false}, {2, {0, 1}, false}};
    for (size_t i = 0; i < sizeof configs / sizeof configs[0]; i++) {
        Check g;
        check_open(&g);
        Op *op = op_of(&g, name, in(&g, "f32[2,3,4]", RANDOM), END, END);
        int64_t axes[2] = {configs[i].axes[0], configs[i].axes[1]};
        op_set_ints(op, "axes", axes, configs[i].n);
        op_set_bool(op, "keepdim", configs[i].keepdim);
        check(&g, op);
    }
}

static void case_sum(void) { reduction("sum"); }
static void case_mean(void) { reduction("mean"); }
static void case_max(void) { reduction("max"); }

static void case_softmax(void) {
    for (int axis = -1; axis <= 1; axis += 2) { /* last axis, and a middle one */
        Check g;
        check_open(&g);
        Op *op = op_of(&g, "softmax", in(&g, "f32[2,3,4]", RANDOM), END, END);
        op_set_int(op, "axis", axis);
        check(&g, op);
    }
}

static void case_layer_norm(void) {
    Check g;
    check_open(&g);
    check(&g, op_of(&g, "layer_norm", in(&g, "f32[2,3,5]", RANDOM), in(&g, "f32[5]", RANDOM),
                    in(&g, "f32[5]", RANDOM)));
}

static void case_batch_norm(void) {
    static const char *const shapes[] = {"f32[3,2,2,2]", "f32[4,3]", "f32[3,2,2,2]", "f32[4,3]"};
    for (int i = 0; i < 4; i++) {
        bool training = i < 2;
        const char *c = strcmp(shapes[i], "f32[4,3]") == 0 ? "f32[3]" : "f32[2]";
        Check g;
        check_open(&g);
        Value *x = in(&g, shapes[i], RANDOM), *w = in(&g, c, RANDOM), *b = in(&g, c, RANDOM);
        Value *rm = in(&g, c, CONSTANT), *rv = in(&g, c, CONSTANT | POSITIVE);
        Value *ins[5] = {x, w, b, rm, rv};
        Op *op = func_add_op(g.c.f, OP_BATCH_NORM, ins, 5, NULL, SRCLOC_NONE);
        op_set_bool(op, "training", training);
        check(&g, op);
    }
}

static void case_cross_entropy(void) {
    /* ignore_index 0: rows 1 and 4 are ignored */
    static const double t0[] = {1, 0, 3, 2, 0}, t1[] = {0, 2, 3, 1, 0};
    Check g;
    check_open(&g);
    Op *op = op_of(&g, "cross_entropy", in(&g, "f32[5,4]", RANDOM), given(&g, "i32[5]", t0), END);
    op_set_int(op, "ignore_index", 0);
    check(&g, op);
    check_open(&g); /* the default ignores nothing */
    check(&g, op_of(&g, "cross_entropy", in(&g, "f32[5,4]", RANDOM), given(&g, "i32[5]", t1), END));
}

static void case_max_pool2d(void) {
    Check g;
    check_open(&g);
    Op *op = op_of(&g, "max_pool2d", in(&g, "f32[1,2,5,5]", RANDOM), END, END);
    tu_ints(op, "kernel", 2, 3, 3);
    tu_ints(op, "stride", 2, 2, 2);
    tu_ints(op, "padding", 2, 1, 1);
    check(&g, op);
    check_open(&g); /* overlapping windows, no padding, rectangular */
    op = op_of(&g, "max_pool2d", in(&g, "f32[2,1,4,5]", RANDOM), END, END);
    tu_ints(op, "kernel", 2, 2, 3);
    tu_ints(op, "stride", 2, 1, 1);
    check(&g, op);
}

static void case_adaptive_avg_pool2d(void) {
    static const char *const from[] = {"f32[1,2,5,7]", "f32[2,1,2,3]"};
    static const int to[][2] = {{3, 3}, {4, 5}}; /* down, then up (overlapping bins) */
    for (int i = 0; i < 2; i++) {
        Check g;
        check_open(&g);
        Op *op = op_of(&g, "adaptive_avg_pool2d", in(&g, from[i], RANDOM), END, END);
        tu_ints(op, "output", 2, to[i][0], to[i][1]);
        check(&g, op);
    }
}

/* ---- contractions ----------------------------------------------------------------------------- */

static void case_matmul(void) {
    static const struct {
        const char *a, *b;
        bool ta, tb;
    } configs[] = {
        {"f32[3,4]", "f32[4,2]", false, false},     {"f32[4,3]", "f32[4,2]", true, false},
        {"f32[3,4]", "f32[2,4]", false, true},      {"f32[4,3]", "f32[2,4]", true, true},
        {"f32[2,1,3,4]", "f32[3,4,2]", false, false}, /* both batch sides broadcast */
        {"f32[3,4]", "f32[2,4,5]", false, false},     /* a shared across the batch */
        {"f32[2,4,3]", "f32[5,4]", true, true},
    };
    for (size_t i = 0; i < sizeof configs / sizeof configs[0]; i++) {
        Check g;
        check_open(&g);
        Op *op = op_of(&g, "matmul", in(&g, configs[i].a, RANDOM), in(&g, configs[i].b, RANDOM), END);
        op_set_bool(op, "transpose_a", configs[i].ta);
        op_set_bool(op, "transpose_b", configs[i].tb);
        check(&g, op);
    }
}

static void case_linear(void) {
    Check g;
    check_open(&g);
    check(&g, op_of(&g, "linear", in(&g, "f32[2,3,4]", RANDOM), in(&g, "f32[5,4]", RANDOM),
                    in(&g, "f32[5]", RANDOM)));
    check_open(&g);
    check(&g, op_of(&g, "linear", in(&g, "f32[4]", RANDOM), in(&g, "f32[2,4]", RANDOM), END));
}

static void case_conv2d(void) {
    static const struct {
        const char *x, *w, *bias; /* bias NULL: none */
        int stride[2], pad[2], dil[2], groups;
    } configs[] = {
        {"f32[2,4,5,5]", "f32[6,2,3,3]", "f32[6]", {2, 2}, {1, 1}, {1, 1}, 2},
        {"f32[1,2,6,6]", "f32[3,2,2,2]", NULL, {1, 1}, {0, 0}, {2, 2}, 1},
        {"f32[1,3,4,5]", "f32[2,3,3,3]", "f32[2]", {1, 2}, {1, 0}, {1, 1}, 1},
        {"f32[1,2,5,5]", "f32[2,1,3,3]", NULL, {2, 1}, {2, 1}, {2, 1}, 2}, /* depthwise */
    };
    for (size_t i = 0; i < sizeof configs / sizeof configs[0]; i++) {
        Check g;
        check_open(&g);
        Value *x = in(&g, configs[i].x, RANDOM), *w = in(&g, configs[i].w, RANDOM);
        Value *b = configs[i].bias ? in(&g, configs[i].bias, RANDOM) : NULL;
        Op *op = op_of(&g, "conv2d", x, w, b);
        tu_ints(op, "stride", 2, configs[i].stride[0], configs[i].stride[1]);
        tu_ints(op, "padding", 2, configs[i].pad[0], configs[i].pad[1]);
        tu_ints(op, "dilation", 2, configs[i].dil[0], configs[i].dil[1]);
        op_set_int(op, "groups", configs[i].groups);
        check(&g, op);
    }
}

/* ---- the loop over the op table ------------------------------------------------------------- */

typedef struct GradCase {
    const char *op;
    void (*run)(void);
} GradCase;

static const GradCase CASES[] = {
    {"relu", case_relu},       {"neg", case_neg},
    {"exp", case_exp},         {"log", case_log},
    {"sqrt", case_sqrt},       {"rsqrt", case_rsqrt},
    {"tanh", case_tanh},       {"cos", case_cos},
    {"floor", case_floor},     {"scale", case_scale},
    {"cast", case_cast},       {"dropout", case_dropout},
    {"add", case_add},         {"sub", case_sub},
    {"mul", case_mul},         {"div", case_div},
    {"minimum", case_minimum}, {"maximum", case_maximum},
    {"equal", case_equal},     {"where", case_where},
    {"call", case_call},
    {"broadcast", case_broadcast},
    {"reshape", case_reshape}, {"transpose", case_transpose},
    {"slice", case_slice},     {"concat", case_concat},
    {"embedding", case_embedding}, {"sum", case_sum},
    {"mean", case_mean},       {"max", case_max},
    {"reduce_to_shape", case_reduce_to_shape}, {"softmax", case_softmax},
    {"layer_norm", case_layer_norm}, {"batch_norm", case_batch_norm},
    {"cross_entropy", case_cross_entropy}, {"max_pool2d", case_max_pool2d},
    {"adaptive_avg_pool2d", case_adaptive_avg_pool2d}, {"matmul", case_matmul},
    {"linear", case_linear},   {"conv2d", case_conv2d},
};

/* Ops whose rule is grad_none, and why they need no gradient check. */
static const struct {
    const char *op, *why;
} EXEMPT[] = {
    {"param", "a leaf: autodiff collects the gradient of its result, there is no operand"},
    {"full", "a source op: no operands"},
    {"sinusoid_table", "a source op: no operands"},
    {"causal_mask", "a source op: no operands"},
    {"padding_mask", "its only operand is integer ids"},
    {"update_slice", "serves the sampling entry points only; nothing trains through a cache"},
    {"position_mask", "its only operand is an integer position"},
    {"scatter_add", "a backward op (embedding's): gradients are not differentiated again"},
    {"relu_grad", "a backward op: gradients are not differentiated again"},
    {"slice_grad", "a backward op: gradients are not differentiated again"},
    {"max_pool2d_grad", "a backward op: gradients are not differentiated again"},
    {"adaptive_avg_pool2d_grad", "a backward op: gradients are not differentiated again"},
    {"conv2d_grad_input", "a backward op: gradients are not differentiated again"},
    {"conv2d_grad_weight", "a backward op: gradients are not differentiated again"},
    {"cross_entropy_grad", "a backward op: gradients are not differentiated again"},
};

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

static void test_every_gradient_matches_finite_differences(void **state) {
    (void)state;
    for (int i = 0; i < COUNT(CASES); i++) {
        int kind = op_kind_from_name(CASES[i].op);
        if (kind < 0) fail_msg("case for unknown op %s", CASES[i].op);
        if (OP_TABLE[kind].grad_rule == grad_none)
            fail_msg("op %s has a gradient case but its rule is grad_none", CASES[i].op);
        CASES[i].run();
        if (checked[kind] == 0) fail_msg("the case for %s checked nothing", CASES[i].op);
    }
    for (int k = 0; k < OP_COUNT; k++) {
        bool exempt = false;
        for (int i = 0; i < COUNT(EXEMPT); i++) exempt |= strcmp(EXEMPT[i].op, OP_TABLE[k].name) == 0;
        if (OP_TABLE[k].grad_rule == grad_none && !exempt)
            fail_msg("op %s has no gradient (grad_none) but no reason in EXEMPT", OP_TABLE[k].name);
        if (OP_TABLE[k].grad_rule != grad_none && exempt)
            fail_msg("op %s is listed in EXEMPT but has a gradient rule", OP_TABLE[k].name);
        if (OP_TABLE[k].grad_rule != grad_none && !checked[k])
            fail_msg("op %s has a gradient rule with no finite-difference case", OP_TABLE[k].name);
    }
    printf("worst relative error over all gradient checks: %.3g (%s)\n", worst_error, worst_op);
}

/* grad_none succeeds when nothing is needed and names the op when something is. */
static void test_grad_none_refuses(void **state) {
    (void)state;
    Check g;
    check_open(&g);
    static const double ids[] = {1, 0};
    Op *op = op_of(&g, "padding_mask", given(&g, "i32[2]", ids), END, END);
    char err[256];
    assert_int_equal(tu_infer(op, err, sizeof err), 0);
    bool none[1] = {false}, yes[1] = {true};
    Value *grads[1] = {NULL};
    assert_int_equal(grad_none(g.c.f, op, op->result, none, grads, err, sizeof err), 0);
    assert_int_equal(grad_none(g.c.f, op, op->result, yes, grads, err, sizeof err), -1);
    assert_non_null(strstr(err, "padding_mask"));
    check_close(&g);
}

/* Rules name their results after the operands, so dumps read "%fc.weight.grad". */
static void test_gradient_names(void **state) {
    (void)state;
    Check g;
    check_open(&g);
    Value *x = in(&g, "f32[2,3]", RANDOM), *w = in(&g, "f32[4,3]", RANDOM);
    value_rename(x, "x");
    value_rename(w, "fc.weight");
    Op *op = op_of(&g, "linear", x, w, END);
    char err[256];
    assert_int_equal(tu_infer(op, err, sizeof err), 0);
    Value *dy = func_add_input(g.c.f, "dy", DT_F32, op->result->shape);
    bool need[2] = {true, true};
    Value *grads[2] = {NULL, NULL};
    assert_int_equal(op_info(op->kind)->grad_rule(g.c.f, op, dy, need, grads, err, sizeof err), 0);
    assert_string_equal(grads[0]->name, "x.grad");
    assert_string_equal(grads[1]->name, "fc.weight.grad");
    check_close(&g);
}

/* Ties, which finite differences cannot check: max over an axis and maximum/minimum split
 * dy evenly among the tied elements, as PyTorch's amax and maximum do. */
static void expect_tie_split(const char *name, const char *type_b, const double *b,
                             const double *want_a) {
    Check g;
    check_open(&g);
    static const double a[] = {1, 2, 2}, dyv[] = {1, 2, 4};
    Value *va = given(&g, "f32[3]", a), *vb = type_b ? given(&g, type_b, b) : NULL;
    Op *op = op_of(&g, name, va, vb, END);
    if (!vb) {
        int64_t axis = 0;
        op_set_ints(op, "axes", &axis, 1);
    }
    char err[256];
    assert_int_equal(tu_infer(op, err, sizeof err), 0);
    Value *dy = tu_in(&g.c, vb ? "f32[3]" : "f32[]", vb ? dyv : dyv + 2);
    bool need[2] = {true, false};
    Value *grads[2] = {NULL, NULL};
    if (op_info(op->kind)->grad_rule(g.c.f, op, dy, need, grads, err, sizeof err) != 0)
        fail_msg("%s", err);
    tu_expect_values(&g.c, grads[0]->def, "f32[3]", want_a, 3, 0);
    check_close(&g);
}

static void test_ties_split_evenly(void **state) {
    (void)state;
    /* max over [1,2,2] with dy 4: the two 2s get 2 each */
    static const double max_want[] = {0, 2, 2};
    expect_tie_split("max", NULL, NULL, max_want);
    /* maximum([1,2,2], [1,3,2]) with dy [1,2,4]: a ties at 0 and 2 (half each), loses at 1 */
    static const double b[] = {1, 3, 2}, maximum_want[] = {0.5, 0, 2};
    expect_tie_split("maximum", "f32[3]", b, maximum_want);
    /* minimum([1,2,2], [1,3,2]): a ties at 0 and 2, wins at 1 */
    static const double minimum_want[] = {0.5, 2, 2};
    expect_tie_split("minimum", "f32[3]", b, minimum_want);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_gradient_matches_finite_differences),
        cmocka_unit_test(test_grad_none_refuses),
        cmocka_unit_test(test_gradient_names),
        cmocka_unit_test(test_ties_split_evenly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
