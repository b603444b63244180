/* test_image.c — image decoding and preprocessing. Every kind of input is written by the test
 * itself with libjpeg/libpng into a temporary directory, with known pixels: grayscale JPEG,
 * CMYK JPEG (Adobe marker: inverted), RGB JPEG, palette PNG with tRNS, RGBA PNG, 16-bit RGB
 * and gray PNG, 1-bit gray PNG; and refusals: truncated JPEG and PNG, a text file named .jpg,
 * an empty file; the limits: huge headers (fixtures), a 2 GB PNG chunk claim, files that are
 * not regular or over 128 MiB. Resize/crop is checked against hand-computed bilinear values (linear images,
 * where bilinear sampling is exact, and a 2x2 upscale). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jpeglib.h>
#include <png.h>

#include "image.h"
#include "synth.h"
#include "test_util.h"

static char err[1024];
static char *dir;
static char path_buf[4200];

static const char *tmp_path(const char *name) {
    snprintf(path_buf, sizeof path_buf, "%s/%s", dir, name);
    return path_buf;
}

static int setup(void **state) {
    (void)state;
    dir = make_temp_dir();
    return dir ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    rm_tree(dir);
    return 0;
}

/* ---- writers -------------------------------------------------------------------------------- */

/* A flat w x h JPEG of `components` samples per pixel in colour space cs, quality 100. */
static void write_flat_jpeg(const char *path, int w, int h, J_COLOR_SPACE cs, int components,
                            const uint8_t *pixel) {
    struct jpeg_compress_struct ci;
    struct jpeg_error_mgr jerr;
    ci.err = jpeg_std_error(&jerr);
    jpeg_create_compress(&ci);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    jpeg_stdio_dest(&ci, f);
    ci.image_width = (JDIMENSION)w;
    ci.image_height = (JDIMENSION)h;
    ci.input_components = components;
    ci.in_color_space = cs;
    jpeg_set_defaults(&ci);
    jpeg_set_quality(&ci, 100, TRUE);
    jpeg_start_compress(&ci, TRUE);
    uint8_t row[64 * 4];
    for (int x = 0; x < w; x++) memcpy(row + x * components, pixel, (size_t)components);
    while (ci.next_scanline < ci.image_height) {
        JSAMPROW r = row;
        jpeg_write_scanlines(&ci, &r, 1);
    }
    jpeg_finish_compress(&ci);
    jpeg_destroy_compress(&ci);
    fclose(f);
}

typedef struct PngSpec {
    int w, h, color_type, depth;
    const uint8_t *rows; /* h rows of packed bytes (16-bit big-endian) */
    const png_color *palette;
    int n_palette;
    const uint8_t *trns;
    int n_trns;
} PngSpec;

static void write_png(const char *path, const PngSpec *s) {
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (setjmp(png_jmpbuf(png))) fail_msg("libpng failed writing %s", path);
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)s->w, (png_uint_32)s->h, s->depth, s->color_type,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (s->palette) png_set_PLTE(png, info, s->palette, s->n_palette);
    if (s->trns) png_set_tRNS(png, info, s->trns, s->n_trns, NULL);
    png_write_info(png, info);
    size_t stride = png_get_rowbytes(png, info);
    for (int y = 0; y < s->h; y++) png_write_row(png, s->rows + (size_t)y * stride);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    fclose(f);
}

/* ---- decoding ------------------------------------------------------------------------------- */

