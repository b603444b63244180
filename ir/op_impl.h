/* op_impl.h — declarations of every op's shape rule, reference evaluator and gradient rule, expanded from
 * ops.def so that a new op without its functions fails to link. Internal to ir/. */
#ifndef CAPC_OP_IMPL_H
#define CAPC_OP_IMPL_H

#include "interp.h"
#include "ops.h"

/* Writes "OPNAME: message" into err and returns -1, so shape rules and reference evaluators
 * can `return op_fail(op, err, err_size, ...)`. */
__attribute__((format(printf, 4, 5))) int op_fail(const Op *op, char *err, size_t err_size,
                                                  const char *fmt, ...);

#define OP(ENUM, name, min_in, max_in, fusion, doc)                                        \
    int infer_##name(const Op *op, DType *out_dtype, Shape *out_shape, char *err,          \
                     size_t err_size);                                                     \
    int ref_##name(const Op *op, const RefTensor *const *ins, RefTensor *out, char *err, \
                    size_t err_size);                                                      \
    int grad_##name(Function *f, const Op *op, Value *dy, const bool *need, Value **grads, \
                    char *err, size_t err_size);
#include "ops.def"
#undef OP

#endif
