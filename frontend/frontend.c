/* frontend.c — the frontend's entry points (frontend.h) and the model's top level: it parses
 * the JSON with positions, evaluates config, checks the block table, declares the inputs of
 * the `forward` function, runs the body and binds the outputs; then the other entry points
 * (entries.c). Statements are in
 * statements.c, config and expressions in config.c, attributes in op_attrs.c.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fe_internal.h"

/* ---- errors and locations ------------------------------------------------------------- */

int fe_error(Frontend *fe, SrcLoc loc, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    diag_vset(fe->d, loc, fmt, ap);
    va_end(ap);
    return -1;
}

int fe_error_at(Frontend *fe, const cJSON *node, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    diag_vset(fe->d, json_loc(fe_doc(fe, node), node), fmt, ap);
    va_end(ap);
    return -1;
}

int fe_error_key(Frontend *fe, const cJSON *node, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    diag_vset(fe->d, json_key_loc(fe_doc(fe, node), node), fmt, ap);
    va_end(ap);
    return -1;
}

int fe_check_keys(Frontend *fe, const cJSON *obj, const char *const *allowed, const char *what) {
    for (const cJSON *m = obj->child; m; m = m->next) {
        bool ok = false;
        for (int i = 0; allowed[i] && !ok; i++) ok = strcmp(allowed[i], m->string) == 0;
        if (!ok) return fe_error_key(fe, m, "unknown key '%s' in %s", m->string, what);
    }
    return 0;
}

const cJSON *fe_member(Frontend *fe, const cJSON *obj, const char *key, bool required,
                       const char *what, int *rc) {
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!m && required && *rc == 0) *rc = fe_error_at(fe, obj, "missing key '%s' in %s", key, what);
    return m;
}

/* ---- top level ------------------------------------------------------------------------ */

int fe_load_inputs(const Ctx *c, const cJSON *inputs) {
    static const char *const keys[] = {"dtype", "shape", NULL};
    Frontend *fe = c->fe;
    if (!cJSON_IsObject(inputs))
        return fe_error_at(fe, inputs, "'inputs' must be an object, got %s", json_type_name(inputs));
    for (const cJSON *in = inputs->child; in; in = in->next) {
        if (!fe_valid_name(in->string))
            return fe_error_key(fe, in, "bad input name '%s': %s", in->string,
                                fe_name_rule(in->string));
        if (!cJSON_IsObject(in))
            return fe_error_at(fe, in, "input '%s' must be an object with dtype and shape, got %s",
                               in->string, json_type_name(in));
        int rc = 0;
        if (fe_check_keys(fe, in, keys, "an input")) return -1;
        const cJSON *dt = fe_member(fe, in, "dtype", false, "", &rc);
        const cJSON *shape_node = fe_member(fe, in, "shape", true, "an input", &rc);
        DType dtype = DT_F32;
        if (dt && (!cJSON_IsString(dt) || !dtype_from_name(dt->valuestring, &dtype) ||
                   (dtype != DT_F32 && dtype != DT_I32)))
            return fe_error_at(fe, dt, "'dtype' must be \"f32\" or \"i32\"");
        Shape shape;
        char what[160];
        snprintf(what, sizeof what, "shape of input '%s'", in->string);
        if (rc || fe_shape(c, shape_node, what, false, &shape)) return -1;
        Value *v = func_add_input(fe->fn, in->string, dtype, shape);
        if (fe_env_bind(c->env, in->string, v)) return fe_error(fe, SRCLOC_NONE, "out of memory");
    }
    return 0;
}

/* An output "%NAME" names a value of the function by its IR name (the scope path and the `out`
 * name, `{expr}` interpolated), so an entry can return a value computed inside a block, such
 * as the captioners' cross-attention probabilities (docs/model-format.md, "Entries"). */
