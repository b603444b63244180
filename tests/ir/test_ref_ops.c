/* test_ref_ops.c — the float64 reference evaluators against values computed by hand (the
 * arithmetic is in the comments next to each case), one case function per op kind; a test
 * loops over OP_TABLE and fails for any op without a case. Plus the Philox known answers
 * and dropout's statistics, determinism and stream independence. */
#include "op_test_util.h"
#include "cfunc_test_util.h"

#define END NULL
#define N(a) ((int64_t)(sizeof(a) / sizeof((a)[0])))
#define TOL 1e-12
#define NEG_INF (-INFINITY)

/* ---- sources ---------------------------------------------------------------------------- */

static void case_param(TestCtx *c) {
    module_add_param(c->m, "w", DT_F32, tu_shape("f32[2]"), PARAM_WEIGHT, true, "zeros",
                     SRCLOC_NONE);
    RefTensor t;
    assert_int_equal(ref_tensor_init(&t, DT_F32, tu_shape("f32[2]")), 0);
    t.data[0] = 1.5;
    t.data[1] = -2;
    assert_int_equal(ref_store_put(&c->params, "w", &t), 0);
    Op *p = tu_op(c, "param", END);
    op_set_string(p, "name", "w");
    static const double want[] = {1.5, -2};
    tu_expect_values(c, p, "f32[2]", want, 2, 0);
}

static void case_full(TestCtx *c) {
    Op *a = tu_op(c, "full", END);
    tu_ints(a, "shape", 2, 2, 2);
    op_set_float(a, "value", 1.5);
    static const double want[] = {1.5, 1.5, 1.5, 1.5};
    tu_expect_values(c, a, "f32[2,2]", want, 4, 0);
}

static void case_sinusoid_table(TestCtx *c) {
    /* dim 4: frequencies 10000^(-0/4) = 1 and 10000^(-2/4) = 0.01.
     * p=0: sin 0, cos 0, sin 0, cos 0 = 0 1 0 1
     * p=1: sin 1, cos 1, sin .01, cos .01 */
    Op *a = tu_op(c, "sinusoid_table", END);
    op_set_int(a, "length", 2);
    op_set_int(a, "dim", 4);
    static const double want[] = {0, 1, 0, 1, 0.8414709848078965, 0.5403023058681398,
                                  0.009999833334166664, 0.9999500004166653};
    tu_expect_values(c, a, "f32[2,4]", want, 8, 1e-13);
}

static void case_causal_mask(TestCtx *c) {
    Op *a = tu_op(c, "causal_mask", END);
    op_set_int(a, "size", 3);
    static const double want[] = {0, NEG_INF, NEG_INF, 0, 0, NEG_INF, 0, 0, 0};
    tu_expect_values(c, a, "f32[3,3]", want, 9, 0);
}

/* ---- elementwise ------------------------------------------------------------------------ */

static void unary(TestCtx *c, const char *name, const double *x, const double *want, int n,
                  double tol) {
    char type[32];
    snprintf(type, sizeof type, "f32[%d]", n);
    Op *a = tu_op(c, name, tu_in(c, type, x), END);
    if (op_attr_index(a->kind, "factor") >= 0) op_set_float(a, "factor", 2.5);
    tu_expect_values(c, a, type, want, n, tol);
}

static void case_relu(TestCtx *c) {
    static const double x[] = {-1, 0, 2}, w[] = {0, 0, 2};
    unary(c, "relu", x, w, 3, 0);
}
static void case_neg(TestCtx *c) {
    static const double x[] = {1, -2}, w[] = {-1, 2};
    unary(c, "neg", x, w, 2, 0);
}
static void case_exp(TestCtx *c) {
    static const double x[] = {0, 1}, w[] = {1, 2.718281828459045};
    unary(c, "exp", x, w, 2, TOL);
}
static void case_log(TestCtx *c) {
    static const double x[] = {1, 2.718281828459045, 0}, w[] = {0, 1, NEG_INF};
    unary(c, "log", x, w, 3, TOL);
}
static void case_sqrt(TestCtx *c) {
    static const double x[] = {4, 9, 0}, w[] = {2, 3, 0};
    unary(c, "sqrt", x, w, 3, 0);
}
static void case_rsqrt(TestCtx *c) {
    static const double x[] = {4, 0.25}, w[] = {0.5, 2};
    unary(c, "rsqrt", x, w, 2, 0);
}
static void case_tanh(TestCtx *c) {
    /* tanh 1 = (e^2 - 1) / (e^2 + 1) = 6.389056 / 8.389056 */
    static const double x[] = {0, 1, -1}, w[] = {0, 0.7615941559557649, -0.7615941559557649};
    unary(c, "tanh", x, w, 3, TOL);
}
static void case_scale(TestCtx *c) {
    static const double x[] = {2, -4}, w[] = {5, -10}; /* factor 2.5 */
    unary(c, "scale", x, w, 2, 0);
}

static void case_cast(TestCtx *c) {
    static const double x[] = {1.7, -1.7, 2.0, -0.2}, w[] = {1, -1, 2, 0}; /* toward zero */
    Op *a = tu_op(c, "cast", tu_in(c, "f32[4]", x), END);
    op_set_string(a, "dtype", "i32");
    tu_expect_values(c, a, "i32[4]", w, 4, 0);
}

static void case_dropout(TestCtx *c) {
    /* p = 0 keeps everything and scales by 1/(1-0) = 1. */
    static const double x[] = {1, 2, 3, 4}, rng[] = {7, 3};
    Op *a = tu_op(c, "dropout", tu_in(c, "f32[4]", x), tu_in(c, "i32[2]", rng), END);
    op_set_float(a, "p", 0.0);
    tu_expect_values(c, a, "f32[4]", x, 4, 0);
}

static void case_padding_mask(TestCtx *c) {
    static const double ids[] = {3, 0, 5, 0}, w[] = {0, NEG_INF, 0, NEG_INF};
    Op *a = tu_op(c, "padding_mask", tu_in(c, "i32[2,2]", ids), END);
    tu_expect_values(c, a, "f32[2,2]", w, 4, 0);
}

static void case_cos(TestCtx *c) {
    static const double x[] = {0, 1.5707963267948966, 3.141592653589793}, w[] = {1, 0, -1};
    unary(c, "cos", x, w, 3, TOL);
}
static void case_floor(TestCtx *c) {
    static const double x[] = {-1.5, -1, 0.25, 2.999}, w[] = {-2, -1, 0, 2};
    unary(c, "floor", x, w, 4, 0);
}

