/* make_image_seeds.c — writes the image seeds of tests/fuzz/corpus/jpeg and corpus/png: one
 * tiny image of each colour space / colour type and bit depth that runtime/data/image.c decodes,
 * plus broken ones (truncated, a bad CRC, the oversized headers of issue 16). Run once by
 * hand; the output is committed (the fuzzers never need this program):
 *   cc -std=c11 -Wall -Wextra make_image_seeds.c -o /tmp/mis $(pkg-config --cflags --libs libjpeg libpng)
 *   /tmp/mis tests/fuzz/corpus
 */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <png.h>

static const char *out_dir;

static void save(const char *sub, const char *name, const uint8_t *b, size_t n) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s/%s", out_dir, sub, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(b, 1, n, f) != n || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

/* A pattern so that the encoders have something other than flat blocks to code. */
static uint8_t sample(int x, int y, int c) { return (uint8_t)(x * 37 + y * 91 + c * 53); }

typedef struct JpegSpec {
    const char *name;
    int w, h, components;
    J_COLOR_SPACE in, jpeg; /* input colour space, the one stored in the file */
    int progressive, restart, quality;
} JpegSpec;

static uint8_t *jpeg_bytes(const JpegSpec *s, unsigned long *n) {
    struct jpeg_compress_struct ci;
    struct jpeg_error_mgr jerr;
    ci.err = jpeg_std_error(&jerr);
    jpeg_create_compress(&ci);
    unsigned char *buf = NULL;
    jpeg_mem_dest(&ci, &buf, n);
    ci.image_width = (JDIMENSION)s->w;
    ci.image_height = (JDIMENSION)s->h;
    ci.input_components = s->components;
    ci.in_color_space = s->in;
    jpeg_set_defaults(&ci);
    jpeg_set_colorspace(&ci, s->jpeg); /* CMYK and YCCK get an Adobe marker */
    jpeg_set_quality(&ci, s->quality, TRUE);
    if (s->progressive) jpeg_simple_progression(&ci);
    ci.restart_interval = (unsigned)s->restart;
    jpeg_start_compress(&ci, TRUE);
    uint8_t *row = malloc((size_t)s->w * (size_t)s->components);
    while (ci.next_scanline < ci.image_height) {
        for (int x = 0; x < s->w; x++)
            for (int c = 0; c < s->components; c++)
                row[x * s->components + c] = sample(x, (int)ci.next_scanline, c);
        JSAMPROW r = row;
        jpeg_write_scanlines(&ci, &r, 1);
    }
    jpeg_finish_compress(&ci);
    jpeg_destroy_compress(&ci);
    free(row);
    return buf;
}

typedef struct PngSpec {
    const char *name;
    int w, h, color_type, depth, interlace, trns;
} PngSpec;

typedef struct Mem {
    uint8_t *b;
    size_t n, cap;
} Mem;

static void mem_write(png_structp png, png_bytep data, png_size_t len) {
    Mem *m = png_get_io_ptr(png);
    if (m->n + len > m->cap) {
        m->cap = (m->n + len) * 2;
        m->b = realloc(m->b, m->cap);
    }
    memcpy(m->b + m->n, data, len);
    m->n += len;
}

static void mem_flush(png_structp png) { (void)png; }

