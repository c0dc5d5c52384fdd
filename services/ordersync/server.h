/*
 * server: runs one ordersync process: opens the database connections, the
 * HTTP server and the loop, and shuts down gracefully on SIGTERM/SIGINT.
 */
#ifndef OS_SERVER_H
#define OS_SERVER_H

#include "config.h"

/* Runs until a signal asks to stop; returns the process exit code. */
int server_run(const struct config *cfg);

#endif
