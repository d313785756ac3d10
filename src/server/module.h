/* The small server API that modules see (DESIGN §5, STYLE "Shape of a
 * module"). A module is a const table; the core registers what it lists on
 * every host and removes it at shutdown. Handlers run on the worker that
 * owns the origin session. */
#ifndef PARLEY_MODULE_H
#define PARLEY_MODULE_H

#include <stdbool.h>
#include <stddef.h>

#include "xmpp/ns.h"
#include "xmpp/stanza.h"

struct session;
struct host;
struct buf;
struct store;
struct config;

enum hook_rc { HOOK_PASS, HOOK_DONE }; /* DONE: the handler consumed ev->st */

/* What a stanza is addressed to, from the router's point of view. */
#define DEST_HOST 0x1u /* a served domain itself */
#define DEST_BARE 0x2u /* a local account's bare JID, not the sender's own */
#define DEST_FULL 0x4u /* a local full JID */
#define DEST_SELF 0x8u /* the sender's own bare JID (or no 'to' on an IQ) */
/* dest 0: another server's JID. Presence hooks run for it on the sender's
 * host when a local session sent it (the outbound half of subscriptions,
 * directed presence); nothing else runs before it leaves. */
#define DEST_REMOTE 0x0u

#define IQ_GET 0x1u
#define IQ_SET 0x2u

struct hook_ev {
	struct stanza *st;	/* owned by whoever returns HOOK_DONE */
	struct session *origin; /* the sending local session, or NULL */
	struct host *host;	/* the served host the stanza is addressed to / from */
	unsigned dest;
};

typedef enum hook_rc hook_fn(struct hook_ev *ev);

struct iq_reg {
	const char *ns;	  /* payload namespace */
	const char *name; /* payload element name */
	unsigned types;	  /* IQ_GET | IQ_SET */
	unsigned dests;	  /* DEST_* it serves */
	hook_fn *fn;
};

/* Hook points for what is not an IQ with a registered payload. */
enum hook_point {
	/* Every stanza with a 'to' that is routed between two addresses
	 * (not a session's own broadcast presence, not an answer to the
	 * asking session itself), local or remote, before every other hook
	 * and IQ handler; skipped for stanzas marked unfiltered. ev->host is
	 * the destination's host, or for a remote destination the sender's
	 * (NULL if neither is served); ev->dest is 0 for a remote one. A
	 * handler that consumes ev->st returns HOOK_DONE. */
	HP_FILTER,
	HP_MESSAGE, /* every message before delivery, any dest */
	/* Every presence with a 'to' (directed, subscriptions, probes) before
	 * delivery; for a local sender ev->origin is set. Not fired for
	 * broadcast presence (no 'to'): see HP_PRESENCE_BROADCAST. */
	HP_PRESENCE,
	HP_IQ, /* IQs with no registered payload handler */
	/* A local session's broadcast presence (no 'to'; available or
	 * unavailable), after the core recorded its availability and priority
	 * and before it delivers it to the account's own resources (RFC 6121
	 * §4.2.2, §4.5.2). Observe only: handlers must not consume ev->st
	 * (copy it with stanza_dup) and must return HOOK_PASS. Also fired with
	 * an unavailable presence when an available session ends. */
	HP_PRESENCE_BROADCAST,
	/* A local session's broadcast presence (no 'to'), before
	 * HP_PRESENCE_BROADCAST and before anyone receives it: handlers may
	 * change ev->st in place (add or replace payloads), never consume
	 * it; return HOOK_PASS. */
	HP_PRESENCE_OUT,
	/* A message of type chat or normal to a local bare JID (or a full JID
	 * treated as bare) with no available resource (RFC 6121 §8.5.2.2.1).
	 * A handler that stores it returns HOOK_DONE; otherwise the sender
	 * gets service-unavailable. */
	HP_MESSAGE_OFFLINE,
	/* After resource binding (ev->st NULL, ev->origin the session). */
	HP_SESSION_BOUND,
	/* The session is being freed (ev->st NULL): release per-session state. */
	HP_SESSION_FREE,
	/* An account was deleted (its stored data is gone): ev->st is a
	 * stanza whose 'from' is the account's bare JID, observe only;
	 * ev->origin NULL. Forget what is kept in memory for it. */
	HP_ACCOUNT_REMOVED,
	HP_COUNT
};

struct hook_reg {
	enum hook_point point;
	int prio; /* higher runs first */
	hook_fn *fn;
};

struct xep_ref {
	int xep; /* XEP number; 0 ends the list */
	const char *version;
	const char *status; /* "complete", "partial" */
};

struct disco_identity {
	const char *category, *type, *name;
};

struct module {
	const char *name;
	const char *const *features;	       /* disco#info features, NULL-terminated */
	const struct disco_identity *identity; /* server identity contributed, or NULL */
	const struct iq_reg *iqs;	       /* { 0 }-terminated */
	const struct hook_reg *hooks;	       /* { .fn = NULL }-terminated */
	const struct xep_ref *xeps;	       /* { 0 }-terminated */
	/* Stream features offered after authentication, as XML (e.g.
	 * "<ver xmlns='urn:xmpp:features:rosterver'/>"), NULL-terminated. */
	const char *const *stream_features;
	/* Called once at start, after the store is open and before the
	 * workers run (may use the store's _sync calls); nonzero refuses to
	 * start. And once at the end, after the workers and the store have
	 * stopped. Either may be NULL. */
	int (*start)(struct store *st, const struct config *cfg);
	void (*stop)(void);
};

