/* test_frontend.c — models in memory -> the module the frontend must build: parameter names
 * (PyTorch style), trainable flags (frozen prefixes, buffers), op sequences, value names,
 * config values with -D, blocks, scopes, repeat, if, tied weights, dropout streams; one small
 * model's printed IR against a hand-written data/small.ir; error locations through the API. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "frontend.h"
#include "ops.h"

static Module *load(const char *text, const ConfigOverride *ov, int n_ov) {
    Diag d;
    Module *m = frontend_load_text(text, strlen(text), "t.json", ov, n_ov, &d);
    if (!m) fail_msg("load failed: %d:%d: %s", d.loc.line, d.loc.col, d.msg);
    return m;
}

/* Loads a model that must fail; checks message and position. */
static void load_fails(const char *text, int line, int col, const char *msg) {
    Diag d;
    Module *m = frontend_load_text(text, strlen(text), "t.json", NULL, 0, &d);
    assert_null(m);
    if (strcmp(d.msg, msg) != 0) fail_msg("message '%s', want '%s'", d.msg, msg);
    assert_string_equal(d.loc.file, "t.json");
    assert_int_equal(d.loc.line, line);
    assert_int_equal(d.loc.col, col);
}

static const Function *forward(const Module *m) {
    const Function *f = module_find_function(m, "forward");
    assert_non_null(f);
    return f;
}

/* "param linear relu" -> checks the op kinds in order. */
static void assert_ops(const Function *f, const char *want) {
    char got[2048] = "";
    size_t len = 0;
    for (int i = 0; i < f->n_ops; i++)
        len += (size_t)snprintf(got + len, sizeof got - len, "%s%s", i ? " " : "", op_info(f->ops[i]->kind)->name);
    assert_string_equal(got, want);
}

static void assert_value_names(const Function *f, const char *want) {
    char got[4096] = "";
    size_t len = 0;
    for (int i = 0; i < f->n_ops; i++)
        len += (size_t)snprintf(got + len, sizeof got - len, "%s%s", i ? " " : "", f->ops[i]->result->name);
    assert_string_equal(got, want);
}

static void assert_param(const Module *m, const char *name, const char *type, bool trainable,
                         ParamKind kind, const char *init) {
    const Param *p = module_find_param(m, name);
    if (!p) fail_msg("no parameter '%s'", name);
    char buf[128];
    assert_string_equal(type_format(p->dtype, &p->shape, buf, sizeof buf), type);
    assert_int_equal(p->trainable, trainable);
    assert_int_equal(p->kind, kind);
    assert_string_equal(p->init, init);
}

static double config_value(const Module *m, const char *name, bool is_int) {
    const ConfigVar *c = module_find_config(m, name);
    if (!c) fail_msg("no config '%s'", name);
    assert_int_equal(c->is_int, is_int);
    return c->value;
}

/* The example of docs/model-format.md. */
static const char MLP[] =
    "{\n"
    "  \"model\": \"mlp\",\n"
    "  \"config\": { \"batch\": 8, \"in\": 32, \"hidden\": \"2 * in\", \"classes\": 10, \"dropout\": 0.1 },\n"
    "  \"inputs\": {\n"
    "    \"x\":      { \"dtype\": \"f32\", \"shape\": [\"batch\", \"in\"] },\n"
    "    \"label\":  { \"dtype\": \"i32\", \"shape\": [\"batch\"] },\n"
    "    \"rng\":    { \"dtype\": \"i32\", \"shape\": [2] }\n"
    "  },\n"
    "  \"frozen\": [],\n"
    "  \"blocks\": {\n"
    "    \"dense\": {\n"
    "      \"inputs\": [\"x\"],\n"
    "      \"args\": [\"nin\", \"nout\"],\n"
    "      \"body\": [\n"
    "        { \"param\": \"weight\", \"shape\": [\"nout\", \"nin\"], \"init\": \"kaiming_uniform\", \"out\": \"w\" },\n"
    "        { \"param\": \"bias\", \"shape\": [\"nout\"], \"init\": \"linear_bias(nin)\", \"out\": \"b\" },\n"
    "        { \"op\": \"linear\", \"in\": [\"x\", \"w\", \"b\"], \"out\": \"y\" }\n"
    "      ],\n"
    "      \"output\": \"y\"\n"
    "    }\n"
    "  },\n"
    "  \"body\": [\n"
    "    { \"block\": \"dense\", \"scope\": \"fc1\", \"in\": { \"x\": \"x\" }, \"args\": { \"nin\": \"in\", \"nout\": \"hidden\" }, \"out\": \"h\" },\n"
    "    { \"op\": \"relu\", \"in\": [\"h\"], \"out\": \"h\" },\n"
    "    { \"op\": \"dropout\", \"in\": [\"h\", \"rng\"], \"attrs\": { \"p\": \"dropout\" }, \"out\": \"h\" },\n"
    "    { \"block\": \"dense\", \"scope\": \"fc2\", \"in\": { \"x\": \"h\" }, \"args\": { \"nin\": \"hidden\", \"nout\": \"classes\" }, \"out\": \"logits\" },\n"
    "    { \"op\": \"cross_entropy\", \"in\": [\"logits\", \"label\"], \"attrs\": { \"ignore_index\": -1 }, \"out\": \"loss\" }\n"
    "  ],\n"
    "  \"outputs\": { \"loss\": \"loss\", \"logits\": \"logits\" }\n"
    "}\n";

