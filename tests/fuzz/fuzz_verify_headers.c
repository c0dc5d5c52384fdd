/*
 * libFuzzer target for the signature-header parsers of verify.c and the
 * verify_* entry points that use them. The first byte picks the parser; the
 * rest, up to a newline, is the header value, and what follows the newline
 * is the body that gets verified. Nothing here may crash, leak or read out
 * of bounds, whatever the header holds.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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
    struct verify_stripe_header sh;
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
        if (verify_parse_stripe_header(value, &sh) == 0 &&
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
        verify_stripe(secrets, get_header, &h, body, body_len, 1767323047, 0, detail,
                      sizeof(detail));
        break;
    case 5:
        verify_standard(secrets, get_header, &h, body, body_len, 1767323047, 0, detail,
                        sizeof(detail));
        break;
    case 6:
        verify_shopify(secrets, get_header, &h, body, body_len, detail, sizeof(detail));
        verify_woocommerce(secrets, get_header, &h, body, body_len, detail, sizeof(detail));
        break;
    }
    free(value);
    return 0;
}
