/* attention.h — the attention pattern as the IR spells it (passes/attention.c): found by the
 * fusion pass, which makes it one fused group forward and one backward, and found again by
 * code generation inside those groups (codegen/lower_attention.c).
 *
 * Forward, over batch axes [...] (batch and heads):
 *
 *   S  = matmul(Q [..., Tq, d], K [..., Tk, d], transpose_b)      scores [..., Tq, Tk]
 *   S' = pre(S)        elementwise ops on the scores' shape: scale, mask add, ...
 *   P  = softmax(S', axis -1)
 *   P' = post(P)       elementwise ops: dropout, ...
 *   O  = matmul(P', V [..., Tk, dv])                              context [..., Tq, dv]
 *
 * Backward, as autodiff writes it (any elementwise ops and sums over the last axis between
 * dP and G: softmax's backward, dropout's, the pre ops'):
 *
 *   dV = matmul(P', dO, transpose_a)      dP = matmul(dO, V, transpose_b)
 *   G  = chain(dP, P, P')                 (one round of last-axis sums at most)
 *   dQ = matmul(G, K)                     dK = matmul(G, Q, transpose_a)
 */
#ifndef CAPC_ATTENTION_H
#define CAPC_ATTENTION_H

#include "ir.h"

enum { ATTN_MAX_CHAIN = 8, ATTN_MAX_BACKWARD = 32 };

typedef struct AttnMatch {
    const Op *scores, *softmax, *context;
    const Op *pre[ATTN_MAX_CHAIN], *post[ATTN_MAX_CHAIN];
    int n_pre, n_post;
    const Value *q, *k, *v; /* the matmuls' operands */
    const Value *pp;        /* P': the context matmul's first operand */
    /* backward; d_v is NULL when there is none */
    const Op *d_v, *d_p, *d_q, *d_k;
    const Value *d_o, *g;
    const Op *bwd[ATTN_MAX_BACKWARD]; /* the chain from dP to G, in program order */
    int n_bwd;
} AttnMatch;

/* Looks for the pattern around `softmax`, among the ops ops[0..n) only (a function's, or a
 * fused group's). Returns true with m filled (m->d_v NULL when the backward is not among
 * them, or not in the expected form). */
/* `returned` (may be NULL): per value id of f, whether f returns it; with it, the index costs
 * the ops' size alone, without it a scan of f's outputs (code generation matches one group
 * at a time, of a function with thousands of outputs, and passes the schedule's). */
bool attn_match(const Function *f, const Op *const *ops, int n, const bool *returned,
                const Op *softmax,
                AttnMatch *m);

/* The same, with the index of who reads what built once: the fusion pass matches every
 * softmax of a function against one index instead of building one per softmax. */
typedef struct AttnIndex AttnIndex;
AttnIndex *attn_index_new(const Function *f, const Op *const *ops, int n,
                          const bool *returned); /* NULL: no memory */
void attn_index_free(AttnIndex *ix);
bool attn_match_in(const AttnIndex *ix, const Op *softmax, AttnMatch *m);
/* After the caller changed the consumers of x (or made new values): a match that looks at x,
 * or at a value made after the build, sets the index stale; it must then be rebuilt from the
 * function as it is now and the match repeated. */
void attn_index_touch(AttnIndex *ix, const Value *x);
bool attn_index_stale(const AttnIndex *ix);
/* op's position among the ops the index was built from; -1 when not among them. */
int attn_index_position(const AttnIndex *ix, const Op *op);

#endif
