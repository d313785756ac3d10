/* Rosters and presence subscriptions in the store (RFC 6121 §2, §3): the
 * typed, asynchronous calls mod_roster makes. Implemented with SQLite jobs
 * in roster_sqlite.c; completions run on the thread named by origin
 * (worker_origin()), never on the storage thread.
 *
 * One row per (host, user, contact) holds the item and its subscription
 * state. A subscription request received but not yet answered ("pending
 * in", RFC 6121 §3.1.3) is kept apart from the item: the contact's roster
 * must not grow an item because a stranger asked. Every change a client
 * can see bumps the user's version counter (RFC 6121 §2.6), and a removed
 * item leaves a tombstone so that a stale client can be sent the
 * difference. */
#ifndef PARLEY_ROSTER_STORE_H
#define PARLEY_ROSTER_STORE_H

#include <stdbool.h>
#include <stddef.h>

struct store;

/* Subscription state bits (RFC 6121 §2.1.2.5): none = 0, both = TO|FROM. */
#define ROSTER_SUB_TO	0x1u /* the user receives the contact's presence */
#define ROSTER_SUB_FROM 0x2u /* the contact receives the user's presence */

/* Beyond enum store_rc: the roster already holds its most items
 * (roster_set_max_items). */
#define ROSTER_LIMIT (-10)

struct roster_item {
	const char *jid;  /* the contact, normalized */
	const char *name; /* NULL: none */
	unsigned sub;	  /* ROSTER_SUB_* */
	bool ask;	  /* a subscribe we sent is pending ("Pending Out") */
	bool approved;	  /* pre-approved (RFC 6121 §3.4) */
	const char *const *groups;
	size_t n_groups;
	bool removed;		/* delta reads: the item was removed (only jid and ver are set) */
	const char *ver;	/* the roster version at which it last changed */
	unsigned long long seq; /* the same, as a number (private to the store) */
};

/* A subscription request not yet answered (RFC 6121 §3.1.3). */
struct roster_pending {
	const char *jid;    /* who asked */
	const char *status; /* the request's <status/>, or NULL */
};

/* What a roster read returns. Everything lives until the callback returns. */
struct roster_view {
	/* The whole roster sorted by contact, or for a delta the items
	 * changed or removed since the client's version, oldest change first. */
	const struct roster_item *items;
	size_t n_items;
	bool delta;
	const char *ver;		      /* the current version string */
	const struct roster_pending *pending; /* only with ROSTER_READ_PENDING */
	size_t n_pending;
};

#define ROSTER_READ_PENDING 0x1u /* also return the pending-in requests */

typedef void roster_view_cb(void *ud, int rc, const struct roster_view *v);
/* Reads the roster of user@host. since: the version string the client
 * holds (RFC 6121 §2.6.2), or NULL. If since is the current version the
 * view is a delta with nothing in it; if the store can tell what changed
 * since then, a delta; otherwise the whole roster. */
void roster_read(struct store *s, void *origin, const char *host, const char *user,
		 const char *since, unsigned flags, roster_view_cb *cb, void *ud);

/* One contact's state as a transition sees and changes it. */
struct roster_state {
	bool user_exists; /* read only: the account exists (nothing is written if not) */
	bool in_roster;	  /* an item exists; clear it to remove the item, set it to add one */
	unsigned sub;
	bool ask, approved;
	bool pending_in;
	const char *pending_status; /* must stay valid until the job is done */
	size_t n_items;		    /* read only: items in this roster now */
};

/* A pure function of the state, run on the storage thread inside the
 * write; it may change *st and returns flags for the caller. */
typedef unsigned roster_transition_fn(struct roster_state *st, const void *arg);

/* What a roster set adds to a transition: the item's name and groups
 * (copied). */
struct roster_edit {
	bool set; /* replace name and groups */
	const char *name;
	const char *const *groups;
	size_t n_groups;
};

/* The outcome of roster_update. after is NULL if there is no item now.
 * changed: the item as a client sees it changed, and ver is its new
 * version (push it, RFC 6121 §2.1.6). flags: what fn returned. */
typedef void roster_update_cb(void *ud, int rc, unsigned flags, const struct roster_item *after,
			      bool changed, const char *ver);
/* Reads user@host's state for contact, applies fn (and edit, if any),
 * writes what changed, all in one transaction. rc: STORE_OK,
 * ROSTER_LIMIT (fn added an item to a full roster; nothing written),
 * STORE_ERROR. fn and arg must stay valid until cb runs. */
void roster_update(struct store *s, void *origin, const char *host, const char *user,
		   const char *contact, roster_transition_fn *fn, const void *arg,
		   const struct roster_edit *edit, roster_update_cb *cb, void *ud);

/* The subscription state (ROSTER_SUB_* bits, 0 if no item) of contact in
 * user@host's roster: who may see the user's presence-bound data
 * (RFC 6121 §4.3.2: a contact with ROSTER_SUB_FROM). */
typedef void roster_sub_cb(void *ud, int rc, unsigned sub);
void roster_subscription(struct store *s, void *origin, const char *host, const char *user,
			 const char *contact, roster_sub_cb *cb, void *ud);

/* Most items per roster (default 1000); set once before the store is
 * used from other threads (server start). */
void roster_set_max_items(size_t n);

/* Runs cb on origin once every request submitted before it has
 * completed: effects that must follow another request's completion. */
void roster_barrier(struct store *s, void *origin, void (*cb)(void *ud), void *ud);

#endif
