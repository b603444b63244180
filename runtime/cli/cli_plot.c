/* cli_plot.c — `cap plot metrics.jsonl -o curves.svg`: the training curves of a --log file as
 * an SVG that any browser shows (no plotting library, no dependency).
 *
 * One panel per metric the log holds (loss, lr, grad_norm, then any other numeric key such as
 * validation scores), stacked, sharing the step axis; one <path> per curve. Lines without a
 * "step" (skipped steps) and null values (non-finite) are left out. Each panel labels its
 * y range and the step range, so the picture reads without a legend.
 */
#include "cli_plot.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cli_common.h"
#include "files.h"

enum { MAX_SERIES = 16, PANEL_W = 760, PANEL_H = 170, MARGIN_L = 80, MARGIN_T = 30, GAP = 40 };

typedef struct Series {
    char name[64];
    double *step, *value;
    int n, cap;
} Series;

typedef struct Plot {
    Series s[MAX_SERIES];
    int n;
} Plot;

/* Keys that are bookkeeping, not curves. */
static int is_curve_key(const char *k) {
    return strcmp(k, "step") != 0 && strcmp(k, "samples_per_s") != 0 && strcmp(k, "elapsed_s") != 0;
}

static Series *series_for(Plot *p, const char *name) {
    for (int i = 0; i < p->n; i++)
        if (strcmp(p->s[i].name, name) == 0) return &p->s[i];
    if (p->n == MAX_SERIES) return NULL;
    Series *s = &p->s[p->n++];
    snprintf(s->name, sizeof s->name, "%s", name);
    return s;
}

static int series_add(Series *s, double step, double v) {
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 256;
        double *a = realloc(s->step, (size_t)cap * sizeof *a), *b = a ? realloc(s->value, (size_t)cap * sizeof *b) : NULL;
        if (a) s->step = a;
        if (!a || !b) return -1;
        s->value = b;
        s->cap = cap;
    }
    s->step[s->n] = step;
    s->value[s->n++] = v;
    return 0;
}

static void plot_free(Plot *p) {
    for (int i = 0; i < p->n; i++) {
        free(p->s[i].step);
        free(p->s[i].value);
    }
}

/* Reads the log's numeric fields per step. Returns 0, or -1 with a message naming the line. */
static int read_log(const char *path, Plot *p, char *err, size_t size) {
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, size, "%s: cannot open", path);
        return -1;
    }
    char line[8192];
    int lineno = 0, rc = 0;
    while (rc == 0 && fgets(line, sizeof line, f)) {
        lineno++;
        cJSON *j = cJSON_Parse(line);
        const cJSON *step = j ? cJSON_GetObjectItemCaseSensitive(j, "step") : NULL;
        if (!j) {
            snprintf(err, size, "%s:%d: not a JSON object (a metrics.jsonl from cap train --log?)",
                     path, lineno);
            rc = -1;
        }
        for (const cJSON *c = step && cJSON_IsNumber(step) ? j->child : NULL; c && rc == 0; c = c->next) {
            if (!cJSON_IsNumber(c) || !is_curve_key(c->string) || !isfinite(c->valuedouble)) continue;
            Series *s = series_for(p, c->string);
            if (s && series_add(s, step->valuedouble, c->valuedouble) != 0) {
                snprintf(err, size, "out of memory");
                rc = -1;
            }
        }
        cJSON_Delete(j);
    }
    fclose(f);
    if (rc == 0 && p->n == 0) {
        snprintf(err, size, "%s: no steps with numeric metrics", path);
        rc = -1;
    }
    return rc;
}

static void range_of(const double *v, int n, double *lo, double *hi) {
    *lo = INFINITY;
    *hi = -INFINITY;
    for (int i = 0; i < n; i++) {
        if (v[i] < *lo) *lo = v[i];
        if (v[i] > *hi) *hi = v[i];
    }
    if (*hi == *lo) *hi = *lo + (*lo == 0 ? 1 : fabs(*lo) * 0.01);
}

