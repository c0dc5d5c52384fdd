/*
 * poll_page: one response to a poll → what the run does with it: the orders
 * to store, whether and where the run goes on, how long to wait before the
 * next run, and what poll_state records. Everything a polled server (or a
 * man in the middle of an http:// poll URL) controls goes through here: the
 * status, the validators, Link and Retry-After, and the body. Pure (no I/O;
 * the clock is a parameter), so it is unit-tested rule by rule
 * (tests/unit/test_poller.c) and fuzzed (tests/fuzz/fuzz_poll_page.c); the
 * poller (poller.c) only applies the decision.
 */
#ifndef OS_POLL_PAGE_H
#define OS_POLL_PAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "source_kind.h"

/* One page of an orders list at most; a longer body is an error. */
#define POLL_PAGE_CAP ((size_t)32 << 20)
/* The orders of one page as ingest_batch elements (canonical and raw): twice the page at most. */
#define POLL_BATCH_CAP (2 * POLL_PAGE_CAP)
/* Pages per run; the cursor carries the rest to the next run. */
#define POLL_MAX_PAGES 100
/* Errors and a server's Retry-After wait at most this long. */
#define POLL_MAX_BACKOFF_S 3600.0

/* What the run knows when a response arrives (all borrowed). */
struct poll_run {
    const struct source_kind *kind; /* one with a poll_order hook */
    const char *source_id;
    const char *poll_url;    /* as configured: the only origin pages may come from */
    const char *page_url;    /* the URL this response answers */
    int page;                /* 1 for the run's first page */
    double interval_s;       /* the source's poll (or reconcile) interval, > 0 */
    unsigned errors_in_row;  /* failed runs just before this one */
    const char *max_updated; /* newest updated_at of the run so far (RFC 3339 UTC), or "" */
    time_t now;
    size_t batch_cap; /* 0: POLL_BATCH_CAP (tests set less) */
};

/* One response (all borrowed). A header that was absent is NULL or "". */
struct poll_response {
    long status;       /* 0 when there was no response */
    const char *error; /* then, the transport's reason (may be NULL) */
    const char *etag;
    const char *last_modified;
    const char *link;
    const char *retry_after;
    const char *body;
    size_t body_len;
    bool truncated; /* the body was longer than POLL_PAGE_CAP */
};

/* The result poll_state counts (ingest_poll's p_result). */
enum poll_result { POLL_OK, POLL_NOT_MODIFIED, POLL_RATE_LIMITED, POLL_ERROR };

/* The decision; poll_page_clear() frees it. */
struct poll_page {
    enum poll_result result;
    bool last;      /* the run ends with this page */
    char *batch;    /* ingest_batch elements of the page's orders: a JSON array, new allocation */
    char *next_url; /* when !last: the next page's URL, new allocation */
    size_t listed;  /* elements of the page's list (an empty page lists none) */
    size_t skipped; /* listed orders that could not be read: not stored */
    char skipped_detail[SOURCE_DETAIL_SIZE]; /* why the first one could not */
    bool link_refused;         /* a next link to another origin, or not a URL: the run stops */
    const char *etag;          /* validators for the next run's conditional GET (borrowed from */
    const char *last_modified; /* the response), or NULL to keep the ones the run has */
    char max_updated[64];      /* newest updated_at of the run, this page included */
    double wait_s;             /* the least wait before the next run; 0: just the interval */
    unsigned errors_in_row;    /* failed runs in a row, this one included */
    char error[256];           /* for poll_state.last_error, never a secret; "" when none */
};

/*
 * Reads one response. Returns 0 with *out filled (new allocations), or
 * -ENOMEM with *out cleared: the run then stops as if the page had not come.
 */
int poll_page_read(const struct poll_run *run, const struct poll_response *res,
                   struct poll_page *out) __attribute__((warn_unused_result));

/* Frees what a page holds and zeroes it; safe on a zeroed or cleared page. */
void poll_page_clear(struct poll_page *page);

/* "ok", "not_modified", "rate_limited" or "error": what ingest_poll records. */
const char *poll_result_name(enum poll_result r);

enum poll_link {
    POLL_LINK_NONE,    /* no rel="next" link: the run is over */
    POLL_LINK_NEXT,    /* *out is the next page's absolute URL (a new allocation, free()) */
    POLL_LINK_FOREIGN, /* a next link to another scheme, host or port: refused */
    POLL_LINK_BAD,     /* a next link that is not a URL */
    POLL_LINK_NOMEM,   /* out of memory: nothing was decided */
};

/*
 * The next page of a poll, from the `Link` header of the page at `page_url`
 * (RFC 8288; a relative reference resolves against page_url). The poll sends
 * the source's credentials with every page, so the next page must be on the
 * origin the operator configured, `poll_url`: same scheme, host and port
 * (default ports made explicit), else POLL_LINK_FOREIGN and *out stays
 * NULL. `link` may be NULL or empty.
 */
enum poll_link poll_page_next_link(const char *poll_url, const char *page_url, const char *link,
                                   char **out) __attribute__((warn_unused_result));

#endif
