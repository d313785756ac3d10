/* Counters of events per key (failed logins per IP address or account,
 * registrations per IP address) over a window (one minute unless given), shared by all workers.
 * Memory is fixed: a table of THROTTLE_SLOTS entries where an expired or the oldest entry is
 * reused, so a flood of distinct keys cannot grow it. */
#ifndef PARLEY_THROTTLE_H
#define PARLEY_THROTTLE_H

#include <stdint.h>

#define THROTTLE_WINDOW_MS 60000u

/* Failures counted for key in the current window. */
unsigned throttle_count(const char *key, uint64_t now_ms);
/* Counts one failure; returns the new count. */
unsigned throttle_fail(const char *key, uint64_t now_ms);
/* The same with a window of one's own (keys used with one window only). */
unsigned throttle_count_in(const char *key, uint64_t now_ms, uint64_t window_ms);
unsigned throttle_add(const char *key, uint64_t now_ms, uint64_t window_ms);

#endif