/* A cross_entropy written without ignore_index ignores no class (PyTorch's default, -100): a
 * classifier's class 0 counts. The values are checked in tests/ir/test_ref_ops.c. */
static void test_cross_entropy_default(void **state) {
    (void)state;
    static const char attrs[] = ", \"attrs\": { \"ignore_index\": -1 }";
    char text[sizeof MLP];
    const char *at = strstr(MLP, attrs);
    assert_non_null(at);
    snprintf(text, sizeof text, "%.*s%s", (int)(at - MLP), MLP, at + strlen(attrs));
    Module *m = load(text, NULL, 0);
    const Function *f = forward(m);
    assert_int_equal(op_int(f->ops[f->n_ops - 1], "ignore_index"), -100);
    module_free(m);
}

static void test_mlp_example(void **state) {
    (void)state;
    Module *m = load(MLP, NULL, 0);
    assert_string_equal(m->name, "mlp");
    assert_int_equal(m->n_params, 4);
    assert_param(m, "fc1.weight", "f32[64,32]", true, PARAM_WEIGHT, "kaiming_uniform");
    assert_param(m, "fc1.bias", "f32[64]", true, PARAM_WEIGHT, "linear_bias(32)");
    assert_param(m, "fc2.weight", "f32[10,64]", true, PARAM_WEIGHT, "kaiming_uniform");
    assert_param(m, "fc2.bias", "f32[10]", true, PARAM_WEIGHT, "linear_bias(64)");
    assert_int_equal(config_value(m, "hidden", true), 64);
    assert_true(config_value(m, "dropout", false) == 0.1);
    const Function *f = forward(m);
    assert_int_equal(m->n_funcs, 1);
    assert_int_equal(f->n_inputs, 3);
    assert_string_equal(f->inputs[1]->name, "label");
    assert_int_equal(f->inputs[1]->dtype, DT_I32);
    assert_ops(f, "param param linear relu dropout param param linear cross_entropy");
    assert_value_names(f, "fc1.weight fc1.bias fc1.y h h.1 fc2.weight fc2.bias fc2.y loss");
    assert_int_equal(f->n_outputs, 2);
    assert_string_equal(f->output_names[1], "logits");
    assert_string_equal(f->outputs[1]->name, "fc2.y");
    const Op *ce = f->ops[8];
    assert_int_equal(op_int(ce, "ignore_index"), -1);
    assert_true(op_float(f->ops[4], "p") == 0.1);
    /* Ops point at the op name in the file; params at the param name. */
    assert_int_equal(f->ops[3]->loc.line, 24);
    assert_int_equal(f->ops[3]->loc.col, 13);
    assert_string_equal(f->ops[3]->loc.file, "t.json");
    assert_int_equal(module_find_param(m, "fc1.weight")->loc.line, 15);
    module_free(m);
}

static void test_defines(void **state) {
    (void)state;
    ConfigOverride ov[2];
    Diag d;
    assert_int_equal(frontend_parse_define("batch=3", &ov[0], &d), 0);
    assert_int_equal(frontend_parse_define("dropout=0.25", &ov[1], &d), 0);
    assert_string_equal(ov[0].value, "3");
    Module *m = load(MLP, ov, 2);
    assert_int_equal(config_value(m, "batch", true), 3);
    assert_true(config_value(m, "dropout", false) == 0.25);
    const Function *f = forward(m);
    assert_int_equal(f->inputs[0]->shape.dims[0], 3);
    assert_true(op_float(f->ops[4], "p") == 0.25);
    module_free(m);
    /* Overriding a derived variable replaces its expression. */
    assert_int_equal(frontend_parse_define("hidden=16", &ov[0], &d), 0);
    m = load(MLP, ov, 1);
    assert_param(m, "fc1.weight", "f32[16,32]", true, PARAM_WEIGHT, "kaiming_uniform");
    module_free(m);
    /* Bad -D arguments. */
    assert_int_equal(frontend_parse_define("batch", &ov[0], &d), -1);
    assert_string_equal(d.msg, "bad -D 'batch': expected NAME=VALUE");
    assert_int_equal(frontend_parse_define("=3", &ov[0], &d), -1);
    assert_int_equal(frontend_parse_define("a b=3", &ov[0], &d), -1);
    assert_int_equal(frontend_parse_define("batch=x", &ov[0], &d), 0);
    assert_null(frontend_load_text(MLP, strlen(MLP), "t.json", ov, 1, &d));
    assert_string_equal(d.msg, "bad -D 'batch=x': the value must be a number");
    assert_null(d.loc.file);
    assert_int_equal(frontend_parse_define("hiden=3", &ov[0], &d), 0);
    assert_null(frontend_load_text(MLP, strlen(MLP), "t.json", ov, 1, &d));
    assert_string_equal(d.msg, "-D hiden: no config variable 'hiden' in the model "
                               "(it has: batch, in, hidden, classes, dropout)");
}

