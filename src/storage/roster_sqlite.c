/* Rosters and subscriptions in SQLite (roster_store.h): schema step 2 and
 * the jobs behind roster_read and roster_update. The subscription rules
 * themselves live in mod_roster; a job only reads one contact's state,
 * hands it to the module's transition function and writes back what
 * changed, in one savepoint. */
#include "storage/roster_store.h"
#include "storage/schema.h"
#include "storage/sqlite_job.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/arena.h"
#include "core/log.h"

/* Removed contacts remembered per user for roster versioning; beyond
 * that, a client holding an older version gets the whole roster. */
#define ROSTER_TOMBSTONES_MAX 1000

const char store_schema_roster[] =
    /* The version counter of each roster (RFC 6121 §2.6). epoch is chosen
     * at random when the row is made, so that a version string from an
     * earlier account of the same name (or another database) never
     * matches. floor: removals before it were forgotten, so deltas start
     * there at the earliest. */
    "CREATE TABLE roster_version ("
    "  host TEXT NOT NULL,"
    "  username TEXT NOT NULL,"
    "  epoch INTEGER NOT NULL,"
    "  ver INTEGER NOT NULL,"
    "  floor INTEGER NOT NULL DEFAULT 0,"
    "  PRIMARY KEY (host, username),"
    "  FOREIGN KEY (host, username) REFERENCES users (host, username) ON DELETE CASCADE);"
    /* Roster items (RFC 6121 §2.1.2) with their subscription state
     * (Appendix A): ask is "Pending Out", approved a pre-approval (§3.4).
     * ver: the roster version at which the item last changed. */
    "CREATE TABLE roster_items ("
    "  host TEXT NOT NULL,"
    "  username TEXT NOT NULL,"
    "  contact TEXT NOT NULL,"
    "  name TEXT,"
    "  subscription TEXT NOT NULL DEFAULT 'none'"
    "    CHECK (subscription IN ('none', 'to', 'from', 'both')),"
    "  ask INTEGER NOT NULL DEFAULT 0 CHECK (ask IN (0, 1)),"
    "  approved INTEGER NOT NULL DEFAULT 0 CHECK (approved IN (0, 1)),"
    "  ver INTEGER NOT NULL,"
    "  PRIMARY KEY (host, username, contact),"
    "  FOREIGN KEY (host, username) REFERENCES users (host, username) ON DELETE CASCADE);"
    "CREATE INDEX roster_items_by_ver ON roster_items (host, username, ver);"
    "CREATE TABLE roster_groups ("
    "  host TEXT NOT NULL,"
    "  username TEXT NOT NULL,"
    "  contact TEXT NOT NULL,"
    "  grp TEXT NOT NULL,"
    "  PRIMARY KEY (host, username, contact, grp),"
    "  FOREIGN KEY (host, username, contact) REFERENCES roster_items (host, username, contact)"
    "    ON DELETE CASCADE);"
    /* "Pending In" (RFC 6121 §3.1.3): a subscription request the user has
     * not answered, kept whether or not the requester is in the roster,
     * and delivered again when the user next becomes available. */
    "CREATE TABLE roster_pending_in ("
    "  host TEXT NOT NULL,"
    "  username TEXT NOT NULL,"
    "  contact TEXT NOT NULL,"
    "  status TEXT,"		   /* the request's <status/>, if any */
    "  received INTEGER NOT NULL," /* unix time */
    "  PRIMARY KEY (host, username, contact),"
    "  FOREIGN KEY (host, username) REFERENCES users (host, username) ON DELETE CASCADE);"
    /* Items removed, and at which version: what a client with an older
     * version must be told to delete (RFC 6121 §2.6.3). */
    "CREATE TABLE roster_removed ("
    "  host TEXT NOT NULL,"
    "  username TEXT NOT NULL,"
    "  contact TEXT NOT NULL,"
    "  ver INTEGER NOT NULL,"
    "  PRIMARY KEY (host, username, contact),"
    "  FOREIGN KEY (host, username) REFERENCES users (host, username) ON DELETE CASCADE);"
    "CREATE INDEX roster_removed_by_ver ON roster_removed (host, username, ver);";

