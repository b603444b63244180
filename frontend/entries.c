/* entries.c — the model file's "entries" section (docs/model-format.md, "Entries"): more
 * entry points of the module besides `forward`, such as the captioners' `encode` and
 * `decode_step` for sampling.
 *
 * Each entry is {"inputs", "body", "outputs"} exactly like the top level and builds one IR
 * function of that name with the same statements and blocks. Entries run after `forward`, so
 * every parameter already exists: an entry's `param` statement binds forward's parameter of
 * that full name (dtype and shape must agree), and one forward lacks is an error. That keeps
 * one parameter table for every entry point (docs/decisions.md) while letting entries reuse
 * the blocks, which declare their parameters with `param` statements.
 */
#include <string.h>

#include "fe_internal.h"

/* Functions the compiler itself builds: an entry may not take their names. */
static const char *const RESERVED[] = {"forward", "eval_loss", "train_step", NULL};

int fe_entry_param(const Ctx *c, const cJSON *at, const char *full_name, DType dtype,
                   const Shape *shape) {
    const Param *p = module_find_param(c->fe->m, full_name);
    if (!p)
        return fe_error_at(c->fe, at,
                           "entry '%s' declares parameter '%s' that forward does not have "
                           "(entries may only use forward's parameters)",
                           c->fe->fn->name, full_name);
    if (p->dtype != dtype || !shape_equal(&p->shape, shape)) {
        char want[160], got[160];
        type_format(p->dtype, &p->shape, want, sizeof want);
        type_format(dtype, shape, got, sizeof got);
        return fe_error_at(c->fe, at, "parameter '%s' is %s here but %s in forward (line %d)",
                           full_name, got, want, p->loc.line);
    }
    return 0;
}

static int load_entry(Frontend *fe, const cJSON *entry) {
    static const char *const keys[] = {"inputs", "body", "outputs", NULL};
    if (!fe_valid_name(entry->string))
        return fe_error_key(fe, entry, "bad entry name '%s': %s", entry->string,
                            fe_name_rule(entry->string));
    for (int i = 0; RESERVED[i]; i++)
        if (strcmp(RESERVED[i], entry->string) == 0)
            return fe_error_key(fe, entry, "entry name '%s' is reserved (the compiler builds it)",
                                entry->string);
    if (!cJSON_IsObject(entry))
        return fe_error_at(fe, entry, "entry '%s' must be an object with inputs, body and outputs, got %s",
                           entry->string, json_type_name(entry));
    if (fe_check_keys(fe, entry, keys, "an entry")) return -1;
    int rc = 0;
    const cJSON *inputs = fe_member(fe, entry, "inputs", true, "an entry", &rc);
    const cJSON *body = fe_member(fe, entry, "body", true, "an entry", &rc);
    const cJSON *outputs = fe_member(fe, entry, "outputs", true, "an entry", &rc);
    if (rc) return -1;
    /* Duplicate keys were rejected by the JSON reader, so the name is still free. */
    Function *forward = fe->fn;
    fe->fn = module_add_function(fe->m, entry->string);
    fe->in_entry = true;
    Env env = {0};
    Ctx c = {fe, &env, "", NULL, NULL};
    rc = fe_load_inputs(&c, inputs);
    if (!rc) rc = fe_run_body(&c, body, "entry body");
    if (!rc) rc = fe_load_outputs(&c, outputs);
    fe_env_free(&env);
    fe->in_entry = false;
    fe->fn = forward;
    return rc;
}

int fe_load_entries(Frontend *fe, const cJSON *entries) {
    if (!entries) return 0;
    if (!cJSON_IsObject(entries))
        return fe_error_at(fe, entries, "'entries' must be an object of entry points, got %s",
                           json_type_name(entries));
    for (const cJSON *e = entries->child; e; e = e->next)
        if (load_entry(fe, e)) return -1;
    return 0;
}
