/*
 * relay_sign: the webhook-signature header of one delivery (Standard
 * Webhooks, DESIGN.md's outbound contract): "v1,<base64 HMAC-SHA256>" over
 * "<webhook-id>.<webhook-timestamp>.<body>", with the destination's secret
 * and, during a rotation, its previous one too, space-separated, so that a
 * receiver that knows either verifies. relay_send.c puts the line in each
 * request; signatures of other schemes go next to these, in the same line.
 * Pure: no I/O. Tests: tests/unit/test_relay_sign.c.
 */
#include "relay_internal.h"

#include <errno.h>
#include <stdio.h>

int relay_sign_line(const struct dest_settings *set, const char *msg_id, int64_t timestamp,
                    const char *body, size_t len, char *out, size_t out_size)
{
    char sig1[VERIFY_STANDARD_SIG_SIZE], sig2[VERIFY_STANDARD_SIG_SIZE];
    int rc = verify_sign_standard(msg_id, timestamp, body, len, set->secret, sig1, sizeof(sig1));
    if (rc == 0 && set->prev_secret != NULL)
        rc = verify_sign_standard(msg_id, timestamp, body, len, set->prev_secret, sig2,
                                  sizeof(sig2));
    if (rc < 0)
        return rc == -ENOMEM ? -ENOMEM : -EINVAL; /* -ENOSPC cannot happen: sized above */
    int n = set->prev_secret != NULL
                ? snprintf(out, out_size, "webhook-signature: %s %s", sig1, sig2)
                : snprintf(out, out_size, "webhook-signature: %s", sig1);
    return n >= 0 && (size_t)n < out_size ? 0 : -ENOSPC;
}
