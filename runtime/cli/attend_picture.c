/* attend_picture.c — the panels of `cap attend` (attend_picture.h): heat map, blending, the
 * word band, and the 5x7 font the words are drawn with. */
#include "attend_picture.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cap_internal.h" /* cap_fail */

/* ---- the font ------------------------------------------------------------------------------- */

enum { GLYPH_W = 5, GLYPH_H = 7, ADVANCE = 6 };

/* Each glyph: 7 rows of 5 pixels, '#' drawn, top row first. Small letters are rows 2-6, tall
 * ones 0-6; there is no row below, so g, j, p, q, y end on row 6 with the rest (their bowls
 * are shorter). */
static const struct Glyph {
    char ch;
    const char *rows[GLYPH_H];
} FONT[] = {
    {'a', {".....", ".....", ".###.", "....#", ".####", "#...#", ".####"}},
    {'b', {"#....", "#....", "####.", "#...#", "#...#", "#...#", "####."}},
    {'c', {".....", ".....", ".####", "#....", "#....", "#....", ".####"}},
    {'d', {"....#", "....#", ".####", "#...#", "#...#", "#...#", ".####"}},
    {'e', {".....", ".....", ".###.", "#...#", "#####", "#....", ".####"}},
    {'f', {"..##.", ".#...", "####.", ".#...", ".#...", ".#...", ".#..."}},
    {'g', {".....", ".....", ".####", "#...#", ".####", "....#", ".###."}},
    {'h', {"#....", "#....", "####.", "#...#", "#...#", "#...#", "#...#"}},
    {'i', {"..#..", ".....", ".##..", "..#..", "..#..", "..#..", ".###."}},
    {'j', {"...#.", ".....", "..##.", "...#.", "...#.", "#..#.", ".##.."}},
    {'k', {"#....", "#....", "#..#.", "#.#..", "##...", "#.#..", "#..#."}},
    {'l', {".##..", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."}},
    {'m', {".....", ".....", "##.#.", "#.#.#", "#.#.#", "#.#.#", "#.#.#"}},
    {'n', {".....", ".....", "####.", "#...#", "#...#", "#...#", "#...#"}},
    {'o', {".....", ".....", ".###.", "#...#", "#...#", "#...#", ".###."}},
    {'p', {".....", ".....", "####.", "#...#", "####.", "#....", "#...."}},
    {'q', {".....", ".....", ".####", "#...#", ".####", "....#", "....#"}},
    {'r', {".....", ".....", "#.##.", "##..#", "#....", "#....", "#...."}},
    {'s', {".....", ".....", ".####", "#....", ".###.", "....#", "####."}},
    {'t', {".#...", ".#...", "####.", ".#...", ".#...", ".#..#", "..##."}},
    {'u', {".....", ".....", "#...#", "#...#", "#...#", "#..##", ".##.#"}},
    {'v', {".....", ".....", "#...#", "#...#", "#...#", ".#.#.", "..#.."}},
    {'w', {".....", ".....", "#...#", "#...#", "#.#.#", "#.#.#", ".#.#."}},
    {'x', {".....", ".....", "#...#", ".#.#.", "..#..", ".#.#.", "#...#"}},
    {'y', {".....", ".....", "#...#", "#...#", ".####", "....#", ".###."}},
    {'z', {".....", ".....", "#####", "...#.", "..#..", ".#...", "#####"}},
    {'0', {".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."}},
    {'1', {"..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."}},
    {'2', {".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"}},
    {'3', {"####.", "....#", "....#", ".###.", "....#", "....#", "####."}},
    {'4', {"...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."}},
    {'5', {"#####", "#....", "####.", "....#", "....#", "#...#", ".###."}},
    {'6', {"..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."}},
    {'7', {"#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."}},
    {'8', {".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."}},
    {'9', {".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."}},
    {'\'', {"..#..", "..#..", ".#...", ".....", ".....", ".....", "....."}},
    {'-', {".....", ".....", ".....", "#####", ".....", ".....", "....."}},
    {'.', {".....", ".....", ".....", ".....", ".....", ".##..", ".##.."}},
    {',', {".....", ".....", ".....", ".....", ".##..", "..#..", ".#..."}},
    {'<', {"...#.", "..#..", ".#...", "#....", ".#...", "..#..", "...#."}},
    {'>', {".#...", "..#..", "...#.", "....#", "...#.", "..#..", ".#..."}},
    {'?', {".###.", "#...#", "....#", "...#.", "..#..", ".....", "..#.."}},
    {'!', {"..#..", "..#..", "..#..", "..#..", "..#..", ".....", "..#.."}},
    {'_', {".....", ".....", ".....", ".....", ".....", ".....", "#####"}},
    {'/', {"....#", "...#.", "...#.", "..#..", ".#...", ".#...", "#...."}},
    {':', {".....", ".##..", ".##..", ".....", ".##..", ".##..", "....."}},
    {';', {".....", ".##..", ".##..", ".....", ".##..", "..#..", ".#..."}},
    {'"', {".#.#.", ".#.#.", ".....", ".....", ".....", ".....", "....."}},
    {'(', {"...#.", "..#..", ".#...", ".#...", ".#...", "..#..", "...#."}},
    {')', {".#...", "..#..", "...#.", "...#.", "...#.", "..#..", ".#..."}},
    {'&', {".##..", "#..#.", "#.#..", ".#...", "#.#.#", "#..#.", ".##.#"}},
};

static const char *const BOX[GLYPH_H] = {"#####", "#...#", "#...#", "#...#", "#...#", "#...#",
                                         "#####"};
static const char *const SPACE[GLYPH_H] = {".....", ".....", ".....", ".....", ".....", ".....",
                                           "....."};

static const char *const *glyph(unsigned char c) {
    if (c == ' ') return SPACE;
    if (c >= 'A' && c <= 'Z') c = (unsigned char)(c - 'A' + 'a');
    for (size_t i = 0; i < sizeof FONT / sizeof *FONT; i++)
        if ((unsigned char)FONT[i].ch == c) return FONT[i].rows;
    return BOX;
}

/* Characters drawn for s: one per byte, UTF-8 continuation bytes skipped (a box for the
 * character). */
static int text_length(const char *s) {
    int n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) n += (*p & 0xC0) != 0x80;
    return n;
}

/* ---- pixels ---------------------------------------------------------------------------------- */

typedef struct Canvas {
    uint8_t *rgb;
    int width, height;
} Canvas;

static uint8_t *pixel(const Canvas *c, int x, int y) {
    return c->rgb + ((size_t)y * (size_t)c->width + (size_t)x) * 3;
}

static uint8_t clamp_byte(float v) {
    return (uint8_t)(!(v > 0) ? 0 : v >= 255 ? 255 : lrintf(v));
}

/* v clamped to [0, 1], NaN as 0 (a NaN map must not index past STOPS). */
static float unit(float v) { return !(v > 0) ? 0 : v >= 1 ? 1 : v; }

/* The heat colour of v in [0, 1]: piecewise linear through six colours. */
static void heat(float v, float rgb[3]) {
    static const float STOPS[6][3] = {{0, 0, 140},     {0, 60, 255},  {0, 220, 255},
                                      {120, 255, 100}, {255, 200, 0}, {230, 20, 0}};
    float x = unit(v) * 5;
    int i = x >= 5 ? 4 : (int)x;
    float f = x - (float)i;
    for (int k = 0; k < 3; k++) rgb[k] = STOPS[i][k] + f * (STOPS[i + 1][k] - STOPS[i][k]);
}

/* Bilinear sample of the G x G map at grid coordinates (gx, gy), cell centres at integers,
 * clamped to the grid. */
static float sample(const float *map, int g, float gx, float gy) {
    gx = gx < 0 ? 0 : gx > (float)(g - 1) ? (float)(g - 1) : gx;
    gy = gy < 0 ? 0 : gy > (float)(g - 1) ? (float)(g - 1) : gy;
    int x0 = (int)gx, y0 = (int)gy;
    int x1 = x0 + 1 < g ? x0 + 1 : x0, y1 = y0 + 1 < g ? y0 + 1 : y0;
    float fx = gx - (float)x0, fy = gy - (float)y0;
    float top = map[y0 * g + x0] * (1 - fx) + map[y0 * g + x1] * fx;
    float bottom = map[y1 * g + x0] * (1 - fx) + map[y1 * g + x1] * fx;
    return top * (1 - fy) + bottom * fy;
}

/* Where an image pixel's centre falls on the model's grid: the position in the resized image,
 * less the crop's origin, in cells. Returns 0 when it is outside the crop. */
typedef struct GridMap {
    float sx, sy;      /* resized pixels per image pixel */
    float left, top;   /* the crop's origin in resized pixels */
    float cells;       /* G / S: cells per resized pixel */
    float size;        /* S */
} GridMap;

static int to_grid(const GridMap *m, float x, float y, float *gx, float *gy) {
    float u = x * m->sx - m->left, v = y * m->sy - m->top;
    if (u < 0 || v < 0 || u >= m->size || v >= m->size) return 0;
    *gx = u * m->cells - 0.5f;
    *gy = v * m->cells - 0.5f;
    return 1;
}

/* ---- one panel ----------------------------------------------------------------------------- */

/* Panel k: w x h pixels at (ox, oy); image pixel centres and the grid are sampled at the
 * panel pixel's centre, (x + 0.5) / scale in image pixels (nearest image pixel). */
static void draw_heat(const AttendPicture *p, const GridMap *gm, const float *map, Canvas *c,
                      int ox, int oy, int w, int h) {
    const Image *im = p->image;
    int g = p->grid;
    float top = 0;
    for (int i = 0; i < g * g; i++) top = map[i] > top ? map[i] : top;
    float scale = top > 0 ? 1 / top : 0;
    float to_x = (float)im->width / (float)w, to_y = (float)im->height / (float)h;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            float fx = ((float)x + 0.5f) * to_x, fy = ((float)y + 0.5f) * to_y;
            int sx = (int)fx < im->width ? (int)fx : im->width - 1;
            int sy = (int)fy < im->height ? (int)fy : im->height - 1;
            const uint8_t *src = im->rgb + ((size_t)sy * (size_t)im->width + (size_t)sx) * 3;
            uint8_t *dst = pixel(c, ox + x, oy + y);
            float gx, gy;
            if (!to_grid(gm, fx, fy, &gx, &gy)) {
                for (int k = 0; k < 3; k++) dst[k] = (uint8_t)(src[k] / 2);
                continue;
            }
            float v = sample(map, g, gx, gy) * scale, col[3];
            heat(v, col);
            float a = 0.3f + 0.4f * unit(v);
            for (int k = 0; k < 3; k++) dst[k] = clamp_byte((1 - a) * (float)src[k] + a * col[k]);
        }
}

