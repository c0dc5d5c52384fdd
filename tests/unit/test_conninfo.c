/*
 * conninfo: what ordersync hands libpq for a connection string. Keepalive
 * defaults only where the user left them open, multi-host lists kept in
 * order with resolved names expanded into their addresses, the rotation that
 * skips a host that hung, and libpq's own list-matching errors.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "conninfo.h"

/* Value given for `key` in a NULL-terminated keys/vals pair, or NULL. */
static const char *param(const char *const *keys, const char *const *vals, const char *key)
{
    const char *found = NULL;
    for (size_t i = 0; keys[i] != NULL; i++)
        if (strcmp(keys[i], key) == 0)
            found = vals[i]; /* libpq: a later key wins */
    return found;
}

static struct conninfo *parse(const char *s)
{
    char err[256] = "";
    struct conninfo *ci = NULL;
    int rc = conninfo_new(s, err, sizeof(err), &ci);
    if (rc != 0)
        fail_msg("conninfo_new(%s): %d %s", s, rc, err);
    return ci;
}

static void clear_env(void)
{
    unsetenv("PGHOST");
    unsetenv("PGHOSTADDR");
    unsetenv("PGPORT");
    unsetenv("PGSERVICE");
    unsetenv("PGCONNECT_TIMEOUT");
}

static int setup(void **state)
{
    clear_env();
    return 0;
}

static void keepalive_defaults_fill_only_what_is_unset(void **state)
{
    struct conninfo *ci =
        parse("postgresql://u@127.0.0.1:5432/db?keepalives_idle=30&tcp_user_timeout=0");
    const char *const *k, *const *v;
    assert_int_equal(conninfo_params(ci, 0, &k, &v), 0);
    assert_string_equal(param(k, v, "keepalives"), "1");
    assert_string_equal(param(k, v, "keepalives_idle"), "30");
    assert_string_equal(param(k, v, "keepalives_interval"), CONNINFO_KEEPALIVES_INTERVAL_S);
    assert_string_equal(param(k, v, "keepalives_count"), CONNINFO_KEEPALIVES_COUNT);
    assert_string_equal(param(k, v, "tcp_user_timeout"), "0");
    assert_string_equal(param(k, v, "dbname"), "db");
    assert_string_equal(param(k, v, "user"), "u");
    conninfo_free(&ci);
    assert_null(ci);

    ci = parse("host=/run/postgresql dbname=x");
    assert_int_equal(conninfo_params(ci, 0, &k, &v), 0);
    assert_string_equal(param(k, v, "tcp_user_timeout"), CONNINFO_USER_TIMEOUT_MS);
    assert_string_equal(param(k, v, "keepalives_idle"), CONNINFO_KEEPALIVES_IDLE_S);
    conninfo_free(&ci);
}

static void multi_host_addresses_pass_through_in_order(void **state)
{
    struct conninfo *ci = parse("postgresql://ordersync@127.0.0.1:5001,127.0.0.1:5002/ordersync"
                                "?target_session_attrs=read-write");
    assert_int_equal(conninfo_host_count(ci), 2);
    assert_null(conninfo_host_to_resolve(ci, 0));
    assert_null(conninfo_host_to_resolve(ci, 1));
    assert_int_equal(conninfo_target_count(ci), 2);
    const char *const *k, *const *v;
    assert_int_equal(conninfo_params(ci, 0, &k, &v), 0);
    assert_string_equal(param(k, v, "host"), "127.0.0.1,127.0.0.1");
    assert_string_equal(param(k, v, "port"), "5001,5002");
    assert_null(param(k, v, "hostaddr")); /* libpq takes literals as they are */
    assert_string_equal(param(k, v, "target_session_attrs"), "read-write");
    conninfo_free(&ci);
}

static void names_expand_into_their_addresses(void **state)
{
    struct conninfo *ci = parse("postgresql://u@db1:5432,db2:5433,[::1]:5434/x");
    assert_int_equal(conninfo_host_count(ci), 3);
    assert_string_equal(conninfo_host_to_resolve(ci, 0), "db1");
    assert_string_equal(conninfo_host_to_resolve(ci, 1), "db2");
    assert_null(conninfo_host_to_resolve(ci, 2));
    const char *a1[] = {"10.0.0.1", "fd00::1", "10.0.0.1"}; /* a duplicate is dropped */
    const char *a2[] = {"10.0.0.2"};
    assert_int_equal(conninfo_set_addrs(ci, 0, a1, 3), 0);
    assert_int_equal(conninfo_set_addrs(ci, 1, a2, 1), 0);
    assert_int_equal(conninfo_target_count(ci), 4);
    const char *const *k, *const *v;
    assert_int_equal(conninfo_params(ci, 0, &k, &v), 0);
    /* host stays the name (TLS, .pgpass); hostaddr is what libpq connects to */
    assert_string_equal(param(k, v, "host"), "db1,db1,db2,::1");
    assert_string_equal(param(k, v, "hostaddr"), "10.0.0.1,fd00::1,10.0.0.2,");
    assert_string_equal(param(k, v, "port"), "5432,5432,5433,5434");

    /* a new attempt resolves again */
    conninfo_clear_addrs(ci);
    assert_int_equal(conninfo_target_count(ci), 3);
    conninfo_free(&ci);
}