/* Scopes, repeat with {i}, if/else, frozen prefixes at '.' boundaries, buffers, tied use,
 * dropout streams. */
static const char LAYERS[] =
    "{\"model\": \"layers\",\n"
    " \"config\": {\"n\": 4, \"layers\": 3, \"train\": 1},\n"
    " \"inputs\": {\"x\": {\"shape\": [2, \"n\"]}, \"rng\": {\"dtype\": \"i32\", \"shape\": [2]}},\n"
    " \"frozen\": [\"enc.layer1\", \"enc.layer2.w\"],\n"
    " \"body\": [\n"
    "  {\"scope\": \"enc\", \"body\": [\n"
    "   {\"repeat\": \"layers\", \"var\": \"i\", \"body\": [\n"
    "    {\"scope\": \"layer{i}\", \"body\": [\n"
    "     {\"param\": \"w\", \"shape\": [\"n\", \"n\"], \"out\": \"w\"},\n"
    "     {\"param\": \"stat\", \"shape\": [\"n\"], \"buffer\": true, \"init\": \"ones\"},\n"
    "     {\"op\": \"linear\", \"in\": [\"x\", \"w\"], \"out\": \"x\"},\n"
    "     {\"if\": \"i % 2 == 0 && train\", \"body\": [\n"
    "       {\"op\": \"dropout\", \"in\": [\"x\", \"rng\"], \"attrs\": {\"p\": 0.1}, \"out\": \"x\"}\n"
    "     ], \"else\": [\n"
    "       {\"op\": \"relu\", \"in\": [\"x\"], \"out\": \"x\"}\n"
    "     ]}\n"
    "    ]}\n"
    "   ]}\n"
    "  ]},\n"
    "  {\"param\": \"enc.layer10\", \"shape\": [1], \"init\": \"normal(0, 0.02)\"},\n"
    "  {\"use\": \"enc.layer0.w\", \"out\": \"tied\"},\n"
    "  {\"op\": \"dropout\", \"in\": [\"x\", \"rng\"], \"attrs\": {\"p\": 0.2, \"stream\": 42}, \"out\": \"x\"},\n"
    "  {\"op\": \"linear\", \"in\": [\"x\", \"tied\"], \"out\": \"y\"}\n"
    " ],\n"
    " \"outputs\": {\"y\": \"y\"}\n"
    "}\n";

static void test_layers(void **state) {
    (void)state;
    Module *m = load(LAYERS, NULL, 0);
    assert_param(m, "enc.layer0.w", "f32[4,4]", true, PARAM_WEIGHT, "zeros");
    assert_param(m, "enc.layer1.w", "f32[4,4]", false, PARAM_WEIGHT, "zeros");
    assert_param(m, "enc.layer2.w", "f32[4,4]", false, PARAM_WEIGHT, "zeros");
    assert_param(m, "enc.layer0.stat", "f32[4]", false, PARAM_BUFFER, "ones");
    /* "enc.layer1" does not freeze "enc.layer10". */
    assert_param(m, "enc.layer10", "f32[1]", true, PARAM_WEIGHT, "normal(0,0.02)");
    assert_int_equal(m->n_params, 7);
    const Function *f = forward(m);
    assert_ops(f, "param linear dropout param linear relu param linear dropout param dropout linear");
    assert_value_names(f, "enc.layer0.w enc.layer0.x enc.layer0.x.1 enc.layer1.w enc.layer1.x "
                          "enc.layer1.x.1 enc.layer2.w enc.layer2.x enc.layer2.x.1 enc.layer0.w.1 "
                          "x.1 y");
    /* Each dropout site gets its own stream unless one is given. */
    assert_int_equal(op_int(f->ops[2], "stream"), 0);
    assert_int_equal(op_int(f->ops[8], "stream"), 1);
    assert_int_equal(op_int(f->ops[10], "stream"), 42);
    /* The tied weight reads the same parameter. */
    assert_string_equal(op_string(f->ops[9], "name"), "enc.layer0.w");
    assert_ptr_equal(f->ops[11]->inputs[1], f->ops[9]->result);
    module_free(m);
    /* With train=0 every layer takes the else branch. */
    ConfigOverride ov = {"train", "0"};
    m = load(LAYERS, &ov, 1);
    assert_ops(forward(m), "param linear relu param linear relu param linear relu param dropout linear");
    module_free(m);
}

