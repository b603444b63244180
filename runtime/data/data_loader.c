/* data_loader.c — the background loader (behaviour in data_loader.h).
 *
 * Threads: workers claim stream items in order (sequence numbers seq = 0, 1, ... counted from
 * the start position) and decode item seq into ring slot seq % n_slots; loader_next consumes
 * slots strictly in sequence order, so the batches do not depend on thread timing. A worker
 * may claim seq only while seq < consumed + n_slots, which keeps a slot from being reused
 * before it is read. One mutex guards the counters, slot states and the current shuffle; the
 * decoding itself runs outside it. With n_workers = 0 loader_next produces items itself.
 */
#include "data_loader.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data_internal.h"
#include "data_rng.h"
#include "image.h"

enum { SLOT_EMPTY, SLOT_BUSY, SLOT_DONE };

typedef struct Slot {
    int state;
    int ok;          /* 1 decoded; 0 skipped (msg says why); -1 out of memory */
    int32_t image;   /* index into ds->images */
    float *pixels;   /* 3 x S x S */
    int32_t *ids;    /* max_len */
    char msg[600];
} Slot;

struct DataLoader {
    const Dataset *ds;
    const Vocab *vocab;
    int batch, size, max_len, n_workers;
    DataSplit split;
    uint32_t seed;
    int32_t *members; /* the split's image indices, file order */
    int32_t n;        /* split size */
    int64_t first;    /* global item number of seq 0: start.epoch * n + start.index */

    pthread_mutex_t mu;
    pthread_cond_t cv_done, cv_space;
    Slot *slots;
    int n_slots;
    int64_t next_claim, next_consume;
    int stop;
    int64_t perm_epoch; /* the epoch perm holds (-1: none) */
    int32_t *perm;

    pthread_t *threads;
    int n_threads; /* started */
    LoaderSkipFn on_skip;
    void *skip_ctx;
    LoaderStats stats;
};

int32_t loader_caption_choice(uint32_t seed, int64_t epoch, int32_t image, int32_t n_captions) {
    uint64_t bits = data_rand64(seed, DATA_RNG_TAG, (uint32_t)image, (uint32_t)epoch, 2);
    return (int32_t)data_rand_below(bits, (uint32_t)n_captions);
}

/* ---- producing one item -------------------------------------------------------------------- */

/* Under mu: claims the next item; returns its seq, the image and the epoch. */
static int64_t claim(DataLoader *l, int32_t *image, int64_t *epoch) {
    int64_t seq = l->next_claim++;
    int64_t g = l->first + seq;
    *epoch = g / l->n;
    if (*epoch != l->perm_epoch) {
        data_shuffle(l->perm, l->n, l->seed, (uint32_t)*epoch);
        l->perm_epoch = *epoch;
    }
    *image = l->members[l->perm[g % l->n]];
    l->slots[seq % l->n_slots].state = SLOT_BUSY;
    return seq;
}

/* Outside mu: decodes and encodes into the slot. */
static void produce(DataLoader *l, Slot *s, int32_t image, int64_t epoch) {
    const DataImage *im = &l->ds->images[image];
    s->image = image;
    CapStatus st = image_load_preprocessed(im->path, l->size, s->pixels, s->msg, sizeof s->msg);
    if (st == CAP_E_NOMEM) {
        s->ok = -1;
        return;
    }
    if (st != CAP_OK) {
        s->ok = 0;
        return;
    }
    int32_t c = loader_caption_choice(l->seed, epoch, image, im->n_captions);
    s->ok = vocab_encode(l->vocab, l->ds->captions[im->first_caption + c], s->ids, l->max_len) < 0 ? -1 : 1;
    if (s->ok < 0) snprintf(s->msg, sizeof s->msg, "%s: out of memory", im->path);
}

