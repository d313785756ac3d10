/* Logging with levels. Every line about a session carries its id:
 * use log_sess() for those. Thread-safe (one write(2) per line). */
#ifndef PARLEY_LOG_H
#define PARLEY_LOG_H

#include <stdint.h>

enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };

/* Written by the main thread on reload, read by every thread. */
extern _Atomic int log_threshold;

void log_set_level(enum log_level l);
int log_level_parse(const char *s, enum log_level *out); /* 0 or -1 */
void log_msg(enum log_level l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_sess(enum log_level l, uint64_t sess_id, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
_Noreturn void die_oom(void);
_Noreturn void die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define log_enabled(l) ((int)(l) <= log_threshold)
#define LOG(l, ...)                                                                                \
	do {                                                                                       \
		if (log_enabled(l))                                                                \
			log_msg(l, __VA_ARGS__);                                                   \
	} while (0)
#define LOGS(l, id, ...)                                                                           \
	do {                                                                                       \
		if (log_enabled(l))                                                                \
			log_sess(l, id, __VA_ARGS__);                                              \
	} while (0)

/* Always-on assertion for our own bugs, never for input. */
#define ASSERT(c)                                                                                  \
	do {                                                                                       \
		if (!(c))                                                                          \
			die("assertion failed: %s (%s:%d)", #c, __FILE__, __LINE__);               \
	} while (0)

#endif
