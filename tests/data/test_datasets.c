/* test_datasets.c — the dataset readers on small fixture files (tests/data/fixtures/): COCO,
 * Flickr30k token file and CSV, Karpathy; spec strings; splits; and every malformed input the
 * readers must name: JSON syntax, missing keys, broken CSV quoting, lines without a tab,
 * unknown splits, captions for images that do not exist, empty captions, non-UTF-8 bytes;
 * NUL bytes and \u0000 (dropped with a warning), lone \r line ends, two images with one id. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "data.h"
#include "test_util.h"

static char err[1024];

static Dataset *load_ok(const char *spec) {
    Dataset *ds = NULL;
    CapStatus st = data_load(spec, &ds, err, sizeof err);
    if (st) fail_msg("%s: %s", spec, err);
    return ds;
}

/* Loads spec expecting failure; err must contain every given fragment. */
static void load_fails(const char *spec, CapStatus want, const char *frag1, const char *frag2) {
    Dataset *ds = NULL;
    CapStatus st = data_load(spec, &ds, err, sizeof err);
    assert_null(ds);
    assert_int_equal(st, want);
    if (frag1 && !strstr(err, frag1)) fail_msg("'%s' not in '%s'", frag1, err);
    if (frag2 && !strstr(err, frag2)) fail_msg("'%s' not in '%s'", frag2, err);
}

static char spec_buf[4200];
static const char *spec(const char *format, const char *name, const char *extra) {
    snprintf(spec_buf, sizeof spec_buf, "%s:%s%s", format, fixture(name), extra ? extra : "");
    return spec_buf;
}

static const char *caption(const Dataset *ds, int image, int k) {
    assert_true(k < ds->images[image].n_captions);
    return ds->captions[ds->images[image].first_caption + k];
}

static void test_coco(void **state) {
    (void)state;
    Dataset *ds = load_ok(spec("coco", "coco_small.json", ",/data/imgs"));
    assert_int_equal(ds->format, DATA_COCO);
    assert_int_equal(ds->n_images, 2); /* image 3 has no captions: dropped */
    assert_int_equal(ds->n_captions, 4);
    assert_int_equal(ds->images[0].id, 1);
    assert_string_equal(ds->images[0].path, "/data/imgs/a.jpg");
    assert_int_equal(ds->images[0].n_captions, 3);
    assert_string_equal(caption(ds, 0, 0), "A man riding a horse.");
    assert_string_equal(caption(ds, 0, 1), "The man's horse, brown."); /* trimmed */
    assert_string_equal(caption(ds, 0, 2), "bad \xEF\xBF\xBD byte");    /* 0xFF -> U+FFFD */
    assert_string_equal(caption(ds, 1, 0), "Two dogs.");
    assert_int_equal(ds->images[1].split, DATA_VAL); /* its own "split" key */
    assert_int_equal(ds->images[0].split, data_hash_split("a.jpg", 5));
    assert_int_equal(ds->stats.orphan_captions, 1);
    assert_int_equal(ds->stats.empty_captions, 1);
    assert_int_equal(ds->stats.bad_utf8_captions, 1);
    assert_int_equal(ds->stats.images_without_captions, 1);
    assert_true(ds->n_warnings >= 4);
    int saw_orphan = 0;
    for (int i = 0; i < ds->n_warnings; i++)
        saw_orphan |= strstr(ds->warnings[i], "annotations[3]") && strstr(ds->warnings[i], "image_id 9");
    assert_true(saw_orphan);
    data_free(ds);
}

static void test_coco_default_image_dir_and_split_option(void **state) {
    (void)state;
    Dataset *ds = load_ok(spec("coco", "coco_small.json", ",split=test"));
    char want[4200];
    snprintf(want, sizeof want, "%s", fixture("a.jpg"));
    assert_string_equal(ds->images[0].path, want); /* the annotation file's directory */
    assert_int_equal(ds->images[0].split, DATA_TEST);
    assert_int_equal(ds->images[1].split, DATA_TEST); /* split= beats the per-image key */
    assert_int_equal(ds->n_per_split[DATA_TEST], 2);
    data_free(ds);
}

