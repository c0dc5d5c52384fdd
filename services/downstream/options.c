/*
 * options: the settings table. Adding a setting = one field in struct options
 * and one row below (or one knob in faults.c); --help and validation follow.
 */
#include "options.h"

#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"

enum setting_type { T_STRING, T_INT, T_LISTEN };

struct setting {
    const char *flag; /* NULL: environment only */
    const char *env;
    enum setting_type type;
    const char *def; /* NULL: unset */
    int64_t min, max;
    size_t offset;
    const char *description;
};

#define F(field) offsetof(struct options, field)

static const struct setting settings[] = {
    {"--role", "DOWNSTREAM_ROLE", T_STRING, NULL, 0, 0, F(role),
     "inventory, invoicing, shipping or sink (required)"},
    {"--listen", "DOWNSTREAM_LISTEN", T_LISTEN, "127.0.0.1:8091", 0, 0, F(listen_host),
     "address:port of the HTTP server (port 0 picks a free one, see the \"listening\" log)"},
    {"--database-url", "DATABASE_URL", T_STRING, NULL, 0, 0, F(database_url),
     "libpq connection string or URL (unused by sink; unset: libpq's PG* variables)"},
    /* secrets are environment-only: every local user can read another's argv in ps */
    {NULL, "DOWNSTREAM_SECRET", T_STRING, NULL, 0, 0, F(secret),
     "whsec_... Standard Webhooks secret the signatures are checked with (required)"},
    {NULL, "DOWNSTREAM_PREVIOUS_SECRET", T_STRING, NULL, 0, 0, F(previous_secret),
     "during a secret rotation, the old whsec_... secret, also accepted"},
    {"--seed", "DOWNSTREAM_SEED", T_INT, "0", 0, INT64_MAX, F(seed),
     "seed of the fault generator, for reproducible runs (0: from the clock)"},
    {"--log-level", "DOWNSTREAM_LOG_LEVEL", T_STRING, "info", 0, 0, F(log_level),
     "debug, info, warn or error"},
    {"--record", "DOWNSTREAM_RECORD", T_STRING, NULL, 0, 0, F(record),
     "sink: append one line per accepted event to this file (webhook-id, type, source:id,"
     " arrival in µs)"},
};

#define N_SETTINGS (sizeof(settings) / sizeof(settings[0]))

/* Flag and variable names of a fault knob: fail_rate -> --fail-rate, DOWNSTREAM_FAIL_RATE. */
static void knob_names(const struct fault_knob_def *k, char *flag, size_t flag_size, char *env,
                       size_t env_size)
{
    snprintf(flag, flag_size, "--%s", k->name);
    for (char *p = flag; *p != '\0'; p++)
        if (*p == '_')
            *p = '-';
    snprintf(env, env_size, "DOWNSTREAM_%s", k->name);
    for (char *p = env; *p != '\0'; p++)
        *p = (char)toupper((unsigned char)*p);
}

static int parse_listen(const char *v, struct options *o)
{
    char *host;
    int port;
    int rc = http_parse_listen(v, &host, &port);
    if (rc < 0)
        return rc;
    free(o->listen_host);
    o->listen_host = host;
    o->listen_port = port;
    return 0;
}

static int apply(struct options *o, const struct setting *s, const char *name, const char *v,
                 char *err, size_t errlen)
{
    char *field = (char *)o + s->offset;
    switch (s->type) {
    case T_STRING: {
        char *copy = strdup(v);
        if (copy == NULL) {
            snprintf(err, errlen, "out of memory");
            return -ENOMEM;
        }
        free(*(char **)field);
        *(char **)field = copy;
        return 0;
    }
    case T_INT: {
        char *end;
        errno = 0;
        long long n = strtoll(v, &end, 10);
        if (errno != 0 || end == v || *end != '\0' || n < s->min || n > s->max) {
            snprintf(err, errlen, "%s: \"%.64s\" is not an integer in [%lld, %lld]", name, v,
                     (long long)s->min, (long long)s->max);
            return -EINVAL;
        }
        *(int64_t *)field = n;
        return 0;
    }
    case T_LISTEN:
        if (parse_listen(v, o) < 0) {
            snprintf(err, errlen, "%s: \"%.64s\" is not host:port", name, v);
            return -EINVAL;
        }
        return 0;
    }
    abort();
}

