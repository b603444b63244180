/* test_options.c — support/options.c, the command-line parser of capc and cap: every form
 * a value may take, the rules, the errors (with their suggestions) and the generated help. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "options.h"

static const OptSpec OPTS[] = {
    {"--out", 'o', OPT_VALUE, OPT_REQUIRED, "FILE", "where to write", NULL},
    {NULL, 'D', OPT_REPEAT, 0, "NAME=VALUE", "a define", NULL},
    {"--verbose", 'v', OPT_COUNTED, 0, NULL, "say more", NULL},
    {"--image", 0, OPT_MULTI, 0, "FILE...", "images", NULL},
    {"--fast", 0, OPT_FLAG, 0, NULL, "go fast", NULL},
    {"--fuse", 0, OPT_VALUE, OPT_NONEMPTY, "LIST", "rules", NULL},
    {"--time-limit", 0, OPT_VALUE, 0, "D", "a duration", "--time"},
    {"--data", 0, OPT_VALUE, 0, "SPEC", "a dataset", NULL},
    {"--batches", 0, OPT_VALUE, 0, "B", "batch files", NULL},
    {"--vocab", 0, OPT_VALUE, 0, "V", "with --data", NULL},
    {"--version", 0, OPT_FLAG, OPT_EARLY, NULL, "the version", NULL},
    OPT_END,
};

static const OptRule RULES[] = {
    {OPT_ONE_OF, {"--data", "--batches"}},
    {OPT_GOES_WITH, {"--vocab", "--data"}},
    {OPT_RULE_END, {NULL}},
};

static const OptCommand CMD = {
    .prog = "tool run",
    .synopsis = "MODEL [options]",
    .about = "Runs a model.",
    .tables = {OPTS},
    .rules = RULES,
    .min_pos = 1,
    .max_pos = 1,
    .pos_missing = "tool run needs a MODEL",
};

/* Parses the NULL-terminated words (argv[0] is "run"); returns opt_parse's result. */
static int parse(OptResult *r, char *err, const char *first, ...) {
    char *argv[32] = {"run"};
    int argc = 1;
    va_list ap;
    va_start(ap, first);
    for (const char *w = first; w != NULL && argc < 31; w = va_arg(ap, const char *))
        argv[argc++] = (char *)w;
    va_end(ap);
    err[0] = '\0';
    return opt_parse(&CMD, argc, argv, r, err, 512);
}

static void expect_error(const char *want, int rc, OptResult *r, const char *err) {
    assert_int_equal(rc, OPT_ERROR);
    if (strcmp(err, want) != 0) fail_msg("want \"%s\"\n got \"%s\"", want, err);
    opt_free(r);
}

static void test_value_forms(void **state) {
    (void)state;
    OptResult r;
    char err[512];
    assert_int_equal(parse(&r, err, "m.json", "--out", "a", "-D", "x=1", "-Dy=2", "-vv", "-v",
                           "--time=5m", "--data=coco:c", "--fuse=all", NULL), OPT_OK);
    assert_string_equal(opt_str(&r, "--out"), "a");
    assert_string_equal(opt_str(&r, "-o"), "a");
    assert_int_equal(opt_get(&r, "-D")->n_list, 2);
    assert_string_equal(opt_get(&r, "-D")->list[1], "y=2");
    assert_int_equal(opt_get(&r, "--verbose")->count, 3);
    assert_string_equal(opt_str(&r, "--time-limit"), "5m");
    assert_string_equal(opt_str(&r, "--fuse"), "all");
    assert_false(opt_has(&r, "--fast"));
    assert_int_equal(r.n_pos, 1);
    assert_string_equal(r.pos[0], "m.json");
    opt_free(&r);
    assert_int_equal(parse(&r, err, "-ob", "--image", "x.png", "y.png", "--fast", "--batches",
                           "-b-", "--", "-m", NULL), OPT_OK);
    assert_string_equal(opt_str(&r, "-o"), "b");
    assert_int_equal(opt_get(&r, "--image")->n_list, 2);
    assert_string_equal(opt_str(&r, "--batches"), "-b-"); /* a value may start with '-' */
    assert_string_equal(r.pos[0], "-m");                   /* after "--" */
    opt_free(&r);
}

