/* placeholder until the shape rules land: every rule reports "not implemented" */
#include <stdio.h>
#include "op_impl.h"
#define OP(ENUM, name, min_in, max_in, fusion, doc)                                        \
    int infer_##name(const Op *op, DType *out_dtype, Shape *out_shape, char *err,          \
                     size_t err_size) {                                                    \
        (void)op; (void)out_dtype; (void)out_shape;                                        \
        snprintf(err, err_size, "%s: shape rule not implemented", #name);                 \
        return -1;                                                                         \
    }
#include "ops.def"
#undef OP
