/*
 * libFuzzer target for the signature-header parsers (lib/verify.c, and
 * Stripe's in source_stripe.c) and the verifiers that use them: Standard
 * Webhooks and every source kind's verify hook. The first byte picks the parser; the
 * rest, up to a newline, is the header value, and what follows the newline
 * is the body that gets verified. Nothing here may crash, leak or read out
 * of bounds, whatever the header holds, and every kind's verify gives the
 * same verdict with its secrets keyed per request and keyed once (lib/hmac,
 * as the store keys them).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hmac.h"
#include "source_internal.h"
#include "source_kind.h"
#include "verify.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct one_header {
    const char *value;
};

static const char *get_header(void *ctx, const char *name)
{
    struct one_header *h = ctx;

    (void)name;
    /* Every header the scheme asks for gets the fuzzed value (webhook-id too). */
    return h->value;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const secrets[2] = {"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "plain"};
    struct source_stripe_header sh;
    struct verify_standard_sigs ss;
    struct one_header h;
    unsigned char out[256];
    char detail[256];
    const char *nl, *body;
    size_t body_len;
    char *value;
    int64_t t;

    if (size == 0)
        return 0;
    value = malloc(size);
    if (value == NULL)
        return 0;
    memcpy(value, data + 1, size - 1);
    value[size - 1] = '\0';
    nl = memchr(value, '\n', size - 1);
    body = nl != NULL ? nl + 1 : "";
    body_len = nl != NULL ? (size - 1) - (size_t)(body - value) : 0;
    if (nl != NULL)
        value[nl - value] = '\0';
    h.value = value;

    switch (data[0] % 7) {
    case 0:
        if (source_stripe_parse_header(value, &sh) == 0 &&
            (sh.n_v1 == 0 || sh.n_v1 > VERIFY_MAX_SIGS))
            abort();
        break;
    case 1:
        if (verify_parse_standard_signatures(value, &ss) == 0 &&
            (ss.n == 0 || ss.n > VERIFY_MAX_SIGS))
            abort();
        break;
    case 2:
        verify_parse_timestamp(value, &t);
        break;
    case 3: {
        int n = verify_base64_decode(value, strlen(value), out, sizeof(out));

        if (n > (int)sizeof(out))
            abort();
        break;
    }
    case 4:
    case 6:
        /* every kind, through the table */
        for (size_t i = 0; source_kinds[i] != NULL; i++) {
            static struct hmac_sha256 *keys[2]; /* made once, kept for the process */
            struct source_request req = {.secrets = secrets,
                                         .tolerance_s = 0,
                                         .get_header = get_header,
                                         .ctx = &h,
                                         .body = body,
                                         .len = body_len,
                                         .now = 1767323047,
                                         .keys = NULL}; /* keyed per request */

            for (int k = 0; k < 2; k++)
                if (keys[k] == NULL &&
                    hmac_sha256_new(secrets[k], strlen(secrets[k]), &keys[k]) < 0)
                    abort();
            enum verify_result per_request = source_kinds[i]->verify(&req, detail, sizeof(detail));
            req.keys = keys;
            if (source_kinds[i]->verify(&req, detail, sizeof(detail)) != per_request)
                abort();
        }
        break;
    case 5:
        verify_standard(secrets, get_header, &h, body, body_len, 1767323047, 0, detail,
                        sizeof(detail));
        break;
    }
    free(value);
    return 0;
}
