/* Offline messages in SQLite (storage/offline_store.h): the schema step
 * and the jobs behind the typed functions. */
#include "storage/offline_store.h"

#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "storage/schema.h"
#include "storage/sqlite_job.h"

/* Schema step 3. id is AUTOINCREMENT so that an id is never reused, even
 * after the newest message was deleted: it is the delivery order and the
 * upper bound of a delete after delivery. claim/claimed: the session
 * delivering the row right now and since when (offline_store.h).
 * size is LENGTH(stanza), kept so the quota check reads no blobs. */
const char store_schema_offline[] =
    "CREATE TABLE offline_messages ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  host TEXT NOT NULL,"
    "  username TEXT NOT NULL,"
    "  stored INTEGER NOT NULL," /* unix time */
    "  size INTEGER NOT NULL,"
    "  stanza BLOB NOT NULL," /* serialized, default namespace jabber:client */
    "  claim INTEGER,"
    "  claimed INTEGER,"
    "  FOREIGN KEY (host, username) REFERENCES users (host, username) ON DELETE CASCADE);"
    "CREATE INDEX offline_messages_user ON offline_messages (host, username, id);";

static struct store_query q_usage =
    STORE_QUERY("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM offline_messages"
		" WHERE host = ?1 AND username = ?2");
static struct store_query q_insert =
    STORE_QUERY("INSERT INTO offline_messages (host, username, stored, size, stanza)"
		" VALUES (?1, ?2, ?3, ?4, ?5)");
static struct store_query q_claim =
    STORE_QUERY("UPDATE offline_messages SET claim = ?3, claimed = ?4"
		" WHERE host = ?1 AND username = ?2 AND (claim IS NULL OR claimed < ?5)");
static struct store_query q_claimed =
    STORE_QUERY("SELECT id, stored, stanza FROM offline_messages"
		" WHERE host = ?1 AND username = ?2 AND claim = ?3 ORDER BY id");
static struct store_query q_delete_claimed =
    STORE_QUERY("DELETE FROM offline_messages"
		" WHERE host = ?1 AND username = ?2 AND claim = ?3 AND id <= ?4");
static struct store_query q_release =
    STORE_QUERY("UPDATE offline_messages SET claim = NULL, claimed = NULL"
		" WHERE host = ?1 AND username = ?2 AND claim = ?3");

struct offline_req {
	struct store_job job; /* first: the job is the request */
	const char *host;     /* borrowed: into names[] */
	const char *user;
	/* put */
	const char *xml; /* borrowed: into names[] */
	size_t len;
	long long stamp;
	unsigned max_count;
	size_t max_bytes;
	/* claim, delete, release */
	long long claimant; /* the session id's bits */
	long long upto;
	unsigned stale_secs;
	/* results */
	struct offline_batch *batch; /* owned until handed to the callback */
	unsigned count;
	offline_put_cb *put_cb;
	offline_batch_cb *batch_cb;
	store_done_cb *done_cb;
	void *ud;
	char names[];
};

/* One allocation per request: names and the stanza included. */
static struct offline_req *req_new(const char *host, const char *user, const char *xml, size_t len)
{
	size_t hl = strlen(host) + 1, ul = strlen(user) + 1;
	struct offline_req *r = malloc(sizeof(*r) + hl + ul + len);
	if (!r)
		die_oom();
	memset(r, 0, sizeof(*r));
	memcpy(r->names, host, hl);
	memcpy(r->names + hl, user, ul);
	r->host = r->names;
	r->user = r->names + hl;
	if (len)
		memcpy(r->names + hl + ul, xml, len);
	r->xml = r->names + hl + ul;
	r->len = len;
	return r;
}

static void bind_user(sqlite3_stmt *st, const struct offline_req *r)
{
	sqlite3_bind_text(st, 1, r->host, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, r->user, -1, SQLITE_STATIC);
}

void offline_batch_free(struct offline_batch *b)
{
	if (!b)
		return;
	free(b->msgs);
	free(b->data);
	free(b);
}

/* --- put --- */