/* --- What handlers may call --- */

/* Routes a stanza (consumes it on every path). origin: the local session
 * it came from, or NULL for stanzas the server itself emits. */
void route(struct stanza *st, struct session *origin);
/* Turns st into its error reply and routes it (consumes st); for answers
 * given later, from a store completion, when there is no hook_ev. */
void route_error(struct stanza *st, enum st_err cond, const char *text);
/* Turns ev->st into an empty IQ result and returns it, still owned by ev,
 * for the handler to add a payload; then call ev_send(). */
struct stanza *ev_result(struct hook_ev *ev);
/* Sends ev->st back (consumes it). */
void ev_send(struct hook_ev *ev);
/* Answers ev->st with an error (consumes it). */
void ev_error(struct hook_ev *ev, enum st_err cond, const char *text);
/* Shorthand: empty result, sent. */
void ev_reply_result(struct hook_ev *ev);

/* Does owner's account block other (XEP-0191, mod_blocking)? For stanzas
 * that reach a user without being routed (offline messages, subscription
 * requests that waited): the routing filter never saw them. */
bool blocking_blocks(const struct jid *owner, const struct jid *other);

/* --- Sessions, for modules ---
 * A session pointer is only valid on its own worker, inside a handler
 * whose ev->origin it is, or inside a session_call() callback. */
enum sess_slot {
	SLOT_ROSTER,
	SLOT_PRESENCE,
	SLOT_OFFLINE,
	SLOT_BLOCKING,
	SLOT_AVATAR,
	SLOT_MAX = 8
};
/* Per-session state of a module (initially NULL; free it in HP_SESSION_FREE). */
void **session_slot(struct session *s, enum sess_slot k);
const struct jid *session_jid(const struct session *s); /* full JID once bound */
bool session_available(const struct session *s);
int session_priority(const struct session *s);
struct host *session_host(const struct session *s);
/* Sends a stanza to this session only (consumes it). */
void session_deliver(struct session *s, struct stanza *st);

/* A bound resource as the shared registry knows it (copied out). */
struct resource_ref {
	unsigned long long sess_id;
	void *priv[2]; /* the worker and the session; use session_call() */
	int priority;
	bool available;
};
/* The bound resources of a local bare JID (up to cap); returns how many
 * there are. */
size_t resources_of(const struct jid *bare, struct resource_ref *out, size_t cap);
/* Runs fn(s, arg) on the worker that owns r's session, if it still exists;
 * otherwise fn(NULL, arg), so arg is always released by fn. */
void session_call(const struct resource_ref *r, void (*fn)(struct session *s, void *arg),
		  void *arg);

/* --- Storage, for modules --- */
struct store;
struct store *server_store(void);
/* The origin to give store calls so completions run on this worker; NULL
 * off the workers (after the store is closed), where nothing may be stored. */
void *worker_origin(void);

/* --- Accounts --- */
#define ACCOUNT_PASSWORD_MAX 1023 /* bytes, after OpaqueString preparation */
enum account_pw_op { ACCOUNT_PW_CREATE, ACCOUNT_PW_CHANGE };
/* Beyond enum store_rc: ACCOUNT_KDF_MAX key derivations are running
 * already, server-wide; nothing was written (answer resource-constraint). */
#define ACCOUNT_BUSY	(-30)
#define ACCOUNT_KDF_MAX 8
/* Creates an account (ACCOUNT_PW_CREATE; with invite, the SHA-256 of an
 * invitation token it uses up) or replaces its password, deriving the
 * SCRAM keys off the event loop (account.c). password: prepared
 * (sasl_prep_password). cb runs on this worker with the store's rc
 * (STORE_EXISTS, STORE_NOT_FOUND, STORE_INVITE_INVALID, ...). Workers only. */
void account_password_write(enum account_pw_op op, const char *host, const char *user,
			    const char *password, const unsigned char *invite,
			    void (*cb)(void *ud, int rc), void *ud);
/* A per-account rate limit shared by all workers: true if bare may do
 * `what` once more this minute (at most per_minute times). */
bool account_rate(const struct jid *bare, const char *what, unsigned per_minute);
/* After an account was deleted from the store: runs HP_ACCOUNT_REMOVED. */
void account_removed(struct host *h, const struct jid *bare);
/* Closes every session of the bare JID with a stream error (RFC 6120
 * §4.9.3), e.g. not-authorized once the account is gone. */
void account_kick(const struct jid *bare, const char *cond, const char *text);

/* Server facts for modules. */
const char *host_domain(const struct host *h);
/* Appends the server's whole disco#info to query: identity, features
 * and the XEP-0157 contact addresses form. */
void host_disco_info(const struct host *h, struct arena *a, struct xml_el *query);
/* "node#ver" of the server's entity capabilities (XEP-0115 §6.2). */
const char *host_caps_node(const struct host *h);
/* Appends the disco#info features of host h to el (as <feature var=.../>). */
void host_disco_features(const struct host *h, struct arena *a, struct xml_el *query);

extern const struct module *const parley_modules[];

#endif