static void decode_ok(const char *path, Image *im, int w, int h) {
    if (image_decode_file(path, im, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(im->width, w);
    assert_int_equal(im->height, h);
}

static void assert_all_pixels(const Image *im, int r, int g, int b, int tol) {
    for (int i = 0; i < im->width * im->height; i++) {
        const uint8_t *p = im->rgb + 3 * i;
        if (abs(p[0] - r) > tol || abs(p[1] - g) > tol || abs(p[2] - b) > tol)
            fail_msg("pixel %d = (%d,%d,%d), want (%d,%d,%d) +- %d", i, p[0], p[1], p[2], r, g, b, tol);
    }
}

static void test_jpeg_gray(void **state) {
    (void)state;
    uint8_t v = 100;
    write_flat_jpeg(tmp_path("gray.jpg"), 16, 8, JCS_GRAYSCALE, 1, &v);
    Image im;
    decode_ok(tmp_path("gray.jpg"), &im, 16, 8);
    assert_all_pixels(&im, 100, 100, 100, 0);
    image_free(&im);
}

static void test_jpeg_cmyk(void **state) {
    (void)state;
    /* libjpeg writes an Adobe marker for CMYK, so the samples are read as inverted CMYK:
     * R = C * K / 255 (C, K as stored). */
    uint8_t full_k[4] = {200, 100, 50, 255}, half_k[4] = {200, 100, 50, 128};
    Image im;
    write_flat_jpeg(tmp_path("cmyk1.jpg"), 8, 8, JCS_CMYK, 4, full_k);
    decode_ok(tmp_path("cmyk1.jpg"), &im, 8, 8);
    assert_all_pixels(&im, 200, 100, 50, 1);
    image_free(&im);
    write_flat_jpeg(tmp_path("cmyk2.jpg"), 8, 8, JCS_CMYK, 4, half_k);
    decode_ok(tmp_path("cmyk2.jpg"), &im, 8, 8);
    assert_all_pixels(&im, 100, 50, 25, 1);
    image_free(&im);
}

static void test_jpeg_rgb(void **state) {
    (void)state;
    uint8_t rgb[3] = {10, 200, 30};
    write_flat_jpeg(tmp_path("rgb.jpg"), 24, 16, JCS_RGB, 3, rgb);
    Image im;
    decode_ok(tmp_path("rgb.jpg"), &im, 24, 16);
    assert_all_pixels(&im, 10, 200, 30, 3); /* YCbCr round trip */
    image_free(&im);
}

static void test_png_palette(void **state) {
    (void)state;
    png_color pal[3] = {{255, 0, 0}, {0, 128, 0}, {1, 2, 3}};
    uint8_t trns[1] = {0}; /* entry 0 transparent: alpha dropped, colour kept */
    uint8_t rows[2 * 2] = {0, 1, 2, 0};
    PngSpec s = {2, 2, PNG_COLOR_TYPE_PALETTE, 8, rows, pal, 3, trns, 1};
    write_png(tmp_path("pal.png"), &s);
    Image im;
    decode_ok(tmp_path("pal.png"), &im, 2, 2);
    uint8_t want[12] = {255, 0, 0, 0, 128, 0, 1, 2, 3, 255, 0, 0};
    assert_memory_equal(im.rgb, want, 12);
    image_free(&im);
}

static void test_png_rgba(void **state) {
    (void)state;
    uint8_t rows[2 * 4] = {10, 20, 30, 0, 40, 50, 60, 255};
    PngSpec s = {2, 1, PNG_COLOR_TYPE_RGB_ALPHA, 8, rows, NULL, 0, NULL, 0};
    write_png(tmp_path("rgba.png"), &s);
    Image im;
    decode_ok(tmp_path("rgba.png"), &im, 2, 1);
    uint8_t want[6] = {10, 20, 30, 40, 50, 60}; /* alpha dropped, not composited */
    assert_memory_equal(im.rgb, want, 6);
    image_free(&im);
}

static void test_png_16bit_and_gray(void **state) {
    (void)state;
    /* 16-bit RGB: 0x1234 -> 18, 0xFFFF -> 255, 0x0080 -> 0 (v * 255 / 65535 rounded) */
    uint8_t rgb16[6] = {0x12, 0x34, 0xFF, 0xFF, 0x00, 0x80};
    PngSpec s = {1, 1, PNG_COLOR_TYPE_RGB, 16, rgb16, NULL, 0, NULL, 0};
    write_png(tmp_path("rgb16.png"), &s);
    Image im;
    decode_ok(tmp_path("rgb16.png"), &im, 1, 1);
    uint8_t want[3] = {18, 255, 0};
    assert_memory_equal(im.rgb, want, 3);
    image_free(&im);
    uint8_t gray16[4] = {0x80, 0x80, 0x00, 0x00}; /* 32896 -> 128, 0 -> 0 */
    s = (PngSpec){2, 1, PNG_COLOR_TYPE_GRAY, 16, gray16, NULL, 0, NULL, 0};
    write_png(tmp_path("gray16.png"), &s);
    decode_ok(tmp_path("gray16.png"), &im, 2, 1);
    uint8_t want_g[6] = {128, 128, 128, 0, 0, 0};
    assert_memory_equal(im.rgb, want_g, 6);
    image_free(&im);
    uint8_t bits[1] = {0xA0}; /* 1-bit gray: 1 0 1 0 */
    s = (PngSpec){4, 1, PNG_COLOR_TYPE_GRAY, 1, bits, NULL, 0, NULL, 0};
    write_png(tmp_path("gray1.png"), &s);
    decode_ok(tmp_path("gray1.png"), &im, 4, 1);
    uint8_t want_b[12] = {255, 255, 255, 0, 0, 0, 255, 255, 255, 0, 0, 0};
    assert_memory_equal(im.rgb, want_b, 12);
    image_free(&im);
}

/* Copies the first `keep` bytes of src to dst (keep < 0: half of it). */
static void truncate_copy(const char *src, const char *dst, long keep) {
    FILE *f = fopen(src, "rb");
    assert_non_null(f);
    char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    if (keep < 0) keep = (long)n / 2;
    assert_true((long)n > keep);
    f = fopen(dst, "wb");
    fwrite(buf, 1, (size_t)keep, f);
    fclose(f);
}

static void decode_fails(const char *name, const char *frag) {
    Image im;
    char path[4200];
    snprintf(path, sizeof path, "%s", tmp_path(name));
    CapStatus st = image_decode_file(path, &im, err, sizeof err);
    assert_int_equal(st, CAP_E_FORMAT);
    assert_null(im.rgb);
    if (!strstr(err, path)) fail_msg("the message does not name the file: %s", err);
    if (!strstr(err, frag)) fail_msg("'%s' not in '%s'", frag, err);
}

static void test_refused(void **state) {
    (void)state;
    uint8_t rgb[64 * 64 * 3];
    for (int i = 0; i < 64 * 64 * 3; i++) rgb[i] = (uint8_t)(i * 7);
    assert_int_equal(image_write_jpeg(tmp_path("full.jpg"), rgb, 64, 64, 90, err, sizeof err), CAP_OK);
    assert_int_equal(image_write_png(tmp_path("full.png"), rgb, 64, 64, NULL, 0, err, sizeof err), CAP_OK);
    char full[4200];
    snprintf(full, sizeof full, "%s", tmp_path("full.jpg"));
    truncate_copy(full, tmp_path("cut.jpg"), -1);
    decode_fails("cut.jpg", "corrupt JPEG");
    truncate_copy(full, tmp_path("cut_header.jpg"), 40);
    decode_fails("cut_header.jpg", "corrupt JPEG");
    snprintf(full, sizeof full, "%s", tmp_path("full.png"));
    truncate_copy(full, tmp_path("cut.png"), -1);
    decode_fails("cut.png", "corrupt PNG");
    write_text(tmp_path("text.jpg"), "this is not an image\n");
    decode_fails("text.jpg", "not a JPEG or PNG file");
    write_text(tmp_path("empty.png"), "");
    decode_fails("empty.png", "empty file");
    write_text(tmp_path("x.gif"), "GIF89a....");
    decode_fails("x.gif", "not a JPEG or PNG file");
    Image im;
    assert_int_equal(image_decode_file(tmp_path("missing.jpg"), &im, err, sizeof err), CAP_E_IO);
}

/* Refused by the decoders' limits, naming the file (path under tests/data/fixtures/ or not). */
static void refused_at(const char *path, CapStatus want, const char *frag1, const char *frag2) {
    Image im;
    char p[4200];
    snprintf(p, sizeof p, "%s", path);
    CapStatus st = image_decode_file(p, &im, err, sizeof err);
    assert_null(im.rgb);
    if (st != want) fail_msg("%s: status %d, not %d (%s)", p, (int)st, (int)want, st ? err : "decoded");
    if (!strstr(err, p)) fail_msg("the message does not name the file: %s", err);
    if (!strstr(err, frag1)) fail_msg("'%s' not in '%s'", frag1, err);
    if (frag2 && !strstr(err, frag2)) fail_msg("'%s' not in '%s'", frag2, err);
}

/* Headers that claim huge images: a 686-byte JPEG claiming 20000x6000 used to decode (360 MB);
 * a 69-byte PNG claiming 10000x10000 was allocated before its data ran out. */
static void test_size_limits(void **state) {
    (void)state;
    refused_at(fixture("image_20000x6000.jpg"), CAP_E_FORMAT, "20000x6000", "over the limit");
    refused_at(fixture("image_10000x10000.png"), CAP_E_FORMAT, "10000x10000", "over the limit");
    /* 617 bytes whose tEXt chunk claims 0x7fffffff bytes: libpng allocated 2 GB for it */
    refused_at(fixture("image_huge_chunk.png"), CAP_E_FORMAT, "chunk 'tEXt' at byte 33",
               "claims 2147483647 bytes");
    /* text, compressed text and ICC chunks are skipped, not refused */
    Image im;
    assert_int_equal(image_decode_file(fixture("image_text_chunks.png"), &im, err, sizeof err), CAP_OK);
    assert_int_equal(im.width, 4);
    assert_all_pixels(&im, 200, 100, 50, 0);
    image_free(&im);
}

/* Only regular files of at most 128 MiB are read: a directory, a file over the limit (sparse:
 * no disk used), a link to /dev/zero (read until memory ran out) and a FIFO (blocked the
 * reader forever) are refused at once. */
static void test_file_limits(void **state) {
    (void)state;
    refused_at(dir, CAP_E_FORMAT, "not a regular file", NULL);
    FILE *f = fopen(tmp_path("huge.jpg"), "wb");
    assert_non_null(f);
    fputs("\xFF\xD8\xFF", f);
    fclose(f);
    assert_int_equal(truncate(tmp_path("huge.jpg"), (off_t)(128 << 20) + 1), 0);
    refused_at(tmp_path("huge.jpg"), CAP_E_FORMAT, "134217729 bytes", "over the 134217728-byte limit");
    assert_int_equal(symlink("/dev/zero", tmp_path("zero.jpg")), 0);
    refused_at(tmp_path("zero.jpg"), CAP_E_FORMAT, "not a regular file", NULL);
    assert_int_equal(mkfifo(tmp_path("fifo.png"), 0600), 0);
    refused_at(tmp_path("fifo.png"), CAP_E_FORMAT, "not a regular file", NULL);
}

/* ---- resize / crop / normalize ---------------------------------------------------------------- */

/* A gray image with pixel (x, y) = f(x, y). */
static Image gray_image(int w, int h, int (*f)(int, int)) {
    Image im = {w, h, malloc((size_t)w * h * 3)};
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) memset(im.rgb + 3 * (y * w + x), f(x, y), 3);
    return im;
}

static int linear(int x, int y) { return 10 * x + 40 * y; }

static void assert_plane(const float *out, int size, const float *want) {
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < size * size; i++)
            if (fabsf(out[c * size * size + i] - want[i]) > 1e-4f)
                fail_msg("channel %d pixel %d: %g, want %g", c, i, out[c * size * size + i], want[i]);
}

