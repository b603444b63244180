/* image.c — JPEG and PNG decoding and the resize / crop / normalize preprocessing (rules in
 * image.h). Each decoder reads from memory; library errors longjmp back to the decoder, which
 * frees what it allocated and returns the message. */
#include "image.h"

#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>
#include <png.h>

#include "data_internal.h"

void image_free(Image *im) {
    if (!im) return;
    free(im->rgb);
    im->rgb = NULL;
    im->width = im->height = 0;
}

static CapStatus check_size(const char *name, long w, long h, char *err, size_t err_size) {
    if (w <= 0 || h <= 0 || w > IMAGE_MAX_SIDE || h > IMAGE_MAX_SIDE ||
        (double)w * (double)h > IMAGE_MAX_PIXELS)
        return data_fail(err, err_size, CAP_E_FORMAT,
                         "%s: image size %ldx%ld is not supported (at most %d per side, %d pixels)",
                         name, w, h, IMAGE_MAX_SIDE, IMAGE_MAX_PIXELS);
    return CAP_OK;
}

/* ---- JPEG ---------------------------------------------------------------------------------- */

typedef struct JpegErr {
    struct jpeg_error_mgr mgr; /* first: libjpeg casts cinfo->err to this */
    jmp_buf jump;
    char msg[JMSG_LENGTH_MAX];
    int truncated; /* saw "premature end of data": refused, not gray-filled */
} JpegErr;

static void jpeg_on_error(j_common_ptr cinfo) {
    JpegErr *e = (JpegErr *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, e->msg);
    longjmp(e->jump, 1);
}

static void jpeg_on_message(j_common_ptr cinfo, int level) {
    JpegErr *e = (JpegErr *)cinfo->err;
    if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF && !e->truncated) {
        e->truncated = 1;
        (*cinfo->err->format_message)(cinfo, e->msg);
    }
}

/* One row of CMYK (4 bytes per pixel) to RGB. */
static void cmyk_to_rgb(const uint8_t *src, uint8_t *dst, int width, int inverted) {
    for (int x = 0; x < width; x++) {
        unsigned k = src[4 * x + 3];
        for (int c = 0; c < 3; c++) {
            unsigned v = src[4 * x + c];
            dst[3 * x + c] = (uint8_t)(inverted ? (v * k + 127) / 255
                                                : ((255 - v) * (255 - k) + 127) / 255);
        }
    }
}

/* One decode: on the heap, so that nothing the decoder changes after setjmp is an automatic
 * variable of the function that called setjmp (those would be indeterminate after longjmp). */
typedef struct JpegJob {
    struct jpeg_decompress_struct ci;
    JpegErr e;
    uint8_t *rgb; /* output, h x w x 3 */
    uint8_t *row; /* one CMYK row */
} JpegJob;

/* Everything between header and finish; may longjmp. */
static CapStatus jpeg_read_pixels(JpegJob *job, const char *name, char *err, size_t err_size) {
    struct jpeg_decompress_struct *ci = &job->ci;
    int cmyk = ci->jpeg_color_space == JCS_CMYK || ci->jpeg_color_space == JCS_YCCK;
    ci->out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
    jpeg_start_decompress(ci);
    int w = (int)ci->output_width, h = (int)ci->output_height;
    if (ci->output_components != (cmyk ? 4 : 3))
        return data_fail(err, err_size, CAP_E_FORMAT, "%s: JPEG with %d components is not supported",
                         name, ci->output_components);
    job->rgb = malloc((size_t)w * (size_t)h * 3);
    job->row = malloc((size_t)w * 4);
    if (!job->rgb || !job->row) return data_fail(err, err_size, CAP_E_NOMEM, "%s: out of memory", name);
    while (ci->output_scanline < ci->output_height) {
        uint8_t *dst = job->rgb + (size_t)ci->output_scanline * (size_t)w * 3;
        JSAMPROW rows[1] = {cmyk ? job->row : dst};
        jpeg_read_scanlines(ci, rows, 1);
        if (cmyk) cmyk_to_rgb(job->row, dst, w, ci->saw_Adobe_marker);
    }
    jpeg_finish_decompress(ci);
    return job->e.truncated ? data_fail(err, err_size, CAP_E_FORMAT, "%s: corrupt JPEG: %s", name,
                                        job->e.msg)
                            : CAP_OK;
}

static void jpeg_job_free(JpegJob *job) {
    jpeg_destroy_decompress(&job->ci);
    free(job->rgb);
    free(job->row);
    free(job);
}

