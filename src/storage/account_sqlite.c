/* SQLite backend of storage/account_store.h: vCards, private XML and last
 * activity, each a table keyed by the account and deleted with it. */
#include "storage/account_store.h"
#include "storage/schema.h"
#include "storage/sqlite_job.h"

#include <sqlite3.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/log.h"
#include "xml/xml.h"
#include "xml/xmlstream.h"
#include "xmpp/ns.h"

/* Schema step 4 (sqlite.c's migrations). Stored XML is UTF-8 text as our
 * serializer wrote it: one element with its namespace declared on it.
 * The primary keys start with (host, username), so they also serve the
 * cascading deletes from users. */
const char store_schema_account[] =
    /* XEP-0054: the account's vCard. */
    "CREATE TABLE vcards ("
    "  host TEXT NOT NULL,"
    "  username TEXT NOT NULL,"
    "  vcard TEXT NOT NULL," /* serialized <vCard xmlns='vcard-temp'> */
    "  PRIMARY KEY (host, username),"
    "  FOREIGN KEY (host, username) REFERENCES users (host, username) ON DELETE CASCADE);"
    /* XEP-0049: one element per namespace. */
    "CREATE TABLE private_xml ("
    "  host TEXT NOT NULL,"
    "  username TEXT NOT NULL,"
    "  namespace TEXT NOT NULL,"
    "  element TEXT NOT NULL," /* serialized, in that namespace */
    "  PRIMARY KEY (host, username, namespace),"
    "  FOREIGN KEY (host, username) REFERENCES users (host, username) ON DELETE CASCADE);"
    /* XEP-0012 §3: when the account was last left, and with what status. */
    "CREATE TABLE last_activity ("
    "  host TEXT NOT NULL,"
    "  username TEXT NOT NULL,"
    "  seconds INTEGER NOT NULL," /* unix time of the last logout */
    "  status TEXT NOT NULL,"	  /* of the last unavailable presence; '' if none */
    "  PRIMARY KEY (host, username),"
    "  FOREIGN KEY (host, username) REFERENCES users (host, username) ON DELETE CASCADE);";

static struct store_query q_vcard_get =
    STORE_QUERY("SELECT vcard FROM vcards WHERE host = ?1 AND username = ?2");
static struct store_query q_vcard_set =
    STORE_QUERY("INSERT INTO vcards (host, username, vcard) VALUES (?1, ?2, ?3)"
		" ON CONFLICT (host, username) DO UPDATE SET vcard = excluded.vcard");
static struct store_query q_private_get = STORE_QUERY(
    "SELECT element FROM private_xml WHERE host = ?1 AND username = ?2 AND namespace = ?3");
static struct store_query q_private_set = STORE_QUERY(
    "INSERT INTO private_xml (host, username, namespace, element)"
    " VALUES (?1, ?2, ?3, ?4)"
    " ON CONFLICT (host, username, namespace) DO UPDATE SET element = excluded.element");
static struct store_query q_last_get =
    STORE_QUERY("SELECT seconds, status FROM last_activity WHERE host = ?1 AND username = ?2");
static struct store_query q_last_set =
    STORE_QUERY("INSERT INTO last_activity (host, username, seconds, status)"
		" VALUES (?1, ?2, ?3, ?4) ON CONFLICT (host, username)"
		" DO UPDATE SET seconds = excluded.seconds, status = excluded.status");
static struct store_query q_last_touch =
    STORE_QUERY("INSERT INTO last_activity (host, username, seconds, status)"
		" VALUES (?1, ?2, ?3, '') ON CONFLICT (host, username)"
		" DO UPDATE SET seconds = excluded.seconds");

struct acct_req {
	struct store_job job; /* first: the job is the request */
	const char *host;     /* borrowed: into strs[] */
	const char *user;
	const char *ns; /* private XML only */
	const char *in; /* set: the value, into strs[] (NULL: touch only) */
	size_t in_len;
	long long when; /* last activity, both ways */
	char *out;	/* get: the stored value (malloc), copied on the storage thread */
	size_t out_len;
	struct arena *into; /* borrowed: where a read element is parsed */
	store_xml_cb *xml_cb;
	store_last_cb *last_cb;
	store_done_cb *done_cb;
	void *ud;
	char strs[];
};

