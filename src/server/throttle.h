/* Counters shared by all workers, keyed by attacker-chosen strings (IP
 * addresses, account names):
 * - windowed counts of events (failed logins, registrations, new
 *   connections), one table per kind so that a flood of one kind cannot
 *   evict the counters of another (an hour-long registration count must
 *   not make room for ten-second connection counts);
 * - gauges of things open at once (unauthenticated connections per IP).
 * Memory is fixed: each table has a fixed number of slots, and a flood of
 * distinct keys reuses expired or the oldest windows; a gauge whose
 * neighbourhood is full lets the event through untracked (fails open),
 * because a per-address limit cannot stop an attacker with that many
 * addresses anyway. */
#ifndef PARLEY_THROTTLE_H
#define PARLEY_THROTTLE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

enum throttle_kind {
	THR_AUTH,     /* failed logins per IP or account, per minute */
	THR_PASSWD,   /* password changes per account, per minute */
	THR_REGISTER, /* in-band registrations per IP, per hour */
	THR_CONNECT,  /* new connections per IP, per 10 seconds */
	THR_KINDS
};

#define THROTTLE_CONNECT_WINDOW_S 10u

/* Events counted for key in the current window of its kind. */
unsigned throttle_count(enum throttle_kind k, const char *key, uint64_t now_ms);
/* Counts one event; returns the new count. */
unsigned throttle_add(enum throttle_kind k, const char *key, uint64_t now_ms);

/* The key for limits per address: the IPv4 address, or the /64 of an
 * IPv6 address (one subscriber's network), as text. */
#define THROTTLE_IP_KEY 56
void throttle_ip_key(const struct sockaddr_storage *ss, char out[THROTTLE_IP_KEY]);

enum gauge_rc { GAUGE_OK, GAUGE_FULL, GAUGE_UNTRACKED };
/* Raises key's gauge unless it is at max. On GAUGE_OK *handle is set, to
 * be given to throttle_gauge_dec() exactly once. */
enum gauge_rc throttle_gauge_inc(const char *key, unsigned max, uint64_t *handle);
void throttle_gauge_dec(uint64_t handle);

#endif
