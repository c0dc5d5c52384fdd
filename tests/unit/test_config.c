/*
 * Unit tests for services/ordersync/config: ordersync's settings table as an
 * operator meets it: the defaults with a bare environment, each kind of value
 * set through its variable, refusals that name the variable, and the --help
 * and README texts made from the table.
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
#include <unistd.h>
#include <cmocka.h>

#include "alloc_fail.h"
#include "config.h"

extern char **environ;

/* Every variable config.c reads starts with ORDERSYNC_, or is DATABASE_URL. */
static int clear_env(void **state)
{
    (void)state;
    for (;;) {
        char name[128] = "";
        for (char **e = environ; *e != NULL; e++) {
            if (strncmp(*e, "ORDERSYNC_", 10) == 0 || strncmp(*e, "DATABASE_URL=", 13) == 0) {
                size_t n = strcspn(*e, "=");
                snprintf(name, sizeof(name), "%.*s", (int)n, *e);
                break;
            }
        }
        if (name[0] == '\0')
            return 0;
        unsetenv(name);
    }
}

static void defaults(void **state)
{
    (void)state;
    struct config cfg;
    char err[256] = "";
    assert_int_equal(config_load(&cfg, err, sizeof(err)), 0);
    assert_null(cfg.database_url);
    assert_string_equal(cfg.listen.host, "0.0.0.0");
    assert_int_equal(cfg.listen.port, 8080);
    assert_null(cfg.admin_listen.host); /* no admin listener unless asked */
    assert_null(cfg.admin_token);
    assert_false(cfg.migrate_on_start);
    assert_string_equal(cfg.log_level, "info");
    assert_int_equal(cfg.max_body, 1048576);
    assert_int_equal(cfg.max_header, 16384);
    assert_int_equal(cfg.max_connections, 1024);
    assert_int_equal(cfg.header_timeout_ms, 10000);
    assert_int_equal(cfg.request_timeout_s, 30);
    assert_int_equal(cfg.idle_timeout_ms, 60000);
    assert_int_equal(cfg.batch_max, 256);
    assert_int_equal(cfg.ingest_queue_max, 2048);
    assert_int_equal(cfg.ingest_connections, 2);
    assert_int_equal(cfg.retry_after_s, 5);
    assert_int_equal(cfg.reload_interval_s, 30);
    assert_int_equal(cfg.shutdown_timeout_s, 10);
    assert_int_equal(cfg.db_connect_timeout_s, 5);
    assert_true(cfg.relay_enabled);
    assert_int_equal(cfg.lease_s, 60);
    assert_int_equal(cfg.claim_batch, 256);
    assert_int_equal(cfg.sweep_interval_s, 30);
    assert_string_equal(cfg.retention, "30 days");
    assert_string_equal(cfg.partition_interval, "1 day");
    /* the instance defaults to hostname:pid */
    char host[256] = "";
    gethostname(host, sizeof(host) - 1);
    char expect[300];
    snprintf(expect, sizeof(expect), "%s:%ld", host, (long)getpid());
    assert_string_equal(cfg.instance, expect);
    config_free(&cfg);
    assert_null(cfg.instance);
    assert_null(cfg.listen.host);
}

static void every_kind_from_the_environment(void **state)
{
    (void)state;
    setenv("DATABASE_URL", "postgresql://u@db/x", 1);
    setenv("ORDERSYNC_ADMIN_LISTEN", "127.0.0.1:9090", 1);
    setenv("ORDERSYNC_RELAY", "off", 1);
    setenv("ORDERSYNC_LEASE_S", "5", 1); /* the minimum is allowed */
    setenv("ORDERSYNC_INSTANCE", "a-1", 1);
    setenv("ORDERSYNC_RETENTION", "", 1); /* empty: the default stays */
    struct config cfg;
    char err[256] = "";
    assert_int_equal(config_load(&cfg, err, sizeof(err)), 0);
    assert_string_equal(cfg.database_url, "postgresql://u@db/x");
    assert_string_equal(cfg.admin_listen.host, "127.0.0.1");
    assert_int_equal(cfg.admin_listen.port, 9090);
    assert_false(cfg.relay_enabled);
    assert_int_equal(cfg.lease_s, 5);
    assert_string_equal(cfg.instance, "a-1");
    assert_string_equal(cfg.retention, "30 days");
    config_free(&cfg);
}

