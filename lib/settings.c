/*
 * settings: the engine behind config.c (ordersync) and options.c
 * (downstream). Values are applied row by row: the default first, so every
 * field holds a valid value even when the variable is unset, then the
 * environment, then the command line. A bad value is reported as
 * `NAME: "value" is not <what it should be>`, with the value cut at 64 bytes
 * so a pasted blob cannot flood the log line.
 */
#include "settings.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* How much of a rejected value an error message repeats. */
#define ECHO_MAX 64

static int parse_bool(const char *v, bool *out)
{
    if (strcmp(v, "1") == 0 || strcasecmp(v, "true") == 0 || strcasecmp(v, "yes") == 0 ||
        strcasecmp(v, "on") == 0) {
        *out = true;
        return 0;
    }
    if (strcmp(v, "0") == 0 || strcasecmp(v, "false") == 0 || strcasecmp(v, "no") == 0 ||
        strcasecmp(v, "off") == 0) {
        *out = false;
        return 0;
    }
    return -EINVAL;
}

static int parse_int(const char *v, int64_t min, int64_t max, int64_t *out)
{
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (errno != 0 || end == v || *end != '\0' || n < min || n > max)
        return -EINVAL;
    *out = n;
    return 0;
}

int settings_parse_listen(const char *v, char **host, int *port)
{
    const char *colon = strrchr(v, ':');
    if (colon == NULL || colon[1] == '\0')
        return -EINVAL;
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end != '\0' || p < 0 || p > 65535)
        return -EINVAL;
    const char *h = v;
    size_t hl = (size_t)(colon - v);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    char *copy = hl == 0 ? strdup("0.0.0.0") : strndup(h, hl);
    if (copy == NULL)
        return -ENOMEM;
    *host = copy;
    *port = (int)p;
    return 0;
}

/*
 * Parses `v` into the row's field. On -EINVAL writes what the value should
 * have been to `want`; on -ENOMEM nothing. The field is unchanged on failure.
 */
static int parse_value(const struct setting *s, const char *v, void *base, char *want,
                       size_t want_size)
{
    char *field = (char *)base + s->offset;
    switch (s->type) {
    case SETTING_STRING: {
        char *copy = strdup(v);
        if (copy == NULL)
            return -ENOMEM;
        free(*(char **)field);
        *(char **)field = copy;
        return 0;
    }
    case SETTING_INT:
        if (parse_int(v, s->min, s->max, (int64_t *)field) == 0)
            return 0;
        snprintf(want, want_size, "an integer in [%lld, %lld]", (long long)s->min,
                 (long long)s->max);
        return -EINVAL;
    case SETTING_BOOL:
        if (parse_bool(v, (bool *)field) == 0)
            return 0;
        snprintf(want, want_size, "a boolean (use 0 or 1)");
        return -EINVAL;
    case SETTING_LISTEN: {
        struct settings_addr *addr = (struct settings_addr *)field;
        char *host;
        int port;
        int rc = settings_parse_listen(v, &host, &port);
        if (rc == -EINVAL)
            snprintf(want, want_size, "host:port");
        if (rc < 0)
            return rc;
        free(addr->host);
        addr->host = host;
        addr->port = port;
        return 0;
    }
    case SETTING_CUSTOM:
        return s->parse(s, v, base, want, want_size);
    }
    abort(); /* a row of no known type: the table itself is wrong */
}

/* Applies one value, reporting under `name` (the variable or the flag it came from). */
static int apply(const struct setting *s, const char *name, const char *v, void *base, char *err,
                 size_t errlen)
{
    char want[96] = "a valid value";
    int rc = parse_value(s, v, base, want, sizeof(want));
    if (rc == -ENOMEM)
        snprintf(err, errlen, "out of memory");
    else if (rc < 0)
        snprintf(err, errlen, "%s: \"%.*s\" is not %s", name, ECHO_MAX, v, want);
    return rc;
}

