/* train.c — the model file's "train" section (docs/model-format.md, "Training") -> the
 * module's TrainSpec (ir.h). Every number is an expression over config variables, so
 * `-D lr=3e-4` reaches the optimizer. What it keeps true: the spec it stores is complete and
 * in range (positive lr and eps, betas in [0,1), non-negative decay and clipping, a schedule
 * whose sizes make sense), `loss` names an output of `forward`, and every group prefix
 * matches at least one parameter; otherwise it reports the JSON node at fault.
 */
#include <string.h>

#include "fe_internal.h"

/* A real-valued expression at node (absent: *out keeps its default). */
static int real_field(const Ctx *c, const cJSON *obj, const char *key, double *out) {
    const cJSON *node = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!node) return 0;
    char what[96];
    snprintf(what, sizeof what, "'%s'", key);
    ExprValue v;
    if (fe_eval(c, node, what, &v)) return -1;
    *out = expr_to_double(v);
    return 0;
}

static int int_field(const Ctx *c, const cJSON *obj, const char *key, int64_t *out) {
    const cJSON *node = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!node) return 0;
    char what[96];
    snprintf(what, sizeof what, "'%s'", key);
    return fe_eval_int(c, node, what, out);
}

/* Fails at obj[key] (or obj) when cond is false. */
static int check(const Ctx *c, const cJSON *obj, const char *key, bool cond, const char *msg) {
    if (cond) return 0;
    const cJSON *node = cJSON_GetObjectItemCaseSensitive(obj, key);
    return fe_error_at(c->fe, node ? node : obj, "'%s' %s", key, msg);
}

static int load_loss(const Ctx *c, const cJSON *train, TrainSpec *t) {
    const cJSON *loss = cJSON_GetObjectItemCaseSensitive(train, "loss");
    if (!loss) return 0;
    if (!cJSON_IsString(loss))
        return fe_error_at(c->fe, loss, "'loss' must name an output, got %s", json_type_name(loss));
    t->loss = module_strdup(c->fe->m, loss->valuestring);
    return 0;
}

static int check_loss_is_output(const Ctx *c, const cJSON *train, const TrainSpec *t) {
    const Function *f = c->fe->fn;
    for (int i = 0; i < f->n_outputs; i++)
        if (strcmp(f->output_names[i], t->loss) == 0) return 0;
    const cJSON *loss = cJSON_GetObjectItemCaseSensitive(train, "loss");
    return fe_error_at(c->fe, loss ? loss : train, "train loss '%s' is not one of the model's outputs",
                       t->loss);
}

static int load_optimizer(const Ctx *c, const cJSON *train, TrainSpec *t) {
    const cJSON *opt = cJSON_GetObjectItemCaseSensitive(train, "optimizer");
    if (opt && (!cJSON_IsString(opt) || !optimizer_from_name(opt->valuestring, &t->optimizer)))
        return fe_error_at(c->fe, opt, "'optimizer' must be \"adam\" or \"adamw\"");
    const cJSON *betas = cJSON_GetObjectItemCaseSensitive(train, "betas");
    if (betas) {
        if (!cJSON_IsArray(betas) || cJSON_GetArraySize(betas) != 2)
            return fe_error_at(c->fe, betas, "'betas' must be a list of two numbers [beta1, beta2]");
        ExprValue b1, b2;
        if (fe_eval(c, betas->child, "beta1", &b1) || fe_eval(c, betas->child->next, "beta2", &b2))
            return -1;
        t->beta1 = expr_to_double(b1);
        t->beta2 = expr_to_double(b2);
        if (!(t->beta1 >= 0 && t->beta1 < 1 && t->beta2 >= 0 && t->beta2 < 1))
            return fe_error_at(c->fe, betas, "'betas' must each lie in [0, 1)");
    }
    if (real_field(c, train, "lr", &t->lr) || real_field(c, train, "eps", &t->eps) ||
        real_field(c, train, "weight_decay", &t->weight_decay) ||
        real_field(c, train, "clip_grad_norm", &t->clip_grad_norm))
        return -1;
    if (check(c, train, "lr", t->lr > 0, "must be positive") ||
        check(c, train, "eps", t->eps > 0, "must be positive") ||
        check(c, train, "weight_decay", t->weight_decay >= 0, "must not be negative") ||
        check(c, train, "clip_grad_norm", t->clip_grad_norm >= 0, "must not be negative (0 = off)"))
        return -1;
    return 0;
}

