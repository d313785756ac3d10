/* SQLite storage driver: one thread owns the connection and executes a
 * queue of jobs; consecutive writes are committed together (group commit,
 * one fsync for many writes). See store.h and sqlite_job.h. */
#include "storage/store.h"
#include "storage/sqlite_job.h"

#include <errno.h>
#include <pthread.h>
#include <sys/stat.h>
#include <signal.h>
#include <stdio.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"

/* Writes beyond this many wait for the next transaction, which bounds the
 * latency of the first write of a burst and how long parleyctl may have to
 * wait for the write lock. */
#define STORE_BATCH_MAX 256
/* Lazy writes (store_job.lazy) wait at most this long for a transaction
 * to join, and at most this many wait. */
#define STORE_LAZY_MS  10
#define STORE_LAZY_MAX 1024
/* parleyctl may write while parleyd runs; SQLite then retries for this long
 * before a request fails with STORE_ERROR. */
#define STORE_BUSY_MS	5000
#define STORE_LIST_PAGE 256

/* Schema migrations, in order: migrations[i] brings the schema to version
 * i + 1. This is the one place a feature adds its tables: append a step,
 * never edit one that has shipped. Each step runs in its own transaction
 * together with its schema_version row. Foreign keys are on, and
 * PRAGMA foreign_keys cannot change inside a transaction, so a step that
 * rebuilds a table must keep every reference valid as it goes. */
#include "storage/schema.h"

static const char *const migrations[] = {
    /* 1: accounts and server settings */
    "CREATE TABLE users ("
    "  host TEXT NOT NULL,"
    "  username TEXT NOT NULL,"
    "  created INTEGER NOT NULL," /* unix time */
    "  PRIMARY KEY (host, username));"
    "CREATE TABLE scram_keys ("
    "  host TEXT NOT NULL,"
    "  username TEXT NOT NULL,"
    "  hash TEXT NOT NULL," /* hash_names[]: SHA-1, SHA-256, SHA-512 */
    "  iterations INTEGER NOT NULL,"
    "  salt BLOB NOT NULL,"
    "  stored_key BLOB NOT NULL,"
    "  server_key BLOB NOT NULL,"
    "  PRIMARY KEY (host, username, hash),"
    "  FOREIGN KEY (host, username) REFERENCES users (host, username) ON DELETE CASCADE);"
    "CREATE TABLE meta ("
    "  key TEXT PRIMARY KEY,"
    "  value BLOB NOT NULL);",
    /* 2.. : each feature's schema, defined beside its queries */
    store_schema_roster,    /* 2: rosters and subscriptions (roster_sqlite.c) */
    store_schema_offline,   /* 3: offline messages (offline_sqlite.c) */
    store_schema_account,   /* 4: vCards, private XML, last activity (account_sqlite.c) */
    store_schema_blocklist, /* 5: blocklists (blocklist_sqlite.c) */
    /* 6: invitations to register (XEP-0445), by the SHA-256 of the token */
    "CREATE TABLE invites ("
    "  token_hash BLOB PRIMARY KEY,"
    "  host TEXT NOT NULL,"
    "  expires INTEGER NOT NULL);", /* unix time */
};
#define STORE_SCHEMA_VERSION ((int)(sizeof(migrations) / sizeof(migrations[0])))

int store_schema_latest(void)
{
	return STORE_SCHEMA_VERSION;
}

struct cached_stmt {
	sqlite3_stmt *st;
	bool dirty; /* handed to a job since the last sweep */
};

struct store_db {
	sqlite3 *h;
	struct cached_stmt *stmts; /* owned; indexed by store_query.slot - 1 */
	int nstmts;
};

struct store {
	struct store_db db; /* storage thread only, once it runs */
	store_post_fn *post;
	char *path; /* owned, for log lines */
	int version;
	pthread_t thread;

	pthread_mutex_t mu;
	pthread_cond_t wake;	 /* queue not empty, or closing */
	pthread_cond_t finished; /* some sync job finished */
	struct store_job *head;	 /* queue, FIFO */
	struct store_job **tailp;
	bool closing;

	/* Lazy writes not yet run, in submission order; storage thread only. */
	struct store_job *lazy, *lazy_last;
	int n_lazy;
	struct timespec lazy_due; /* CLOCK_REALTIME, for the condition wait */

	struct store_stats stats; /* updated atomically by the storage thread */
};

/* Slots are global so that a query keeps one slot across stores (tests and
 * parleyctl open several in turn); each store has its own statements. */
static int query_slots;

static struct store_query q_begin = STORE_QUERY("BEGIN IMMEDIATE");
static struct store_query q_begin_read = STORE_QUERY("BEGIN");
static struct store_query q_commit = STORE_QUERY("COMMIT");
static struct store_query q_rollback = STORE_QUERY("ROLLBACK");
static struct store_query q_savepoint = STORE_QUERY("SAVEPOINT job");
static struct store_query q_release = STORE_QUERY("RELEASE job");
static struct store_query q_rollback_to = STORE_QUERY("ROLLBACK TO job");

/* ---- statements ---- */

sqlite3 *store_db_handle(struct store_db *db)
{
	return db->h;
}

int store_db_fail(struct store_db *db, const char *what)
{
	LOG(LOG_WARN, "store: %s: %s (%d)", what, sqlite3_errmsg(db->h),
	    sqlite3_extended_errcode(db->h));
	return STORE_ERROR;
}