/* ---- queries ---- */

static struct store_query q_version =
    STORE_QUERY("SELECT epoch, ver, floor FROM roster_version WHERE host = ?1 AND username = ?2");
static struct store_query q_version_bump =
    STORE_QUERY("INSERT INTO roster_version (host, username, epoch, ver, floor)"
		" VALUES (?1, ?2, abs(random() % 4294967296), 1, 0)"
		" ON CONFLICT (host, username) DO UPDATE SET ver = ver + 1"
		" RETURNING epoch, ver");
static struct store_query q_items_all =
    STORE_QUERY("SELECT contact, name, subscription, ask, approved, ver FROM roster_items"
		" WHERE host = ?1 AND username = ?2 ORDER BY contact");
static struct store_query q_items_since =
    STORE_QUERY("SELECT contact, name, subscription, ask, approved, ver FROM roster_items"
		" WHERE host = ?1 AND username = ?2 AND ver > ?3 ORDER BY contact");
static struct store_query q_item_one =
    STORE_QUERY("SELECT contact, name, subscription, ask, approved, ver FROM roster_items"
		" WHERE host = ?1 AND username = ?2 AND contact = ?3");
static struct store_query q_groups_all =
    STORE_QUERY("SELECT contact, grp FROM roster_groups WHERE host = ?1 AND username = ?2"
		" ORDER BY contact, grp");
static struct store_query q_groups_one =
    STORE_QUERY("SELECT contact, grp FROM roster_groups"
		" WHERE host = ?1 AND username = ?2 AND contact = ?3 ORDER BY grp");
static struct store_query q_removed_since =
    STORE_QUERY("SELECT contact, ver FROM roster_removed WHERE host = ?1 AND username = ?2"
		" AND ver > ?3 ORDER BY ver");
static struct store_query q_pending_all =
    STORE_QUERY("SELECT contact, status FROM roster_pending_in WHERE host = ?1 AND username = ?2"
		" ORDER BY received, contact");
static size_t max_items = 1000;

void roster_set_max_items(size_t n)
{
	max_items = n;
}

static struct store_query q_user_exists =
    STORE_QUERY("SELECT (SELECT count(*) FROM roster_items WHERE host = ?1 AND username = ?2)"
		" FROM users WHERE host = ?1 AND username = ?2");
static struct store_query q_pending_one = STORE_QUERY(
    "SELECT status FROM roster_pending_in WHERE host = ?1 AND username = ?2 AND contact = ?3");
