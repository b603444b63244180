/* synth.h — the synthetic captioning set: small images of 1-3 flat shapes on a gray
 * background, with 5 captions each from a small grammar, as real PNG/JPEG files and COCO
 * captions files (docs/data.md, "The synthetic set"). Shape, colour, size, count and
 * position are drawn independently (Philox keyed by (seed, image, draw)), so a captioner
 * can only get them right by looking.
 *
 * Ownership: everything returned is caller-owned (plain structs / caller buffers).
 */
#ifndef SYNTH_H
#define SYNTH_H

#include <stddef.h>
#include <stdint.h>

#include "cap.h"

enum { SYNTH_N_SHAPES = 4, SYNTH_N_COLOURS = 6, SYNTH_MAX_OBJECTS = 3, SYNTH_N_CAPTIONS = 5 };

extern const char *const synth_shape_names[SYNTH_N_SHAPES];   /* circle square triangle cross */
extern const char *const synth_colour_names[SYNTH_N_COLOURS]; /* red green blue yellow purple white */
extern const uint8_t synth_colour_rgb[SYNTH_N_COLOURS][3];
extern const uint8_t synth_background_rgb[3];

typedef struct SynthObject {
    int shape, colour;
    int large;        /* 0 small, 1 large */
    float cx, cy, r;  /* centre and half-extent in pixels (y down) */
} SynthObject;

typedef struct SynthScene {
    int n; /* 1..3; (shape, colour) pairs are distinct; bounding boxes are separated */
    SynthObject obj[SYNTH_MAX_OBJECTS];
} SynthScene;

typedef enum SynthRelation { SYNTH_LEFT_OF, SYNTH_RIGHT_OF, SYNTH_ABOVE, SYNTH_BELOW } SynthRelation;
extern const char *const synth_relation_names[4]; /* "left of" "right of" "above" "below" */

/* Whether `a REL b` holds: a's box ends at least a margin before b's begins along the axis. */
int synth_relation_holds(const SynthObject *a, const SynthObject *b, SynthRelation rel);

/* Scene number `index` of the set drawn with `seed` for size x size images. */
void synth_scene(uint32_t seed, int64_t index, int size, SynthScene *out);
/* rgb: size x size x 3. */
void synth_render(const SynthScene *s, int size, uint8_t *rgb);
/* SYNTH_N_CAPTIONS different captions (mixed case, some with a final '.'). */
void synth_captions(const SynthScene *s, uint32_t seed, int64_t index,
                    char captions[SYNTH_N_CAPTIONS][200]);

typedef enum SynthFormat { SYNTH_PNG, SYNTH_JPEG, SYNTH_MIXED } SynthFormat;

typedef struct SynthOptions {
    const char *out_dir;
    int n_images;  /* >= 1 */
    uint32_t seed;
    int size;      /* 16..1024 */
    SynthFormat format; /* MIXED: even image numbers PNG, odd JPEG */
} SynthOptions;

/* Splits: the first n - 2 * (n / 10) images train, then n / 10 val, then n / 10 test (for
 * 3 <= n < 20 one image each for val and test). */
void synth_split_counts(int n, int *n_train, int *n_val, int *n_test);

/* Writes OUT/images/synth_NNNNNN.{png,jpg}, OUT/captions_{train,val,test}.json (plain COCO)
 * and OUT/captions.json (all images, each with "split" and "scene"). */
CapStatus synth_write(const SynthOptions *o, char *err, size_t err_size);

#endif
