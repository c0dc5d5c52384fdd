/*
 * json_read: a fast reader for the JSON bodies webhooks carry, building the
 * same jansson values json_loadb(JSON_DECODE_ANY | JSON_REJECT_DUPLICATES)
 * builds, through jansson's own constructors, in the same order (so keys
 * iterate in the same order too).
 *
 * It reads only what it is sure of: text jansson accepts, with the value
 * jansson gives it. Anything else (a syntax error, a duplicate key, a
 * \u escape of a surrogate or of NUL, an integer out of range, a real that
 * overflows, a number over 63 characters, nesting over 64 deep, a locale
 * whose decimal point is not ".") is -EAGAIN: the caller asks
 * json_guard_loadb, which parses it as always and words any error for the
 * sender as always. So the two can differ in speed only.
 *
 * Why: jansson reads a character at a time through a stream callback that
 * checks UTF-8 and tracks lines and columns; a 1.3 KB Shopify order cost
 * about 190,000 instructions, the largest cost of ingesting a webhook.
 * Here a run of plain characters is found by a table lookup and handed to
 * jansson whole.
 */
#ifndef OS_JSON_READ_H
#define OS_JSON_READ_H

#include <stddef.h>

#include <jansson.h>

/* Deeper than this is left to jansson (whose own limit is 2048): orders are shallow, and the stack stays small. */
#define JSON_READ_MAX_DEPTH 64

/*
 * The value of buf[0..len) (not NUL-terminated; a NUL byte is not JSON).
 * Returns a new reference with *rc 0; or NULL with *rc -EAGAIN (ask
 * jansson: see above) or -ENOMEM (an allocation failed; nothing is left
 * half-built).
 */
json_t *json_read(const char *buf, size_t len, int *rc);

#endif
