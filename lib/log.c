/*
 * log: JSON-lines logger. One fwrite per line on an unbuffered stderr keeps
 * lines whole even when several processes share the stream (compose, tests).
 */
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static enum log_level min_level = LOG_INFO;
static const char *service_name;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_set_level(enum log_level level)
{
    min_level = level;
}

int log_parse_level(const char *name, enum log_level *out)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -EINVAL;
}

void log_set_service(const char *name)
{
    service_name = name;
}

int log_enabled(enum log_level level)
{
    return level >= min_level;
}

void log_json(enum log_level level, const char *msg, json_t *fields)
{
    if (level < min_level) {
        json_decref(fields);
        return;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[40];
    size_t n = strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + n, sizeof(when) - n, ".%03ldZ", ts.tv_nsec / 1000000);

    json_t *line = json_object();
    if (line == NULL) {
        json_decref(fields);
        fprintf(stderr, "{\"level\":\"error\",\"msg\":\"out of memory while logging\"}\n");
        return;
    }
    json_object_set_new(line, "time", json_string(when));
    json_object_set_new(line, "level", json_string(level_names[level]));
    if (service_name != NULL)
        json_object_set_new(line, "service", json_string(service_name));
    json_object_set_new(line, "msg", json_string(msg));
    if (fields != NULL && json_is_object(fields))
        json_object_update_missing(line, fields);
    json_decref(fields);

    char *text = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(line);
    if (text == NULL)
        return;
    size_t len = strlen(text);
    text[len] = '\n'; /* the NUL becomes the newline: the line goes out in one write */
    fwrite(text, 1, len + 1, stderr);
    free(text);
}
