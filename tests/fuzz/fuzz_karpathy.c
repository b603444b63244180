/* fuzz_karpathy.c — the Karpathy split JSON reader (runtime/data/data_json.c,
 * data_load_karpathy), through a scratch file (it only reads from a path). */
#include "fuzz_dataset.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write_file(data, size, ".json");
    Dataset *ds = NULL;
    char err[1024] = "";
    CapStatus st = data_load_karpathy(path, "images", &ds, err, sizeof err);
    fuzz_check_dataset(st, ds, err);
    return 0;
}