static int query_slot(struct store_query *q)
{
	int slot = __atomic_load_n(&q->slot, __ATOMIC_ACQUIRE);
	if (slot)
		return slot;
	int fresh = __atomic_add_fetch(&query_slots, 1, __ATOMIC_RELAXED);
	/* Another store's thread may have raced us; its slot wins and ours is
	 * simply never used. */
	if (__atomic_compare_exchange_n(&q->slot, &slot, fresh, false, __ATOMIC_ACQ_REL,
					__ATOMIC_ACQUIRE))
		return fresh;
	return slot;
}

sqlite3_stmt *store_stmt(struct store_db *db, struct store_query *q)
{
	int i = query_slot(q) - 1;
	if (i >= db->nstmts) {
		int n = db->nstmts ? db->nstmts : 16;
		while (n <= i)
			n *= 2;
		struct cached_stmt *p = realloc(db->stmts, (size_t)n * sizeof(*p));
		if (!p)
			die_oom();
		memset(p + db->nstmts, 0, (size_t)(n - db->nstmts) * sizeof(*p));
		db->stmts = p;
		db->nstmts = n;
	}
	struct cached_stmt *c = &db->stmts[i];
	if (!c->st) {
		if (sqlite3_prepare_v3(db->h, q->sql, -1, SQLITE_PREPARE_PERSISTENT, &c->st,
				       NULL) != SQLITE_OK) {
			LOG(LOG_WARN, "store: cannot prepare \"%s\": %s", q->sql,
			    sqlite3_errmsg(db->h));
			c->st = NULL;
			return NULL;
		}
	} else {
		sqlite3_reset(c->st);
		sqlite3_clear_bindings(c->st);
	}
	c->dirty = true;
	return c->st;
}

/* After each job: a statement left mid-step would keep its read
 * transaction open (blocking checkpoints), and bound SQLITE_STATIC text
 * would dangle once the job's memory is freed. */
static void stmts_sweep(struct store_db *db)
{
	for (int i = 0; i < db->nstmts; i++) {
		struct cached_stmt *c = &db->stmts[i];
		if (!c->dirty)
			continue;
		sqlite3_reset(c->st);
		sqlite3_clear_bindings(c->st);
		c->dirty = false;
	}
}

/* Steps a statement that returns no rows. */
static int exec_query(struct store_db *db, struct store_query *q)
{
	sqlite3_stmt *st = store_stmt(db, q);
	if (!st)
		return STORE_ERROR;
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return store_db_fail(db, q->sql);
	return STORE_OK;
}

/* ---- the storage thread ---- */

static void stat_add(unsigned long long *c, unsigned long long n)
{
	__atomic_add_fetch(c, n, __ATOMIC_RELAXED);
}

static void job_complete(void *arg)
{
	struct store_job *job = arg;
	job->done(job, job->rc);
}

/* Hands a job back. After this the job may be freed at any moment. */
static void job_finish(struct store *s, struct store_job *job)
{
	stat_add(&s->stats.requests, 1);
	if (job->write)
		stat_add(&s->stats.writes, 1);
	if (job->rc == STORE_ERROR)
		stat_add(&s->stats.errors, 1);
	if (job->sync) {
		pthread_mutex_lock(&s->mu);
		job->finished = true;
		pthread_cond_broadcast(&s->finished);
		pthread_mutex_unlock(&s->mu);
	} else {
		s->post(job->origin, job_complete, job);
	}
}

static void run_read(struct store *s, struct store_job *job)
{
	struct store_db *db = &s->db;
	if (exec_query(db, &q_begin_read)) {
		job->rc = STORE_ERROR;
		return;
	}
	job->rc = job->run(job, db);
	stmts_sweep(db);
	/* COMMIT of a read transaction only releases the snapshot; if the job
	 * wrote despite being a read, that is committed too (our bug, but
	 * better durable than half-done). */
	if (!sqlite3_get_autocommit(db->h) && exec_query(db, &q_commit)) {
		exec_query(db, &q_rollback);
		job->rc = STORE_ERROR;
	}
}

static void batch_fail(struct store_job *batch)
{
	for (struct store_job *j = batch; j; j = j->next)
		j->rc = STORE_ERROR;
}

/* Runs a list of write jobs in one transaction. Each job has its own
 * savepoint so that a job that fails does not take the others with it. */
static void run_batch(struct store *s, struct store_job *batch)
{
	struct store_db *db = &s->db;
	if (exec_query(db, &q_begin)) {
		batch_fail(batch);
		return;
	}
	for (struct store_job *j = batch; j; j = j->next) {
		if (exec_query(db, &q_savepoint)) {
			j->rc = STORE_ERROR;
			continue;
		}
		j->rc = j->run(j, db);
		stmts_sweep(db);
		/* Some errors (disk full, I/O, out of memory) make SQLite roll
		 * back the whole transaction: everything before is lost too. */
		if (sqlite3_get_autocommit(db->h)) {
			LOG(LOG_WARN, "store: %s: transaction rolled back by SQLite", s->path);
			batch_fail(batch);
			return;
		}
		if (j->rc != STORE_OK) {
			if (exec_query(db, &q_rollback_to)) {
				exec_query(db, &q_rollback);
				batch_fail(batch);
				return;
			}
		}
		if (exec_query(db, &q_release)) {
			exec_query(db, &q_rollback);
			batch_fail(batch);
			return;
		}
	}
	if (exec_query(db, &q_commit)) {
		if (!sqlite3_get_autocommit(db->h))
			exec_query(db, &q_rollback);
		batch_fail(batch);
		return;
	}
	stat_add(&s->stats.commits, 1);
}

/* Runs a batch of writes and hands them back. */
static void commit_batch(struct store *s, struct store_job *j)
{
	run_batch(s, j);
	/* Completions only now: each write is durable before anyone hears it
	 * succeeded. */
	while (j) {
		struct store_job *next = j->next;
		if (j->committed && j->rc == STORE_OK)
			j->committed(j);
		job_finish(s, j);
		j = next;
	}
}

