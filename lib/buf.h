/*
 * buf: a growable byte buffer with a hard cap fixed at creation (curl's dynbuf
 * with `toobig`). Request headers, bodies and response queues are all bufs, so
 * every limit the HTTP server enforces comes from one place.
 */
#ifndef OS_BUF_H
#define OS_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
    char *data; /* NUL-terminated when non-NULL; owned */
    size_t len;
    size_t alloc;
    size_t cap; /* data may never hold more than cap bytes */
};

/* Initializes an empty buffer that refuses to grow beyond `cap` bytes. */
void buf_init(struct buf *b, size_t cap);
/* Appends; returns 0, -E2BIG past the cap (buffer unchanged) or -ENOMEM. */
int buf_append(struct buf *b, const void *data, size_t len) __attribute__((warn_unused_result));
int buf_append_str(struct buf *b, const char *s) __attribute__((warn_unused_result));
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)))
__attribute__((warn_unused_result));
int buf_vprintf(struct buf *b, const char *fmt, va_list ap) __attribute__((warn_unused_result));
/*
 * Makes room for n more bytes (and the NUL) without another allocation, for
 * a writer that fills data + len itself and then calls buf_advance. Returns
 * 0, -E2BIG past the cap or -ENOMEM (buffer unchanged either way).
 */
int buf_reserve(struct buf *b, size_t n) __attribute__((warn_unused_result));
/* Counts n bytes written at data + len (at most what buf_reserve made room for); NUL-terminates. */
void buf_advance(struct buf *b, size_t n);
/* Empties the buffer, keeping its allocation. */
void buf_reset(struct buf *b);
/* Drops the first n bytes (n <= len). */
void buf_consume(struct buf *b, size_t n);
/* Frees the allocation; the buffer is empty and reusable afterwards. */
void buf_free(struct buf *b);
/* Hands the allocation to the caller (a new allocation, free()), buffer left empty. */
char *buf_steal(struct buf *b, size_t *len);

#endif
