/*
 * test_pgresult: query results built in memory (libpq's PQmakeEmptyPGresult,
 * PQsetResultAttrs, PQsetvalue), so code that reads a PGresult is tested
 * without a server. Header-only, for the unit tests.
 */
#ifndef OS_TEST_PGRESULT_H
#define OS_TEST_PGRESULT_H

#include <string.h>

#include <libpq-fe.h>

#define TEST_TEXTOID 25

/*
 * A PGRES_TUPLES_OK result of `ncols` text columns called names[0..], with
 * `nrows` rows whose values are values[row * ncols + col] (NULL: SQL NULL).
 * Returns a new result (PQclear it), or NULL when libpq refused.
 */
static inline PGresult *test_pgresult(int ncols, const char *const *names, int nrows,
                                      const char *const *values)
{
    PGresult *res = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
    if (res == NULL)
        return NULL;
    PGresAttDesc attrs[32];
    if (ncols > 32)
        goto fail;
    for (int c = 0; c < ncols; c++)
        attrs[c] = (PGresAttDesc){
            .name = (char *)names[c], .typid = TEST_TEXTOID, .typlen = -1, .atttypmod = -1};
    if (!PQsetResultAttrs(res, ncols, attrs))
        goto fail;
    for (int r = 0; r < nrows; r++) {
        for (int c = 0; c < ncols; c++) {
            const char *v = values[r * ncols + c];
            if (!PQsetvalue(res, r, c, (char *)v, v != NULL ? (int)strlen(v) : -1))
                goto fail;
        }
    }
    return res;
fail:
    PQclear(res);
    return NULL;
}

#endif
