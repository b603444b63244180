/* placeholder until the reference evaluators land: every rule reports "not implemented" */
#include <stdio.h>
#include "op_impl.h"
#define OP(ENUM, name, min_in, max_in, fusion, doc)                                        \
    int ref_##name(const Op *op, const RefTensor *const *ins, RefTensor *out, char *err,        \
                     size_t err_size) {                                                    \
        (void)op; (void)ins; (void)out;                                        \
        snprintf(err, err_size, "%s: reference evaluator not implemented", #name);                 \
        return -1;                                                                         \
    }
#include "ops.def"
#undef OP
