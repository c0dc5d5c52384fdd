/*
 * libFuzzer target for the HTTP request parser (lib/http_parse.c): arbitrary
 * bytes, fed in pieces whose sizes come from the input itself, as reads from
 * a peer would arrive. Limits are small so 431/413 paths are reached too.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "http_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    /* First byte picks the read size (1..256) so splits land everywhere. */
    size_t step = (size_t)data[0] + 1;
    data++;
    size--;

    struct http_parser p;
    struct http_message m;
    http_parser_init(&p, 512, 1024);
    http_message_init(&m, 512, 1024);
    http_parser_set_message(&p, &m);

    size_t off = 0;
    while (off < size) {
        size_t n = size - off < step ? size - off : step;
        size_t used = 0;
        enum http_parse_event ev = http_parser_feed(&p, (const char *)data + off, n, &used);
        if (used > n)
            __builtin_trap();
        off += used;
        if (ev == HTTP_PARSE_ERROR) {
            if (p.status < 400 || p.status > 599 || p.error == NULL || p.detail == NULL)
                __builtin_trap();
            break;
        }
        if (ev == HTTP_PARSE_REQUEST) {
            /* Touch everything a handler could read. */
            size_t total = strlen(m.method) + strlen(m.path) + strlen(m.query) + m.body.len;
            for (size_t i = 0; i < m.n_headers; i++)
                total += strlen(m.headers[i].name) + strlen(m.headers[i].value);
            if (m.body.len > 1024 || total == SIZE_MAX)
                __builtin_trap();
            http_message_reset(&m, 4096);
            http_parser_set_message(&p, &m);
        } else if (ev == HTTP_PARSE_MORE && used != n) {
            __builtin_trap(); /* "more" promises every byte was taken */
        }
    }
    http_message_free(&m);
    return 0;
}
