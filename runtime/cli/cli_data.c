/* cli_data.c — `cap data synth|stats` and `cap vocab` (see cli_data.h). Command-line errors
 * print `cap: error: ... (see cap COMMAND --help)` and return 2; data errors print the
 * library's message and return 1. */
#include "cli_data.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_common.h"
#include "data.h"
#include "files.h"
#include "synth.h"
#include "vocab.h"

#define ERR_SIZE 1024

/* A bad value of an option: the message with the command's hint; returns 2. */
static int bad_value(const OptCommand *cmd, const char *err) { return opt_fail(cmd, "%s", err); }

/* ---- cap data synth ------------------------------------------------------------------------ */

static const OptSpec SYNTH_OPTIONS[] = {
    {"--out", 'o', OPT_VALUE, OPT_REQUIRED, "DIR", "the directory to write (created if missing)",
     NULL},
    {"--images", 0, OPT_VALUE, OPT_REQUIRED, "N", "how many images, 1..10000000", NULL},
    {"--seed", 0, OPT_VALUE, 0, "S", "the random seed (default 0)", NULL},
    {"--size", 0, OPT_VALUE, 0, "PIXELS", "the image side, 16..1024 (default 128)", NULL},
    {"--format", 0, OPT_VALUE, 0, "png|jpeg|mixed", "the image files' format (default mixed)",
     NULL},
    OPT_END,
};

static const OptCommand SYNTH_COMMAND = {
    .prog = "cap data synth",
    .synopsis = "--out DIR --images N [--seed S] [--size 128] [--format png|jpeg|mixed]",
    .summary = "write the synthetic shapes dataset (images and COCO captions with splits)",
    .about = "Writes DIR/images/, DIR/captions.json (all images, with splits) and "
             "DIR/captions_{train,val,test}.json (docs/data.md).",
    .tables = {SYNTH_OPTIONS, CAP_VERBOSE_OPTIONS},
};

/* The parsed options of `cap data synth` into so; returns 0 or 2 after the message. */
static int synth_options(const OptResult *o, SynthOptions *so) {
    char err[ERR_SIZE];
    long long n, seed, size;
    if (opt_int(o, "--images", 0, 1, 10000000, &n, err, sizeof err) ||
        opt_int(o, "--seed", 0, 0, 4294967295LL, &seed, err, sizeof err) ||
        opt_int(o, "--size", 128, 16, 1024, &size, err, sizeof err))
        return bad_value(&SYNTH_COMMAND, err);
    static const SynthFormat formats[] = {SYNTH_PNG, SYNTH_JPEG, SYNTH_JPEG, SYNTH_MIXED};
    int k = opt_choice(o, "--format", "png|jpeg|jpg|mixed", 3, err, sizeof err);
    if (k < 0) return bad_value(&SYNTH_COMMAND, err);
    *so = (SynthOptions){opt_str(o, "--out"), (int)n, (uint32_t)seed, (int)size, formats[k]};
    return 0;
}

static int cmd_synth(const OptResult *o) {
    SynthOptions so;
    int rc = synth_options(o, &so);
    if (rc) return rc;
    char err[ERR_SIZE];
    if (synth_write(&so, err, sizeof err) != CAP_OK) {
        fprintf(stderr, "cap: error: %s\n", err);
        return 1;
    }
    const char *f = opt_str(o, "--format") ? opt_str(o, "--format") : "mixed";
    int tr, va, te;
    synth_split_counts(so.n_images, &tr, &va, &te);
    printf("wrote %d images (%dx%d, %s, seed %u) to %s: %d train, %d val, %d test, %d captions "
           "each\n", so.n_images, so.size, so.size, f, so.seed, so.out_dir, tr, va, te,
           SYNTH_N_CAPTIONS);
    printf("use --data coco:%s/captions.json (splits inside), or captions_{train,val,test}.json\n",
           so.out_dir);
    return 0;
}

