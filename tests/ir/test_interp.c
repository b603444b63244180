/* test_interp.c — ref_run on small functions built with the builder API: values computed by
 * hand, parameters through RefStore, intermediates on request, and errors that name the op
 * and value (wrong input types, missing parameters, data-dependent failures). */
#include "op_test_util.h"

#define END NULL

/* Sets the result type of op from its shape rule (what the shape pass does). */
static void infer(Op *op) {
    char err[512];
    if (tu_infer(op, err, sizeof err) != 0) fail_msg("%s", err);
}

static void put(RefStore *s, const char *name, const char *type, const double *data) {
    RefTensor t;
    DType dt;
    Shape sh;
    tu_parse_type(type, &dt, &sh);
    assert_int_equal(ref_tensor_init(&t, dt, sh), 0);
    memcpy(t.data, data, (size_t)shape_numel(&sh) * sizeof(double));
    assert_int_equal(ref_store_put(s, name, &t), 0);
    assert_null(t.data); /* ownership moved */
}

/* s = sum(relu(linear(x, W, b)), axes=[1]); outputs s and the relu.
 * x = [[1,-1],[2,3]], W = [[1,0],[1,1]], b = [0,-1]
 * linear: row0 [1+0, 1-1-1] = [1,-1]; row1 [2, 2+3-1] = [2,4]; relu [[1,0],[2,4]]; s [1,6] */
typedef struct Net {
    TestCtx c;
    Value *x, *h, *r, *s;
} Net;

static void build_net(Net *n) {
    TestCtx *c = &n->c;
    tu_open(c);
    module_add_param(c->m, "lin.weight", DT_F32, tu_shape("f32[2,2]"), PARAM_WEIGHT, true,
                     "zeros", SRCLOC_NONE);
    module_add_param(c->m, "lin.bias", DT_F32, tu_shape("f32[2]"), PARAM_WEIGHT, true, "zeros",
                     SRCLOC_NONE);
    n->x = func_add_input(c->f, "x", DT_F32, tu_shape("f32[2,2]"));
    Op *w = func_add_op(c->f, OP_PARAM, NULL, 0, "lin.weight", SRCLOC_NONE);
    op_set_string(w, "name", "lin.weight");
    infer(w);
    Op *b = func_add_op(c->f, OP_PARAM, NULL, 0, "lin.bias", SRCLOC_NONE);
    op_set_string(b, "name", "lin.bias");
    infer(b);
    Value *lin_in[] = {n->x, w->result, b->result};
    Op *lin = func_add_op(c->f, OP_LINEAR, lin_in, 3, "lin", SRCLOC_NONE);
    infer(lin);
    Op *relu = func_add_op(c->f, OP_RELU, &lin->result, 1, "relu", SRCLOC_NONE);
    infer(relu);
    Op *sum = func_add_op(c->f, OP_SUM, &relu->result, 1, "total", SRCLOC_NONE);
    int64_t axes[] = {1};
    op_set_ints(sum, "axes", axes, 1);
    infer(sum);
    func_add_output(c->f, "s", sum->result);
    func_add_output(c->f, "r", relu->result);
    n->h = lin->result;
    n->r = relu->result;
    n->s = sum->result;
    static const double W[] = {1, 0, 1, 1}, B[] = {0, -1};
    put(&c->params, "lin.weight", "f32[2,2]", W);
    put(&c->params, "lin.bias", "f32[2]", B);
}

static void x_input(RefTensor *t, const char *type) {
    DType dt;
    Shape s;
    tu_parse_type(type, &dt, &s);
    assert_int_equal(ref_tensor_init(t, dt, s), 0);
    static const double x[] = {1, -1, 2, 3};
    memcpy(t->data, x, (size_t)shape_numel(&s) * sizeof(double));
}

static void test_run_small_function(void **state) {
    (void)state;
    Net n;
    build_net(&n);
    RefTensor x, out[2];
    char err[512];
    x_input(&x, "f32[2,2]");
    assert_int_equal(ref_run(n.c.f, &x, ref_store_lookup, &n.c.params, out, NULL, err, sizeof err), 0);
    assert_int_equal(out[0].shape.rank, 1);
    assert_true(out[0].data[0] == 1 && out[0].data[1] == 6);
    static const double r[] = {1, 0, 2, 4};
    for (int i = 0; i < 4; i++) assert_true(out[1].data[i] == r[i]);
    ref_tensor_free(&out[0]);
    ref_tensor_free(&out[1]);
    ref_tensor_free(&x);
    tu_close(&n.c);
}