/* The word in white on a darkened band across the top of the panel at (ox, oy), w x h. */
static void draw_word(Canvas *c, int ox, int oy, int w, int h, const char *word) {
    int len = text_length(word), side = w < h ? w : h;
    int s = side / (GLYPH_H * 14) > 1 ? side / (GLYPH_H * 14) : 1;
    while (s > 1 && (len * ADVANCE + 3) * s > w) s--;
    int band = (GLYPH_H + 4) * s;
    if (band > h) band = h;
    for (int y = 0; y < band; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *px = pixel(c, ox + x, oy + y);
            for (int k = 0; k < 3; k++) px[k] = (uint8_t)(px[k] * 3 / 10);
        }
    int pen = 2 * s;
    for (const unsigned char *q = (const unsigned char *)word; *q; q++) {
        if ((*q & 0xC0) == 0x80) continue;
        const char *const *rows = glyph(*q >= 0x80 ? 0 : *q);
        for (int gy = 0; gy < GLYPH_H; gy++)
            for (int gx = 0; gx < GLYPH_W; gx++) {
                if (rows[gy][gx] != '#') continue;
                for (int dy = 0; dy < s; dy++)
                    for (int dx = 0; dx < s; dx++) {
                        int x = pen + gx * s + dx, y = 2 * s + gy * s + dy;
                        if (x < w && y < band) memset(pixel(c, ox + x, oy + y), 255, 3);
                    }
            }
        pen += ADVANCE * s;
        if (pen >= w) break;
    }
}

