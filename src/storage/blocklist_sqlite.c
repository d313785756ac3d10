/* SQLite backend of storage/blocklist_store.h. */
#include "storage/blocklist_store.h"
#include "storage/schema.h"
#include "storage/sqlite_job.h"

#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/log.h"

/* Schema step 5 (sqlite.c's migrations). The primary key starts with
 * (host, username), so it also serves the cascading delete from users. */
const char store_schema_blocklist[] =
    /* XEP-0191: one row per blocked JID. */
    "CREATE TABLE blocklist ("
    "  host TEXT NOT NULL,"
    "  username TEXT NOT NULL,"
    "  jid TEXT NOT NULL," /* normalized; bare, full, domain or domain/resource */
    "  PRIMARY KEY (host, username, jid),"
    "  FOREIGN KEY (host, username) REFERENCES users (host, username) ON DELETE CASCADE);";

static struct store_query q_add =
    STORE_QUERY("INSERT INTO blocklist (host, username, jid) VALUES (?1, ?2, ?3)"
		" ON CONFLICT DO NOTHING");
static struct store_query q_remove =
    STORE_QUERY("DELETE FROM blocklist WHERE host = ?1 AND username = ?2 AND jid = ?3");
static struct store_query q_list =
    STORE_QUERY("SELECT jid FROM blocklist WHERE host = ?1 AND username = ?2");
static struct store_query q_remove_all =
    STORE_QUERY("DELETE FROM blocklist WHERE host = ?1 AND username = ?2");
static struct store_query q_count =
    STORE_QUERY("SELECT count(*) FROM blocklist WHERE host = ?1 AND username = ?2");
static struct store_query q_load =
    STORE_QUERY("SELECT host, username, jid FROM blocklist ORDER BY host, username, jid");

struct bl_req {
	struct store_job job; /* first: the job is the request */
	char *host, *user;
	enum blocklist_op op;
	char **jids; /* owned copies */
	size_t n, max;
	bool *changed; /* per jid (REMOVE_ALL: per listed row) */
	blocklist_change_cb *cb, *apply;
	void *ud;
	struct buf out; /* load / REMOVE_ALL: NUL-separated strings */
	size_t n_out;
};

static void bind_account(sqlite3_stmt *st, const struct bl_req *r)
{
	sqlite3_bind_text(st, 1, r->host, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, r->user, -1, SQLITE_STATIC);
}

static int collect_all(struct store_db *db, struct bl_req *r)
{
	sqlite3_stmt *st = store_stmt(db, &q_list);
	if (!st)
		return STORE_ERROR;
	bind_account(st, r);
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *j = (const char *)sqlite3_column_text(st, 0);
		if (!j)
			continue;
		buf_add(&r->out, j, strlen(j) + 1);
		r->n_out++;
	}
	return rc == SQLITE_DONE ? STORE_OK : store_db_fail(db, "list blocklist");
}

static int change_run(struct store_job *job, struct store_db *db)
{
	struct bl_req *r = (struct bl_req *)job;
	int rc = store_db_user_exists(db, r->host, r->user);
	if (rc != STORE_OK)
		return rc;
	sqlite3_stmt *st;
	if (r->op == BLOCKLIST_REMOVE_ALL) {
		if ((rc = collect_all(db, r)) != STORE_OK)
			return rc;
		if (!(st = store_stmt(db, &q_remove_all)))
			return STORE_ERROR;
		bind_account(st, r);
		return sqlite3_step(st) == SQLITE_DONE ? STORE_OK
						       : store_db_fail(db, "clear blocklist");
	}
	struct store_query *q = r->op == BLOCKLIST_ADD ? &q_add : &q_remove;
	for (size_t i = 0; i < r->n; i++) {
		if (!(st = store_stmt(db, q)))
			return STORE_ERROR;
		bind_account(st, r);
		sqlite3_bind_text(st, 3, r->jids[i], -1, SQLITE_STATIC);
		if (sqlite3_step(st) != SQLITE_DONE)
			return store_db_fail(db, "change blocklist");
		r->changed[i] = sqlite3_changes(store_db_handle(db)) > 0;
	}
	if (r->op == BLOCKLIST_ADD) {
		if (!(st = store_stmt(db, &q_count)))
			return STORE_ERROR;
		bind_account(st, r);
		if (sqlite3_step(st) != SQLITE_ROW)
			return store_db_fail(db, "count blocklist");
		if ((size_t)sqlite3_column_int64(st, 0) > r->max)
			return BLOCKLIST_LIMIT; /* rolled back */
	}
	return STORE_OK;
}

