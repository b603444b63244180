/* test_synth.c — the synthetic set: `synth_write` writes N decodable images of the asked
 * size, COCO files with 5 different captions per image and disjoint splits; every caption
 * agrees with the scene the generator drew (colours, shapes, sizes, counts, relations parsed
 * back from the words), each object's colour is at its centre in the decoded file, and
 * colour, shape and count are spread evenly over many scenes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "data.h"
#include "image.h"
#include "synth.h"
#include "test_util.h"
#include "text.h"

enum { N = 30, SIZE = 64, SEED = 4 };

static char err[1024];

static int word_index(const char *const *names, int n, const char *w) {
    for (int i = 0; i < n; i++)
        if (strcmp(names[i], w) == 0) return i;
    return -1;
}

typedef struct Words {
    char w[64][32];
    int n;
} Words;

static int add_word(const char *tok, size_t len, void *ctx) {
    Words *ws = ctx;
    if (ws->n < 64 && len < 32) memcpy(ws->w[ws->n++], tok, len + 1);
    return 0;
}

/* Object of scene s named by (colour, shape) at word i (the colour), or fails. */
static const SynthObject *mention(const SynthScene *s, const Words *ws, int i, const char *cap) {
    int colour = word_index(synth_colour_names, SYNTH_N_COLOURS, ws->w[i]);
    if (i + 1 >= ws->n) fail_msg("'%s': colour without shape", cap);
    int shape = word_index(synth_shape_names, SYNTH_N_SHAPES, ws->w[i + 1]);
    if (shape < 0) fail_msg("'%s': '%s' after a colour", cap, ws->w[i + 1]);
    for (int k = 0; k < s->n; k++) {
        const SynthObject *o = &s->obj[k];
        if (o->colour != colour || o->shape != shape) continue;
        if (i > 0 && strcmp(ws->w[i - 1], "small") == 0 && o->large) fail_msg("'%s': not small", cap);
        if (i > 0 && strcmp(ws->w[i - 1], "large") == 0 && !o->large) fail_msg("'%s': not large", cap);
        return o;
    }
    fail_msg("'%s': no %s %s in the scene", cap, ws->w[i], ws->w[i + 1]);
    return NULL;
}

/* Checks one caption against the scene. */
static void check_caption(const SynthScene *s, const char *cap) {
    Words ws = {.n = 0};
    text_tokenize(cap, add_word, &ws);
    const SynthObject *prev = NULL;
    int pending = -1; /* relation waiting for its second object */
    for (int i = 0; i < ws.n; i++) {
        const char *w = ws.w[i];
        if (strcmp(w, "two") == 0) assert_int_equal(s->n, 2);
        if (strcmp(w, "three") == 0) assert_int_equal(s->n, 3);
        if (strcmp(w, "one") == 0) assert_int_equal(s->n, 1);
        int rel = -1;
        if ((strcmp(w, "left") == 0 || strcmp(w, "right") == 0) && i + 1 < ws.n && strcmp(ws.w[i + 1], "of") == 0)
            rel = w[0] == 'l' ? SYNTH_LEFT_OF : SYNTH_RIGHT_OF;
        if (strcmp(w, "above") == 0) rel = SYNTH_ABOVE;
        if (strcmp(w, "below") == 0) rel = SYNTH_BELOW;
        if (rel >= 0) {
            if (!prev) fail_msg("'%s': relation without a first object", cap);
            pending = rel;
            continue;
        }
        if (word_index(synth_colour_names, SYNTH_N_COLOURS, w) < 0) continue;
        const SynthObject *o = mention(s, &ws, i, cap);
        if (pending >= 0 && !synth_relation_holds(prev, o, (SynthRelation)pending))
            fail_msg("'%s': the relation does not hold", cap);
        pending = -1;
        prev = o;
    }
    assert_int_equal(pending, -1);
}

