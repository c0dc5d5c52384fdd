/*
 * settings: one table-driven engine for every service's process settings
 * (pgbouncer's CF_ABS table, redis's static_configs). A service describes
 * each setting once, as a row: environment variable, optional --flag, type,
 * default, bounds, where it goes in the service's settings struct, and what
 * it means. From those rows this module fills the struct (defaults, then the
 * environment, then the command line), rejects bad values with a message that
 * names the setting, and writes --help and the README's Markdown table, so
 * the documented contract cannot drift from the parser.
 */
#ifndef OS_SETTINGS_H
#define OS_SETTINGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* A listen address; host is NULL while the setting is unset (that listener is off). */
struct settings_addr {
    char *host; /* new allocation, freed by settings_free() */
    int port;   /* 0 picks a free port */
};

enum setting_type {
    SETTING_STRING, /* char *, a new allocation */
    SETTING_INT,    /* int64_t in [min, max], decimal */
    SETTING_BOOL,   /* bool: 1/0, true/false, yes/no, on/off */
    SETTING_LISTEN, /* struct settings_addr from "host:port", "[v6]:port" or ":port" */
    SETTING_CUSTOM, /* parsed by the row's parse function */
};

struct setting;

/*
 * SETTING_CUSTOM: parses `text` into the settings struct `base`. Returns 0,
 * or -EINVAL after writing what the value should be ("a number from 0 to 1")
 * to `want`: the engine reports `NAME: "text" is not <want>`. Changes nothing
 * on failure.
 */
typedef int (*setting_parse_fn)(const struct setting *s, const char *text, void *base, char *want,
                                size_t want_size);

struct setting {
    const char *env;  /* environment variable, e.g. "ORDERSYNC_LISTEN" */
    const char *flag; /* "--listen", or NULL: environment only (secrets: argv is public in ps) */
    enum setting_type type;
    const char *def; /* default, as it would be written in the environment; NULL: unset */
    int64_t min, max;
    size_t offset; /* of the field in the settings struct (offsetof) */
    const char *description;
    setting_parse_fn parse; /* SETTING_CUSTOM only */
    const void *arg;        /* SETTING_CUSTOM only: for the parse function (borrowed) */
};

/* A row of a built-in type (every field but the custom parser's). */
#define SETTING_ROW(env, flag, type, def, min, max, offset, description)                           \
    {                                                                                              \
        (env), (flag), (type), (def), (min), (max), (offset), (description), NULL, NULL            \
    }

/*
 * Fills the settings struct `base` (zeroed first) from each row's default,
 * then from its environment variable (an empty variable counts as unset).
 * Returns 0, or -EINVAL / -ENOMEM with the reason in `err`. Strings and hosts
 * in `base` are new allocations: release them with settings_free(), also after
 * a failure.
 */
int settings_load_env(const struct setting *rows, size_t n, void *base, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/*
 * Applies argv[1..argc-1] over what settings_load_env() filled: "--flag value"
 * or "--flag=value", by the rows' flags (a flag wins over its variable).
 * Returns 0, or -EINVAL with the reason in `err` (an argument that is not a
 * flag, an unknown flag, a flag without a value, a bad value).
 */
int settings_load_args(const struct setting *rows, size_t n, void *base, int argc, char **argv,
                       char *err, size_t errlen) __attribute__((warn_unused_result));

/* Frees the strings and hosts the rows put into `base` and sets them to NULL. */
void settings_free(const struct setting *rows, size_t n, void *base);

/*
 * --help, one line per environment-only setting:
 *   "  NAME<padded to 32> description (default: D, min..max)"
 */
void settings_print_env(FILE *out, const struct setting *rows, size_t n);

/*
 * --help, two lines per setting with flags:
 *   "  --flag, NAME (default D)" or "  NAME (environment only)", then the description.
 */
void settings_print_flags(FILE *out, const struct setting *rows, size_t n);

/*
 * Parses a listen address: "host:port", "[v6]:port" or ":port" (all
 * interfaces, 0.0.0.0). Returns 0 with *host a new allocation, or -EINVAL /
 * -ENOMEM. Pure.
 */
int settings_parse_listen(const char *value, char **host, int *port)
    __attribute__((warn_unused_result));

/* The README table: | setting | default | range | meaning |, header included. */
void settings_print_markdown(FILE *out, const struct setting *rows, size_t n);

#endif