static void case_add(TestCtx *c) {
    /* [[1,2,3],[4,5,6]] + [10,20,30] (row broadcast) */
    static const double a[] = {1, 2, 3, 4, 5, 6}, b[] = {10, 20, 30};
    static const double w[] = {11, 22, 33, 14, 25, 36};
    tu_expect_values(c, tu_op(c, "add", tu_in(c, "f32[2,3]", a), tu_in(c, "f32[3]", b), END),
                     "f32[2,3]", w, 6, 0);
}
static void case_sub(TestCtx *c) {
    /* [[1],[2]] - [[10,20]]: both operands broadcast */
    static const double a[] = {1, 2}, b[] = {10, 20}, w[] = {-9, -19, -8, -18};
    tu_expect_values(c, tu_op(c, "sub", tu_in(c, "f32[2,1]", a), tu_in(c, "f32[1,2]", b), END),
                     "f32[2,2]", w, 4, 0);
}
static void case_mul(TestCtx *c) {
    static const double a[] = {3}, b[] = {1, 2}, w[] = {3, 6}; /* scalar * vector */
    tu_expect_values(c, tu_op(c, "mul", tu_in(c, "f32[]", a), tu_in(c, "f32[2]", b), END),
                     "f32[2]", w, 2, 0);
}
static void case_div(TestCtx *c) {
    static const double a[] = {1, 2, 3}, b[] = {2}, w[] = {0.5, 1, 1.5};
    tu_expect_values(c, tu_op(c, "div", tu_in(c, "f32[3]", a), tu_in(c, "f32[1]", b), END),
                     "f32[3]", w, 3, 0);
}

static void case_minimum(TestCtx *c) {
    /* [[1,5],[-3,4]] vs row [2,4]: min per element */
    static const double a[] = {1, 5, -3, 4}, b[] = {2, 4}, w[] = {1, 4, -3, 4};
    tu_expect_values(c, tu_op(c, "minimum", tu_in(c, "f32[2,2]", a), tu_in(c, "f32[2]", b), END),
                     "f32[2,2]", w, 4, 0);
}
static void case_maximum(TestCtx *c) {
    static const double a[] = {1, 5, -3, 4}, b[] = {2, 4}, w[] = {2, 5, 2, 4};
    tu_expect_values(c, tu_op(c, "maximum", tu_in(c, "f32[2,2]", a), tu_in(c, "f32[2]", b), END),
                     "f32[2,2]", w, 4, 0);
}
static void case_equal(TestCtx *c) {
    static const double a[] = {1, 2, 3}, b[] = {1, 0, 3}, w[] = {1, 0, 1};
    tu_expect_values(c, tu_op(c, "equal", tu_in(c, "f32[3]", a), tu_in(c, "f32[3]", b), END),
                     "f32[3]", w, 3, 0);
}

/* the side not chosen is not read: its NaN does not leak (torch.where) */
static void case_where(TestCtx *c) {
    static const double cond[] = {1, 0, 2, 0}, a[] = {1, NAN, 3, 4};
    static const double b2[] = {9, 8, 7, 6}, w2[] = {1, 8, 3, 6};
    tu_expect_values(c, tu_op(c, "where", tu_in(c, "f32[4]", cond), tu_in(c, "f32[4]", a),
                              tu_in(c, "f32[4]", b2), END),
                     "f32[4]", w2, 4, 0);
}

/* call: the tree in float64 per element, operands broadcast; the side a select does not
 * choose does not leak (exp(1000) - b is inf, a * tanh(b) chosen) */
static void case_call(TestCtx *c) {
    static const double a[] = {2, -1, 1000}, b[] = {0.5};
    const double w[] = {2 * tanh(0.5), exp(-1.0) - 0.5, 1000 * tanh(0.5)};
    Op *op = tu_op(c, "call", tu_in(c, "f32[3]", a), tu_in(c, "f32[1]", b), END);
    op_set_string(op, "fn", tu_cfunc_blend(c->m));
    tu_expect_values(c, op, "f32[3]", w, 3, 0);
    /* with a scalar argument (gate(a, b, t), t = 0.5 from args): a > t picks a tanh(b) t;
     * a fresh function, as the first call is this one's only output */
    tu_close(c);
    tu_open(c);
    static const double ga[] = {2, -1, 0.25}, gb[] = {0.5, 3};
    const double gw[] = {2 * tanh(0.5) * 0.5, 2 * tanh(3.0) * 0.5, exp(-1.0) - 0.5 * 0.5,
                         exp(-1.0) - 3 * 0.5, exp(0.25) - 0.5 * 0.5, exp(0.25) - 3 * 0.5};
    Op *g = tu_op(c, "call", tu_in(c, "f32[3,1]", ga), tu_in(c, "f32[2]", gb), END);
    op_set_string(g, "fn", tu_cfunc_gate(c->m));
    op_set_floats(g, "args", (const double[]){0.5}, 1);
    tu_expect_values(c, g, "f32[3,2]", gw, 6, 0);
}

/* ---- layout ----------------------------------------------------------------------------- */

static void case_broadcast(TestCtx *c) {
    static const double x[] = {1, 2}, w[] = {1, 1, 1, 2, 2, 2, 1, 1, 1, 2, 2, 2};
    Op *a = tu_op(c, "broadcast", tu_in(c, "f32[2,1]", x), END);
    tu_ints(a, "shape", 3, 2, 2, 3); /* [2,1] -> [2,2,3]: x[j] fills out[i,j,:] */
    tu_expect_values(c, a, "f32[2,2,3]", w, 12, 0);
}

static void case_reshape(TestCtx *c) {
    static const double x[] = {1, 2, 3, 4, 5, 6};
    Op *a = tu_op(c, "reshape", tu_in(c, "f32[2,3]", x), END);
    tu_ints(a, "shape", 2, 3, -1);
    tu_expect_values(c, a, "f32[3,2]", x, 6, 0);
}

static void case_transpose(TestCtx *c) {
    /* x[i,j,k] = 4i + 2j + k; perm [2,0,1]: out[a,b,c] = x[b,c,a] = 4b + 2c + a */
    static const double x[] = {0, 1, 2, 3, 4, 5, 6, 7}, w[] = {0, 2, 4, 6, 1, 3, 5, 7};
    Op *a = tu_op(c, "transpose", tu_in(c, "f32[2,2,2]", x), END);
    tu_ints(a, "perm", 3, 2, 0, 1);
    tu_expect_values(c, a, "f32[2,2,2]", w, 8, 0);
}

