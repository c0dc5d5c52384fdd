/*
 * console_assets: the console's page, script and style, compiled into the
 * binary from services/ordersync/console/ (cmake/embed_console.cmake), as the
 * migrations are: the console needs no files beside the binary and no
 * network (no CDN), so it works offline and in a copied container.
 */
#ifndef OS_CONSOLE_ASSETS_H
#define OS_CONSOLE_ASSETS_H

#include <stddef.h>

struct console_asset {
    const char *name;          /* file name, e.g. "app.js" */
    const char *content_type;  /* from the extension */
    const unsigned char *data; /* NUL-terminated, len bytes before the NUL */
    size_t len;
};

/* The asset called `name` (borrowed, static), or NULL. */
const struct console_asset *console_asset_find(const char *name);

#endif