static struct store_query q_item_insert = STORE_QUERY(
    "INSERT INTO roster_items (host, username, contact, name, subscription, ask, approved, ver)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
static struct store_query q_item_update =
    STORE_QUERY("UPDATE roster_items SET subscription = ?4, ask = ?5, approved = ?6, ver = ?7"
		" WHERE host = ?1 AND username = ?2 AND contact = ?3");
static struct store_query q_item_rename = STORE_QUERY(
    "UPDATE roster_items SET name = ?4 WHERE host = ?1 AND username = ?2 AND contact = ?3");
static struct store_query q_item_delete =
    STORE_QUERY("DELETE FROM roster_items WHERE host = ?1 AND username = ?2 AND contact = ?3");
static struct store_query q_groups_delete =
    STORE_QUERY("DELETE FROM roster_groups WHERE host = ?1 AND username = ?2 AND contact = ?3");
static struct store_query q_group_insert = STORE_QUERY(
    "INSERT OR IGNORE INTO roster_groups (host, username, contact, grp) VALUES (?1, ?2, ?3, ?4)");
static struct store_query q_removed_put =
    STORE_QUERY("INSERT INTO roster_removed (host, username, contact, ver) VALUES (?1, ?2, ?3, ?4)"
		" ON CONFLICT (host, username, contact) DO UPDATE SET ver = excluded.ver");
static struct store_query q_removed_forget =
    STORE_QUERY("DELETE FROM roster_removed WHERE host = ?1 AND username = ?2 AND contact = ?3");
static struct store_query q_removed_cut =
    STORE_QUERY("SELECT ver FROM roster_removed WHERE host = ?1 AND username = ?2"
		" ORDER BY ver DESC LIMIT 1 OFFSET ?3");
static struct store_query q_removed_prune =
    STORE_QUERY("DELETE FROM roster_removed WHERE host = ?1 AND username = ?2 AND ver <= ?3");
static struct store_query q_floor_set =
    STORE_QUERY("UPDATE roster_version SET floor = ?3 WHERE host = ?1 AND username = ?2");
static struct store_query q_pending_put =
    STORE_QUERY("INSERT INTO roster_pending_in (host, username, contact, status, received)"
		" VALUES (?1, ?2, ?3, ?4, ?5)"
		" ON CONFLICT (host, username, contact) DO UPDATE SET status = excluded.status");
static struct store_query q_pending_delete =
    STORE_QUERY("DELETE FROM roster_pending_in WHERE host = ?1 AND username = ?2 AND contact = ?3");

/* ---- helpers ---- */

static const char *const sub_names[4] = {"none", "to", "from", "both"};

static unsigned sub_parse(const unsigned char *s)
{
	for (unsigned i = 0; i < 4; i++)
		if (s && !strcmp((const char *)s, sub_names[i]))
			return i; /* the order matches the ROSTER_SUB_* bits */
	return 0;
}

static const char *col_dup(struct arena *a, sqlite3_stmt *st, int i)
{
	const unsigned char *t = sqlite3_column_text(st, i);
	return t ? arena_strndup(a, (const char *)t, (size_t)sqlite3_column_bytes(st, i)) : NULL;
}

/* "epoch-ver"; "0" for a roster that never changed. */
static const char *ver_string(struct arena *a, long long epoch, long long ver)
{
	char b[48];
	if (!ver)
		snprintf(b, sizeof(b), "0");
	else
		snprintf(b, sizeof(b), "%llx-%lld", (unsigned long long)epoch, ver);
	return arena_strdup(a, b);
}

static bool ver_parse(const char *s, long long *epoch, long long *ver)
{
	if (!strcmp(s, "0")) {
		*epoch = 0;
		*ver = 0;
		return true;
	}
	char *end;
	unsigned long long e = strtoull(s, &end, 16);
	if (end == s || *end != '-')
		return false;
	const char *v = end + 1;
	long long n = strtoll(v, &end, 10);
	if (end == v || *end || n <= 0)
		return false;
	*epoch = (long long)e;
	*ver = n;
	return true;
}

static void bind_user(sqlite3_stmt *st, const char *host, const char *user)
{
	sqlite3_bind_text(st, 1, host, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, user, -1, SQLITE_STATIC);
}

/* A growable array of items, memory in the job's arena except the array
 * itself (malloc, freed with the job). */
struct item_vec {
	struct roster_item *v;
	size_t n, cap;
};

static struct roster_item *item_push(struct item_vec *iv)
{
	if (iv->n == iv->cap) {
		size_t cap = iv->cap ? iv->cap * 2 : 16;
		struct roster_item *p = realloc(iv->v, cap * sizeof(*p));
		if (!p)
			die_oom();
		iv->v = p;
		iv->cap = cap;
	}
	struct roster_item *it = &iv->v[iv->n++];
	memset(it, 0, sizeof(*it));
	return it;
}

static void item_from_row(struct arena *a, sqlite3_stmt *st, struct roster_item *it)
{
	it->jid = col_dup(a, st, 0);
	it->name = col_dup(a, st, 1);
	it->sub = sub_parse(sqlite3_column_text(st, 2));
	it->ask = sqlite3_column_int(st, 3) != 0;
	it->approved = sqlite3_column_int(st, 4) != 0;
	it->seq = (unsigned long long)sqlite3_column_int64(st, 5);
}

static void groups_flush(struct arena *a, struct roster_item *it, const char **buf, size_t nb)
{
	if (!it || !nb)
		return;
	const char **g = arena_alloc(a, nb * sizeof(*g));
	memcpy(g, buf, nb * sizeof(*g));
	it->groups = (const char *const *)g;
	it->n_groups = nb;
}

/* Fills each item's groups from a (contact, grp) cursor sorted by
 * contact; items are sorted by contact too (BINARY collation orders as
 * strcmp does). */
static int groups_merge(struct store_db *db, struct arena *a, sqlite3_stmt *st,
			struct roster_item *items, size_t n)
{
	struct roster_item *cur = NULL;
	const char **buf = NULL;
	size_t i = 0, nb = 0, capb = 0;
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *c = (const char *)sqlite3_column_text(st, 0);
		while (i < n && strcmp(items[i].jid, c) < 0)
			i++;
		if (i == n)
			break;
		if (strcmp(items[i].jid, c))
			continue; /* groups of an item not asked for */
		if (cur != &items[i]) {
			groups_flush(a, cur, buf, nb);
			cur = &items[i];
			nb = 0;
		}
		if (nb == capb) {
			capb = capb ? capb * 2 : 8;
			const char **p = realloc(buf, capb * sizeof(*p));
			if (!p)
				die_oom();
			buf = p;
		}
		buf[nb++] = col_dup(a, st, 1);
	}
	groups_flush(a, cur, buf, nb);
	free(buf);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return store_db_fail(db, "read roster groups");
	return STORE_OK;
}