static void a_name_that_does_not_resolve_is_left_out(void **state)
{
    struct conninfo *ci = parse("postgresql://u@gone,db2/x?port=6000");
    const char *a2[] = {"10.0.0.2"};
    assert_int_equal(conninfo_set_addrs(ci, 0, NULL, 0), 0);
    assert_int_equal(conninfo_set_addrs(ci, 1, a2, 1), 0);
    const char *const *k, *const *v;
    assert_int_equal(conninfo_params(ci, 0, &k, &v), 0);
    assert_string_equal(param(k, v, "host"), "db2");
    assert_string_equal(param(k, v, "hostaddr"), "10.0.0.2");
    assert_string_equal(param(k, v, "port"), "6000");

    assert_int_equal(conninfo_set_addrs(ci, 1, NULL, 0), 0);
    assert_int_equal(conninfo_target_count(ci), 0);
    assert_int_equal(conninfo_params(ci, 0, &k, &v), -EHOSTUNREACH);
    conninfo_free(&ci);
}

static void addresses_per_name_are_capped(void **state)
{
    struct conninfo *ci = parse("host=many");
    const char *addrs[CONNINFO_MAX_ADDRS + 3];
    char bufs[CONNINFO_MAX_ADDRS + 3][16];
    for (int i = 0; i < CONNINFO_MAX_ADDRS + 3; i++) {
        snprintf(bufs[i], sizeof(bufs[i]), "10.0.0.%d", i + 1);
        addrs[i] = bufs[i];
    }
    assert_int_equal(conninfo_set_addrs(ci, 0, addrs, CONNINFO_MAX_ADDRS + 3), 0);
    assert_int_equal(conninfo_target_count(ci), CONNINFO_MAX_ADDRS);
    conninfo_free(&ci);
}

static void rotation_starts_after_the_host_that_hung(void **state)
{
    struct conninfo *ci = parse("postgresql://u@10.1.0.1:5001,10.1.0.2:5002,10.1.0.3:5003/x");
    long hung = conninfo_find_target(ci, "10.1.0.1", "10.1.0.1", "5001");
    assert_int_equal(hung, 0);
    const char *const *k, *const *v;
    assert_int_equal(conninfo_params(ci, (size_t)hung + 1, &k, &v), 0);
    assert_string_equal(param(k, v, "host"), "10.1.0.2,10.1.0.3,10.1.0.1");
    assert_string_equal(param(k, v, "port"), "5002,5003,5001");
    /* modulo the count: the index survives a list that shrank */
    assert_int_equal(conninfo_params(ci, 4, &k, &v), 0);
    assert_string_equal(param(k, v, "host"), "10.1.0.2,10.1.0.3,10.1.0.1");
    conninfo_free(&ci);
}

static void find_target_matches_address_and_port(void **state)
{
    struct conninfo *ci = parse("host=db,db,/run/pg port=5001,5002,5003 user=u");
    const char *a[] = {"10.0.0.7", "10.0.0.8"};
    assert_int_equal(conninfo_set_addrs(ci, 0, a, 2), 0);
    assert_int_equal(conninfo_set_addrs(ci, 1, a, 2), 0);
    assert_int_equal(conninfo_find_target(ci, "db", "10.0.0.8", "5001"), 1);
    assert_int_equal(conninfo_find_target(ci, "db", "10.0.0.7", "5002"), 2);
    assert_int_equal(conninfo_find_target(ci, "/run/pg", "", "5003"), 4);
    assert_int_equal(conninfo_find_target(ci, "db", "10.0.0.9", "5001"), -1);
    conninfo_free(&ci);
}