static void test_all_values(void **state) {
    (void)state;
    Net n;
    build_net(&n);
    RefTensor x, out[2], *all = NULL;
    char err[512];
    x_input(&x, "f32[2,2]");
    assert_int_equal(ref_run(n.c.f, &x, ref_store_lookup, &n.c.params, out, &all, err, sizeof err), 0);
    assert_non_null(all);
    /* the linear's pre-activation keeps its negative entry */
    static const double h[] = {1, -1, 2, 4};
    for (int i = 0; i < 4; i++) assert_true(all[n.h->id].data[i] == h[i]);
    assert_true(all[n.x->id].data[1] == -1);
    assert_true(all[n.s->id].data[1] == 6);
    for (int v = 0; v < n.c.f->n_values; v++) {
        assert_non_null(all[v].data); /* every value was kept */
        ref_tensor_free(&all[v]);
    }
    free(all);
    ref_tensor_free(&out[0]);
    ref_tensor_free(&out[1]);
    ref_tensor_free(&x);
    tu_close(&n.c);
}

static void test_wrong_input_type(void **state) {
    (void)state;
    Net n;
    build_net(&n);
    RefTensor x, out[2];
    char err[512];
    x_input(&x, "f32[1,2]");
    assert_int_equal(ref_run(n.c.f, &x, ref_store_lookup, &n.c.params, out, NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, "%x"));
    assert_non_null(strstr(err, "expected f32[2,2], got f32[1,2]"));
    ref_tensor_free(&x);
    tu_close(&n.c);
}

static void test_missing_and_mistyped_params(void **state) {
    (void)state;
    Net n;
    build_net(&n);
    RefTensor x, out[2];
    char err[512];
    x_input(&x, "f32[2,2]");
    RefStore empty;
    ref_store_init(&empty);
    assert_int_equal(ref_run(n.c.f, &x, ref_store_lookup, &empty, out, NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, "lin.weight"));
    /* a parameter whose stored shape disagrees with the module's declaration */
    static const double three[] = {1, 2, 3};
    put(&n.c.params, "lin.bias", "f32[3]", three); /* replaces the good one */
    assert_int_equal(ref_run(n.c.f, &x, ref_store_lookup, &n.c.params, out, NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, "%lin.bias"));
    assert_non_null(strstr(err, "expected f32[2], got f32[3]"));
    ref_store_free(&empty);
    ref_tensor_free(&x);
    tu_close(&n.c);
}

/* A data-dependent failure deep in a function names the op and the value it defines. */
static void test_error_names_op_and_value(void **state) {
    (void)state;
    TestCtx c;
    tu_open(&c);
    Value *w = func_add_input(c.f, "table", DT_F32, tu_shape("f32[2,2]"));
    Value *ids = func_add_input(c.f, "tokens", DT_I32, tu_shape("i32[2]"));
    Value *ins[] = {w, ids};
    Op *e = func_add_op(c.f, OP_EMBEDDING, ins, 2, "tok_embed", SRCLOC_NONE);
    infer(e);
    Op *r = func_add_op(c.f, OP_RELU, &e->result, 1, NULL, SRCLOC_NONE);
    infer(r);
    func_add_output(c.f, "y", r->result);
    RefTensor in[2], out[1];
    char err[512];
    assert_int_equal(ref_tensor_init(&in[0], DT_F32, w->shape), 0);
    assert_int_equal(ref_tensor_init(&in[1], DT_I32, ids->shape), 0);
    in[1].data[1] = 5;
    assert_int_equal(ref_run(c.f, in, NULL, NULL, out, NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, "%tok_embed"));
    assert_non_null(strstr(err, "embedding"));
    assert_non_null(strstr(err, "id 5"));
    ref_tensor_free(&in[0]);
    ref_tensor_free(&in[1]);
    tu_close(&c);
}

