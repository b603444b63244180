/* attend_picture.h — the picture `cap attend` writes (docs/cli.md, "cap attend"): one panel
 * per word, each the input image at its own size (scaled down only when larger than
 * ATTEND_MAX_PANEL, below) with that word's attention map over it and the word written in a
 * band at the top; panels left to right in rows of `cols`.
 *
 * A map is over the G x G grid of the model's input, the S x S center crop of the image
 * resized so that its short side is S (image.h). It is scaled so that its largest cell is 1,
 * upsampled bilinearly to the image's pixels (cell centres at the grid's centres, clamped at
 * the edges), coloured from dark blue (0) through cyan, green and yellow to red (1), and
 * blended over the image with opacity 0.3 + 0.4 v, so where the decoder looked stands out
 * and the rest stays visible. Pixels outside the crop (the model never saw them) are shown at
 * half brightness without colour. Words are drawn with a 5x7 bitmap font of this file
 * (a-z, 0-9, ' - . , < > ? ! _ / : ; " ( ) &; capitals as small letters; anything else as a
 * box),
 * scaled by an integer so the letters are about 1/14 of the panel's smaller side.
 *
 * Ownership: out->rgb is the caller's (image_free).
 */
#ifndef ATTEND_PICTURE_H
#define ATTEND_PICTURE_H

#include "cap.h"
#include "image.h"

typedef struct AttendPicture {
    const Image *image;      /* the input image, decoded at its own size */
    int size;                /* S: the model's input side */
    int grid;                /* G */
    const float *maps;       /* n x G*G, row-major over the grid */
    const char *const *words;/* n words */
    int n;                   /* panels, >= 1 */
    int cols;                /* panels per row, >= 1 (fewer when n is smaller) */
} AttendPicture;

/* Panels are the image's size unless that makes a panel longer than this on a side, or the
 * picture more than IMAGE_MAX_PIXELS or IMAGE_MAX_SIDE on a side: then every panel is the
 * image scaled down (one factor for both sides) until all hold. */
enum { ATTEND_MAX_PANEL = 1024 };

/* The panel's and the picture's size (cols' x rows' panels). Returns 1 when the panels are
 * the image scaled down, else 0. */
int attend_picture_size(const AttendPicture *p, int *panel_w, int *panel_h, int *width,
                        int *height);

/* Draws the picture into out (allocated). CAP_E_NOMEM. */
CapStatus attend_picture_draw(const AttendPicture *p, Image *out, char *err, size_t err_size);

#endif