static int ir_value_output(const Ctx *c, const cJSON *o, Value **v) {
    char *name = fe_name(c, o, "an output");
    if (!name) return -1;
    *v = name[1] ? func_find_value(c->fe->fn, name + 1) : NULL;
    int rc = *v ? 0
                : fe_error_at(c->fe, o,
                              "function '%s' has no value named '%s' (a '%%NAME' output is a "
                              "value's IR name: its scope path and out name, as `capc "
                              "--dump-ir` prints it)", c->fe->fn->name, name);
    free(name);
    return rc;
}

int fe_load_outputs(const Ctx *c, const cJSON *outputs) {
    Frontend *fe = c->fe;
    if (!cJSON_IsObject(outputs))
        return fe_error_at(fe, outputs, "'outputs' must be an object, got %s", json_type_name(outputs));
    for (const cJSON *o = outputs->child; o; o = o->next) {
        if (!fe_valid_name(o->string))
            return fe_error_key(fe, o, "bad output name '%s'", o->string);
        if (!cJSON_IsString(o))
            return fe_error_at(fe, o, "output '%s' must name a value, got %s", o->string, json_type_name(o));
        Value *v = NULL;
        if (o->valuestring[0] == '%') {
            if (ir_value_output(c, o, &v)) return -1;
        } else if (!(v = fe_env_find(c->env, o->valuestring))) {
            return fe_error_at(fe, o, "undefined value '%s'", o->valuestring);
        }
        func_add_output(fe->fn, o->string, v);
    }
    return 0;
}

static int load_frozen(Frontend *fe, const cJSON *frozen) {
    if (!frozen) return 0;
    if (!cJSON_IsArray(frozen))
        return fe_error_at(fe, frozen, "'frozen' must be a list of parameter name prefixes, got %s",
                           json_type_name(frozen));
    for (const cJSON *p = frozen->child; p; p = p->next)
        if (!cJSON_IsString(p) || !p->valuestring[0])
            return fe_error_at(fe, p, "'frozen' entries must be parameter name prefixes (strings)");
    fe->frozen = frozen;
    return 0;
}

/* "model" of the nearest extending file that sets it, else the model's own. */
static const cJSON *model_name(Frontend *fe, const cJSON *const *layers, int n_layers) {
    for (int i = n_layers - 1; i >= 0; i--) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(layers[i], "model");
        if (name) return name;
    }
    int rc = 0;
    return fe_member(fe, fe->root, "model", true, "the model", &rc);
}

/* Config: the model's, the chosen preset's values, the extending files' (nearest last), -D. */
static int load_config(Frontend *fe, const cJSON *const *layers, int n_layers,
                       const ConfigOverride *ov, int n_ov) {
    const cJSON *cfg[FE_MAX_EXTENDS + 1];
    int n_cfg = 0;
    ConfigOverride *owned = NULL;
    int rc = fe_choose_preset(fe, layers, n_layers, &ov, &n_ov, &owned, &cfg[0]);
    if (!rc && cfg[0]) n_cfg++;
    for (int i = 0; i < n_layers && !rc; i++) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(layers[i], "config");
        if (c) cfg[n_cfg++] = c;
    }
    if (!rc)
        rc = fe_load_config(fe, cJSON_GetObjectItemCaseSensitive(fe->root, "config"), cfg, n_cfg, ov, n_ov);
    free(owned);
    return rc;
}