/* ---- roster_read ---- */

struct read_req {
	struct store_job job;
	const char *host, *user, *since; /* into names[] */
	unsigned flags;
	roster_view_cb *cb;
	void *ud;
	struct arena *a;
	struct item_vec items;
	struct roster_pending *pending;
	size_t n_pending, cap_pending;
	struct roster_view view;
	char names[];
};

static int read_items(struct store_db *db, struct read_req *r, long long since)
{
	sqlite3_stmt *st = store_stmt(db, since >= 0 ? &q_items_since : &q_items_all);
	if (!st)
		return STORE_ERROR;
	bind_user(st, r->host, r->user);
	if (since >= 0)
		sqlite3_bind_int64(st, 3, since);
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		item_from_row(r->a, st, item_push(&r->items));
	if (rc != SQLITE_DONE)
		return store_db_fail(db, "read roster");
	if (!r->items.n)
		return STORE_OK;
	st = store_stmt(db, &q_groups_all);
	if (!st)
		return STORE_ERROR;
	bind_user(st, r->host, r->user);
	return groups_merge(db, r->a, st, r->items.v, r->items.n);
}

static int read_removed(struct store_db *db, struct read_req *r, long long since)
{
	sqlite3_stmt *st = store_stmt(db, &q_removed_since);
	if (!st)
		return STORE_ERROR;
	bind_user(st, r->host, r->user);
	sqlite3_bind_int64(st, 3, since);
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct roster_item *it = item_push(&r->items);
		it->jid = col_dup(r->a, st, 0);
		it->removed = true;
		it->seq = (unsigned long long)sqlite3_column_int64(st, 1);
	}
	if (rc != SQLITE_DONE)
		return store_db_fail(db, "read removed roster items");
	return STORE_OK;
}

static int by_seq(const void *a, const void *b)
{
	const struct roster_item *x = a, *y = b;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int read_pending(struct store_db *db, struct read_req *r)
{
	sqlite3_stmt *st = store_stmt(db, &q_pending_all);
	if (!st)
		return STORE_ERROR;
	bind_user(st, r->host, r->user);
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (r->n_pending == r->cap_pending) {
			size_t cap = r->cap_pending ? r->cap_pending * 2 : 8;
			struct roster_pending *p = realloc(r->pending, cap * sizeof(*p));
			if (!p)
				die_oom();
			r->pending = p;
			r->cap_pending = cap;
		}
		r->pending[r->n_pending++] = (struct roster_pending){
		    .jid = col_dup(r->a, st, 0), .status = col_dup(r->a, st, 1)};
	}
	if (rc != SQLITE_DONE)
		return store_db_fail(db, "read subscription requests");
	return STORE_OK;
}

