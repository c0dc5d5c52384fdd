/*
 * libFuzzer target for the receiving half of the HTTP server, without
 * sockets: the request parser (lib/http_parse.c) and the receive deadlines
 * (lib/http_deadline.c), called the way lib/http.c calls them but on a
 * simulated clock, so timing is as deterministic as the bytes.
 *
 * Input: three control bytes, then what the peer sends.
 *   [0] read size - 1: the bytes arrive in reads of that size (1..256), so
 *       splits land everywhere;
 *   [1] pause before each read while no body is being received, and
 *   [2] pause before each read inside a body, both in TICK_MS units: a peer
 *       that is fast, slow on its headers, or drip-feeds its body.
 * Limits are small so the 431/413 paths are reached too.
 *
 * Beyond the parser's own promises it checks the deadline contract: while a
 * request is being received a deadline is always armed, never later than
 * REQUEST_MS after the request began (the accept, for the first one), so no
 * pace of sending can keep a request open longer; a deadline that fires has
 * really passed; and no request is complete after its own deadline.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "http_deadline.h"
#include "http_parse.h"

#define HEADER_MS  1000
#define REQUEST_MS 3000
#define TICK_MS    25

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct http_deadline_limits limits = {HEADER_MS, REQUEST_MS};

    if (size < 3)
        return 0;
    size_t step = (size_t)data[0] + 1;
    uint64_t head_pause = (uint64_t)data[1] * TICK_MS;
    uint64_t body_pause = (uint64_t)data[2] * TICK_MS;
    data += 3;
    size -= 3;

    struct http_parser p;
    struct http_message m;
    http_parser_init(&p, 512, 1024);
    http_message_init(&m, 512, 1024);
    http_parser_set_message(&p, &m);

    /* The clock starts above 0: a deadline of 0 means "not armed". */
    uint64_t now = 1000;
    struct http_deadline d;
    http_deadline_accepted(&d, &limits, now);
    /* The harness's own model: is a request due, and since when. */
    bool receiving = true;
    uint64_t began = now;

    size_t off = 0;
    while (off < size) {
        uint64_t due = http_deadline_next(&d);
        if (receiving && (due == 0 || due > began + REQUEST_MS))
            __builtin_trap(); /* a request that could outlive its deadline */
        if (!receiving && due != 0)
            __builtin_trap(); /* a clock running against a peer owing nothing */

        /* The next read arrives after a pause; a timer due before it fires first. */
        uint64_t arrive = now + (p.phase == HTTP_PHASE_BODY ? body_pause : head_pause);
        if (due != 0 && due <= arrive) {
            enum http_deadline_expiry e = http_deadline_expired(&d, due);
            if (e == HTTP_DEADLINE_NONE || http_deadline_expired(&d, due - 1) != HTTP_DEADLINE_NONE)
                __builtin_trap(); /* fired for nothing, or later than it should have */
            if (e == HTTP_DEADLINE_REQUEST && due != began + REQUEST_MS)
                __builtin_trap();
            break; /* http.c answers 408 and closes */
        }
        now = arrive;

        size_t end = off + (size - off < step ? size - off : step);
        bool done = false;
        while (off < end && !done) {
            if (p.phase == HTTP_PHASE_IDLE) {
                /* as conn_parse: the first byte of a request starts its clocks */
                http_deadline_request_begins(&d, &limits, now);
                if (!receiving) {
                    receiving = true;
                    began = now;
                }
            }
            size_t n = end - off;
            size_t used = 0;
            enum http_parse_event ev = http_parser_feed(&p, (const char *)data + off, n, &used);
            if (used > n)
                __builtin_trap();
            off += used;
            switch (ev) {
            case HTTP_PARSE_ERROR:
                if (p.status < 400 || p.status > 599 || p.error == NULL || p.detail == NULL)
                    __builtin_trap();
                done = true; /* answered, then closed */
                break;
            case HTTP_PARSE_REQUEST: {
                /* Touch everything a handler could read. */
                size_t total = strlen(m.method) + strlen(m.path) + strlen(m.query) + m.body.len;
                for (size_t i = 0; i < m.n_headers; i++)
                    total += strlen(m.headers[i].name) + strlen(m.headers[i].value);
                if (m.body.len > 1024 || total == SIZE_MAX)
                    __builtin_trap();
                if (!receiving || now >= began + REQUEST_MS)
                    __builtin_trap(); /* complete after the deadline should have fired */
                /* as conn_dispatch */
                http_deadline_clear(&d);
                receiving = false;
                http_message_reset(&m, 4096);
                http_parser_set_message(&p, &m);
                /* a request that ends the connection: nothing more is parsed */
                done = p.phase == HTTP_PHASE_DONE;
                break;
            }
            case HTTP_PARSE_CONTINUE:
                break;
            case HTTP_PARSE_MORE:
                if (used != n)
                    __builtin_trap(); /* "more" promises every byte was taken */
                break;
            }
        }
        if (done)
            break;
        http_deadline_after_read(&d, &limits, p.phase, now);
        if (p.phase == HTTP_PHASE_DONE)
            receiving = false;
    }
    http_message_free(&m);
    return 0;
}
