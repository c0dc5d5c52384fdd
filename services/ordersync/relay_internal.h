/*
 * relay_internal: what the files of the relay share, and nothing else
 * includes. The relay (relay.h) is cut along its conversations with the
 * outside, one file each:
 *
 *   relay.c           the loop and the lifecycle: start, reconnect, stop
 *                     (relay_release_own, relay_leave), the statements
 *   relay_dest.c      a destination's runtime state here: room, breaker,
 *                     rate limit, metrics, and their bookkeeping statements
 *   relay_stream.c    the streams this process holds and their windows
 *   relay_lease.c     taking and renewing stream leases (relay_acquire)
 *   relay_read.c      reading events into the windows (stream_read)
 *   relay_job.c       a job: one event on its way to one destination
 *   relay_sign.c      the webhook-signature of one delivery
 *   relay_send.c      sending (libcurl) and what an answer means
 *   relay_complete.c  writing what was settled, once per loop turn
 *                     (relay_complete)
 *   relay_claim.c     claiming due rows (delivery_claim), the sweep
 *
 * Decisions are relay_policy's, ordering is relay_window's, the rate limit
 * relay_rate's: pure modules, tested on their own.
 *
 * Everything runs on the loop's thread; "in flight" means a statement or a
 * request whose callback has not run yet.
 */
#ifndef OS_RELAY_INTERNAL_H
#define OS_RELAY_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>
#include <uv.h>

#include "buf.h"
#include "db.h"
#include "destinations.h"
#include "ed25519.h"
#include "hmac.h"
#include "list.h"
#include "relay.h"
#include "relay_policy.h"
#include "relay_rate.h"
#include "relay_window.h"
#include "trace.h"
#include "verify.h"

struct metric;
struct http_client;

/* Bound of every statement parameter the relay builds */
#define RELAY_PARAM_CAP ((size_t)64 << 20)
/* A row that could not even be sent (bad secret, out of memory) is offered again after this */
#define RELAY_NOT_SENT_DELAY_S 5.0

/*
 * The relay's lifecycle. relay_set_state() is the only way to change it,
 * and an impossible change aborts the process (pgbouncer's
 * change_client_state): a relay that does not know whether it is stopping
 * must not go on sending.
 *
 *   RUNNING --relay_stop/abort--> STOPPING --leave sent--> LEAVING --answer--> STOPPED
 *                                          \--nothing to hand back---------------^
 *   any --relay_free--> CLOSING (handles closing; memory goes with the last one)
 */
enum relay_state {
    RELAY_RUNNING,
    RELAY_STOPPING, /* nothing new starts; what is in flight ends and is written */
    RELAY_LEAVING,  /* relay_leave (streams handed back) in flight */
    RELAY_STOPPED,  /* the stop's callback ran */
    RELAY_CLOSING,  /* relay_free: waiting for libuv to close the handles */
};

void relay_set_state(struct relay *r, enum relay_state to);

/*
 * A conversation that runs one at a time (a claim, an acquire, a
 * completion, a read): idle, in flight, or in flight with another one
 * wanted as soon as it is back. Asking while one is in flight never queues
 * a second statement: it is run once, after.
 */
enum relay_conv {
    RELAY_CONV_IDLE,
    RELAY_CONV_IN_FLIGHT,
    RELAY_CONV_AGAIN, /* in flight; run again once it is back */
};

/* May it start now? Otherwise (in flight) it is marked to run again. */
bool relay_conv_want(enum relay_conv *c) __attribute__((warn_unused_result));
/* It was sent (it was idle: anything else aborts). */
void relay_conv_sent(enum relay_conv *c);
/* Its answer is back (it was in flight: anything else aborts). Returns: run it again? */
bool relay_conv_back(enum relay_conv *c);

/* ---------------------------------------------------------------- destinations (relay_dest.c) */

/*
 * What this process knows of a destination besides its settings: created
 * when the relay first takes its stream, kept for the relay's life (jobs in
 * flight point to it after their stream went), so that the feed, which reads
 * the same registry, never sees any of it.
 */
