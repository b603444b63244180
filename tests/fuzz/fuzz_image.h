/* fuzz_image.h — the image decoders' target body, shared by fuzz_jpeg.c and fuzz_png.c
 * (image_decode_memory picks the decoder from the first bytes, so the two targets differ
 * only in their corpora). A decoded image must have the size it claims within the limits of
 * image.h, and the model's preprocessing must run on it. */
#ifndef CAPC_FUZZ_IMAGE_H
#define CAPC_FUZZ_IMAGE_H

#include "fuzz_util.h"

#include "image.h"

static inline int fuzz_image(const uint8_t *data, size_t size) {
    Image im = {0};
    char err[1024] = "";
    CapStatus st = image_decode_memory(data, size, "fuzz.img", &im, err, sizeof err);
    if (st != CAP_OK) {
        FUZZ_CHECK(err[0] != 0, "decode failed without a message");
        return 0;
    }
    FUZZ_CHECK(im.width > 0 && im.height > 0 && im.width <= IMAGE_MAX_SIDE &&
                   im.height <= IMAGE_MAX_SIDE &&
                   (int64_t)im.width * im.height <= IMAGE_MAX_PIXELS && im.rgb != NULL,
               "decoded %dx%d", im.width, im.height);
    /* Touch the last pixel: a buffer shorter than width x height x 3 shows up under ASan. */
    volatile uint8_t last = im.rgb[(size_t)im.width * im.height * 3 - 1];
    (void)last;
    float chw[3 * 4 * 4];
    FUZZ_CHECK(image_resize_crop(&im, 4, chw) == 0, "image_resize_crop failed");
    image_normalize(chw, 4);
    image_free(&im);
    return 0;
}

#endif
