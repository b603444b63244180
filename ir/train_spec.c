/* train_spec.c — the module's "train" section (TrainSpec in ir.h): names of optimizers and
 * LR schedules, construction with PyTorch's Adam defaults, parameter groups, and the prefix
 * rule that groups (and "frozen") use. Everything lives in the module's arena, so a TrainSpec
 * is freed with its module and never individually.
 */
#include <string.h>

#include "ir.h"

static const char *const SCHEDULE_NAMES[LR_SCHEDULE_COUNT] = {"constant", "warmup_cosine",
                                                              "warmup_step"};
static const char *const OPTIMIZER_NAMES[OPT_COUNT] = {"adam", "adamw"};

const char *lr_schedule_name(LrScheduleKind k) {
    return k >= 0 && k < LR_SCHEDULE_COUNT ? SCHEDULE_NAMES[k] : "?";
}

bool lr_schedule_from_name(const char *name, LrScheduleKind *k) {
    for (int i = 0; i < LR_SCHEDULE_COUNT; i++)
        if (strcmp(name, SCHEDULE_NAMES[i]) == 0) {
            *k = (LrScheduleKind)i;
            return true;
        }
    return false;
}

const char *optimizer_name(OptimizerKind k) {
    return k >= 0 && k < OPT_COUNT ? OPTIMIZER_NAMES[k] : "?";
}

bool optimizer_from_name(const char *name, OptimizerKind *k) {
    for (int i = 0; i < OPT_COUNT; i++)
        if (strcmp(name, OPTIMIZER_NAMES[i]) == 0) {
            *k = (OptimizerKind)i;
            return true;
        }
    return false;
}

TrainSpec *module_new_train_spec(Module *m, const char *loss) {
    TrainSpec *t = module_alloc(m, sizeof *t);
    t->loss = module_strdup(m, loss ? loss : "loss");
    t->optimizer = OPT_ADAM;
    t->lr = 1e-3;
    t->beta1 = 0.9;
    t->beta2 = 0.999;
    t->eps = 1e-8;
    t->schedule = LR_CONSTANT;
    t->gamma = 1.0;
    t->step_size = 1;
    m->train = t;
    return t;
}

TrainGroup *train_spec_add_group(Module *m, TrainSpec *t, const char *prefix, double lr,
                                 double weight_decay) {
    /* Groups are few: grow by copying into a fresh arena block. */
    TrainGroup *grown = module_alloc(m, sizeof *grown * (size_t)(t->n_groups + 1));
    if (t->n_groups > 0) memcpy(grown, t->groups, sizeof *grown * (size_t)t->n_groups);
    TrainGroup *g = &grown[t->n_groups];
    g->prefix = module_strdup(m, prefix);
    g->lr = lr;
    g->weight_decay = weight_decay;
    t->groups = grown;
    t->n_groups++;
    return g;
}

bool name_has_prefix(const char *name, const char *prefix) {
    size_t n = strlen(prefix);
    return n > 0 && strncmp(name, prefix, n) == 0 && (name[n] == '\0' || name[n] == '.');
}
