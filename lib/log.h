/*
 * log: structured logs as JSON lines on stderr, one object per line.
 *
 * Every service of the project logs through here so operators can feed stderr
 * to any log shipper. Messages follow PostgreSQL's error style: a short factual
 * "msg", details as separate fields. Never pass secrets or full payloads.
 */
#ifndef OS_LOG_H
#define OS_LOG_H

#include <jansson.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Messages below this level are dropped. Default LOG_INFO. */
void log_set_level(enum log_level level);
/* Parses "debug", "info", "warn", "error"; returns 0 or -EINVAL. */
int log_parse_level(const char *name, enum log_level *out);
/* Adds "service": name to every line. `name` is borrowed and must outlive logging. */
void log_set_service(const char *name);
int log_enabled(enum log_level level);

/*
 * Writes one line {"time", "level", "service", "msg", ...fields}.
 * `fields` is a JSON object or NULL; this function takes ownership of it (it is
 * the natural sink for json_pack(), whose NULL on failure is tolerated).
 */
void log_json(enum log_level level, const char *msg, json_t *fields);

#define log_debug(msg, fields) log_json(LOG_DEBUG, (msg), (fields))
#define log_info(msg, fields)  log_json(LOG_INFO, (msg), (fields))
#define log_warn(msg, fields)  log_json(LOG_WARN, (msg), (fields))
#define log_error(msg, fields) log_json(LOG_ERROR, (msg), (fields))

#endif
