/*
 * Unit tests for lib/settings: the table engine behind ordersync's and the
 * downstream's settings. A small table of every type is loaded from the
 * environment and a command line, and its --help and Markdown are read as a
 * person reads them.
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
#include "settings.h"

struct demo {
    char *name;
    int64_t count;
    bool on;
    struct settings_addr listen;
    char *token;
    int level; /* custom: "low" = 1, "high" = 2 */
};

static int parse_level(const struct setting *s, const char *text, void *base, char *want,
                       size_t want_size)
{
    struct demo *d = base;
    const char *const *names = s->arg;
    for (int i = 0; names[i] != NULL; i++) {
        if (strcmp(text, names[i]) == 0) {
            d->level = i + 1;
            return 0;
        }
    }
    snprintf(want, want_size, "low or high");
    return -EINVAL;
}

static const char *const level_names[] = {"low", "high", NULL};

#define F(f) offsetof(struct demo, f)

static const struct setting rows[] = {
    SETTING_ROW("TS_NAME", "--name", SETTING_STRING, "anon", 0, 0, F(name), "who it is"),
    SETTING_ROW("TS_COUNT", "--count", SETTING_INT, "5", 1, 100, F(count), "how many"),
    SETTING_ROW("TS_ON", "--on", SETTING_BOOL, "0", 0, 1, F(on), "whether it runs"),
    SETTING_ROW("TS_LISTEN", "--listen", SETTING_LISTEN, "127.0.0.1:8000", 0, 0, F(listen),
                "where it listens"),
    SETTING_ROW("TS_TOKEN", NULL, SETTING_STRING, NULL, 0, 0, F(token), "a secret"),
    {"TS_LEVEL", "--level", SETTING_CUSTOM, "low", 0, 0, F(level), "how loud", parse_level,
     level_names},
};
#define N_ROWS (sizeof(rows) / sizeof(rows[0]))

static int clear_env(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_ROWS; i++)
        unsetenv(rows[i].env);
    return 0;
}

/* Loads from the environment as it is now; returns the engine's result. */
static int load(struct demo *d, char *err, size_t errlen)
{
    memset(d, 0, sizeof(*d));
    return settings_load_env(rows, N_ROWS, d, err, errlen);
}

static void defaults_fill_every_field(void **state)
{
    (void)state;
    struct demo d;
    char err[256] = "";
    assert_int_equal(load(&d, err, sizeof(err)), 0);
    assert_string_equal(d.name, "anon");
    assert_int_equal(d.count, 5);
    assert_false(d.on);
    assert_string_equal(d.listen.host, "127.0.0.1");
    assert_int_equal(d.listen.port, 8000);
    assert_null(d.token); /* no default: unset */
    assert_int_equal(d.level, 1);
    settings_free(rows, N_ROWS, &d);
    assert_null(d.name);
    assert_null(d.listen.host);
    settings_free(rows, N_ROWS, &d); /* twice: harmless */
}

static void environment_overrides_and_empty_is_unset(void **state)
{
    (void)state;
    setenv("TS_NAME", "bob", 1);
    setenv("TS_COUNT", "100", 1);
    setenv("TS_LISTEN", "[::1]:9", 1);
    setenv("TS_TOKEN", "", 1); /* empty: as if unset */
    setenv("TS_LEVEL", "high", 1);
    struct demo d;
    char err[256] = "";
    assert_int_equal(load(&d, err, sizeof(err)), 0);
    assert_string_equal(d.name, "bob");
    assert_int_equal(d.count, 100);
    assert_string_equal(d.listen.host, "::1");
    assert_int_equal(d.listen.port, 9);
    assert_null(d.token);
    assert_int_equal(d.level, 2);
    settings_free(rows, N_ROWS, &d);
}

static void booleans_in_every_spelling(void **state)
{
    (void)state;
    static const char *const yes[] = {"1", "true", "TRUE", "yes", "On"};
    static const char *const no[] = {"0", "false", "No", "off"};
    struct demo d;
    char err[256];
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        setenv("TS_ON", yes[i], 1);
        assert_int_equal(load(&d, err, sizeof(err)), 0);
        assert_true(d.on);
        settings_free(rows, N_ROWS, &d);
    }
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
        setenv("TS_ON", no[i], 1);
        assert_int_equal(load(&d, err, sizeof(err)), 0);
        assert_false(d.on);
        settings_free(rows, N_ROWS, &d);
    }
    setenv("TS_ON", "maybe", 1);
    assert_int_equal(load(&d, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "TS_ON: \"maybe\" is not a boolean (use 0 or 1)");
    settings_free(rows, N_ROWS, &d);
}