static int read_run(struct store_job *job, struct store_db *db)
{
	struct read_req *r = (struct read_req *)job;
	sqlite3_stmt *st = store_stmt(db, &q_version);
	if (!st)
		return STORE_ERROR;
	bind_user(st, r->host, r->user);
	long long epoch = 0, ver = 0, floor = 0;
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		epoch = sqlite3_column_int64(st, 0);
		ver = sqlite3_column_int64(st, 1);
		floor = sqlite3_column_int64(st, 2);
	} else if (rc != SQLITE_DONE) {
		return store_db_fail(db, "read roster version");
	}
	r->view.ver = ver_string(r->a, epoch, ver);
	long long ce, cv;
	/* RFC 6121 §2.6.3: a version we can still tell the changes since
	 * gets only those; anything else gets the whole roster. A version
	 * from a roster that never changed ("0") is as good as any. */
	long long since = -1;
	if (r->since && ver_parse(r->since, &ce, &cv) && cv <= ver &&
	    (cv == 0 || (ce == epoch && cv >= floor)))
		since = cv;
	if (since > 0 || (since == 0 && !floor))
		r->view.delta = true;
	else
		since = -1;
	if ((rc = read_items(db, r, since)))
		return rc;
	if (since >= 0) {
		if ((rc = read_removed(db, r, since)))
			return rc;
		if (r->items.n > 1)
			qsort(r->items.v, r->items.n, sizeof(*r->items.v), by_seq);
	}
	for (size_t i = 0; i < r->items.n; i++)
		r->items.v[i].ver = ver_string(r->a, epoch, (long long)r->items.v[i].seq);
	if ((r->flags & ROSTER_READ_PENDING) && (rc = read_pending(db, r)))
		return rc;
	return STORE_OK;
}

static void read_done(struct store_job *job, int rc)
{
	struct read_req *r = (struct read_req *)job;
	r->view.items = r->items.v;
	r->view.n_items = r->items.n;
	r->view.pending = r->pending;
	r->view.n_pending = r->n_pending;
	r->cb(r->ud, rc, rc == STORE_OK ? &r->view : NULL);
	free(r->items.v);
	free(r->pending);
	arena_free(r->a);
	free(r);
}

/* Copies strings (NULL allowed) one after another into dst. */
static char *pack(char *dst, const char **out, const char *s)
{
	if (!s) {
		*out = NULL;
		return dst;
	}
	size_t n = strlen(s) + 1;
	memcpy(dst, s, n);
	*out = dst;
	return dst + n;
}

static size_t slen(const char *s)
{
	return s ? strlen(s) + 1 : 0;
}

void roster_read(struct store *s, void *origin, const char *host, const char *user,
		 const char *since, unsigned flags, roster_view_cb *cb, void *ud)
{
	struct read_req *r = malloc(sizeof(*r) + slen(host) + slen(user) + slen(since));
	if (!r)
		die_oom();
	memset(r, 0, sizeof(*r));
	char *p = pack(r->names, &r->host, host);
	p = pack(p, &r->user, user);
	pack(p, &r->since, since);
	r->flags = flags;
	r->cb = cb;
	r->ud = ud;
	r->a = arena_new(0);
	r->job.origin = origin;
	r->job.run = read_run;
	r->job.done = read_done;
	store_job_submit(s, &r->job);
}

/* ---- roster_update ---- */

struct update_req {
	struct store_job job;
	const char *host, *user, *contact; /* into names[] */
	roster_transition_fn *fn;
	const void *arg;
	struct roster_edit edit; /* strings copied into names[] */
	roster_update_cb *cb;
	void *ud;
	/* results */
	struct arena *a;
	unsigned flags;
	bool changed, have_item;
	struct roster_item item;
	const char *ver;
	char names[];
};

static void bind_contact(sqlite3_stmt *st, const struct update_req *r)
{
	bind_user(st, r->host, r->user);
	sqlite3_bind_text(st, 3, r->contact, -1, SQLITE_STATIC);
}