static void libpq_list_rules_are_enforced(void **state)
{
    char err[256];
    struct conninfo *ci = NULL;
    assert_int_equal(conninfo_new("host=a,b,c port=1,2", err, sizeof(err), &ci), -EINVAL);
    assert_null(ci);
    assert_string_equal(err, "could not match 2 port numbers to 3 hosts");
    assert_int_equal(conninfo_new("host=a,b hostaddr=10.0.0.1", err, sizeof(err), &ci), -EINVAL);
    assert_string_equal(err, "could not match 2 host names to 1 hostaddr values");
    assert_int_equal(conninfo_new("postgresql://u@h/x?nonsense=1", err, sizeof(err), &ci), -EINVAL);
    assert_non_null(strstr(err, "nonsense"));
    assert_int_equal(err[strlen(err) - 1] != '\n', 1);

    /* one port for every host */
    ci = parse("host=10.0.0.1,10.0.0.2 port=7000");
    const char *const *k, *const *v;
    assert_int_equal(conninfo_params(ci, 1, &k, &v), 0);
    assert_string_equal(param(k, v, "port"), "7000,7000");
    assert_string_equal(param(k, v, "host"), "10.0.0.2,10.0.0.1");
    conninfo_free(&ci);

    /* an entry with its own hostaddr needs no lookup */
    ci = parse("host=db1,db2 hostaddr=10.0.0.1,");
    assert_null(conninfo_host_to_resolve(ci, 0));
    assert_string_equal(conninfo_host_to_resolve(ci, 1), "db2");
    conninfo_free(&ci);
}

static void environment_is_read_with_libpq_precedence(void **state)
{
    setenv("PGHOST", "envhost1,envhost2", 1);
    setenv("PGPORT", "6001,6002", 1);
    struct conninfo *ci = parse(NULL);
    assert_int_equal(conninfo_host_count(ci), 2);
    assert_string_equal(conninfo_host_to_resolve(ci, 1), "envhost2");
    const char *const *k, *const *v;
    assert_int_equal(conninfo_params(ci, 0, &k, &v), 0);
    assert_string_equal(param(k, v, "port"), "6001,6002");
    conninfo_free(&ci);

    /* the string wins over the environment (which libpq would then also have to match) */
    unsetenv("PGPORT");
    ci = parse("host=10.9.9.9");
    assert_int_equal(conninfo_host_count(ci), 1);
    assert_null(conninfo_host_to_resolve(ci, 0));
    conninfo_free(&ci);

    /* a service file outranks PG*: its hosts are left to libpq */
    setenv("PGSERVICE", "ha", 1);
    ci = parse("");
    assert_int_equal(conninfo_host_count(ci), 1);
    assert_null(conninfo_host_to_resolve(ci, 0));
    assert_int_equal(conninfo_params(ci, 0, &k, &v), 0);
    assert_null(param(k, v, "host"));
    assert_null(param(k, v, "port"));
    conninfo_free(&ci);
    clear_env();

    /* nothing given: libpq's defaults, untouched */
    ci = parse(NULL);
    assert_int_equal(conninfo_params(ci, 0, &k, &v), 0);
    assert_null(param(k, v, "host"));
    assert_null(param(k, v, "hostaddr"));
    assert_null(param(k, v, "port"));
    conninfo_free(&ci);
}

static void set_overrides_and_connect_timeout(void **state)
{
    struct conninfo *ci = parse("postgresql://u@h/x?application_name=mine&connect_timeout=1");
    assert_int_equal(conninfo_connect_timeout_ms(ci, 5000), 2000); /* libpq's minimum */
    assert_int_equal(conninfo_set(ci, "application_name", "ordersync"), 0);
    assert_int_equal(conninfo_set(ci, "connect_timeout", "0"), 0);
    assert_string_equal(conninfo_get(ci, "application_name"), "ordersync");
    assert_int_equal(conninfo_connect_timeout_ms(ci, 5000), 0);
    assert_int_equal(conninfo_set(ci, "connect_timeout", "7"), 0);
    assert_int_equal(conninfo_connect_timeout_ms(ci, 5000), 7000);
    const char *const *k, *const *v;
    assert_int_equal(conninfo_params(ci, 0, &k, &v), 0);
    assert_string_equal(param(k, v, "application_name"), "ordersync");
    conninfo_free(&ci);

    ci = parse("dbname=x");
    assert_int_equal(conninfo_connect_timeout_ms(ci, 5000), 5000);
    setenv("PGCONNECT_TIMEOUT", "3", 1);
    assert_int_equal(conninfo_connect_timeout_ms(ci, 5000), 3000);
    clear_env();
    conninfo_free(&ci);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(keepalive_defaults_fill_only_what_is_unset, setup),
        cmocka_unit_test_setup(multi_host_addresses_pass_through_in_order, setup),
        cmocka_unit_test_setup(names_expand_into_their_addresses, setup),
        cmocka_unit_test_setup(a_name_that_does_not_resolve_is_left_out, setup),
        cmocka_unit_test_setup(addresses_per_name_are_capped, setup),
        cmocka_unit_test_setup(rotation_starts_after_the_host_that_hung, setup),
        cmocka_unit_test_setup(find_target_matches_address_and_port, setup),
        cmocka_unit_test_setup(libpq_list_rules_are_enforced, setup),
        cmocka_unit_test_setup(environment_is_read_with_libpq_precedence, setup),
        cmocka_unit_test_setup(set_overrides_and_connect_timeout, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