/* Loads with one variable set; returns the result and the message in err. */
static int load_with(const char *name, const char *value, char *err, size_t errlen)
{
    setenv(name, value, 1);
    struct config cfg;
    int rc = config_load(&cfg, err, errlen);
    if (rc == 0)
        config_free(&cfg);
    unsetenv(name);
    return rc;
}

static void bad_values_name_the_variable(void **state)
{
    (void)state;
    char err[256];
    assert_int_equal(load_with("ORDERSYNC_LEASE_S", "4", err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "ORDERSYNC_LEASE_S: \"4\" is not an integer in [5, 3600]");
    assert_int_equal(load_with("ORDERSYNC_MAX_BODY", "67108865", err, sizeof(err)), -EINVAL);
    assert_string_equal(err,
                        "ORDERSYNC_MAX_BODY: \"67108865\" is not an integer in [1024, 67108864]");
    assert_int_equal(load_with("ORDERSYNC_MAX_BODY", "1MB", err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "ORDERSYNC_MAX_BODY: \"1MB\" is not an integer in [1024, 67108864]");
    assert_int_equal(load_with("ORDERSYNC_MIGRATE_ON_START", "sure", err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "ORDERSYNC_MIGRATE_ON_START: \"sure\" is not a boolean (use 0 or 1)");
    assert_int_equal(load_with("ORDERSYNC_LISTEN", "8080", err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "ORDERSYNC_LISTEN: \"8080\" is not host:port");
    assert_int_equal(load_with("ORDERSYNC_INGEST_CONNECTIONS", "16", err, sizeof(err)), 0);
    assert_int_equal(load_with("ORDERSYNC_INGEST_CONNECTIONS", "17", err, sizeof(err)), -EINVAL);
}

static char *printed(bool markdown)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    config_print(f, markdown);
    fclose(f);
    return text;
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s != '\0'; s++)
        n += *s == '\n';
    return n;
}

static void help_lists_every_setting_with_default_and_range(void **state)
{
    (void)state;
    char *help = printed(false);
    assert_int_equal(count_lines(help), 34); /* one line per setting */
    assert_non_null(strstr(help,
                           "  ORDERSYNC_MAX_BODY               largest accepted request body in"
                           " bytes (413 above) (default: 1048576, 1024..67108864)\n"));
    assert_non_null(strstr(help, "  ORDERSYNC_RELAY                  deliver events to destinations"
                                 " from this process (0: ingest only) (default: 1, 0 or 1)\n"));
    assert_non_null(
        strstr(help, "  ORDERSYNC_ADMIN_TOKEN            turns on the operator console"));
    assert_non_null(strstr(help, "(default: unset)\n"));
    free(help);
}

static void markdown_is_the_readme_table(void **state)
{
    (void)state;
    char *md = printed(true);
    assert_int_equal(count_lines(md), 36); /* header, rule, one row per setting */
    assert_memory_equal(md, "| setting | default | range | meaning |\n|---|---|---|---|\n", 56);
    assert_non_null(
        strstr(md, "\n| `DATABASE_URL` | (unset) |  | libpq connection string or URL;"));
    assert_non_null(
        strstr(md, "\n| `ORDERSYNC_LEASE_S` | `60` | 5..3600 | a destination's stream,"));
    assert_non_null(strstr(md, "\n| `ORDERSYNC_RETENTION` | `30 days` |  | events, webhooks"));
    free(md);
}

static int load(void *ctx)
{
    (void)ctx;
    struct config cfg;
    char err[256];
    int rc = config_load(&cfg, err, sizeof(err));
    if (rc == 0)
        config_free(&cfg); /* on failure config_load has freed what it made */
    return rc;
}

static void allocation_failures(void **state)
{
    (void)state;
    setenv("DATABASE_URL", "postgresql://u@db/x", 1);
    setenv("ORDERSYNC_ADMIN_LISTEN", "127.0.0.1:9090", 1);
    assert_true(alloc_fail_loop("config", load, NULL, false) > 0);
}

int main(void)
{
    alloc_fail_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(defaults, clear_env),
        cmocka_unit_test_setup(every_kind_from_the_environment, clear_env),
        cmocka_unit_test_setup(bad_values_name_the_variable, clear_env),
        cmocka_unit_test(help_lists_every_setting_with_default_and_range),
        cmocka_unit_test(markdown_is_the_readme_table),
        cmocka_unit_test_setup(allocation_failures, clear_env),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