static void req_free(struct bl_req *r)
{
	for (size_t i = 0; i < r->n; i++)
		free(r->jids[i]);
	free(r->jids);
	free(r->changed);
	free(r->host);
	free(r->user);
	buf_free(&r->out);
	free(r);
}

/* Calls fn with the JIDs the change actually added or removed. */
static void with_changed(struct bl_req *r, int rc, blocklist_change_cb *fn)
{
	size_t n = r->op == BLOCKLIST_REMOVE_ALL ? r->n_out : r->n, k = 0;
	const char **v = calloc(n + 1, sizeof(*v));
	if (!v)
		die_oom();
	if (rc == STORE_OK && r->op == BLOCKLIST_REMOVE_ALL) {
		const char *p = buf_head(&r->out);
		for (size_t i = 0; i < r->n_out; i++, p += strlen(p) + 1)
			v[k++] = p;
	} else if (rc == STORE_OK) {
		for (size_t i = 0; i < r->n; i++)
			if (r->changed[i])
				v[k++] = r->jids[i];
	}
	fn(r->ud, rc, v, k);
	free(v);
}

static void change_committed(struct store_job *job)
{
	struct bl_req *r = (struct bl_req *)job;
	with_changed(r, STORE_OK, r->apply);
}

static void change_done(struct store_job *job, int rc)
{
	struct bl_req *r = (struct bl_req *)job;
	with_changed(r, rc, r->cb);
	req_free(r);
}

void store_blocklist_change(struct store *s, void *origin, const char *host, const char *user,
			    enum blocklist_op op, const char *const *jids, size_t n, size_t max,
			    blocklist_change_cb *apply, blocklist_change_cb *cb, void *ud)
{
	struct bl_req *r = calloc(1, sizeof(*r));
	if (!r)
		die_oom();
	r->host = strdup(host);
	r->user = strdup(user);
	r->op = op;
	r->max = max;
	r->cb = cb;
	r->apply = apply;
	r->ud = ud;
	if (op == BLOCKLIST_REMOVE_ALL)
		n = 0;
	r->n = n;
	r->jids = calloc(n + 1, sizeof(*r->jids));
	r->changed = calloc(n + 1, sizeof(*r->changed));
	if (!r->host || !r->user || !r->jids || !r->changed)
		die_oom();
	for (size_t i = 0; i < n; i++)
		if (!(r->jids[i] = strdup(jids[i])))
			die_oom();
	r->job.origin = origin;
	r->job.write = true;
	r->job.run = change_run;
	r->job.done = change_done;
	if (apply)
		r->job.committed = change_committed;
	store_job_submit(s, &r->job);
}

static int load_run(struct store_job *job, struct store_db *db)
{
	struct bl_req *r = (struct bl_req *)job;
	sqlite3_stmt *st = store_stmt(db, &q_load);
	if (!st)
		return STORE_ERROR;
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		for (int c = 0; c < 3; c++) {
			const char *v = (const char *)sqlite3_column_text(st, c);
			buf_add(&r->out, v ? v : "", (v ? strlen(v) : 0) + 1);
		}
		r->n_out++;
	}
	return rc == SQLITE_DONE ? STORE_OK : store_db_fail(db, "load blocklists");
}

int store_blocklist_load_sync(struct store *s,
			      void (*fn)(void *ud, const char *host, const char *user,
					 const char *jid),
			      void *ud)
{
	struct bl_req r = {.job = {.run = load_run}};
	int rc = store_job_sync(s, &r.job);
	if (rc == STORE_OK) {
		const char *p = buf_head(&r.out);
		for (size_t i = 0; i < r.n_out; i++) {
			const char *h = p, *u = h + strlen(h) + 1, *j = u + strlen(u) + 1;
			fn(ud, h, u, j);
			p = j + strlen(j) + 1;
		}
	}
	buf_free(&r.out);
	return rc;
}
