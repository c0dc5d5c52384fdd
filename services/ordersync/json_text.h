/*
 * json_text: JSON text written straight into a buffer, byte for byte what
 * json_dumps(json, JSON_COMPACT | JSON_ENCODE_ANY) writes (jansson 2.14:
 * keys in insertion order, no spaces, only ", \ and control characters
 * escaped, the rest of UTF-8 as is, reals as "%.17g" with ".0" added when
 * that reads as an integer).
 *
 * Why not json_dumps: it hands every run of bytes to a callback, checks
 * every array and object for cycles by printing its address into a hash
 * table, and copies the result once more at the end; a 1 KB order cost
 * about 86,000 instructions that way, once per webhook. The tests
 * (tests/unit/test_json_text.c) compare the two on the fixtures and on
 * every escape.
 */
#ifndef OS_JSON_TEXT_H
#define OS_JSON_TEXT_H

#include <stddef.h>

#include <jansson.h>

#include "buf.h"

/* Deeper than this is refused (-ELOOP); json_dumps refuses a cycle, which is infinitely deep. */
#define JSON_TEXT_MAX_DEPTH 2048

/*
 * Appends `json` as JSON text. Returns 0; -EINVAL where json_dumps fails
 * too (a string that is not UTF-8, a real that is not finite, NULL);
 * -ELOOP (deeper than JSON_TEXT_MAX_DEPTH); or -E2BIG / -ENOMEM from the
 * buffer. On failure the buffer holds a part of the text: discard it.
 */
int json_text_append(struct buf *out, const json_t *json) __attribute__((warn_unused_result));

/* Appends s[0..len) as a JSON string, quotes included; errors as json_text_append(). */
int json_text_append_string(struct buf *out, const char *s, size_t len)
    __attribute__((warn_unused_result));

#endif
