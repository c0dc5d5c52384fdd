/*
 * Unit tests for lib/log: the JSON lines an operator's log shipper reads on
 * stderr. Each test captures stderr in a temporary file and parses what was
 * written.
 */
#include <errno.h>
#include <regex.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include <jansson.h>

#include "log.h"

static int saved_stderr = -1;
static FILE *captured;

static void capture_start(void)
{
    fflush(stderr);
    captured = tmpfile();
    assert_non_null(captured);
    saved_stderr = dup(2);
    dup2(fileno(captured), 2);
}

/* Restores stderr; returns what was written meanwhile (a new allocation). */
static char *capture_end(void)
{
    fflush(stderr);
    dup2(saved_stderr, 2);
    close(saved_stderr);
    long n = ftell(captured);
    char *text = calloc(1, (size_t)n + 1);
    assert_non_null(text);
    rewind(captured);
    assert_int_equal(fread(text, 1, (size_t)n, captured), (size_t)n);
    fclose(captured);
    return text;
}

static int reset(void **state)
{
    (void)state;
    log_set_level(LOG_INFO);
    log_set_service(NULL);
    return 0;
}

static void one_json_object_per_line_in_a_fixed_order(void **state)
{
    (void)state;
    log_set_service("ordersync");
    capture_start();
    log_info("listening", json_pack("{s:s,s:i}", "host", "127.0.0.1", "port", 8080));
    char *out = capture_end();
    /* one line, newline-terminated, nothing else */
    size_t len = strlen(out);
    assert_true(len > 0);
    assert_int_equal(out[len - 1], '\n');
    assert_null(memchr(out, '\n', len - 1));
    /* time, level, service and msg first, then the fields in their order */
    regex_t re;
    assert_int_equal(regcomp(&re,
                             "^\\{\"time\":\"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
                             "\\.[0-9]{3}Z\",\"level\":\"info\",\"service\":\"ordersync\","
                             "\"msg\":\"listening\",\"host\":\"127.0.0.1\",\"port\":8080\\}\n$",
                             REG_EXTENDED),
                     0);
    assert_int_equal(regexec(&re, out, 0, NULL, 0), 0);
    regfree(&re);
    free(out);
}

static void levels_below_the_minimum_are_dropped(void **state)
{
    (void)state;
    log_set_level(LOG_WARN);
    assert_false(log_enabled(LOG_INFO));
    assert_true(log_enabled(LOG_WARN));
    assert_true(log_enabled(LOG_ERROR));
    capture_start();
    /* dropped, and the fields (owned by log_json) freed: ASan would report a leak */
    log_debug("noise", json_pack("{s:s}", "k", "v"));
    log_info("noise", json_pack("{s:s}", "k", "v"));
    log_warn("careful", NULL);
    log_error("broken", NULL);
    char *out = capture_end();
    json_error_t jerr;
    char *second = strchr(out, '\n');
    assert_non_null(second);
    json_t *a = json_loadb(out, (size_t)(second - out), 0, &jerr);
    json_t *b = json_loads(second + 1, 0, &jerr);
    assert_non_null(a);
    assert_non_null(b);
    assert_string_equal(json_string_value(json_object_get(a, "level")), "warn");
    assert_string_equal(json_string_value(json_object_get(a, "msg")), "careful");
    assert_string_equal(json_string_value(json_object_get(b, "level")), "error");
    assert_null(json_object_get(a, "service")); /* none set */
    json_decref(a);
    json_decref(b);
    free(out);
}

static void level_names(void **state)
{
    (void)state;
    static const char *const names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++) {
        enum log_level l = LOG_ERROR;
        assert_int_equal(log_parse_level(names[i], &l), 0);
        assert_int_equal(l, (enum log_level)i);
    }
    enum log_level l = LOG_WARN;
    assert_int_equal(log_parse_level("verbose", &l), -EINVAL);
    assert_int_equal(log_parse_level("INFO", &l), -EINVAL); /* exactly as documented */
    assert_int_equal(l, LOG_WARN);                          /* untouched */
}

static json_t *parse_line(const char *text)
{
    json_error_t jerr;
    json_t *j = json_loads(text, 0, &jerr);
    assert_non_null(j);
    return j;
}

static void fields_cannot_replace_the_header(void **state)
{
    (void)state;
    capture_start();
    log_info("real message",
             json_pack("{s:s,s:s,s:s}", "msg", "forged", "level", "debug", "detail", "kept"));
    char *out = capture_end();
    json_t *j = parse_line(out);
    assert_string_equal(json_string_value(json_object_get(j, "msg")), "real message");
    assert_string_equal(json_string_value(json_object_get(j, "level")), "info");
    assert_string_equal(json_string_value(json_object_get(j, "detail")), "kept");
    json_decref(j);
    free(out);
}

static void null_or_non_object_fields_are_tolerated(void **state)
{
    (void)state;
    capture_start();
    log_info("no fields", NULL);
    log_info("an array", json_pack("[i,i]", 1, 2)); /* ignored, and freed */
    char *out = capture_end();
    char *nl = strchr(out, '\n');
    assert_non_null(nl);
    *nl = '\0';
    json_t *a = parse_line(out);
    json_t *b = parse_line(nl + 1);
    assert_int_equal(json_object_size(a), 3); /* time, level, msg */
    assert_int_equal(json_object_size(b), 3);
    assert_string_equal(json_string_value(json_object_get(b, "msg")), "an array");
    json_decref(a);
    json_decref(b);
    free(out);
}

/*
 * The logger writes what it is given: keeping secrets out is the caller's
 * duty (CONVENTIONS: never a secret or a full payload), so a field that looks
 * like a secret passes through as given, escaped as JSON and nothing more.
 */
static void fields_pass_through_as_given(void **state)
{
    (void)state;
    capture_start();
    log_warn("signature check failed",
             json_pack("{s:s,s:s}", "secret", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "detail",
                       "line\nbreak \"quoted\""));
    char *out = capture_end();
    assert_non_null(strstr(out, "\"secret\":\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\""));
    assert_non_null(strstr(out, "\"detail\":\"line\\nbreak \\\"quoted\\\"\""));
    /* the newline inside the value is escaped: the only one ends the line */
    assert_ptr_equal(strchr(out, '\n'), out + strlen(out) - 1);
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(one_json_object_per_line_in_a_fixed_order, reset),
        cmocka_unit_test_setup(levels_below_the_minimum_are_dropped, reset),
        cmocka_unit_test_setup(level_names, reset),
        cmocka_unit_test_setup(fields_cannot_replace_the_header, reset),
        cmocka_unit_test_setup(null_or_non_object_fields_are_tolerated, reset),
        cmocka_unit_test_setup(fields_pass_through_as_given, reset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
