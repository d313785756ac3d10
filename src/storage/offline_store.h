/* Offline message storage (XEP-0160, RFC 6121 §8.5.2.2.1): typed,
 * asynchronous requests in the style of store.h. Every completion runs on
 * the thread that owns origin (give worker_origin()).
 *
 * A message is kept per (host, user) as the stanza serialized in the
 * jabber:client namespace, with a stable id (ids only grow, so they give
 * the order and are never reused) and the unix time it was stored.
 *
 * Delivery is two-phase so that a message is removed only once it was
 * handed to a session: store_offline_claim() marks the user's messages
 * as being delivered by one claimant (a session id) and returns them;
 * store_offline_delete_claimed() removes them afterwards, or
 * store_offline_release() gives them back if the session went away. A
 * claim older than stale_secs is treated as abandoned (a crash or restart
 * between the two phases), so messages are never lost to a claim. Two
 * sessions of one user that become available together do not both get
 * the same messages: the second finds them claimed. */
#ifndef PARLEY_OFFLINE_STORE_H
#define PARLEY_OFFLINE_STORE_H

#include <stddef.h>

#include "storage/store.h"

/* store_offline_put: the user's quota (count or bytes) is full. Not an
 * enum store_rc: the store treats it like any failed write (rolled back,
 * not counted as an error). */
#define OFFLINE_QUOTA (-16)

/* rc: STORE_OK (stored durably), STORE_NOT_FOUND (no such account),
 * OFFLINE_QUOTA, or STORE_ERROR. */
typedef void offline_put_cb(void *ud, int rc);
/* Stores xml[0..len) for host/user if the account exists and, with it,
 * the user would hold at most max_count messages and max_bytes bytes of
 * stanzas. stamp: unix time it was received. Arguments are copied. */
void store_offline_put(struct store *s, void *origin, const char *host, const char *user,
		       const char *xml, size_t len, long long stamp, unsigned max_count,
		       size_t max_bytes, offline_put_cb *cb, void *ud);

struct offline_msg {
	long long id;	 /* stable, increasing */
	long long stamp; /* unix time stored */
	const char *xml; /* borrowed from the batch: the serialized stanza, not NUL-terminated */
	size_t len;
};

/* A result set, owned by whoever receives it (free with offline_batch_free). */
struct offline_batch {
	size_t n;
	struct offline_msg *msgs; /* in id order */
	char *data;		  /* owned: every msgs[i].xml points into it */
};
void offline_batch_free(struct offline_batch *b); /* NULL is a no-op */

/* b is NULL unless rc is STORE_OK; the callee owns it. */
typedef void offline_batch_cb(void *ud, int rc, struct offline_batch *b);

/* Claims every message of host/user that is unclaimed, or whose claim is
 * older than stale_secs, for claimant, and returns all messages claimed by
 * claimant, oldest first. */
void store_offline_claim(struct store *s, void *origin, const char *host, const char *user,
			 unsigned long long claimant, unsigned stale_secs, offline_batch_cb *cb,
			 void *ud);
/* Deletes the messages claimed by claimant with id <= upto. cb may be NULL. */
void store_offline_delete_claimed(struct store *s, void *origin, const char *host, const char *user,
				  unsigned long long claimant, long long upto, store_done_cb *cb,
				  void *ud);
/* Drops claimant's claim on host/user's messages. cb may be NULL. */
void store_offline_release(struct store *s, void *origin, const char *host, const char *user,
			   unsigned long long claimant, store_done_cb *cb, void *ud);

/* For tests and parleyctl: how many messages host/user holds (sync, not
 * from a worker's loop). */
int store_offline_count_sync(struct store *s, const char *host, const char *user, unsigned *count);

#endif