/* One allocation per request: the strings follow the struct. */
static struct acct_req *req_new(const char *host, const char *user, const char *ns, const char *in,
				size_t in_len)
{
	size_t hl = strlen(host) + 1, ul = strlen(user) + 1, nl = ns ? strlen(ns) + 1 : 0;
	size_t il = in ? in_len + 1 : 0;
	struct acct_req *r = malloc(sizeof(*r) + hl + ul + nl + il);
	if (!r)
		die_oom();
	memset(r, 0, sizeof(*r));
	char *p = r->strs;
	memcpy(p, host, hl);
	r->host = p;
	p += hl;
	memcpy(p, user, ul);
	r->user = p;
	p += ul;
	if (ns) {
		memcpy(p, ns, nl);
		r->ns = p;
		p += nl;
	}
	if (in) {
		if (in_len)
			memcpy(p, in, in_len);
		p[in_len] = 0;
		r->in = p;
		r->in_len = in_len;
	}
	return r;
}

static void req_free(struct acct_req *r)
{
	free(r->out);
	free(r);
}

static void bind_account(sqlite3_stmt *st, const struct acct_req *r)
{
	sqlite3_bind_text(st, 1, r->host, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, r->user, -1, SQLITE_STATIC);
}

/* A write that names an account the users table does not hold (deleted
 * meanwhile) breaks the foreign key: that is "no such account". */
static int step_write(struct store_db *db, sqlite3_stmt *st, const char *what)
{
	int rc = sqlite3_step(st);
	if (rc == SQLITE_DONE)
		return STORE_OK;
	if (rc == SQLITE_CONSTRAINT_FOREIGNKEY)
		return STORE_NOT_FOUND;
	return store_db_fail(db, what);
}

/* Copies column 0 of the row out of SQLite's memory. A value longer than
 * anything we store is refused here already. */
static int copy_xml(struct store_db *db, sqlite3_stmt *st, struct acct_req *r, const char *what)
{
	int rc = sqlite3_step(st);
	if (rc == SQLITE_DONE)
		return STORE_NOT_FOUND;
	if (rc != SQLITE_ROW)
		return store_db_fail(db, what);
	const unsigned char *v = sqlite3_column_text(st, 0);
	int n = sqlite3_column_bytes(st, 0);
	if (!v || n <= 0 || n > ACCOUNT_XML_MAX) {
		LOG(LOG_WARN, "store: %s@%s: %s: stored value of %d bytes refused", r->user,
		    r->host, what, n);
		return STORE_ERROR;
	}
	r->out = malloc((size_t)n + 1);
	if (!r->out)
		die_oom();
	memcpy(r->out, v, (size_t)n);
	r->out[n] = 0;
	r->out_len = (size_t)n;
	return STORE_OK;
}

/* ---- re-reading stored XML ---- */

struct reparse {
	struct xml_el *el; /* the first element */
	struct arena *a;   /* its arena (owned) */
	unsigned n;	   /* top-level elements seen */
};

static void reparse_element(void *ud, struct xml_el *el, struct arena *a)
{
	struct reparse *rp = ud;
	if (rp->n++ == 0) {
		rp->el = el;
		rp->a = a;
	} else {
		arena_free(a);
	}
}

static bool feed_all(struct xmlstream *xs, const char *p, size_t n)
{
	ssize_t got = xmlstream_feed(xs, p, n);
	return got >= 0 && (size_t)got == n;
}

/* Parses a stored element with the same parser and restrictions as the
 * network (no DTD, comments, PIs or entities) inside a stream wrapper,
 * and copies it into `into`. The byte limit is the one writers obey; the
 * structural limits are the largest any configuration accepts on input,
 * so whatever was accepted from a client reads back. */