static CapStatus decode_jpeg(const uint8_t *bytes, size_t n, const char *name, Image *out,
                             char *err, size_t err_size) {
    JpegJob *job = calloc(1, sizeof *job);
    if (!job) return data_fail(err, err_size, CAP_E_NOMEM, "%s: out of memory", name);
    job->ci.err = jpeg_std_error(&job->e.mgr);
    job->e.mgr.error_exit = jpeg_on_error;
    job->e.mgr.emit_message = jpeg_on_message;
    if (setjmp(job->e.jump)) {
        CapStatus st = data_fail(err, err_size, CAP_E_FORMAT, "%s: corrupt JPEG: %s", name, job->e.msg);
        jpeg_job_free(job);
        return st;
    }
    jpeg_create_decompress(&job->ci);
    jpeg_mem_src(&job->ci, bytes, (unsigned long)n);
    jpeg_read_header(&job->ci, TRUE);
    CapStatus st = check_size(name, (long)job->ci.image_width, (long)job->ci.image_height, err,
                              err_size);
    if (!st) st = jpeg_read_pixels(job, name, err, err_size);
    if (!st) {
        *out = (Image){(int)job->ci.output_width, (int)job->ci.output_height, job->rgb};
        job->rgb = NULL;
    }
    jpeg_job_free(job);
    return st;
}

/* ---- PNG ----------------------------------------------------------------------------------- */

/* One decode, on the heap for the same reason as JpegJob. */
typedef struct PngJob {
    const uint8_t *bytes;
    size_t n, pos;
    char msg[256];
    png_structp png;
    png_infop info;
    uint8_t *rgb;    /* output, h x w x 3 */
    png_bytep *rows; /* row pointers into rgb */
} PngJob;

static void png_on_read(png_structp png, png_bytep dst, size_t len) {
    PngJob *s = png_get_io_ptr(png);
    if (len > s->n - s->pos) png_error(png, "unexpected end of file (truncated?)");
    memcpy(dst, s->bytes + s->pos, len);
    s->pos += len;
}