static void test_crop_geometry(void **state) {
    (void)state;
    ImageCrop g;
    image_crop_geometry(6, 3, 2, &g); /* short side 3 -> 2, long int(2*6/3) = 4 */
    assert_int_equal(g.resized_w, 4);
    assert_int_equal(g.resized_h, 2);
    assert_int_equal(g.left, 1);
    assert_int_equal(g.top, 0);
    image_crop_geometry(3, 7, 2, &g); /* int(2*7/3) = int(4.67) = 4; top round(1.0) = 1 */
    assert_int_equal(g.resized_h, 4);
    assert_int_equal(g.top, 1);
    image_crop_geometry(5, 2, 2, &g); /* round(1.5) = 2 (half to even) */
    assert_int_equal(g.left, 2);
    image_crop_geometry(7, 2, 2, &g); /* round(2.5) = 2 */
    assert_int_equal(g.left, 2);
    image_crop_geometry(9, 2, 2, &g); /* round(3.5) = 4 */
    assert_int_equal(g.left, 4);
}

static void test_resize_crop(void **state) {
    (void)state;
    float out[3 * 3 * 3];
    /* 6x3 -> resized 4x2 -> crop x 1..2. Scales 1.5 both ways: resized x=1 samples source
     * x = 1.5*1.5-0.5 = 1.75, x=2 -> 3.25; y=0 -> 0.25, y=1 -> 1.75. f is linear, so the
     * bilinear value is f(src): 10*1.75+40*0.25 = 27.5 ... */
    Image im = gray_image(6, 3, linear);
    assert_int_equal(image_resize_crop(&im, 2, out), 0);
    float want[4] = {27.5f, 42.5f, 87.5f, 102.5f};
    assert_plane(out, 2, want);
    image_free(&im);
    /* 4x4 -> 2x2: src = 2r + 0.5: each output is the mean of a 2x2 block */
    im = gray_image(4, 4, linear);
    assert_int_equal(image_resize_crop(&im, 2, out), 0);
    float want_down[4] = {25, 45, 105, 125};
    assert_plane(out, 2, want_down);
    image_free(&im);
    /* 2x2 [[0,90],[30,120]] -> 3x3: src = (r+0.5)*2/3-0.5 = 0 (clamped), 0.5, 1 (i1 clamped) */
    Image up = {2, 2, malloc(12)};
    uint8_t px[4] = {0, 90, 30, 120};
    for (int i = 0; i < 4; i++) memset(up.rgb + 3 * i, px[i], 3);
    assert_int_equal(image_resize_crop(&up, 3, out), 0);
    float want_up[9] = {0, 45, 90, 15, 60, 105, 30, 75, 120};
    assert_plane(out, 3, want_up);
    image_free(&up);
}

