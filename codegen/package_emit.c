/* package_emit.c — the text of cap.c and cap.cu.
 *
 * cap.c is self-contained so that it compiles anywhere with just a C compiler and OpenBLAS:
 *
 *   a banner (model, capc version, how to rebuild)
 *   the text of runtime/abi/cap_artifact.h (embedded into capc at build time), so the tables
 *     below are checked by the compiler against the very header the runtime reads
 *   codegen_c_prelude()
 *   every kernel's C source        (cpu target only)
 *   the static tables: state, per entry its inputs/outputs/steps/buffer refs, kernels,
 *     CUDA images (cubins and PTX as string literals)
 *   `const CapArtifact cap_artifact`, the one symbol the runtime looks up
 *
 * That one file is what --emit-src writes. The packager compiles the same text in pieces
 * (package_build.c): per kernel module the prelude and that module's kernels, and once the
 * head, the tables and `cap_artifact`, with the CUDA images linked in from their own object.
 * The pieces are cached one by one, so a change to the tables (a `-D lr=`) recompiles one
 * small file, not every kernel.
 *
 * cap.cu is codegen_cuda_prelude() followed by every kernel's CUDA source; NVRTC compiles
 * the prelude with one module's kernels at a time, and --emit-src writes all of it.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "package.h"

/* ---- C string literals ----------------------------------------------------------------- */

void pkg_c_escape(StrBuf *b, const char *s, size_t n) {
    if (!strbuf_reserve(b, n * 4)) return;
    char *out = b->data + b->len;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        /* '?' too: -std=c11 turns ??= and friends into trigraphs. */
        if (c == '\\' || c == '"' || c == '?') {
            *out++ = '\\';
            *out++ = (char)c;
        } else if (c >= 0x20 && c < 0x7f) {
            *out++ = (char)c;
        } else {
            *out++ = '\\';
            *out++ = (char)('0' + (c >> 6));
            *out++ = (char)('0' + ((c >> 3) & 7));
            *out++ = (char)('0' + (c & 7));
        }
    }
    b->len = (size_t)(out - b->data);
    b->data[b->len] = '\0';
}

/* "text" as a C string literal (NULL: an empty string). */
static void put_string(StrBuf *b, const char *s) {
    strbuf_puts(b, "\"");
    if (s != NULL) pkg_c_escape(b, s, strlen(s));
    strbuf_puts(b, "\"");
}

/* ---- small tables ------------------------------------------------------------------------- */

static void put_tensor_info(StrBuf *b, const char *name, DType dtype, const Shape *s) {
    int32_t dt = 0;
    pkg_cap_dtype(dtype, &dt); /* checked by pkg_build */
    strbuf_puts(b, "{");
    put_string(b, name);
    strbuf_printf(b, ", %d, %d, {", (int)dt, s->rank);
    for (int i = 0; i < s->rank; i++) strbuf_printf(b, "%s%lld", i ? ", " : "", (long long)s->dims[i]);
    strbuf_printf(b, "%s}, %lld}", s->rank == 0 ? "0" : "", (long long)shape_numel(s));
}

static int state_kind(ParamKind k) {
    switch (k) {
    case PARAM_WEIGHT: return CAP_STATE_WEIGHT;
    case PARAM_BUFFER: return CAP_STATE_BUFFER;
    case PARAM_DERIVED: return CAP_STATE_DERIVED;
    case PARAM_HPARAM: return CAP_STATE_HPARAM;
    default: return CAP_STATE_OPTIM;
    }
}

static void put_state_table(StrBuf *b, const Module *m) {
    if (m->n_params == 0) return;
    strbuf_puts(b, "/* The state table: weights, buffers, optimizer state, in module order. */\n"
                    "static const CapStateInfo capt_state[] = {\n");
    for (int i = 0; i < m->n_params; i++) {
        const Param *p = m->params[i];
        strbuf_printf(b, "    /* %d */ {", i);
        put_tensor_info(b, p->name, p->dtype, &p->shape);
        strbuf_printf(b, ", %d, %d, ", state_kind(p->kind), p->trainable ? 1 : 0);
        put_string(b, p->init);
        strbuf_puts(b, "},\n");
    }
    strbuf_puts(b, "};\n\n");
}

static const char *const SPACE_NAMES[] = {"CAP_BUF_ARENA", "CAP_BUF_STATE", "CAP_BUF_INPUT",
                                          "CAP_BUF_OUTPUT"};

