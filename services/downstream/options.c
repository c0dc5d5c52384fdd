/*
 * options: the downstream's settings table, read by lib/settings. Adding a
 * setting = one field in struct options and one row below (or one knob in
 * faults.c, whose rows are derived here); --help and validation follow.
 */
#include "options.h"

#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define F(field) offsetof(struct options, field)

static const struct setting base_rows[] = {
    SETTING_ROW("DOWNSTREAM_ROLE", "--role", SETTING_STRING, NULL, 0, 0, F(role),
                "inventory, invoicing, shipping or sink (required)"),
    SETTING_ROW(
        "DOWNSTREAM_LISTEN", "--listen", SETTING_LISTEN, "127.0.0.1:8091", 0, 0, F(listen),
        "address:port of the HTTP server (port 0 picks a free one, see the \"listening\" log)"),
    SETTING_ROW("DATABASE_URL", "--database-url", SETTING_STRING, NULL, 0, 0, F(database_url),
                "libpq connection string or URL (unused by sink; unset: libpq's PG* variables)"),
    /* secrets are environment-only: every local user can read another's argv in ps */
    SETTING_ROW("DOWNSTREAM_SECRET", NULL, SETTING_STRING, NULL, 0, 0, F(secret),
                "whsec_... Standard Webhooks secret the signatures are checked with (required)"),
    SETTING_ROW("DOWNSTREAM_PREVIOUS_SECRET", NULL, SETTING_STRING, NULL, 0, 0, F(previous_secret),
                "during a secret rotation, the old whsec_... secret, also accepted"),
    SETTING_ROW("DOWNSTREAM_SEED", "--seed", SETTING_INT, "0", 0, INT64_MAX, F(seed),
                "seed of the fault generator, for reproducible runs (0: from the clock)"),
    SETTING_ROW("DOWNSTREAM_LOG_LEVEL", "--log-level", SETTING_STRING, "info", 0, 0, F(log_level),
                "debug, info, warn or error"),
    SETTING_ROW(
        "DOWNSTREAM_RECORD", "--record", SETTING_STRING, NULL, 0, 0, F(record),
        "sink: append one line per accepted event to this file (webhook-id, type, source:id,"
        " arrival in µs)"),
};

#define N_BASE (sizeof(base_rows) / sizeof(base_rows[0]))
/* Room for the knobs of faults.c; options_rows() aborts if there are more. */
#define MAX_KNOBS 16
#define NAME_SIZE 48

/* The base rows, then one per fault knob; built once (single-threaded start-up). */
static struct setting rows[N_BASE + MAX_KNOBS];
static char knob_flags[MAX_KNOBS][NAME_SIZE], knob_envs[MAX_KNOBS][NAME_SIZE];
static size_t n_rows;

/* A knob's text goes through faults.c, the same check POST /control applies. */
static int parse_knob(const struct setting *s, const char *text, void *base, char *want,
                      size_t want_size)
{
    const struct fault_knob_def *k = s->arg;
    if (fault_knob_parse(k, text, &((struct options *)base)->knobs) == 0)
        return 0;
    if (k->type == KNOB_RATE)
        snprintf(want, want_size, "a number from 0 to 1");
    else
        snprintf(want, want_size, "an integer from 0 to %lld", (long long)k->max);
    return -EINVAL;
}

/* Flag and variable names of a fault knob: fail_rate -> --fail-rate, DOWNSTREAM_FAIL_RATE. */
static void knob_names(const struct fault_knob_def *k, char *flag, char *env)
{
    snprintf(flag, NAME_SIZE, "--%s", k->name);
    for (char *p = flag; *p != '\0'; p++)
        if (*p == '_')
            *p = '-';
    snprintf(env, NAME_SIZE, "DOWNSTREAM_%s", k->name);
    for (char *p = env; *p != '\0'; p++)
        *p = (char)toupper((unsigned char)*p);
}

static const struct setting *options_rows(size_t *n)
{
    if (n_rows == 0) {
        if (fault_knob_defs_n > MAX_KNOBS)
            abort(); /* raise MAX_KNOBS */
        memcpy(rows, base_rows, sizeof(base_rows));
        for (size_t i = 0; i < fault_knob_defs_n; i++) {
            const struct fault_knob_def *k = &fault_knob_defs[i];
            knob_names(k, knob_flags[i], knob_envs[i]);
            rows[N_BASE + i] = (struct setting){
                .env = knob_envs[i],
                .flag = knob_flags[i],
                .type = SETTING_CUSTOM,
                .def = k->def,
                .offset = F(knobs) + k->offset,
                .description = k->description,
                .parse = parse_knob,
                .arg = k,
            };
        }
        n_rows = N_BASE + fault_knob_defs_n;
    }
    *n = n_rows;
    return rows;
}

int options_load(struct options *o, int argc, char **argv, char *err, size_t errlen)
{
    memset(o, 0, sizeof(*o));
    size_t n;
    const struct setting *r = options_rows(&n);
    if (settings_load_env(r, n, o, err, errlen) < 0 ||
        settings_load_args(r, n, o, argc, argv, err, errlen) < 0)
        return -EINVAL;
    if (o->role == NULL) {
        snprintf(err, errlen, "no role: use --role or DOWNSTREAM_ROLE");
        return -EINVAL;
    }
    if (o->secret == NULL) {
        snprintf(err, errlen, "DOWNSTREAM_SECRET is not set (the whsec_... secret to verify with)");
        return -EINVAL;
    }
    return 0;
}

void options_free(struct options *o)
{
    size_t n;
    const struct setting *r = options_rows(&n);
    settings_free(r, n, o);
}

void options_print(FILE *out)
{
    size_t n;
    const struct setting *r = options_rows(&n);
    settings_print_flags(out, r, N_BASE);
    fprintf(out,
            "\nmisbehaviour (also changeable at runtime: POST /control {\"fail_rate\": 0.3}):\n");
    settings_print_flags(out, r + N_BASE, n - N_BASE);
}
