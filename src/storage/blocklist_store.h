/* Blocklists (XEP-0191) in the store: the JIDs each account blocks.
 * Typed and asynchronous like store.h (completions on origin's thread,
 * after the write is durable). The server keeps every blocklist in memory
 * for its routing checks (mod_blocking), so the store is read once, at
 * start, and written on every change. */
#ifndef PARLEY_BLOCKLIST_STORE_H
#define PARLEY_BLOCKLIST_STORE_H

#include <stddef.h>

#include "storage/store.h"

struct store;

/* Beyond enum store_rc: the change would make the list longer than max. */
#define BLOCKLIST_LIMIT (-10)

enum blocklist_op {
	BLOCKLIST_ADD,	      /* block the given JIDs */
	BLOCKLIST_REMOVE,     /* unblock the given JIDs */
	BLOCKLIST_REMOVE_ALL, /* unblock everything (jids ignored) */
};

/* changed: the JIDs actually added or removed (those already in the
 * state asked for are left out), valid during the call only. */
typedef void blocklist_change_cb(void *ud, int rc, const char *const *changed, size_t n);
/* Applies op to user@host's list in one transaction; jids are normalized
 * JID strings (copied). rc: STORE_OK, STORE_NOT_FOUND (no such account),
 * BLOCKLIST_LIMIT (nothing written), STORE_ERROR. apply (optional) gets
 * the same changed list on the storage thread, in commit order, once the
 * change is durable (sqlite_job.h, committed): for the memory copy. */
void store_blocklist_change(struct store *s, void *origin, const char *host, const char *user,
			    enum blocklist_op op, const char *const *jids, size_t n, size_t max,
			    blocklist_change_cb *apply, blocklist_change_cb *cb, void *ud);

/* Start-up only: calls fn for every blocked JID of every account, sorted
 * by host, user and JID, on the caller's thread. */
int store_blocklist_load_sync(struct store *s,
			      void (*fn)(void *ud, const char *host, const char *user,
					 const char *jid),
			      void *ud);

#endif
