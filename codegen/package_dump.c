/* package_dump.c — what `capc --dump-ir=DIR` shows of code generation: every entry point's
 * kernels as rendered (NN-kernels.c and NN-kernels.cu) and its memory plan (NN-memplan.txt).
 *
 * The kernel files list, per entry, its launches in order (kernel name and the IR ops it
 * runs), then the source of each kernel the entry is the first to use; a kernel shared with
 * an earlier entry is named, not repeated. */
#include <stdlib.h>
#include <string.h>

#include "diag.h"
#include "package.h"

static void dump_entry(const Package *p, int i, bool cuda, bool *shown, StrBuf *b) {
    const PkgEntry *e = &p->entries[i];
    strbuf_printf(b, "\n/* ==== @%s: %d kernels, %d launches (%d output/state copies) ==== */\n",
                   e->f->name, e->n_kernels, e->n_steps, e->n_copies);
    for (int s = 0; s < e->n_steps; s++) {
        const ArtifactKernel *k = &p->kernels[e->steps[s].kernel];
        strbuf_printf(b, "/* %4d  %s: %s */\n", s, k->name, k->source_ops);
    }
    for (int s = 0; s < e->n_steps; s++) {
        int k = e->steps[s].kernel;
        if (shown[k]) continue;
        shown[k] = true;
        strbuf_puts(b, "\n");
        strbuf_puts(b, cuda ? p->kernels[k].cuda_src : p->kernels[k].c_src);
    }
}

static int dump_kernels(const Package *p, const char *path, bool cuda, Diag *d) {
    StrBuf b = {0};
    bool *shown = calloc((size_t)p->n_kernels + 1, sizeof *shown);
    if (shown == NULL) {
        diag_msg(d, "out of memory");
        return -1;
    }
    strbuf_puts(&b, cuda ? codegen_cuda_prelude() : codegen_c_prelude());
    for (int i = 0; i < p->n_entries; i++) dump_entry(p, i, cuda, shown, &b);
    free(shown);
    char *text = strbuf_take(&b);
    if (text == NULL) {
        diag_msg(d, "out of memory");
        return -1;
    }
    int rc = pkg_write_file(path, text, d);
    free(text);
    return rc;
}

static char *path_of(const char *dir, const char *stem, const char *ext) {
    size_t size = strlen(dir) + strlen(stem) + strlen(ext) + 3;
    char *path = malloc(size);
    if (path != NULL) snprintf(path, size, "%s/%s.%s", dir, stem, ext);
    return path;
}

int package_dump_kernels(const Package *p, const char *dir, const char *stem, Diag *d) {
    if (diag_make_dirs(d, dir) != 0) return -1;
    char *c = path_of(dir, stem, "c"), *cu = path_of(dir, stem, "cu");
    int rc = c != NULL && cu != NULL ? 0 : -1;
    if (rc != 0) diag_msg(d, "out of memory");
    if (rc == 0) rc = dump_kernels(p, c, false, d);
    if (rc == 0) rc = dump_kernels(p, cu, true, d);
    free(c);
    free(cu);
    return rc;
}

int package_dump_memplan(const Package *p, const char *dir, const char *stem, Diag *d) {
    if (diag_make_dirs(d, dir) != 0) return -1;
    char *path = path_of(dir, stem, "txt");
    if (path == NULL) {
        diag_msg(d, "out of memory");
        return -1;
    }
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    int rc = out != NULL ? 0 : -1;
    if (out != NULL) {
        fprintf(out, "# capc memory plan: arena offsets and lifetimes (times: the first op "
                     "index of each kernel's step) per value\n");
        for (int i = 0; i < p->n_entries; i++) {
            fprintf(out, "\n");
            memplan_print(out, p->entries[i].f, &p->plans[i]);
        }
        fclose(out);
    }
    if (rc == 0 && text != NULL) rc = pkg_write_file(path, text, d);
    else diag_msg(d, "out of memory");
    free(text);
    free(path);
    return rc;
}