static void test_coco_errors(void **state) {
    (void)state;
    load_fails(spec("coco", "coco_missing_key.json", NULL), CAP_E_FORMAT,
               "coco_missing_key.json: annotations[1]: missing key 'caption'", NULL);
    load_fails(spec("coco", "coco_syntax.json", NULL), CAP_E_FORMAT, "coco_syntax.json:3:",
               "JSON syntax error");
    load_fails(spec("coco", "coco_no_images.json", NULL), CAP_E_FORMAT, "missing key 'images'", NULL);
    load_fails(spec("coco", "does_not_exist.json", NULL), CAP_E_IO, "does_not_exist.json: cannot open", NULL);
    /* Text after the top-level value is an error, as for Python's json.load and `cap score`. */
    char *dir = make_temp_dir(), path[4100];
    assert_non_null(dir);
    snprintf(path, sizeof path, "%s/trailing.json", dir);
    write_text(path, "{\"images\": [{\"id\": 1, \"file_name\": \"a.jpg\"}],\n"
                     " \"annotations\": [{\"image_id\": 1, \"caption\": \"a\"}]}\n}\n");
    snprintf(spec_buf, sizeof spec_buf, "coco:%s", path);
    load_fails(spec_buf, CAP_E_FORMAT, "trailing.json:3:1: JSON syntax error", NULL);
    rm_tree(dir);
}

static void test_flickr_tokens(void **state) {
    (void)state;
    Dataset *ds = load_ok(spec("flickr30k", "flickr_tokens.txt", ",imgs,split=train"));
    assert_int_equal(ds->n_images, 2);
    assert_int_equal(ds->n_captions, 3);
    assert_string_equal(ds->images[0].path, "imgs/1000092795.jpg");
    assert_int_equal(ds->images[0].id, 1000092795);
    assert_int_equal(ds->images[0].n_captions, 2);
    assert_string_equal(caption(ds, 0, 1), "Two young, White males are outside near many bushes.");
    assert_string_equal(caption(ds, 1, 0), "Several men in hard hats are operating a giant pulley system.");
    assert_int_equal(ds->stats.empty_captions, 1);
    assert_int_equal(ds->n_per_split[DATA_TRAIN], 2);
    data_free(ds);
}

/* Only a "#N" suffix (digits) is cut from a token-file name; a '#' inside the name stays. */
static void test_flickr_tokens_hash_in_name(void **state) {
    (void)state;
    char *dir = make_temp_dir(), path[4100];
    assert_non_null(dir);
    snprintf(path, sizeof path, "%s/tokens.txt", dir);
    write_text(path, "a#b.jpg\tA dog.\nc.jpg#12\tA cat.\nd#.jpg#x\tA cow.\n");
    snprintf(spec_buf, sizeof spec_buf, "flickr30k:%s,imgs", path);
    Dataset *ds = load_ok(spec_buf);
    assert_int_equal(ds->n_images, 3);
    assert_string_equal(ds->images[0].path, "imgs/a#b.jpg");
    assert_string_equal(ds->images[1].path, "imgs/c.jpg");
    assert_string_equal(ds->images[2].path, "imgs/d#.jpg#x");
    data_free(ds);
    rm_tree(dir);
}

static void test_flickr_csv(void **state) {
    (void)state;
    Dataset *ds = load_ok(spec("flickr30k", "flickr.csv", ",imgs"));
    assert_int_equal(ds->n_images, 2);
    assert_string_equal(caption(ds, 0, 0), "Two young guys, with \"shaggy\" hair.");
    assert_string_equal(caption(ds, 0, 1), "Two men outside.");
    assert_string_equal(caption(ds, 1, 0), "Several men\non two lines");
    assert_int_equal(ds->images[0].split, data_hash_split("1000092795.jpg", 14));
    data_free(ds);
}

