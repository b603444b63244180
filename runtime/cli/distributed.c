/* distributed.c — MPI for data-parallel `cap train` (distributed.h, docs/distributed.md). */
#include "distributed.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>


#ifdef CAP_WITH_MPI
#include <mpi.h>
#endif

/* The process count a launcher put in the environment (Open MPI, then PMI/PMIx as MPICH and
 * Slurm set it), or 0 when none did. */
static int launcher_size(void) {
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) {
        const char *v = getenv(vars[i]);
        if (v && atoi(v) > 0) return atoi(v);
    }
    return 0;
}

#ifdef CAP_WITH_MPI

static int started;

static CapStatus allreduce_sum(void *ctx, float *data, int64_t n, char *err, size_t err_size) {
    (void)ctx;
    /* MPI counts are int: a model with more than 2^31 gradient floats goes in pieces */
    for (int64_t at = 0; at < n;) {
        int count = n - at > (1 << 30) ? (1 << 30) : (int)(n - at);
        int rc = MPI_Allreduce(MPI_IN_PLACE, data + at, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) {
            char text[MPI_MAX_ERROR_STRING];
            int len = 0;
            MPI_Error_string(rc, text, &len);
            snprintf(err, err_size, "MPI_Allreduce of %lld floats failed: %s", (long long)count,
                     text);
            return CAP_E_IO;
        }
        at += count;
    }
    return CAP_OK;
}

int cap_dist_init(int *argc, char ***argv, CapComm *comm, char *err, size_t err_size) {
    /* Not under a launcher: no MPI_Init, so every single-process run (and test) is exactly
     * as without MPI. */
    if (launcher_size() == 0) return 0;
    if (MPI_Init(argc, argv) != MPI_SUCCESS) {
        snprintf(err, err_size, "MPI_Init failed");
        return -1;
    }
    started = 1;
    /* errors come back as codes (reported, then every rank aborted) rather than MPI's
     * default of aborting with its own message */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    *comm = (CapComm){.allreduce_sum = allreduce_sum};
    MPI_Comm_rank(MPI_COMM_WORLD, &comm->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &comm->size);
    return 1;
}

void cap_dist_finish(int rc) {
    if (!started) return;
    started = 0;
    if (rc) MPI_Abort(MPI_COMM_WORLD, rc);
    else MPI_Finalize();
}


#else

int cap_dist_init(int *argc, char ***argv, CapComm *comm, char *err, size_t err_size) {
    (void)argc, (void)argv, (void)comm;
    if (launcher_size() <= 1) return 0;
    snprintf(err, err_size, "this cap was built without MPI, so the %d processes mpirun started "
             "would each train alone: install Open MPI (scripts/setup.sh, or apt-get install "
             "libopenmpi-dev openmpi-bin) and rebuild (docs/distributed.md)", launcher_size());
    return -1;
}

void cap_dist_finish(int rc) {
    (void)rc;
}


#endif
