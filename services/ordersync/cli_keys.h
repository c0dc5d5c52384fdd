/*
 * cli_keys: the command-line side of Ed25519 signing keys (Standard Webhooks
 * v1a, lib/ed25519.h). `ordersync keygen` prints a new private key and its
 * public key; `ordersync destination-key ID` prints the public key(s) of a
 * destination, read from the database, for its receivers. A private key is
 * printed only by keygen, which made it: never one read from the database.
 */
#ifndef OS_CLI_KEYS_H
#define OS_CLI_KEYS_H

#include <stdio.h>

#include <libpq-fe.h>

/* Writes "signing_key=whsk_...\npublic_key=whpk_...\n" to out. Returns 0, or 1 (logged). */
int cli_keys_keygen(FILE *out);

/*
 * Writes the destination's public keys, "public_key=whpk_..." and during a
 * rotation "previous_public_key=whpk_...", to out. `conn` borrowed. Returns
 * 0, or 1 with the reason on stderr (no such destination, no signing key,
 * a key that does not parse).
 */
int cli_keys_destination(PGconn *conn, const char *id, FILE *out);

#endif
