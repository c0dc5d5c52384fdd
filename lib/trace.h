/*
 * trace: W3C Trace Context (https://www.w3.org/TR/trace-context/) for the
 * events ordersync carries from a shop to each downstream system. A webhook
 * that arrives with a valid `traceparent` keeps its trace id; one without
 * (or with an invalid one, which is ignored, never refused) starts a trace.
 * Every delivery then sends `traceparent: 00-<trace id>-<new span id>-01`,
 * so one order can be followed from the shop to every system in a tracing
 * tool. Pure but for trace_new_*, which draw random bytes.
 */
#ifndef OS_TRACE_H
#define OS_TRACE_H

#include <stdbool.h>
#include <stddef.h>

#define TRACE_ID_HEX   32 /* 16 bytes */
#define TRACE_SPAN_HEX 16 /* 8 bytes */
/* "00-" + trace id + "-" + span id + "-01" */
#define TRACE_PARENT_LEN (2 + 1 + TRACE_ID_HEX + 1 + TRACE_SPAN_HEX + 1 + 2)

/*
 * Takes the trace id out of a `traceparent` header value (borrowed, may be
 * NULL) into `out` (lower-case hex, NUL-terminated). Returns false, leaving
 * `out` empty, when the value is absent or not valid: a version other than
 * two hex digits or "ff", ids of the wrong length, upper-case or non-hex,
 * all-zero ids, or a version 00 value with anything after the flags.
 */
bool trace_parse_parent(const char *value, char out[TRACE_ID_HEX + 1]);

/* A new random trace id (never all zeros). Returns false if no randomness. */
bool trace_new_id(char out[TRACE_ID_HEX + 1]) __attribute__((warn_unused_result));

/* The traceparent value of one delivery: the trace id and a new random span id. */
bool trace_new_parent(const char *trace_id, char out[TRACE_PARENT_LEN + 1])
    __attribute__((warn_unused_result));

#endif