static void test_errors(void **state) {
    (void)state;
    OptResult r;
    char err[512];
    int rc = parse(&r, err, "m", "-o", "a", "--data", "d", "--bogus", NULL);
    expect_error("unknown option '--bogus'", rc, &r, err);
    rc = parse(&r, err, "m", "-o", "a", "--data", "d", "--vocba", "v", NULL);
    expect_error("unknown option '--vocba'; did you mean --vocab?", rc, &r, err);
    rc = parse(&r, err, "m", "-o", NULL);
    expect_error("option '-o' needs a value", rc, &r, err);
    rc = parse(&r, err, "m", "-o", "a", "--data", "d", "--fuse=", NULL);
    expect_error("option '--fuse' needs a value", rc, &r, err);
    rc = parse(&r, err, "m", "-o", "a", "--data", "d", "--fast=1", NULL);
    expect_error("option '--fast' takes no value", rc, &r, err);
    rc = parse(&r, err, "m", "-o", "a", "--data", "d", "-vx", NULL);
    expect_error("unknown option '-x' in '-vx'", rc, &r, err);
    rc = parse(&r, err, "m", "n", NULL);
    expect_error("unexpected argument 'n'", rc, &r, err);
    rc = parse(&r, err, "-o", "a", NULL);
    expect_error("tool run needs a MODEL", rc, &r, err);
    rc = parse(&r, err, "m", "--data", "d", NULL);
    expect_error("tool run needs --out FILE", rc, &r, err);
    rc = parse(&r, err, "m", "-o", "a", NULL);
    expect_error("tool run needs one of --data or --batches", rc, &r, err);
    rc = parse(&r, err, "m", "-o", "a", "--batches", "b", "--data", "d", NULL);
    expect_error("--data and --batches exclude each other", rc, &r, err);
    rc = parse(&r, err, "m", "-o", "a", "--batches", "b", "--vocab", "v", NULL);
    expect_error("--vocab goes with --data", rc, &r, err);
}

/* --help wins over anything, errors included; an early option ends parsing too. */
static void test_help_and_early(void **state) {
    (void)state;
    OptResult r;
    char err[512];
    assert_int_equal(parse(&r, err, "--bogus", "-h", NULL), OPT_HELP);
    opt_free(&r);
    assert_int_equal(parse(&r, err, "--version", "--bogus", NULL), OPT_OK);
    assert_non_null(r.early);
    assert_string_equal(r.early->name, "--version");
    opt_free(&r);
    assert_int_equal(parse(&r, err, "m", "-o", "a", "--data", "d", "--", "--help", NULL),
                     OPT_ERROR); /* after "--", --help is a second positional */
    opt_free(&r);
    assert_int_equal(parse(&r, err, "-vh", NULL), OPT_HELP); /* h in a cluster of flags */
    opt_free(&r);
    assert_int_equal(parse(&r, err, "m", "-oh", "--data", "d", NULL), OPT_OK); /* -o's value */
    assert_string_equal(opt_str(&r, "--out"), "h");
    opt_free(&r);
}

static void test_help_text(void **state) {
    (void)state;
    char *text = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&text, &size);
    opt_help(f, &CMD);
    fclose(f);
    assert_non_null(strstr(text, "usage: tool run MODEL [options]\n\nRuns a model.\n"));
    assert_non_null(strstr(text, "\n  -o, --out FILE        where to write\n"));
    assert_non_null(strstr(text, "\n  -D NAME=VALUE         a define\n"));
    assert_non_null(strstr(text, "\n  --time-limit, --time D\n"));
    assert_non_null(strstr(text, "\n  -h, --help            print this help and exit\n"));
    free(text);
}

