/*
 * store: sources kept sorted by id for bsearch; a reload builds the new array
 * completely before it frees the old one, so a failed reload changes nothing.
 * A key whose source and secret are unchanged moves from the old set to the
 * new one only once nothing can fail any more.
 */
#include "store.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "log.h"

struct store {
    struct source *sources;
    unsigned n;
    bool loaded;
};

const char store_sources_sql[] = "SELECT id, kind, secret, previous_secret, tolerance_s, enabled,"
                                 " mode = 'push' AS push FROM sources ORDER BY id COLLATE \"C\"";

/* The columns of store_sources_sql, found by name in each result. */
enum { C_ID, C_KIND, C_SECRET, C_PREVIOUS_SECRET, C_TOLERANCE_S, C_ENABLED, C_PUSH, N_COLS };
static const char *const col_names[N_COLS] = {
    [C_ID] = "id",
    [C_KIND] = "kind",
    [C_SECRET] = "secret",
    [C_PREVIOUS_SECRET] = "previous_secret",
    [C_TOLERANCE_S] = "tolerance_s",
    [C_ENABLED] = "enabled",
    [C_PUSH] = "push",
};

struct store *store_new(void)
{
    return calloc(1, sizeof(struct store));
}

static void free_sources(struct source *s, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        free(s[i].id);
        free(s[i].secret);
        free(s[i].previous_secret);
        hmac_sha256_free(&s[i].keys[0]);
        hmac_sha256_free(&s[i].keys[1]);
    }
    free(s);
}

void store_free(struct store **pstore)
{
    struct store *store = *pstore;
    if (store == NULL)
        return;
    free_sources(store->sources, store->n);
    free(store);
    *pstore = NULL;
}

static char *dup_or_null(const PGresult *res, int r, int c, bool *oom)
{
    if (PQgetisnull(res, r, c))
        return NULL;
    char *s = strdup(PQgetvalue(res, r, c));
    if (s == NULL)
        *oom = true;
    return s;
}

int store_load(struct store *store, const PGresult *res)
{
    int c[N_COLS];
    if (db_columns(res, "sources", col_names, c, N_COLS) < 0)
        return -EINVAL;
    int n = PQntuples(res);
    struct source *s = calloc((size_t)n + 1, sizeof(*s));
    if (s == NULL)
        return -ENOMEM;
    bool oom = false;
    unsigned k = 0;
    for (int r = 0; r < n; r++) {
        struct source *src = &s[k];
        if (source_kind_parse(PQgetvalue(res, r, c[C_KIND]), &src->kind) < 0) {
            log_warn("skipping source of unknown kind",
                     json_pack("{s:s,s:s}", "source", PQgetvalue(res, r, c[C_ID]), "kind",
                               PQgetvalue(res, r, c[C_KIND])));
            continue;
        }
        src->id = dup_or_null(res, r, c[C_ID], &oom);
        src->secret = dup_or_null(res, r, c[C_SECRET], &oom);
        src->previous_secret = dup_or_null(res, r, c[C_PREVIOUS_SECRET], &oom);
        src->tolerance_s = atoi(PQgetvalue(res, r, c[C_TOLERANCE_S]));
        src->enabled = PQgetvalue(res, r, c[C_ENABLED])[0] == 't';
        src->push = PQgetvalue(res, r, c[C_PUSH])[0] == 't';
        k++;
    }
    /* reuse[i][j]: the old source whose keys[j] the new s[i] takes over (same id, same secret) */
    const struct source *(*reuse)[2] = oom ? NULL : calloc((size_t)k + 1, sizeof(*reuse));
    if (reuse == NULL)
        oom = true;
    for (unsigned i = 0; !oom && i < k; i++) {
        const struct source *old = store_find_source(store, s[i].id);
        const char *secrets[2] = {s[i].secret, s[i].previous_secret};
        for (int j = 0; !oom && j < 2; j++) {
            if (secrets[j] == NULL || secrets[j][0] == '\0')
                continue;
            for (int o = 0; old != NULL && o < 2; o++) {
                const char *was = o == 0 ? old->secret : old->previous_secret;
                if (old->keys[o] != NULL && was != NULL && strcmp(was, secrets[j]) == 0)
                    reuse[i][j] = old; /* found below by the same comparison */
            }
            if (reuse[i][j] == NULL &&
                hmac_sha256_new(secrets[j], strlen(secrets[j]), &s[i].keys[j]) < 0)
                oom = true;
        }
    }
    if (oom) {
        free(reuse);
        free_sources(s, k);
        return -ENOMEM;
    }
    /* nothing fails from here: the kept keys move (a rotation moves the current one to [1]) */
    for (unsigned i = 0; i < k; i++) {
        const char *secrets[2] = {s[i].secret, s[i].previous_secret};
        for (int j = 0; j < 2; j++) {
            struct source *old = (struct source *)reuse[i][j];
            for (int o = 0; old != NULL && o < 2 && s[i].keys[j] == NULL; o++) {
                const char *was = o == 0 ? old->secret : old->previous_secret;
                if (old->keys[o] != NULL && was != NULL && strcmp(was, secrets[j]) == 0) {
                    s[i].keys[j] = old->keys[o];
                    old->keys[o] = NULL;
                }
            }
        }
    }
    free(reuse);
    free_sources(store->sources, store->n);
    store->sources = s;
    store->n = k;
    store->loaded = true;
    return 0;
}

bool store_loaded(const struct store *store)
{
    return store->loaded;
}

static int cmp_source(const void *key, const void *elem)
{
    return strcmp(key, ((const struct source *)elem)->id);
}

const struct source *store_find_source(const struct store *store, const char *id)
{
    if (store->n == 0)
        return NULL;
    return bsearch(id, store->sources, store->n, sizeof(struct source), cmp_source);
}

unsigned store_source_count(const struct store *store)
{
    return store->n;
}