/* Runs the waiting lazy writes, followed in the same transaction by the
 * batch `then` (may be NULL). */
static void run_lazy(struct store *s, struct store_job *then)
{
	struct store_job *j = then;
	if (s->lazy) {
		s->lazy_last->next = then;
		j = s->lazy;
		s->lazy = s->lazy_last = NULL;
		s->n_lazy = 0;
	}
	if (j)
		commit_batch(s, j);
}

static void run_list(struct store *s, struct store_job *list)
{
	while (list) {
		struct store_job *j = list;
		if (j->lazy) {
			/* Held for the next transaction: at most STORE_LAZY_MS
			 * later, before any later write, so writes keep their
			 * order; reads may see it late (the lazy contract). */
			list = j->next;
			j->next = NULL;
			if (!s->lazy) {
				clock_gettime(CLOCK_REALTIME, &s->lazy_due);
				s->lazy_due.tv_sec += STORE_LAZY_MS / 1000;
				s->lazy_due.tv_nsec += (STORE_LAZY_MS % 1000) * 1000000L;
				if (s->lazy_due.tv_nsec >= 1000000000L) {
					s->lazy_due.tv_sec++;
					s->lazy_due.tv_nsec -= 1000000000L;
				}
			}
			if (s->lazy_last)
				s->lazy_last->next = j;
			else
				s->lazy = j;
			s->lazy_last = j;
			if (++s->n_lazy >= STORE_LAZY_MAX)
				run_lazy(s, NULL);
			continue;
		}
		if (!j->write) {
			list = j->next;
			j->next = NULL;
			if (j->after_lazy)
				run_lazy(s, NULL);
			run_read(s, j);
			job_finish(s, j);
			continue;
		}
		struct store_job *last = j;
		int n = 1;
		while (last->next && last->next->write && !last->next->lazy &&
		       n < STORE_BATCH_MAX) {
			last = last->next;
			n++;
		}
		list = last->next;
		last->next = NULL;
		run_lazy(s, j);
	}
}

static void *store_thread(void *arg)
{
	struct store *s = arg;
	for (;;) {
		pthread_mutex_lock(&s->mu);
		bool due = false;
		while (!s->head && !s->closing && !due) {
			if (s->lazy)
				due = pthread_cond_timedwait(&s->wake, &s->mu, &s->lazy_due) ==
				      ETIMEDOUT;
			else
				pthread_cond_wait(&s->wake, &s->mu);
		}
		struct store_job *list = s->head;
		s->head = NULL;
		s->tailp = &s->head;
		pthread_mutex_unlock(&s->mu);
		if (list) {
			run_list(s, list);
			continue;
		}
		run_lazy(s, NULL); /* due, or closing */
		if (!due)
			break; /* closing and drained */
	}
	return NULL;
}

static void store_enqueue(struct store *s, struct store_job *job, bool lazy, bool after_lazy)
{
	job->next = NULL;
	job->rc = STORE_OK;
	job->finished = false;
	job->lazy = lazy;
	job->after_lazy = after_lazy;
	pthread_mutex_lock(&s->mu);
	ASSERT(!s->closing);
	*s->tailp = job;
	s->tailp = &job->next;
	pthread_cond_signal(&s->wake);
	pthread_mutex_unlock(&s->mu);
}

static void submit_async(struct store *s, struct store_job *job, bool lazy, bool after_lazy)
{
	ASSERT(s->post);
	ASSERT(job->run && job->done);
	job->sync = false;
	store_enqueue(s, job, lazy, after_lazy);
}

void store_job_submit(struct store *s, struct store_job *job)
{
	submit_async(s, job, false, false);
}

void store_job_submit_lazy(struct store *s, struct store_job *job)
{
	ASSERT(job->write);
	submit_async(s, job, true, false);
}

void store_job_submit_after_lazy(struct store *s, struct store_job *job)
{
	ASSERT(!job->write);
	submit_async(s, job, false, true);
}

static int barrier_run(struct store_job *job, struct store_db *db)
{
	(void)job;
	(void)db;
	return STORE_OK;
}

void store_barrier(struct store *s)
{
	/* Requests run in order: when this one has run, all before it have,
	 * and their completions were posted before it finished. */
	struct store_job job = {.run = barrier_run};
	store_job_sync(s, &job);
}

int store_job_sync(struct store *s, struct store_job *job)
{
	/* Waiting on ourselves would never end. */
	ASSERT(!pthread_equal(pthread_self(), s->thread));
	ASSERT(job->run);
	job->sync = true;
	store_enqueue(s, job, false, false);
	pthread_mutex_lock(&s->mu);
	while (!job->finished)
		pthread_cond_wait(&s->finished, &s->mu);
	pthread_mutex_unlock(&s->mu);
	return job->rc;
}

/* ---- open, migrate, close ---- */

static int exec_sql(sqlite3 *h, const char *path, const char *sql)
{
	char *err = NULL;
	if (sqlite3_exec(h, sql, NULL, NULL, &err) != SQLITE_OK) {
		LOG(LOG_WARN, "store: %s: %s: %s", path, sql, err ? err : sqlite3_errmsg(h));
		sqlite3_free(err);
		return STORE_ERROR;
	}
	return STORE_OK;
}

/* Reads the schema version; -1 on error. Inside the caller's transaction. */
static int schema_read(sqlite3 *h, const char *path)
{
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(h, "SELECT COALESCE(MAX(version), 0) FROM schema_version", -1, &st,
			       NULL) != SQLITE_OK) {
		LOG(LOG_WARN, "store: %s: %s", path, sqlite3_errmsg(h));
		return -1;
	}
	int v = -1;
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int(st, 0);
	else
		LOG(LOG_WARN, "store: %s: %s", path, sqlite3_errmsg(h));
	sqlite3_finalize(st);
	return v;
}