static void panel(FILE *o, const Series *s, int index, double x0, double x1) {
    double y0, y1;
    range_of(s->value, s->n, &y0, &y1);
    int top = MARGIN_T + index * (PANEL_H + GAP);
    fprintf(o, "<g>\n<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" "
            "stroke=\"#999\"/>\n", MARGIN_L, top, PANEL_W, PANEL_H);
    fprintf(o, "<text x=\"%d\" y=\"%d\" font-size=\"14\" font-family=\"sans-serif\">%s</text>\n",
            MARGIN_L, top - 8, s->name);
    fprintf(o, "<text x=\"%d\" y=\"%d\" font-size=\"11\" text-anchor=\"end\" "
            "font-family=\"sans-serif\">%.4g</text>\n", MARGIN_L - 6, top + 10, y1);
    fprintf(o, "<text x=\"%d\" y=\"%d\" font-size=\"11\" text-anchor=\"end\" "
            "font-family=\"sans-serif\">%.4g</text>\n", MARGIN_L - 6, top + PANEL_H, y0);
    fprintf(o, "<text x=\"%d\" y=\"%d\" font-size=\"11\" font-family=\"sans-serif\">step %.0f"
            "</text>\n", MARGIN_L, top + PANEL_H + 14, x0);
    fprintf(o, "<text x=\"%d\" y=\"%d\" font-size=\"11\" text-anchor=\"end\" "
            "font-family=\"sans-serif\">step %.0f</text>\n", MARGIN_L + PANEL_W, top + PANEL_H + 14, x1);
    fprintf(o, "<path fill=\"none\" stroke=\"#1f5fa8\" stroke-width=\"1.2\" d=\"");
    for (int i = 0; i < s->n; i++) {
        double x = MARGIN_L + (x1 > x0 ? (s->step[i] - x0) / (x1 - x0) : 0.5) * PANEL_W;
        double y = top + PANEL_H - (s->value[i] - y0) / (y1 - y0) * PANEL_H;
        fprintf(o, "%s%.1f %.1f", i ? " L" : "M", x, y);
    }
    fprintf(o, "\"/>\n</g>\n");
}

static int write_svg(const char *path, const Plot *p, char *err, size_t size) {
    FILE *o = fopen(path, "w");
    if (!o) {
        snprintf(err, size, "%s: cannot write", path);
        return -1;
    }
    double x0 = INFINITY, x1 = -INFINITY;
    for (int i = 0; i < p->n; i++) {
        double lo, hi;
        range_of(p->s[i].step, p->s[i].n, &lo, &hi);
        x0 = fmin(x0, lo);
        x1 = fmax(x1, p->s[i].n > 1 ? hi : lo);
    }
    int height = MARGIN_T + p->n * (PANEL_H + GAP);
    fprintf(o, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" "
            "width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\">\n<rect width=\"100%%\" "
            "height=\"100%%\" fill=\"white\"/>\n", MARGIN_L + PANEL_W + 20, height,
            MARGIN_L + PANEL_W + 20, height);
    for (int i = 0; i < p->n; i++) panel(o, &p->s[i], i, x0, x1);
    fprintf(o, "</svg>\n");
    if (fclose(o) != 0) {
        snprintf(err, size, "%s: cannot write", path);
        return -1;
    }
    return 0;
}

static const OptSpec PLOT_OPTIONS[] = {
    {"--out", 'o', OPT_VALUE, OPT_REQUIRED, "SVG", "the SVG file to write (not the log itself)",
     NULL},
    OPT_END,
};

const OptCommand CAP_PLOT_COMMAND = {
    .prog = "cap plot",
    .synopsis = "metrics.jsonl -o curves.svg",
    .summary = "the curves of a --log file (loss, lr, grad_norm, validation scores), one panel "
               "each, as SVG",
    .about = "Draws the curves of a `cap train --log` file as an SVG: one panel per numeric "
             "metric, stacked on a shared step axis.",
    .tables = {PLOT_OPTIONS, CAP_VERBOSE_OPTIONS},
    .min_pos = 1,
    .max_pos = 1,
    .pos_missing = "cap plot needs a metrics file",
    .pos_extra = "one metrics file, not also '%s'",
};

static int plot(const OptResult *o) {
    const char *in = o->pos[0], *out = opt_str(o, "--out");
    char err[1024];
    Plot p = {0};
    int rc = file_check_new_output(out, "-o", &in, 1, err, sizeof err) ||
         read_log(in, &p, err, sizeof err) || write_svg(out, &p, err, sizeof err);
    if (rc) fprintf(stderr, "cap: error: %s\n", err);
    else printf("wrote %s: %d curves\n", out, p.n);
    plot_free(&p);
    return rc ? 1 : 0;
}

int cap_cmd_plot(int argc, char **argv) { return opt_run(&CAP_PLOT_COMMAND, argc, argv, plot); }