static void test_flickr_errors(void **state) {
    (void)state;
    load_fails(spec("flickr30k", "flickr_notab.txt", NULL), CAP_E_FORMAT, "flickr_notab.txt:2:", "no tab");
    load_fails(spec("flickr30k", "flickr_unterminated.csv", NULL), CAP_E_FORMAT,
               "flickr_unterminated.csv:3:", "unterminated quoted field");
    load_fails(spec("flickr30k", "flickr_stray_quote.csv", NULL), CAP_E_FORMAT,
               "flickr_stray_quote.csv:2:", "quote inside an unquoted field");
    load_fails(spec("flickr30k", "flickr_fields.csv", NULL), CAP_E_FORMAT, "flickr_fields.csv:2:",
               "expected 2 fields");
}

/* The warnings of ds must include one containing both fragments. */
static void assert_warned(const Dataset *ds, const char *frag1, const char *frag2) {
    for (int i = 0; i < ds->n_warnings; i++)
        if (strstr(ds->warnings[i], frag1) && strstr(ds->warnings[i], frag2)) return;
    fail_msg("no warning with '%s' and '%s' (%d warnings)", frag1, frag2, ds->n_warnings);
}

/* A NUL byte is dropped with a warning: it used to end the file (11 captions read as 1). */
static void test_nul_bytes(void **state) {
    (void)state;
    Dataset *ds = load_ok(spec("flickr30k", "flickr_nul.txt", ",imgs"));
    assert_int_equal(ds->n_images, 3);
    assert_int_equal(ds->n_captions, 11);
    assert_string_equal(caption(ds, 0, 0), "Two young guys with shaggy hair look at their hands.");
    assert_string_equal(caption(ds, 2, 0), "A child in a pink dress is climbing up a set of stairs.");
    assert_int_equal(ds->stats.bad_utf8_captions, 1);
    assert_warned(ds, "flickr_nul.txt:1:", "NUL byte dropped");
    data_free(ds);

    ds = load_ok(spec("flickr30k", "flickr_nul.csv", ",imgs"));
    assert_int_equal(ds->n_captions, 11);
    assert_string_equal(caption(ds, 0, 1), "Two young, White males are outside near many bushes.");
    assert_warned(ds, "flickr_nul.csv:3:", "NUL byte dropped");
    data_free(ds);

    /* \u0000 in a JSON string used to cut it short ("a" for "a\u0000.jpg"); an escaped
     * backslash followed by u0000 is six ordinary characters. */
    ds = load_ok(spec("coco", "coco_nul_escape.json", ",imgs,split=train"));
    assert_int_equal(ds->n_images, 2);
    assert_string_equal(ds->images[0].path, "imgs/a.jpg");
    assert_string_equal(caption(ds, 0, 0), "A man riding a horse.");
    assert_string_equal(caption(ds, 1, 0), "A \\u0000 is six characters, not a NUL.");
    assert_int_equal(ds->stats.bad_utf8_captions, 2);
    assert_warned(ds, "coco_nul_escape.json:1:38:", "NUL");
    assert_warned(ds, "coco_nul_escape.json:3:36:", "NUL");
    data_free(ds);

    /* A raw NUL is not JSON at all: cJSON stopped at it and took the rest as absent. */
    load_fails(spec("coco", "coco_nul_raw.json", NULL), CAP_E_FORMAT, "coco_nul_raw.json:2:51:",
               "NUL byte");
}

/* Lines may end in a lone \r (classic Mac): a token file used to load as one caption. */
static void test_cr_line_ends(void **state) {
    (void)state;
    Dataset *ds = load_ok(spec("flickr30k", "flickr_cr.txt", ",imgs"));
    assert_int_equal(ds->n_images, 2);
    assert_int_equal(ds->n_captions, 4);
    assert_string_equal(caption(ds, 0, 1), "Two young, White males are outside near many bushes.");
    assert_string_equal(caption(ds, 0, 2), "Two men in green shirts are standing in a yard.");
    assert_string_equal(caption(ds, 1, 0), "Several men in hard hats are operating a giant pulley system.");
    assert_int_equal(ds->stats.empty_captions, 0);
    data_free(ds);
    /* line numbers count lone \r too */
    load_fails(spec("flickr30k", "flickr_cr_notab.txt", NULL), CAP_E_FORMAT,
               "flickr_cr_notab.txt:3:", "no tab");
    load_fails(spec("flickr30k", "flickr_cr_fields.csv", NULL), CAP_E_FORMAT,
               "flickr_cr_fields.csv:3:", "expected 2 fields");
}

