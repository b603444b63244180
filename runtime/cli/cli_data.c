/* cli_data.c — `cap data synth|stats` and `cap vocab` (see cli_data.h). Command-line errors
 * print `cap: error: ...` and return 2; data errors print the library's message and return 1. */
#include "cli_data.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data.h"
#include "files.h"
#include "synth.h"
#include "vocab.h"

#define ERR_SIZE 1024

typedef struct Opt {
    const char *name;  /* "--out" */
    const char *alias; /* "-o" or NULL */
    const char *value; /* set by parse_opts */
} Opt;

static int usage(const char *fmt, const char *arg) {
    fprintf(stderr, "cap: error: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (see docs/cli.md, 'cap data' and 'cap vocab')\n");
    return 2;
}

/* Fills opts[i].value from argv[first..]; "--x V" and "--x=V". Returns 0 or 2. */
static int parse_opts(int argc, char **argv, int first, Opt *opts, int n) {
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        const char *eq = strchr(a, '=');
        size_t len = eq && a[0] == '-' && a[1] == '-' ? (size_t)(eq - a) : strlen(a);
        Opt *o = NULL;
        for (int k = 0; k < n && !o; k++)
            if ((strlen(opts[k].name) == len && strncmp(a, opts[k].name, len) == 0) ||
                (opts[k].alias && strcmp(a, opts[k].alias) == 0))
                o = &opts[k];
        if (!o) return usage(a[0] == '-' ? "unknown option '%s'" : "unexpected argument '%s'", a);
        if (len < strlen(a)) o->value = eq + 1;
        else if (i + 1 < argc) o->value = argv[++i];
        else return usage("option '%s' needs a value", a);
    }
    return 0;
}

static int int_value(const char *name, const char *v, long dflt, long min, long max, long *out) {
    if (!v) {
        *out = dflt;
        return 0;
    }
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (!*v || *end || errno || x < min || x > max) {
        fprintf(stderr, "cap: error: %s must be an integer in %ld..%ld, not '%s'\n", name, min, max, v);
        return 2;
    }
    *out = x;
    return 0;
}

/* ---- cap data synth ------------------------------------------------------------------------ */

static int cmd_synth(int argc, char **argv) {
    Opt o[] = {{"--out", "-o", NULL}, {"--images", NULL, NULL}, {"--seed", NULL, NULL},
               {"--size", NULL, NULL}, {"--format", NULL, NULL}};
    int rc = parse_opts(argc, argv, 2, o, 5);
    if (rc) return rc;
    if (!o[0].value) return usage("cap data synth needs --out DIR%s", "");
    if (!o[1].value) return usage("cap data synth needs --images N%s", "");
    long n, seed, size;
    if ((rc = int_value("--images", o[1].value, 0, 1, 10000000, &n)) ||
        (rc = int_value("--seed", o[2].value, 0, 0, 4294967295L, &seed)) ||
        (rc = int_value("--size", o[3].value, 128, 16, 1024, &size)))
        return rc;
    SynthFormat format = SYNTH_MIXED;
    const char *f = o[4].value ? o[4].value : "mixed";
    if (strcmp(f, "png") == 0) format = SYNTH_PNG;
    else if (strcmp(f, "jpeg") == 0 || strcmp(f, "jpg") == 0) format = SYNTH_JPEG;
    else if (strcmp(f, "mixed") != 0) return usage("--format is png, jpeg or mixed, not '%s'", f);
    SynthOptions so = {o[0].value, (int)n, (uint32_t)seed, (int)size, format};
    char err[ERR_SIZE];
    if (synth_write(&so, err, sizeof err) != CAP_OK) {
        fprintf(stderr, "cap: error: %s\n", err);
        return 1;
    }
    int tr, va, te;
    synth_split_counts((int)n, &tr, &va, &te);
    printf("wrote %ld images (%ldx%ld, %s, seed %ld) to %s: %d train, %d val, %d test, %d captions each\n",
           n, size, size, f, seed, o[0].value, tr, va, te, SYNTH_N_CAPTIONS);
    printf("use --data coco:%s/captions.json (splits inside), or captions_{train,val,test}.json\n",
           o[0].value);
    return 0;
}

