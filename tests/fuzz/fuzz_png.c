/* fuzz_png.c — the PNG decoder (runtime/data/image.c through image_decode_memory), seeded with
 * PNGs of each colour type and bit depth the decoder handles. */
#include "fuzz_image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_image(data, size); }
