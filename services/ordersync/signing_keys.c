/*
 * cli_keys: see cli_keys.h. The database holds private keys only; the public
 * ones are derived here, by the same parser the relay loads them with, so
 * that what is printed is what deliveries are signed with.
 */
#include "signing_keys.h"

#include <errno.h>
#include <string.h>

#include "destinations.h"
#include "ed25519.h"

int signing_keys_keygen(FILE *out)
{
    char sk[ED25519_KEY_TEXT_SIZE], pk[ED25519_KEY_TEXT_SIZE];
    int rc = ed25519_keygen(sk, sizeof(sk), pk, sizeof(pk));
    if (rc < 0) {
        fprintf(stderr, "ordersync keygen: %s\n",
                rc == -ENOMEM ? "out of memory" : "no random bytes from the system");
        return 1;
    }
    fprintf(out, "signing_key=%s\npublic_key=%s\n", sk, pk);
    memset(sk, 0, sizeof(sk));
    return 0;
}

/* Prints name=<public key> of the key text in `col` of row 0; 0, or 1 (why on stderr). */
static int print_public(const PGresult *res, int col, const char *id, const char *name, FILE *out)
{
    struct ed25519_signer *s;
    const char *why;
    int rc = ed25519_signer_new(PQgetvalue(res, 0, col), &s, &why);
    if (rc < 0) {
        fprintf(stderr, "ordersync destination-key: destination \"%s\": %s %s\n", id,
                col == PQfnumber(res, "signing_key") ? "signing_key:" : "previous_signing_key:",
                rc == -ENOMEM ? "out of memory" : why);
        return 1;
    }
    char pk[ED25519_KEY_TEXT_SIZE];
    rc = ed25519_public_text(s, pk, sizeof(pk));
    ed25519_signer_free(&s);
    if (rc < 0)
        return 1;
    fprintf(out, "%s=%s\n", name, pk);
    return 0;
}

int signing_keys_destination(PGconn *conn, const char *id, FILE *out)
{
    const char *params[1] = {id};
    PGresult *res = PQexecParams(
        conn, "SELECT signing_key, previous_signing_key FROM destinations WHERE id = $1", 1, NULL,
        params, NULL, NULL, 0);
    int rc = 1;
    int c_key = PQfnumber(res, "signing_key"), c_prev = PQfnumber(res, "previous_signing_key");
    if (PQresultStatus(res) != PGRES_TUPLES_OK || c_key < 0 || c_prev < 0) {
        const char *why = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
        fprintf(stderr, "ordersync destination-key: %s\n", why ? why : PQerrorMessage(conn));
    } else if (PQntuples(res) != 1) {
        fprintf(stderr, "ordersync destination-key: no destination \"%s\"\n", id);
    } else if (PQgetisnull(res, 0, c_key) && PQgetisnull(res, 0, c_prev)) {
        fprintf(stderr,
                "ordersync destination-key: destination \"%s\" has no signing_key (it signs"
                " with its secret only, v1); ordersync keygen makes one\n",
                id);
    } else {
        rc = 0;
        if (!PQgetisnull(res, 0, c_key))
            rc = print_public(res, c_key, id, "public_key", out);
        if (rc == 0 && !PQgetisnull(res, 0, c_prev))
            rc = print_public(res, c_prev, id, "previous_public_key", out);
    }
    PQclear(res);
    return rc;
}

int signing_keys_annotate(const struct destinations *dests, json_t *doc)
{
    size_t i;
    json_t *d;
    json_array_foreach(doc, i, d)
    {
        const char *id = json_string_value(json_object_get(d, "id"));
        const struct dest *x = id != NULL ? destinations_find(dests, id) : NULL;
        if (x == NULL)
            continue;
        const struct ed25519_signer *keys[2] = {x->set.signer, x->set.prev_signer};
        static const char *const names[2] = {"signing_public_key", "previous_signing_public_key"};
        for (int k = 0; k < 2; k++) {
            char pk[ED25519_KEY_TEXT_SIZE];
            if (keys[k] != NULL && (ed25519_public_text(keys[k], pk, sizeof(pk)) < 0 ||
                                    json_object_set_new(d, names[k], json_string(pk)) < 0))
                return -ENOMEM;
        }
        if (x->set.keys_bad && json_object_set_new(d, "signing_key_refused", json_true()) < 0)
            return -ENOMEM;
    }
    return 0;
}
