/* synth.c — the synthetic captioning set: scenes, rendering, captions, and writing the files
 * (see synth.h). Every random choice of image i is a Philox draw keyed by (seed, "SYNT") with
 * counter (i, draw number, 4): the set does not depend on how many images are written or in
 * which order. */
#include "synth.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "data_internal.h"
#include "data_rng.h"
#include "files.h"
#include "image.h"
#include "strbuf.h"

const char *const synth_shape_names[SYNTH_N_SHAPES] = {"circle", "square", "triangle", "cross"};
const char *const synth_colour_names[SYNTH_N_COLOURS] = {"red", "green", "blue", "yellow", "purple",
                                                         "white"};
const uint8_t synth_colour_rgb[SYNTH_N_COLOURS][3] = {
    {220, 40, 40}, {40, 170, 60}, {40, 90, 230}, {235, 215, 50}, {150, 70, 200}, {235, 235, 235}};
const uint8_t synth_background_rgb[3] = {96, 96, 96};
const char *const synth_relation_names[4] = {"left of", "right of", "above", "below"};

#define SYNTH_MARGIN 3.0f

/* ---- drawing numbers ----------------------------------------------------------------------- */

typedef struct Draws {
    uint32_t seed;
    uint32_t index;
    uint32_t n; /* draws made */
} Draws;

static uint32_t draw_below(Draws *d, uint32_t n) {
    return data_rand_below(data_rand64(d->seed, DATA_RNG_SYNTH, d->index, d->n++, 4), n);
}

/* ---- scenes --------------------------------------------------------------------------------- */

int synth_relation_holds(const SynthObject *a, const SynthObject *b, SynthRelation rel) {
    switch (rel) {
    case SYNTH_LEFT_OF: return a->cx + a->r + SYNTH_MARGIN <= b->cx - b->r;
    case SYNTH_RIGHT_OF: return b->cx + b->r + SYNTH_MARGIN <= a->cx - a->r;
    case SYNTH_ABOVE: return a->cy + a->r + SYNTH_MARGIN <= b->cy - b->r;
    case SYNTH_BELOW: return b->cy + b->r + SYNTH_MARGIN <= a->cy - a->r;
    }
    return 0;
}

static int separated(const SynthObject *a, const SynthObject *b) {
    for (int rel = 0; rel < 4; rel++)
        if (synth_relation_holds(a, b, (SynthRelation)rel)) return 1;
    return 0;
}

/* Places object k (shape, colour, size set) apart from objects 0..k-1; 0 on success. */
static int place(Draws *d, SynthScene *s, int k, int size) {
    SynthObject *o = &s->obj[k];
    o->r = (float)size * (o->large ? 0.17f : 0.09f);
    int lo = (int)ceilf(o->r) + 2, span = size - 2 * lo;
    for (int attempt = 0; attempt < 100; attempt++) {
        o->cx = (float)(lo + (int)draw_below(d, (uint32_t)span)) + 0.5f;
        o->cy = (float)(lo + (int)draw_below(d, (uint32_t)span)) + 0.5f;
        int ok = 1;
        for (int j = 0; j < k && ok; j++) ok = separated(o, &s->obj[j]);
        if (ok) return 0;
    }
    return -1;
}

static int used(const SynthScene *s, int k, int shape, int colour) {
    for (int j = 0; j < k; j++)
        if (s->obj[j].shape == shape && s->obj[j].colour == colour) return 1;
    return 0;
}

void synth_scene(uint32_t seed, int64_t index, int size, SynthScene *out) {
    Draws d = {seed, (uint32_t)index, 0};
    for (;;) { /* a retry only when three large shapes do not fit: rare */
        memset(out, 0, sizeof *out);
        out->n = 1 + (int)draw_below(&d, 3);
        int k = 0;
        for (; k < out->n; k++) {
            SynthObject *o = &out->obj[k];
            do {
                o->shape = (int)draw_below(&d, SYNTH_N_SHAPES);
                o->colour = (int)draw_below(&d, SYNTH_N_COLOURS);
            } while (used(out, k, o->shape, o->colour));
            o->large = (int)draw_below(&d, 2);
            if (place(&d, out, k, size)) break;
        }
        if (k == out->n) return;
    }
}

/* ---- rendering ------------------------------------------------------------------------------ */