/* A destination's secrets, keyed (lib/hmac) for as long as they do not change
   (relay_sign.c). Zeroed = nothing keyed yet. */
struct relay_signer {
    char *secret, *prev_secret;         /* what key and prev_key were made from (copies) */
    struct hmac_sha256 *key, *prev_key; /* prev_key: NULL without a previous secret */
};

struct relay_dest {
    struct list_node node; /* relay.rdests */
    struct dest *d;        /* borrowed: entries live as long as the registry */
    struct stream *stream; /* the stream held for it, or NULL */
    unsigned in_flight;    /* requests running */
    struct relay_breaker breaker;
    struct relay_rate rate;
    unsigned rate_lent;        /* tokens lent to the claim in flight */
    unsigned rate_claim_asked; /* rows that claim asked for, when the rate limit sized it */
    unsigned rate_claimed;     /* rows it brought back and sent */
    bool rate_claim_owed;      /* a claim skipped it for want of tokens */
    bool rate_short;           /* the last look at its room found the rate limit in the way */
    uint64_t limited_noted_ms; /* when limited_until was last written (loop ms) */
    /* it answered 410 under these settings: disabled here until they change
       (the statement that disables it in the table is on its way) */
    bool gone;
    uint64_t gone_generation;
    struct relay_signer signer; /* its secrets, keyed */
    /* an alert of trouble was raised from here: the next delivery that goes
       through raises destination.recovered */
    bool troubled;
    struct metric *m_delivered, *m_retry, *m_client_error, *m_dead, *m_gone, *m_attempts,
        *m_in_flight, *m_seconds, *m_lag, *m_paused, *m_held, *m_filtered;
};

/* d's runtime state, made on first use. NULL when out of memory. Borrowed. */
struct relay_dest *relay_dest_get(struct relay *r, struct dest *d);
/* d's runtime state, if the relay has any. Borrowed. */
struct relay_dest *relay_dest_find(struct relay *r, const struct dest *d);
/* The runtime state of the destination with this id, if any. Borrowed. */
struct relay_dest *relay_dest_find_id(struct relay *r, const char *id);
/* Frees every destination's runtime state (the relay is going). */
void relay_dest_free_all(struct relay *r);
/* Disabled here after a 410, the settings unchanged since? */
bool relay_dest_gone(const struct relay_dest *rd);
/* Is it a destination to deliver to now (present, enabled, not paused)? */
bool relay_dest_usable(struct relay *r, struct relay_dest *rd);
/*
 * Can the relay deliver to it now, and how many more requests may start?
 * Sets rd->rate_short when the rate limit is what stops or bounds the answer.
 */
bool relay_dest_room(struct relay *r, struct relay_dest *rd, unsigned *room)
    __attribute__((warn_unused_result));
/* Whole tokens its rate limit allows now (UINT32_MAX: no limit), the current limit applied. */
uint32_t relay_dest_tokens(struct relay_dest *rd);
/* It waits for a token: the rate timer is set for the soonest one. */
void relay_dest_rate_wait(struct relay *r, struct relay_dest *rd);
/* The rate limit holds back deliveries that are ready: say so in delivery_streams. */
void relay_dest_note_limited(struct relay *r, struct relay_dest *rd);
/* The tokens lent to a claim come back (answered, failed or not sent). */
void relay_dest_repay_all(struct relay *r);
/* A new owner of its stream: the previous one may have spent a whole burst. */
void relay_dest_took_stream(struct relay_dest *rd);
/*
 * An answer was decided: the breaker counts it, a 410 disables the
 * destination; what changed is written to `destinations`.
 */
void relay_dest_answered(struct relay *r, struct relay_dest *rd, const struct relay_decision *dec,
                         int64_t position);
/* Loop ms until the soonest breaker pause ends, if sooner than `ms`. */
uint64_t relay_dest_unpause_within(struct relay *r, uint64_t ms);
/* The lease of a row that a request of this process works on, in seconds. */
unsigned relay_row_lease_s(struct relay *r);