/* Blocks calling blocks, block-local names, optional inputs, scope-less calls. */
static const char BLOCKS[] =
    "{\"model\": \"b\",\n"
    " \"inputs\": {\"x\": {\"shape\": [2, 3]}},\n"
    " \"blocks\": {\n"
    "  \"act\": {\"inputs\": [\"x\", \"bias?\"], \"args\": [\"k\"], \"body\": [\n"
    "    {\"if\": \"k > 1\", \"body\": [{\"op\": \"add\", \"in\": [\"x\", \"bias\"], \"out\": \"x\"}]},\n"
    "    {\"op\": \"scale\", \"in\": [\"x\"], \"attrs\": {\"factor\": \"k / 2.0\"}, \"out\": \"y\"}\n"
    "  ], \"output\": \"y\"},\n"
    "  \"pair\": {\"inputs\": [\"x\"], \"args\": [\"k\"], \"body\": [\n"
    "    {\"block\": \"act\", \"scope\": \"a{k}\", \"in\": {\"x\": \"x\"}, \"args\": {\"k\": 1}, \"out\": \"t\"},\n"
    "    {\"block\": \"act\", \"in\": {\"x\": \"t\", \"bias\": \"x\"}, \"args\": {\"k\": \"k\"}, \"out\": \"t\"}\n"
    "  ], \"output\": \"t\"}\n"
    " },\n"
    " \"body\": [\n"
    "  {\"block\": \"pair\", \"scope\": \"p\", \"in\": {\"x\": \"x\"}, \"args\": {\"k\": 3}, \"out\": \"z\"}\n"
    " ],\n"
    " \"outputs\": {\"z\": \"z\"}\n"
    "}\n";

static void test_blocks(void **state) {
    (void)state;
    Module *m = load(BLOCKS, NULL, 0);
    const Function *f = forward(m);
    assert_ops(f, "scale add scale");
    assert_value_names(f, "p.a3.y p.x p.y");
    assert_true(op_float(f->ops[2], "factor") == 1.5);
    module_free(m);
}

static char *read_file(const char *path) {
    FILE *fp = fopen(path, "rb");
    if (!fp) fail_msg("cannot read %s", path);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    assert_int_equal(fread(s, 1, (size_t)n, fp), (size_t)n);
    s[n] = '\0';
    fclose(fp);
    return s;
}

static void test_printed_ir(void **state) {
    (void)state;
    Diag d;
    Module *m = frontend_load_file("tests/frontend/data/small.json", NULL, 0, &d);
    if (!m) fail_msg("%s", d.msg);
    char *got = ir_module_to_string(m);
    char *want = read_file("tests/frontend/data/small.ir");
    if (strcmp(got, want) != 0) fail_msg("printed IR differs:\n--- got\n%s--- want\n%s", got, want);
    free(got);
    free(want);
    module_free(m);
}

static void test_error_locations(void **state) {
    (void)state;
    load_fails("{\"model\": \"m\", \"inputs\": {}, \"body\": [\n"
               "  {\"op\": \"relu\", \"in\": [\"nope\"], \"out\": \"y\"}], \"outputs\": {}}",
               2, 25, "undefined value 'nope'");
    /* An escape before the error shifts the column in the file, not in the string. */
    load_fails("{\"model\": \"m\", \"config\": {\"a\": \"\\u0031 + zz\"}, \"inputs\": {}, \"body\": [], \"outputs\": {}}",
               1, 42, "undefined variable 'zz'");
    load_fails("", 1, 1, "malformed JSON: unexpected end of file");
    load_fails("{\"model\": \"m\"} x", 1, 16, "malformed JSON: unexpected text after the end");
    load_fails("[1, 2]", 1, 1, "a model file must hold a JSON object, got a list");
    Diag d;
    assert_null(frontend_load_file("tests/frontend/data/no_such_file.json", NULL, 0, &d));
    assert_null(d.loc.file);
    assert_non_null(strstr(d.msg, "cannot open model file"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mlp_example), cmocka_unit_test(test_defines),
        cmocka_unit_test(test_cross_entropy_default),
        cmocka_unit_test(test_layers),      cmocka_unit_test(test_blocks),
        cmocka_unit_test(test_printed_ir),  cmocka_unit_test(test_error_locations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
