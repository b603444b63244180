/* prelude.c — the text every rendered C or CUDA file starts with: includes, scalar types,
 * the parallel-for macro, infinities, NaN-propagating min/max and Philox4x32-10 dropout.
 *
 * The helpers are written once (COMMON below) against a few names each target's head defines
 * (CAP_FN, cap_u32, cap_u64, CAP_NAN_F...), so C and CUDA compute the same thing. Philox and
 * the keep decision repeat ir/philox.c's arithmetic exactly (same counter and key layout, ten
 * rounds, key bumped between rounds, u = (r0 >> 8) * 2^-24 compared with p in double), which
 * is what makes dropout masks agree bit for bit with the reference interpreter. */
#include "codegen.h"

#define COMMON                                                                              \
    "CAP_FN float cap_maxf(float a, float b) {\n"                                           \
    "    return cap_isnan(a) || cap_isnan(b) ? CAP_NAN_F : (a > b ? a : b);\n"              \
    "}\n"                                                                                   \
    "CAP_FN float cap_minf(float a, float b) {\n"                                           \
    "    return cap_isnan(a) || cap_isnan(b) ? CAP_NAN_F : (a < b ? a : b);\n"              \
    "}\n"                                                                                   \
    "CAP_FN double cap_max(double a, double b) {\n"                                         \
    "    return cap_isnan(a) || cap_isnan(b) ? CAP_NAN : (a > b ? a : b);\n"                \
    "}\n"                                                                                   \
    "CAP_FN double cap_min(double a, double b) {\n"                                         \
    "    return cap_isnan(a) || cap_isnan(b) ? CAP_NAN : (a < b ? a : b);\n"                \
    "}\n"                                                                                   \
    "/* Dropout keep bit for element `index`: Philox4x32-10 with counter {index lo, index\n" \
    " * hi, stream, step} and key {seed, 0x9E3779B9}; kept iff (r0 >> 8) * 2^-24 >= p. */\n" \
    "CAP_FN int cap_dropout_keep(cap_u32 seed, cap_u32 step, cap_u32 stream, cap_u64 index,\n" \
    "                            double p) {\n"                                             \
    "    cap_u32 c0 = (cap_u32)index, c1 = (cap_u32)(index >> 32), c2 = stream, c3 = step;\n" \
    "    cap_u32 k0 = seed, k1 = 0x9E3779B9u;\n"                                            \
    "    for (int r = 0; r < 10; r++) {\n"                                                  \
    "        if (r > 0) {\n"                                                                \
    "            k0 += 0x9E3779B9u;\n"                                                      \
    "            k1 += 0xBB67AE85u;\n"                                                      \
    "        }\n"                                                                           \
    "        cap_u64 p0 = (cap_u64)0xD2511F53u * c0, p1 = (cap_u64)0xCD9E8D57u * c2;\n"     \
    "        cap_u32 n0 = (cap_u32)(p1 >> 32) ^ c1 ^ k0, n2 = (cap_u32)(p0 >> 32) ^ c3 ^ k1;\n" \
    "        c1 = (cap_u32)p1;\n"                                                           \
    "        c3 = (cap_u32)p0;\n"                                                           \
    "        c0 = n0;\n"                                                                    \
    "        c2 = n2;\n"                                                                    \
    "    }\n"                                                                               \
    "    double u = (double)(c0 >> 8) * (1.0 / 16777216.0);\n"                             \
    "    return u >= p;\n"                                                                  \
    "}\n"

