/* package_kernels.c — the artifact's kernel table.
 *
 * Every entry point is lowered on its own, so the same kernel shows up many times: forward's
 * linear layers again in eval_loss and train_step, identical elementwise kernels within one
 * function. Emitting each once keeps cap.c (and cc's and NVRTC's time on it) small. Two
 * kernels are the same when their descriptions are structurally equal (kd_equal: everything
 * but the name and the comment, which names the IR ops). The merged kernel keeps the first
 * instance's name and comment; its source_ops says how many instances it stands for. Kernel
 * descriptions stay alive until the package renders them, each distinct one once.
 *
 * Kernel names are unique within one function only; a name already taken by a different
 * kernel of another entry point becomes NAME_2, NAME_3, ...
 *
 * Copy kernels (final output and state copies) are made here too: one per dtype and size.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "package.h"

struct PkgDedupSlot {
    uint64_t hash;
    int kernel; /* -1: empty slot */
};

/* Two lowered kernels are the same function when their descriptions (both forms) are
 * structurally equal (kernel.c: kd_equal ignores the name and the comment). */
static uint64_t kernel_hash(const KernelDesc *c, const KernelDesc *cuda) {
    uint64_t h = kd_hash(c);
    return cuda != NULL ? h * 31 + kd_hash(cuda) + 1 : h;
}

static bool same_kernel(const ArtifactKernel *pk, const LoweredKernel *k) {
    if (pk->desc == NULL || !kd_equal(pk->desc, k->desc)) return false;
    if ((pk->cuda == NULL) != (k->cuda == NULL)) return false;
    return pk->cuda == NULL || kd_equal(pk->cuda, k->cuda);
}

static int grow_slots(Package *p) {
    int n = p->n_slots == 0 ? 1024 : p->n_slots * 2;
    PkgDedupSlot *slots = malloc(sizeof *slots * (size_t)n);
    if (slots == NULL) return -1;
    for (int i = 0; i < n; i++) slots[i].kernel = -1;
    for (int i = 0; i < p->n_slots; i++) {
        PkgDedupSlot *old = &p->slots[i];
        if (old->kernel < 0) continue;
        size_t j = (size_t)(old->hash & (uint64_t)(n - 1));
        while (slots[j].kernel >= 0) j = (j + 1) & (size_t)(n - 1);
        slots[j] = *old;
    }
    free(p->slots);
    p->slots = slots;
    p->n_slots = n;
    return 0;
}

/* The slot holding a kernel equal to k, or the empty slot where it would go. */
static PkgDedupSlot *find_slot(Package *p, const LoweredKernel *k, uint64_t hash) {
    size_t mask = (size_t)(p->n_slots - 1);
    size_t j = (size_t)(hash & mask);
    while (p->slots[j].kernel >= 0 &&
           (p->slots[j].hash != hash || !same_kernel(&p->kernels[p->slots[j].kernel], k)))
        j = (j + 1) & mask;
    return &p->slots[j];
}

static size_t name_hash(const char *name) { return (size_t)pkg_fnv1a(name, strlen(name), 0); }

/* The kernel named `name`, or -1. */
static int find_name(const Package *p, const char *name) {
    if (p->n_name_slots == 0) return -1;
    size_t mask = (size_t)p->n_name_slots - 1;
    for (size_t j = name_hash(name) & mask; p->name_slots[j] >= 0; j = (j + 1) & mask)
        if (strcmp(p->kernels[p->name_slots[j]].name, name) == 0) return p->name_slots[j];
    return -1;
}

static void put_name(int *slots, size_t mask, const Package *p, int kernel) {
    size_t j = name_hash(p->kernels[kernel].name) & mask;
    while (slots[j] >= 0) j = (j + 1) & mask;
    slots[j] = kernel;
}