static int inside(const SynthObject *o, float x, float y) {
    float dx = x - o->cx, dy = y - o->cy, r = o->r;
    switch (o->shape) {
    case 0: return dx * dx + dy * dy <= r * r;
    case 1: return fabsf(dx) <= 0.85f * r && fabsf(dy) <= 0.85f * r;
    case 2: { /* apex up at cy - r, base at cy + 0.8 r, base half-width r */
        if (dy < -r || dy > 0.8f * r) return 0;
        return fabsf(dx) <= (dy + r) / (1.8f * r) * r;
    }
    default: return (fabsf(dx) <= 0.3f * r && fabsf(dy) <= r) || (fabsf(dy) <= 0.3f * r && fabsf(dx) <= r);
    }
}

void synth_render(const SynthScene *s, int size, uint8_t *rgb) {
    for (int y = 0; y < size; y++) {
        for (int x = 0; x < size; x++) {
            const uint8_t *c = synth_background_rgb;
            for (int k = 0; k < s->n; k++)
                if (inside(&s->obj[k], (float)x + 0.5f, (float)y + 0.5f)) c = synth_colour_rgb[s->obj[k].colour];
            memcpy(rgb + ((size_t)y * size + x) * 3, c, 3);
        }
    }
}

/* ---- captions ------------------------------------------------------------------------------- */

/* "a [small|large] red circle"; the size word with probability 1/2. */
static void noun_phrase(StrBuf *b, Draws *d, const SynthObject *o) {
    strbuf_puts(b, "a ");
    if (draw_below(d, 2)) strbuf_puts(b, o->large ? "large " : "small ");
    strbuf_puts(b, synth_colour_names[o->colour]);
    strbuf_puts(b, " ");
    strbuf_puts(b, synth_shape_names[o->shape]);
}

/* A relation that holds between a and b (one exists: boxes are separated). */
static SynthRelation pick_relation(Draws *d, const SynthObject *a, const SynthObject *b) {
    SynthRelation holds[4];
    int n = 0;
    for (int r = 0; r < 4; r++)
        if (synth_relation_holds(a, b, (SynthRelation)r)) holds[n++] = (SynthRelation)r;
    return holds[draw_below(d, (uint32_t)n)];
}

static void relation_phrase(StrBuf *b, Draws *d, const SynthObject *x, const SynthObject *y) {
    noun_phrase(b, d, x);
    strbuf_puts(b, " ");
    strbuf_puts(b, synth_relation_names[pick_relation(d, x, y)]);
    strbuf_puts(b, " ");
    noun_phrase(b, d, y);
}

static void one_object(StrBuf *b, Draws *d, const SynthScene *s) {
    static const char *const lead[] = {"", "there is ", "a picture of ", "one shape: "};
    strbuf_puts(b, lead[draw_below(d, 4)]);
    noun_phrase(b, d, &s->obj[0]);
    if (draw_below(d, 3) == 0) strbuf_puts(b, " on a gray background");
}

static void two_objects(StrBuf *b, Draws *d, const SynthScene *s) {
    int i = (int)draw_below(d, 2);
    const SynthObject *x = &s->obj[i], *y = &s->obj[1 - i];
    switch (draw_below(d, 3)) {
    case 0: relation_phrase(b, d, x, y); break;
    case 1: strbuf_puts(b, "there is "); relation_phrase(b, d, x, y); break;
    default:
        strbuf_puts(b, "two shapes: ");
        noun_phrase(b, d, x);
        strbuf_puts(b, " and ");
        noun_phrase(b, d, y);
    }
}

static void three_objects(StrBuf *b, Draws *d, const SynthScene *s) {
    int i = (int)draw_below(d, 3), j = (i + 1 + (int)draw_below(d, 2)) % 3, k = 3 - i - j;
    switch (draw_below(d, 3)) {
    case 0:
        strbuf_puts(b, "three shapes: ");
        noun_phrase(b, d, &s->obj[i]);
        strbuf_puts(b, ", ");
        noun_phrase(b, d, &s->obj[j]);
        strbuf_puts(b, " and ");
        noun_phrase(b, d, &s->obj[k]);
        break;
    case 1: strbuf_puts(b, "three shapes with "); relation_phrase(b, d, &s->obj[i], &s->obj[j]); break;
    default: relation_phrase(b, d, &s->obj[i], &s->obj[j]);
    }
}