/* One value used twice by one op, and a function input returned as an output. */
static void test_shared_operands_and_passthrough(void **state) {
    (void)state;
    TestCtx c;
    tu_open(&c);
    Value *x = func_add_input(c.f, "x", DT_F32, tu_shape("f32[2]"));
    Value *ins[] = {x, x};
    Op *sq = func_add_op(c.f, OP_MUL, ins, 2, "sq", SRCLOC_NONE);
    infer(sq);
    Value *ins2[] = {sq->result, sq->result};
    Op *q = func_add_op(c.f, OP_MUL, ins2, 2, "quad", SRCLOC_NONE);
    infer(q);
    func_add_output(c.f, "q", q->result);
    func_add_output(c.f, "x", x);
    RefTensor in, out[2];
    char err[512];
    assert_int_equal(ref_tensor_init(&in, DT_F32, x->shape), 0);
    in.data[0] = 2;
    in.data[1] = -3;
    assert_int_equal(ref_run(c.f, &in, NULL, NULL, out, NULL, err, sizeof err), 0);
    assert_true(out[0].data[0] == 16 && out[0].data[1] == 81); /* x^4 */
    assert_true(out[1].data[0] == 2 && out[1].data[1] == -3);
    ref_tensor_free(&out[0]);
    ref_tensor_free(&out[1]);
    ref_tensor_free(&in);
    tu_close(&c);
}

/* y = x * lr with lr an hparam: its value comes from its init "const(V)", exactly, whatever
 * the caller's store holds under that name (generic fillers put random values there). */
static void test_hparam_reads_its_value(void **state) {
    (void)state;
    TestCtx c;
    tu_open(&c);
    char init[64];
    hparam_init_string(0.1, init, sizeof init);
    assert_string_equal(init, "const(0.1)");
    module_add_param(c.m, "train.lr", DT_F32, shape_scalar(), PARAM_HPARAM, false, init,
                     SRCLOC_NONE);
    Value *x = func_add_input(c.f, "x", DT_F32, tu_shape("f32[2]"));
    Op *lr = func_add_op(c.f, OP_PARAM, NULL, 0, "lr", SRCLOC_NONE);
    op_set_string(lr, "name", "train.lr");
    infer(lr);
    Value *ins[] = {x, lr->result};
    Op *y = func_add_op(c.f, OP_MUL, ins, 2, "y", SRCLOC_NONE);
    infer(y);
    func_add_output(c.f, "y", y->result);
    static const double junk[] = {-7};
    put(&c.params, "train.lr", "f32[]", junk);
    RefTensor in, out[1];
    char err[512];
    assert_int_equal(ref_tensor_init(&in, DT_F32, x->shape), 0);
    in.data[0] = 2;
    in.data[1] = -3;
    assert_int_equal(ref_run(c.f, &in, ref_store_lookup, &c.params, out, NULL, err, sizeof err), 0);
    assert_true(out[0].data[0] == 2 * 0.1 && out[0].data[1] == -3 * 0.1);
    ref_tensor_free(&out[0]);
    /* A value that does not read back is an error that names it, not a silent zero. */
    module_find_param(c.m, "train.lr")->init = "const(fast)";
    assert_int_equal(ref_run(c.f, &in, ref_store_lookup, &c.params, out, NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, "hparam \"train.lr\" has no value"));
    ref_tensor_free(&in);
    tu_close(&c);
}

static void test_store(void **state) {
    (void)state;
    RefStore s;
    ref_store_init(&s);
    static const double a[] = {1, 2}, b[] = {3};
    char name[16];
    for (int i = 0; i < 20; i++) { /* enough to grow the arrays */
        snprintf(name, sizeof name, "p%d", i);
        put(&s, name, "f32[2]", a);
    }
    put(&s, "p3", "i32[1]", b);
    assert_int_equal(s.n, 20);
    const RefTensor *t = ref_store_get(&s, "p3");
    assert_non_null(t);
    assert_int_equal(t->dtype, DT_I32);
    assert_true(t->data[0] == 3);
    assert_null(ref_store_get(&s, "nope"));
    assert_non_null(ref_store_get_mut(&s, "p19"));
    assert_ptr_equal(ref_store_lookup(&s, "p0"), ref_store_get(&s, "p0"));
    ref_store_free(&s);
    RefTensor u;
    assert_int_equal(ref_tensor_init(&u, DT_F32, shape_unknown()), -1);
    ref_tensor_free(&u);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_run_small_function),
        cmocka_unit_test(test_all_values),
        cmocka_unit_test(test_wrong_input_type),
        cmocka_unit_test(test_missing_and_mistyped_params),
        cmocka_unit_test(test_error_names_op_and_value),
        cmocka_unit_test(test_shared_operands_and_passthrough),
        cmocka_unit_test(test_hparam_reads_its_value),
        cmocka_unit_test(test_store),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
