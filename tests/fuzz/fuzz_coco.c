/* fuzz_coco.c — the COCO captions JSON reader (runtime/data/data_json.c, data_load_coco). It
 * only reads from a path, so the input goes through a scratch file. */
#include "fuzz_dataset.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write_file(data, size, ".json");
    Dataset *ds = NULL;
    char err[1024] = "";
    CapStatus st = data_load_coco(path, "images", DATA_SPLIT_HASH, &ds, err, sizeof err);
    fuzz_check_dataset(st, ds, err);
    return 0;
}