static void put_entry_io(StrBuf *b, int e, const PkgEntry *entry) {
    const Function *f = entry->f;
    if (f->n_inputs > 0) {
        strbuf_printf(b, "static const CapTensorInfo capt_e%d_inputs[] = {\n", e);
        for (int i = 0; i < f->n_inputs; i++) {
            strbuf_puts(b, "    ");
            put_tensor_info(b, f->inputs[i]->name, f->inputs[i]->dtype, &f->inputs[i]->shape);
            strbuf_puts(b, ",\n");
        }
        strbuf_puts(b, "};\n");
    }
    if (f->n_outputs > 0) {
        strbuf_printf(b, "static const CapTensorInfo capt_e%d_outputs[] = {\n", e);
        for (int i = 0; i < f->n_outputs; i++) {
            strbuf_puts(b, "    ");
            put_tensor_info(b, f->output_names[i], f->outputs[i]->dtype, &f->outputs[i]->shape);
            strbuf_puts(b, ",\n");
        }
        strbuf_printf(b, "};\nstatic const int32_t capt_e%d_output_state[] = {", e);
        for (int i = 0; i < f->n_outputs; i++)
            strbuf_printf(b, "%s%d", i ? ", " : "", (int)entry->output_state[i]);
        strbuf_puts(b, "};\n");
    }
}

/* All of an entry's buffer refs in one array; each step points at its slice. */
static void put_entry_steps(StrBuf *b, int e, const PkgEntry *entry, const Package *p) {
    if (entry->n_steps == 0) return;
    strbuf_printf(b, "static const CapBufRef capt_e%d_args[] = {\n", e);
    for (int s = 0; s < entry->n_steps; s++) {
        const PkgStep *step = &entry->steps[s];
        strbuf_printf(b, "    /* step %d: %s */\n", s, p->kernels[step->kernel].name);
        for (int a = 0; a < step->n_args; a++) {
            const CapBufRef *r = &step->args[a];
            strbuf_printf(b, "    {%s, %d, %lld, %lld},\n", SPACE_NAMES[r->space], (int)r->index,
                           (long long)r->offset, (long long)r->bytes);
        }
    }
    strbuf_printf(b, "};\nstatic const CapStep capt_e%d_steps[] = {\n", e);
    int64_t first_arg = 0;
    for (int s = 0; s < entry->n_steps; s++) {
        const PkgStep *step = &entry->steps[s];
        strbuf_printf(b, "    {%d, %d, capt_e%d_args + %lld},\n", step->kernel, step->n_args, e,
                       (long long)first_arg);
        first_arg += step->n_args;
    }
    strbuf_puts(b, "};\n");
}

static void put_entries(StrBuf *b, const Package *p) {
    for (int e = 0; e < p->n_entries; e++) {
        strbuf_printf(b, "/* ---- entry @%s ---- */\n", p->entries[e].f->name);
        put_entry_io(b, e, &p->entries[e]);
        put_entry_steps(b, e, &p->entries[e], p);
        strbuf_puts(b, "\n");
    }
    if (p->n_entries == 0) return;
    strbuf_puts(b, "static const CapEntry capt_entries[] = {\n");
    for (int e = 0; e < p->n_entries; e++) {
        const PkgEntry *entry = &p->entries[e];
        const Function *f = entry->f;
        strbuf_puts(b, "    {");
        put_string(b, f->name);
        if (f->n_inputs > 0) strbuf_printf(b, ", %d, capt_e%d_inputs", f->n_inputs, e);
        else strbuf_puts(b, ", 0, NULL");
        if (f->n_outputs > 0)
            strbuf_printf(b, ", %d, capt_e%d_outputs, capt_e%d_output_state", f->n_outputs, e, e);
        else strbuf_puts(b, ", 0, NULL, NULL");
        strbuf_printf(b, ", %lld", (long long)entry->arena_bytes);
        if (entry->n_steps > 0) strbuf_printf(b, ", %d, capt_e%d_steps},\n", entry->n_steps, e);
        else strbuf_puts(b, ", 0, NULL},\n");
    }
    strbuf_puts(b, "};\n\n");
}

static void put_kernel_table(StrBuf *b, const Package *p, bool cpu) {
    if (p->n_kernels == 0) return;
    strbuf_puts(b, "static const CapKernel capt_kernels[] = {\n");
    for (int k = 0; k < p->n_kernels; k++) {
        const ArtifactKernel *pk = &p->kernels[k];
        char ops[600];
        if (pk->merged > 1)
            snprintf(ops, sizeof ops, "%s (+%d identical)", pk->source_ops, pk->merged - 1);
        else snprintf(ops, sizeof ops, "%s", pk->source_ops);
        strbuf_printf(b, "    /* %d */ {", k);
        put_string(b, pk->name);
        strbuf_printf(b, ", %s, %d, %lld, %d, %d, ", cpu ? pk->name : "NULL", pk->n_args,
                       (long long)pk->cuda_grid, pk->cuda_block, pk->cuda_shared_bytes);
        put_string(b, ops);
        strbuf_printf(b, ", %d},\n", pk->module);
    }
    strbuf_puts(b, "};\n\n");
}