static const char C_PRELUDE[] =
    "/* capc generated code (C target) */\n"
    "#ifndef _POSIX_C_SOURCE\n"
    "#define _POSIX_C_SOURCE 200809L /* pthread keys (the workspace) */\n"
    "#endif\n"
    "#include <math.h>\n"
    "#include <pthread.h>\n"
    "#include <stdint.h>\n"
    "#include <string.h>\n"
    "#include <stdlib.h>\n"
    "#include <cblas.h>\n"
    "\n"
    "typedef uint32_t cap_u32;\n"
    "typedef uint64_t cap_u64;\n"
    "#define CAP_FN static inline\n"
    "#define CAP_INF_F ((float)INFINITY)\n"
    "#define CAP_NAN_F ((float)NAN)\n"
    "#define CAP_INF ((double)INFINITY)\n"
    "#define CAP_NAN ((double)NAN)\n"
    "#define cap_isnan(x) isnan(x)\n"
    "/* c ? a : b on bits: branchless, NaN payloads kept, and vectorizable where gcc would turn\n"
    " * a float ?: on a loop-invariant condition into a branch (KF_BLEND) */\n"
    "CAP_FN float cap_blendf(int c, float a, float b) {\n"
    "    uint32_t ia, ib, m = 0u - (uint32_t)(c != 0);\n"
    "    memcpy(&ia, &a, 4);\n"
    "    memcpy(&ib, &b, 4);\n"
    "    ia = (ia & m) | (ib & ~m);\n"
    "    memcpy(&a, &ia, 4);\n"
    "    return a;\n"
    "}\n"
    "CAP_FN double cap_blend(int c, double a, double b) {\n"
    "    uint64_t ia, ib, m = 0u - (uint64_t)(c != 0);\n"
    "    memcpy(&ia, &a, 8);\n"
    "    memcpy(&ib, &b, 8);\n"
    "    ia = (ia & m) | (ib & ~m);\n"
    "    memcpy(&a, &ia, 8);\n"
    "    return a;\n"
    "}\n"
    "#ifdef _OPENMP\n"
    "#include <omp.h>\n"
    "#endif\n"
    "/* The kernels own the threading: a parfor's work items run on OpenMP threads (when built\n"
    " * with -fopenmp), as many as the calling thread's OpenMP thread count, which the runtime\n"
    " * sets before each entry (cap_set_threads, in cap_artifact: omp_set_num_threads applies to\n"
    " * the calling thread only); OpenBLAS runs on one thread and cap_sgemm splits the products\n"
    " * instead, so no two thread pools spin against each other. (No _Thread_local here: the\n"
    " * dynamic TLS of a dlopened library trips LeakSanitizer's thread scan.) */\n"
    "CAP_FN int cap_threads(void) {\n"
    "#ifdef _OPENMP\n"
    "    return omp_get_max_threads();\n"
    "#else\n"
    "    return 1;\n"
    "#endif\n"
    "}\n"
    "/* Scratch memory of the calling thread (im2col matrices, attention's work items): slot i,\n"
    " * at least `bytes`, kept from call to call and grown when a kernel needs more, so no\n"
    " * kernel allocates per call; freed when the thread ends. A kernel has no error channel:\n"
    " * running out of memory here is fatal. */\n"
    "typedef struct CapWorkspace { /* 4 slots: KD_MAX_SCRATCH in codegen/kernel.h */\n"
    "    void *p[4];\n"
    "    size_t bytes[4];\n"
    "} CapWorkspace;\n"
    "/* State one cap.so holds once (the BLAS thread setting, the workspace key): when cap.c is\n"
    " * compiled in pieces, the kernel modules define CAP_SHARED_ELSEWHERE and only declare it;\n"
    " * the tables' piece defines it. Hidden: it is not part of cap.so's interface. */\n"
    "#define CAP_SHARED __attribute__((visibility(\"hidden\")))\n"
    "#ifdef CAP_SHARED_ELSEWHERE\n"
    "CAP_SHARED void cap_set_threads(int32_t n);\n"
    "CAP_SHARED void *cap_workspace(int slot, size_t bytes);\n"
    "#else\n"
    "static pthread_once_t cap_blas_once = PTHREAD_ONCE_INIT;\n"
    "static void cap_blas_serial(void) { openblas_set_num_threads(1); }\n"
    "CAP_SHARED void cap_set_threads(int32_t n) {\n"
    "    pthread_once(&cap_blas_once, cap_blas_serial);\n"
    "#ifdef _OPENMP\n"
    "    omp_set_num_threads(n > 0 ? n : 1);\n"
    "#else\n"
    "    (void)n;\n"
    "#endif\n"
    "}\n"
    "static pthread_key_t cap_ws_key;\n"
    "static pthread_once_t cap_ws_once = PTHREAD_ONCE_INIT;\n"
    "static void cap_ws_free(void *v) {\n"
    "    CapWorkspace *w = v;\n"
    "    for (int i = 0; i < 4; i++) free(w->p[i]);\n"
    "    free(w);\n"
    "}\n"
    "static void cap_ws_init(void) {\n"
    "    if (pthread_key_create(&cap_ws_key, cap_ws_free) != 0) abort();\n"
    "}\n"
    "CAP_SHARED void *cap_workspace(int slot, size_t bytes) {\n"
    "    pthread_once(&cap_ws_once, cap_ws_init);\n"
    "    CapWorkspace *w = pthread_getspecific(cap_ws_key);\n"
    "    if (!w) {\n"
    "        w = calloc(1, sizeof *w);\n"
    "        if (!w || pthread_setspecific(cap_ws_key, w) != 0) abort();\n"
    "    }\n"
    "    if (w->bytes[slot] < bytes) {\n"
    "        free(w->p[slot]);\n"
    "        w->p[slot] = malloc(bytes);\n"
    "        if (!w->p[slot]) abort();\n"
    "        w->bytes[slot] = bytes;\n"
    "    }\n"
    "    return w->p[slot];\n"
    "}\n"
    "#endif\n"
    "#ifdef _OPENMP\n"
    "#define CAP_PARALLEL_FOR _Pragma(\"omp parallel for schedule(static)\")\n"
    "#define CAP_SIMD _Pragma(\"omp simd\")\n"
    "#else\n"
    "#define CAP_PARALLEL_FOR\n"
    "#define CAP_SIMD\n"
    "#endif\n"
    "/* C = alpha op(A) op(B) + beta C, row-major, as cblas_sgemm. With split (a product that is\n"
    " * not part of one work item) and at least 2^18 multiply-adds, the product is cut into one\n"
    " * block of rows of C per thread (or of columns, whichever is longer; columns in multiples\n"
    " * of 16), each a single-threaded cblas_sgemm. OpenBLAS adds up a block's elements in a\n"
    " * slightly different order than the whole product's, so results depend on the thread\n"
    " * count in their last bits (never on anything else). Fixed blocks would avoid that, but\n"
    " * many concurrent small calls contend inside OpenBLAS: 16 fixed blocks made the tiny\n"
    " * captioner's step 1.5x slower on two threads. */\n"
    "CAP_FN void cap_sgemm(int split, int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha,\n"
    "                      const float *a, int64_t lda, const float *b, int64_t ldb, float beta,\n"
    "                      float *c, int64_t ldc) {\n"
    "    enum CBLAS_TRANSPOSE TA = ta ? CblasTrans : CblasNoTrans;\n"
    "    enum CBLAS_TRANSPOSE TB = tb ? CblasTrans : CblasNoTrans;\n"
    "#ifdef _OPENMP\n"
    "    int by_rows = m >= n;\n"
    "    int64_t unit = by_rows ? 1 : 16, units = ((by_rows ? m : n) + unit - 1) / unit;\n"
    "    int t = cap_threads() < units ? cap_threads() : (int)units;\n"
    "    if (split && t > 1 && (double)m * (double)n * (double)k >= 262144.0) {\n"
    "#pragma omp parallel num_threads(t)\n"
    "        {\n"
    "            int64_t i = omp_get_thread_num(), nt = omp_get_num_threads();\n"
    "            int64_t lo = units * i / nt * unit, hi = units * (i + 1) / nt * unit;\n"
    "            if (by_rows) {\n"
    "                if (hi > m) hi = m;\n"
    "                if (hi > lo)\n"
    "                    cblas_sgemm(CblasRowMajor, TA, TB, hi - lo, n, k, alpha,\n"
    "                                ta ? a + lo : a + lo * lda, lda, b, ldb, beta,\n"
    "                                c + lo * ldc, ldc);\n"
    "            } else {\n"
    "                if (hi > n) hi = n;\n"
    "                if (hi > lo)\n"
    "                    cblas_sgemm(CblasRowMajor, TA, TB, m, hi - lo, k, alpha, a, lda,\n"
    "                                tb ? b + lo * ldb : b + lo, ldb, beta, c + lo, ldc);\n"
    "            }\n"
    "        }\n"
    "        return;\n"
    "    }\n"
    "#else\n"
    "    (void)split;\n"
    "#endif\n"
    "    cblas_sgemm(CblasRowMajor, TA, TB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);\n"
    "}\n"
    "CAP_FN float cap_rsqrtf(float x) { return 1.0f / sqrtf(x); }\n"
    "CAP_FN double cap_rsqrt(double x) { return 1.0 / sqrt(x); }\n" COMMON "\n";

static const char CUDA_PRELUDE[] =
    "/* capc generated code (CUDA target, compiled by NVRTC) */\n"
    "typedef unsigned int cap_u32;\n"
    "typedef unsigned long long cap_u64;\n"
    "#define CAP_FN static __device__ __forceinline__\n"
    "#define CAP_INF_F __int_as_float(0x7f800000)\n"
    "#define CAP_NAN_F __int_as_float(0x7fffffff)\n"
    "#define CAP_INF __longlong_as_double(0x7ff0000000000000LL)\n"
    "#define CAP_NAN __longlong_as_double(0x7ff8000000000000LL)\n"
    "#define cap_isnan(x) isnan(x)\n"
    "CAP_FN float cap_blendf(int c, float a, float b) { return c ? a : b; }\n"
    "CAP_FN double cap_blend(int c, double a, double b) { return c ? a : b; }\n" COMMON "\n";

const char *codegen_c_prelude(void) { return C_PRELUDE; }
const char *codegen_cuda_prelude(void) { return CUDA_PRELUDE; }