static int load_model(Frontend *fe, const ConfigOverride *ov, int n_ov) {
    static const char *const keys[] = {"model", "config", "inputs", "frozen", "blocks",
                                       "body", "outputs", "train", "entries", "functions",
                                       "import", "presets", "preset", NULL};
    const cJSON *layers[FE_MAX_EXTENDS];
    int n_layers = 0;
    if (fe_load_extends(fe, layers, &n_layers)) return -1;
    const cJSON *root = fe->root;
    if (!cJSON_IsObject(root))
        return fe_error_at(fe, root, "a model file must hold a JSON object, got %s", json_type_name(root));
    if (fe_check_keys(fe, root, keys, "the model")) return -1;
    int rc = 0;
    const cJSON *name = model_name(fe, layers, n_layers);
    const cJSON *inputs = fe_member(fe, root, "inputs", true, "the model", &rc);
    const cJSON *body = fe_member(fe, root, "body", true, "the model", &rc);
    const cJSON *outputs = fe_member(fe, root, "outputs", true, "the model", &rc);
    if (rc || !name) return -1;
    if (!cJSON_IsString(name) || !fe_valid_name(name->valuestring))
        return fe_error_at(fe, name, "'model' must be a name of letters, digits, '_' and '.'");
    fe->m = module_new(name->valuestring);
    fe_name_files(fe);
    fe->fn = module_add_function(fe->m, "forward");
    if (load_config(fe, layers, n_layers, ov, n_ov) ||
        load_frozen(fe, cJSON_GetObjectItemCaseSensitive(root, "frozen")) ||
        fe_load_blocks(fe, root) ||
        fe_load_functions(fe, cJSON_GetObjectItemCaseSensitive(root, "functions")))
        return -1;
    Env env = {0};
    Ctx c = {fe, &env, "", NULL, NULL};
    rc = fe_load_inputs(&c, inputs);
    if (!rc) rc = fe_run_body(&c, body, "'body'");
    if (!rc) rc = fe_load_outputs(&c, outputs);
    if (!rc) rc = fe_load_train(&c, cJSON_GetObjectItemCaseSensitive(root, "train"));
    if (!rc) rc = fe_load_entries(fe, cJSON_GetObjectItemCaseSensitive(root, "entries"));
    fe_env_free(&env);
    return rc;
}

/* ---- entry points --------------------------------------------------------------------- */

int frontend_parse_define(const char *arg, ConfigOverride *o, Diag *d) {
    const char *eq = arg ? strchr(arg, '=') : NULL;
    if (!eq || eq == arg || !eq[1]) {
        diag_set(d, SRCLOC_NONE, "bad -D '%s': expected NAME=VALUE", arg ? arg : "");
        return -1;
    }
    for (const char *p = arg; p < eq; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_')) {
            diag_set(d, SRCLOC_NONE, "bad -D '%s': expected NAME=VALUE", arg);
            return -1;
        }
    o->name = arg;
    o->value = eq + 1;
    return 0;
}

/* An error's file name outlives the frontend: files other than the caller's are copied. */
static void keep_diag_file(Diag *d, const char *filename) {
    if (!d->loc.file || d->loc.file == filename || d->loc.file == DIAG_FILE_IN_DIAG) return;
    snprintf(d->file, sizeof d->file, "%s", d->loc.file);
    d->loc.file = DIAG_FILE_IN_DIAG;
}

Module *frontend_load_text(const char *text, size_t len, const char *filename,
                           const ConfigOverride *overrides, int n_overrides, Diag *d) {
    Frontend fe = {.d = d};
    memset(d, 0, sizeof *d);
    if (!filename) filename = "<model>";
    int rc = fe_add_first_file(&fe, text, len, filename);
    if (!rc) rc = load_model(&fe, overrides, n_overrides);
    if (rc) keep_diag_file(d, filename);
    for (int i = 0; !rc && i < fe.n_files; i++) module_add_input_file(fe.m, fe.files[i]->path);
    fe_free_files(&fe);
    fe_free_functions(fe.csrc);
    free(fe.config);
    free(fe.cfg_stack);
    if (rc) {
        module_free(fe.m);
        return NULL;
    }
    return fe.m;
}

Module *frontend_load_file(const char *path, const ConfigOverride *overrides, int n_overrides,
                           Diag *d) {
    memset(d, 0, sizeof *d);
    size_t len;
    char *text = fe_read_text(path, &len);
    if (!text) {
        diag_set(d, SRCLOC_NONE, "cannot open model file '%s': %s", path, strerror(errno));
        return NULL;
    }
    Module *m = frontend_load_text(text, len, path, overrides, n_overrides, d);
    free(text);
    return m;
}