/* Applies one pending migration, or none if the schema is current.
 * Returns 1 if one was applied, 0 if current, -1 on error. The version is
 * read again inside each write transaction because parleyctl or another
 * parleyd may be migrating the same file at the same moment. */
static int migrate_step(struct store *s)
{
	sqlite3 *h = s->db.h;
	if (exec_sql(h, s->path, "BEGIN IMMEDIATE"))
		return -1;
	int v = schema_read(h, s->path);
	if (v < 0)
		goto out_rollback;
	s->version = v;
	if (v > STORE_SCHEMA_VERSION) {
		LOG(LOG_ERROR,
		    "store: %s has schema version %d but this parley knows only up to %d; "
		    "refusing to open it (run a newer parley, or restore a backup)",
		    s->path, v, STORE_SCHEMA_VERSION);
		goto out_rollback;
	}
	if (v == STORE_SCHEMA_VERSION) {
		exec_sql(h, s->path, "COMMIT");
		return 0;
	}
	if (exec_sql(h, s->path, migrations[v]))
		goto out_rollback;
	char sql[128];
	snprintf(sql, sizeof(sql),
		 "INSERT INTO schema_version (version, applied) VALUES (%d, %lld)", v + 1,
		 (long long)time(NULL));
	if (exec_sql(h, s->path, sql) || exec_sql(h, s->path, "COMMIT"))
		goto out_rollback;
	s->version = v + 1;
	LOG(LOG_INFO, "store: %s: migrated schema to version %d", s->path, v + 1);
	return 1;

out_rollback:
	if (!sqlite3_get_autocommit(h))
		exec_sql(h, s->path, "ROLLBACK");
	return -1;
}

static int db_setup(struct store *s)
{
	sqlite3 *h = s->db.h;
	sqlite3_extended_result_codes(h, 1);
	sqlite3_busy_timeout(h, STORE_BUSY_MS);

	/* WAL: readers (parleyctl, backups) never block the writer, and a
	 * commit is one append plus one fsync. */
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(h, "PRAGMA journal_mode = WAL", -1, &st, NULL) != SQLITE_OK) {
		LOG(LOG_ERROR, "store: %s: %s", s->path, sqlite3_errmsg(h));
		return -1;
	}
	bool wal = sqlite3_step(st) == SQLITE_ROW &&
		   !strcmp((const char *)sqlite3_column_text(st, 0), "wal");
	sqlite3_finalize(st);
	if (!wal) {
		LOG(LOG_ERROR, "store: %s: cannot switch to WAL mode: %s", s->path,
		    sqlite3_errmsg(h));
		return -1;
	}
	/* FULL: acks (XEP-0198) and receipts wait for our completions, so a
	 * completed write must survive power loss, not only a crash. */
	if (exec_sql(h, s->path, "PRAGMA synchronous = FULL") ||
	    exec_sql(h, s->path, "PRAGMA foreign_keys = ON"))
		return -1;

	if (exec_sql(h, s->path,
		     "CREATE TABLE IF NOT EXISTS schema_version ("
		     "  version INTEGER PRIMARY KEY,"
		     "  applied INTEGER NOT NULL)"))
		return -1;
	int rc;
	while ((rc = migrate_step(s)) > 0)
		;
	return rc;
}