/* ---- the picture ------------------------------------------------------------------------- */

int attend_picture_size(const AttendPicture *p, int *panel_w, int *panel_h, int *width,
                        int *height) {
    int cols = p->cols < p->n ? p->cols : p->n, rows = (p->n + cols - 1) / cols;
    double w = p->image->width, h = p->image->height, s = 1;
    double fits[] = {ATTEND_MAX_PANEL / (w > h ? w : h), IMAGE_MAX_SIDE / (cols * w),
                     IMAGE_MAX_SIDE / (rows * h), sqrt(IMAGE_MAX_PIXELS / (cols * rows * w * h))};
    for (size_t i = 0; i < sizeof fits / sizeof *fits; i++) s = fits[i] < s ? fits[i] : s;
    *panel_w = s < 1 ? (int)(w * s) : (int)w;
    *panel_h = s < 1 ? (int)(h * s) : (int)h;
    if (*panel_w < 1) *panel_w = 1;
    if (*panel_h < 1) *panel_h = 1;
    *width = cols * *panel_w;
    *height = rows * *panel_h;
    return s < 1;
}

CapStatus attend_picture_draw(const AttendPicture *p, Image *out, char *err, size_t err_size) {
    memset(out, 0, sizeof *out);
    int pw, ph, width, height;
    attend_picture_size(p, &pw, &ph, &width, &height);
    Canvas c = {malloc((size_t)width * (size_t)height * 3), width, height};
    if (!c.rgb)
        return cap_fail(err, err_size, CAP_E_NOMEM, "out of memory for a %dx%d picture", width,
                        height);
    memset(c.rgb, 32, (size_t)width * (size_t)height * 3); /* cells without a panel */
    ImageCrop crop;
    image_crop_geometry(p->image->width, p->image->height, p->size, &crop);
    GridMap gm = {(float)crop.resized_w / (float)p->image->width,
                  (float)crop.resized_h / (float)p->image->height, (float)crop.left,
                  (float)crop.top, (float)p->grid / (float)p->size, (float)p->size};
    int cols = width / pw;
    for (int k = 0; k < p->n; k++) {
        int ox = (k % cols) * pw, oy = (k / cols) * ph;
        draw_heat(p, &gm, p->maps + (size_t)k * (size_t)p->grid * (size_t)p->grid, &c, ox, oy,
                  pw, ph);
        draw_word(&c, ox, oy, pw, ph, p->words[k]);
    }
    *out = (Image){.width = width, .height = height, .rgb = c.rgb};
    return CAP_OK;
}
