/*
 * relay_job: a job is one event on its way to one destination (struct job,
 * relay_internal.h, says who holds it and when it is freed). Jobs are made
 * from the rows of a stream read (relay_read.c) or of a claim
 * (relay_claim.c), sent by relay_send.c, and their outcome is written by
 * relay_complete.c.
 */
#include "relay_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct job *relay_job_new(struct relay *r, struct relay_dest *rd, const PGresult *res, int row,
                          const struct job_cols *c)
{
    struct job *j = calloc(1, sizeof(*j));
    if (j == NULL)
        return NULL;
    list_init(&j->http);
    j->r = r;
    j->rd = rd;
    j->position = strtoll(PQgetvalue(res, row, c->pos), NULL, 10);
    j->order_id = strtoll(PQgetvalue(res, row, c->order), NULL, 10);
    j->age_s = atof(PQgetvalue(res, row, c->age));
    /* snprintf(j->msg_id, sizeof(j->msg_id), "msg_%s", id), without printf: once per job */
    const char *id = PQgetvalue(res, row, c->id);
    size_t idlen = (size_t)PQgetlength(res, row, c->id);
    if (idlen > sizeof(j->msg_id) - 5)
        idlen = sizeof(j->msg_id) - 5;
    memcpy(j->msg_id, "msg_", 4);
    memcpy(j->msg_id + 4, id, idlen);
    j->msg_id[4 + idlen] = '\0';
    /* hex digits, as the statement prints it; NULL (events from before) leaves it empty */
    if (PQgetlength(res, row, c->trace) == TRACE_ID_HEX)
        memcpy(j->trace_id, PQgetvalue(res, row, c->trace), TRACE_ID_HEX + 1);
    j->payload_len = (size_t)PQgetlength(res, row, c->payload);
    j->payload = malloc(j->payload_len + 1);
    if (j->payload == NULL) {
        free(j);
        return NULL;
    }
    memcpy(j->payload, PQgetvalue(res, row, c->payload), j->payload_len + 1);
    j->attempt = 1;
    return j;
}

void relay_job_free(struct job *j)
{
    free(j->payload);
    free(j->error);
    free(j->excerpt);
    free(j);
}

void relay_job_release(struct job *j)
{
    if (!j->in_window && !list_linked(&j->http))
        relay_job_free(j);
}

struct stream *relay_job_stream(struct job *j)
{
    struct stream *s = j->rd->stream;
    return s != NULL && s->gen == j->stream_gen ? s : NULL;
}

void relay_job_set_outcome(struct job *j, enum job_result result, int status, int ms, double delay,
                           const char *error, const char *excerpt)
{
    j->result = result;
    j->status = status;
    j->ms = ms;
    j->delay_s = delay;
    free(j->error);
    free(j->excerpt);
    j->error = error && error[0] ? strdup(error) : NULL;
    j->excerpt = excerpt && excerpt[0] ? strdup(excerpt) : NULL;
}
