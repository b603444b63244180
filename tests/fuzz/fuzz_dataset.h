/* fuzz_dataset.h — what every dataset target checks about a Dataset that loaded: the
 * invariants data.h promises (at least one image, every image with >= 1 caption, caption
 * ranges inside captions[], split counts that add up), then the split lists are built and
 * everything freed (leaks are findings). */
#ifndef CAPC_FUZZ_DATASET_H
#define CAPC_FUZZ_DATASET_H

#include "fuzz_util.h"

#include "data.h"

static inline void fuzz_check_dataset(CapStatus st, Dataset *ds, const char *err) {
    if (st != CAP_OK) {
        FUZZ_CHECK(ds == NULL, "a failed load returned a dataset");
        FUZZ_CHECK(err[0] != 0, "load failed (status %d) without a message", (int)st);
        return;
    }
    FUZZ_CHECK(ds && ds->n_images > 0, "loaded a dataset without images");
    int32_t per_split[DATA_N_SPLITS] = {0};
    for (int32_t i = 0; i < ds->n_images; i++) {
        const DataImage *im = &ds->images[i];
        FUZZ_CHECK(im->path != NULL, "image %d without a path", (int)i);
        FUZZ_CHECK(im->n_captions >= 1 && im->first_caption >= 0 &&
                       im->first_caption <= ds->n_captions - im->n_captions,
                   "image %d: captions [%d, +%d) outside [0, %d)", (int)i,
                   (int)im->first_caption, (int)im->n_captions, (int)ds->n_captions);
        FUZZ_CHECK((int)im->split >= 0 && im->split < DATA_N_SPLITS, "image %d: split %d",
                   (int)i, (int)im->split);
        per_split[im->split]++;
        for (int32_t c = 0; c < im->n_captions; c++)
            FUZZ_CHECK(ds->captions[im->first_caption + c] != NULL, "NULL caption");
    }
    for (int s = 0; s < DATA_N_SPLITS; s++) {
        FUZZ_CHECK(per_split[s] == ds->n_per_split[s], "split %d: %d images, n_per_split %d",
                   s, (int)per_split[s], (int)ds->n_per_split[s]);
        int32_t n = 0;
        int32_t *idx = data_split_images(ds, (DataSplit)s, &n);
        FUZZ_CHECK(n == per_split[s], "data_split_images(%d) gave %d", s, (int)n);
        free(idx);
    }
    data_free(ds);
}

#endif