static int load_schedule(const Ctx *c, const cJSON *s, TrainSpec *t) {
    static const char *const keys[] = {"kind", "warmup", "total", "min_lr", "step_size", "gamma", NULL};
    if (!s) return 0;
    if (!cJSON_IsObject(s))
        return fe_error_at(c->fe, s, "'schedule' must be an object, got %s", json_type_name(s));
    if (fe_check_keys(c->fe, s, keys, "the schedule")) return -1;
    int rc = 0;
    const cJSON *kind = fe_member(c->fe, s, "kind", true, "the schedule", &rc);
    if (rc) return -1;
    if (!cJSON_IsString(kind) || !lr_schedule_from_name(kind->valuestring, &t->schedule))
        return fe_error_at(c->fe, kind,
                           "schedule 'kind' must be \"constant\", \"warmup_cosine\" or \"warmup_step\"");
    if (int_field(c, s, "warmup", &t->warmup) || int_field(c, s, "total", &t->total) ||
        int_field(c, s, "step_size", &t->step_size) || real_field(c, s, "min_lr", &t->min_lr) ||
        real_field(c, s, "gamma", &t->gamma))
        return -1;
    if (check(c, s, "warmup", t->warmup >= 0, "must not be negative") ||
        check(c, s, "min_lr", t->min_lr >= 0 && t->min_lr <= t->lr, "must lie in [0, lr]"))
        return -1;
    if (t->schedule == LR_WARMUP_COSINE &&
        check(c, s, "total", t->total > t->warmup, "must be greater than 'warmup' for warmup_cosine"))
        return -1;
    if (t->schedule == LR_WARMUP_STEP &&
        (check(c, s, "step_size", t->step_size >= 1, "must be at least 1") ||
         check(c, s, "gamma", t->gamma > 0, "must be positive")))
        return -1;
    return 0;
}

static bool prefix_matches_a_param(const Module *m, const char *prefix) {
    for (int i = 0; i < m->n_params; i++)
        if (name_has_prefix(m->params[i]->name, prefix)) return true;
    return false;
}

static int load_group(const Ctx *c, const cJSON *g, TrainSpec *t) {
    static const char *const keys[] = {"prefix", "lr", "weight_decay", NULL};
    if (!cJSON_IsObject(g))
        return fe_error_at(c->fe, g, "a group must be an object {prefix, lr, weight_decay}");
    if (fe_check_keys(c->fe, g, keys, "a group")) return -1;
    int rc = 0;
    const cJSON *prefix = fe_member(c->fe, g, "prefix", true, "a group", &rc);
    if (rc) return -1;
    if (!cJSON_IsString(prefix) || !prefix->valuestring[0])
        return fe_error_at(c->fe, prefix, "a group's 'prefix' must be a parameter name prefix");
    if (!prefix_matches_a_param(c->fe->m, prefix->valuestring))
        return fe_error_at(c->fe, prefix, "group prefix '%s' matches no parameter",
                           prefix->valuestring);
    double lr = t->lr, wd = t->weight_decay;
    if (real_field(c, g, "lr", &lr) || real_field(c, g, "weight_decay", &wd)) return -1;
    if (check(c, g, "lr", lr > 0, "must be positive") ||
        check(c, g, "weight_decay", wd >= 0, "must not be negative"))
        return -1;
    train_spec_add_group(c->fe->m, t, prefix->valuestring, lr, wd);
    return 0;
}

static int load_groups(const Ctx *c, const cJSON *groups, TrainSpec *t) {
    if (!groups) return 0;
    if (!cJSON_IsArray(groups))
        return fe_error_at(c->fe, groups, "'groups' must be a list, got %s", json_type_name(groups));
    for (const cJSON *g = groups->child; g; g = g->next)
        if (load_group(c, g, t)) return -1;
    return 0;
}

int fe_load_train(const Ctx *c, const cJSON *train) {
    static const char *const keys[] = {"loss", "optimizer", "lr", "betas", "eps", "weight_decay",
                                       "clip_grad_norm", "schedule", "groups", NULL};
    if (!train) return 0;
    if (!cJSON_IsObject(train))
        return fe_error_at(c->fe, train, "'train' must be an object, got %s", json_type_name(train));
    if (fe_check_keys(c->fe, train, keys, "'train'")) return -1;
    TrainSpec *t = module_new_train_spec(c->fe->m, "loss");
    if (load_loss(c, train, t) || check_loss_is_output(c, train, t) ||
        load_optimizer(c, train, t) ||
        load_schedule(c, cJSON_GetObjectItemCaseSensitive(train, "schedule"), t) ||
        load_groups(c, cJSON_GetObjectItemCaseSensitive(train, "groups"), t))
        return -1;
    return 0;
}