static void test_normalize_and_pipeline(void **state) {
    (void)state;
    uint8_t rgb[4 * 4 * 3];
    for (int i = 0; i < 16; i++) rgb[3 * i] = 255, rgb[3 * i + 1] = 0, rgb[3 * i + 2] = 128;
    assert_int_equal(image_write_png(tmp_path("flat.png"), rgb, 4, 4, NULL, 0, err, sizeof err), CAP_OK);
    float out[3 * 2 * 2];
    assert_int_equal(image_load_preprocessed(tmp_path("flat.png"), 2, out, err, sizeof err), CAP_OK);
    float r = (1.0f - 0.485f) / 0.229f, g = (0.0f - 0.456f) / 0.224f, b = (128 / 255.0f - 0.406f) / 0.225f;
    for (int i = 0; i < 4; i++) {
        assert_float_equal(out[i], r, 1e-5);
        assert_float_equal(out[4 + i], g, 1e-5);
        assert_float_equal(out[8 + i], b, 1e-5);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jpeg_gray),      cmocka_unit_test(test_jpeg_cmyk),
        cmocka_unit_test(test_jpeg_rgb),       cmocka_unit_test(test_png_palette),
        cmocka_unit_test(test_png_rgba),       cmocka_unit_test(test_png_16bit_and_gray),
        cmocka_unit_test(test_refused),        cmocka_unit_test(test_crop_geometry),
        cmocka_unit_test(test_resize_crop),    cmocka_unit_test(test_normalize_and_pipeline),
        cmocka_unit_test(test_size_limits),    cmocka_unit_test(test_file_limits),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
