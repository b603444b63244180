/* image.c — JPEG and PNG decoding and the resize / crop / normalize preprocessing (rules in
 * image.h), and writing both formats. Each decoder reads from memory; library errors longjmp
 * back to the decoder (or writer), which frees what it allocated and returns the message. */
#include "image.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* Decoder limits beyond image.h's: what libpng may allocate for one chunk (iCCP, text,
 * unknown) or decompress from one. */
enum { PNG_CHUNK_MAX = 8 * 1024 * 1024 };

static CapStatus check_size(const char *name, long w, long h, char *err, size_t err_size) {
    if (w <= 0 || h <= 0 || w > IMAGE_MAX_SIDE || h > IMAGE_MAX_SIDE ||
        (double)w * (double)h > IMAGE_MAX_PIXELS)
        return data_fail(err, err_size, CAP_E_FORMAT,
                         "%s: image size %ldx%ld is over the limit (at most %d pixels per side "
                         "and %d pixels in all)", name, w, h, IMAGE_MAX_SIDE, IMAGE_MAX_PIXELS);
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

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Walks the chunks of the PNG in bytes[0..n) up to IEND and refuses one whose length runs
 * past the end of the file. Why: libpng allocates a text or sPLT chunk's claimed length
 * before reading it (2 GB for a 617-byte file whose tEXt claims 0x7fffffff bytes), and
 * png_set_chunk_malloc_max does not cover those chunks; the whole file is in memory, so a
 * real chunk is never longer than what is left of it. */
static CapStatus png_check_chunks(const uint8_t *bytes, size_t n, const char *name, char *err,
                                  size_t err_size) {
    for (size_t pos = 8; pos + 8 <= n;) {
        uint32_t len = be32(bytes + pos);
        size_t left = n - pos - 8;
        if (len > 0x7fffffffu || (size_t)len + 4 > left) {
            char type[5];
            for (int i = 0; i < 4; i++) {
                uint8_t c = bytes[pos + 4 + (size_t)i];
                type[i] = c > ' ' && c < 0x7f ? (char)c : '?'; /* the message stays printable */
            }
            type[4] = 0;
            return data_fail(err, err_size, CAP_E_FORMAT,
                             "%s: corrupt PNG: chunk '%s' at byte %zu claims %lu bytes, more than "
                             "the file has left (%zu)", name, type, pos, (unsigned long)len,
                             left > 4 ? left - 4 : 0);
        }
        if (memcmp(bytes + pos + 4, "IEND", 4) == 0) break;
        pos += 12 + (size_t)len;
    }
    return CAP_OK; /* a file cut inside a chunk header is reported by libpng as truncated */
}

/* Sets the limits of one PNG decode. */
static void png_set_limits(png_structp png) {
    /* What a decompressed or buffered chunk (zTXt, iCCP, unknown) may take. */
    png_set_chunk_malloc_max(png, PNG_CHUNK_MAX);
    /* Chunks that carry nothing the model sees (text, ICC profiles, suggested palettes, Exif)
     * are skipped unread, so they cannot cost memory or decompression time. */
    static const png_byte skipped[] = "tEXt\0zTXt\0iTXt\0iCCP\0sPLT\0eXIf";
    png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, skipped, (int)(sizeof skipped / 5));
}

static CapStatus decode_png(const uint8_t *bytes, size_t n, const char *name, Image *out,
                            char *err, size_t err_size) {
    CapStatus st = png_check_chunks(bytes, n, name, err, err_size);
    if (st) return st;
    PngJob *job = calloc(1, sizeof *job);
    if (job) {
        job->bytes = bytes;
        job->n = n;
        job->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, job, png_on_error, png_on_warning);
        job->info = job->png ? png_create_info_struct(job->png) : NULL;
    }
    if (job && job->png) png_set_limits(job->png);
    if (!job || !job->info) {
        if (job) png_job_free(job);
        return data_fail(err, err_size, CAP_E_NOMEM, "%s: out of memory", name);
    }
    if (setjmp(png_jmpbuf(job->png))) {
        CapStatus fail = data_fail(err, err_size, CAP_E_FORMAT, "%s: corrupt PNG: %s", name, job->msg);
        png_job_free(job);
        return fail;
    }
    st = png_read_pixels(job, name, err, err_size);
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

