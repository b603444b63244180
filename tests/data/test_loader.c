/* test_loader.c — the background loader on a small synthetic set written into a temporary
 * directory: the same seed gives the same batches with 0 or 3 worker threads; another seed
 * another order; an epoch shows every image once; captions are the chosen ones, encoded;
 * resuming at a returned position continues with the same batches; a corrupt image is
 * skipped, reported and counted, and never ends up in a batch. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "data.h"
#include "data_loader.h"
#include "synth.h"
#include "test_util.h"
#include "vocab.h"

enum { N_IMAGES = 20, SIZE = 16, MAX_LEN = 12, BATCH = 3 };

static char err[1024];
static char *dir;
static Dataset *ds;
static Vocab *vocab;

static int setup(void **state) {
    (void)state;
    dir = make_temp_dir();
    SynthOptions o = {dir, N_IMAGES, 5, 32, SYNTH_MIXED};
    if (synth_write(&o, err, sizeof err)) return -1;
    char spec[4200];
    snprintf(spec, sizeof spec, "coco:%s/captions.json", dir);
    if (data_load(spec, &ds, err, sizeof err)) return -1;
    return vocab_build(ds, 1, &vocab, err, sizeof err) ? -1 : 0;
}

static int teardown(void **state) {
    (void)state;
    vocab_free(vocab);
    data_free(ds);
    rm_tree(dir);
    return 0;
}

typedef struct Run {
    float images[8][BATCH * 3 * SIZE * SIZE];
    int32_t captions[8][BATCH * MAX_LEN];
    int32_t index[8][BATCH];
    DataPosition pos[8];
} Run;

static Run run_a, run_b;

static void run(Run *r, uint32_t seed, int workers, DataPosition start, int n_batches) {
    DataLoader *l = NULL;
    if (loader_open(ds, DATA_TRAIN, BATCH, SIZE, MAX_LEN, vocab, seed, workers, start, &l, err, sizeof err))
        fail_msg("%s", err);
    for (int b = 0; b < n_batches; b++)
        if (loader_next(l, r->images[b], r->captions[b], r->index[b], &r->pos[b], err, sizeof err))
            fail_msg("%s", err);
    loader_close(l);
}

static void test_deterministic(void **state) {
    (void)state;
    DataPosition zero = {0, 0};
    run(&run_a, 7, 0, zero, 8);
    run(&run_b, 7, 3, zero, 8);
    assert_memory_equal(&run_a, &run_b, sizeof run_a);
    run(&run_b, 8, 2, zero, 8);
    assert_memory_not_equal(run_a.index, run_b.index, sizeof run_a.index);
}

static void test_epochs_and_captions(void **state) {
    (void)state;
    int n_train = ds->n_per_split[DATA_TRAIN]; /* 16 */
    assert_int_equal(n_train, 16);
    DataPosition zero = {0, 0};
    run(&run_a, 11, 2, zero, 8); /* 24 images: epoch 0 and half of epoch 1 */
    int seen[N_IMAGES] = {0};
    for (int k = 0; k < n_train; k++) seen[run_a.index[k / BATCH][k % BATCH]]++;
    for (int i = 0; i < ds->n_images; i++) assert_int_equal(seen[i], ds->images[i].split == DATA_TRAIN);
    assert_int_equal(run_a.pos[4].epoch, 0); /* after 15 images */
    assert_int_equal(run_a.pos[4].index, 15);
    assert_int_equal(run_a.pos[5].epoch, 1); /* batch 5 crossed into epoch 1 */
    assert_int_equal(run_a.pos[5].index, 2);
    for (int k = 0; k < 24; k++) {
        int b = k / BATCH, j = k % BATCH;
        const DataImage *im = &ds->images[run_a.index[b][j]];
        int64_t epoch = k < n_train ? 0 : 1;
        int c = loader_caption_choice(11, epoch, run_a.index[b][j], im->n_captions);
        int32_t want[MAX_LEN];
        vocab_encode(vocab, ds->captions[im->first_caption + c], want, MAX_LEN);
        assert_memory_equal(&run_a.captions[b][j * MAX_LEN], want, sizeof want);
    }
}

static void test_resume(void **state) {
    (void)state;
    DataPosition zero = {0, 0};
    run(&run_a, 3, 2, zero, 8);
    run(&run_b, 3, 1, run_a.pos[2], 5); /* continue after batch 2 */
    for (int b = 0; b < 5; b++) {
        assert_memory_equal(run_a.images[3 + b], run_b.images[b], sizeof run_b.images[b]);
        assert_memory_equal(run_a.captions[3 + b], run_b.captions[b], sizeof run_b.captions[b]);
        assert_memory_equal(&run_a.pos[3 + b], &run_b.pos[b], sizeof run_b.pos[b]);
    }
}

static int skip_calls;
static char last_skip[1200];

static void on_skip(void *ctx, const char *msg) {
    (void)ctx;
    skip_calls++;
    snprintf(last_skip, sizeof last_skip, "%s", msg);
}

static void test_corrupt_image_skipped(void **state) {
    (void)state;
    int victim = 0; /* a train image */
    assert_int_equal(ds->images[victim].split, DATA_TRAIN);
    write_text(ds->images[victim].path, "not an image");
    DataLoader *l = NULL;
    DataPosition zero = {0, 0};
    assert_int_equal(loader_open(ds, DATA_TRAIN, BATCH, SIZE, MAX_LEN, vocab, 1, 2, zero, &l, err, sizeof err), CAP_OK);
    loader_on_skip(l, on_skip, NULL);
    float images[BATCH * 3 * SIZE * SIZE];
    int32_t caps[BATCH * MAX_LEN], index[BATCH];
    DataPosition pos;
    for (int b = 0; b < 10; b++) { /* 30 images: the victim comes up in epoch 0 and in epoch 1 */
        assert_int_equal(loader_next(l, images, caps, index, &pos, err, sizeof err), CAP_OK);
        for (int j = 0; j < BATCH; j++) assert_int_not_equal(index[j], victim);
    }
    LoaderStats st;
    loader_stats(l, &st);
    assert_int_equal(st.delivered, 30);
    assert_int_equal(st.skipped, 2);
    assert_int_equal(skip_calls, 2);
    assert_non_null(strstr(last_skip, ds->images[victim].path));
    assert_non_null(strstr(last_skip, "not a JPEG or PNG"));
    assert_int_equal(pos.epoch * 16 + pos.index, 32); /* 30 delivered + 2 skipped */
    loader_close(l);
}

static void test_bad_arguments(void **state) {
    (void)state;
    DataLoader *l = NULL;
    DataPosition bad = {0, 99};
    assert_int_equal(loader_open(ds, DATA_TRAIN, BATCH, SIZE, MAX_LEN, vocab, 1, 0, bad, &l, err, sizeof err), CAP_E_ARG);
    assert_null(l);
    DataPosition zero = {0, 0};
    assert_int_equal(loader_open(ds, DATA_TRAIN, 0, SIZE, MAX_LEN, vocab, 1, 0, zero, &l, err, sizeof err), CAP_E_ARG);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_epochs_and_captions),
        cmocka_unit_test(test_resume),
        cmocka_unit_test(test_corrupt_image_skipped), /* last: it breaks an image */
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
