/* placeholder until the gradient rules land: every rule reports "not implemented" */
#include <stdio.h>
#include "op_impl.h"
#define OP(ENUM, name, min_in, max_in, fusion, doc)                                        \
    int grad_##name(Function *f, const Op *op, Value *dy, const bool *need, Value **grads, \
                    char *err, size_t err_size) {                                          \
        (void)f; (void)op; (void)dy; (void)need; (void)grads;                              \
        snprintf(err, err_size, "%s: gradient rule not implemented", #name);              \
        return -1;                                                                         \
    }
#include "ops.def"
#undef OP
