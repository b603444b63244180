/* fuzz_flickr.c — the Flickr30k readers (runtime/data/data_flickr.c, data_load_flickr30k): the
 * token file and the Kaggle CSV. The reader picks one by the first line ("image,caption"
 * means CSV), so one target covers both; the corpus has seeds of each. Through a scratch
 * file, as the reader only takes a path. */
#include "fuzz_dataset.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write_file(data, size, ".txt");
    Dataset *ds = NULL;
    char err[1024] = "";
    CapStatus st = data_load_flickr30k(path, "images", DATA_SPLIT_HASH, &ds, err, sizeof err);
    fuzz_check_dataset(st, ds, err);
    return 0;
}
