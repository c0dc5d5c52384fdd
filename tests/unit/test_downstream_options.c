/*
 * Unit tests for services/downstream/options: the downstream's settings,
 * flags over variables, the fault knobs' rows derived from faults.c, and its
 * --help.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "alloc_fail.h"
#include "options.h"

extern char **environ;

static int clear_env(void **state)
{
    (void)state;
    for (;;) {
        char name[128] = "";
        for (char **e = environ; *e != NULL; e++) {
            if (strncmp(*e, "DOWNSTREAM_", 11) == 0 || strncmp(*e, "DATABASE_URL=", 13) == 0) {
                snprintf(name, sizeof(name), "%.*s", (int)strcspn(*e, "="), *e);
                break;
            }
        }
        if (name[0] == '\0')
            break;
        unsetenv(name);
    }
    setenv("DOWNSTREAM_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", 1);
    return 0;
}

static int load(struct options *o, char **argv, int argc, char *err, size_t errlen)
{
    return options_load(o, argc, argv, err, errlen);
}

static void defaults_and_flags(void **state)
{
    (void)state;
    char *argv[] = {"downstream", "--role", "sink", "--record=/tmp/x.rec", NULL};
    struct options o;
    char err[256] = "";
    assert_int_equal(load(&o, argv, 4, err, sizeof(err)), 0);
    assert_string_equal(o.role, "sink");
    assert_string_equal(o.record, "/tmp/x.rec");
    assert_string_equal(o.listen.host, "127.0.0.1");
    assert_int_equal(o.listen.port, 8091);
    assert_null(o.database_url);
    assert_null(o.previous_secret);
    assert_string_equal(o.secret, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    assert_string_equal(o.log_level, "info");
    assert_int_equal(o.seed, 0);
    /* the knobs' defaults from faults.c */
    assert_true(o.knobs.fail_rate == 0);
    assert_int_equal(o.knobs.retry_after_s, 1);
    assert_int_equal(o.knobs.down_for_s, 0);
    options_free(&o);
    assert_null(o.role);
    assert_null(o.listen.host);
}

static void knobs_from_variables_and_flags(void **state)
{
    (void)state;
    setenv("DOWNSTREAM_ROLE", "inventory", 1);
    setenv("DOWNSTREAM_FAIL_RATE", "0.25", 1);
    setenv("DOWNSTREAM_LATENCY_MS", "100", 1);
    setenv("DOWNSTREAM_LISTEN", ":0", 1);
    char *argv[] = {
        "downstream", "--latency-ms", "200", "--fail-after-apply-rate=1", "--down-after-s",
        "3",          "--seed",       "42"};
    struct options o;
    char err[256] = "";
    assert_int_equal(load(&o, argv, 8, err, sizeof(err)), 0);
    assert_string_equal(o.role, "inventory");
    assert_true(o.knobs.fail_rate == 0.25);
    assert_int_equal(o.knobs.latency_ms, 200); /* the flag wins */
    assert_true(o.knobs.fail_after_apply_rate == 1.0);
    assert_int_equal(o.knobs.down_after_s, 3);
    assert_int_equal(o.seed, 42);
    assert_string_equal(o.listen.host, "0.0.0.0");
    assert_int_equal(o.listen.port, 0);
    options_free(&o);
}

static int load_error(char **argv, int argc, char *err, size_t errlen)
{
    struct options o;
    int rc = load(&o, argv, argc, err, errlen);
    options_free(&o);
    return rc;
}

static void refusals(void **state)
{
    (void)state;
    char err[256];
    char *a1[] = {"downstream", "--role", "sink", "--fail-rate", "1.5"};
    assert_int_equal(load_error(a1, 5, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "--fail-rate: \"1.5\" is not a number from 0 to 1");
    char *a2[] = {"downstream", "--role", "sink", "--retry-after-s", "3601"};
    assert_int_equal(load_error(a2, 5, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "--retry-after-s: \"3601\" is not an integer from 0 to 3600");
    setenv("DOWNSTREAM_DOWN_FOR_S", "-1", 1);
    char *a3[] = {"downstream", "--role", "sink"};
    assert_int_equal(load_error(a3, 3, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "DOWNSTREAM_DOWN_FOR_S: \"-1\" is not an integer from 0 to 86400");
    unsetenv("DOWNSTREAM_DOWN_FOR_S");
    char *a4[] = {"downstream"};
    assert_int_equal(load_error(a4, 1, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "no role: use --role or DOWNSTREAM_ROLE");
    /* secrets never come from argv (ps shows it to every local user) */
    char *a5[] = {"downstream", "--role", "sink", "--secret", "whsec_x"};
    assert_int_equal(load_error(a5, 5, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "unknown option --secret (see --help)");
    unsetenv("DOWNSTREAM_SECRET");
    assert_int_equal(load_error(a3, 3, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "DOWNSTREAM_SECRET is not set (the whsec_... secret to verify with)");
}

static void help_has_settings_then_knobs(void **state)
{
    (void)state;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    options_print(f);
    fclose(f);
    const char *record = strstr(text, "  --record, DOWNSTREAM_RECORD\n      sink: append");
    const char *secret = strstr(text, "  DOWNSTREAM_SECRET (environment only)\n");
    const char *header = strstr(text, "\nmisbehaviour (also changeable at runtime:");
    const char *knob = strstr(text, "  --fail-after-apply-rate, DOWNSTREAM_FAIL_AFTER_APPLY_RATE "
                                    "(default 0)\n      probability (0..1) of applying");
    const char *listen = strstr(text, "  --listen, DOWNSTREAM_LISTEN (default 127.0.0.1:8091)\n");
    assert_non_null(record);
    assert_non_null(secret);
    assert_non_null(header);
    assert_non_null(knob);
    assert_non_null(listen);
    assert_true(listen < secret && secret < record && record < header && header < knob);
    free(text);
}

static int load_all(void *ctx)
{
    (void)ctx;
    char *argv[] = {"downstream", "--role",      "inventory", "--record",
                    "/tmp/r",     "--fail-rate", "0.5"};
    struct options o;
    char err[256];
    int rc = options_load(&o, 7, argv, err, sizeof(err));
    options_free(&o);
    return rc;
}

static void allocation_failures(void **state)
{
    (void)state;
    setenv("DATABASE_URL", "postgresql://u@db/x", 1);
    assert_true(alloc_fail_loop("options", load_all, NULL, false) > 0);
}

int main(void)
{
    alloc_fail_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(defaults_and_flags, clear_env),
        cmocka_unit_test_setup(knobs_from_variables_and_flags, clear_env),
        cmocka_unit_test_setup(refusals, clear_env),
        cmocka_unit_test(help_has_settings_then_knobs),
        cmocka_unit_test_setup(allocation_failures, clear_env),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
