/*
 * api_destination: see api_destination.h. Pause, resume, replay and filter
 * are one statement each (console.c, on the console's connection); a test
 * event is sent from this process (relay_test_event.c, on a client of the
 * console's own, so that it never waits behind deliveries) and its answer
 * recorded by a statement once it came.
 */
#include "api_destination.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "api_console.h"
#include "api_console_internal.h"
#include "console_auth.h"
#include "log.h"
#include "relay_test_event.h"

/* Test events in flight from one process at most: each holds an operator's request open. */
#define MAX_TESTS 8
/* The test client's idle connections (a handful of destinations being checked). */
#define TEST_CONNECTIONS 4

/* One test's request and what its record needs. */
struct test_ctx {
    struct app *app;
    struct http_request *req;
    char actor[96];
};

static unsigned tests_in_flight;

static bool is_name(const char *s, size_t n)
{
    if (n == 0 || n > 63 || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= '0' && s[0] <= '9')))
        return false;
    for (size_t i = 0; i < n; i++)
        if (strchr("abcdefghijklmnopqrstuvwxyz0123456789_-", s[i]) == NULL)
            return false;
    return true;
}

static void on_test_answer(const struct relay_test_event_result *res, void *data)
{
    struct test_ctx *t = data;
    tests_in_flight--;
    if (res->aborted) {
        api_console_error(t->req, 503, "stopping", "ordersync is stopping; try again", NULL, 0);
        free(t);
        return;
    }
    char status[16], ms[16];
    snprintf(status, sizeof(status), "%ld", res->http_status);
    snprintf(ms, sizeof(ms), "%d", res->ms);
    log_info("console test event",
             json_pack("{s:s,s:s,s:s,s:i}", "destination", res->destination, "actor", t->actor,
                       "webhook_id", res->webhook_id, "status", (int)res->http_status));
    const char *p[] = {
        res->destination, t->actor, res->webhook_id, res->http_status ? status : NULL, res->body,
        res->error,       ms};
    api_console_run(t->app, t->req, CONSOLE_DEST_TEST, p);
    free(t);
}

static void send_test(struct app *app, struct http_request *req, const char *id, const char *actor)
{
    const struct dest *d = destinations_find(app->dests, id);
    if (d == NULL || !d->present) {
        api_console_error(req, 404, "not_found", "no such destination (or it cannot be sent to)",
                          NULL, 0);
        return;
    }
    if (!d->set.push) {
        api_console_error(req, 409, "not_push",
                          "a poll destination reads its feed: there is nothing to send it", NULL,
                          0);
        return;
    }
    if (tests_in_flight >= MAX_TESTS) {
        api_console_error(req, 429, "busy", "too many test events in flight; try again", NULL, 0);
        return;
    }
    if (app->test_http == NULL &&
        http_client_new(app->loop, "ordersync", TEST_CONNECTIONS, &app->test_http) < 0) {
        api_console_error(req, 500, "internal_error", "could not start an HTTP client", NULL, 0);
        return;
    }
    struct test_ctx *t = calloc(1, sizeof(*t));
    if (t == NULL) {
        api_console_error(req, 500, "internal_error", "out of memory", NULL, 0);
        return;
    }
    t->app = app;
    t->req = req;
    snprintf(t->actor, sizeof(t->actor), "%s", actor);
    int rc = relay_test_event_send(app->test_http, d, actor, on_test_answer, t);
    if (rc < 0) {
        free(t);
        api_console_error(req, rc == -EINVAL ? 409 : 500,
                          rc == -EINVAL ? "not_deliverable" : "internal_error",
                          rc == -EINVAL ? "the destination has no URL or secret it can be sent with"
                                        : "could not send the test event",
                          NULL, 0);
        return;
    }
    tests_in_flight++;
}

void api_destination_post(struct app *app, struct http_request *req, const char *rest,
                          const char *operator)
{
    const char *slash = strchr(rest, '/');
    const char *action = slash + 1;
    char id[64];
    if (!is_name(rest, (size_t)(slash - rest))) {
        api_console_error(req, 404, "not_found", "no such destination", NULL, 0);
        return;
    }
    snprintf(id, sizeof(id), "%.*s", (int)(slash - rest), rest);
    size_t len;
    const char *body = http_request_body(req, &len);
    json_t *doc = len > 0 ? json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL) : NULL;
    if (len > 0) {
        const char *ctype = http_request_header(req, "content-type");
        if (ctype == NULL || strncasecmp(ctype, "application/json", 16) != 0) {
            api_console_error(req, 415, "unsupported_media_type", "send application/json", NULL, 0);
            goto done;
        }
        if (!json_is_object(doc)) {
            api_console_error(req, 400, "bad_request", "the body is not a JSON object", NULL, 0);
            goto done;
        }
    }
    /* "console:alice" for a browser's operator; "api:<actor>" for a token holder */
    char actor[96];
    const char *named = json_string_value(json_object_get(doc, "actor"));
    if (operator!= NULL)
        snprintf(actor, sizeof(actor), "console:%s", operator);
    else
        snprintf(actor, sizeof(actor), "api:%s",
                 named != NULL && console_auth_name_ok(named) ? named : "token");

    if (strcmp(action, "pause") == 0 || strcmp(action, "resume") == 0) {
        const char *p[] = {id, action[0] == 'p' ? "true" : "false", actor};
        api_console_run(app, req, CONSOLE_DEST_PAUSE, p);
    } else if (strcmp(action, "test") == 0) {
        send_test(app, req, id, actor);
    } else if (strcmp(action, "replay") == 0) {
        const char *since = json_string_value(json_object_get(doc, "since"));
        const char *until = json_string_value(json_object_get(doc, "until"));
        json_t *preview = json_object_get(doc, "preview");
        if (since == NULL || until == NULL || strlen(since) > 64 || strlen(until) > 64 ||
            (preview != NULL && !json_is_boolean(preview))) {
            api_console_error(req, 400, "bad_request",
                              "send {\"since\": time, \"until\": time, \"preview\": false}", NULL,
                              0);
            goto done;
        }
        const char *p[] = {id, since, until, actor, json_is_true(preview) ? "true" : "false"};
        api_console_run(app, req, CONSOLE_DEST_REPLAY, p);
    } else if (strcmp(action, "filter") == 0) {
        json_t *f = json_object_get(doc, "filter");
        if (!json_is_null(f) && (!json_is_string(f) || json_string_length(f) > 4096)) {
            api_console_error(req, 400, "bad_request",
                              "send {\"filter\": a jsonpath predicate (at most 4096 bytes), or "
                              "null for none}",
                              NULL, 0);
            goto done;
        }
        const char *p[] = {id, json_string_value(f), actor};
        api_console_run(app, req, CONSOLE_DEST_FILTER, p);
    } else {
        api_console_error(req, 404, "not_found",
                          "no such action: pause, resume, test, replay or filter", NULL, 0);
    }
done:
    json_decref(doc);
}
