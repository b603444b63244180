/* imports.c — the files a model is made of (docs/model-format.md, "Imports, presets, extends").
 *
 * files[0] is the file named on the command line. When it has "extends", it is a short file
 * that names another model file and sets its name, preset and config values; the chain ends
 * at the complete model (fe->root). A model file and the libraries it imports may import
 * block libraries ("import": paths relative to the importing file's folder); a library holds
 * "blocks" and may import others. Every file is read once (one imported through two paths is
 * known by its device and inode), errors inside a file point into that file, and a block
 * defined in two files is an error that names both places.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fe_internal.h"
#include "files.h"

/* ---- reading files -------------------------------------------------------------------- */

char *fe_read_text(const char *path, size_t *len) {
    char *text;
    FileReadStatus st = file_read_all(path, &text, len);
    if (st == FILE_READ_OK) return text;
    if (st != FILE_READ_CANNOT_OPEN) errno = st == FILE_READ_NO_MEMORY ? ENOMEM : EIO;
    return NULL;
}

char *fe_relative_path(const char *from, const char *name) {
    const char *slash = strrchr(from, '/');
    size_t dir = name[0] == '/' || !slash ? 0 : (size_t)(slash - from) + 1;
    char *p = malloc(dir + strlen(name) + 1);
    if (!p) return NULL;
    memcpy(p, from, dir);
    strcpy(p + dir, name);
    return p;
}

static const FeFile *file_of(const Frontend *fe, const cJSON *node) {
    for (int i = 1; i < fe->n_files; i++)
        if (json_doc_has(&fe->files[i]->doc, node)) return fe->files[i];
    return fe->files[0];
}

const JsonDoc *fe_doc(const Frontend *fe, const cJSON *node) { return &file_of(fe, node)->doc; }

const char *fe_node_path(const Frontend *fe, const cJSON *node) { return file_of(fe, node)->path; }

SrcLoc fe_ir_loc(const Frontend *fe, const cJSON *node) {
    const FeFile *f = file_of(fe, node);
    SrcLoc loc = json_loc(&f->doc, node);
    loc.file = f->ir_file;
    return loc;
}

static int push_file(Frontend *fe, FeFile *f) {
    if (fe->n_files == fe->cap_files) {
        int cap = fe->cap_files ? 2 * fe->cap_files : 8;
        FeFile **p = realloc(fe->files, (size_t)cap * sizeof *p);
        if (!p) return -1;
        fe->files = p;
        fe->cap_files = cap;
    }
    fe->files[fe->n_files++] = f;
    if (fe->m) f->ir_file = module_strdup(fe->m, f->path);
    return 0;
}

/* Returns 0, or the errno that makes f->path no file to read: a directory (EISDIR), a FIFO
 * or a device (EINVAL), which would fail late with EIO or block. A path that stat cannot see
 * stays unknown here; opening it then says why. */
static int set_identity(FeFile *f) {
    struct stat st;
    if (stat(f->path, &st) != 0) return 0;
    f->dev = (unsigned long long)st.st_dev;
    f->ino = (unsigned long long)st.st_ino;
    f->known = true;
    return S_ISDIR(st.st_mode) ? EISDIR : S_ISREG(st.st_mode) ? 0 : EINVAL;
}

int fe_add_first_file(Frontend *fe, const char *text, size_t len, const char *path) {
    FeFile *f = calloc(1, sizeof *f);
    if (!f || push_file(fe, f)) {
        free(f);
        return fe_error(fe, SRCLOC_NONE, "out of memory");
    }
    f->path = (char *)path; /* the caller's: not freed (fe_free_files skips files[0]) */
    (void)set_identity(f); /* the caller read it already */
    return json_doc_parse(&f->doc, text, len, f->path, fe->d);
}

void fe_name_files(Frontend *fe) {
    for (int i = 0; i < fe->n_files; i++) {
        if (!fe->files[i]->ir_file) fe->files[i]->ir_file = module_strdup(fe->m, fe->files[i]->path);
    }
}

void fe_free_files(Frontend *fe) {
    for (int i = 0; i < fe->n_files; i++) {
        json_doc_free(&fe->files[i]->doc);
        if (i > 0) {
            free(fe->files[i]->text);
            free(fe->files[i]->path);
        }
        free(fe->files[i]);
    }
    free(fe->files);
    free(fe->block_tab);
}