static int step_done(struct store_db *db, sqlite3_stmt *st, const char *what)
{
	if (!st)
		return STORE_ERROR;
	if (sqlite3_step(st) != SQLITE_DONE)
		return store_db_fail(db, what);
	return STORE_OK;
}

/* Reads the state the transition starts from. */
static int state_read(struct store_db *db, struct update_req *r, struct roster_state *s)
{
	memset(s, 0, sizeof(*s));
	sqlite3_stmt *st = store_stmt(db, &q_user_exists);
	if (!st)
		return STORE_ERROR;
	bind_user(st, r->host, r->user);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		s->user_exists = true;
		s->n_items = (size_t)sqlite3_column_int64(st, 0);
	} else if (rc != SQLITE_DONE) {
		return store_db_fail(db, "look up user");
	}
	if (!s->user_exists)
		return STORE_OK;
	st = store_stmt(db, &q_item_one);
	if (!st)
		return STORE_ERROR;
	bind_contact(st, r);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		s->in_roster = true;
		s->sub = sub_parse(sqlite3_column_text(st, 2));
		s->ask = sqlite3_column_int(st, 3) != 0;
		s->approved = sqlite3_column_int(st, 4) != 0;
	} else if (rc != SQLITE_DONE) {
		return store_db_fail(db, "read roster item");
	}
	st = store_stmt(db, &q_pending_one);
	if (!st)
		return STORE_ERROR;
	bind_contact(st, r);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		s->pending_in = true;
		s->pending_status = col_dup(r->a, st, 0);
	} else if (rc != SQLITE_DONE) {
		return store_db_fail(db, "read subscription request");
	}
	return STORE_OK;
}

static int version_bump(struct store_db *db, struct update_req *r, long long *ver)
{
	sqlite3_stmt *st = store_stmt(db, &q_version_bump);
	if (!st)
		return STORE_ERROR;
	bind_user(st, r->host, r->user);
	if (sqlite3_step(st) != SQLITE_ROW)
		return store_db_fail(db, "bump roster version");
	long long epoch = sqlite3_column_int64(st, 0);
	*ver = sqlite3_column_int64(st, 1);
	r->ver = ver_string(r->a, epoch, *ver);
	r->changed = true;
	return STORE_OK;
}

/* Forgets the oldest removals beyond ROSTER_TOMBSTONES_MAX and moves the
 * floor up, so that deltas are only offered where they are complete. */
static int removed_prune(struct store_db *db, struct update_req *r)
{
	sqlite3_stmt *st = store_stmt(db, &q_removed_cut);
	if (!st)
		return STORE_ERROR;
	bind_user(st, r->host, r->user);
	sqlite3_bind_int(st, 3, ROSTER_TOMBSTONES_MAX);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_DONE)
		return STORE_OK;
	if (rc != SQLITE_ROW)
		return store_db_fail(db, "count removed roster items");
	long long cut = sqlite3_column_int64(st, 0);
	st = store_stmt(db, &q_removed_prune);
	if (!st)
		return STORE_ERROR;
	bind_user(st, r->host, r->user);
	sqlite3_bind_int64(st, 3, cut);
	if ((rc = step_done(db, st, "prune removed roster items")))
		return rc;
	st = store_stmt(db, &q_floor_set);
	if (!st)
		return STORE_ERROR;
	bind_user(st, r->host, r->user);
	sqlite3_bind_int64(st, 3, cut + 1);
	return step_done(db, st, "set roster version floor");
}

static int groups_write(struct store_db *db, struct update_req *r)
{
	sqlite3_stmt *st = store_stmt(db, &q_groups_delete);
	if (!st)
		return STORE_ERROR;
	bind_contact(st, r);
	int rc = step_done(db, st, "clear roster groups");
	for (size_t i = 0; !rc && i < r->edit.n_groups; i++) {
		st = store_stmt(db, &q_group_insert);
		if (!st)
			return STORE_ERROR;
		bind_contact(st, r);
		sqlite3_bind_text(st, 4, r->edit.groups[i], -1, SQLITE_STATIC);
		rc = step_done(db, st, "add roster group");
	}
	return rc;
}