static void integers_outside_their_range_are_refused(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "0", "101", "-5", "x", "5x", "", "5 ", "1e2", "99999999999999999999999"};
    struct demo d;
    char err[256];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (bad[i][0] == '\0')
            continue; /* empty is unset, tested above */
        setenv("TS_COUNT", bad[i], 1);
        assert_int_equal(load(&d, err, sizeof(err)), -EINVAL);
        char expect[256];
        snprintf(expect, sizeof(expect), "TS_COUNT: \"%s\" is not an integer in [1, 100]", bad[i]);
        assert_string_equal(err, expect);
        settings_free(rows, N_ROWS, &d);
    }
    setenv("TS_COUNT", "1", 1);
    assert_int_equal(load(&d, err, sizeof(err)), 0);
    assert_int_equal(d.count, 1);
    settings_free(rows, N_ROWS, &d);
}

static void a_long_bad_value_is_cut_in_the_message(void **state)
{
    (void)state;
    char value[300];
    memset(value, 'a', sizeof(value) - 1);
    value[sizeof(value) - 1] = '\0';
    setenv("TS_COUNT", value, 1);
    struct demo d;
    char err[512];
    assert_int_equal(load(&d, err, sizeof(err)), -EINVAL);
    char expect[512];
    snprintf(expect, sizeof(expect), "TS_COUNT: \"%.64s\" is not an integer in [1, 100]", value);
    assert_string_equal(err, expect);
    settings_free(rows, N_ROWS, &d);
}