/* Two different images with one id are refused: cap eval writes one result per id, and
 * cap score refuses a results file with an id twice. */
static void test_duplicate_ids(void **state) {
    (void)state;
    load_fails(spec("karpathy", "karpathy_dup_id.json", ",/coco"), CAP_E_FORMAT,
               "karpathy_dup_id.json: images[1]: image '/coco/val2014/b.jpg' has id 5",
               "already the id of '/coco/train2014/a.jpg'");
    /* images[1] repeats images[0] exactly (a warning); images[2] gives it another id */
    load_fails(spec("karpathy", "karpathy_dup_file.json", ",/coco"), CAP_E_FORMAT,
               "karpathy_dup_file.json: images[2]:", "listed again with id 6 (first with id 5)");
    load_fails(spec("coco", "coco_dup_id.json", ",imgs"), CAP_E_FORMAT,
               "coco_dup_id.json: images[2]: image 'imgs/c.jpg' has id 1",
               "already the id of 'imgs/a.jpg'");
    load_fails(spec("flickr30k", "flickr_dup_id.txt", ",imgs"), CAP_E_FORMAT,
               "flickr_dup_id.txt:2: image 'imgs/0123.jpg' has id 123", "'imgs/123.jpg'");

    /* Names without a number get ids after the largest number: no clash with 0.jpg, 1.jpg
     * (cat.jpg used to get its position, 0, like 0.jpg). */
    Dataset *ds = load_ok(spec("flickr30k", "flickr_mixed_names.txt", ",imgs"));
    assert_int_equal(ds->n_images, 4);
    assert_string_equal(ds->images[0].path, "imgs/cat.jpg");
    assert_int_equal(ds->images[0].id, 2);
    assert_int_equal(ds->images[1].id, 0);
    assert_int_equal(ds->images[2].id, 1);
    assert_int_equal(ds->images[3].id, 3);
    data_free(ds);

    /* The same image listed twice is still only a warning: the first is kept. */
    char *dir = make_temp_dir(), path[4100];
    assert_non_null(dir);
    snprintf(path, sizeof path, "%s/k.json", dir);
    write_text(path, "{\"images\": [{\"filename\": \"a.jpg\", \"split\": \"train\", \"cocoid\": 5, "
                     "\"sentences\": [{\"raw\": \"A cat.\"}]}, {\"filename\": \"a.jpg\", "
                     "\"split\": \"train\", \"cocoid\": 5, \"sentences\": [{\"raw\": \"Again.\"}]}]}");
    snprintf(spec_buf, sizeof spec_buf, "karpathy:%s", path);
    ds = load_ok(spec_buf);
    assert_int_equal(ds->n_images, 1);
    assert_int_equal(ds->n_captions, 1);
    assert_int_equal(ds->stats.duplicate_images, 1);
    assert_warned(ds, "images[1]", "listed again");
    data_free(ds);
    rm_tree(dir);
}