struct store *store_open(const char *path, store_post_fn *post)
{
	struct store *s = calloc(1, sizeof(*s));
	if (!s)
		die_oom();
	s->path = strdup(path);
	if (!s->path)
		die_oom();
	s->post = post;
	s->tailp = &s->head;
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->wake, NULL);
	pthread_cond_init(&s->finished, NULL);

	/* The database holds password keys: its directory is private. A
	 * missing data directory is created (first start, quick start). */
	char *slash = strrchr(s->path, '/');
	if (slash && slash != s->path) {
		*slash = 0;
		if (mkdir(s->path, 0700) < 0 && errno != EEXIST)
			LOG(LOG_WARN, "store: cannot create %s: %s", s->path, strerror(errno));
		*slash = '/';
	}
	mode_t old_umask = umask(077);

	/* NOMUTEX: only one thread uses the connection at a time (this one
	 * until the storage thread starts, then that one). */
	int rc = sqlite3_open_v2(
	    path, &s->db.h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
	umask(old_umask);
	if (rc != SQLITE_OK) {
		LOG(LOG_ERROR, "store: cannot open %s: %s", path,
		    s->db.h ? sqlite3_errmsg(s->db.h) : sqlite3_errstr(rc));
		goto out_free;
	}
	if (db_setup(s))
		goto out_free;

	/* Signals belong to the main loop, never to the storage thread. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&s->thread, NULL, store_thread, s);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc) {
		LOG(LOG_ERROR, "store: cannot start the storage thread: %s", strerror(rc));
		goto out_free;
	}
	return s;

out_free:
	sqlite3_close(s->db.h);
	pthread_cond_destroy(&s->finished);
	pthread_cond_destroy(&s->wake);
	pthread_mutex_destroy(&s->mu);
	free(s->path);
	free(s);
	return NULL;
}

void store_close(struct store *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&s->mu);
	s->closing = true;
	pthread_cond_signal(&s->wake);
	pthread_mutex_unlock(&s->mu);
	pthread_join(s->thread, NULL);

	for (int i = 0; i < s->db.nstmts; i++)
		sqlite3_finalize(s->db.stmts[i].st);
	free(s->db.stmts);
	if (sqlite3_close(s->db.h) != SQLITE_OK)
		LOG(LOG_WARN, "store: %s: close: %s", s->path, sqlite3_errmsg(s->db.h));
	pthread_cond_destroy(&s->finished);
	pthread_cond_destroy(&s->wake);
	pthread_mutex_destroy(&s->mu);
	free(s->path);
	free(s);
}

int store_schema_version(struct store *s)
{
	return s->version;
}

void store_stats(struct store *s, struct store_stats *out)
{
	out->requests = __atomic_load_n(&s->stats.requests, __ATOMIC_RELAXED);
	out->writes = __atomic_load_n(&s->stats.writes, __ATOMIC_RELAXED);
	out->commits = __atomic_load_n(&s->stats.commits, __ATOMIC_RELAXED);
	out->errors = __atomic_load_n(&s->stats.errors, __ATOMIC_RELAXED);
}

/* ---- accounts ---- */

/* The names are what the database holds, spelled out here rather than
 * taken from scram_hash_name() or the enum's order, so that no change in
 * the SASL code can ever reinterpret stored keys. */
static const char *const hash_names[SCRAM_NHASH] = {
    [SCRAM_SHA1] = "SHA-1",
    [SCRAM_SHA256] = "SHA-256",
    [SCRAM_SHA512] = "SHA-512",
};
_Static_assert(SCRAM_NHASH == 3, "a new SCRAM hash needs its stored name here");

static struct store_query q_user_insert =
    STORE_QUERY("INSERT INTO users (host, username, created) VALUES (?1, ?2, ?3)");
static struct store_query q_user_exists =
    STORE_QUERY("SELECT 1 FROM users WHERE host = ?1 AND username = ?2");
static struct store_query q_user_delete =
    STORE_QUERY("DELETE FROM users WHERE host = ?1 AND username = ?2");
static struct store_query q_keys_delete =
    STORE_QUERY("DELETE FROM scram_keys WHERE host = ?1 AND username = ?2");
static struct store_query q_key_insert = STORE_QUERY(
    "INSERT INTO scram_keys (host, username, hash, iterations, salt, stored_key, server_key)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
/* LEFT JOIN so that no row means no user, and a NULL hash a user without keys. */
static struct store_query q_creds_get = STORE_QUERY(
    "SELECT k.hash, k.iterations, k.salt, k.stored_key, k.server_key"
    " FROM users u LEFT JOIN scram_keys k ON k.host = u.host AND k.username = u.username"
    " WHERE u.host = ?1 AND u.username = ?2");
/* Keyset pages: ('', '') sorts before every real account. */
static struct store_query q_list_all =
    STORE_QUERY("SELECT host, username FROM users WHERE (host, username) > (?1, ?2)"
		" ORDER BY host, username LIMIT ?3");
static struct store_query q_list_host =
    STORE_QUERY("SELECT host, username FROM users WHERE host = ?1 AND username > ?2"
		" ORDER BY username LIMIT ?3");

struct user_req {
	struct store_job job; /* first: the job is the request */
	const char *host;     /* borrowed: into names[], or the sync caller's */
	const char *user;
	struct scram_creds creds;
	unsigned char invite[STORE_INVITE_HASH]; /* create with an invitation */
	long long expires;			 /* invitations */
	store_creds_cb *creds_cb;
	store_done_cb *done_cb;
	void *ud;
	char names[];
};

/* One allocation per asynchronous request, names included. */
static struct user_req *user_req_new(const char *host, const char *user)
{
	size_t hl = strlen(host) + 1, ul = strlen(user) + 1;
	struct user_req *r = malloc(sizeof(*r) + hl + ul);
	if (!r)
		die_oom();
	memset(r, 0, sizeof(*r));
	memcpy(r->names, host, hl);
	memcpy(r->names + hl, user, ul);
	r->host = r->names;
	r->user = r->names + hl;
	return r;
}

static void bind_user(sqlite3_stmt *st, const struct user_req *r)
{
	sqlite3_bind_text(st, 1, r->host, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, r->user, -1, SQLITE_STATIC);
}

static void creds_check(const struct scram_creds *c)
{
	for (int h = 0; h < SCRAM_NHASH; h++)
		ASSERT(c->k[h].iterations >= 0 && c->k[h].salt_len <= SCRAM_MAX_SALT);
}

int store_db_user_exists(struct store_db *db, const char *host, const char *user)
{
	sqlite3_stmt *st = store_stmt(db, &q_user_exists);
	if (!st)
		return STORE_ERROR;
	sqlite3_bind_text(st, 1, host, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, user, -1, SQLITE_STATIC);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		return STORE_OK;
	if (rc == SQLITE_DONE)
		return STORE_NOT_FOUND;
	return store_db_fail(db, "look up user");
}

static int keys_put(struct store_db *db, const struct user_req *r)
{
	for (int h = 0; h < SCRAM_NHASH; h++) {
		const struct scram_key *k = &r->creds.k[h];
		int klen = (int)scram_hash_len((enum scram_hash)h);
		if (!k->iterations)
			continue;
		sqlite3_stmt *st = store_stmt(db, &q_key_insert);
		if (!st)
			return STORE_ERROR;
		bind_user(st, r);
		sqlite3_bind_text(st, 3, hash_names[h], -1, SQLITE_STATIC);
		sqlite3_bind_int(st, 4, k->iterations);
		sqlite3_bind_blob(st, 5, k->salt, (int)k->salt_len, SQLITE_STATIC);
		sqlite3_bind_blob(st, 6, k->stored_key, klen, SQLITE_STATIC);
		sqlite3_bind_blob(st, 7, k->server_key, klen, SQLITE_STATIC);
		if (sqlite3_step(st) != SQLITE_DONE)
			return store_db_fail(db, "store SCRAM key");
	}
	return STORE_OK;
}

static int user_create_run(struct store_job *job, struct store_db *db)
{
	struct user_req *r = (struct user_req *)job;
	sqlite3_stmt *st = store_stmt(db, &q_user_insert);
	if (!st)
		return STORE_ERROR;
	bind_user(st, r);
	sqlite3_bind_int64(st, 3, (sqlite3_int64)time(NULL));
	int rc = sqlite3_step(st);
	if (rc == SQLITE_CONSTRAINT_PRIMARYKEY)
		return STORE_EXISTS;
	if (rc != SQLITE_DONE)
		return store_db_fail(db, "create user");
	return keys_put(db, r);
}

static struct store_query q_invite_use =
    STORE_QUERY("DELETE FROM invites WHERE token_hash = ?1 AND host = ?2 AND expires > ?3");
static struct store_query q_invite_check =
    STORE_QUERY("SELECT 1 FROM invites WHERE token_hash = ?1 AND host = ?2 AND expires > ?3");
static struct store_query q_invite_insert =
    STORE_QUERY("INSERT INTO invites (token_hash, host, expires) VALUES (?1, ?2, ?3)");
static struct store_query q_invite_expired = STORE_QUERY("DELETE FROM invites WHERE expires <= ?1");

static void bind_invite(sqlite3_stmt *st, const struct user_req *r)
{
	sqlite3_bind_blob(st, 1, r->invite, STORE_INVITE_HASH, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, r->host, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, (sqlite3_int64)time(NULL));
}

/* The invitation is used up by the same transaction that creates the
 * account: an account that already exists rolls both back. */
static int user_create_invited_run(struct store_job *job, struct store_db *db)
{
	struct user_req *r = (struct user_req *)job;
	sqlite3_stmt *st = store_stmt(db, &q_invite_use);
	if (!st)
		return STORE_ERROR;
	bind_invite(st, r);
	if (sqlite3_step(st) != SQLITE_DONE)
		return store_db_fail(db, "use invitation");
	if (!sqlite3_changes(db->h))
		return STORE_INVITE_INVALID;
	return user_create_run(job, db);
}

static int invite_check_run(struct store_job *job, struct store_db *db)
{
	struct user_req *r = (struct user_req *)job;
	sqlite3_stmt *st = store_stmt(db, &q_invite_check);
	if (!st)
		return STORE_ERROR;
	bind_invite(st, r);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		return STORE_OK;
	return rc == SQLITE_DONE ? STORE_INVITE_INVALID : store_db_fail(db, "check invitation");
}

static int invite_create_run(struct store_job *job, struct store_db *db)
{
	struct user_req *r = (struct user_req *)job;
	sqlite3_stmt *st = store_stmt(db, &q_invite_expired);
	if (!st)
		return STORE_ERROR;
	sqlite3_bind_int64(st, 1, (sqlite3_int64)time(NULL));
	if (sqlite3_step(st) != SQLITE_DONE)
		return store_db_fail(db, "drop expired invitations");
	if (!(st = store_stmt(db, &q_invite_insert)))
		return STORE_ERROR;
	sqlite3_bind_blob(st, 1, r->invite, STORE_INVITE_HASH, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, r->host, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, (sqlite3_int64)r->expires);
	return sqlite3_step(st) == SQLITE_DONE ? STORE_OK : store_db_fail(db, "store invitation");
}

static int user_set_creds_run(struct store_job *job, struct store_db *db)
{
	struct user_req *r = (struct user_req *)job;
	int rc = store_db_user_exists(db, r->host, r->user);
	if (rc)
		return rc;
	sqlite3_stmt *st = store_stmt(db, &q_keys_delete);
	if (!st)
		return STORE_ERROR;
	bind_user(st, r);
	if (sqlite3_step(st) != SQLITE_DONE)
		return store_db_fail(db, "replace SCRAM keys");
	return keys_put(db, r);
}

static int user_delete_run(struct store_job *job, struct store_db *db)
{
	struct user_req *r = (struct user_req *)job;
	sqlite3_stmt *st = store_stmt(db, &q_user_delete);
	if (!st)
		return STORE_ERROR;
	bind_user(st, r);
	if (sqlite3_step(st) != SQLITE_DONE)
		return store_db_fail(db, "delete user");
	return sqlite3_changes(db->h) ? STORE_OK : STORE_NOT_FOUND;
}

static int hash_by_name(const char *name)
{
	for (int h = 0; h < SCRAM_NHASH; h++)
		if (!strcmp(name, hash_names[h]))
			return h;
	return -1;
}

static int user_get_creds_run(struct store_job *job, struct store_db *db)
{
	struct user_req *r = (struct user_req *)job;
	memset(&r->creds, 0, sizeof(r->creds));
	sqlite3_stmt *st = store_stmt(db, &q_creds_get);
	if (!st)
		return STORE_ERROR;
	bind_user(st, r);
	int rc, found = STORE_NOT_FOUND;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		found = STORE_OK;
		const char *name = (const char *)sqlite3_column_text(st, 0);
		if (!name)
			continue; /* the user has no keys at all */
		int h = hash_by_name(name);
		if (h < 0) {
			/* A key for a hash this binary does not implement: not
			 * usable here, and no reason to refuse the others. */
			LOG(LOG_DEBUG, "store: %s@%s: ignoring key for unknown hash %s", r->user,
			    r->host, name);
			continue;
		}
		struct scram_key *k = &r->creds.k[h];
		size_t klen = scram_hash_len((enum scram_hash)h);
		int salt_len = sqlite3_column_bytes(st, 2);
		int iterations = sqlite3_column_int(st, 1);
		if (iterations <= 0 || salt_len > SCRAM_MAX_SALT ||
		    (size_t)sqlite3_column_bytes(st, 3) != klen ||
		    (size_t)sqlite3_column_bytes(st, 4) != klen) {
			LOG(LOG_WARN, "store: %s@%s: malformed %s key in the database", r->user,
			    r->host, name);
			return STORE_ERROR;
		}
		k->iterations = iterations;
		k->salt_len = (size_t)salt_len;
		if (salt_len)
			memcpy(k->salt, sqlite3_column_blob(st, 2), (size_t)salt_len);
		memcpy(k->stored_key, sqlite3_column_blob(st, 3), klen);
		memcpy(k->server_key, sqlite3_column_blob(st, 4), klen);
	}
	if (rc != SQLITE_DONE)
		return store_db_fail(db, "read SCRAM keys");
	return found;
}

static void creds_done(struct store_job *job, int rc)
{
	struct user_req *r = (struct user_req *)job;
	r->creds_cb(r->ud, rc, rc == STORE_OK ? &r->creds : NULL);
	free(r);
}

static void write_done(struct store_job *job, int rc)
{
	struct user_req *r = (struct user_req *)job;
	if (r->done_cb)
		r->done_cb(r->ud, rc);
	free(r);
}

void store_user_get_creds(struct store *s, void *origin, const char *host, const char *user,
			  store_creds_cb *cb, void *ud)
{
	struct user_req *r = user_req_new(host, user);
	r->job.origin = origin;
	r->job.run = user_get_creds_run;
	r->job.done = creds_done;
	r->creds_cb = cb;
	r->ud = ud;
	store_job_submit(s, &r->job);
}

static void user_write(struct store *s, void *origin, const char *host, const char *user,
		       const struct scram_creds *creds,
		       int (*run)(struct store_job *, struct store_db *), store_done_cb *cb,
		       void *ud)
{
	struct user_req *r = user_req_new(host, user);
	if (creds) {
		creds_check(creds);
		r->creds = *creds;
	}
	r->job.origin = origin;
	r->job.write = true;
	r->job.run = run;
	r->job.done = write_done;
	r->done_cb = cb;
	r->ud = ud;
	store_job_submit(s, &r->job);
}

void store_user_create(struct store *s, void *origin, const char *host, const char *user,
		       const struct scram_creds *creds, store_done_cb *cb, void *ud)
{
	user_write(s, origin, host, user, creds, user_create_run, cb, ud);
}

void store_user_create_invited(struct store *s, void *origin, const char *host, const char *user,
			       const struct scram_creds *creds,
			       const unsigned char hash[STORE_INVITE_HASH], store_done_cb *cb,
			       void *ud)
{
	struct user_req *r = user_req_new(host, user);
	creds_check(creds);
	r->creds = *creds;
	memcpy(r->invite, hash, STORE_INVITE_HASH);
	r->job.origin = origin;
	r->job.write = true;
	r->job.run = user_create_invited_run;
	r->job.done = write_done;
	r->done_cb = cb;
	r->ud = ud;
	store_job_submit(s, &r->job);
}

void store_invite_check(struct store *s, void *origin, const char *host,
			const unsigned char hash[STORE_INVITE_HASH], store_done_cb *cb, void *ud)
{
	struct user_req *r = user_req_new(host, "");
	memcpy(r->invite, hash, STORE_INVITE_HASH);
	r->job.origin = origin;
	r->job.run = invite_check_run;
	r->job.done = write_done;
	r->done_cb = cb;
	r->ud = ud;
	store_job_submit(s, &r->job);
}

int store_invite_create_sync(struct store *s, const char *host,
			     const unsigned char hash[STORE_INVITE_HASH], long long expires)
{
	struct user_req r = {.job = {.write = true, .run = invite_create_run},
			     .host = host,
			     .user = "",
			     .expires = expires};
	memcpy(r.invite, hash, STORE_INVITE_HASH);
	return store_job_sync(s, &r.job);
}

void store_user_set_creds(struct store *s, void *origin, const char *host, const char *user,
			  const struct scram_creds *creds, store_done_cb *cb, void *ud)
{
	user_write(s, origin, host, user, creds, user_set_creds_run, cb, ud);
}

void store_user_delete(struct store *s, void *origin, const char *host, const char *user,
		       store_done_cb *cb, void *ud)
{
	user_write(s, origin, host, user, NULL, user_delete_run, cb, ud);
}

/* The sync variants keep the request on the caller's stack and borrow its
 * strings: the caller waits until the job is done with them. */
static int user_sync(struct store *s, const char *host, const char *user, bool write,
		     const struct scram_creds *creds,
		     int (*run)(struct store_job *, struct store_db *), struct scram_creds *out)
{
	struct user_req r = {
	    .job = {.write = write, .run = run},
	    .host = host,
	    .user = user,
	};
	if (creds) {
		creds_check(creds);
		r.creds = *creds;
	}
	int rc = store_job_sync(s, &r.job);
	if (out)
		*out = r.creds;
	return rc;
}

int store_user_create_sync(struct store *s, const char *host, const char *user,
			   const struct scram_creds *creds)
{
	return user_sync(s, host, user, true, creds, user_create_run, NULL);
}

int store_user_set_creds_sync(struct store *s, const char *host, const char *user,
			      const struct scram_creds *creds)
{
	return user_sync(s, host, user, true, creds, user_set_creds_run, NULL);
}

int store_user_delete_sync(struct store *s, const char *host, const char *user)
{
	return user_sync(s, host, user, true, NULL, user_delete_run, NULL);
}

int store_user_get_creds_sync(struct store *s, const char *host, const char *user,
			      struct scram_creds *out)
{
	int rc = user_sync(s, host, user, false, NULL, user_get_creds_run, out);
	if (rc)
		memset(out, 0, sizeof(*out));
	return rc;
}

struct list_req {
	struct store_job job;
	const char *host; /* borrowed; NULL: all hosts */
	char *after_host; /* owned: the last pair of the previous page */
	char *after_user;
	char *page; /* owned: n pairs "host\0user\0" */
	size_t len, cap;
	int n;
};

static void page_add(struct list_req *r, const unsigned char *s, int n)
{
	size_t need = (size_t)n + 1;
	if (r->len + need > r->cap) {
		size_t cap = r->cap ? r->cap : 4096;
		while (r->len + need > cap)
			cap *= 2;
		char *p = realloc(r->page, cap);
		if (!p)
			die_oom();
		r->page = p;
		r->cap = cap;
	}
	if (n)
		memcpy(r->page + r->len, s, (size_t)n);
	r->page[r->len + (size_t)n] = 0;
	r->len += need;
}

static int user_list_run(struct store_job *job, struct store_db *db)
{
	struct list_req *r = (struct list_req *)job;
	r->len = 0;
	r->n = 0;
	sqlite3_stmt *st = store_stmt(db, r->host ? &q_list_host : &q_list_all);
	if (!st)
		return STORE_ERROR;
	if (r->host) {
		sqlite3_bind_text(st, 1, r->host, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, r->after_user ? r->after_user : "", -1, SQLITE_STATIC);
	} else {
		sqlite3_bind_text(st, 1, r->after_host ? r->after_host : "", -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, r->after_user ? r->after_user : "", -1, SQLITE_STATIC);
	}
	sqlite3_bind_int(st, 3, STORE_LIST_PAGE);
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		page_add(r, sqlite3_column_text(st, 0), sqlite3_column_bytes(st, 0));
		page_add(r, sqlite3_column_text(st, 1), sqlite3_column_bytes(st, 1));
		r->n++;
	}
	if (rc != SQLITE_DONE)
		return store_db_fail(db, "list users");
	return STORE_OK;
}