/* ---------------------------------------------------------------- streams (relay_stream.c) */

/*
 * Where a stream stands with the completion statement (relay_complete.c)
 * and the database. relay_stream_set_state() changes it; an impossible
 * change aborts.
 */
enum stream_state {
    STREAM_IDLE,       /* no statement about it is in flight */
    STREAM_COMPLETING, /* part of the completion in flight (from complete_from) */
    STREAM_UNSURE,     /* a statement about it failed: wait for the database's cursor */
};

struct stream {
    struct list_node node; /* relay.streams */
    struct relay_dest *rd;
    uint64_t gen;     /* a new one at every reset: results of older jobs are ignored */
    int64_t cursor;   /* as written (or being written) to the database */
    int64_t read_pos; /* every event up to here was read into the window or skipped */
    struct relay_window win;
    uint64_t dest_gen; /* the destination settings the window was made with */
    enum stream_state state;
    int64_t complete_from;   /* STREAM_COMPLETING: the cursor before the statement */
    uint64_t complete_batch; /* STREAM_COMPLETING: the window's batch of rows in it */
    /*
     * Its completion of this batch committed while a read was out on the
     * other connection: that read may have missed the rows written, so the
     * batch's taints are lifted only once the read is back (relay_read.c);
     * 0: none. Not a state: the next completion may be sent meanwhile, and
     * its own batch must stay tainted until it is back (relay_window.h).
     */
    uint64_t untaint_after_read;
    uint64_t lease_until_ms; /* loop ms: sending stops here unless a renewal comes back */
};

void relay_stream_set_state(struct stream *s, enum stream_state to);
/* A stream this instance was given, leased until lease_until_ms (loop ms). 0 or -ENOMEM. */
int relay_stream_new(struct relay *r, struct relay_dest *rd, int64_t position,
                     uint64_t lease_until_ms) __attribute__((warn_unused_result));
/* Forgets what is in memory for a stream: the database is the truth again. */
void relay_stream_reset(struct relay *r, struct stream *s, int64_t position);
/* Lets the stream go (frees it). */
void relay_stream_drop(struct relay *r, struct stream *s);
void relay_stream_drop_all(struct relay *r);
/*
 * The destination's settings changed since the window was made: a new
 * window, made with them. Not while the stream is completing (the window's
 * leavers are being written); a later call applies them. Returns 0, or
 * -ENOMEM after dropping the stream (it is taken again, from the database's
 * cursor, at a later acquire): a stream never lives on without a window.
 */
int relay_stream_apply_settings(struct relay *r, struct stream *s)
    __attribute__((warn_unused_result));
/* Is the stream's lease still ours by this process's own clock? */
bool relay_stream_leased(struct relay *r, const struct stream *s);

/* ---------------------------------------------------------------- jobs (relay_job.c) */

enum job_kind {
    JOB_STREAM, /* read from a stream; a window entry points to it until the cursor passes it */
    JOB_ROW,    /* a leased `deliveries` row; its result settles the row */
};

enum job_result { JOB_NONE, JOB_OK, JOB_RETRY, JOB_DEAD, JOB_RELEASED };

/*
 * One event on its way to one destination. Two holders: the window (a
 * stream job while in_window) and libcurl (while its request runs: on
 * relay.in_http). A stream job still in flight when the cursor passes it
 * becomes a row job (its event got a leased row). A job is freed when
 * neither holds it; a row job's result goes to the completion first.
 * Jobs refer to their stream by destination and generation, never by
 * pointer: a stream is reset whenever what the database holds for it is
 * uncertain, and the results of its old jobs are then ignored (their
 * events are delivered again: at least once).
 */