void pkg_cuda_image_symbol(int i, char *out, size_t size) {
    snprintf(out, size, "capt_cuda_image%d", i);
}

/* The images: as sized string literals (C drops the terminating NUL), or, split, declared
 * here and defined by the assembly file the packager links in. */
static void put_cuda_images(StrBuf *b, const PkgCudaImage *images, int n, bool split) {
    for (int i = 0; i < n; i++) {
        char sym[32];
        pkg_cuda_image_symbol(i, sym, sizeof sym);
        if (split) {
            strbuf_printf(b, "extern const unsigned char %s[%zu] __attribute__((visibility("
                           "\"hidden\")));\n", sym, images[i].size);
            continue;
        }
        strbuf_printf(b, "static const unsigned char %s[%zu] =\n", sym, images[i].size);
        for (size_t at = 0; at < images[i].size; at += 64) {
            size_t len = images[i].size - at < 64 ? images[i].size - at : 64;
            strbuf_puts(b, "    \"");
            pkg_c_escape(b, (const char *)images[i].data + at, len);
            strbuf_puts(b, "\"\n");
        }
        strbuf_puts(b, ";\n");
    }
    if (n == 0) return;
    strbuf_puts(b, "static const CapCudaImage capt_cuda_images[] = {\n");
    for (int i = 0; i < n; i++) {
        strbuf_puts(b, "    {");
        put_string(b, images[i].arch);
        strbuf_printf(b, ", capt_cuda_image%d, %zu, \"%s\", %d},\n", i, images[i].size,
                       images[i].source_hash, images[i].module);
    }
    strbuf_puts(b, "};\n\n");
}

/* ---- config and the artifact ------------------------------------------------------------- */

/* Shortest %g that reads back as the same double; JSON has no inf/nan, so those are null. */
static void put_json_number(StrBuf *b, double v, bool is_int) {
    if (is_int) {
        strbuf_printf(b, "%lld", (long long)v);
        return;
    }
    if (!isfinite(v)) {
        strbuf_puts(b, "null");
        return;
    }
    char text[64];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(text, sizeof text, "%.*g", prec, v);
        if (strtod(text, NULL) == v) break;
    }
    strbuf_puts(b, text);
}

/* {"batch":16,"dropout":0.1}: config names are identifiers, so they need no JSON escapes. */
static char *config_json(const Module *m) {
    StrBuf b = {0};
    strbuf_puts(&b, "{");
    for (int i = 0; i < m->n_config; i++) {
        strbuf_printf(&b, "%s\"%s\":", i ? "," : "", m->config[i].name);
        put_json_number(&b, m->config[i].value, m->config[i].is_int);
    }
    strbuf_puts(&b, "}");
    return strbuf_take(&b);
}

static int64_t vocab_size(const Module *m) {
    const ConfigVar *v = module_find_config(m, "vocab");
    return v != NULL ? (int64_t)v->value : 0;
}

static void put_artifact(StrBuf *b, const Package *p, const PackageOptions *opts, int n_images) {
    char *json = config_json(p->m);
    strbuf_puts(b, "/* The one symbol the runtime looks up (CAP_ARTIFACT_SYMBOL). */\n"
                    "__attribute__((visibility(\"default\"))) const CapArtifact cap_artifact = {\n"
                    "    .version = CAP_ARTIFACT_VERSION,\n    .model_name = ");
    put_string(b, p->m->name);
    strbuf_puts(b, ",\n    .config_json = ");
    put_string(b, json != NULL ? json : "{}");
    strbuf_puts(b, ",\n    .capc_version = \"" CAPC_VERSION "\",\n    .compile_flags = ");
    put_string(b, opts->compile_flags);
    strbuf_printf(b, ",\n    .n_state = %d,\n    .state = %s,\n", p->m->n_params,
                   p->m->n_params > 0 ? "capt_state" : "NULL");
    strbuf_printf(b, "    .n_entries = %d,\n    .entries = %s,\n", p->n_entries,
                   p->n_entries > 0 ? "capt_entries" : "NULL");
    strbuf_printf(b, "    .n_kernels = %d,\n    .kernels = %s,\n", p->n_kernels,
                   p->n_kernels > 0 ? "capt_kernels" : "NULL");
    strbuf_printf(b, "    .vocab_size = %lld,\n", (long long)vocab_size(p->m));
    strbuf_puts(b, "    .pad_id = 0, .start_id = 1, .end_id = 2, .unk_id = 3,\n");
    strbuf_printf(b, "    .n_cuda_images = %d,\n    .cuda_images = %s,\n", n_images,
                   n_images > 0 ? "capt_cuda_images" : "NULL");
    strbuf_printf(b, "    .set_threads = cap_set_threads,\n    .n_cuda_modules = %d,\n};\n",
                   n_images > 0 ? p->n_modules : 0);
    free(json);
}