/* ---- cap data stats ------------------------------------------------------------------------- */

/* The vocabulary must not replace the annotations it is built from (same device and inode),
 * and its location must be writable before the dataset is read. Returns 0, or 1 after the
 * message. */
static int refuse_output(const char *out, const char *what, const char *data_spec) {
    char err[ERR_SIZE];
    DataSpec spec;
    const char *annotations = data_spec_parse(data_spec, &spec, err, sizeof err) == 0 ? spec.path : NULL;
    if (file_check_new_output(out, what, &annotations, 1, err, sizeof err) == 0)
        return 0;
    fprintf(stderr, "cap: error: %s\n", err);
    return 1;
}

static int load(const char *spec, Dataset **ds) {
    char err[ERR_SIZE];
    CapStatus st = data_load(spec, ds, err, sizeof err);
    if (st == CAP_OK) {
        data_print_warnings(*ds, stderr);
        return 0;
    }
    fprintf(stderr, "cap: error: %s\n", err);
    return st == CAP_E_ARG ? 2 : 1;
}

static int cmd_stats(int argc, char **argv) {
    Opt o[] = {{"--data", NULL, NULL}};
    int rc = parse_opts(argc, argv, 2, o, 1);
    if (rc) return rc;
    if (!o[0].value) return usage("cap data stats needs --data FORMAT:PATH%s", "");
    Dataset *ds;
    if ((rc = load(o[0].value, &ds))) return rc;
    printf("dataset: %s %s (images under %s)\n", data_format_name(ds->format), ds->source, ds->image_dir);
    printf("images: %d (train %d, val %d, test %d)\n", (int)ds->n_images, (int)ds->n_per_split[0],
           (int)ds->n_per_split[1], (int)ds->n_per_split[2]);
    printf("captions: %d (%.2f per image)\n", (int)ds->n_captions, (double)ds->n_captions / ds->n_images);
    data_free(ds);
    return 0;
}

int cap_cmd_data(int argc, char **argv) {
    if (argc < 2) return usage("cap data needs a subcommand: synth or stats%s", "");
    if (strcmp(argv[1], "synth") == 0) return cmd_synth(argc, argv);
    if (strcmp(argv[1], "stats") == 0) return cmd_stats(argc, argv);
    return usage("unknown subcommand 'cap data %s' (synth or stats)", argv[1]);
}

/* ---- cap vocab ------------------------------------------------------------------------------ */

int cap_cmd_vocab(int argc, char **argv) {
    Opt o[] = {{"--data", NULL, NULL}, {"--min-count", NULL, NULL}, {"--out", "-o", NULL}};
    int rc = parse_opts(argc, argv, 1, o, 3);
    if (rc) return rc;
    if (!o[0].value) return usage("cap vocab needs --data FORMAT:PATH%s", "");
    if (!o[2].value) return usage("cap vocab needs -o VOCAB.txt%s", "");
    long min_count;
    if ((rc = int_value("--min-count", o[1].value, 5, 1, 1000000000L, &min_count))) return rc;
    if ((rc = refuse_output(o[2].value, "-o", o[0].value))) return rc;
    Dataset *ds;
    if ((rc = load(o[0].value, &ds))) return rc;
    char err[ERR_SIZE];
    Vocab *v = NULL;
    CapStatus st = vocab_build(ds, (int)min_count, &v, err, sizeof err);
    if (!st) st = vocab_save(v, o[2].value, err, sizeof err);
    if (st) fprintf(stderr, "cap: error: %s\n", err);
    else
        printf("wrote %s: %d tokens (%d words seen >= %ld times in %d train images, + 4 specials)\n",
               o[2].value, (int)v->size, (int)v->size - VOCAB_N_SPECIAL, min_count,
               (int)ds->n_per_split[DATA_TRAIN]);
    vocab_free(v);
    data_free(ds);
    return st ? 1 : 0;
}