static int put_run(struct store_job *job, struct store_db *db)
{
	struct offline_req *r = (struct offline_req *)job;
	/* RFC 6121 §8.5.1: no such account: STORE_NOT_FOUND. */
	int rc = store_db_user_exists(db, r->host, r->user);
	if (rc != STORE_OK)
		return rc;

	sqlite3_stmt *st = store_stmt(db, &q_usage);
	if (!st)
		return STORE_ERROR;
	bind_user(st, r);
	if (sqlite3_step(st) != SQLITE_ROW)
		return store_db_fail(db, "offline: quota");
	long long n = sqlite3_column_int64(st, 0), bytes = sqlite3_column_int64(st, 1);
	if (n >= (long long)r->max_count || r->len > r->max_bytes ||
	    (unsigned long long)bytes > r->max_bytes - r->len)
		return OFFLINE_QUOTA;

	st = store_stmt(db, &q_insert);
	if (!st)
		return STORE_ERROR;
	bind_user(st, r);
	sqlite3_bind_int64(st, 3, r->stamp);
	sqlite3_bind_int64(st, 4, (sqlite3_int64)r->len);
	sqlite3_bind_blob(st, 5, r->len ? r->xml : "", (int)r->len, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_CONSTRAINT_FOREIGNKEY)
		return STORE_NOT_FOUND; /* deleted meanwhile by parleyctl */
	if (rc != SQLITE_DONE)
		return store_db_fail(db, "offline: store message");
	return STORE_OK;
}

static void put_done(struct store_job *job, int rc)
{
	struct offline_req *r = (struct offline_req *)job;
	r->put_cb(r->ud, rc);
	free(r);
}

void store_offline_put(struct store *s, void *origin, const char *host, const char *user,
		       const char *xml, size_t len, long long stamp, unsigned max_count,
		       size_t max_bytes, offline_put_cb *cb, void *ud)
{
	ASSERT(len <= (size_t)0x7fffffff);
	struct offline_req *r = req_new(host, user, xml, len);
	r->job.origin = origin;
	r->job.write = true;
	r->job.run = put_run;
	r->job.done = put_done;
	r->stamp = stamp;
	r->max_count = max_count;
	r->max_bytes = max_bytes;
	r->put_cb = cb;
	r->ud = ud;
	store_job_submit(s, &r->job);
}

/* --- claim --- */

static int claim_run(struct store_job *job, struct store_db *db)
{
	struct offline_req *r = (struct offline_req *)job;
	long long now = (long long)time(NULL);
	sqlite3_stmt *st = store_stmt(db, &q_claim);
	if (!st)
		return STORE_ERROR;
	bind_user(st, r);
	sqlite3_bind_int64(st, 3, r->claimant);
	sqlite3_bind_int64(st, 4, now);
	sqlite3_bind_int64(st, 5, now - (long long)r->stale_secs);
	if (sqlite3_step(st) != SQLITE_DONE)
		return store_db_fail(db, "offline: claim");

	st = store_stmt(db, &q_claimed);
	if (!st)
		return STORE_ERROR;
	bind_user(st, r);
	sqlite3_bind_int64(st, 3, r->claimant);
	/* The blobs go into one growing buffer; the pointers into it are set
	 * once it stops moving, from the offsets kept meanwhile. */
	struct offline_batch *b = calloc(1, sizeof(*b));
	if (!b)
		die_oom();
	size_t cap_msgs = 0, cap_data = 0, used = 0, *offs = NULL;
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (b->n == cap_msgs) {
			cap_msgs = cap_msgs ? 2 * cap_msgs : 16;
			struct offline_msg *m = realloc(b->msgs, cap_msgs * sizeof(*m));
			size_t *o = realloc(offs, cap_msgs * sizeof(*o));
			if (!m || !o)
				die_oom();
			b->msgs = m;
			offs = o;
		}
		size_t len = (size_t)sqlite3_column_bytes(st, 2);
		const void *blob = sqlite3_column_blob(st, 2);
		if (used + len > cap_data) {
			size_t c = cap_data ? cap_data : 4096;
			while (c < used + len)
				c *= 2;
			char *d = realloc(b->data, c);
			if (!d)
				die_oom();
			b->data = d;
			cap_data = c;
		}
		if (len)
			memcpy(b->data + used, blob, len);
		offs[b->n] = used;
		b->msgs[b->n++] = (struct offline_msg){
		    .id = sqlite3_column_int64(st, 0),
		    .stamp = sqlite3_column_int64(st, 1),
		    .len = len,
		};
		used += len;
	}
	if (rc != SQLITE_DONE) {
		free(offs);
		offline_batch_free(b);
		return store_db_fail(db, "offline: read messages");
	}
	for (size_t i = 0; i < b->n; i++)
		b->msgs[i].xml = b->data ? b->data + offs[i] : "";
	free(offs);
	r->batch = b;
	return STORE_OK;
}