/* Reads all of fd (a regular file of `size` bytes by fstat) into *bytes; a file that grows
 * meanwhile is refused, so no more than size bytes are ever kept. */
static CapStatus read_bounded(int fd, const char *path, size_t size, char **bytes, size_t *n,
                              char *err, size_t err_size) {
    char *buf = malloc(size + 1);
    if (!buf) return data_fail(err, err_size, CAP_E_NOMEM, "%s: out of memory reading it", path);
    size_t got = 0;
    for (;;) {
        ssize_t k = read(fd, buf + got, size + 1 - got);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) {
            free(buf);
            return data_fail(err, err_size, CAP_E_IO, "%s: read error: %s", path, strerror(errno));
        }
        got += (size_t)k;
        if (k == 0 || got == size + 1) break;
    }
    if (got > size) { /* it grew since fstat: what was read may be cut anywhere */
        free(buf);
        return data_fail(err, err_size, CAP_E_IO, "%s: changed size while being read", path);
    }
    *bytes = buf;
    *n = got;
    return CAP_OK;
}

/* Reads an image file: a regular file (after symlinks) of at most IMAGE_MAX_FILE_BYTES. Why:
 * a link to /dev/zero or a FIFO would otherwise be read until memory runs out, or block a
 * loader worker forever. O_NONBLOCK makes opening a FIFO return at once, so fstat can refuse
 * it; it does not change reads from a regular file. */
static CapStatus read_image_file(const char *path, char **bytes, size_t *n, char *err,
                                 size_t err_size) {
    *bytes = NULL;
    *n = 0;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) return data_fail(err, err_size, CAP_E_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    CapStatus st = CAP_OK;
    if (fstat(fd, &sb) != 0)
        st = data_fail(err, err_size, CAP_E_IO, "%s: cannot stat: %s", path, strerror(errno));
    else if (!S_ISREG(sb.st_mode))
        st = data_fail(err, err_size, CAP_E_FORMAT, "%s: not a regular file (a directory, device "
                       "or pipe is not an image)", path);
    else if ((uintmax_t)sb.st_size > IMAGE_MAX_FILE_BYTES)
        st = data_fail(err, err_size, CAP_E_FORMAT, "%s: %jd bytes, over the %zu-byte limit for "
                       "an image file", path, (intmax_t)sb.st_size, IMAGE_MAX_FILE_BYTES);
    else st = read_bounded(fd, path, (size_t)sb.st_size, bytes, n, err, err_size);
    close(fd);
    return st;
}

CapStatus image_decode_file(const char *path, Image *out, char *err, size_t err_size) {
    char *bytes;
    size_t n;
    memset(out, 0, sizeof *out);
    CapStatus st = read_image_file(path, &bytes, &n, err, err_size);
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

CapStatus image_preprocess(const Image *im, const char *path, int size, float *dst, char *err,
                           size_t err_size) {
    if (image_resize_crop(im, size, dst) != 0)
        return data_fail(err, err_size, CAP_E_NOMEM, "%s: out of memory", path);
    image_normalize(dst, size);
    return CAP_OK;
}

CapStatus image_load_preprocessed(const char *path, int size, float *dst, char *err,
                                  size_t err_size) {
    Image im;
    CapStatus st = image_decode_file(path, &im, err, err_size);
    if (st) return st;
    st = image_preprocess(&im, path, size, dst, err, err_size);
    image_free(&im);
    return st;
}

/* ---- writing ---------------------------------------------------------------------------- */

typedef struct PngOut {
    FILE *f;
    png_structp png;
    png_infop info;
    char msg[256];
} PngOut;

static void png_out_error(png_structp png, png_const_charp msg) {
    PngOut *o = png_get_error_ptr(png);
    snprintf(o->msg, sizeof o->msg, "%s", msg);
    png_longjmp(png, 1);
}

/* ASCII text is the same in Latin-1 (tEXt); anything else is written as UTF-8 (iTXt). */
static bool latin1_safe(const char *s) {
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p >= 0x80) return false;
    return true;
}