static struct xml_el *xml_reparse(const char *xml, size_t len, struct arena *into)
{
	static const struct xs_callbacks cbs = {.element = reparse_element};
	static const struct xs_limits lim = {
	    .max_stanza_bytes = ACCOUNT_XML_MAX,
	    .max_depth = 1024,
	    .max_attrs = 1024,
	    .max_attr_len = ACCOUNT_XML_MAX,
	    .max_text_len = ACCOUNT_XML_MAX,
	    .max_children = ACCOUNT_XML_MAX,
	    .max_header_bytes = 256,
	};
	static const char open[] = "<s:stream xmlns:s='" NS_STREAMS "'>";
	static const char close[] = "</s:stream>";
	struct reparse rp = {0};
	struct xmlstream *xs = xmlstream_new(&cbs, &rp, &lim);
	bool ok = feed_all(xs, open, sizeof(open) - 1) && feed_all(xs, xml, len) &&
		  feed_all(xs, close, sizeof(close) - 1) && rp.n == 1;
	if (!ok)
		LOG(LOG_WARN, "store: stored XML does not parse back (%s)",
		    xmlstream_error(xs) ? xmlstream_error_text(xs) : "not one element");
	xmlstream_free(xs);
	struct xml_el *el = ok ? xml_copy(into, rp.el) : NULL;
	arena_free(rp.a);
	return el;
}

static void xml_done(struct store_job *job, int rc)
{
	struct acct_req *r = (struct acct_req *)job;
	struct xml_el *el = NULL;
	if (rc == STORE_OK) {
		el = xml_reparse(r->out, r->out_len, r->into);
		if (!el) {
			LOG(LOG_WARN, "store: %s@%s: damaged %s%s", r->user, r->host,
			    r->ns ? "private XML in " : "vCard", r->ns ? r->ns : "");
			rc = STORE_ERROR;
		}
	}
	r->xml_cb(r->ud, rc, el);
	req_free(r);
}

static void write_done(struct store_job *job, int rc)
{
	struct acct_req *r = (struct acct_req *)job;
	if (r->done_cb)
		r->done_cb(r->ud, rc);
	req_free(r);
}

/* Fills in the job; the caller queues it (store_job_submit() or a variant). */
static struct store_job *job_of(struct acct_req *r, void *origin, bool write,
				int (*run)(struct store_job *, struct store_db *),
				void (*done)(struct store_job *, int))
{
	r->job.origin = origin;
	r->job.write = write;
	r->job.run = run;
	r->job.done = done;
	return &r->job;
}

static void submit(struct store *s, void *origin, struct acct_req *r, bool write,
		   int (*run)(struct store_job *, struct store_db *),
		   void (*done)(struct store_job *, int))
{
	store_job_submit(s, job_of(r, origin, write, run, done));
}

/* ---- vCards ---- */

static int vcard_get_run(struct store_job *job, struct store_db *db)
{
	struct acct_req *r = (struct acct_req *)job;
	sqlite3_stmt *st = store_stmt(db, &q_vcard_get);
	if (!st)
		return STORE_ERROR;
	bind_account(st, r);
	return copy_xml(db, st, r, "read vCard");
}

static int vcard_set_run(struct store_job *job, struct store_db *db)
{
	struct acct_req *r = (struct acct_req *)job;
	sqlite3_stmt *st = store_stmt(db, &q_vcard_set);
	if (!st)
		return STORE_ERROR;
	bind_account(st, r);
	sqlite3_bind_text(st, 3, r->in, (int)r->in_len, SQLITE_STATIC);
	return step_write(db, st, "store vCard");
}

void store_vcard_get(struct store *s, void *origin, const char *host, const char *user,
		     struct arena *into, store_xml_cb *cb, void *ud)
{
	struct acct_req *r = req_new(host, user, NULL, NULL, 0);
	r->into = into;
	r->xml_cb = cb;
	r->ud = ud;
	submit(s, origin, r, false, vcard_get_run, xml_done);
}

void store_vcard_set(struct store *s, void *origin, const char *host, const char *user,
		     const char *xml, size_t len, store_done_cb *cb, void *ud)
{
	ASSERT(len > 0 && len <= ACCOUNT_XML_MAX);
	struct acct_req *r = req_new(host, user, NULL, xml, len);
	r->done_cb = cb;
	r->ud = ud;
	submit(s, origin, r, true, vcard_set_run, write_done);
}

/* ---- private XML ---- */

static int private_get_run(struct store_job *job, struct store_db *db)
{
	struct acct_req *r = (struct acct_req *)job;
	sqlite3_stmt *st = store_stmt(db, &q_private_get);
	if (!st)
		return STORE_ERROR;
	bind_account(st, r);
	sqlite3_bind_text(st, 3, r->ns, -1, SQLITE_STATIC);
	return copy_xml(db, st, r, "read private XML");
}