struct job {
    struct list_node http; /* relay.in_http while its request runs */
    struct relay *r;
    struct relay_dest *rd;
    enum job_kind kind;
    bool in_window;
    uint64_t stream_gen; /* stream jobs: the stream generation it was read in */
    int64_t position, order_id;
    char created_at[48];             /* the event's partition key, as the database printed it */
    char msg_id[40];                 /* "msg_" + event uuid hex: the webhook-id */
    char trace_id[TRACE_ID_HEX + 1]; /* the order's trace; empty for events from before */
    int attempt;
    double age_s;   /* of the event when read */
    double started; /* wall clock, epoch s */
    char *payload;
    size_t payload_len;
    /* the outcome, once known */
    enum job_result result;
    int status, ms;
    double delay_s;
    char *error, *excerpt;
};

/* Columns of a result row that job_new reads (indexes from db_columns). */
struct job_cols {
    int pos, id, order, payload, age, trace;
};

/* A job from a row of a read or a claim. NULL when out of memory. New allocation. */
struct job *relay_job_new(struct relay *r, struct relay_dest *rd, const PGresult *res, int row,
                          const struct job_cols *c);
void relay_job_free(struct job *j);
/* Frees a job nobody holds any more. */
void relay_job_release(struct job *j);
/* The stream the job was read in, if it still exists as it was. */
struct stream *relay_job_stream(struct job *j);
void relay_job_set_outcome(struct job *j, enum job_result result, int status, int ms, double delay,
                           const char *error, const char *excerpt);

/* ---------------------------------------------------------------- the rest, file by file */

/*
 * relay_sign.c: the destination's signer (struct relay_signer, above).
 */
/* Frees what sg holds and zeroes it (it can be used again). */
void relay_signer_clear(struct relay_signer *sg);
/*
 * Writes the whole "webhook-signature: <sig>[ <sig>...]" line of one
 * delivery into out (out_size >= RELAY_SIGN_LINE_SIZE): v1 with each secret,
 * keying sg (borrowed; the destination's) first if they are not the ones it
 * holds, then v1a with each signing key. Returns 0, -EINVAL when a secret is
 * not a valid whsec_ key (or there is neither a secret nor a key), -ENOSPC,
 * or -ENOMEM.
 */
#define RELAY_SIGN_LINE_SIZE (2 * VERIFY_STANDARD_SIG_SIZE + 2 * ED25519_SIG_SIZE + 32)
int relay_sign_line(struct relay_signer *sg, const struct dest_settings *set, const char *msg_id,
                    int64_t timestamp, const char *body, size_t len, char *out, size_t out_size)
    __attribute__((warn_unused_result));

