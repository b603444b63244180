/* lower_conv.c — placeholder until this family's lowering lands. */
#include "lower.h"

int lower_conv(const Op *op, KernelDesc *kd, KernelDesc **cuda, char *err, size_t n) {
    snprintf(err, n, "kernel lowering not written yet");
    return -1;
}
