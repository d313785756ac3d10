/* Asynchronous storage interface (DESIGN §6). The SQLite driver runs every
 * query on its own thread; writes that arrive together are committed in one
 * transaction (group commit). Completions are handed back to the thread
 * that asked, through the post function given at open (the event loop's
 * cross-thread inbox), so callbacks run on the requesting worker.
 *
 * This header is backend-neutral on purpose: a PostgreSQL driver will
 * implement it too. SQLite-backed feature code writes its queries as jobs
 * (storage/sqlite_job.h) and exposes typed functions like the ones below.
 *
 * Every request is queued in order: a request sees the effect of every
 * request submitted before it, from any thread. A completion runs only
 * after its write is durable (synchronous=FULL), so an ack may depend on it.
 *
 * The *_sync variants block and are for parleyctl and start-up only; they
 * go through the same queue, so there is exactly one connection. Never call
 * them from a worker's loop or from a job running on the storage thread. */
#ifndef PARLEY_STORE_H
#define PARLEY_STORE_H

#include <stdbool.h>
#include <stddef.h>

#include "xmpp/sasl/sasl.h"

struct store;

/* Runs fn(arg) on the thread that owns origin. Must be thread-safe. */
typedef void store_post_fn(void *origin, void (*fn)(void *arg), void *arg);

enum store_rc {
	STORE_OK = 0,
	STORE_NOT_FOUND = -1,
	STORE_EXISTS = -2,
	STORE_ERROR = -3, /* database failure: answer internal-server-error / wait */
};

/* Opens (creating if needed) the database at path, applies pending
 * migrations, starts the storage thread. post may be NULL when only the
 * _sync API is used. Returns NULL and logs on failure, including a
 * database whose schema is newer than this binary. */
struct store *store_open(const char *path, store_post_fn *post);
/* Waits until every request submitted before it has run and its
 * completion has been posted (shutdown: drain before close). */
void store_barrier(struct store *s);
void store_close(struct store *s); /* drains pending requests, joins the thread */

/* Completion of an asynchronous write: rc is an enum store_rc. */
typedef void store_done_cb(void *ud, int rc);

/* Accounts. host: the served domain; user: prepared localpart.
 * In struct scram_creds an entry with iterations 0 is absent: only the
 * others are stored, and absent ones read back zeroed. */
typedef void store_creds_cb(void *ud, int rc, const struct scram_creds *creds);
/* creds is NULL unless rc is STORE_OK; it is valid during the call only. */
void store_user_get_creds(struct store *s, void *origin, const char *host, const char *user,
			  store_creds_cb *cb, void *ud);
/* Asynchronous writes for in-band registration and password changes
 * (XEP-0077); rc as for the _sync variants. Arguments are copied. */
void store_user_create(struct store *s, void *origin, const char *host, const char *user,
		       const struct scram_creds *creds, store_done_cb *cb, void *ud);
void store_user_set_creds(struct store *s, void *origin, const char *host, const char *user,
			  const struct scram_creds *creds, store_done_cb *cb, void *ud);
void store_user_delete(struct store *s, void *origin, const char *host, const char *user,
		       store_done_cb *cb, void *ud);

/* Invitations to register (XEP-0445): the server keeps only the SHA-256
 * of each token. STORE_INVITE_INVALID: unknown, expired or used. */
#define STORE_INVITE_HASH    32
#define STORE_INVITE_INVALID (-11)
/* Creates the account and uses up the invitation in one transaction:
 * STORE_EXISTS (the invitation stays), STORE_INVITE_INVALID. */
void store_user_create_invited(struct store *s, void *origin, const char *host, const char *user,
			       const struct scram_creds *creds,
			       const unsigned char hash[STORE_INVITE_HASH], store_done_cb *cb,
			       void *ud);
/* STORE_OK if the invitation is valid now for host (it stays valid). */
void store_invite_check(struct store *s, void *origin, const char *host,
			const unsigned char hash[STORE_INVITE_HASH], store_done_cb *cb, void *ud);
/* Stores an invitation valid until expires (unix time); also drops the
 * expired ones. */
int store_invite_create_sync(struct store *s, const char *host,
			     const unsigned char hash[STORE_INVITE_HASH], long long expires);

int store_user_create_sync(struct store *s, const char *host, const char *user,
			   const struct scram_creds *creds); /* STORE_EXISTS if present */
int store_user_set_creds_sync(struct store *s, const char *host, const char *user,
			      const struct scram_creds *creds); /* STORE_NOT_FOUND */
/* Deletes the account and, by cascade, everything stored for it. STORE_NOT_FOUND. */
int store_user_delete_sync(struct store *s, const char *host, const char *user);
int store_user_get_creds_sync(struct store *s, const char *host, const char *user,
			      struct scram_creds *out);
/* Calls fn for each user of host (host NULL: all hosts), sorted by host
 * then user, on the caller's thread (fn may call other _sync functions).
 * Users are fetched a page at a time, so memory stays bounded. */
int store_user_list_sync(struct store *s, const char *host,
			 void (*fn)(void *ud, const char *host, const char *user), void *ud);

/* Key/value settings of the server itself (e.g. the secret for fake salts).
 * get copies at most cap bytes and sets *len to the full size of the value,
 * as snprintf does: *len > cap means it was truncated. */
int store_meta_get_sync(struct store *s, const char *key, unsigned char *val, size_t cap,
			size_t *len);
int store_meta_set_sync(struct store *s, const char *key, const unsigned char *val, size_t len);

/* Schema version after migrations (for tests and `parleyctl check`). */
int store_schema_version(struct store *s);
/* The version this binary migrates to. */
int store_schema_latest(void);

/* Counters since open, for metrics and tests. commits < writes shows
 * group commit at work. */
struct store_stats {
	unsigned long long requests; /* requests executed */
	unsigned long long writes;   /* of which write requests */
	unsigned long long commits;  /* write transactions committed */
	unsigned long long errors;   /* requests that ended with STORE_ERROR */
};
void store_stats(struct store *s, struct store_stats *out);

#endif