static void case_slice(TestCtx *c) {
    /* rows 0..4 and 5..9; columns 1 and 3 (start 1, end 5, step 2) */
    static const double x[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, w[] = {1, 3, 6, 8};
    Op *a = tu_op(c, "slice", tu_in(c, "f32[2,5]", x), END);
    op_set_int(a, "axis", 1);
    op_set_int(a, "start", 1);
    op_set_int(a, "end", 5);
    op_set_int(a, "step", 2);
    tu_expect_values(c, a, "f32[2,2]", w, 4, 0);
}

static void case_concat(TestCtx *c) {
    /* [[1],[2]] ++ [[3,4],[5,6]] ++ [[7],[8]] along axis 1 */
    static const double a[] = {1, 2}, b[] = {3, 4, 5, 6}, d[] = {7, 8};
    static const double w[] = {1, 3, 4, 7, 2, 5, 6, 8};
    Op *op = tu_op(c, "concat", tu_in(c, "f32[2,1]", a), tu_in(c, "f32[2,2]", b),
                   tu_in(c, "f32[2,1]", d), END);
    op_set_int(op, "axis", 1);
    tu_expect_values(c, op, "f32[2,4]", w, 8, 0);
}

static void case_embedding(TestCtx *c) {
    static const double w[] = {0, 1, 10, 11, 20, 21}, ids[] = {2, 0, 2};
    static const double want[] = {20, 21, 0, 1, 20, 21};
    tu_expect_values(c, tu_op(c, "embedding", tu_in(c, "f32[3,2]", w), tu_in(c, "i32[3]", ids), END),
                     "f32[3,2]", want, 6, 0);
}

/* ---- reductions and normalizations ------------------------------------------------------ */

static const double M23[] = {1, 2, 3, 4, 5, 6}; /* [[1,2,3],[4,5,6]] */

static void case_sum(TestCtx *c) {
    Op *a = tu_op(c, "sum", tu_in(c, "f32[2,3]", M23), END);
    tu_ints(a, "axes", 1, 0);
    static const double w[] = {5, 7, 9};
    tu_expect_values(c, a, "f32[3]", w, 3, 0);
}
static void case_mean(TestCtx *c) {
    Op *a = tu_op(c, "mean", tu_in(c, "f32[2,3]", M23), END);
    tu_ints(a, "axes", 1, -1);
    op_set_bool(a, "keepdim", true);
    static const double w[] = {2, 5}; /* 6/3, 15/3 */
    tu_expect_values(c, a, "f32[2,1]", w, 2, 0);
}
static void case_max(TestCtx *c) {
    static const double x[] = {-5, -1, -7, -2};
    Op *a = tu_op(c, "max", tu_in(c, "f32[2,2]", x), END);
    tu_ints(a, "axes", 2, 0, 1);
    static const double w[] = {-1};
    tu_expect_values(c, a, "f32[]", w, 1, 0);
}
static void case_reduce_to_shape(TestCtx *c) {
    Op *a = tu_op(c, "reduce_to_shape", tu_in(c, "f32[2,3]", M23), END);
    tu_ints(a, "shape", 2, 2, 1);
    static const double w[] = {6, 15};
    tu_expect_values(c, a, "f32[2,1]", w, 2, 0);
}

static void case_softmax(TestCtx *c) {
    /* axis 0 of [[0, 0, 1000], [ln 3, 0, 1000]]: column 0 -> 1/4, 3/4; columns 1 and 2 tie
     * (the 1000s check the max subtraction). */
    static const double x[] = {0, 0, 1000, 1.0986122886681098, 0, 1000};
    static const double w[] = {0.25, 0.5, 0.5, 0.75, 0.5, 0.5};
    Op *a = tu_op(c, "softmax", tu_in(c, "f32[2,3]", x), END);
    op_set_int(a, "axis", 0);
    tu_expect_values(c, a, "f32[2,3]", w, 6, TOL);
}

static void case_layer_norm(TestCtx *c) {
    /* row [1,2,3,4]: mean 2.5, biased var (2.25+.25+.25+2.25)/4 = 1.25; eps .75 -> sqrt 2.
     * normalized [-1.5,-.5,.5,1.5]/sqrt2; weight [1,2,1,1], bias [0,0,1,0].
     * row [2,2,2,2]: var 0 -> normalized 0 -> bias. */
    static const double x[] = {1, 2, 3, 4, 2, 2, 2, 2}, w[] = {1, 2, 1, 1}, b[] = {0, 0, 1, 0};
    static const double want[] = {-1.0606601717798212, -0.7071067811865476, 1.3535533905932737,
                                  1.0606601717798212, 0, 0, 1, 0};
    Op *a = tu_op(c, "layer_norm", tu_in(c, "f32[2,4]", x), tu_in(c, "f32[4]", w),
                  tu_in(c, "f32[4]", b), END);
    op_set_float(a, "eps", 0.75);
    tu_expect_values(c, a, "f32[2,4]", want, 8, TOL);
}

/* x [N=2, C=2, 1, 2]: n0c0 [1,3], n0c1 [2,2], n1c0 [5,7], n1c1 [2,2]; weight [2,1], bias [0,.5] */
static const double BN_X[] = {1, 3, 2, 2, 5, 7, 2, 2};
static const double BN_W[] = {2, 1}, BN_B[] = {0, 0.5};

static Op *bn_op(TestCtx *c, const double *rmean, const double *rvar, bool training,
                 double eps) {
    Op *a = tu_op(c, "batch_norm", tu_in(c, "f32[2,2,1,2]", BN_X), tu_in(c, "f32[2]", BN_W),
                  tu_in(c, "f32[2]", BN_B), tu_in(c, "f32[2]", rmean), tu_in(c, "f32[2]", rvar),
                  END);
    op_set_bool(a, "training", training);
    op_set_float(a, "eps", eps);
    return a;
}

static void case_batch_norm(TestCtx *c) {
    /* training, eps 4: c0 values 1,3,5,7: mean 4, biased var (9+1+1+9)/4 = 5, sqrt(5+4) = 3
     * -> (x-4)/3*2 = -2, -2/3, 2/3, 2. c1 all 2: var 0 -> 0*1 + .5. Running stats unused. */
    static const double rm[] = {100, 100}, rv[] = {100, 100};
    static const double want[] = {-2, -2.0 / 3, 0.5, 0.5, 2.0 / 3, 2, 0.5, 0.5};
    tu_expect_values(c, bn_op(c, rm, rv, true, 4.0), "f32[2,2,1,2]", want, 8, TOL);
}

static void test_batch_norm_eval(void **state) {
    (void)state;
    /* eval, eps 1: running mean [1,2], var [3,0]: c0 (x-1)/2*2 = 0,2,4,6; c1 (2-2)/1 + .5 */
    TestCtx c;
    tu_open(&c);
    static const double rm[] = {1, 2}, rv[] = {3, 0};
    static const double want[] = {0, 2, 0.5, 0.5, 4, 6, 0.5, 0.5};
    tu_expect_values(&c, bn_op(&c, rm, rv, false, 1.0), "f32[2,2,1,2]", want, 8, TOL);
    tu_close(&c);
}

static void case_cross_entropy(TestCtx *c) {
    /* row0 [0,0,0] target 1: -log(1/3) = ln 3.  row1 [ln2,0,0] target 0: exp 2,1,1 ->
     * -log(2/4) = ln 2.  row2 target 2 == ignore_index: skipped.  mean (ln3+ln2)/2 = ln6/2. */
    static const double logits[] = {0, 0, 0, 0.6931471805599453, 0, 0, 1000, -1000, 5};
    static const double target[] = {1, 0, 2}, want[] = {0.8958797346140275};
    Op *a = tu_op(c, "cross_entropy", tu_in(c, "f32[3,3]", logits), tu_in(c, "i32[3]", target),
                  END);
    op_set_int(a, "ignore_index", 2);
    tu_expect_values(c, a, "f32[]", want, 1, TOL);
}

/* The default ignore_index ignores nothing (PyTorch's -100): class 0 counts. Rows [1,2] target 0:
 * log(e + e^2) - 1 = log(1 + e); [3,4] target 1: log(e^3 + e^4) - 4 = log(1 + 1/e). Asked to
 * ignore class 0, only the second row is left. */
static void test_cross_entropy_class0(void **state) {
    (void)state;
    static const double l4[] = {1, 2, 3, 4}, t[] = {0, 1};
    static const double both[] = {(1.3132616875182228 + 0.31326168751822286) / 2};
    static const double second[] = {0.31326168751822286};
    TestCtx c;
    tu_open(&c);
    Op *ce = tu_op(&c, "cross_entropy", tu_in(&c, "f32[2,2]", l4), tu_in(&c, "i32[2]", t), END);
    assert_int_equal(op_int(ce, "ignore_index"), -100);
    tu_expect_values(&c, ce, "f32[]", both, 1, TOL);
    tu_close(&c);
    tu_open(&c);
    ce = tu_op(&c, "cross_entropy", tu_in(&c, "f32[2,2]", l4), tu_in(&c, "i32[2]", t), END);
    op_set_int(ce, "ignore_index", 0);
    tu_expect_values(&c, ce, "f32[]", second, 1, TOL);
    tu_close(&c);
}

static void test_cross_entropy_edges(void **state) {
    (void)state;
    TestCtx c;
    /* large logits stay finite: [1000,1000] target 0 -> ln 2 */
    tu_open(&c);
    static const double big[] = {1000, 1000}, t0[] = {0}, ln2[] = {0.6931471805599453};
    Op *ce = tu_op(&c, "cross_entropy", tu_in(&c, "f32[1,2]", big), tu_in(&c, "i32[1]", t0), END);
    tu_expect_values(&c, ce, "f32[]", ln2, 1, TOL);
    tu_close(&c);
    /* every target ignored (ignore_index 0, all targets 0) -> NaN, as in PyTorch */
    tu_open(&c);
    static const double pads[] = {0, 0}, l4[] = {1, 2, 3, 4}, nan1[] = {NAN};
    Op *all = tu_op(&c, "cross_entropy", tu_in(&c, "f32[2,2]", l4), tu_in(&c, "i32[2]", pads), END);
    op_set_int(all, "ignore_index", 0);
    tu_expect_values(&c, all, "f32[]", nan1, 1, 0);
    tu_close(&c);
    /* a target outside [0, V) that is not ignored is an error naming the id */
    tu_open(&c);
    static const double bad[] = {1, 7};
    tu_expect_run_error(&c, tu_op(&c, "cross_entropy", tu_in(&c, "f32[2,2]", l4), tu_in(&c, "i32[2]", bad), END),
                        "7");
    tu_close(&c);
}

static void case_max_pool2d(TestCtx *c) {
    /* x = -(1..9) as 3x3, kernel 2, stride 2, padding 1 -> 2x2 windows:
     * (rows -1..0, cols -1..0) -> {-1}; (rows -1..0, cols 1..2) -> {-2,-3};
     * (rows 1..2, cols -1..0) -> {-4,-7}; (rows 1..2, cols 1..2) -> {-5,-6,-8,-9}.
     * Zero padding would have produced 0s: the negatives check -inf padding. */
    static const double x[] = {-1, -2, -3, -4, -5, -6, -7, -8, -9}, w[] = {-1, -2, -4, -5};
    Op *a = tu_op(c, "max_pool2d", tu_in(c, "f32[1,1,3,3]", x), END);
    tu_ints(a, "kernel", 2, 2, 2);
    tu_ints(a, "stride", 2, 2, 2);
    tu_ints(a, "padding", 2, 1, 1);
    tu_expect_values(c, a, "f32[1,1,2,2]", w, 4, 0);
}

static void case_adaptive_avg_pool2d(TestCtx *c) {
    /* 8 -> 14 along W (H 1 -> 1): bins [floor(4i/7), ceil(4(i+1)/7)):
     * [0,1) [0,2) [1,2) [1,3) [2,3) [2,4) [3,4) [4,5) [4,6) [5,6) [5,7) [6,7) [6,8) [7,8)
     * with x[j] = j the means are: */
    static const double x[] = {0, 1, 2, 3, 4, 5, 6, 7};
    static const double w[] = {0, 0.5, 1, 1.5, 2, 2.5, 3, 4, 4.5, 5, 5.5, 6, 6.5, 7};
    Op *a = tu_op(c, "adaptive_avg_pool2d", tu_in(c, "f32[1,1,1,8]", x), END);
    tu_ints(a, "output", 2, 1, 14);
    tu_expect_values(c, a, "f32[1,1,1,14]", w, 14, TOL);
}

static void test_adaptive_avg_pool2d_7_and_8_to_14(void **state) {
    (void)state;
    static double x7[49], x8[64], w7[196], w8[196];
    /* x[y][x] = 10y + x; bins average rows and columns separably: out = 10*rowmean + colmean */
    for (int y = 0; y < 7; y++)
        for (int xx = 0; xx < 7; xx++) x7[y * 7 + xx] = 10 * y + xx;
    for (int y = 0; y < 8; y++)
        for (int xx = 0; xx < 8; xx++) x8[y * 8 + xx] = 10 * y + xx;
    /* 7 -> 14: bins [floor(i/2), ceil((i+1)/2)) = {floor(i/2)}: each input row used twice. */
    for (int i = 0; i < 14; i++)
        for (int j = 0; j < 14; j++) w7[i * 14 + j] = 10 * (i / 2) + j / 2;
    /* 8 -> 14: bin means of 0..7 from the hand-listed bins in case_adaptive_avg_pool2d */
    static const double m8[] = {0, 0.5, 1, 1.5, 2, 2.5, 3, 4, 4.5, 5, 5.5, 6, 6.5, 7};
    for (int i = 0; i < 14; i++)
        for (int j = 0; j < 14; j++) w8[i * 14 + j] = 10 * m8[i] + m8[j];
    /* spot values written out: out8[1][3] = 10*.5 + 1.5; out8[13][0] = 70; out8[8][9] = 50 */
    assert_true(w8[1 * 14 + 3] == 6.5 && w8[13 * 14] == 70 && w8[8 * 14 + 9] == 50);
    TestCtx c;
    tu_open(&c);
    Op *a = tu_op(&c, "adaptive_avg_pool2d", tu_in(&c, "f32[1,1,7,7]", x7), END);
    tu_ints(a, "output", 2, 14, 14);
    tu_expect_values(&c, a, "f32[1,1,14,14]", w7, 196, TOL);
    tu_close(&c);
    tu_open(&c);
    Op *b = tu_op(&c, "adaptive_avg_pool2d", tu_in(&c, "f32[1,1,8,8]", x8), END);
    tu_ints(b, "output", 2, 14, 14);
    tu_expect_values(&c, b, "f32[1,1,14,14]", w8, 196, TOL);
    tu_close(&c);
}

/* ---- contractions ----------------------------------------------------------------------- */

static void case_matmul(TestCtx *c) {
    /* batched a [2,2,2] @ shared b [2,2]:
     * [[1,2],[3,4]] @ [[5,6],[7,8]] = [[19,22],[43,50]]; [[0,1],[1,0]] @ b = [[7,8],[5,6]] */
    static const double a[] = {1, 2, 3, 4, 0, 1, 1, 0}, b[] = {5, 6, 7, 8};
    static const double w[] = {19, 22, 43, 50, 7, 8, 5, 6};
    tu_expect_values(c, tu_op(c, "matmul", tu_in(c, "f32[2,2,2]", a), tu_in(c, "f32[2,2]", b), END),
                     "f32[2,2,2]", w, 8, 0);
}

static void test_matmul_variants(void **state) {
    (void)state;
    TestCtx c;
    /* transpose_b: [[1,2,3],[4,5,6]] @ [[1,0,1],[0,1,0]]^T = [[4,2],[10,5]] */
    tu_open(&c);
    static const double a[] = {1, 2, 3, 4, 5, 6}, b[] = {1, 0, 1, 0, 1, 0}, w[] = {4, 2, 10, 5};
    Op *t = tu_op(&c, "matmul", tu_in(&c, "f32[2,3]", a), tu_in(&c, "f32[2,3]", b), END);
    op_set_bool(t, "transpose_b", true);
    tu_expect_values(&c, t, "f32[2,2]", w, 4, 0);
    tu_close(&c);
    /* transpose_a: [[1,2],[3,4],[5,6]]^T @ [[1],[1],[1]] = [[9],[12]] */
    tu_open(&c);
    static const double ones[] = {1, 1, 1}, w2[] = {9, 12};
    Op *ta = tu_op(&c, "matmul", tu_in(&c, "f32[3,2]", a), tu_in(&c, "f32[3,1]", ones), END);
    op_set_bool(ta, "transpose_a", true);
    tu_expect_values(&c, ta, "f32[2,1]", w2, 2, 0);
    tu_close(&c);
    /* both batch axes broadcast: a [2,1,1,1] = {2,3}, b [1,3,1,1] = {10,20,30} -> a_i * b_j */
    tu_open(&c);
    static const double a3[] = {2, 3}, b3[] = {10, 20, 30}, w3[] = {20, 40, 60, 30, 60, 90};
    tu_expect_values(&c, tu_op(&c, "matmul", tu_in(&c, "f32[2,1,1,1]", a3), tu_in(&c, "f32[1,3,1,1]", b3), END),
                     "f32[2,3,1,1]", w3, 6, 0);
    tu_close(&c);
}

static void case_linear(TestCtx *c) {
    /* [[1,2,3],[4,5,6]] @ [[1,0,0],[0,1,1]]^T + [10,20] = [[1+10, 5+20], [4+10, 11+20]] */
    static const double x[] = {1, 2, 3, 4, 5, 6}, w[] = {1, 0, 0, 0, 1, 1}, b[] = {10, 20};
    static const double want[] = {11, 25, 14, 31};
    tu_expect_values(c, tu_op(c, "linear", tu_in(c, "f32[2,3]", x), tu_in(c, "f32[2,3]", w),
                              tu_in(c, "f32[2]", b), END),
                     "f32[2,2]", want, 4, 0);
}

static const double X33[] = {1, 2, 3, 4, 5, 6, 7, 8, 9}; /* 3x3 image 1..9 */

static void case_conv2d(TestCtx *c) {
    /* diagonal kernel [[1,0],[0,1]], stride 1, no padding: x[y][x] + x[y+1][x+1] */
    static const double w[] = {1, 0, 0, 1}, want[] = {6, 8, 12, 14};
    tu_expect_values(c, tu_op(c, "conv2d", tu_in(c, "f32[1,1,3,3]", X33), tu_in(c, "f32[1,1,2,2]", w), END),
                     "f32[1,1,2,2]", want, 4, 0);
}

static void test_conv2d_variants(void **state) {
    (void)state;
    TestCtx c;
    static const double diag[] = {1, 0, 0, 1};
    /* stride 2, padding 1, bias .5: windows start at (-1,-1), (-1,1), (1,-1), (1,1);
     * the diagonal taps are (y,x) and (y+1,x+1): 0+1, 0+3, 0+7, 5+9; plus .5 */
    tu_open(&c);
    static const double bias[] = {0.5}, want[] = {1.5, 3.5, 7.5, 14.5};
    Op *a = tu_op(&c, "conv2d", tu_in(&c, "f32[1,1,3,3]", X33), tu_in(&c, "f32[1,1,2,2]", diag),
                  tu_in(&c, "f32[1]", bias), END);
    tu_ints(a, "stride", 2, 2, 2);
    tu_ints(a, "padding", 2, 1, 1);
    tu_expect_values(&c, a, "f32[1,1,2,2]", want, 4, 0);
    tu_close(&c);
    /* groups 2, C=2, O=4, 1x1 kernels [1,2,3,4]: outputs 0,1 read channel 0, outputs 2,3
     * read channel 1. ch0 = [1,2,3,4], ch1 = [10,20,30,40]. */
    tu_open(&c);
    static const double x[] = {1, 2, 3, 4, 10, 20, 30, 40}, w[] = {1, 2, 3, 4};
    static const double wg[] = {1, 2, 3, 4, 2, 4, 6, 8, 30, 60, 90, 120, 40, 80, 120, 160};
    Op *g = tu_op(&c, "conv2d", tu_in(&c, "f32[1,2,2,2]", x), tu_in(&c, "f32[4,1,1,1]", w), END);
    op_set_int(g, "groups", 2);
    tu_expect_values(&c, g, "f32[1,4,2,2]", wg, 16, 0);
    tu_close(&c);
    /* dilation 2 with a 2x2 kernel of ones: taps the corners 1+3+7+9 = 20 */
    tu_open(&c);
    static const double ones[] = {1, 1, 1, 1}, w20[] = {20};
    Op *d = tu_op(&c, "conv2d", tu_in(&c, "f32[1,1,3,3]", X33), tu_in(&c, "f32[1,1,2,2]", ones), END);
    tu_ints(d, "dilation", 2, 2, 2);
    tu_expect_values(&c, d, "f32[1,1,1,1]", w20, 1, 0);
    tu_close(&c);
    /* two images, two input channels summed: image n = n+1 times [X33, ones], kernel 1x1 [1,10]:
     * out = (n+1) * (x + 10) */
    tu_open(&c);
    static double x2[36], w2[] = {1, 10}, want2[18];
    for (int n = 0; n < 2; n++)
        for (int i = 0; i < 9; i++) {
            x2[n * 18 + i] = (n + 1) * X33[i];
            x2[n * 18 + 9 + i] = n + 1;
            want2[n * 9 + i] = (n + 1) * (X33[i] + 10);
        }
    tu_expect_values(&c, tu_op(&c, "conv2d", tu_in(&c, "f32[2,2,3,3]", x2), tu_in(&c, "f32[1,2,1,1]", w2), END),
                     "f32[2,1,3,3]", want2, 18, 0);
    tu_close(&c);
}

/* ---- autodiff helpers ------------------------------------------------------------------- */

static void case_scatter_add(TestCtx *c) {
    /* rows of grad [[1,2],[3,4],[5,6]] into ids [1,0,1] of 3 rows: row0 [3,4], row1
     * [1+5, 2+6], row2 untouched zeros */
    static const double g[] = {1, 2, 3, 4, 5, 6}, ids[] = {1, 0, 1}, w[] = {3, 4, 6, 8, 0, 0};
    Op *a = tu_op(c, "scatter_add", tu_in(c, "f32[3,2]", g), tu_in(c, "i32[3]", ids), END);
    op_set_int(a, "num", 3);
    tu_expect_values(c, a, "f32[3,2]", w, 6, 0);
}

static void case_relu_grad(TestCtx *c) {
    /* dy passes where y > 0 */
    static const double dy[] = {1, 2, 3, 4}, y[] = {0, 0.5, 0, 2}, w[] = {0, 2, 0, 4};
    tu_expect_values(c, tu_op(c, "relu_grad", tu_in(c, "f32[4]", dy), tu_in(c, "f32[4]", y), END),
                     "f32[4]", w, 4, 0);
}

static void case_slice_grad(TestCtx *c) {
    /* dy [[1,2],[3,4]] back at columns 1 and 3 of 5 (slice [1:5:2]) */
    static const double dy[] = {1, 2, 3, 4}, w[] = {0, 1, 0, 2, 0, 0, 3, 0, 4, 0};
    Op *a = tu_op(c, "slice_grad", tu_in(c, "f32[2,2]", dy), END);
    op_set_int(a, "axis", 1);
    op_set_int(a, "start", 1);
    op_set_int(a, "end", 5);
    op_set_int(a, "step", 2);
    op_set_int(a, "size", 5);
    tu_expect_values(c, a, "f32[2,5]", w, 10, 0);
}

static void case_max_pool2d_grad(TestCtx *c) {
    /* x [[1,9,2],[3,4,8],[7,6,5]], 2x2 windows stride 1: maxima 9 at (0,1) twice, 7 at
     * (2,0), 8 at (1,2); dy [1,10,100,1000] -> (0,1) gets 1+10, (2,0) 100, (1,2) 1000 */
    static const double dy[] = {1, 10, 100, 1000}, x[] = {1, 9, 2, 3, 4, 8, 7, 6, 5};
    static const double w[] = {0, 11, 0, 0, 0, 1000, 100, 0, 0};
    Op *a = tu_op(c, "max_pool2d_grad", tu_in(c, "f32[1,1,2,2]", dy), tu_in(c, "f32[1,1,3,3]", x), END);
    tu_ints(a, "kernel", 2, 2, 2);
    tu_ints(a, "stride", 2, 1, 1);
    tu_expect_values(c, a, "f32[1,1,3,3]", w, 9, 0);
}

static void case_adaptive_avg_pool2d_grad(TestCtx *c) {
    /* [2,3] pooled to [1,2]: column bins [0,2) and [1,3), 4 elements each; dy [4,8] gives
     * shares 1 and 2, and column 1 is in both bins: rows [1, 1+2, 2] */
    static const double dy[] = {4, 8}, w[] = {1, 3, 2, 1, 3, 2};
    Op *a = tu_op(c, "adaptive_avg_pool2d_grad", tu_in(c, "f32[1,1,1,2]", dy), END);
    tu_ints(a, "input_size", 2, 2, 3);
    tu_expect_values(c, a, "f32[1,1,2,3]", w, 6, 0);
}

static void case_conv2d_grad_input(TestCtx *c) {
    /* 2x2 kernel [[1,2],[3,4]] over a 3x3 input; dy 1 at outputs (0,0) and (1,1): the kernel
     * lands at the top-left and bottom-right, overlapping at (1,1): 4 + 1 */
    static const double dy[] = {1, 0, 0, 1}, w[] = {1, 2, 3, 4};
    static const double want[] = {1, 2, 0, 3, 5, 2, 0, 3, 4};
    Op *a = tu_op(c, "conv2d_grad_input", tu_in(c, "f32[1,1,2,2]", dy), tu_in(c, "f32[1,1,2,2]", w), END);
    tu_ints(a, "input_size", 2, 3, 3);
    tu_expect_values(c, a, "f32[1,1,3,3]", want, 9, 0);
}

static void case_conv2d_grad_weight(TestCtx *c) {
    /* x = 1..9 (3x3), dy 1 at outputs (0,0) and (1,1): dw[ky][kx] = x[ky][kx] + x[ky+1][kx+1]
     * = 1+5, 2+6, 4+8, 5+9 */
    static const double dy[] = {1, 0, 0, 1}, want[] = {6, 8, 12, 14};
    Op *a = tu_op(c, "conv2d_grad_weight", tu_in(c, "f32[1,1,2,2]", dy), tu_in(c, "f32[1,1,3,3]", X33), END);
    tu_ints(a, "kernel", 2, 2, 2);
    tu_expect_values(c, a, "f32[1,1,2,2]", want, 4, 0);
}

static void case_cross_entropy_grad(TestCtx *c) {
    /* rows [0,0] target 1, [0,ln3] target 0, [7,7] ignored (-1); count 2, dy 2: scale 1.
     * softmax rows [.5,.5] and [.25,.75]; minus one-hot: [.5,-.5], [-.75,.75]; zeros */
    static const double dy[] = {2}, logits[] = {0, 0, 0, 1.0986122886681098, 7, 7};
    static const double target[] = {1, 0, -1}, want[] = {0.5, -0.5, -0.75, 0.75, 0, 0};
    Op *a = tu_op(c, "cross_entropy_grad", tu_in(c, "f32[]", dy), tu_in(c, "f32[3,2]", logits),
                  tu_in(c, "i32[3]", target), END);
    op_set_int(a, "ignore_index", -1);
    tu_expect_values(c, a, "f32[3,2]", want, 6, TOL);
}

/* ---- decoding with a cache -------------------------------------------------------------- */

static void case_update_slice(TestCtx *c) {
    /* x [2,3] = [[1,2,3],[4,5,6]]; update [2,1] = [[7],[8]] at pos 1 along axis 1:
     * [[1,7,3],[4,8,6]] */
    static const double x[] = {1, 2, 3, 4, 5, 6}, u[] = {7, 8}, pos[] = {1};
    static const double want[] = {1, 7, 3, 4, 8, 6};
    Op *a = tu_op(c, "update_slice", tu_in(c, "f32[2,3]", x), tu_in(c, "f32[2,1]", u),
                  tu_in(c, "i32[]", pos), END);
    op_set_int(a, "axis", 1);
    tu_expect_values(c, a, "f32[2,3]", want, 6, 0);
}

static void case_position_mask(TestCtx *c) {
    /* pos 1, size 4: keys 0 and 1 visible */
    static const double pos[] = {1}, want[] = {0, 0, NEG_INF, NEG_INF};
    Op *a = tu_op(c, "position_mask", tu_in(c, "i32[]", pos), END);
    op_set_int(a, "size", 4);
    tu_expect_values(c, a, "f32[4]", want, 4, 0);
}

/* ---- the loop over the op table --------------------------------------------------------- */

typedef void (*RefCase)(TestCtx *c);

static const RefCase CASES[OP_COUNT] = {
#define OP(ENUM, name, min_in, max_in, fusion, doc) [OP_##ENUM] = case_##name,
#include "ops.def"
#undef OP
};

static void test_every_op_has_a_hand_computed_case(void **state) {
    (void)state;
    for (int k = 0; k < OP_COUNT; k++) {
        if (!CASES[k]) fail_msg("op %s has no reference test case", OP_TABLE[k].name);
        TestCtx c;
        tu_open(&c);
        CASES[k](&c);
        tu_close(&c);
    }
}

/* ---- more cases for layout ops and data-dependent errors -------------------------------- */

static void test_transpose_2d(void **state) {
    (void)state;
    TestCtx c;
    tu_open(&c);
    static const double y[] = {1, 2, 3, 4, 5, 6}, wy[] = {1, 4, 2, 5, 3, 6};
    Op *b = tu_op(&c, "transpose", tu_in(&c, "f32[2,3]", y), END);
    tu_ints(b, "perm", 2, 1, 0);
    tu_expect_values(&c, b, "f32[3,2]", wy, 6, 0);
    tu_close(&c);
}

static void test_ids_out_of_range(void **state) {
    (void)state;
    TestCtx c;
    static const double w[] = {0, 1, 10, 11}, ids[] = {0, 3}, neg[] = {-1};
    tu_open(&c);
    tu_expect_run_error(&c, tu_op(&c, "embedding", tu_in(&c, "f32[2,2]", w), tu_in(&c, "i32[2]", ids), END),
                        "id 3");
    tu_close(&c);
    tu_open(&c);
    Op *s = tu_op(&c, "scatter_add", tu_in(&c, "f32[1,2]", w), tu_in(&c, "i32[1]", neg), END);
    op_set_int(s, "num", 4);
    tu_expect_run_error(&c, s, "id -1");
    tu_close(&c);
    /* a value that no i32 holds casts to INT32_MIN, as PyTorch's CPU cast (NaN and the
     * infinities too: test_nonfinite) */
    tu_open(&c);
    static const double big[] = {3e9, -3e9}, lowest[] = {-2147483648.0, -2147483648.0};
    Op *k = tu_op(&c, "cast", tu_in(&c, "f32[2]", big), END);
    op_set_string(k, "dtype", "i32");
    tu_expect_values(&c, k, "i32[2]", lowest, 2, 0);
    tu_close(&c);
}

/* update_slice writes several rows at once and rejects a pos whose rows would not fit;
 * position_mask accepts any pos (none visible below 0, all at or past the end). */
static void test_decode_ops_edges(void **state) {
    (void)state;
    TestCtx c;
    static const double x[] = {1, 2, 3, 4}, u[] = {8, 9}, p2[] = {2}, p3[] = {3}, pneg[] = {-1};
    static const double want[] = {1, 2, 8, 9};
    tu_open(&c);
    Op *a = tu_op(&c, "update_slice", tu_in(&c, "f32[4]", x), tu_in(&c, "f32[2]", u), tu_in(&c, "i32[]", p2), END);
    op_set_int(a, "axis", 0);
    tu_expect_values(&c, a, "f32[4]", want, 4, 0);
    tu_close(&c);
    tu_open(&c);
    Op *b = tu_op(&c, "update_slice", tu_in(&c, "f32[4]", x), tu_in(&c, "f32[2]", u), tu_in(&c, "i32[]", p3), END);
    op_set_int(b, "axis", 0);
    tu_expect_run_error(&c, b, "pos 3 is out of range");
    tu_close(&c);
    tu_open(&c);
    Op *d = tu_op(&c, "update_slice", tu_in(&c, "f32[4]", x), tu_in(&c, "f32[2]", u), tu_in(&c, "i32[]", pneg), END);
    op_set_int(d, "axis", 0);
    tu_expect_run_error(&c, d, "pos -1 is out of range");
    tu_close(&c);
    static const double none[] = {NEG_INF, NEG_INF}, all[] = {0, 0};
    tu_open(&c);
    Op *e = tu_op(&c, "position_mask", tu_in(&c, "i32[]", pneg), END);
    op_set_int(e, "size", 2);
    tu_expect_values(&c, e, "f32[2]", none, 2, 0);
    tu_close(&c);
    tu_open(&c);
    Op *g = tu_op(&c, "position_mask", tu_in(&c, "i32[]", p3), END);
    op_set_int(g, "size", 2);
    tu_expect_values(&c, g, "f32[2]", all, 2, 0);
    tu_close(&c);
}

static void test_reductions_keepdim_and_full(void **state) {
    (void)state;
    TestCtx c;
    /* sum over axis 1 with keepdim on [2,3]: [[6],[15]]; reduce_to_shape [2,3] -> [3] */
    tu_open(&c);
    Op *a = tu_op(&c, "sum", tu_in(&c, "f32[2,3]", M23), END);
    tu_ints(a, "axes", 1, 1);
    op_set_bool(a, "keepdim", true);
    static const double w[] = {6, 15};
    tu_expect_values(&c, a, "f32[2,1]", w, 2, 0);
    tu_close(&c);
    tu_open(&c);
    Op *r = tu_op(&c, "reduce_to_shape", tu_in(&c, "f32[2,3]", M23), END);
    tu_ints(r, "shape", 1, 3);
    static const double w3[] = {5, 7, 9};
    tu_expect_values(&c, r, "f32[3]", w3, 3, 0);
    tu_close(&c);
    /* mean over axis 0 of a [2,2,2] tensor 0..7: [(0+4)/2, (1+5)/2, (2+6)/2, (3+7)/2] */
    tu_open(&c);
    static const double x8[] = {0, 1, 2, 3, 4, 5, 6, 7}, w8[] = {2, 3, 4, 5};
    Op *m = tu_op(&c, "mean", tu_in(&c, "f32[2,2,2]", x8), END);
    tu_ints(m, "axes", 1, 0);
    tu_expect_values(&c, m, "f32[2,2]", w8, 4, 0);
    tu_close(&c);
    /* full of dtype i32 */
    tu_open(&c);
    Op *f = tu_op(&c, "full", END);
    op_set_ints(f, "shape", NULL, 0);
    op_set_string(f, "dtype", "i32");
    op_set_float(f, "value", -3);
    static const double w1[] = {-3};
    tu_expect_values(&c, f, "i32[]", w1, 1, 0);
    tu_close(&c);
}

/* ---- Philox and dropout ----------------------------------------------------------------- */

/* Random123's published known answers for philox4x32 with 10 rounds (kat_vectors). */
static void test_philox_known_answers(void **state) {
    (void)state;
    static const struct {
        uint32_t ctr[4], key[2], out[4];
    } kat[] = {
        {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
        {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
         {0xffffffff, 0xffffffff},
         {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
        {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
         {0xa4093822, 0x299f31d0},
         {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
    };
    for (size_t i = 0; i < sizeof kat / sizeof kat[0]; i++) {
        uint32_t out[4];
        philox4x32_10(kat[i].ctr, kat[i].key, out);
        for (int j = 0; j < 4; j++) assert_int_equal(out[j], kat[i].out[j]);
    }
}

/* dropout_keep follows its documented definition: counter {idx lo, idx hi, stream, step},
 * key {seed, 0x9E3779B9}, u = (r0 >> 8) / 2^24, keep iff u >= p. */
static void test_dropout_keep_definition(void **state) {
    (void)state;
    const uint64_t idx[] = {0, 1, 12345, ((uint64_t)5 << 32) | 77};
    for (size_t i = 0; i < 4; i++) {
        uint32_t ctr[4] = {(uint32_t)idx[i], (uint32_t)(idx[i] >> 32), 3, 9}, key[2] = {42, 0x9E3779B9};
        uint32_t r[4];
        philox4x32_10(ctr, key, r);
        double u = (double)(r[0] >> 8) / 16777216.0;
        assert_true(dropout_keep(42, 9, 3, idx[i], u) == true);        /* u >= u */
        assert_true(dropout_keep(42, 9, 3, idx[i], u + 1e-9) == false); /* u < u + tiny */
    }
}

/* Runs dropout(ones[n]) with the given p, seed, step and stream. */
static void run_dropout(double p, int seed, int step, int stream, int n, RefTensor *out) {
    TestCtx c;
    tu_open(&c);
    static double ones[10000];
    for (int i = 0; i < n; i++) ones[i] = 1.0;
    double rng[2] = {seed, step};
    char type[32], err[512];
    snprintf(type, sizeof type, "f32[%d]", n);
    Op *d = tu_op(&c, "dropout", tu_in(&c, type, ones), tu_in(&c, "i32[2]", rng), END);
    op_set_float(d, "p", p);
    op_set_int(d, "stream", stream);
    if (tu_run(&c, d, out, err, sizeof err) != 0) fail_msg("%s", err);
    tu_close(&c);
}

static void test_dropout_statistics(void **state) {
    (void)state;
    const int n = 10000;
    const double p = 0.3;
    RefTensor a, b, other_stream, other_step;
    run_dropout(p, 1234, 7, 0, n, &a);
    run_dropout(p, 1234, 7, 0, n, &b);
    run_dropout(p, 1234, 7, 1, n, &other_stream);
    run_dropout(p, 1234, 8, 0, n, &other_step);
    int dropped = 0, differ_stream = 0, differ_step = 0;
    for (int i = 0; i < n; i++) {
        /* every element is either dropped or scaled by exactly 1/(1-p) */
        assert_true(a.data[i] == 0.0 || fabs(a.data[i] - 1.0 / 0.7) < 1e-15);
        dropped += a.data[i] == 0.0;
        assert_true(a.data[i] == b.data[i]); /* deterministic */
        differ_stream += (a.data[i] == 0.0) != (other_stream.data[i] == 0.0);
        differ_step += (a.data[i] == 0.0) != (other_step.data[i] == 0.0);
    }
    /* Binomial(10000, .3): sd = sqrt(10000*.3*.7) ~ 46; allow 5 sd. */
    assert_true(abs(dropped - 3000) < 230);
    /* independent masks disagree on 2p(1-p) = 42% of elements */
    assert_true(abs(differ_stream - 4200) < 250);
    assert_true(abs(differ_step - 4200) < 250);
    ref_tensor_free(&a);
    ref_tensor_free(&b);
    ref_tensor_free(&other_stream);
    ref_tensor_free(&other_step);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_op_has_a_hand_computed_case),
        cmocka_unit_test(test_transpose_2d),
        cmocka_unit_test(test_batch_norm_eval),
        cmocka_unit_test(test_cross_entropy_edges),
        cmocka_unit_test(test_cross_entropy_class0),
        cmocka_unit_test(test_adaptive_avg_pool2d_7_and_8_to_14),
        cmocka_unit_test(test_matmul_variants),
        cmocka_unit_test(test_conv2d_variants),
        cmocka_unit_test(test_ids_out_of_range),
        cmocka_unit_test(test_reductions_keepdim_and_full),
        cmocka_unit_test(test_decode_ops_edges),
        cmocka_unit_test(test_philox_known_answers),
        cmocka_unit_test(test_dropout_keep_definition),
        cmocka_unit_test(test_dropout_statistics),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
