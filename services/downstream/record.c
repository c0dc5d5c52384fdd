/*
 * record: two buffers. `pending` collects lines; when no write is in flight
 * it becomes `writing` and goes to uv_fs_write; the callback starts the next.
 * The struct lives until its last write completed (the request holds it).
 */
#include "record.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>

#include "buf.h"
#include "log.h"

#define RECORD_CAP ((size_t)64 << 20)

struct record {
    uv_loop_t *loop;
    uv_file fd;
    uv_fs_t req;
    struct buf pending, writing;
    bool in_flight, closing;
    unsigned long long dropped;
};

static void start_write(struct record *r);

static void finish_close(struct record *r)
{
    if (r->dropped > 0)
        log_warn("record lines dropped", json_pack("{s:I}", "lines", (json_int_t)r->dropped));
    uv_fs_t close_req;
    uv_fs_close(NULL, &close_req, r->fd, NULL); /* shutting down: blocking is fine */
    uv_fs_req_cleanup(&close_req);
    buf_free(&r->pending);
    buf_free(&r->writing);
    free(r);
}

static void on_written(uv_fs_t *req)
{
    struct record *r = req->data;
    if (req->result < 0)
        log_warn("could not write the record file",
                 json_pack("{s:s}", "detail", uv_strerror((int)req->result)));
    uv_fs_req_cleanup(req);
    r->in_flight = false;
    buf_reset(&r->writing);
    if (r->pending.len > 0) {
        start_write(r);
        return;
    }
    if (r->closing)
        finish_close(r);
}

static void start_write(struct record *r)
{
    struct buf t = r->writing;
    r->writing = r->pending;
    r->pending = t;
    buf_reset(&r->pending);
    uv_buf_t b = uv_buf_init(r->writing.data, (unsigned)r->writing.len);
    r->req.data = r;
    if (uv_fs_write(r->loop, &r->req, r->fd, &b, 1, -1, on_written) < 0) {
        buf_reset(&r->writing);
        return;
    }
    r->in_flight = true;
}

int record_open(uv_loop_t *loop, const char *path, struct record **out)
{
    struct record *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return -ENOMEM;
    uv_fs_t open_req;
    int fd = uv_fs_open(NULL, &open_req, path, O_WRONLY | O_CREAT | O_APPEND, 0644, NULL);
    uv_fs_req_cleanup(&open_req);
    if (fd < 0) {
        free(r);
        return fd;
    }
    r->loop = loop;
    r->fd = fd;
    buf_init(&r->pending, RECORD_CAP);
    buf_init(&r->writing, RECORD_CAP);
    *out = r;
    return 0;
}

void record_line(struct record *r, const char *line, size_t len)
{
    if (r == NULL || r->closing)
        return;
    if (buf_append(&r->pending, line, len) < 0 || buf_append(&r->pending, "\n", 1) < 0) {
        r->dropped++;
        return;
    }
    if (!r->in_flight)
        start_write(r);
}

void record_close(struct record **pr)
{
    struct record *r = *pr;
    if (r == NULL)
        return;
    *pr = NULL;
    r->closing = true;
    if (r->in_flight)
        return; /* on_written writes the rest and closes */
    if (r->pending.len > 0) {
        start_write(r);
        if (r->in_flight)
            return;
    }
    finish_close(r);
}
