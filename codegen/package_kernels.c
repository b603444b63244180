/* package_kernels.c — the artifact's kernel table.
 *
 * Every entry point is lowered on its own, so the same kernel shows up many times: forward's
 * linear layers again in eval_loss and train_step, identical elementwise kernels within one
 * function. Emitting each once keeps cap.c (and cc's time on it) small. Two kernels are the
 * same when their C and CUDA sources are equal after removing comments (which name the IR ops
 * and differ between instances) and replacing the kernel's own name with a placeholder, and
 * their launch geometry is equal. The merged kernel keeps the first instance's name and
 * comment; its source_ops says how many instances it stands for.
 *
 * Kernel names are unique within one KernelSet only; a name already taken by a different
 * kernel of another entry point is renamed (NAME_2, NAME_3, ...) by replacing the identifier
 * in both sources.
 *
 * Copy kernels (final output and state copies) are made here too: one per dtype and size.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "package.h"

struct PkgDedupSlot {
    uint64_t hash;
    char *key; /* NULL: empty slot */
    int kernel;
};

static bool is_ident_start(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
static bool is_ident_char(char c) { return is_ident_start(c) || (c >= '0' && c <= '9'); }

/* Copies a comment starting at s (which begins with / * or //) unless strip; returns the
 * position after it. */
static const char *skip_comment(PkgBuf *b, const char *s, bool strip) {
    const char *end;
    if (s[1] == '*') {
        end = strstr(s + 2, "*/");
        end = end != NULL ? end + 2 : s + strlen(s);
    } else {
        end = strchr(s, '\n');
        if (end == NULL) end = s + strlen(s);
    }
    if (!strip) pkg_buf_append(b, s, (size_t)(end - s));
    return end;
}

/* A string or character literal starting at s, copied verbatim; returns the position after. */
static const char *copy_literal(PkgBuf *b, const char *s) {
    char quote = *s;
    const char *p = s + 1;
    while (*p != '\0' && *p != quote) p += (*p == '\\' && p[1] != '\0') ? 2 : 1;
    if (*p == quote) p++;
    pkg_buf_append(b, s, (size_t)(p - s));
    return p;
}

/* src with every whole identifier `from` replaced by `to`, and comments removed if strip.
 * Literals and numbers (1e5f is not the identifier e5f) are copied as they are. */
static char *rewrite_source(const char *src, const char *from, const char *to, bool strip) {
    PkgBuf b = {0};
    size_t from_len = strlen(from);
    const char *s = src != NULL ? src : "";
    pkg_buf_append(&b, "", 0);
    while (*s != '\0') {
        const char *start = s;
        if (s[0] == '/' && (s[1] == '*' || s[1] == '/')) {
            s = skip_comment(&b, s, strip);
        } else if (*s == '"' || *s == '\'') {
            s = copy_literal(&b, s);
        } else if (is_ident_start(*s) || (*s >= '0' && *s <= '9')) {
            while (is_ident_char(*s) || (*start >= '0' && *start <= '9' && *s == '.')) s++;
            bool match = is_ident_start(*start) && (size_t)(s - start) == from_len &&
                         memcmp(start, from, from_len) == 0;
            if (match) pkg_buf_puts(&b, to);
            else pkg_buf_append(&b, start, (size_t)(s - start));
        } else {
            pkg_buf_append(&b, s, 1);
            s++;
        }
    }
    return pkg_buf_take(&b);
}

/* The deduplication key: both sources normalized, plus the launch geometry. */
char *codegen_kernel_dedup_key(const KernelSource *k) {
    char *c = rewrite_source(k->c_src, k->name, "$K", true);
    char *cu = rewrite_source(k->cuda_src, k->name, "$K", true);
    PkgBuf b = {0};
    if (c != NULL && cu != NULL)
        pkg_buf_printf(&b, "%d %lld %d %d\n%s\n\001\n%s", k->n_args, (long long)k->cuda_grid,
                       k->cuda_block, k->cuda_shared_bytes, c, cu);
    free(c);
    free(cu);
    return pkg_buf_take(&b);
}

static int grow_slots(Package *p) {
    int n = p->n_slots == 0 ? 1024 : p->n_slots * 2;
    PkgDedupSlot *slots = calloc((size_t)n, sizeof *slots);
    if (slots == NULL) return -1;
    for (int i = 0; i < p->n_slots; i++) {
        PkgDedupSlot *old = &p->slots[i];
        if (old->key == NULL) continue;
        size_t j = (size_t)(old->hash & (uint64_t)(n - 1));
        while (slots[j].key != NULL) j = (j + 1) & (size_t)(n - 1);
        slots[j] = *old;
    }
    free(p->slots);
    p->slots = slots;
    p->n_slots = n;
    return 0;
}

/* The slot holding key, or the empty slot where it would go. */
static PkgDedupSlot *find_slot(Package *p, const char *key, uint64_t hash) {
    size_t mask = (size_t)(p->n_slots - 1);
    size_t j = (size_t)(hash & mask);
    while (p->slots[j].key != NULL &&
           (p->slots[j].hash != hash || strcmp(p->slots[j].key, key) != 0))
        j = (j + 1) & mask;
    return &p->slots[j];
}

static bool name_taken(const Package *p, const char *name) {
    for (int i = 0; i < p->n_kernels; i++)
        if (strcmp(p->kernels[i].name, name) == 0) return true;
    return false;
}

/* name, or NAME_2, NAME_3, ... : the first not taken (malloc'd). */
static char *unique_name(const Package *p, const char *name) {
    size_t size = strlen(name) + 16;
    char *out = malloc(size);
    if (out == NULL) return NULL;
    snprintf(out, size, "%s", name);
    for (int n = 2; name_taken(p, out); n++) snprintf(out, size, "%s_%d", name, n);
    return out;
}

static PkgKernel *append_kernel(Package *p) {
    if (p->n_kernels == p->cap_kernels) {
        int cap = p->cap_kernels == 0 ? 64 : p->cap_kernels * 2;
        PkgKernel *k = realloc(p->kernels, (size_t)cap * sizeof *k);
        if (k == NULL) return NULL;
        p->kernels = k;
        p->cap_kernels = cap;
    }
    PkgKernel *k = &p->kernels[p->n_kernels];
    memset(k, 0, sizeof *k);
    return k;
}

static char *dup_or_empty(const char *s) { return strdup(s != NULL ? s : ""); }

/* Copies k into the package under a unique name. Returns its index or -1. */
static int add_new_kernel(Package *p, const KernelSource *k) {
    PkgKernel *pk = append_kernel(p);
    if (pk == NULL) return -1;
    pk->name = unique_name(p, k->name);
    if (pk->name == NULL) return -1;
    bool renamed = strcmp(pk->name, k->name) != 0;
    pk->c_src = renamed ? rewrite_source(k->c_src, k->name, pk->name, false)
                        : dup_or_empty(k->c_src);
    pk->cuda_src = renamed ? rewrite_source(k->cuda_src, k->name, pk->name, false)
                           : dup_or_empty(k->cuda_src);
    pk->source_ops = dup_or_empty(k->source_ops);
    pk->n_args = k->n_args;
    pk->cuda_grid = k->cuda_grid;
    pk->cuda_block = k->cuda_block;
    pk->cuda_shared_bytes = k->cuda_shared_bytes;
    pk->merged = 1;
    p->n_kernels++; /* counted now so pkg_free releases what was allocated */
    if (pk->c_src == NULL || pk->cuda_src == NULL || pk->source_ops == NULL) return -1;
    return p->n_kernels - 1;
}

int pkg_add_kernel(Package *p, const KernelSource *k) {
    if ((p->n_used_slots + 1) * 2 > p->n_slots && grow_slots(p) != 0) return -1;
    char *key = codegen_kernel_dedup_key(k);
    if (key == NULL) return -1;
    uint64_t hash = pkg_fnv1a(key, strlen(key), 0);
    PkgDedupSlot *slot = find_slot(p, key, hash);
    if (slot->key != NULL) {
        free(key);
        p->kernels[slot->kernel].merged++;
        return slot->kernel;
    }
    int index = add_new_kernel(p, k);
    if (index < 0) {
        free(key);
        return -1;
    }
    slot->key = key;
    slot->hash = hash;
    slot->kernel = index;
    p->n_used_slots++;
    return index;
}

/* C: memcpy. CUDA: a grid-stride loop (NVRTC has no <stdint.h>: i32 is int there, as in
 * render.c's CUDA type table). */
static int render_copy_kernel(PkgKernel *k, DType dtype, int64_t numel) {
    const char *ctype = dtype == DT_I32 ? "int32_t" : "float";
    const char *cutype = dtype == DT_I32 ? "int" : "float";
    PkgBuf c = {0}, cu = {0};
    pkg_buf_printf(&c,
                   "/* %s: copy %s[%lld] (a final output or state write-back) */\n"
                   "void %s(void *const *bufs) {\n"
                   "    memcpy(bufs[0], bufs[1], (size_t)%lld * sizeof(%s));\n"
                   "}\n",
                   k->name, dtype_name(dtype), (long long)numel, k->name, (long long)numel,
                   ctype);
    pkg_buf_printf(&cu,
                   "/* %s: copy %s[%lld] (a final output or state write-back) */\n"
                   "extern \"C\" __global__ void %s(%s *a0, const %s *a1) {\n"
                   "    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;\n"
                   "         i < %lldLL; i += (long long)gridDim.x * blockDim.x)\n"
                   "        a0[i] = a1[i];\n"
                   "}\n",
                   k->name, dtype_name(dtype), (long long)numel, k->name, cutype, cutype,
                   (long long)numel);
    k->c_src = pkg_buf_take(&c);
    k->cuda_src = pkg_buf_take(&cu);
    return k->c_src != NULL && k->cuda_src != NULL ? 0 : -1;
}

int pkg_copy_kernel(Package *p, DType dtype, int64_t numel) {
    char name[96];
    snprintf(name, sizeof name, "capc_copy_%s_%lld", dtype_name(dtype), (long long)numel);
    for (int i = 0; i < p->n_kernels; i++)
        if (strcmp(p->kernels[i].name, name) == 0) return i;
    PkgKernel *k = append_kernel(p);
    if (k == NULL) return -1;
    k->name = strdup(name);
    k->source_ops = strdup("copy");
    k->n_args = 2;
    k->cuda_block = 256;
    int64_t blocks = (numel + 255) / 256;
    k->cuda_grid = blocks < 1 ? 1 : blocks > 4096 ? 4096 : blocks;
    k->merged = 1;
    p->n_kernels++;
    if (k->name == NULL || k->source_ops == NULL) return -1;
    return render_copy_kernel(k, dtype, numel) == 0 ? p->n_kernels - 1 : -1;
}

/* FNV-1a, 64-bit: a fast stable hash for deduplication keys and the CUDA cache key. */
uint64_t pkg_fnv1a(const char *s, size_t n, uint64_t h) {
    if (h == 0) h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

void pkg_fnv1a_hex(const char *s, char out[17]) {
    snprintf(out, 17, "%016llx", (unsigned long long)pkg_fnv1a(s, strlen(s), 0));
}

void pkg_kernels_free(Package *p) {
    for (int i = 0; i < p->n_kernels; i++) {
        PkgKernel *k = &p->kernels[i];
        free(k->name);
        free(k->source_ops);
        free(k->c_src);
        free(k->cuda_src);
    }
    free(p->kernels);
    for (int i = 0; i < p->n_slots; i++) free(p->slots[i].key);
    free(p->slots);
}
