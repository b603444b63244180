/* fuzz_jpeg.c — the JPEG decoder (runtime/data/image.c through image_decode_memory), seeded with
 * JPEGs of each colour space the decoder handles. */
#include "fuzz_image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_image(data, size); }
