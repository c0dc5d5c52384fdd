/*
 * relay_sign: the webhook-signature header of one delivery (Standard
 * Webhooks, DESIGN.md's outbound contract), every signature space-separated
 * in one line, so that a receiver that knows any of the keys verifies:
 *   "v1,<base64 HMAC-SHA256>" with the destination's secret and, during a
 *   rotation, its previous one;
 *   "v1a,<base64 Ed25519>" with its signing key and, during a rotation, its
 *   previous one (lib/ed25519.h; the keys were parsed when loaded).
 * Both schemes sign "<webhook-id>.<webhook-timestamp>.<body>". A receiver
 * moving from v1 to v1a checks either while both are set.
 * Pure: no I/O. Tests: tests/unit/test_relay_sign.c.
 */
#include "relay_internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "ed25519.h"

/* Appends " <sig>" to the line (each signature is preceded by one space). */
static int append(char *out, size_t out_size, size_t *used, const char *sig)
{
    int n = snprintf(out + *used, out_size - *used, " %s", sig);
    if (n < 0 || (size_t)n >= out_size - *used)
        return -ENOSPC;
    *used += (size_t)n;
    return 0;
}

int relay_sign_line(const struct dest_settings *set, const char *msg_id, int64_t timestamp,
                    const char *body, size_t len, char *out, size_t out_size)
{
    if (set->secret == NULL && set->signer == NULL)
        return -EINVAL; /* the loader counts such a destination as absent */
    static const char name[] = "webhook-signature:";
    if (out_size < sizeof(name))
        return -ENOSPC;
    memcpy(out, name, sizeof(name));
    size_t used = sizeof(name) - 1;
    const char *secrets[2] = {set->secret, set->prev_secret};
    for (int i = 0; i < 2; i++) {
        if (secrets[i] == NULL)
            continue;
        char sig[VERIFY_STANDARD_SIG_SIZE];
        int rc = verify_sign_standard(msg_id, timestamp, body, len, secrets[i], sig, sizeof(sig));
        if (rc < 0)
            return rc == -ENOMEM ? -ENOMEM : -EINVAL; /* -ENOSPC cannot happen: sized above */
        if ((rc = append(out, out_size, &used, sig)) < 0)
            return rc;
    }
    const struct ed25519_signer *keys[2] = {set->signer, set->prev_signer};
    for (int i = 0; i < 2; i++) {
        if (keys[i] == NULL)
            continue;
        char sig[ED25519_SIG_SIZE];
        int rc = ed25519_sign_standard(keys[i], msg_id, timestamp, body, len, sig, sizeof(sig));
        if (rc < 0)
            return rc == -ENOMEM ? -ENOMEM : -EINVAL;
        if ((rc = append(out, out_size, &used, sig)) < 0)
            return rc;
    }
    return 0;
}
