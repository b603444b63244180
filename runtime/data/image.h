/* image.h — decoding JPEG (libjpeg) and PNG (libpng) files into 8-bit RGB, and the model's
 * preprocessing: resize the short side to S, center-crop SxS, ImageNet-normalize into f32 CHW;
 * writing 8-bit RGB as PNG or JPEG (the synthetic set, `cap attend`).
 *
 * What decodes (docs/data.md, "Images"): JPEG grayscale, YCbCr/RGB, CMYK and YCCK (Adobe
 * marker present = inverted CMYK, as Photoshop writes and PIL reads; R = C*K/255, else
 * R = (255-C)(255-K)/255); PNG gray, gray+alpha, RGB, RGBA, palette (with or without tRNS),
 * 1/2/4/8/16 bits, interlaced. Gray is replicated to R=G=B. Alpha is DROPPED (the colour
 * channels are kept as stored, like PIL's convert("RGB")). 16-bit samples are scaled to 8
 * bits with rounding (v * 255 / 65535). The file type comes from its first bytes, never its
 * name. Everything else (other formats, corrupt or truncated data, a side over
 * IMAGE_MAX_SIDE or more than IMAGE_MAX_PIXELS pixels, a file over IMAGE_MAX_FILE_BYTES or not
 * a regular file) is refused with a message that names
 * the file; libjpeg/libpng errors return through setjmp/longjmp, so no input crashes.
 *
 * Ownership: Image.rgb is owned by the Image; image_free releases it.
 */
#ifndef IMAGE_H
#define IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "cap.h"

/* Decoder limits (docs/data.md, "Images"): a header is a few bytes, and what it claims is
 * allocated, so a 600-byte file could otherwise ask for gigabytes in every loader worker.
 * Real captioning photos are far below them (COCO <= 640 px, a 50 MP camera 8192x6144). */
#define IMAGE_MAX_SIDE 16384                 /* pixels per side */
#define IMAGE_MAX_PIXELS (64 * 1000 * 1000)  /* width x height: 192 MB of RGB */
#define IMAGE_MAX_FILE_BYTES ((size_t)128 << 20) /* the largest image file read */

typedef struct Image {
    int width, height;
    uint8_t *rgb; /* height x width x 3, row-major */
} Image;

CapStatus image_decode_file(const char *path, Image *out, char *err, size_t err_size);
/* Decodes bytes[0..n); `name` is used in messages. */
CapStatus image_decode_memory(const uint8_t *bytes, size_t n, const char *name, Image *out,
                              char *err, size_t err_size);
void image_free(Image *im);

/* The geometry of resize + center crop, as torchvision's Resize(S) then CenterCrop(S):
 * the short side becomes S and the long side int(S * long / short) (truncated); the crop
 * starts at round((resized - S) / 2) with round-half-to-even (Python's round). */
typedef struct ImageCrop {
    int resized_w, resized_h; /* the resized image the crop is cut from */
    int left, top;            /* crop origin in resized pixels */
} ImageCrop;
void image_crop_geometry(int width, int height, int size, ImageCrop *out);

/* dst[c][y][x] (3 x size x size f32, values 0..255 unrounded) = bilinear sample of the
 * resized-and-cropped image. Sampling (PyTorch's interpolate(mode="bilinear",
 * align_corners=False, antialias=False)): for resized pixel r along an axis with scale
 * in/out, src = (r + 0.5) * in / out - 0.5, clamped below at 0; i0 = floor(src),
 * i1 = min(i0 + 1, in - 1), weight of i1 = src - i0. No antialiasing when shrinking.
 * Returns 0, or -1 if out of memory. */
int image_resize_crop(const Image *im, int size, float *dst);

/* In place: x = (x / 255 - mean[c]) / std[c] with ImageNet's mean 0.485 0.456 0.406 and std
 * 0.229 0.224 0.225, over 3 x size x size CHW. */
void image_normalize(float *chw, int size);

/* Resize/crop + normalize an image decoded from path (named in the error): dst is 3 x size x
 * size f32. */
CapStatus image_preprocess(const Image *im, const char *path, int size, float *dst, char *err,
                           size_t err_size);

/* Decode + image_preprocess. */
CapStatus image_load_preprocessed(const char *path, int size, float *dst, char *err,
                                  size_t err_size);

/* ---- writing (8-bit RGB, rgb as in Image) ---- */

#define IMAGE_MAX_TEXT 8 /* tEXt chunks written at most */

/* A PNG file; text: n_text (key, value) pairs (PNG keys are 1-79 ASCII characters:
 * "Description", "Software"), or NULL; an ASCII value is a tEXt chunk, any other an iTXt one
 * (UTF-8). On failure no file is left at path. */
CapStatus image_write_png(const char *path, const uint8_t *rgb, int w, int h,
                          const char *const *text, int n_text, char *err, size_t err_size);
/* A JPEG file at quality 0..100. */
CapStatus image_write_jpeg(const char *path, const uint8_t *rgb, int w, int h, int quality,
                           char *err, size_t err_size);

#endif