static int private_set_run(struct store_job *job, struct store_db *db)
{
	struct acct_req *r = (struct acct_req *)job;
	sqlite3_stmt *st = store_stmt(db, &q_private_set);
	if (!st)
		return STORE_ERROR;
	bind_account(st, r);
	sqlite3_bind_text(st, 3, r->ns, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, r->in, (int)r->in_len, SQLITE_STATIC);
	return step_write(db, st, "store private XML");
}

void store_private_get(struct store *s, void *origin, const char *host, const char *user,
		       const char *ns, struct arena *into, store_xml_cb *cb, void *ud)
{
	struct acct_req *r = req_new(host, user, ns, NULL, 0);
	r->into = into;
	r->xml_cb = cb;
	r->ud = ud;
	submit(s, origin, r, false, private_get_run, xml_done);
}

void store_private_set(struct store *s, void *origin, const char *host, const char *user,
		       const char *ns, const char *xml, size_t len, store_done_cb *cb, void *ud)
{
	ASSERT(len > 0 && len <= ACCOUNT_XML_MAX);
	struct acct_req *r = req_new(host, user, ns, xml, len);
	r->done_cb = cb;
	r->ud = ud;
	submit(s, origin, r, true, private_set_run, write_done);
}

/* ---- last activity ---- */

static int last_get_run(struct store_job *job, struct store_db *db)
{
	struct acct_req *r = (struct acct_req *)job;
	sqlite3_stmt *st = store_stmt(db, &q_last_get);
	if (!st)
		return STORE_ERROR;
	bind_account(st, r);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_DONE)
		return STORE_NOT_FOUND;
	if (rc != SQLITE_ROW)
		return store_db_fail(db, "read last activity");
	r->when = sqlite3_column_int64(st, 0);
	const unsigned char *v = sqlite3_column_text(st, 1);
	int n = sqlite3_column_bytes(st, 1);
	if (n < 0 || n > ACCOUNT_STATUS_MAX)
		n = 0; /* not something we wrote: drop the text, keep the time */
	r->out = malloc((size_t)n + 1);
	if (!r->out)
		die_oom();
	if (v && n)
		memcpy(r->out, v, (size_t)n);
	r->out[n] = 0;
	r->out_len = (size_t)n;
	return STORE_OK;
}

static int last_set_run(struct store_job *job, struct store_db *db)
{
	struct acct_req *r = (struct acct_req *)job;
	sqlite3_stmt *st = store_stmt(db, r->in ? &q_last_set : &q_last_touch);
	if (!st)
		return STORE_ERROR;
	bind_account(st, r);
	sqlite3_bind_int64(st, 3, (sqlite3_int64)r->when);
	if (r->in)
		sqlite3_bind_text(st, 4, r->in, (int)r->in_len, SQLITE_STATIC);
	return step_write(db, st, "store last activity");
}

static void last_done(struct store_job *job, int rc)
{
	struct acct_req *r = (struct acct_req *)job;
	if (rc == STORE_OK)
		r->last_cb(r->ud, rc, r->when, r->out);
	else
		r->last_cb(r->ud, rc, 0, NULL);
	req_free(r);
}

void store_last_get(struct store *s, void *origin, const char *host, const char *user,
		    store_last_cb *cb, void *ud)
{
	struct acct_req *r = req_new(host, user, NULL, NULL, 0);
	r->last_cb = cb;
	r->ud = ud;
	/* It must see the lazy writes of store_last_set(). */
	store_job_submit_after_lazy(s, job_of(r, origin, false, last_get_run, last_done));
}

/* The longest prefix of s within max bytes that does not split a UTF-8
 * sequence. */
static size_t utf8_cut(const char *s, size_t len, size_t max)
{
	if (len <= max)
		return len;
	size_t n = max;
	while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
		n--;
	return n;
}

void store_last_set(struct store *s, void *origin, const char *host, const char *user,
		    long long when, const char *status, store_done_cb *cb, void *ud)
{
	size_t n = status ? utf8_cut(status, strlen(status), ACCOUNT_STATUS_MAX) : 0;
	struct acct_req *r = req_new(host, user, NULL, status, n);
	r->when = when;
	r->done_cb = cb;
	r->ud = ud;
	/* Every logout writes this: lazily, so that under load logouts share
	 * transactions instead of costing an fsync each. */
	store_job_submit_lazy(s, job_of(r, origin, true, last_set_run, write_done));
}