int settings_load_env(const struct setting *rows, size_t n, void *base, char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        const struct setting *s = &rows[i];
        int rc = 0;
        if (s->def != NULL)
            rc = apply(s, s->env, s->def, base, err, errlen);
        const char *v = getenv(s->env);
        if (rc == 0 && v != NULL && *v != '\0')
            rc = apply(s, s->env, v, base, err, errlen);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static const struct setting *find_flag(const struct setting *rows, size_t n, const char *flag,
                                       size_t flag_len)
{
    for (size_t i = 0; i < n; i++)
        if (rows[i].flag != NULL && strlen(rows[i].flag) == flag_len &&
            memcmp(rows[i].flag, flag, flag_len) == 0)
            return &rows[i];
    return NULL;
}

int settings_load_args(const struct setting *rows, size_t n, void *base, int argc, char **argv,
                       char *err, size_t errlen)
{
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strncmp(arg, "--", 2) != 0) {
            snprintf(err, errlen, "unexpected argument \"%.*s\" (see --help)", ECHO_MAX, arg);
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
                snprintf(err, errlen, "%.*s needs a value", ECHO_MAX, arg);
                return -EINVAL;
            }
            v = argv[++i];
        }
        const struct setting *s = find_flag(rows, n, arg, flag_len);
        if (s == NULL) {
            snprintf(err, errlen, "unknown option %.*s (see --help)",
                     (int)(flag_len > ECHO_MAX ? ECHO_MAX : flag_len), arg);
            return -EINVAL;
        }
        int rc = apply(s, s->flag, v, base, err, errlen);
        if (rc < 0)
            return rc;
    }
    return 0;
}

void settings_free(const struct setting *rows, size_t n, void *base)
{
    for (size_t i = 0; i < n; i++) {
        char *field = (char *)base + rows[i].offset;
        if (rows[i].type == SETTING_STRING) {
            free(*(char **)field);
            *(char **)field = NULL;
        } else if (rows[i].type == SETTING_LISTEN) {
            struct settings_addr *addr = (struct settings_addr *)field;
            free(addr->host);
            addr->host = NULL;
        }
    }
}

/* "min..max" for integers, "0 or 1" for booleans, "" otherwise. */
static void range_text(const struct setting *s, char *out, size_t size)
{
    out[0] = '\0';
    if (s->type == SETTING_INT)
        snprintf(out, size, "%lld..%lld", (long long)s->min, (long long)s->max);
    else if (s->type == SETTING_BOOL)
        snprintf(out, size, "0 or 1");
}

void settings_print_env(FILE *out, const struct setting *rows, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const struct setting *s = &rows[i];
        char range[64];
        range_text(s, range, sizeof(range));
        fprintf(out, "  %-32s %s (default: %s%s%s)\n", s->env, s->description,
                s->def ? s->def : "unset", range[0] ? ", " : "", range);
    }
}

void settings_print_flags(FILE *out, const struct setting *rows, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const struct setting *s = &rows[i];
        if (s->flag != NULL)
            fprintf(out, "  %s, %s", s->flag, s->env);
        else
            fprintf(out, "  %s (environment only)", s->env);
        if (s->def != NULL)
            fprintf(out, " (default %s)", s->def);
        fprintf(out, "\n      %s\n", s->description);
    }
}

void settings_print_markdown(FILE *out, const struct setting *rows, size_t n)
{
    fprintf(out, "| setting | default | range | meaning |\n|---|---|---|---|\n");
    for (size_t i = 0; i < n; i++) {
        const struct setting *s = &rows[i];
        char range[64];
        range_text(s, range, sizeof(range));
        if (s->def != NULL)
            fprintf(out, "| `%s` | `%s` | %s | %s |\n", s->env, s->def, range, s->description);
        else
            fprintf(out, "| `%s` | (unset) | %s | %s |\n", s->env, range, s->description);
    }
}
