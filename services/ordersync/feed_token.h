/*
 * feed_token: checks a pull feed's bearer token against what
 * destinations.feed_token stores. Since migration 014 that is never the token
 * itself but "sha256:" and the lowercase hex SHA-256 of it (a trigger
 * replaces a token written in plain text, as the README shows, before the
 * row is stored), so a copy of the table, a backup or a replica opens no
 * feed. Pure: unit-tested in tests/unit/test_feed_token.c.
 */
#ifndef OS_FEED_TOKEN_H
#define OS_FEED_TOKEN_H

#include <stdbool.h>
#include <stddef.h>

/* The prefix of a stored digest; 7 + 64 hex digits in all. */
#define FEED_TOKEN_PREFIX     "sha256:"
#define FEED_TOKEN_STORED_LEN 71

/*
 * Does `given` (`len` bytes, borrowed; may hold anything a client sent) open
 * a feed whose row holds `stored` (borrowed; NULL: no token, nothing opens
 * it)? The given token is hashed and the digests are compared in constant
 * time, so neither its length nor its first wrong byte shows in the time it
 * takes. A stored value that is not a digest (a row written with the
 * trigger disabled) is hashed too, and so still compared in constant time.
 */
bool feed_token_matches(const char *stored, const char *given, size_t len);

#endif