static int apply_knob(struct options *o, const struct fault_knob_def *k, const char *name,
                      const char *v, char *err, size_t errlen)
{
    if (fault_knob_parse(k, v, &o->knobs) == 0)
        return 0;
    if (k->type == KNOB_RATE)
        snprintf(err, errlen, "%s: \"%.64s\" is not a number from 0 to 1", name, v);
    else
        snprintf(err, errlen, "%s: \"%.64s\" is not an integer from 0 to %lld", name, v,
                 (long long)k->max);
    return -EINVAL;
}

static const char *env_value(const char *name)
{
    const char *v = getenv(name);
    return v != NULL && *v != '\0' ? v : NULL;
}

/* One command-line flag: finds its row (or knob) and applies the value. */
static int apply_flag(struct options *o, const char *flag, size_t flag_len, const char *v,
                      char *err, size_t errlen)
{
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const struct setting *s = &settings[i];
        if (s->flag != NULL && strlen(s->flag) == flag_len && memcmp(s->flag, flag, flag_len) == 0)
            return apply(o, s, s->flag, v, err, errlen);
    }
    for (size_t i = 0; i < fault_knob_defs_n; i++) {
        char kflag[64], kenv[64];
        knob_names(&fault_knob_defs[i], kflag, sizeof(kflag), kenv, sizeof(kenv));
        if (strlen(kflag) == flag_len && memcmp(kflag, flag, flag_len) == 0)
            return apply_knob(o, &fault_knob_defs[i], kflag, v, err, errlen);
    }
    snprintf(err, errlen, "unknown option %.*s (see --help)", (int)(flag_len > 64 ? 64 : flag_len),
             flag);
    return -EINVAL;
}

int options_load(struct options *o, int argc, char **argv, char *err, size_t errlen)
{
    memset(o, 0, sizeof(*o));
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const struct setting *s = &settings[i];
        const char *v = env_value(s->env);
        if (s->def != NULL && apply(o, s, s->env, s->def, err, errlen) < 0)
            return -EINVAL;
        if (v != NULL && apply(o, s, s->env, v, err, errlen) < 0)
            return -EINVAL;
    }
    for (size_t i = 0; i < fault_knob_defs_n; i++) {
        const struct fault_knob_def *k = &fault_knob_defs[i];
        char kflag[64], kenv[64];
        knob_names(k, kflag, sizeof(kflag), kenv, sizeof(kenv));
        const char *v = env_value(kenv);
        if (apply_knob(o, k, kenv, k->def, err, errlen) < 0)
            return -EINVAL;
        if (v != NULL && apply_knob(o, k, kenv, v, err, errlen) < 0)
            return -EINVAL;
    }
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strncmp(arg, "--", 2) != 0) {
            snprintf(err, errlen, "unexpected argument \"%.64s\" (see --help)", arg);
            return -EINVAL;
        }
        const char *eq = strchr(arg, '=');
        const char *v;
        size_t flag_len;
        if (eq != NULL) {
            flag_len = (size_t)(eq - arg);
            v = eq + 1;
        } else {
            flag_len = strlen(arg);
            if (i + 1 >= argc) {
                snprintf(err, errlen, "%.64s needs a value", arg);
                return -EINVAL;
            }
            v = argv[++i];
        }
        if (apply_flag(o, arg, flag_len, v, err, errlen) < 0)
            return -EINVAL;
    }
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
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const struct setting *s = &settings[i];
        if (s->type == T_STRING || s->type == T_LISTEN) {
            char **p = (char **)((char *)o + s->offset);
            free(*p);
            *p = NULL;
        }
    }
}

static void print_row(FILE *out, const char *flag, const char *env, const char *def,
                      const char *description)
{
    if (flag != NULL)
        fprintf(out, "  %s, %s", flag, env);
    else
        fprintf(out, "  %s (environment only)", env);
    if (def != NULL)
        fprintf(out, " (default %s)", def);
    fprintf(out, "\n      %s\n", description);
}

void options_print(FILE *out)
{
    for (size_t i = 0; i < N_SETTINGS; i++)
        print_row(out, settings[i].flag, settings[i].env, settings[i].def, settings[i].description);
    fprintf(out,
            "\nmisbehaviour (also changeable at runtime: POST /control {\"fail_rate\": 0.3}):\n");
    for (size_t i = 0; i < fault_knob_defs_n; i++) {
        char kflag[64], kenv[64];
        knob_names(&fault_knob_defs[i], kflag, sizeof(kflag), kenv, sizeof(kenv));
        print_row(out, kflag, kenv, fault_knob_defs[i].def, fault_knob_defs[i].description);
    }
}