static void listen_addresses(void **state)
{
    (void)state;
    char *host = NULL;
    int port = -1;
    assert_int_equal(settings_parse_listen("10.0.0.1:80", &host, &port), 0);
    assert_string_equal(host, "10.0.0.1");
    assert_int_equal(port, 80);
    free(host);
    assert_int_equal(settings_parse_listen(":0", &host, &port), 0);
    assert_string_equal(host, "0.0.0.0"); /* every interface */
    assert_int_equal(port, 0);
    free(host);
    assert_int_equal(settings_parse_listen("[::]:65535", &host, &port), 0);
    assert_string_equal(host, "::");
    assert_int_equal(port, 65535);
    free(host);
    static const char *const bad[] = {"localhost", "h:", "h:65536", "h:-1", "h:8x", ""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(settings_parse_listen(bad[i], &host, &port), -EINVAL);

    setenv("TS_LISTEN", "nope", 1);
    struct demo d;
    char err[256];
    assert_int_equal(load(&d, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "TS_LISTEN: \"nope\" is not host:port");
    settings_free(rows, N_ROWS, &d);
}

static void custom_rows_report_what_they_want(void **state)
{
    (void)state;
    setenv("TS_LEVEL", "medium", 1);
    struct demo d;
    char err[256];
    assert_int_equal(load(&d, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "TS_LEVEL: \"medium\" is not low or high");
    settings_free(rows, N_ROWS, &d);
}

static void flags_win_over_the_environment(void **state)
{
    (void)state;
    setenv("TS_COUNT", "7", 1);
    setenv("TS_NAME", "env", 1);
    char *argv[] = {"prog", "--count", "9", "--name=flag", "--on", "yes", "--level=high", NULL};
    struct demo d;
    char err[256] = "";
    assert_int_equal(load(&d, err, sizeof(err)), 0);
    assert_int_equal(settings_load_args(rows, N_ROWS, &d, 7, argv, err, sizeof(err)), 0);
    assert_int_equal(d.count, 9);
    assert_string_equal(d.name, "flag");
    assert_true(d.on);
    assert_int_equal(d.level, 2);
    settings_free(rows, N_ROWS, &d);
}

/* Runs argv over the defaults and returns the error text. */
static int args_error(char **argv, int argc, char *err, size_t errlen)
{
    struct demo d;
    assert_int_equal(load(&d, err, errlen), 0);
    int rc = settings_load_args(rows, N_ROWS, &d, argc, argv, err, errlen);
    settings_free(rows, N_ROWS, &d);
    return rc;
}

static void bad_command_lines(void **state)
{
    (void)state;
    char err[256];
    char *a1[] = {"prog", "--count", "0"};
    assert_int_equal(args_error(a1, 3, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "--count: \"0\" is not an integer in [1, 100]");
    char *a2[] = {"prog", "--count"};
    assert_int_equal(args_error(a2, 2, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "--count needs a value");
    char *a3[] = {"prog", "--bogus=1"};
    assert_int_equal(args_error(a3, 2, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "unknown option --bogus (see --help)");
    char *a4[] = {"prog", "count"};
    assert_int_equal(args_error(a4, 2, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "unexpected argument \"count\" (see --help)");
    /* an environment-only row has no flag, whatever its name would be */
    char *a5[] = {"prog", "--token", "s3cret"};
    assert_int_equal(args_error(a5, 3, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "unknown option --token (see --help)");
}

/* What a print function wrote, as a new allocation. */
static char *printed(void (*print)(FILE *, const struct setting *, size_t), size_t from, size_t n)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    print(f, rows + from, n);
    fclose(f);
    return text;
}

static void help_and_markdown(void **state)
{
    (void)state;
    char *env = printed(settings_print_env, 0, 3);
    assert_string_equal(
        env, "  TS_NAME                          who it is (default: anon)\n"
             "  TS_COUNT                         how many (default: 5, 1..100)\n"
             "  TS_ON                            whether it runs (default: 0, 0 or 1)\n");
    free(env);
    char *flags = printed(settings_print_flags, 3, 3);
    assert_string_equal(flags, "  --listen, TS_LISTEN (default 127.0.0.1:8000)\n"
                               "      where it listens\n"
                               "  TS_TOKEN (environment only)\n"
                               "      a secret\n"
                               "  --level, TS_LEVEL (default low)\n"
                               "      how loud\n");
    free(flags);
    char *md = printed(settings_print_markdown, 1, 4);
    assert_string_equal(md, "| setting | default | range | meaning |\n"
                            "|---|---|---|---|\n"
                            "| `TS_COUNT` | `5` | 1..100 | how many |\n"
                            "| `TS_ON` | `0` | 0 or 1 | whether it runs |\n"
                            "| `TS_LISTEN` | `127.0.0.1:8000` |  | where it listens |\n"
                            "| `TS_TOKEN` | (unset) |  | a secret |\n");
    free(md);
}

/* Every value set, from the environment and the command line: every allocation is reached. */
static int load_everything(void *ctx)
{
    (void)ctx;
    char *argv[] = {"prog", "--name", "flagged", "--listen=[::1]:9", NULL};
    struct demo d;
    char err[256];
    memset(&d, 0, sizeof(d));
    int rc = settings_load_env(rows, N_ROWS, &d, err, sizeof(err));
    if (rc == 0)
        rc = settings_load_args(rows, N_ROWS, &d, 4, argv, err, sizeof(err));
    if (rc == -ENOMEM)
        assert_string_equal(err, "out of memory");
    settings_free(rows, N_ROWS, &d);
    return rc;
}

static void allocation_failures(void **state)
{
    (void)state;
    setenv("TS_NAME", "bob", 1);
    setenv("TS_TOKEN", "t0k", 1);
    setenv("TS_LISTEN", "10.0.0.1:80", 1);
    assert_true(alloc_fail_loop("settings", load_everything, NULL, false) > 0);
}

int main(void)
{
    alloc_fail_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(defaults_fill_every_field, clear_env),
        cmocka_unit_test_setup(environment_overrides_and_empty_is_unset, clear_env),
        cmocka_unit_test_setup(booleans_in_every_spelling, clear_env),
        cmocka_unit_test_setup(integers_outside_their_range_are_refused, clear_env),
        cmocka_unit_test_setup(a_long_bad_value_is_cut_in_the_message, clear_env),
        cmocka_unit_test_setup(listen_addresses, clear_env),
        cmocka_unit_test_setup(custom_rows_report_what_they_want, clear_env),
        cmocka_unit_test_setup(flags_win_over_the_environment, clear_env),
        cmocka_unit_test_setup(bad_command_lines, clear_env),
        cmocka_unit_test(help_and_markdown),
        cmocka_unit_test_setup(allocation_failures, clear_env),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
