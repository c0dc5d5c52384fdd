/*
 * cli_keys: the command-line side of Ed25519 signing keys (Standard Webhooks
 * v1a, lib/ed25519.h). `ordersync keygen` prints a new private key and its
 * public key; `ordersync destination-key ID` prints the public key(s) of a
 * destination, read from the database, for its receivers; the console shows
 * the public keys of the keys loaded. A private key is printed only by
 * keygen, which made it: never one read from the database.
 */
#ifndef OS_CLI_KEYS_H
#define OS_CLI_KEYS_H

#include <stdio.h>

#include <jansson.h>
#include <libpq-fe.h>

struct destinations;

/* Writes "signing_key=whsk_...\npublic_key=whpk_...\n" to out. Returns 0, or 1 (logged). */
int signing_keys_keygen(FILE *out);

/*
 * Writes the destination's public keys, "public_key=whpk_..." and during a
 * rotation "previous_public_key=whpk_...", to out. `conn` borrowed. Returns
 * 0, or 1 with the reason on stderr (no such destination, no signing key,
 * a key that does not parse).
 */
int signing_keys_destination(PGconn *conn, const char *id, FILE *out);

/*
 * Adds to each destination object of `doc` (the console's JSON array, borrowed)
 * "signing_public_key" and "previous_signing_public_key" from the keys loaded
 * in `dests`, and "signing_key_refused": true for a key the loader refused.
 * Returns 0 or -ENOMEM.
 */
int signing_keys_annotate(const struct destinations *dests, json_t *doc)
    __attribute__((warn_unused_result));

#endif