static void claim_done(struct store_job *job, int rc)
{
	struct offline_req *r = (struct offline_req *)job;
	struct offline_batch *b = r->batch;
	r->batch = NULL;
	if (rc != STORE_OK) {
		/* The commit failed after run() filled the batch. */
		offline_batch_free(b);
		b = NULL;
	}
	r->batch_cb(r->ud, rc, b);
	free(r);
}

void store_offline_claim(struct store *s, void *origin, const char *host, const char *user,
			 unsigned long long claimant, unsigned stale_secs, offline_batch_cb *cb,
			 void *ud)
{
	struct offline_req *r = req_new(host, user, NULL, 0);
	r->job.origin = origin;
	r->job.write = true; /* the claim is an UPDATE */
	r->job.run = claim_run;
	r->job.done = claim_done;
	r->claimant = (long long)claimant;
	r->stale_secs = stale_secs;
	r->batch_cb = cb;
	r->ud = ud;
	store_job_submit(s, &r->job);
}

/* --- delete after delivery, release --- */

static int delete_claimed_run(struct store_job *job, struct store_db *db)
{
	struct offline_req *r = (struct offline_req *)job;
	sqlite3_stmt *st = store_stmt(db, &q_delete_claimed);
	if (!st)
		return STORE_ERROR;
	bind_user(st, r);
	sqlite3_bind_int64(st, 3, r->claimant);
	sqlite3_bind_int64(st, 4, r->upto);
	if (sqlite3_step(st) != SQLITE_DONE)
		return store_db_fail(db, "offline: delete delivered");
	return STORE_OK;
}

static int release_run(struct store_job *job, struct store_db *db)
{
	struct offline_req *r = (struct offline_req *)job;
	sqlite3_stmt *st = store_stmt(db, &q_release);
	if (!st)
		return STORE_ERROR;
	bind_user(st, r);
	sqlite3_bind_int64(st, 3, r->claimant);
	if (sqlite3_step(st) != SQLITE_DONE)
		return store_db_fail(db, "offline: release claim");
	return STORE_OK;
}

static void write_done(struct store_job *job, int rc)
{
	struct offline_req *r = (struct offline_req *)job;
	if (r->done_cb)
		r->done_cb(r->ud, rc);
	free(r);
}

static void claimed_write(struct store *s, void *origin, const char *host, const char *user,
			  unsigned long long claimant, long long upto,
			  int (*run)(struct store_job *, struct store_db *), store_done_cb *cb,
			  void *ud)
{
	struct offline_req *r = req_new(host, user, NULL, 0);
	r->job.origin = origin;
	r->job.write = true;
	r->job.run = run;
	r->job.done = write_done;
	r->claimant = (long long)claimant;
	r->upto = upto;
	r->done_cb = cb;
	r->ud = ud;
	store_job_submit(s, &r->job);
}

void store_offline_delete_claimed(struct store *s, void *origin, const char *host, const char *user,
				  unsigned long long claimant, long long upto, store_done_cb *cb,
				  void *ud)
{
	claimed_write(s, origin, host, user, claimant, upto, delete_claimed_run, cb, ud);
}

void store_offline_release(struct store *s, void *origin, const char *host, const char *user,
			   unsigned long long claimant, store_done_cb *cb, void *ud)
{
	claimed_write(s, origin, host, user, claimant, 0, release_run, cb, ud);
}

/* --- count (sync) --- */

static int count_run(struct store_job *job, struct store_db *db)
{
	struct offline_req *r = (struct offline_req *)job;
	sqlite3_stmt *st = store_stmt(db, &q_usage);
	if (!st)
		return STORE_ERROR;
	bind_user(st, r);
	if (sqlite3_step(st) != SQLITE_ROW)
		return store_db_fail(db, "offline: count");
	r->count = (unsigned)sqlite3_column_int64(st, 0);
	return STORE_OK;
}

int store_offline_count_sync(struct store *s, const char *host, const char *user, unsigned *count)
{
	struct offline_req r = {.job = {.run = count_run}, .host = host, .user = user};
	int rc = store_job_sync(s, &r.job);
	*count = rc ? 0 : r.count;
	return rc;
}