static void *worker_main(void *arg) {
    DataLoader *l = arg;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (!l->stop && l->next_claim >= l->next_consume + l->n_slots)
            pthread_cond_wait(&l->cv_space, &l->mu);
        if (l->stop) break;
        int32_t image;
        int64_t epoch;
        int64_t seq = claim(l, &image, &epoch);
        Slot *s = &l->slots[seq % l->n_slots];
        pthread_mutex_unlock(&l->mu);
        produce(l, s, image, epoch);
        pthread_mutex_lock(&l->mu);
        s->state = SLOT_DONE;
        pthread_cond_broadcast(&l->cv_done);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

/* The slot of the next item in sequence, produced (by a worker or here). */
static Slot *wait_next(DataLoader *l) {
    Slot *s = &l->slots[l->next_consume % l->n_slots];
    pthread_mutex_lock(&l->mu);
    if (l->n_workers == 0) {
        int32_t image;
        int64_t epoch;
        claim(l, &image, &epoch);
        pthread_mutex_unlock(&l->mu);
        produce(l, s, image, epoch);
        return s;
    }
    while (s->state != SLOT_DONE) pthread_cond_wait(&l->cv_done, &l->mu);
    pthread_mutex_unlock(&l->mu);
    return s;
}

static void release(DataLoader *l, Slot *s) {
    pthread_mutex_lock(&l->mu);
    s->state = SLOT_EMPTY;
    l->next_consume++;
    pthread_cond_broadcast(&l->cv_space);
    pthread_mutex_unlock(&l->mu);
}

/* ---- public API ----------------------------------------------------------------------------- */

CapStatus loader_next(DataLoader *l, float *images, int32_t *captions, int32_t *image_index,
                      DataPosition *position_out, char *err, size_t err_size) {
    size_t plane = (size_t)3 * l->size * l->size;
    int64_t failed_in_row = 0;
    for (int b = 0; b < l->batch;) {
        Slot *s = wait_next(l);
        int ok = s->ok;
        if (ok == 1) {
            memcpy(images + (size_t)b * plane, s->pixels, plane * sizeof *images);
            memcpy(captions + (size_t)b * l->max_len, s->ids, (size_t)l->max_len * sizeof *captions);
            if (image_index) image_index[b] = s->image;
            b++;
            failed_in_row = 0;
            l->stats.delivered++;
        } else if (ok == 0) {
            l->stats.skipped++;
            failed_in_row++;
            if (l->on_skip) l->on_skip(l->skip_ctx, s->msg);
        }
        CapStatus st = CAP_OK;
        if (ok < 0) st = data_fail(err, err_size, CAP_E_NOMEM, "%s", s->msg);
        else if (failed_in_row >= l->n)
            st = data_fail(err, err_size, CAP_E_IO,
                           "%s: none of the %d images of split '%s' could be read (last: %s)",
                           l->ds->source, (int)l->n, data_split_name(l->split), s->msg);
        release(l, s); /* after the last look at s: a worker may refill it */
        if (st) return st;
    }
    if (position_out) {
        int64_t g = l->first + l->next_consume;
        *position_out = (DataPosition){g / l->n, g % l->n};
    }
    return CAP_OK;
}

static CapStatus check_args(const Dataset *ds, DataSplit split, int batch, int image_size,
                            int max_len, int n_workers, DataPosition start, char *err,
                            size_t err_size) {
    if ((unsigned)split >= DATA_N_SPLITS)
        return data_fail(err, err_size, CAP_E_ARG, "loader: bad split %d", (int)split);
    if (batch < 1 || image_size < 1 || max_len < 2 || n_workers < 0 || n_workers > 256)
        return data_fail(err, err_size, CAP_E_ARG,
                         "loader: batch %d, image size %d, max_len %d, workers %d: need batch >= 1, "
                         "image size >= 1, max_len >= 2, 0..256 workers",
                         batch, image_size, max_len, n_workers);
    int32_t n = ds->n_per_split[split];
    if (n == 0)
        return data_fail(err, err_size, CAP_E_ARG, "%s: no images in split '%s'", ds->source,
                         data_split_name(split));
    if (start.epoch < 0 || start.index < 0 || start.index >= n || start.epoch > INT32_MAX)
        return data_fail(err, err_size, CAP_E_ARG,
                         "loader: start position (epoch %lld, index %lld) outside split '%s' of %d images",
                         (long long)start.epoch, (long long)start.index, data_split_name(split), (int)n);
    return CAP_OK;
}

static int alloc_slots(DataLoader *l) {
    l->n_slots = l->batch + 2 * (l->n_workers > 0 ? l->n_workers : 1);
    l->slots = calloc((size_t)l->n_slots, sizeof *l->slots);
    if (!l->slots) return -1;
    for (int i = 0; i < l->n_slots; i++) {
        l->slots[i].pixels = malloc((size_t)3 * l->size * l->size * sizeof(float));
        l->slots[i].ids = malloc((size_t)l->max_len * sizeof(int32_t));
        if (!l->slots[i].pixels || !l->slots[i].ids) return -1;
    }
    return 0;
}

static CapStatus start_threads(DataLoader *l, char *err, size_t err_size) {
    if (l->n_workers == 0) return CAP_OK;
    l->threads = calloc((size_t)l->n_workers, sizeof *l->threads);
    if (!l->threads) return data_fail(err, err_size, CAP_E_NOMEM, "loader: out of memory");
    for (int i = 0; i < l->n_workers; i++) {
        if (pthread_create(&l->threads[i], NULL, worker_main, l) != 0)
            return data_fail(err, err_size, CAP_E_NOMEM, "loader: cannot start worker thread %d", i);
        l->n_threads++;
    }
    return CAP_OK;
}

CapStatus loader_open(const Dataset *ds, DataSplit split, int batch, int image_size,
                      int max_len, const Vocab *vocab, uint32_t seed, int n_workers,
                      DataPosition start, DataLoader **out, char *err, size_t err_size) {
    *out = NULL;
    CapStatus st = check_args(ds, split, batch, image_size, max_len, n_workers, start, err, err_size);
    if (st) return st;
    DataLoader *l = calloc(1, sizeof *l);
    if (!l) return data_fail(err, err_size, CAP_E_NOMEM, "loader: out of memory");
    *l = (DataLoader){.ds = ds, .vocab = vocab, .batch = batch, .size = image_size,
                      .max_len = max_len, .n_workers = n_workers, .split = split, .seed = seed,
                      .perm_epoch = -1};
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv_done, NULL);
    pthread_cond_init(&l->cv_space, NULL);
    l->members = data_split_images(ds, split, &l->n);
    l->perm = malloc((size_t)l->n * sizeof *l->perm);
    l->first = start.epoch * l->n + start.index;
    if (!l->members || !l->perm || alloc_slots(l)) st = data_fail(err, err_size, CAP_E_NOMEM, "loader: out of memory");
    if (!st) st = start_threads(l, err, err_size);
    if (st) {
        loader_close(l);
        return st;
    }
    *out = l;
    return CAP_OK;
}

void loader_on_skip(DataLoader *l, LoaderSkipFn fn, void *ctx) {
    l->on_skip = fn;
    l->skip_ctx = ctx;
}

void loader_stats(const DataLoader *l, LoaderStats *out) {
    *out = l->stats;
}

int32_t loader_split_size(const DataLoader *l) {
    return l->n;
}

void loader_close(DataLoader *l) {
    if (!l) return;
    pthread_mutex_lock(&l->mu);
    l->stop = 1;
    pthread_cond_broadcast(&l->cv_space);
    pthread_mutex_unlock(&l->mu);
    for (int i = 0; i < l->n_threads; i++) pthread_join(l->threads[i], NULL);
    for (int i = 0; l->slots && i < l->n_slots; i++) {
        free(l->slots[i].pixels);
        free(l->slots[i].ids);
    }
    free(l->slots);
    free(l->threads);
    free(l->members);
    free(l->perm);
    pthread_cond_destroy(&l->cv_done);
    pthread_cond_destroy(&l->cv_space);
    pthread_mutex_destroy(&l->mu);
    free(l);
}
