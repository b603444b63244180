/* test_entries.c — the model file's "entries" section: each entry builds one more function of
 * the module with the same statements and blocks; param statements in an entry bind forward's
 * parameters (same dtype and shape) and never add any; errors point at the JSON node; the
 * shape and training-program passes treat entries as plain functions (the training program
 * derives from forward alone). */
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
#include "passes.h"

/* One dense block used by forward (batch 4) and by the entry "single" (batch 1, eval path
 * through the block argument `train`). `#ENTRIES#` is replaced per test. */
static const char MODEL[] =
    "{\n"
    "  \"model\": \"m\",\n"
    "  \"config\": {\"batch\": 4, \"n\": 3, \"k\": 2},\n"
    "  \"inputs\": {\"x\": {\"shape\": [\"batch\", \"n\"]}, \"rng\": {\"dtype\": \"i32\", \"shape\": [2]}},\n"
    "  \"blocks\": {\n"
    "    \"dense\": {\n"
    "      \"inputs\": [\"x\", \"rng?\"], \"args\": [\"train\"],\n"
    "      \"body\": [\n"
    "        {\"param\": \"weight\", \"shape\": [\"k\", \"n\"], \"init\": \"kaiming_uniform\", \"out\": \"w\"},\n"
    "        {\"param\": \"bias\", \"shape\": [\"k\"], \"out\": \"b\"},\n"
    "        {\"op\": \"linear\", \"in\": [\"x\", \"w\", \"b\"], \"out\": \"y\"},\n"
    "        {\"if\": \"train\", \"body\": [{\"op\": \"dropout\", \"in\": [\"y\", \"rng\"], \"attrs\": {\"p\": 0.5}, \"out\": \"y\"}]}\n"
    "      ],\n"
    "      \"output\": \"y\"\n"
    "    }\n"
    "  },\n"
    "  \"body\": [\n"
    "    {\"block\": \"dense\", \"scope\": \"fc\", \"in\": {\"x\": \"x\", \"rng\": \"rng\"}, \"args\": {\"train\": 1}, \"out\": \"y\"}\n"
    "  ],\n"
    "  \"outputs\": {\"y\": \"y\"}#ENTRIES#\n"
    "}\n";

/* MODEL with `#ENTRIES#` replaced by text (malloc'd). */
static char *model_with(const char *entries) {
    const char *mark = strstr(MODEL, "#ENTRIES#");
    size_t head = (size_t)(mark - MODEL), tail = strlen(mark + 9), mid = strlen(entries);
    char *s = malloc(head + mid + tail + 1);
    assert_non_null(s);
    memcpy(s, MODEL, head);
    memcpy(s + head, entries, mid);
    memcpy(s + head + mid, mark + 9, tail + 1);
    return s;
}

static Module *load(const char *entries) {
    char *text = model_with(entries);
    Diag d;
    Module *m = frontend_load_text(text, strlen(text), "t.json", NULL, 0, &d);
    free(text);
    if (!m) fail_msg("load failed: %d:%d: %s", d.loc.line, d.loc.col, d.msg);
    return m;
}

static void load_fails(const char *entries, int line, int col, const char *msg) {
    char *text = model_with(entries);
    Diag d;
    Module *m = frontend_load_text(text, strlen(text), "t.json", NULL, 0, &d);
    free(text);
    if (m) {
        module_free(m);
        fail_msg("loaded, want error '%s'", msg);
    }
    if (strcmp(d.msg, msg) != 0) fail_msg("message '%s', want '%s'", d.msg, msg);
    assert_int_equal(d.loc.line, line);
    assert_int_equal(d.loc.col, col);
}

static void assert_ops(const Function *f, const char *want) {
    char got[2048] = "";
    size_t len = 0;
    for (int i = 0; i < f->n_ops; i++)
        len += (size_t)snprintf(got + len, sizeof got - len, "%s%s", i ? " " : "",
                                op_info(f->ops[i]->kind)->name);
    assert_string_equal(got, want);
}

static const char SINGLE[] =
    ",\n  \"entries\": {\n"
    "    \"single\": {\n"
    "      \"inputs\": {\"x1\": {\"shape\": [1, \"n\"]}},\n"
    "      \"body\": [{\"block\": \"dense\", \"scope\": \"fc\", \"in\": {\"x\": \"x1\"}, \"args\": {\"train\": 0}, \"out\": \"y\"}],\n"
    "      \"outputs\": {\"y1\": \"y\"}\n"
    "    }\n"
    "  }";

static void test_entry_shares_parameters(void **state) {
    (void)state;
    Module *m = load(SINGLE);
    assert_int_equal(m->n_funcs, 2);
    assert_int_equal(m->n_params, 2); /* fc.weight, fc.bias: declared once */
    const Function *f = module_find_function(m, "single");
    assert_non_null(f);
    assert_ptr_equal(m->funcs[1], f); /* after forward */
    assert_int_equal(f->n_inputs, 1);
    assert_string_equal(f->inputs[0]->name, "x1");
    assert_ops(f, "param param linear");
    assert_string_equal(op_string(f->ops[0], "name"), "fc.weight");
    assert_string_equal(op_string(f->ops[1], "name"), "fc.bias");
    assert_int_equal(f->n_outputs, 1);
    assert_string_equal(f->output_names[0], "y1");
    assert_ops(module_find_function(m, "forward"), "param param linear dropout");
    module_free(m);
}