static int item_read_back(struct store_db *db, struct update_req *r)
{
	sqlite3_stmt *st = store_stmt(db, &q_item_one);
	if (!st)
		return STORE_ERROR;
	bind_contact(st, r);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_DONE)
		return STORE_OK;
	if (rc != SQLITE_ROW)
		return store_db_fail(db, "read roster item");
	item_from_row(r->a, st, &r->item);
	r->item.ver = r->ver;
	r->have_item = true;
	st = store_stmt(db, &q_groups_one);
	if (!st)
		return STORE_ERROR;
	bind_contact(st, r);
	return groups_merge(db, r->a, st, &r->item, 1);
}

static int update_run(struct store_job *job, struct store_db *db)
{
	struct update_req *r = (struct update_req *)job;
	struct roster_state was, now;
	int rc = state_read(db, r, &was);
	if (rc)
		return rc;
	now = was;
	r->flags = r->fn(&now, r->arg);
	if (!was.user_exists)
		return STORE_OK; /* nobody to write for */
	long long ver = 0;
	if (was.in_roster && !now.in_roster) {
		sqlite3_stmt *st = store_stmt(db, &q_item_delete);
		if (!st)
			return STORE_ERROR;
		bind_contact(st, r);
		if ((rc = step_done(db, st, "remove roster item")) ||
		    (rc = version_bump(db, r, &ver)))
			return rc;
		st = store_stmt(db, &q_removed_put);
		if (!st)
			return STORE_ERROR;
		bind_contact(st, r);
		sqlite3_bind_int64(st, 4, ver);
		if ((rc = step_done(db, st, "remember removed roster item")) ||
		    (rc = removed_prune(db, r)))
			return rc;
	} else if (now.in_roster) {
		bool edit = r->edit.set;
		bool differs = !was.in_roster || was.sub != now.sub || was.ask != now.ask ||
			       was.approved != now.approved;
		if (!was.in_roster && was.n_items >= max_items)
			return ROSTER_LIMIT;
		if (edit || differs) {
			if ((rc = version_bump(db, r, &ver)))
				return rc;
			sqlite3_stmt *st =
			    store_stmt(db, was.in_roster ? &q_item_update : &q_item_insert);
			if (!st)
				return STORE_ERROR;
			bind_contact(st, r);
			int i = 4;
			if (!was.in_roster)
				sqlite3_bind_text(st, i++, edit ? r->edit.name : NULL, -1,
						  SQLITE_STATIC);
			sqlite3_bind_text(st, i++, sub_names[now.sub & 3], -1, SQLITE_STATIC);
			sqlite3_bind_int(st, i++, now.ask);
			sqlite3_bind_int(st, i++, now.approved);
			sqlite3_bind_int64(st, i, ver);
			if ((rc = step_done(db, st, "write roster item")))
				return rc;
			if (!was.in_roster) {
				st = store_stmt(db, &q_removed_forget);
				if (!st)
					return STORE_ERROR;
				bind_contact(st, r);
				if ((rc = step_done(db, st, "forget removed roster item")))
					return rc;
			}
		}
		if (edit && was.in_roster) {
			sqlite3_stmt *st = store_stmt(db, &q_item_rename);
			if (!st)
				return STORE_ERROR;
			bind_contact(st, r);
			sqlite3_bind_text(st, 4, r->edit.name, -1, SQLITE_STATIC);
			if ((rc = step_done(db, st, "rename roster item")))
				return rc;
		}
		if (edit && (rc = groups_write(db, r)))
			return rc;
	}
	if (was.pending_in != now.pending_in ||
	    (now.pending_in && now.pending_status != was.pending_status)) {
		sqlite3_stmt *st =
		    store_stmt(db, now.pending_in ? &q_pending_put : &q_pending_delete);
		if (!st)
			return STORE_ERROR;
		bind_contact(st, r);
		if (now.pending_in) {
			sqlite3_bind_text(st, 4, now.pending_status, -1, SQLITE_STATIC);
			sqlite3_bind_int64(st, 5, (sqlite3_int64)time(NULL));
		}
		if ((rc = step_done(db, st, "write subscription request")))
			return rc;
	}
	return item_read_back(db, r);
}

