/* Counters of failed logins per key (an IP address, an account) over a
 * one-minute window, shared by all workers. Memory is fixed: a table of
 * THROTTLE_SLOTS entries where an expired or the oldest entry is reused,
 * so a flood of distinct keys cannot grow it. */
#ifndef PARLEY_THROTTLE_H
#define PARLEY_THROTTLE_H

#include <stdint.h>

#define THROTTLE_WINDOW_MS 60000u

/* Failures counted for key in the current window. */
unsigned throttle_count(const char *key, uint64_t now_ms);
/* Counts one failure; returns the new count. */
unsigned throttle_fail(const char *key, uint64_t now_ms);

#endif