/* Records kernel's name (set, and not taken) in the name index; -1 on OOM. */
static int add_name(Package *p, int kernel) {
    if ((p->n_names + 1) * 2 > p->n_name_slots) {
        int n = p->n_name_slots == 0 ? 1024 : p->n_name_slots * 2;
        int *slots = malloc(sizeof *slots * (size_t)n);
        if (slots == NULL) return -1;
        for (int i = 0; i < n; i++) slots[i] = -1;
        for (int i = 0; i < p->n_name_slots; i++)
            if (p->name_slots[i] >= 0) put_name(slots, (size_t)n - 1, p, p->name_slots[i]);
        free(p->name_slots);
        p->name_slots = slots;
        p->n_name_slots = n;
    }
    put_name(p->name_slots, (size_t)p->n_name_slots - 1, p, kernel);
    p->n_names++;
    return 0;
}

/* Names are unique within one function's kernels only. */
static bool name_taken(const Package *p, const char *name) { return find_name(p, name) >= 0; }

/* name, or NAME_2, NAME_3, ... : the first not taken (malloc'd). */
static char *unique_name(const Package *p, const char *name) {
    size_t size = strlen(name) + 16;
    char *out = malloc(size);
    if (out == NULL) return NULL;
    snprintf(out, size, "%s", name);
    for (int n = 2; name_taken(p, out); n++) snprintf(out, size, "%s_%d", name, n);
    return out;
}

static ArtifactKernel *append_kernel(Package *p) {
    if (p->n_kernels == p->cap_kernels) {
        int cap = p->cap_kernels == 0 ? 64 : p->cap_kernels * 2;
        ArtifactKernel *k = realloc(p->kernels, (size_t)cap * sizeof *k);
        if (k == NULL) return NULL;
        p->kernels = k;
        p->cap_kernels = cap;
    }
    ArtifactKernel *k = &p->kernels[p->n_kernels];
    memset(k, 0, sizeof *k);
    return k;
}

/* Moves k's descriptions into the package under a unique name. Returns its index or -1. */
static int add_new_kernel(Package *p, LoweredKernel *k) {
    ArtifactKernel *pk = append_kernel(p);
    if (pk == NULL) return -1;
    pk->name = unique_name(p, k->desc->name);
    pk->source_ops = strdup(k->source_ops);
    pk->desc = k->desc;
    pk->cuda = k->cuda;
    k->desc = k->cuda = NULL;
    pk->n_args = k->n_args;
    pk->merged = 1;
    p->n_kernels++; /* counted now so pkg_free releases what was allocated */
    if (pk->name == NULL || pk->source_ops == NULL || add_name(p, p->n_kernels - 1) != 0)
        return -1;
    pk->desc->name = kd_strdup(pk->desc, pk->name);
    if (pk->cuda != NULL) pk->cuda->name = kd_strdup(pk->cuda, pk->name);
    return p->n_kernels - 1;
}

/* A deep model's kernels are mostly the same few: every layer repeats them and every entry
 * point repeats forward's. A step shaped like an earlier one is not even lowered: it borrows
 * that one's descriptions (LowerCache, lower_key.c), so descriptions take memory once per
 * distinct kernel rather than once per step (1,000 encoder layers: gigabytes), and it gets
 * that kernel's index here without hashing. Kernels lowered apart that still come out equal
 * (a lone matmul and a group of the same matmul and a reshape) merge by hash and kd_equal. */
int pkg_add_kernel(Package *p, LoweredKernel *k) {
    if (k->same_as != NULL) {
        /* Its descriptions are same_as's, added before it (in program order, as lowered). */
        k->artifact = k->same_as->artifact;
        if (k->artifact >= 0) p->kernels[k->artifact].merged++;
        return k->artifact;
    }
    if ((p->n_used_slots + 1) * 2 > p->n_slots && grow_slots(p) != 0) return -1;
    uint64_t hash = kernel_hash(k->desc, k->cuda);
    PkgDedupSlot *slot = find_slot(p, k, hash);
    if (slot->kernel >= 0) {
        p->kernels[slot->kernel].merged++;
        return k->artifact = slot->kernel;
    }
    int index = add_new_kernel(p, k);
    if (index < 0) return -1;
    slot->hash = hash;
    slot->kernel = index;
    p->n_used_slots++;
    return k->artifact = index;
}

