/*
 * source_kind: the table of platforms ordersync receives orders from. Each
 * entry is defined whole in its own source_<name>.c; this list is the only
 * place that names them all, and the only way from a sources.kind value to
 * a kind. A new platform is one file and one line here (and its name in the
 * CHECK of sources.kind, through a migration).
 */
#include "source_kind.h"

#include <errno.h>
#include <string.h>

extern const struct source_kind source_shopify;
extern const struct source_kind source_woocommerce;
extern const struct source_kind source_stripe;
extern const struct source_kind source_standard;

const struct source_kind *const source_kinds[] = {
    &source_shopify, &source_woocommerce, &source_stripe, &source_standard, NULL,
};

int source_kind_parse(const char *name, const struct source_kind **out)
{
    for (size_t i = 0; name != NULL && source_kinds[i] != NULL; i++) {
        if (strcmp(name, source_kinds[i]->name) == 0) {
            *out = source_kinds[i];
            return 0;
        }
    }
    return -EINVAL;
}
