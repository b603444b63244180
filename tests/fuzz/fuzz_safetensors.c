/* fuzz_safetensors.c — the safetensors reader (runtime/core/safetensors.c, st_parse: the same
 * validation st_read_file does after reading the file). Whatever st_parse accepts must be
 * safe to use: every tensor's bytes are read back (st_to_f64) and every name and metadata
 * key looked up, so an accepted header whose offsets point outside the buffer shows up as an
 * ASan report. */
#include "fuzz_util.h"

#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *buf = malloc(size ? size : 1); /* st_parse takes ownership */
    if (!buf) abort();
    if (size) memcpy(buf, data, size);
    StFile f;
    char err[512] = "";
    if (st_parse(buf, size, "fuzz.safetensors", &f, err, sizeof err) != 0) {
        FUZZ_CHECK(err[0] != 0, "st_parse failed without a message");
        return 0;
    }
    for (int i = 0; i < f.n; i++) {
        const StTensor *t = &f.tensors[i];
        FUZZ_CHECK(t->offset <= f.size && t->nbytes <= f.size - t->offset,
                   "tensor '%s' outside the file", t->name);
        FUZZ_CHECK(st_find(&f, t->name) != NULL, "st_find misses '%s'", t->name);
        /* numel fits in the data (checked above through nbytes), so this is bounded by the
         * input size; an empty tensor still gets a valid pointer. */
        double *vals = malloc(((size_t)t->numel + 1) * sizeof *vals);
        if (!vals) abort();
        st_to_f64(t, vals);
        free(vals);
    }
    for (int i = 0; i < f.n_meta; i++)
        FUZZ_CHECK(st_metadata(&f, f.meta_keys[i]) != NULL, "st_metadata misses '%s'",
                   f.meta_keys[i]);
    st_free(&f);
    return 0;
}