/* Shapes are inferred for entries too; the training program builds eval_loss and train_step
 * from forward and leaves the entry alone. */
static void test_entry_through_passes(void **state) {
    (void)state;
    Module *m = load(SINGLE);
    Diag d;
    if (pass_infer_shapes(m, NULL, &d) != 0) fail_msg("shapes: %s", d.msg);
    const Function *f = module_find_function(m, "single");
    char type[64];
    type_format(f->outputs[0]->dtype, &f->outputs[0]->shape, type, sizeof type);
    assert_string_equal(type, "f32[1,2]");
    if (pass_build_training_program(m, NULL, &d) != 0) fail_msg("training: %s", d.msg);
    assert_non_null(module_find_function(m, "eval_loss"));
    assert_ptr_equal(module_find_function(m, "single"), f);
    assert_int_equal(f->n_ops, 3);
    module_free(m);
}

static void test_entry_errors(void **state) {
    (void)state;
    /* The entries text starts on line 21, after `"outputs"` on line 20. */
    load_fails(",\n  \"entries\": {\"single\": {\"inputs\": {}, \"body\": [\n"
               "    {\"param\": \"extra\", \"shape\": [2], \"out\": \"e\"}], \"outputs\": {}}}",
               22, 15,
               "entry 'single' declares parameter 'extra' that forward does not have (entries may "
               "only use forward's parameters)");
    load_fails(",\n  \"entries\": {\"single\": {\"inputs\": {}, \"body\": [\n"
               "    {\"scope\": \"fc\", \"body\": [{\"param\": \"bias\", \"shape\": [3], \"out\": \"b\"}]}],\n"
               "    \"outputs\": {}}}",
               22, 40, "parameter 'fc.bias' is f32[3] here but f32[2] in forward (line 10)");
    load_fails(",\n  \"entries\": {\"forward\": {\"inputs\": {}, \"body\": [], \"outputs\": {}}}", 21, 15,
               "entry name 'forward' is reserved (the compiler builds it)");
    load_fails(",\n  \"entries\": {\"e\": {\"inputs\": {}, \"body\": [], \"outputs\": {}, \"output\": 1}}", 21,
               62, "unknown key 'output' in an entry");
    load_fails(",\n  \"entries\": {\"e\": {\"inputs\": {}, \"body\": []}}", 21, 20,
               "missing key 'outputs' in an entry");
    load_fails(",\n  \"entries\": [1]", 21, 14,
               "'entries' must be an object of entry points, got a list");
    /* An entry sees only its own inputs, not forward's values. */
    load_fails(",\n  \"entries\": {\"e\": {\"inputs\": {}, \"body\": [], \"outputs\": {\"y\": \"y\"}}}", 21, 64,
               "undefined value 'y'");
}

/* An output "%NAME" is a value of the function by its IR name, `{expr}` interpolated: here
 * the linear inside a block call (scope fc), which the entry's own names do not reach, and a
 * value whose `out` was interpolated. */
static void test_output_by_ir_name(void **state) {
    (void)state;
    Module *m = load(",\n  \"entries\": {\"e\": {\"inputs\": {\"x1\": {\"shape\": [1, \"n\"]}},\n"
                     "    \"body\": [{\"block\": \"dense\", \"scope\": \"fc\", \"in\": {\"x\": \"x1\"}, "
                     "\"args\": {\"train\": 0}, \"out\": \"y\"},\n"
                     "      {\"op\": \"relu\", \"in\": [\"y\"], \"out\": \"r{k}\"}],\n"
                     "    \"outputs\": {\"r\": \"%r{k}\", \"lin\": \"%fc.y\"}}}");
    const Function *f = module_find_function(m, "e");
    assert_int_equal(f->n_outputs, 2);
    assert_string_equal(f->output_names[1], "lin");
    assert_ptr_equal(f->outputs[1], f->ops[2]->result);
    assert_string_equal(f->outputs[1]->name, "fc.y");
    assert_string_equal(f->outputs[0]->name, "r2");
    module_free(m);
    /* A name that is not a value is an error at the string, naming the function. */
    load_fails(",\n  \"entries\": {\"e\": {\"inputs\": {}, \"body\": [], \"outputs\": {\"y\": \"%fc.{k - 1}.y\"}}}",
               21, 64,
               "function 'e' has no value named '%fc.1.y' (a '%NAME' output is a value's IR name: "
               "its scope path and out name, as `capc --dump-ir` prints it)");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_entry_shares_parameters),
        cmocka_unit_test(test_entry_through_passes),
        cmocka_unit_test(test_entry_errors),
        cmocka_unit_test(test_output_by_ir_name),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