static void test_write_and_check(void **state) {
    (void)state;
    char *dir = make_temp_dir();
    SynthOptions o = {dir, N, SEED, SIZE, SYNTH_MIXED};
    assert_int_equal(synth_write(&o, err, sizeof err), CAP_OK);
    char spec[4200];
    snprintf(spec, sizeof spec, "coco:%s/captions.json", dir);
    Dataset *ds = NULL;
    if (data_load(spec, &ds, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(ds->n_images, N);
    assert_int_equal(ds->n_per_split[DATA_TRAIN], 24);
    assert_int_equal(ds->n_per_split[DATA_VAL], 3);
    assert_int_equal(ds->n_per_split[DATA_TEST], 3);
    int png = 0;
    for (int i = 0; i < N; i++) {
        const DataImage *im = &ds->images[i];
        assert_int_equal(im->n_captions, SYNTH_N_CAPTIONS);
        SynthScene s;
        synth_scene(SEED, im->id, SIZE, &s);
        for (int c = 0; c < SYNTH_N_CAPTIONS; c++) {
            const char *cap = ds->captions[im->first_caption + c];
            check_caption(&s, cap);
            for (int d = 0; d < c; d++) assert_string_not_equal(cap, ds->captions[im->first_caption + d]);
        }
        Image pic;
        if (image_decode_file(im->path, &pic, err, sizeof err)) fail_msg("%s", err);
        assert_int_equal(pic.width, SIZE);
        assert_int_equal(pic.height, SIZE);
        int is_png = strstr(im->path, ".png") != NULL;
        png += is_png;
        for (int k = 0; k < s.n; k++) { /* the object's colour at its centre */
            const uint8_t *p = pic.rgb + ((int)s.obj[k].cy * SIZE + (int)s.obj[k].cx) * 3;
            const uint8_t *want = synth_colour_rgb[s.obj[k].colour];
            int tol = is_png ? 0 : 40;
            for (int ch = 0; ch < 3; ch++) assert_in_range(p[ch], want[ch] > tol ? want[ch] - tol : 0, want[ch] + tol);
        }
        image_free(&pic);
    }
    assert_int_equal(png, N / 2); /* mixed: even ids PNG */
    /* the per-split files: disjoint, together all images, each in its split */
    int seen[N] = {0};
    const char *names[3] = {"train", "val", "test"};
    for (int sp = 0; sp < 3; sp++) {
        snprintf(spec, sizeof spec, "coco:%s/captions_%s.json,split=%s", dir, names[sp], names[sp]);
        Dataset *part = NULL;
        if (data_load(spec, &part, err, sizeof err)) fail_msg("%s", err);
        for (int i = 0; i < part->n_images; i++) {
            seen[part->images[i].id]++;
            assert_int_equal(ds->images[part->images[i].id].split, sp);
        }
        data_free(part);
    }
    for (int i = 0; i < N; i++) assert_int_equal(seen[i], 1);
    data_free(ds);
    rm_tree(dir);
}

static void test_independent_factors(void **state) {
    (void)state;
    int colours[SYNTH_N_COLOURS] = {0}, shapes[SYNTH_N_SHAPES] = {0}, counts[4] = {0}, large = 0, objects = 0;
    for (int i = 0; i < 3000; i++) {
        SynthScene s;
        synth_scene(99, i, 128, &s);
        counts[s.n]++;
        for (int k = 0; k < s.n; k++) {
            colours[s.obj[k].colour]++;
            shapes[s.obj[k].shape]++;
            large += s.obj[k].large;
            objects++;
        }
    }
    for (int n = 1; n <= 3; n++) assert_in_range(counts[n], 900, 1100);
    for (int c = 0; c < SYNTH_N_COLOURS; c++) assert_in_range(colours[c] * 6, objects * 85 / 100, objects * 115 / 100);
    for (int k = 0; k < SYNTH_N_SHAPES; k++) assert_in_range(shapes[k] * 4, objects * 85 / 100, objects * 115 / 100);
    assert_in_range(large * 2, objects * 85 / 100, objects * 115 / 100);
}

static void test_same_seed_same_set(void **state) {
    (void)state;
    SynthScene a, b;
    char ca[SYNTH_N_CAPTIONS][200], cb[SYNTH_N_CAPTIONS][200];
    synth_scene(1, 17, 128, &a);
    synth_scene(1, 17, 128, &b);
    assert_memory_equal(&a, &b, sizeof a);
    synth_captions(&a, 1, 17, ca);
    synth_captions(&b, 1, 17, cb);
    for (int c = 0; c < SYNTH_N_CAPTIONS; c++) assert_string_equal(ca[c], cb[c]);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_write_and_check),
        cmocka_unit_test(test_independent_factors),
        cmocka_unit_test(test_same_seed_same_set),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