/* "import cycle: a.json -> lib/b.json -> a.json", at the name that closes it. */
static int report_cycle(Frontend *fe, const cJSON *at, const char *kind, const FeFile *from,
                        const FeFile *again) {
    const FeFile *chain[64];
    int n = 0;
    for (const FeFile *f = from; f && n < 64; f = f->importer) {
        chain[n++] = f;
        if (f == again) break;
    }
    char path[768] = "";
    size_t len = 0;
    for (int i = n - 1; i >= 0 && len < sizeof path; i--)
        len += (size_t)snprintf(path + len, sizeof path - len, "%s -> ", chain[i]->path);
    if (len < sizeof path) snprintf(path + len, sizeof path - len, "%s", again->path);
    else snprintf(path + sizeof path - 4, 4, "...");
    return fe_error_at(fe, at, "%s cycle: %s", kind, path);
}

static const FeFile *find_loaded(const Frontend *fe, const FeFile *f) {
    for (int i = 0; i < fe->n_files; i++)
        if (fe->files[i]->known && f->known && fe->files[i]->dev == f->dev && fe->files[i]->ino == f->ino)
            return fe->files[i];
    return NULL;
}

/* Opens the file named by the string node `at` (relative to `from`). *out is the file, read
 * now (*fresh) or before; a file on the chain being read is a cycle. */
static int open_file(Frontend *fe, FeFile *from, const cJSON *at, const char *kind, FeFile **out,
                     bool *fresh) {
    FeFile *f = calloc(1, sizeof *f);
    if (!f || !(f->path = fe_relative_path(from->path, at->valuestring))) {
        free(f);
        return fe_error(fe, SRCLOC_NONE, "out of memory");
    }
    int not_file = set_identity(f);
    const FeFile *seen = find_loaded(fe, f);
    int rc = 0;
    if (not_file && !seen) {
        rc = fe_error_at(fe, at, "cannot read %s '%s': %s",
                         strcmp(kind, "import") == 0 ? "imported file" : "model file", f->path,
                         not_file == EISDIR ? "it is a directory" : "not a regular file");
        free(f->path);
        free(f);
        return rc;
    }
    if (seen && seen->loading) rc = report_cycle(fe, at, kind, from, seen);
    if (seen || rc) {
        free(f->path);
        free(f);
        *out = (FeFile *)seen;
        *fresh = false;
        return rc;
    }
    size_t len = 0;
    f->text = fe_read_text(f->path, &len);
    if (!f->text) {
        rc = fe_error_at(fe, at, "cannot read %s '%s': %s", strcmp(kind, "import") == 0 ? "imported file" : "model file",
                         f->path, strerror(errno));
        free(f->path);
        free(f);
        return rc;
    }
    f->importer = from;
    if (push_file(fe, f)) {
        free(f->text);
        free(f->path);
        free(f);
        return fe_error(fe, SRCLOC_NONE, "out of memory");
    }
    *out = f;
    *fresh = true;
    return json_doc_parse(&f->doc, f->text, len, f->path, fe->d);
}

/* ---- extends -------------------------------------------------------------------------- */

int fe_load_extends(Frontend *fe, const cJSON **layers, int *n_layers) {
    static const char *const keys[] = {"extends", "model", "preset", "config", NULL};
    FeFile *f = fe->files[0];
    const cJSON *root = f->doc.root, *ext;
    const cJSON *chain[FE_MAX_EXTENDS];
    int n = 0, rc = 0;
    f->model_file = true;
    while (!rc && cJSON_IsObject(root) && (ext = cJSON_GetObjectItemCaseSensitive(root, "extends"))) {
        f->loading = true;
        if (fe_check_keys(fe, root, keys, "a file that extends another")) return -1;
        if (!cJSON_IsString(ext) || !ext->valuestring[0])
            return fe_error_at(fe, ext, "'extends' must name a model file, got %s", json_type_name(ext));
        if (n == FE_MAX_EXTENDS)
            return fe_error_at(fe, ext, "more than %d files extend one another", FE_MAX_EXTENDS);
        chain[n++] = root;
        bool fresh;
        rc = open_file(fe, f, ext, "extends", &f, &fresh);
        if (!rc) {
            f->model_file = true;
            root = f->doc.root;
        }
    }
    for (int i = 0; i < fe->n_files; i++) fe->files[i]->loading = false;
    fe->root = root;
    for (int i = 0; i < n; i++) layers[i] = chain[n - 1 - i];
    *n_layers = n;
    return rc;
}