/* relay_send.c: starts what the stream's window lets go, within the destination's room. */
void relay_dispatch(struct relay *r, struct stream *s);
/* Signs and sends a job; false (nothing started) with the reason in err. */
bool relay_send(struct relay *r, struct job *j, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* relay_read.c: reads every stream that wants events (one statement). */
void relay_read(struct relay *r);
extern const char relay_sql_stream_read[];

/* relay_complete.c */
/* A row job is done: its result goes to the next completion statement (takes ownership). */
void relay_complete_add(struct relay *r, struct job *j);
/* Writes everything settled since the last statement, if there is anything. */
void relay_complete_flush(struct relay *r);
/*
 * The statement's document, in r->doc (flush's first half, apart for tests):
 * every stream with settled events gets its part and goes COMPLETING, and the
 * settled row jobs are freed into it. Returns 0 (with how many streams and
 * results it holds) or a negative errno, when every stream it touched is
 * read again from its cursor: nothing that left a window is lost.
 */
int relay_complete_build(struct relay *r, unsigned *n_streams, unsigned *n_results)
    __attribute__((warn_unused_result));
/* Is anything settled and not written yet? */
bool relay_complete_pending(struct relay *r);
void relay_on_check(uv_check_t *h);
/* JSON string of arbitrary bytes (escaped, non-ASCII replaced); also a text[] element. */
int relay_append_str(struct buf *b, const char *s) __attribute__((warn_unused_result));
extern const char relay_sql_complete[];

/* relay_claim.c */
void relay_claim(struct relay *r);
void relay_on_sweep_timer(uv_timer_t *t);
void relay_on_rate_timer(uv_timer_t *t);
extern const char relay_sql_claim[], relay_sql_next_due[], relay_sql_sweep[];

/* relay_lease.c */
void relay_acquire(struct relay *r);
void relay_on_acquire_timer(uv_timer_t *t);
extern const char relay_sql_acquire[];
extern const char relay_sql_streams_changed[];

/*
 * relay_alert.c: operational alerts (migration 015's alert_raise), fire and
 * forget: the database rate-limits them and queues them as deliveries to the
 * alert destination. `detail` (taken, may be NULL) holds the kind's fields.
 */
enum relay_alert_kind {
    RELAY_ALERT_DISABLED,
    RELAY_ALERT_BLOCKED,
    RELAY_ALERT_BREAKER_OPENED,
    RELAY_ALERT_RECOVERED,
};
void relay_alert(struct relay *r, struct relay_dest *rd, enum relay_alert_kind kind,
                 json_t *detail);
extern const char relay_sql_alert[];

/* relay_dest.c */
extern const char relay_sql_pause[], relay_sql_resume[], relay_sql_disable[], relay_sql_limited[];

/* relay.c: the stop may be complete (called whenever work in flight ends while stopping). */
void relay_check_stopped(struct relay *r);

/* ---------------------------------------------------------------- the relay */

struct relay {
    uv_loop_t *loop;
    struct relay_config cfg;
    char *conninfo, *instance;
    char *alert_dest; /* ORDERSYNC_ALERT_DESTINATION, or NULL */
    enum relay_state state;
    struct destinations *dests; /* borrowed registry (settings) */
    struct list_node rdests;    /* struct relay_dest: runtime state per destination */
    struct db *db;              /* leases, claims, completions, bookkeeping */
    struct db *db_read;         /* stream reads only */
    struct http_client *http;
    struct list_node streams; /* struct stream */
    struct list_node in_http; /* struct job: every job whose request runs */
    unsigned jobs_in_http;
    uint64_t next_gen;

    enum relay_conv claim, acquire, complete, read;

    /* relay_claim.c */
    uv_timer_t due_timer, sweep_timer;
    struct buf claim_ids, claim_room, due_ids;
    char lease_text[32];
    /* relay_dest.c */
    uv_timer_t rate_timer;
    uint64_t rate_timer_at; /* loop ms the rate timer fires at, when it runs */
    /* relay_lease.c */
    uv_timer_t acquire_timer;
    uint64_t acquire_sent_ms; /* loop ms the acquire in flight was sent */
    bool acquired;            /* an acquire was answered: it knows which streams it holds */
    struct buf acquire_ids;
    /* relay_complete.c */
    uv_check_t check;
    bool complete_had_rows; /* the statement in flight writes or settles rows */
    struct job **results;   /* row jobs whose results wait for the next statement */
    unsigned n_results, cap_results;
    struct buf doc;
    /* relay_read.c */
    struct buf read_params[5];

    void (*stop_done)(void *);
    void *stop_data;
    unsigned open_handles;

    struct metric *m_claims, *m_db_errors, *m_reads;
};

static inline bool relay_running(const struct relay *r)
{
    return r->state == RELAY_RUNNING;
}

/*
 * The parts of a relay that need no loop and no database (defaults, lists,
 * buffers); relay_new() starts from here, and unit tests drive streams and
 * destinations with nothing more. relay_core_free() frees what they hold.
 */
void relay_core_init(struct relay *r, const struct relay_config *cfg);
void relay_core_free(struct relay *r);

/* The loop's clock (cached at the start of the loop turn), ms. */
static inline uint64_t relay_now_ms(struct relay *r)
{
    return uv_now(r->loop);
}

/* The rate limit's clock: the time now, not the loop's cached one, so that a
   token is counted when its request really starts. */
static inline uint64_t relay_rate_now(void)
{
    return uv_hrtime() / 1000000;
}

#endif