static Mem png_bytes(const PngSpec *s) {
    Mem m = {0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    png_set_write_fn(png, &m, mem_write, mem_flush);
    png_set_IHDR(png, info, (png_uint_32)s->w, (png_uint_32)s->h, s->depth, s->color_type,
                 s->interlace, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (s->color_type == PNG_COLOR_TYPE_PALETTE) {
        png_color pal[16];
        for (int i = 0; i < 16; i++) pal[i] = (png_color){sample(i, 0, 0), sample(i, 1, 1), sample(i, 2, 2)};
        png_set_PLTE(png, info, pal, 1 << (s->depth < 4 ? s->depth : 4));
        if (s->trns) {
            png_byte alpha[2] = {0, 128};
            png_set_tRNS(png, info, alpha, 2, NULL);
        }
    }
    png_write_info(png, info);
    if (s->depth < 8) png_set_packing(png);
    if (s->depth == 16) png_set_swap(png); /* rows below are written little-endian */
    int channels = png_get_channels(png, info);
    size_t stride = (size_t)s->w * (size_t)channels * (s->depth == 16 ? 2 : 1);
    uint8_t *rows = malloc(stride * (size_t)s->h);
    png_bytep *ptrs = malloc(sizeof *ptrs * (size_t)s->h);
    int mask = s->depth < 8 ? (1 << s->depth) - 1 : 255;
    for (int y = 0; y < s->h; y++) {
        ptrs[y] = rows + stride * (size_t)y;
        for (size_t i = 0; i < stride; i++) ptrs[y][i] = (uint8_t)(sample((int)i, y, 0) & mask);
    }
    png_write_image(png, ptrs);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    free(rows);
    free(ptrs);
    return m;
}

/* PNG chunks are big-endian. */
static void put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
        return 2;
    }
    out_dir = argv[1];
    static const JpegSpec jpegs[] = {
        {"gray_8x8.jpg", 8, 8, 1, JCS_GRAYSCALE, JCS_GRAYSCALE, 0, 0, 75},
        {"rgb_16x8.jpg", 16, 8, 3, JCS_RGB, JCS_YCbCr, 0, 0, 50},
        {"rgb_odd_17x9.jpg", 17, 9, 3, JCS_RGB, JCS_YCbCr, 0, 1, 90},
        {"rgb_stored_rgb_8x8.jpg", 8, 8, 3, JCS_RGB, JCS_RGB, 0, 0, 75},
        {"progressive_8x16.jpg", 8, 16, 3, JCS_RGB, JCS_YCbCr, 1, 0, 75},
        {"cmyk_adobe_8x8.jpg", 8, 8, 4, JCS_CMYK, JCS_CMYK, 0, 0, 75},
        {"ycck_8x8.jpg", 8, 8, 4, JCS_CMYK, JCS_YCCK, 0, 0, 75},
    };
    unsigned long big_n = 0;
    uint8_t *rgb = NULL;
    for (size_t i = 0; i < sizeof jpegs / sizeof *jpegs; i++) {
        unsigned long n = 0;
        uint8_t *b = jpeg_bytes(&jpegs[i], &n);
        save("jpeg", jpegs[i].name, b, n);
        if (i == 1) {
            rgb = b;
            big_n = n;
        } else free(b);
    }
    /* broken: cut in half (premature end), and a header that claims 20000 x 6000 over 16x8
     * data (issue 16: decoded at 378 MB); SOF0 holds height then width after its length and
     * precision bytes. */
    save("jpeg", "bad_truncated.jpg", rgb, big_n / 2);
    for (unsigned long i = 2; i + 9 < big_n; i++)
        if (rgb[i] == 0xFF && rgb[i + 1] == 0xC0) {
            uint8_t *h = malloc(big_n);
            memcpy(h, rgb, big_n);
            h[i + 5] = 6000 >> 8, h[i + 6] = 6000 & 255, h[i + 7] = 20000 >> 8, h[i + 8] = 20000 & 255;
            save("jpeg", "issue16_huge_header.jpg", h, big_n);
            free(h);
            break;
        }
    free(rgb);

    static const PngSpec pngs[] = {
        {"gray1_9x5.png", 9, 5, PNG_COLOR_TYPE_GRAY, 1, PNG_INTERLACE_NONE, 0},
        {"gray4_3x3.png", 3, 3, PNG_COLOR_TYPE_GRAY, 4, PNG_INTERLACE_NONE, 0},
        {"gray16_4x4.png", 4, 4, PNG_COLOR_TYPE_GRAY, 16, PNG_INTERLACE_NONE, 0},
        {"gray_alpha8_4x2.png", 4, 2, PNG_COLOR_TYPE_GRAY_ALPHA, 8, PNG_INTERLACE_NONE, 0},
        {"rgb8_5x4.png", 5, 4, PNG_COLOR_TYPE_RGB, 8, PNG_INTERLACE_NONE, 0},
        {"rgba16_3x2.png", 3, 2, PNG_COLOR_TYPE_RGB_ALPHA, 16, PNG_INTERLACE_NONE, 0},
        {"palette2_6x3.png", 6, 3, PNG_COLOR_TYPE_PALETTE, 2, PNG_INTERLACE_NONE, 0},
        {"palette4_trns_4x4.png", 4, 4, PNG_COLOR_TYPE_PALETTE, 4, PNG_INTERLACE_NONE, 1},
        {"interlaced_rgb8_9x9.png", 9, 9, PNG_COLOR_TYPE_RGB, 8, PNG_INTERLACE_ADAM7, 0},
    };
    Mem keep = {0};
    for (size_t i = 0; i < sizeof pngs / sizeof *pngs; i++) {
        Mem m = png_bytes(&pngs[i]);
        save("png", pngs[i].name, m.b, m.n);
        if (i == 4) keep = m;
        else free(m.b);
    }
    /* broken: truncated inside IDAT; a bad IHDR CRC; and (issue 16) an ancillary chunk with
     * the length 0x7fffffff right after IHDR (8 + 25 bytes in), which made libpng allocate
     * 2 GB. */
    save("png", "bad_truncated.png", keep.b, keep.n - 20);
    uint8_t *b = malloc(keep.n + 12);
    memcpy(b, keep.b, keep.n);
    b[8 + 8 + 13] ^= 0x55;
    save("png", "bad_ihdr_crc.png", b, keep.n);
    memcpy(b, keep.b, 33);
    put32(b + 33, 0x7fffffff);
    memcpy(b + 37, "tEXt", 4);
    memcpy(b + 41, keep.b + 33, keep.n - 33);
    save("png", "issue16_huge_chunk.png", b, keep.n + 8);
    free(b);
    free(keep.b);
    return 0;
}