static void test_values(void **state) {
    (void)state;
    OptResult r;
    char err[512];
    long long n;
    double x;
    assert_int_equal(parse(&r, err, "m", "-o", "12", "--data", "0.5", "--batches", "skip", NULL),
                     OPT_ERROR); /* one of: both given */
    opt_free(&r);
    assert_int_equal(parse(&r, err, "m", "-o", "12", "--data", "0.5", NULL), OPT_OK);
    assert_int_equal(opt_int(&r, "--out", 0, 1, 20, &n, err, sizeof err), 0);
    assert_int_equal(n, 12);
    assert_int_equal(opt_int(&r, "--out", 0, 1, 10, &n, err, sizeof err), -1);
    assert_string_equal(err, "--out must be an integer in 1..10, not '12'");
    assert_int_equal(opt_int(&r, "--batches", 7, 1, 10, &n, err, sizeof err), 0);
    assert_int_equal(n, 7);
    assert_int_equal(opt_real(&r, "--data", 0, 0, 1, &x, err, sizeof err), 0);
    assert_true(x == 0.5);
    assert_int_equal(opt_choice(&r, "--data", "stop|skip", 0, err, sizeof err), -1);
    assert_string_equal(err, "--data is stop or skip, not '0.5'");
    assert_int_equal(opt_choice(&r, "--batches", "stop|skip", 1, err, sizeof err), 1);
    opt_free(&r);
    /* strtoll/strtod would take these; a number option does not */
    assert_int_equal(parse(&r, err, "m", "-o", " 12", "--data", "+0.5", NULL), OPT_OK);
    assert_int_equal(opt_int(&r, "--out", 0, 1, 20, &n, err, sizeof err), -1);
    assert_string_equal(err, "--out must be an integer in 1..20, not ' 12'");
    assert_int_equal(opt_real(&r, "--data", 0, 0, 1, &x, err, sizeof err), -1);
    assert_string_equal(err, "--data must be a number in 0..1, not '+0.5'");
    opt_free(&r);
    assert_int_equal(parse(&r, err, "m", "-o", "-3", "--data", ".5", NULL), OPT_OK);
    assert_int_equal(opt_int(&r, "--out", 0, -5, 20, &n, err, sizeof err), 0);
    assert_int_equal(n, -3);
    assert_int_equal(opt_real(&r, "--data", 0, 0, 1, &x, err, sizeof err), 0);
    assert_true(x == 0.5);
    opt_free(&r);
}

static int sub_ran(int argc, char **argv) {
    return argc == 3 && strcmp(argv[0], "go") == 0 && strcmp(argv[1], "-v") == 0 ? 7 : 1;
}

static const OptSub SUBS[] = {{"go", &CMD, sub_ran, 0}, {NULL, NULL, NULL, 0}};
static const OptSpec TOP_OPTS[] = {{"--verbose", 'v', OPT_COUNTED, 0, NULL, "more", NULL},
                                   OPT_END};
static const OptCommand TOP = {.prog = "tool", .tables = {TOP_OPTS}, .subs = SUBS};

/* The word may follow options; they pass to the subcommand, after the word. */
static void test_dispatch(void **state) {
    (void)state;
    OptResult r;
    int status = -1;
    char *argv[] = {"tool", "-v", "go", "x", NULL};
    assert_int_equal(opt_dispatch(&TOP, 4, argv, &r, &status), 1);
    assert_int_equal(status, 7);
    char err[256];
    assert_null(opt_find_sub(&TOP, "og", err, sizeof err));
    assert_string_equal(err, "unknown command 'og' (commands: go)");
    char *none[] = {"tool", "-v", NULL};
    assert_int_equal(opt_dispatch(&TOP, 2, none, &r, &status), 0);
    assert_int_equal(status, 0);
    assert_int_equal(opt_get(&r, "--verbose")->count, 1);
    opt_free(&r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_value_forms),   cmocka_unit_test(test_errors),
        cmocka_unit_test(test_help_and_early), cmocka_unit_test(test_help_text),
        cmocka_unit_test(test_values),        cmocka_unit_test(test_dispatch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