/* Caption attempt number `a` into out (200 bytes). */
static void one_caption(const SynthScene *s, Draws *d, char *out) {
    StrBuf b;
    strbuf_init_fixed(&b, out, 200); /* a longer caption is cut off */
    if (s->n == 1) one_object(&b, d, s);
    else if (s->n == 2) two_objects(&b, d, s);
    else three_objects(&b, d, s);
    if (draw_below(d, 2)) out[0] = (char)(out[0] - 'a' + 'A'); /* raw mixed-case text */
    if (draw_below(d, 2)) strbuf_puts(&b, ".");
}

void synth_captions(const SynthScene *s, uint32_t seed, int64_t index,
                    char captions[SYNTH_N_CAPTIONS][200]) {
    Draws d = {seed ^ 0x9E3779B9u, (uint32_t)index, 0}; /* a stream apart from the scene's */
    for (int c = 0; c < SYNTH_N_CAPTIONS; c++) {
        for (int attempt = 0; attempt < 50; attempt++) { /* five different strings */
            one_caption(s, &d, captions[c]);
            int dup = 0;
            for (int p = 0; p < c && !dup; p++) dup = strcmp(captions[p], captions[c]) == 0;
            if (!dup) break;
        }
    }
}

/* ---- the set -------------------------------------------------------------------------------- */

void synth_split_counts(int n, int *n_train, int *n_val, int *n_test) {
    int k = n / 10;
    if (k == 0 && n >= 3) k = 1;
    *n_val = *n_test = k;
    *n_train = n - 2 * k;
}

static CapStatus make_dir(const char *path, char *err, size_t err_size) {
    char failed[4096];
    if (strlen(path) >= sizeof failed)
        return data_fail(err, err_size, CAP_E_ARG, "%s: path too long", path);
    int e = file_make_dirs(path, failed, sizeof failed);
    if (e)
        return data_fail(err, err_size, CAP_E_IO, "%s: cannot create directory: %s", failed,
                         strerror(e));
    return CAP_OK;
}

static cJSON *scene_json(const SynthScene *s) {
    cJSON *a = cJSON_CreateArray();
    for (int k = 0; k < s->n; k++) {
        const SynthObject *o = &s->obj[k];
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "shape", synth_shape_names[o->shape]);
        cJSON_AddStringToObject(j, "colour", synth_colour_names[o->colour]);
        cJSON_AddStringToObject(j, "size", o->large ? "large" : "small");
        cJSON_AddNumberToObject(j, "x", o->cx);
        cJSON_AddNumberToObject(j, "y", o->cy);
        cJSON_AddNumberToObject(j, "r", o->r);
        cJSON_AddItemToArray(a, j);
    }
    return a;
}

typedef struct CocoOut {
    cJSON *root, *images, *anns;
} CocoOut;

static void coco_begin(CocoOut *c, const SynthOptions *o, const char *split) {
    c->root = cJSON_CreateObject();
    cJSON *info = cJSON_AddObjectToObject(c->root, "info");
    cJSON_AddStringToObject(info, "description", "capc synthetic shapes captioning set");
    cJSON_AddStringToObject(info, "split", split);
    cJSON_AddNumberToObject(info, "seed", o->seed);
    cJSON_AddNumberToObject(info, "image_size", o->size);
    c->images = cJSON_AddArrayToObject(c->root, "images");
    c->anns = cJSON_AddArrayToObject(c->root, "annotations");
}

static void coco_add(CocoOut *c, int id, const char *file, int size, const char *split,
                     const SynthScene *scene, char caps[SYNTH_N_CAPTIONS][200]) {
    cJSON *im = cJSON_CreateObject();
    cJSON_AddNumberToObject(im, "id", id);
    cJSON_AddStringToObject(im, "file_name", file);
    cJSON_AddNumberToObject(im, "width", size);
    cJSON_AddNumberToObject(im, "height", size);
    if (split) {
        cJSON_AddStringToObject(im, "split", split);
        cJSON_AddItemToObject(im, "scene", scene_json(scene));
    }
    cJSON_AddItemToArray(c->images, im);
    for (int k = 0; k < SYNTH_N_CAPTIONS; k++) {
        cJSON *a = cJSON_CreateObject();
        cJSON_AddNumberToObject(a, "id", id * SYNTH_N_CAPTIONS + k);
        cJSON_AddNumberToObject(a, "image_id", id);
        cJSON_AddStringToObject(a, "caption", caps[k]);
        cJSON_AddItemToArray(c->anns, a);
    }
}