static void test_karpathy(void **state) {
    (void)state;
    Dataset *ds = load_ok(spec("karpathy", "karpathy.json", ",/coco"));
    assert_int_equal(ds->n_images, 4);
    assert_string_equal(ds->images[0].path, "/coco/train2014/a.jpg");
    assert_int_equal(ds->images[0].id, 5);
    assert_int_equal(ds->images[1].id, 1);
    assert_int_equal(ds->images[0].split, DATA_TRAIN);
    assert_int_equal(ds->images[1].split, DATA_TRAIN); /* restval */
    assert_int_equal(ds->images[2].split, DATA_VAL);
    assert_int_equal(ds->images[3].split, DATA_TEST);
    assert_string_equal(caption(ds, 0, 0), "A cat.");
    assert_string_equal(caption(ds, 0, 1), "a small cat"); /* no raw: tokens joined */
    assert_int_equal(ds->n_per_split[DATA_TRAIN], 2);
    int32_t n;
    int32_t *val = data_split_images(ds, DATA_VAL, &n);
    assert_int_equal(n, 1);
    assert_int_equal(val[0], 2);
    free(val);
    data_free(ds);
    load_fails(spec("karpathy", "karpathy_bad_split.json", NULL), CAP_E_FORMAT,
               "karpathy_bad_split.json: images[0]: unknown split 'dev'", NULL);
    load_fails(spec("karpathy", "karpathy_no_sentences.json", NULL), CAP_E_FORMAT,
               "images[0]: missing key 'sentences'", NULL);
    char *dir = make_temp_dir(), path[4100];
    assert_non_null(dir);
    snprintf(path, sizeof path, "%s/k.json", dir);
    write_text(path, "{\"images\": [{\"filename\": \"a.jpg\", \"split\": \"train\", "
                     "\"sentences\": [{\"tokens\": \"a cat\"}]}]}");
    snprintf(spec_buf, sizeof spec_buf, "karpathy:%s", path);
    load_fails(spec_buf, CAP_E_FORMAT, "images[0]: expected an array for 'tokens'", NULL);
    rm_tree(dir);
}

static void test_specs(void **state) {
    (void)state;
    DataSpec s;
    assert_int_equal(data_spec_parse("coco:a.json,imgs,split=val", &s, err, sizeof err), 0);
    assert_string_equal(s.path, "a.json");
    assert_string_equal(s.image_dir, "imgs");
    assert_int_equal(s.split_rule, DATA_SPLIT_ALL_VAL);
    assert_int_equal(data_spec_parse("karpathy:k.json", &s, err, sizeof err), 0);
    assert_string_equal(s.image_dir, "");
    assert_int_equal(data_spec_parse("imagenet:x", &s, err, sizeof err), -1);
    assert_non_null(strstr(err, "coco, flickr30k or karpathy"));
    assert_int_equal(data_spec_parse("coco:", &s, err, sizeof err), -1);
    assert_int_equal(data_spec_parse("coco:a.json,split=half", &s, err, sizeof err), -1);
    assert_int_equal(data_spec_parse("karpathy:a.json,split=val", &s, err, sizeof err), -1);
    assert_int_equal(data_spec_parse("coco:a.json,x,y", &s, err, sizeof err), -1);
}

static void test_hash_split(void **state) {
    (void)state;
    int counts[3] = {0};
    char key[32];
    for (int i = 0; i < 20000; i++) {
        snprintf(key, sizeof key, "%012d.jpg", i);
        counts[data_hash_split(key, strlen(key))]++;
    }
    assert_in_range(counts[DATA_TRAIN], 17700, 18300); /* 90% */
    assert_in_range(counts[DATA_VAL], 850, 1150);      /* 5% */
    assert_in_range(counts[DATA_TEST], 850, 1150);
    assert_int_equal(data_hash_split("a.jpg", 5), data_hash_split("a.jpg", 5));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_coco),
        cmocka_unit_test(test_coco_default_image_dir_and_split_option),
        cmocka_unit_test(test_coco_errors),
        cmocka_unit_test(test_flickr_tokens),
        cmocka_unit_test(test_flickr_tokens_hash_in_name),
        cmocka_unit_test(test_flickr_csv),
        cmocka_unit_test(test_flickr_errors),
        cmocka_unit_test(test_nul_bytes),
        cmocka_unit_test(test_cr_line_ends),
        cmocka_unit_test(test_duplicate_ids),
        cmocka_unit_test(test_karpathy),
        cmocka_unit_test(test_specs),
        cmocka_unit_test(test_hash_split),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