CapStatus image_write_png(const char *path, const uint8_t *rgb, int w, int h,
                          const char *const *text, int n_text, char *err, size_t err_size) {
    PngOut *o = calloc(1, sizeof *o); /* heap: nothing automatic changes after setjmp */
    if (!o) return data_fail(err, err_size, CAP_E_NOMEM, "%s: out of memory", path);
    o->f = fopen(path, "wb");
    if (!o->f) {
        free(o);
        return data_fail(err, err_size, CAP_E_IO, "%s: cannot write: %s", path, strerror(errno));
    }
    o->png = png_create_write_struct(PNG_LIBPNG_VER_STRING, o, png_out_error, NULL);
    o->info = o->png ? png_create_info_struct(o->png) : NULL;
    CapStatus st = CAP_OK;
    if (!o->info) st = data_fail(err, err_size, CAP_E_NOMEM, "%s: out of memory", path);
    else if (setjmp(png_jmpbuf(o->png))) st = data_fail(err, err_size, CAP_E_IO, "%s: %s", path, o->msg);
    else {
        png_init_io(o->png, o->f);
        png_set_IHDR(o->png, o->info, (png_uint_32)w, (png_uint_32)h, 8, PNG_COLOR_TYPE_RGB,
                     PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
        png_text chunks[IMAGE_MAX_TEXT];
        int n = n_text < IMAGE_MAX_TEXT ? n_text : IMAGE_MAX_TEXT;
        for (int i = 0; i < n; i++)
            chunks[i] = (png_text){.compression = latin1_safe(text[2 * i + 1])
                                                      ? PNG_TEXT_COMPRESSION_NONE
                                                      : PNG_ITXT_COMPRESSION_NONE,
                                   .key = (png_charp)text[2 * i],
                                   .text = (png_charp)text[2 * i + 1],
                                   .lang = (png_charp) "", .lang_key = (png_charp) ""};
        if (n > 0) png_set_text(o->png, o->info, chunks, n);
        png_write_info(o->png, o->info);
        for (int y = 0; y < h; y++) png_write_row(o->png, rgb + (size_t)y * w * 3);
        png_write_end(o->png, NULL);
    }
    png_destroy_write_struct(&o->png, &o->info);
    if (fclose(o->f) != 0 && !st) st = data_fail(err, err_size, CAP_E_IO, "%s: cannot write", path);
    if (st) remove(path); /* no half-written picture left behind */
    free(o);
    return st;
}

typedef struct JpegOut {
    struct jpeg_error_mgr mgr; /* first */
    jmp_buf jump;
    struct jpeg_compress_struct ci;
    FILE *f;
    char msg[JMSG_LENGTH_MAX];
} JpegOut;

static void jpeg_out_error(j_common_ptr ci) {
    JpegOut *o = (JpegOut *)ci->err;
    (*ci->err->format_message)(ci, o->msg);
    longjmp(o->jump, 1);
}

CapStatus image_write_jpeg(const char *path, const uint8_t *rgb, int w, int h, int quality,
                           char *err, size_t err_size) {
    JpegOut *o = calloc(1, sizeof *o);
    if (!o) return data_fail(err, err_size, CAP_E_NOMEM, "%s: out of memory", path);
    o->f = fopen(path, "wb");
    if (!o->f) {
        free(o);
        return data_fail(err, err_size, CAP_E_IO, "%s: cannot write: %s", path, strerror(errno));
    }
    o->ci.err = jpeg_std_error(&o->mgr);
    o->mgr.error_exit = jpeg_out_error;
    CapStatus st = CAP_OK;
    if (setjmp(o->jump)) st = data_fail(err, err_size, CAP_E_IO, "%s: %s", path, o->msg);
    else {
        jpeg_create_compress(&o->ci);
        jpeg_stdio_dest(&o->ci, o->f);
        o->ci.image_width = (JDIMENSION)w;
        o->ci.image_height = (JDIMENSION)h;
        o->ci.input_components = 3;
        o->ci.in_color_space = JCS_RGB;
        jpeg_set_defaults(&o->ci);
        jpeg_set_quality(&o->ci, quality, TRUE);
        jpeg_start_compress(&o->ci, TRUE);
        while (o->ci.next_scanline < o->ci.image_height) {
            JSAMPROW row = (JSAMPROW)(rgb + (size_t)o->ci.next_scanline * w * 3);
            jpeg_write_scanlines(&o->ci, &row, 1);
        }
        jpeg_finish_compress(&o->ci);
    }
    jpeg_destroy_compress(&o->ci);
    if (fclose(o->f) != 0 && !st) st = data_fail(err, err_size, CAP_E_IO, "%s: cannot write", path);
    free(o);
    return st;
}
