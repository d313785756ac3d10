/* Asynchronous storage interface (DESIGN §6). The SQLite driver runs every
 * query on its own thread; writes that arrive together are committed in one
 * transaction (group commit). Completions are handed back to the thread
 * that asked, through the post function given at open (the event loop's
 * cross-thread inbox), so callbacks run on the requesting worker.
 *
 * The *_sync variants block and are for parleyctl and start-up only. */
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
	STORE_ERROR = -3,   /* database failure: answer internal-server-error / wait */
};

/* Opens (creating if needed) the database at path, applies pending
 * migrations, starts the storage thread. post may be NULL when only the
 * _sync API is used. Returns NULL and logs on failure. */
struct store *store_open(const char *path, store_post_fn *post);
void store_close(struct store *s);   /* drains pending requests, joins the thread */

/* Accounts. host: the served domain; user: prepared localpart. */
typedef void store_creds_cb(void *ud, int rc, const struct scram_creds *creds);
void store_user_get_creds(struct store *s, void *origin, const char *host, const char *user,
			  store_creds_cb *cb, void *ud);

int store_user_create_sync(struct store *s, const char *host, const char *user,
			   const struct scram_creds *creds);  /* STORE_EXISTS if present */
int store_user_set_creds_sync(struct store *s, const char *host, const char *user,
			      const struct scram_creds *creds);  /* STORE_NOT_FOUND */
int store_user_delete_sync(struct store *s, const char *host, const char *user);
int store_user_get_creds_sync(struct store *s, const char *host, const char *user,
			      struct scram_creds *out);
/* Calls fn for each user of host (host NULL: all hosts), sorted. */
int store_user_list_sync(struct store *s, const char *host,
			 void (*fn)(void *ud, const char *host, const char *user), void *ud);

/* Key/value settings of the server itself (e.g. the secret for fake salts). */
int store_meta_get_sync(struct store *s, const char *key, unsigned char *val, size_t cap,
			size_t *len);
int store_meta_set_sync(struct store *s, const char *key, const unsigned char *val, size_t len);

/* Schema version after migrations (for tests and `parleyctl check`). */
int store_schema_version(struct store *s);

#endif