static int synth_main(int argc, char **argv) {
    return opt_run(&SYNTH_COMMAND, argc, argv, cmd_synth);
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

static const OptSpec STATS_OPTIONS[] = {
    {"--data", 0, OPT_VALUE, OPT_REQUIRED, "SPEC",
     "the dataset: FORMAT:PATH[,IMAGE_DIR][,split=RULE], FORMAT coco, flickr30k or karpathy "
     "(docs/data.md)", NULL},
    OPT_END,
};

static const OptCommand STATS_COMMAND = {
    .prog = "cap data stats",
    .synopsis = "--data SPEC",
    .summary = "load a dataset and print its images per split and captions",
    .about = "Loads a dataset; prints images per split and captions; warnings (skipped "
             "captions, bad UTF-8, ...) go to stderr.",
    .tables = {STATS_OPTIONS, CAP_VERBOSE_OPTIONS},
};

static int cmd_stats(const OptResult *o) {
    Dataset *ds;
    int rc = load(opt_str(o, "--data"), &ds);
    if (rc) return rc;
    printf("dataset: %s %s (images under %s)\n", data_format_name(ds->format), ds->source, ds->image_dir);
    printf("images: %d (train %d, val %d, test %d)\n", (int)ds->n_images, (int)ds->n_per_split[0],
           (int)ds->n_per_split[1], (int)ds->n_per_split[2]);
    printf("captions: %d (%.2f per image)\n", (int)ds->n_captions, (double)ds->n_captions / ds->n_images);
    data_free(ds);
    return 0;
}

static int stats_main(int argc, char **argv) {
    return opt_run(&STATS_COMMAND, argc, argv, cmd_stats);
}

static const OptSub DATA_SUBCOMMANDS[] = {
    {"synth", &SYNTH_COMMAND, synth_main, 0},
    {"stats", &STATS_COMMAND, stats_main, 0},
    {NULL, NULL, NULL, 0},
};

const OptCommand CAP_DATA_COMMAND = {
    .prog = "cap data",
    .synopsis = "synth|stats [options]",
    .summary = "datasets: write the synthetic set (synth), describe one (stats)",
    .about = "Takes no cap.so. `cap data COMMAND --help` describes each command.",
    .tables = {CAP_VERBOSE_OPTIONS},
    .subs = DATA_SUBCOMMANDS,
};

int cap_cmd_data(int argc, char **argv) {
    OptResult o;
    int rc;
    if (opt_dispatch(&CAP_DATA_COMMAND, argc, argv, &o, &rc)) return rc;
    opt_free(&o);
    return opt_fail(&CAP_DATA_COMMAND, "cap data needs a subcommand: synth or stats");
}

/* ---- cap vocab ------------------------------------------------------------------------------ */

static const OptSpec VOCAB_OPTIONS[] = {
    {"--data", 0, OPT_VALUE, OPT_REQUIRED, "SPEC", "the dataset (docs/data.md)", NULL},
    {"--min-count", 0, OPT_VALUE, 0, "N",
     "keep the words seen at least N times in the train split (default 5)", NULL},
    {"--out", 'o', OPT_VALUE, OPT_REQUIRED, "VOCAB.txt", "the vocabulary file to write", NULL},
    OPT_END,
};

const OptCommand CAP_VOCAB_COMMAND = {
    .prog = "cap vocab",
    .synopsis = "--data SPEC [--min-count 5] -o VOCAB.txt",
    .summary = "build the vocabulary of a dataset's train split",
    .about = "Builds the vocabulary from the train split (tokens seen >= --min-count times, "
             "after <pad> <start> <end> <unk>) and writes it, one token per line. Takes no "
             "cap.so.",
    .tables = {VOCAB_OPTIONS, CAP_VERBOSE_OPTIONS},
};

static int vocab_run(const OptResult *o) {
    char err[ERR_SIZE];
    long long min_count;
    const char *data = opt_str(o, "--data"), *out = opt_str(o, "--out");
    if (opt_int(o, "--min-count", 5, 1, 1000000000L, &min_count, err, sizeof err))
        return bad_value(&CAP_VOCAB_COMMAND, err);
    int rc;
    if ((rc = refuse_output(out, "-o", data))) return rc;
    Dataset *ds;
    if ((rc = load(data, &ds))) return rc;
    Vocab *v = NULL;
    CapStatus st = vocab_build(ds, (int)min_count, &v, err, sizeof err);
    if (!st) st = vocab_save(v, out, err, sizeof err);
    if (st) fprintf(stderr, "cap: error: %s\n", err);
    else
        printf("wrote %s: %d tokens (%d words seen >= %lld times in %d train images, + 4 specials)\n",
               out, (int)v->size, (int)v->size - VOCAB_N_SPECIAL, min_count,
               (int)ds->n_per_split[DATA_TRAIN]);
    vocab_free(v);
    data_free(ds);
    return st ? 1 : 0;
}

int cap_cmd_vocab(int argc, char **argv) {
    return opt_run(&CAP_VOCAB_COMMAND, argc, argv, vocab_run);
}
