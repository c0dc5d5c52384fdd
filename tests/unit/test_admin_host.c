/* Unit tests for admin_host: which Host headers the admin listener answers (DNS rebinding). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <string.h>
#include <cmocka.h>

#include "admin_host.h"

static struct admin_hosts hosts(const char *listen, const char *names)
{
    struct admin_hosts h;
    char err[160];
    assert_int_equal(admin_hosts_init(&h, listen, names, err, sizeof(err)), 0);
    return h;
}

static void localhost_and_addresses_by_default(void **state)
{
    struct admin_hosts h = hosts("127.0.0.1", NULL);
    assert_true(admin_hosts_allowed(&h, "localhost"));
    assert_true(admin_hosts_allowed(&h, "localhost:9090"));
    assert_true(admin_hosts_allowed(&h, "LocalHost:19090")); /* an SSH tunnel's port */
    assert_true(admin_hosts_allowed(&h, "localhost.:9090"));
    assert_true(admin_hosts_allowed(&h, "127.0.0.1:9090"));
    assert_true(admin_hosts_allowed(&h, "10.1.2.3:9090")); /* a probe of the pod's address */
    assert_true(admin_hosts_allowed(&h, "[::1]:9090"));
    assert_true(admin_hosts_allowed(&h, "[2001:db8::7]"));
    assert_true(admin_hosts_allowed(&h, NULL));
}

static void a_rebound_name_is_refused(void **state)
{
    struct admin_hosts h = hosts("0.0.0.0", NULL);
    assert_false(admin_hosts_allowed(&h, "attacker.example:9090"));
    assert_false(admin_hosts_allowed(&h, "attacker.example"));
    assert_false(admin_hosts_allowed(&h, "localhost.attacker.example"));
    assert_false(admin_hosts_allowed(&h, "127.0.0.1.nip.io:9090"));
    assert_false(admin_hosts_allowed(&h, "0x7f.1:9090"));
    assert_false(admin_hosts_allowed(&h, ""));
    assert_false(admin_hosts_allowed(&h, ":9090"));
    assert_false(admin_hosts_allowed(&h, "localhost:90x"));
    assert_false(admin_hosts_allowed(&h, "localhost:"));
    assert_false(admin_hosts_allowed(&h, "[::1"));
    assert_false(admin_hosts_allowed(&h, "[nothex]:9090"));
    assert_false(admin_hosts_allowed(&h, "127.0.0.1:9090@attacker.example"));
}

static void listed_names_and_the_listeners_own(void **state)
{
    struct admin_hosts h = hosts("ordersync-admin", " ops.example.com , Metrics.Internal.,");
    assert_true(admin_hosts_allowed(&h, "ordersync-admin:9090"));
    assert_true(admin_hosts_allowed(&h, "ops.example.com"));
    assert_true(admin_hosts_allowed(&h, "OPS.example.com:443"));
    assert_true(admin_hosts_allowed(&h, "metrics.internal:9090"));
    assert_false(admin_hosts_allowed(&h, "example.com"));
    assert_false(admin_hosts_allowed(&h, "x.ops.example.com"));
}

static void a_bad_setting_is_refused(void **state)
{
    struct admin_hosts h;
    char err[160] = "";
    assert_int_equal(
        admin_hosts_init(&h, "127.0.0.1", "ops.example.com,evil host", err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "evil host"));
    assert_int_equal(admin_hosts_init(&h, "127.0.0.1", "a:9090", err, sizeof(err)), -EINVAL);
    char many[ADMIN_HOST_MAX_NAMES * 4 + 16] = "";
    for (int i = 0; i <= ADMIN_HOST_MAX_NAMES; i++)
        strcat(many, "a.b,");
    assert_int_equal(admin_hosts_init(&h, NULL, many, err, sizeof(err)), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(localhost_and_addresses_by_default),
        cmocka_unit_test(a_rebound_name_is_refused),
        cmocka_unit_test(listed_names_and_the_listeners_own),
        cmocka_unit_test(a_bad_setting_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