int pkg_render_kernels(Package *p, Diag *d) {
    for (int i = 0; i < p->n_kernels; i++) {
        ArtifactKernel *k = &p->kernels[i];
        if (k->desc == NULL) continue; /* a copy kernel, written as text */
        const KernelDesc *cu = k->cuda != NULL ? k->cuda : k->desc;
        k->c_src = kernel_render(k->desc, KTARGET_C, d);
        k->cuda_src = k->c_src != NULL ? kernel_render(cu, KTARGET_CUDA, d) : NULL;
        if (k->c_src == NULL || k->cuda_src == NULL) return -1;
        kernel_cuda_launch(cu, &k->cuda_grid, &k->cuda_block);
        k->cuda_shared_bytes = 0;
    }
    return 0;
}

/* C: memcpy. CUDA: a grid-stride loop (NVRTC has no <stdint.h>: i32 is int there, as in
 * render.c's CUDA type table). */
static int render_copy_kernel(ArtifactKernel *k, DType dtype, int64_t numel) {
    const char *ctype = dtype == DT_I32 ? "int32_t" : "float";
    const char *cutype = dtype == DT_I32 ? "int" : "float";
    StrBuf c = {0}, cu = {0};
    strbuf_printf(&c,
                   "/* %s: copy %s[%lld] (a final output or state write-back) */\n"
                   "void %s(void *const *bufs) {\n"
                   "    memcpy(bufs[0], bufs[1], (size_t)%lld * sizeof(%s));\n"
                   "}\n",
                   k->name, dtype_name(dtype), (long long)numel, k->name, (long long)numel,
                   ctype);
    strbuf_printf(&cu,
                   "/* %s: copy %s[%lld] (a final output or state write-back) */\n"
                   "extern \"C\" __global__ void %s(%s *a0, const %s *a1) {\n"
                   "    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;\n"
                   "         i < %lldLL; i += (long long)gridDim.x * blockDim.x)\n"
                   "        a0[i] = a1[i];\n"
                   "}\n",
                   k->name, dtype_name(dtype), (long long)numel, k->name, cutype, cutype,
                   (long long)numel);
    k->c_src = strbuf_take(&c);
    k->cuda_src = strbuf_take(&cu);
    return k->c_src != NULL && k->cuda_src != NULL ? 0 : -1;
}

int pkg_copy_kernel(Package *p, DType dtype, int64_t numel) {
    char name[96];
    snprintf(name, sizeof name, "capc_copy_%s_%lld", dtype_name(dtype), (long long)numel);
    int found = find_name(p, name);
    if (found >= 0) return found;
    ArtifactKernel *k = append_kernel(p);
    if (k == NULL) return -1;
    k->name = strdup(name);
    k->source_ops = strdup("copy");
    k->n_args = 2;
    k->cuda_block = 256;
    int64_t blocks = (numel + 255) / 256;
    k->cuda_grid = blocks < 1 ? 1 : blocks > 4096 ? 4096 : blocks;
    k->merged = 1;
    p->n_kernels++;
    if (k->name == NULL || k->source_ops == NULL || add_name(p, p->n_kernels - 1) != 0) return -1;
    return render_copy_kernel(k, dtype, numel) == 0 ? p->n_kernels - 1 : -1;
}

/* FNV-1a, 64-bit: a fast stable hash (kernel names; the module a kernel goes in). */
uint64_t pkg_fnv1a(const char *s, size_t n, uint64_t h) {
    if (h == 0) h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

void pkg_kernels_free(Package *p) {
    for (int i = 0; i < p->n_kernels; i++) {
        ArtifactKernel *k = &p->kernels[i];
        free(k->name);
        free(k->source_ops);
        free(k->c_src);
        free(k->cuda_src);
        kd_free(k->desc);
        kd_free(k->cuda);
    }
    free(p->kernels);
    free(p->slots);
    free(p->name_slots);
}