static void png_on_error(png_structp png, png_const_charp msg) {
    PngJob *s = png_get_error_ptr(png);
    snprintf(s->msg, sizeof s->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg; /* warnings (bad CRC in ancillary chunks, iCCP quirks) do not stop decoding */
}

/* Sets the transformations that turn any PNG into 8-bit RGB. */
static void png_to_rgb8(png_structp png, png_infop info) {
    int type = png_get_color_type(png, info);
    int depth = png_get_bit_depth(png, info);
    if (type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (type == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (depth == 16) png_set_scale_16(png);
    if (type == PNG_COLOR_TYPE_GRAY || type == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
    /* alpha, and the alpha that palette expansion makes of a tRNS chunk, is dropped */
    int trns = png_get_valid(png, info, PNG_INFO_tRNS) != 0;
    if ((type & PNG_COLOR_MASK_ALPHA) || (type == PNG_COLOR_TYPE_PALETTE && trns))
        png_set_strip_alpha(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
}

/* Header to end; may longjmp. */
static CapStatus png_read_pixels(PngJob *job, const char *name, char *err, size_t err_size) {
    png_structp png = job->png;
    png_infop info = job->info;
    png_set_read_fn(png, job, png_on_read);
    png_read_info(png, info);
    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    CapStatus st = check_size(name, (long)w, (long)h, err, err_size);
    if (st) return st;
    png_to_rgb8(png, info);
    if (png_get_rowbytes(png, info) != (size_t)w * 3)
        return data_fail(err, err_size, CAP_E_FORMAT, "%s: PNG layout not supported", name);
    job->rgb = malloc((size_t)w * h * 3);
    job->rows = malloc(h * sizeof *job->rows);
    if (!job->rgb || !job->rows) return data_fail(err, err_size, CAP_E_NOMEM, "%s: out of memory", name);
    for (png_uint_32 y = 0; y < h; y++) job->rows[y] = job->rgb + (size_t)y * w * 3;
    png_read_image(png, job->rows);
    png_read_end(png, NULL);
    return CAP_OK;
}

static void png_job_free(PngJob *job) {
    png_destroy_read_struct(&job->png, &job->info, NULL);
    free(job->rgb);
    free(job->rows);
    free(job);
}

static CapStatus decode_png(const uint8_t *bytes, size_t n, const char *name, Image *out,
                            char *err, size_t err_size) {
    PngJob *job = calloc(1, sizeof *job);
    if (job) {
        job->bytes = bytes;
        job->n = n;
        job->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, job, png_on_error, png_on_warning);
        job->info = job->png ? png_create_info_struct(job->png) : NULL;
    }
    if (!job || !job->info) {
        if (job) png_job_free(job);
        return data_fail(err, err_size, CAP_E_NOMEM, "%s: out of memory", name);
    }
    if (setjmp(png_jmpbuf(job->png))) {
        CapStatus st = data_fail(err, err_size, CAP_E_FORMAT, "%s: corrupt PNG: %s", name, job->msg);
        png_job_free(job);
        return st;
    }
    CapStatus st = png_read_pixels(job, name, err, err_size);
    if (!st) {
        *out = (Image){(int)png_get_image_width(job->png, job->info),
                       (int)png_get_image_height(job->png, job->info), job->rgb};
        job->rgb = NULL;
    }
    png_job_free(job);
    return st;
}

/* ---- entry points -------------------------------------------------------------------------- */

CapStatus image_decode_memory(const uint8_t *bytes, size_t n, const char *name, Image *out,
                              char *err, size_t err_size) {
    memset(out, 0, sizeof *out);
    static const uint8_t png_magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    if (n >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF)
        return decode_jpeg(bytes, n, name, out, err, err_size);
    if (n >= 8 && memcmp(bytes, png_magic, 8) == 0)
        return decode_png(bytes, n, name, out, err, err_size);
    return data_fail(err, err_size, CAP_E_FORMAT,
                     n == 0 ? "%s: empty file" : "%s: not a JPEG or PNG file (by its first bytes)",
                     name);
}

CapStatus image_decode_file(const char *path, Image *out, char *err, size_t err_size) {
    char *bytes;
    size_t n;
    memset(out, 0, sizeof *out);
    CapStatus st = data_read_file(path, &bytes, &n, err, err_size);
    if (st) return st;
    st = image_decode_memory((const uint8_t *)bytes, n, path, out, err, err_size);
    free(bytes);
    return st;
}

/* ---- resize, crop, normalize --------------------------------------------------------------- */

/* Python's round(x) for x = k / 2 (half to even). */
static int round_half_even(int twice) {
    int q = twice / 2;
    if (twice % 2 == 0) return q;
    return q % 2 == 0 ? q : q + 1;
}

void image_crop_geometry(int width, int height, int size, ImageCrop *out) {
    if (width <= height) {
        out->resized_w = size;
        out->resized_h = (int)((double)size * height / width);
    } else {
        out->resized_h = size;
        out->resized_w = (int)((double)size * width / height);
    }
    out->left = round_half_even(out->resized_w - size);
    out->top = round_half_even(out->resized_h - size);
}

typedef struct Tap {
    int i0, i1;
    float w1; /* weight of i1; i0 gets 1 - w1 */
} Tap;

/* Taps of resized pixels offset..offset+count-1 along an axis of `in` source pixels resized
 * to `out`. */
static void axis_taps(int in, int out, int offset, int count, Tap *taps) {
    float scale = (float)in / (float)out;
    for (int i = 0; i < count; i++) {
        float src = scale * ((float)(i + offset) + 0.5f) - 0.5f;
        if (src < 0) src = 0;
        int i0 = (int)src;
        if (i0 > in - 1) i0 = in - 1;
        taps[i] = (Tap){i0, i0 < in - 1 ? i0 + 1 : i0, src - (float)i0};
    }
}

int image_resize_crop(const Image *im, int size, float *dst) {
    ImageCrop g;
    image_crop_geometry(im->width, im->height, size, &g);
    Tap *tx = malloc((size_t)size * sizeof *tx), *ty = malloc((size_t)size * sizeof *ty);
    if (!tx || !ty) {
        free(tx);
        free(ty);
        return -1;
    }
    axis_taps(im->width, g.resized_w, g.left, size, tx);
    axis_taps(im->height, g.resized_h, g.top, size, ty);
    size_t plane = (size_t)size * size, stride = (size_t)im->width * 3;
    for (int y = 0; y < size; y++) {
        const uint8_t *r0 = im->rgb + (size_t)ty[y].i0 * stride;
        const uint8_t *r1 = im->rgb + (size_t)ty[y].i1 * stride;
        float wy = ty[y].w1;
        for (int x = 0; x < size; x++) {
            int a = tx[x].i0 * 3, b = tx[x].i1 * 3;
            float wx = tx[x].w1;
            for (int c = 0; c < 3; c++) {
                float top = (1 - wx) * r0[a + c] + wx * r0[b + c];
                float bot = (1 - wx) * r1[a + c] + wx * r1[b + c];
                dst[c * plane + (size_t)y * size + x] = (1 - wy) * top + wy * bot;
            }
        }
    }
    free(tx);
    free(ty);
    return 0;
}

void image_normalize(float *chw, int size) {
    static const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    size_t plane = (size_t)size * size;
    for (int c = 0; c < 3; c++)
        for (size_t i = 0; i < plane; i++)
            chw[c * plane + i] = (chw[c * plane + i] / 255.0f - mean[c]) / std[c];
}

CapStatus image_load_preprocessed(const char *path, int size, float *dst, char *err,
                                  size_t err_size) {
    Image im;
    CapStatus st = image_decode_file(path, &im, err, err_size);
    if (st) return st;
    int bad = image_resize_crop(&im, size, dst);
    image_free(&im);
    if (bad) return data_fail(err, err_size, CAP_E_NOMEM, "%s: out of memory", path);
    image_normalize(dst, size);
    return CAP_OK;
}