/* ---- imports and the block table ------------------------------------------------------ */

static uint64_t hash_name(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static BlockSlot *find_slot(BlockSlot *tab, size_t cap, const char *name) {
    size_t i = (size_t)hash_name(name) & (cap - 1);
    while (tab[i].name && strcmp(tab[i].name, name) != 0) i = (i + 1) & (cap - 1);
    return &tab[i];
}

static int grow_blocks(Frontend *fe) {
    size_t cap = fe->block_cap ? 2 * fe->block_cap : 64;
    BlockSlot *tab = calloc(cap, sizeof *tab);
    if (!tab) return -1;
    for (size_t i = 0; i < fe->block_cap; i++)
        if (fe->block_tab[i].name) *find_slot(tab, cap, fe->block_tab[i].name) = fe->block_tab[i];
    free(fe->block_tab);
    fe->block_tab = tab;
    fe->block_cap = cap;
    return 0;
}

const cJSON *fe_find_block(const Frontend *fe, const char *name) {
    return fe->block_cap ? find_slot(fe->block_tab, fe->block_cap, name)->def : NULL;
}

static int define_block(Frontend *fe, const cJSON *def) {
    if (fe_check_block_def(fe, def)) return -1;
    if (2 * (fe->n_blocks + 1) > fe->block_cap && grow_blocks(fe))
        return fe_error(fe, SRCLOC_NONE, "out of memory");
    BlockSlot *s = find_slot(fe->block_tab, fe->block_cap, def->string);
    if (s->name) {
        SrcLoc first = json_key_loc(fe_doc(fe, s->def), s->def);
        return fe_error_key(fe, def, "block '%s' is defined twice: here and at %s:%d:%d", def->string,
                            first.file, first.line, first.col);
    }
    *s = (BlockSlot){def->string, def};
    fe->n_blocks++;
    return 0;
}

static int load_file_blocks(Frontend *fe, FeFile *file, const cJSON *obj);

static int load_imports(Frontend *fe, FeFile *file, const cJSON *list) {
    if (!list) return 0;
    if (!cJSON_IsArray(list))
        return fe_error_at(fe, list, "'import' must be a list of file names, got %s", json_type_name(list));
    for (const cJSON *e = list->child; e; e = e->next) {
        if (!cJSON_IsString(e) || !e->valuestring[0])
            return fe_error_at(fe, e, "'import' entries must be file names (strings)");
        FeFile *lib;
        bool fresh;
        if (open_file(fe, file, e, "import", &lib, &fresh)) return -1;
        if (lib->model_file) /* else it would count as read already, from one file and not another */
            return fe_error_at(fe, e, "'%s' is a model file of this model (its extends chain), not "
                               "a block library", lib->path);
        if (!fresh) continue; /* read already, through another import */
        static const char *const keys[] = {"import", "blocks", NULL};
        const cJSON *root = lib->doc.root;
        if (!cJSON_IsObject(root))
            return fe_error_at(fe, root, "an imported file must hold a JSON object, got %s", json_type_name(root));
        if (fe_check_keys(fe, root, keys, "an imported file (it may hold \"import\" and \"blocks\")") ||
            load_file_blocks(fe, lib, root))
            return -1;
    }
    return 0;
}

/* The file's imports first, then its own blocks. */
static int load_file_blocks(Frontend *fe, FeFile *file, const cJSON *obj) {
    file->loading = true;
    int rc = load_imports(fe, file, cJSON_GetObjectItemCaseSensitive(obj, "import"));
    const cJSON *blocks = cJSON_GetObjectItemCaseSensitive(obj, "blocks");
    if (!rc && blocks && !cJSON_IsObject(blocks))
        rc = fe_error_at(fe, blocks, "'blocks' must be an object, got %s", json_type_name(blocks));
    for (const cJSON *b = blocks ? blocks->child : NULL; b && !rc; b = b->next) rc = define_block(fe, b);
    file->loading = false;
    return rc;
}

int fe_load_blocks(Frontend *fe, const cJSON *model) {
    for (int i = 0; i < fe->n_files; i++)
        if (fe->files[i]->doc.root == model) return load_file_blocks(fe, fe->files[i], model);
    return fe_error(fe, SRCLOC_NONE, "internal error: the model's file is not known");
}

/* ---- presets -------------------------------------------------------------------------- */

/* Every preset: an object of values for variables of the model's config. */
static int check_presets(Frontend *fe, const cJSON *presets, const cJSON *config) {
    if (!cJSON_IsObject(presets))
        return fe_error_at(fe, presets, "'presets' must be an object (preset name -> config values), got %s",
                           json_type_name(presets));
    for (const cJSON *p = presets->child; p; p = p->next) {
        if (!fe_valid_name(p->string)) return fe_error_key(fe, p, "bad preset name '%s'", p->string);
        if (!cJSON_IsObject(p))
            return fe_error_at(fe, p, "preset '%s' must be an object of config values, got %s", p->string,
                               json_type_name(p));
        for (const cJSON *v = p->child; v; v = v->next)
            if (!cJSON_GetObjectItemCaseSensitive(config, v->string))
                return fe_error_key(fe, v, "preset '%s' sets '%s', which is not a config variable of the model",
                                    p->string, v->string);
    }
    return 0;
}

/* Takes the last -D preset=NAME out of *ov (into a copy in *owned); NULL when there is none. */
static const char *take_define(const ConfigOverride **ov, int *n_ov, ConfigOverride **owned) {
    const char *name = NULL;
    int n = 0;
    *owned = malloc(((size_t)*n_ov + 1) * sizeof **owned);
    if (!*owned) return NULL;
    for (int i = 0; i < *n_ov; i++) {
        const ConfigOverride *o = &(*ov)[i];
        if (strncmp(o->name, "preset=", 7) == 0 || strcmp(o->name, "preset") == 0) name = o->value;
        else (*owned)[n++] = *o;
    }
    *ov = *owned;
    *n_ov = n;
    return name;
}

static int unknown_preset(Frontend *fe, const cJSON *at, const char *name, const cJSON *presets) {
    char known[600] = "", msg[900];
    size_t len = 0;
    for (const cJSON *p = presets ? presets->child : NULL; p && len < sizeof known; p = p->next)
        len += (size_t)snprintf(known + len, sizeof known - len, "%s%s", len ? ", " : "", p->string);
    if (presets) snprintf(msg, sizeof msg, "unknown preset '%s' (the model has: %s)", name, known);
    else snprintf(msg, sizeof msg, "unknown preset '%s': the model has no \"presets\"", name);
    return at ? fe_error_at(fe, at, "%s", msg) : fe_error(fe, SRCLOC_NONE, "-D preset: %s", msg);
}

int fe_choose_preset(Frontend *fe, const cJSON *const *layers, int n_layers,
                     const ConfigOverride **ov, int *n_ov, ConfigOverride **owned,
                     const cJSON **preset) {
    const cJSON *presets = cJSON_GetObjectItemCaseSensitive(fe->root, "presets");
    const cJSON *config = cJSON_GetObjectItemCaseSensitive(fe->root, "config");
    *preset = NULL;
    /* `-D preset=` names a preset, so no config variable may be called that */
    const cJSON *reserved = cJSON_IsObject(config) ? cJSON_GetObjectItemCaseSensitive(config, "preset") : NULL;
    if (reserved)
        return fe_error_key(fe, reserved, "'preset' is reserved for choosing a preset "
                                          "(-D preset=NAME): name the config variable otherwise");
    if (presets && check_presets(fe, presets, config)) return -1;
    const char *name = take_define(ov, n_ov, owned);
    if (!*owned) return fe_error(fe, SRCLOC_NONE, "out of memory");
    const cJSON *at = NULL;
    for (int i = n_layers - 1; i >= 0 && !name && !at; i--)
        at = cJSON_GetObjectItemCaseSensitive(layers[i], "preset");
    if (!name && !at) at = cJSON_GetObjectItemCaseSensitive(fe->root, "preset");
    if (at && !cJSON_IsString(at))
        return fe_error_at(fe, at, "'preset' must name a preset, got %s", json_type_name(at));
    if (at) name = at->valuestring;
    if (!name) return 0;
    *preset = presets ? cJSON_GetObjectItemCaseSensitive(presets, name) : NULL;
    return *preset ? 0 : unknown_preset(fe, at, name, presets);
}