int store_user_list_sync(struct store *s, const char *host,
			 void (*fn)(void *ud, const char *host, const char *user), void *ud)
{
	struct list_req r = {.job = {.run = user_list_run}, .host = host};
	int rc;
	for (;;) {
		rc = store_job_sync(s, &r.job);
		if (rc || !r.n)
			break;
		const char *p = r.page, *h = NULL, *u = NULL;
		for (int i = 0; i < r.n; i++) {
			h = p;
			p += strlen(p) + 1;
			u = p;
			p += strlen(p) + 1;
			fn(ud, h, u);
		}
		free(r.after_host);
		free(r.after_user);
		r.after_host = strdup(h);
		r.after_user = strdup(u);
		if (!r.after_host || !r.after_user)
			die_oom();
		if (r.n < STORE_LIST_PAGE)
			break;
	}
	free(r.after_host);
	free(r.after_user);
	free(r.page);
	return rc;
}

/* ---- server settings ---- */

static struct store_query q_meta_get = STORE_QUERY("SELECT value FROM meta WHERE key = ?1");
static struct store_query q_meta_set =
    STORE_QUERY("INSERT INTO meta (key, value) VALUES (?1, ?2)"
		" ON CONFLICT (key) DO UPDATE SET value = excluded.value");

struct meta_req {
	struct store_job job;
	const char *key;    /* borrowed from the sync caller, like the rest */
	unsigned char *out; /* get: where the value goes */
	size_t cap;
	const unsigned char *in; /* set: the value */
	size_t len;		 /* set: its size; get: the stored size */
};

