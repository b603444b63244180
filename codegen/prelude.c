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
    "#include <math.h>\n"
    "#include <stdint.h>\n"
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
    "/* Work items of a parfor run on OpenMP threads when built with -fopenmp. */\n"
    "#ifdef _OPENMP\n"
    "#define CAP_PARALLEL_FOR _Pragma(\"omp parallel for schedule(static)\")\n"
    "#else\n"
    "#define CAP_PARALLEL_FOR\n"
    "#endif\n"
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
    "#define cap_isnan(x) isnan(x)\n" COMMON "\n";

const char *codegen_c_prelude(void) { return C_PRELUDE; }
const char *codegen_cuda_prelude(void) { return CUDA_PRELUDE; }
