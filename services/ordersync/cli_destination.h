/*
 * cli_destination: `ordersync destination ACTION ID ...`, an operator's
 * actions on one destination from a shell, the same as the console's
 * (api_destination.h) and recorded the same way, with actor "cli:<login>":
 *
 *   ordersync destination pause ID
 *   ordersync destination resume ID
 *   ordersync destination test ID
 *   ordersync destination replay ID --since TIME --until TIME [--preview]
 *   ordersync destination filter ID JSONPATH | --none
 *
 * Blocking: it is start-up-style code, not on the service's loop (a test
 * event runs a loop of its own until the answer came).
 */
#ifndef OS_CLI_DESTINATION_H
#define OS_CLI_DESTINATION_H

#include <stdio.h>

#include <libpq-fe.h>

/* Prints the usage to out. */
void cli_destination_usage(FILE *out);
/*
 * Checks the command line (argv[0] = "ordersync", argv[1] = "destination").
 * Returns -1 when it is fine (go on and connect), else the exit code to
 * leave with: 0 after --help, 2 after a message on stderr.
 */
int cli_destination_check(int argc, char **argv);
/* Runs it on conn (borrowed) as actor. Returns the exit code: 0, or 1 with the database's
   message on stderr. */
int cli_destination_run(PGconn *conn, const char *actor, int argc, char **argv);

#endif