static void update_done(struct store_job *job, int rc)
{
	struct update_req *r = (struct update_req *)job;
	bool ok = rc == STORE_OK;
	r->cb(r->ud, rc, ok ? r->flags : 0, ok && r->have_item ? &r->item : NULL, ok && r->changed,
	      r->ver);
	arena_free(r->a);
	free(r);
}

void roster_update(struct store *s, void *origin, const char *host, const char *user,
		   const char *contact, roster_transition_fn *fn, const void *arg,
		   const struct roster_edit *edit, roster_update_cb *cb, void *ud)
{
	size_t n = slen(host) + slen(user) + slen(contact);
	size_t ng = 0;
	if (edit && edit->set) {
		n += slen(edit->name);
		ng = edit->n_groups;
		for (size_t i = 0; i < ng; i++)
			n += slen(edit->groups[i]);
	}
	/* The group pointers go first (aligned), then the strings. */
	struct update_req *r = malloc(sizeof(*r) + ng * sizeof(char *) + n);
	if (!r)
		die_oom();
	memset(r, 0, sizeof(*r));
	const char **gv = (const char **)(void *)r->names;
	char *p = r->names + ng * sizeof(char *);
	p = pack(p, &r->host, host);
	p = pack(p, &r->user, user);
	p = pack(p, &r->contact, contact);
	if (edit && edit->set) {
		r->edit.set = true;
		p = pack(p, &r->edit.name, edit->name);
		for (size_t i = 0; i < ng; i++)
			p = pack(p, &gv[i], edit->groups[i]);
		r->edit.groups = (const char *const *)gv;
		r->edit.n_groups = ng;
	}
	r->fn = fn;
	r->arg = arg;
	r->cb = cb;
	r->ud = ud;
	r->a = arena_new(0);
	r->job.origin = origin;
	r->job.write = true;
	r->job.run = update_run;
	r->job.done = update_done;
	store_job_submit(s, &r->job);
}

/* ---- barrier ---- */

struct barrier_req {
	struct store_job job;
	void (*cb)(void *ud);
	void *ud;
};

static int barrier_run(struct store_job *job, struct store_db *db)
{
	return STORE_OK;
}

static void barrier_done(struct store_job *job, int rc)
{
	struct barrier_req *r = (struct barrier_req *)job;
	r->cb(r->ud);
	free(r);
}

void roster_barrier(struct store *s, void *origin, void (*cb)(void *ud), void *ud)
{
	struct barrier_req *r = calloc(1, sizeof(*r));
	if (!r)
		die_oom();
	r->job.origin = origin;
	r->job.run = barrier_run;
	r->job.done = barrier_done;
	r->cb = cb;
	r->ud = ud;
	store_job_submit(s, &r->job);
}

/* ---- a contact's subscription, read through roster_update ---- */

struct sub_query {
	roster_sub_cb *cb;
	void *ud;
};

/* Changes nothing: reports the state. */
static unsigned sub_read(struct roster_state *st, const void *arg)
{
	(void)arg;
	return st->in_roster ? st->sub : 0;
}

static void sub_done(void *ud, int rc, unsigned flags, const struct roster_item *after,
		     bool changed, const char *ver)
{
	struct sub_query *q = ud;
	(void)after;
	(void)changed;
	(void)ver;
	q->cb(q->ud, rc, rc == STORE_OK ? flags : 0);
	free(q);
}

void roster_subscription(struct store *s, void *origin, const char *host, const char *user,
			 const char *contact, roster_sub_cb *cb, void *ud)
{
	struct sub_query *q = malloc(sizeof(*q));
	if (!q)
		die_oom();
	q->cb = cb;
	q->ud = ud;
	roster_update(s, origin, host, user, contact, sub_read, NULL, NULL, sub_done, q);
}
