/*
 * options: every setting of the downstream service, from flags or the
 * environment (a flag wins over its variable). One table in options.c, plus
 * the fault knobs of faults.h, produces parsing, validation and --help, so
 * the documented contract cannot drift from the code.
 */
#ifndef DS_OPTIONS_H
#define DS_OPTIONS_H

#include <stdint.h>
#include <stdio.h>

#include "faults.h"
#include "settings.h"

struct options {
    char *role;                  /* required; checked against role.h by main */
    struct settings_addr listen; /* port 0 picks a free port, logged in the "listening" line */
    char *database_url;          /* NULL: libpq's PG* variables decide */
    char *secret;                /* required whsec_... */
    char *previous_secret;
    char *log_level;
    char *record; /* sink: file to append accepted events to */
    int64_t seed; /* fault generator; 0 = from the clock */
    struct fault_knobs knobs;
};

/*
 * Fills `o` from defaults, then the environment, then argv[1..argc-1]
 * ("--name value" or "--name=value"). Returns 0, or -EINVAL with the reason in
 * `err` (unknown flag, bad value, missing required setting). The strings in
 * `o` are new allocations: release them with options_free() (also after a
 * failure).
 */
int options_load(struct options *o, int argc, char **argv, char *err, size_t errlen)
    __attribute__((warn_unused_result));
void options_free(struct options *o);

/* Writes the settings for --help: flag, variable, default and description of each. */
void options_print(FILE *out);

#endif
