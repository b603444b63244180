/* autodiff.c — reverse-mode autodiff (being written). */
#include <stdio.h>

#include "passes.h"

int autodiff_append(Function *f, Value *loss, Value ***param_grads, Diag *d) {
    (void)f;
    (void)loss;
    *param_grads = NULL;
    snprintf(d->msg, sizeof d->msg, "autodiff: not implemented yet");
    d->loc = SRCLOC_NONE;
    return -1;
}
