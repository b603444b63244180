/* threads.c — how many threads the CPU kernels use, and the OpenMP and OpenBLAS settings
 * libcaprt chooses so that those threads behave on a busy machine (docs/api.md, "Threads").
 *
 * The generated kernels own the threading: their parallel loops run on OpenMP threads (as
 * many as the session says, per call), and OpenBLAS runs on one thread inside them (cap.so's
 * cap_sgemm splits a product over the kernel's threads). Two settings cannot be made through
 * an API, because libgomp and OpenBLAS read them from the environment when they are loaded,
 * which happens when the first cap.so is: so cap_threads_prepare sets them then, unless the
 * user set them:
 *   GOMP_SPINCOUNT=1000      an OpenMP thread that finds no work spins ~1000 iterations
 *                            (microseconds) before it sleeps. libgomp's default (300,000, or
 *                            "forever" with OMP_WAIT_POLICY=active) burns the cores a data
 *                            loader or another process needs, and with any other process busy
 *                            it turned a 65 ms step into 1.4 s (docs/benchmarks.md).
 *   OPENBLAS_NUM_THREADS=1   OpenBLAS's own pool would only sit beside the kernels' threads
 *                            (which call it single-threaded whatever this says: cap.so's
 *                            set_threads; the variable only keeps the pool from starting).
 * Set OMP_WAIT_POLICY (or GOMP_SPINCOUNT) yourself to choose otherwise. */
#define _GNU_SOURCE
#include <sched.h>
#include <stdlib.h>
#include <unistd.h>

#include "cap_internal.h"

void cap_threads_prepare(void) {
    if (!getenv("GOMP_SPINCOUNT") && !getenv("OMP_WAIT_POLICY")) setenv("GOMP_SPINCOUNT", "1000", 0);
    setenv("OPENBLAS_NUM_THREADS", "1", 0);
}

int cap_default_threads(void) {
    const char *env = getenv("OMP_NUM_THREADS");
    if (env && *env) {
        char *end;
        long n = strtol(env, &end, 10);
        if (*end == '\0' && n >= 1 && n <= 4096) return (int)n;
    }
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}