static void put_banner(StrBuf *b, const Package *p, const PackageOptions *opts) {
    strbuf_puts(b, "/* cap.c — generated by capc " CAPC_VERSION " from model '");
    strbuf_puts(b, p->m->name);
    strbuf_printf(b, "'%s%s. Do not edit: change the model\n * and recompile. The tables at "
                      "the end follow cap_artifact.h (embedded below);\n * docs/artifact.md "
                      "explains them. */\n\n",
                   opts->compile_flags != NULL && *opts->compile_flags ? " with " : "",
                   opts->compile_flags != NULL ? opts->compile_flags : "");
}

/* What both forms of cap.c start with: the banner, the ABI header, the prelude. */
static void put_c_head(StrBuf *b, const Package *p, const PackageOptions *opts) {
    put_banner(b, p, opts);
    strbuf_puts(b, capc_artifact_header_text);
    strbuf_puts(b, "\n#include <string.h> /* memcpy: the copy kernels */\n\n");
    strbuf_puts(b, codegen_c_prelude());
}

static void put_c_tables(StrBuf *b, const Package *p, const PackageOptions *opts,
                         const PkgCudaImage *images, int n_images, bool split) {
    bool cpu = (opts->targets & TARGET_CPU) != 0;
    strbuf_puts(b, "/* ---- tables ---- */\n\n");
    put_state_table(b, p->m);
    put_entries(b, p);
    put_kernel_table(b, p, cpu);
    put_cuda_images(b, images, n_images, split);
    put_artifact(b, p, opts, n_images);
}

char *pkg_render_c(const Package *p, const PackageOptions *opts, const PkgCudaImage *images,
                   int n_images) {
    StrBuf b = {0};
    put_c_head(&b, p, opts);
    if ((opts->targets & TARGET_CPU) != 0) {
        strbuf_puts(&b, "\n/* ---- kernels ---- */\n\n");
        for (int k = 0; k < p->n_kernels; k++) {
            strbuf_puts(&b, p->kernels[k].c_src);
            strbuf_puts(&b, "\n");
        }
    }
    put_c_tables(&b, p, opts, images, n_images, false);
    return strbuf_take(&b);
}

char *pkg_render_c_module(const Package *p, int module) {
    StrBuf b = {0};
    /* Nothing here may depend on the other modules (not even their number): the text is the
     * module's cache key. */
    strbuf_printf(&b, "/* cap.c, kernel group %d — generated by capc " CAPC_VERSION " from model "
                   "'%s'. */\n#define CAP_SHARED_ELSEWHERE 1\n", p->module_group[module], p->m->name);
    strbuf_puts(&b, codegen_c_prelude());
    strbuf_puts(&b, "\n");
    for (int k = 0; k < p->n_kernels; k++) {
        if (p->kernels[k].module != module) continue;
        strbuf_puts(&b, p->kernels[k].c_src);
        strbuf_puts(&b, "\n");
    }
    return strbuf_take(&b);
}

char *pkg_render_c_tables(const Package *p, const PackageOptions *opts,
                          const PkgCudaImage *images, int n_images) {
    StrBuf b = {0};
    put_c_head(&b, p, opts);
    if ((opts->targets & TARGET_CPU) != 0) {
        strbuf_puts(&b, "\n/* the kernels, compiled module by module */\n");
        for (int k = 0; k < p->n_kernels; k++)
            strbuf_printf(&b, "void %s(void *const *bufs);\n", p->kernels[k].name);
        strbuf_puts(&b, "\n");
    }
    put_c_tables(&b, p, opts, images, n_images, true);
    return strbuf_take(&b);
}

char *pkg_render_cuda(const Package *p, int module) {
    StrBuf b = {0};
    strbuf_puts(&b, "/* cap.cu — generated by capc " CAPC_VERSION " from model '");
    strbuf_puts(&b, p->m->name);
    if (module >= 0) strbuf_printf(&b, "', kernel group %d. Compiled by NVRTC. */\n\n",
                                    p->module_group[module]);
    else strbuf_puts(&b, "'. Every kernel of cap.so, compiled by NVRTC module by module. */\n\n");
    strbuf_puts(&b, codegen_cuda_prelude());
    strbuf_puts(&b, "\n");
    for (int k = 0; k < p->n_kernels; k++) {
        if (module >= 0 && p->kernels[k].module != module) continue;
        strbuf_puts(&b, p->kernels[k].cuda_src);
        strbuf_puts(&b, "\n");
    }
    return strbuf_take(&b);
}