static int meta_get_run(struct store_job *job, struct store_db *db)
{
	struct meta_req *r = (struct meta_req *)job;
	sqlite3_stmt *st = store_stmt(db, &q_meta_get);
	if (!st)
		return STORE_ERROR;
	sqlite3_bind_text(st, 1, r->key, -1, SQLITE_STATIC);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_DONE)
		return STORE_NOT_FOUND;
	if (rc != SQLITE_ROW)
		return store_db_fail(db, "read setting");
	const void *v = sqlite3_column_blob(st, 0);
	r->len = (size_t)sqlite3_column_bytes(st, 0);
	if (r->len && r->cap)
		memcpy(r->out, v, r->len < r->cap ? r->len : r->cap);
	return STORE_OK;
}

static int meta_set_run(struct store_job *job, struct store_db *db)
{
	struct meta_req *r = (struct meta_req *)job;
	sqlite3_stmt *st = store_stmt(db, &q_meta_set);
	if (!st)
		return STORE_ERROR;
	sqlite3_bind_text(st, 1, r->key, -1, SQLITE_STATIC);
	/* A zero-length blob with a NULL pointer would bind NULL, which the
	 * NOT NULL column refuses. */
	sqlite3_bind_blob(st, 2, r->len ? (const void *)r->in : "", (int)r->len, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_DONE)
		return store_db_fail(db, "write setting");
	return STORE_OK;
}

int store_meta_get_sync(struct store *s, const char *key, unsigned char *val, size_t cap,
			size_t *len)
{
	struct meta_req r = {.job = {.run = meta_get_run}, .key = key, .out = val, .cap = cap};
	int rc = store_job_sync(s, &r.job);
	*len = rc ? 0 : r.len;
	return rc;
}

int store_meta_set_sync(struct store *s, const char *key, const unsigned char *val, size_t len)
{
	struct meta_req r = {
	    .job = {.write = true, .run = meta_set_run},
	    .key = key,
	    .in = val,
	    .len = len,
	};
	return store_job_sync(s, &r.job);
}