static CapStatus coco_save(CocoOut *c, const char *dir, const char *name, char *err, size_t err_size) {
    char *path = data_join_path(dir, name);
    char *text = cJSON_PrintUnformatted(c->root);
    cJSON_Delete(c->root);
    c->root = NULL;
    CapStatus st = CAP_OK;
    FILE *f = path && text ? fopen(path, "wb") : NULL;
    if (!path || !text) st = data_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    else if (!f) st = data_fail(err, err_size, CAP_E_IO, "%s: cannot write: %s", path, strerror(errno));
    else {
        int bad = fputs(text, f) < 0 || fputc('\n', f) < 0;
        if (fclose(f) != 0 || bad) st = data_fail(err, err_size, CAP_E_IO, "%s: cannot write", path);
    }
    free(path);
    free(text);
    return st;
}

static int image_is_png(const SynthOptions *o, int i) {
    return o->format == SYNTH_PNG || (o->format == SYNTH_MIXED && i % 2 == 0);
}

/* Renders and writes image i; its COCO file name into file. */
static CapStatus write_image(const SynthOptions *o, int i, const SynthScene *s, uint8_t *rgb,
                             char *file, size_t file_size, char *err, size_t err_size) {
    snprintf(file, file_size, "images/synth_%06d.%s", i, image_is_png(o, i) ? "png" : "jpg");
    char *path = data_join_path(o->out_dir, file);
    if (!path) return data_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    synth_render(s, o->size, rgb);
    CapStatus st = image_is_png(o, i) ? image_write_png(path, rgb, o->size, o->size, NULL, 0, err,
                                                        err_size)
                                      : image_write_jpeg(path, rgb, o->size, o->size, 92, err, err_size);
    free(path);
    return st;
}

static CapStatus write_all(const SynthOptions *o, CocoOut *all, CocoOut split_out[3],
                           uint8_t *rgb, char *err, size_t err_size) {
    static const char *names[3] = {"train", "val", "test"};
    int counts[3];
    synth_split_counts(o->n_images, &counts[0], &counts[1], &counts[2]);
    for (int i = 0; i < o->n_images; i++) {
        int sp = i < counts[0] ? 0 : i < counts[0] + counts[1] ? 1 : 2;
        SynthScene s;
        char caps[SYNTH_N_CAPTIONS][200], file[64];
        synth_scene(o->seed, i, o->size, &s);
        synth_captions(&s, o->seed, i, caps);
        CapStatus st = write_image(o, i, &s, rgb, file, sizeof file, err, err_size);
        if (st) return st;
        coco_add(all, i, file, o->size, names[sp], &s, caps);
        coco_add(&split_out[sp], i, file, o->size, NULL, &s, caps);
    }
    CapStatus st = coco_save(all, o->out_dir, "captions.json", err, err_size);
    for (int k = 0; k < 3 && !st; k++) {
        char name[32];
        snprintf(name, sizeof name, "captions_%s.json", names[k]);
        st = coco_save(&split_out[k], o->out_dir, name, err, err_size);
    }
    return st;
}

CapStatus synth_write(const SynthOptions *o, char *err, size_t err_size) {
    if (o->n_images < 1 || o->size < 16 || o->size > 1024)
        return data_fail(err, err_size, CAP_E_ARG, "synth: need --images >= 1 and 16 <= --size <= 1024");
    char *img_dir = data_join_path(o->out_dir, "images");
    CapStatus st = img_dir ? make_dir(img_dir, err, err_size)
                           : data_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    free(img_dir);
    if (st) return st;
    uint8_t *rgb = malloc((size_t)o->size * o->size * 3);
    if (!rgb) return data_fail(err, err_size, CAP_E_NOMEM, "out of memory");
    CocoOut all, split_out[3];
    coco_begin(&all, o, "all");
    coco_begin(&split_out[0], o, "train");
    coco_begin(&split_out[1], o, "val");
    coco_begin(&split_out[2], o, "test");
    st = write_all(o, &all, split_out, rgb, err, err_size);
    cJSON_Delete(all.root); /* NULL after a save */
    for (int k = 0; k < 3; k++) cJSON_Delete(split_out[k].root);
    free(rgb);
    return st;
}
