/*
 * relay_test_event: see relay_test_event.h. The body:
 *   {"type": "ping", "timestamp": "...", "data": {"destination": ID,
 *    "message": "a test event from ordersync; it is not an order event",
 *    "by": ACTOR}}
 * and a webhook-id of its own ("msg_test_" and 32 random hex digits), so a
 * receiver that dedupes by webhook-id never mistakes it for a real event.
 */
#include "relay_test_event.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/rand.h>

#include "relay_internal.h"

/* One test in flight: the copies its request and its answer need. */
struct test_call {
    relay_test_event_fn cb;
    void *data;
    char *destination;
    char *body;
    char msg_id[48];
};

static void test_call_free(struct test_call **pt)
{
    struct test_call *t = *pt;
    if (t == NULL)
        return;
    *pt = NULL;
    free(t->destination);
    free(t->body);
    free(t);
}

static void on_answer(const struct http_client_result *res, void *data)
{
    struct test_call *t = data;
    struct relay_test_event_result out = {
        .destination = t->destination,
        .webhook_id = t->msg_id,
        .http_status = res->http_status,
        .error = res->http_status == 0 ? (res->error ? res->error : "no answer") : NULL,
        .body = res->excerpt,
        .ms = (int)(res->seconds * 1000),
        .aborted = res->aborted};
    t->cb(&out, t->data);
    test_call_free(&t);
}

/* "msg_test_" and 32 random hex digits. Returns 0 or -EIO. */
static int new_msg_id(char *out, size_t size)
{
    unsigned char raw[16];
    if (RAND_bytes(raw, sizeof(raw)) != 1)
        return -EIO;
    int n = snprintf(out, size, "msg_test_");
    for (size_t i = 0; i < sizeof(raw) && n > 0 && (size_t)n + 2 < size; i++)
        n += snprintf(out + n, size - (size_t)n, "%02x", raw[i]);
    return 0;
}

/* The ping envelope; a new allocation, or NULL when out of memory. */
static char *ping_body(const char *destination, const char *actor)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[64], frac[24];
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(frac, sizeof(frac), ".%06dZ", (int)(ts.tv_nsec / 1000) % 1000000);
    strncat(when, frac, sizeof(when) - strlen(when) - 1);
    json_t *doc = json_pack("{s:s,s:s,s:{s:s,s:s,s:s}}", "type", "ping", "timestamp", when, "data",
                            "destination", destination, "message",
                            "a test event from ordersync; it is not an order event", "by", actor);
    char *s = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    return s;
}

int relay_test_event_send(struct http_client *c, const struct dest *d, const char *actor,
                          relay_test_event_fn cb, void *data)
{
    const struct dest_settings *set = &d->set;
    if (!set->push || set->url == NULL || set->secret == NULL || set->headers_bad)
        return -EINVAL;
    int rc = -ENOMEM;
    struct test_call *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return -ENOMEM;
    t->cb = cb;
    t->data = data;
    t->destination = strdup(d->id);
    t->body = ping_body(d->id, actor);
    if (t->destination == NULL || t->body == NULL)
        goto fail;
    rc = new_msg_id(t->msg_id, sizeof(t->msg_id));
    if (rc < 0)
        goto fail;
    char hdr_id[80], hdr_ts[48], hdr_sig[RELAY_SIGN_LINE_SIZE];
    snprintf(hdr_id, sizeof(hdr_id), "webhook-id: %s", t->msg_id);
    int64_t now = (int64_t)time(NULL);
    snprintf(hdr_ts, sizeof(hdr_ts), "webhook-timestamp: %" PRId64, now);
    size_t len = strlen(t->body);
    /* a signer of its own: a test is rare, and the relay's belongs to its loop */
    struct relay_signer sg = {0};
    rc = relay_sign_line(&sg, set, t->msg_id, now, t->body, len, hdr_sig, sizeof(hdr_sig));
    relay_signer_clear(&sg);
    if (rc < 0) {
        rc = rc == -ENOMEM ? -ENOMEM : -EINVAL;
        goto fail;
    }
    const char *headers[4 + DESTINATIONS_MAX_HEADERS + 1] = {"Content-Type: application/json",
                                                             hdr_id, hdr_ts, hdr_sig};
    unsigned nh = 4;
    for (char **h = set->headers; h != NULL && *h != NULL && nh < 4 + DESTINATIONS_MAX_HEADERS; h++)
        headers[nh++] = *h;
    headers[nh] = NULL;
    struct http_client_request req = {.url = set->url,
                                      .body = t->body,
                                      .body_len = len,
                                      .headers = headers,
                                      .timeout_ms = set->timeout_ms};
    rc = http_client_start(c, &req, on_answer, t);
    if (rc < 0)
        goto fail;
    return 0;
fail:
    test_call_free(&t);
    return rc;
}
