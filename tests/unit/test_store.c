#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "storage/store.h"
#include "storage/account_store.h"
#include "storage/sqlite_job.h"

/* ---- fixture: a fresh directory per test ---- */

struct fx {
	char dir[64];
	char path[128];
};

static int fx_setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	if (!f)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/parley-store-XXXXXX");
	if (!mkdtemp(f->dir)) {
		free(f);
		return -1;
	}
	snprintf(f->path, sizeof(f->path), "%s/parley.db", f->dir);
	*state = f;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;
	static const char *const suffix[] = {"", "-wal", "-shm", "-journal"};
	char p[160];
	for (size_t i = 0; i < sizeof(suffix) / sizeof(suffix[0]); i++) {
		snprintf(p, sizeof(p), "%s%s", f->path, suffix[i]);
		unlink(p);
	}
	rmdir(f->dir);
	free(f);
	return 0;
}

/* ---- a stand-in for a worker's inbox: completions run on the test thread ---- */

struct posted {
	struct posted *next;
	void (*fn)(void *);
	void *arg;
};

static pthread_mutex_t inbox_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t inbox_cond = PTHREAD_COND_INITIALIZER;
static struct posted *inbox_head, **inbox_tail = &inbox_head;
static int inbox_origin;	/* its address is the origin we pass */
static int inbox_wrong_origin;	/* posts with another origin */
static int inbox_posts_on_test; /* posts made from the test thread itself */
static pthread_t test_thread;

static void test_post(void *origin, void (*fn)(void *arg), void *arg)
{
	struct posted *p = malloc(sizeof(*p));
	assert_non_null(p);
	p->next = NULL;
	p->fn = fn;
	p->arg = arg;
	pthread_mutex_lock(&inbox_mu);
	if (origin != &inbox_origin)
		inbox_wrong_origin++;
	if (pthread_equal(pthread_self(), test_thread))
		inbox_posts_on_test++;
	*inbox_tail = p;
	inbox_tail = &p->next;
	pthread_cond_signal(&inbox_cond);
	pthread_mutex_unlock(&inbox_mu);
}

/* Runs posted completions until *count reaches want; fails after 60 s
 * rather than hanging. */
static void pump_until(const int *count, int want)
{
	struct timespec dl;
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += 60;
	while (*count < want) {
		pthread_mutex_lock(&inbox_mu);
		while (!inbox_head) {
			int rc = pthread_cond_timedwait(&inbox_cond, &inbox_mu, &dl);
			if (rc == ETIMEDOUT) {
				pthread_mutex_unlock(&inbox_mu);
				fail_msg("timed out waiting for completions (%d of %d)", *count,
					 want);
			}
		}
		struct posted *p = inbox_head;
		inbox_head = p->next;
		if (!inbox_head)
			inbox_tail = &inbox_head;
		pthread_mutex_unlock(&inbox_mu);
		p->fn(p->arg);
		free(p);
	}
}

static void inbox_reset(void)
{
	test_thread = pthread_self();
	inbox_wrong_origin = 0;
	inbox_posts_on_test = 0;
}

/* ---- helpers ---- */

static const size_t key_len[SCRAM_NHASH] = {20, 32, 64};

static void make_creds(struct scram_creds *c, int seed)
{
	memset(c, 0, sizeof(*c));
	for (int h = 0; h < SCRAM_NHASH; h++) {
		struct scram_key *k = &c->k[h];
		k->iterations = 4096 + seed + h;
		k->salt_len = 16 + (size_t)h;
		for (size_t i = 0; i < k->salt_len; i++)
			k->salt[i] = (unsigned char)(seed * 7 + h + i);
		for (size_t i = 0; i < key_len[h]; i++) {
			k->stored_key[i] = (unsigned char)(seed * 3 + h * 11 + i);
			k->server_key[i] = (unsigned char)(seed * 5 + h * 13 + i + 1);
		}
	}
}

static void assert_creds_equal(const struct scram_creds *a, const struct scram_creds *b)
{
	for (int h = 0; h < SCRAM_NHASH; h++) {
		assert_int_equal(a->k[h].iterations, b->k[h].iterations);
		if (!a->k[h].iterations)
			continue;
		assert_int_equal(a->k[h].salt_len, b->k[h].salt_len);
		assert_memory_equal(a->k[h].salt, b->k[h].salt, a->k[h].salt_len);
		assert_memory_equal(a->k[h].stored_key, b->k[h].stored_key, key_len[h]);
		assert_memory_equal(a->k[h].server_key, b->k[h].server_key, key_len[h]);
	}
}

/* Runs one SQL statement on a separate raw connection; returns the first
 * column of the first row as an integer, or -1 if there is no row. */
static long long raw_int(const char *path, const char *sql)
{
	sqlite3 *h;
	assert_int_equal(sqlite3_open(path, &h), SQLITE_OK);
	sqlite3_busy_timeout(h, 5000);
	sqlite3_stmt *st;
	assert_int_equal(sqlite3_prepare_v2(h, sql, -1, &st, NULL), SQLITE_OK);
	int rc = sqlite3_step(st);
	assert_true(rc == SQLITE_ROW || rc == SQLITE_DONE);
	long long v = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
	sqlite3_finalize(st);
	assert_int_equal(sqlite3_close(h), SQLITE_OK);
	return v;
}

static const char *raw_text(const char *path, const char *sql, char *out, size_t cap)
{
	sqlite3 *h;
	assert_int_equal(sqlite3_open(path, &h), SQLITE_OK);
	sqlite3_stmt *st;
	assert_int_equal(sqlite3_prepare_v2(h, sql, -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	snprintf(out, cap, "%s", (const char *)sqlite3_column_text(st, 0));
	sqlite3_finalize(st);
	sqlite3_close(h);
	return out;
}

struct names {
	int n;
	char got[64][64];
};

static void collect(void *ud, const char *host, const char *user)
{
	struct names *l = ud;
	if (l->n < 64)
		snprintf(l->got[l->n], sizeof(l->got[0]), "%s/%s", user, host);
	l->n++;
}

/* ---- tests ---- */

static void test_open_schema(void **state)
{
	struct fx *f = *state;
	struct store *s = store_open(f->path, NULL);
	assert_non_null(s);
	assert_int_equal(store_schema_version(s), store_schema_latest());
	store_close(s);

	char buf[32];
	assert_int_equal(raw_int(f->path, "SELECT MAX(version) FROM schema_version"),
			 store_schema_latest());
	assert_int_equal(raw_int(f->path, "SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table'"
					  " AND name IN ('users', 'scram_keys', 'meta')"),
			 3);
	assert_string_equal(raw_text(f->path, "PRAGMA journal_mode", buf, sizeof(buf)), "wal");

	/* Reopening applies nothing again. */
	s = store_open(f->path, NULL);
	assert_non_null(s);
	assert_int_equal(store_schema_version(s), store_schema_latest());
	store_close(s);
	assert_int_equal(raw_int(f->path, "SELECT COUNT(*) FROM schema_version"),
			 store_schema_latest());
}

static void test_users(void **state)
{
	struct fx *f = *state;
	struct store *s = store_open(f->path, NULL);
	assert_non_null(s);

	struct scram_creds c1, c2, got;
	make_creds(&c1, 1);
	make_creds(&c2, 2);
	assert_int_equal(store_user_get_creds_sync(s, "a.example", "juliet", &got),
			 STORE_NOT_FOUND);
	assert_int_equal(store_user_create_sync(s, "a.example", "juliet", &c1), STORE_OK);
	assert_int_equal(store_user_create_sync(s, "a.example", "juliet", &c2), STORE_EXISTS);
	/* The failed create left the first keys alone. */
	assert_int_equal(store_user_get_creds_sync(s, "a.example", "juliet", &got), STORE_OK);
	assert_creds_equal(&got, &c1);
	/* Same user name on another host is another account. */
	assert_int_equal(store_user_get_creds_sync(s, "b.example", "juliet", &got),
			 STORE_NOT_FOUND);
	assert_int_equal(store_user_create_sync(s, "b.example", "juliet", &c2), STORE_OK);

	assert_int_equal(store_user_set_creds_sync(s, "a.example", "juliet", &c2), STORE_OK);
	assert_int_equal(store_user_get_creds_sync(s, "a.example", "juliet", &got), STORE_OK);
	assert_creds_equal(&got, &c2);
	assert_int_equal(store_user_set_creds_sync(s, "a.example", "romeo", &c2), STORE_NOT_FOUND);

	/* Only the hashes present are stored; absent ones read back as zero. */
	struct scram_creds only256;
	make_creds(&only256, 3);
	only256.k[SCRAM_SHA1].iterations = 0;
	only256.k[SCRAM_SHA512].iterations = 0;
	assert_int_equal(store_user_create_sync(s, "a.example", "nurse", &only256), STORE_OK);
	assert_int_equal(store_user_get_creds_sync(s, "a.example", "nurse", &got), STORE_OK);
	assert_creds_equal(&got, &only256);
	assert_int_equal(got.k[SCRAM_SHA1].salt_len, 0);

	assert_int_equal(store_user_create_sync(s, "a.example", "benvolio", &c1), STORE_OK);
	assert_int_equal(store_user_create_sync(s, "a.example", "ábc", &c1), STORE_OK);

	struct names all = {0}, a = {0}, none = {0};
	assert_int_equal(store_user_list_sync(s, NULL, collect, &all), STORE_OK);
	assert_int_equal(all.n, 5);
	assert_string_equal(all.got[0], "benvolio/a.example");
	assert_string_equal(all.got[1], "juliet/a.example");
	assert_string_equal(all.got[2], "nurse/a.example");
	assert_string_equal(all.got[3], "ábc/a.example");
	assert_string_equal(all.got[4], "juliet/b.example");
	assert_int_equal(store_user_list_sync(s, "a.example", collect, &a), STORE_OK);
	assert_int_equal(a.n, 4);
	assert_string_equal(a.got[3], "ábc/a.example");
	assert_int_equal(store_user_list_sync(s, "c.example", collect, &none), STORE_OK);
	assert_int_equal(none.n, 0);

	assert_int_equal(store_user_delete_sync(s, "a.example", "juliet"), STORE_OK);
	assert_int_equal(store_user_get_creds_sync(s, "a.example", "juliet", &got),
			 STORE_NOT_FOUND);
	assert_int_equal(store_user_delete_sync(s, "a.example", "juliet"), STORE_NOT_FOUND);
	assert_int_equal(store_user_get_creds_sync(s, "b.example", "juliet", &got), STORE_OK);
	assert_creds_equal(&got, &c2);
	store_close(s);
}

static void count_only(void *ud, const char *host, const char *user)
{
	(*(int *)ud)++;
}

/* More users than one list page, to cross page boundaries. */
static void test_list_pages(void **state)
{
	struct fx *f = *state;
	struct store *s = store_open(f->path, NULL);
	assert_non_null(s);
	struct scram_creds c;
	make_creds(&c, 0);
	char user[32];
	for (int i = 0; i < 600; i++) {
		snprintf(user, sizeof(user), "u%04d", i);
		assert_int_equal(
		    store_user_create_sync(s, i % 3 ? "x.example" : "y.example", user, &c),
		    STORE_OK);
	}
	int n_all = 0, n_x = 0;
	assert_int_equal(store_user_list_sync(s, NULL, count_only, &n_all), STORE_OK);
	assert_int_equal(store_user_list_sync(s, "x.example", count_only, &n_x), STORE_OK);
	assert_int_equal(n_all, 600);
	assert_int_equal(n_x, 400);
	store_close(s);
}

static void test_delete_cascades(void **state)
{
	struct fx *f = *state;
	struct store *s = store_open(f->path, NULL);
	assert_non_null(s);
	struct scram_creds c;
	make_creds(&c, 1);
	assert_int_equal(store_user_create_sync(s, "a.example", "juliet", &c), STORE_OK);
	assert_int_equal(store_user_create_sync(s, "a.example", "romeo", &c), STORE_OK);
	/* A second connection may read while the store is open (WAL). */
	assert_int_equal(raw_int(f->path, "SELECT COUNT(*) FROM scram_keys"), 6);
	assert_int_equal(store_user_delete_sync(s, "a.example", "juliet"), STORE_OK);
	store_close(s);
	assert_int_equal(
	    raw_int(f->path, "SELECT COUNT(*) FROM scram_keys WHERE username = 'juliet'"), 0);
	assert_int_equal(
	    raw_int(f->path, "SELECT COUNT(*) FROM scram_keys WHERE username = 'romeo'"), 3);
}

struct get_result {
	int calls;
	int rc;
	bool on_test_thread;
	struct scram_creds creds;
};

static void on_creds(void *ud, int rc, const struct scram_creds *creds)
{
	struct get_result *r = ud;
	r->calls++;
	r->rc = rc;
	r->on_test_thread = pthread_equal(pthread_self(), test_thread);
	if (creds)
		r->creds = *creds;
	else
		memset(&r->creds, 0xee, sizeof(r->creds));
}

static void test_async_get(void **state)
{
	struct fx *f = *state;
	inbox_reset();
	struct store *s = store_open(f->path, test_post);
	assert_non_null(s);
	struct scram_creds c;
	make_creds(&c, 9);
	assert_int_equal(store_user_create_sync(s, "a.example", "juliet", &c), STORE_OK);

	struct get_result hit = {0}, miss = {0};
	store_user_get_creds(s, &inbox_origin, "a.example", "juliet", on_creds, &hit);
	store_user_get_creds(s, &inbox_origin, "a.example", "nobody", on_creds, &miss);
	/* Nothing runs on the test thread until it pumps its inbox. */
	assert_int_equal(hit.calls, 0);
	assert_int_equal(miss.calls, 0);
	pump_until(&miss.calls, 1);
	assert_int_equal(hit.calls + miss.calls, 2);
	assert_int_equal(hit.rc, STORE_OK);
	assert_true(hit.on_test_thread);
	assert_creds_equal(&hit.creds, &c);
	assert_int_equal(miss.rc, STORE_NOT_FOUND);
	assert_true(miss.on_test_thread);
	/* post itself was called from the storage thread, with our origin. */
	assert_int_equal(inbox_posts_on_test, 0);
	assert_int_equal(inbox_wrong_origin, 0);
	store_close(s);
}

/* A read job that holds the storage thread until released, so that the
 * requests submitted meanwhile pile up in the queue. */
struct gate {
	struct store_job job;
	pthread_mutex_t mu;
	pthread_cond_t cond;
	bool entered, open;
	int done;
};

static int gate_run(struct store_job *job, struct store_db *db)
{
	struct gate *g = (struct gate *)job;
	pthread_mutex_lock(&g->mu);
	g->entered = true;
	pthread_cond_broadcast(&g->cond);
	while (!g->open)
		pthread_cond_wait(&g->cond, &g->mu);
	pthread_mutex_unlock(&g->mu);
	return STORE_OK;
}

static void gate_done(struct store_job *job, int rc)
{
	((struct gate *)job)->done++;
}

static void gate_close(struct store *s, struct gate *g)
{
	memset(g, 0, sizeof(*g));
	pthread_mutex_init(&g->mu, NULL);
	pthread_cond_init(&g->cond, NULL);
	g->job.origin = &inbox_origin;
	g->job.run = gate_run;
	g->job.done = gate_done;
	store_job_submit(s, &g->job);
	pthread_mutex_lock(&g->mu);
	while (!g->entered)
		pthread_cond_wait(&g->cond, &g->mu);
	pthread_mutex_unlock(&g->mu);
}

static void gate_open(struct gate *g)
{
	pthread_mutex_lock(&g->mu);
	g->open = true;
	pthread_cond_broadcast(&g->cond);
	pthread_mutex_unlock(&g->mu);
}

static void gate_destroy(struct gate *g)
{
	pthread_cond_destroy(&g->cond);
	pthread_mutex_destroy(&g->mu);
}

struct write_tally {
	int done, ok, wrong_thread;
};

static void on_write(void *ud, int rc)
{
	struct write_tally *t = ud;
	t->done++;
	if (rc == STORE_OK)
		t->ok++;
	if (!pthread_equal(pthread_self(), test_thread))
		t->wrong_thread++;
}

static void test_many_async_writes(void **state)
{
	struct fx *f = *state;
	inbox_reset();
	struct store *s = store_open(f->path, test_post);
	assert_non_null(s);
	struct store_stats before, after;
	store_stats(s, &before);

	struct gate g;
	gate_close(s, &g);
	struct write_tally t = {0};
	struct scram_creds c;
	char user[32];
	for (int i = 0; i < 1000; i++) {
		make_creds(&c, i);
		snprintf(user, sizeof(user), "user%d", i);
		store_user_create(s, &inbox_origin, "a.example", user, &c, on_write, &t);
	}
	gate_open(&g);
	pump_until(&t.done, 1000);
	pump_until(&g.done, 1);
	gate_destroy(&g);
	assert_int_equal(t.ok, 1000);
	assert_int_equal(t.wrong_thread, 0);

	/* All 1000 were queued together, so they share a few transactions. */
	store_stats(s, &after);
	assert_int_equal(after.writes - before.writes, 1000);
	assert_true(after.commits - before.commits <= 1000 / 256 + 1);
	assert_true(after.commits - before.commits >= 1);
	assert_int_equal(after.errors, 0);
	store_close(s);

	s = store_open(f->path, NULL);
	assert_non_null(s);
	int n = 0;
	assert_int_equal(store_user_list_sync(s, "a.example", count_only, &n), STORE_OK);
	assert_int_equal(n, 1000);
	struct scram_creds got;
	assert_int_equal(store_user_get_creds_sync(s, "a.example", "user777", &got), STORE_OK);
	make_creds(&c, 777);
	assert_creds_equal(&got, &c);
	store_close(s);
}

static int inbox_len(void)
{
	int n = 0;
	pthread_mutex_lock(&inbox_mu);
	for (struct posted *p = inbox_head; p; p = p->next)
		n++;
	pthread_mutex_unlock(&inbox_mu);
	return n;
}

/* store_close runs what is still queued, and its completions are posted
 * before it returns. */
static void test_close_drains(void **state)
{
	struct fx *f = *state;
	inbox_reset();
	struct store *s = store_open(f->path, test_post);
	assert_non_null(s);
	struct gate g;
	gate_close(s, &g);
	struct write_tally t = {0};
	struct scram_creds c;
	make_creds(&c, 5);
	char user[32];
	for (int i = 0; i < 100; i++) {
		snprintf(user, sizeof(user), "user%d", i);
		store_user_create(s, &inbox_origin, "a.example", user, &c, on_write, &t);
	}
	gate_open(&g);
	store_close(s);
	assert_int_equal(inbox_len(), 101);
	pump_until(&t.done, 100);
	pump_until(&g.done, 1);
	gate_destroy(&g);
	assert_int_equal(t.ok, 100);

	s = store_open(f->path, NULL);
	assert_non_null(s);
	int n = 0;
	assert_int_equal(store_user_list_sync(s, NULL, count_only, &n), STORE_OK);
	assert_int_equal(n, 100);
	store_close(s);
}

struct last_seen {
	int done, rc;
	long long when;
	char status[32];
};

static void on_last(void *ud, int rc, long long when, const char *status)
{
	struct last_seen *l = ud;
	l->done++;
	l->rc = rc;
	l->when = when;
	snprintf(l->status, sizeof(l->status), "%s", status ? status : "");
}

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Last activity is written lazily: it waits a few milliseconds for a
 * transaction to share, yet a last-activity read sees it at once, and a
 * later write (the account's deletion) never overtakes it. */
static void test_lazy_writes(void **state)
{
	struct fx *f = *state;
	inbox_reset();
	struct store *s = store_open(f->path, test_post);
	assert_non_null(s);
	struct scram_creds c;
	make_creds(&c, 1);
	assert_int_equal(store_user_create_sync(s, "a.example", "juliet", &c), STORE_OK);
	struct write_tally t = {0};
	struct last_seen l = {0};

	/* Read right after the write: it sees it. */
	store_last_set(s, &inbox_origin, "a.example", "juliet", 100, "away", on_write, &t);
	store_last_get(s, &inbox_origin, "a.example", "juliet", on_last, &l);
	pump_until(&l.done, 1);
	assert_int_equal(l.rc, STORE_OK);
	assert_int_equal(l.when, 100);
	assert_string_equal(l.status, "away");
	pump_until(&t.done, 1);
	assert_int_equal(t.ok, 1);

	/* Alone, it is committed soon. */
	double t0 = now_s();
	store_last_set(s, &inbox_origin, "a.example", "juliet", 200, NULL, on_write, &t);
	pump_until(&t.done, 2);
	assert_int_equal(t.ok, 2);
	assert_true(now_s() - t0 < 5);

	/* Many of them share transactions. */
	struct store_stats st0, st1;
	store_stats(s, &st0);
	for (int i = 0; i < 200; i++)
		store_last_set(s, &inbox_origin, "a.example", "juliet", 300 + i, "x", on_write, &t);
	pump_until(&t.done, 202);
	assert_int_equal(t.ok, 202);
	store_stats(s, &st1);
	assert_true(st1.commits - st0.commits <= 100); /* 200 without sharing */

	/* A later write runs after it: the deletion leaves no row behind. */
	store_last_set(s, &inbox_origin, "a.example", "juliet", 600, "gone", on_write, &t);
	store_user_delete(s, &inbox_origin, "a.example", "juliet", on_write, &t);
	pump_until(&t.done, 204);
	assert_int_equal(t.ok, 204);
	store_last_get(s, &inbox_origin, "a.example", "juliet", on_last, &l);
	pump_until(&l.done, 2);
	assert_int_equal(l.rc, STORE_NOT_FOUND);

	/* Closing writes what waits. */
	assert_int_equal(store_user_create_sync(s, "a.example", "romeo", &c), STORE_OK);
	store_last_set(s, &inbox_origin, "a.example", "romeo", 700, "bye", on_write, &t);
	store_close(s);
	pump_until(&t.done, 205);
	assert_int_equal(t.ok, 205);
	s = store_open(f->path, test_post);
	store_last_get(s, &inbox_origin, "a.example", "romeo", on_last, &l);
	pump_until(&l.done, 3);
	assert_int_equal(l.rc, STORE_OK);
	assert_int_equal(l.when, 700);
	store_close(s);
}

static void test_async_write_kinds(void **state)
{
	struct fx *f = *state;
	inbox_reset();
	struct store *s = store_open(f->path, test_post);
	assert_non_null(s);
	struct scram_creds c1, c2, got;
	make_creds(&c1, 1);
	make_creds(&c2, 2);
	struct write_tally t = {0};
	store_user_create(s, &inbox_origin, "a.example", "juliet", &c1, on_write, &t);
	store_user_create(s, &inbox_origin, "a.example", "juliet", &c1, on_write, &t);
	store_user_set_creds(s, &inbox_origin, "a.example", "juliet", &c2, on_write, &t);
	store_user_set_creds(s, &inbox_origin, "a.example", "romeo", &c2, on_write, &t);
	store_user_delete(s, &inbox_origin, "a.example", "romeo", on_write, &t);
	pump_until(&t.done, 5);
	assert_int_equal(t.ok, 2); /* create, set; not: create again, set/delete missing */
	assert_int_equal(store_user_get_creds_sync(s, "a.example", "juliet", &got), STORE_OK);
	assert_creds_equal(&got, &c2);
	store_user_delete(s, &inbox_origin, "a.example", "juliet", on_write, &t);
	pump_until(&t.done, 6);
	assert_int_equal(t.ok, 3);
	assert_int_equal(store_user_get_creds_sync(s, "a.example", "juliet", &got),
			 STORE_NOT_FOUND);
	store_close(s);
}

static void test_reopen(void **state)
{
	struct fx *f = *state;
	struct store *s = store_open(f->path, NULL);
	assert_non_null(s);
	struct scram_creds c, got;
	make_creds(&c, 42);
	assert_int_equal(store_user_create_sync(s, "a.example", "juliet", &c), STORE_OK);
	assert_int_equal(store_meta_set_sync(s, "secret", (const unsigned char *)"s3cr3t", 6),
			 STORE_OK);
	store_close(s);

	s = store_open(f->path, NULL);
	assert_non_null(s);
	assert_int_equal(store_user_get_creds_sync(s, "a.example", "juliet", &got), STORE_OK);
	assert_creds_equal(&got, &c);
	unsigned char v[16];
	size_t len;
	assert_int_equal(store_meta_get_sync(s, "secret", v, sizeof(v), &len), STORE_OK);
	assert_int_equal(len, 6);
	assert_memory_equal(v, "s3cr3t", 6);
	store_close(s);
}

static void test_meta(void **state)
{
	struct fx *f = *state;
	struct store *s = store_open(f->path, NULL);
	assert_non_null(s);
	unsigned char v[8];
	size_t len = 99;
	assert_int_equal(store_meta_get_sync(s, "k", v, sizeof(v), &len), STORE_NOT_FOUND);
	assert_int_equal(len, 0);

	const unsigned char bin[] = {0, 1, 2, 0xff, 0};
	assert_int_equal(store_meta_set_sync(s, "k", bin, sizeof(bin)), STORE_OK);
	assert_int_equal(store_meta_get_sync(s, "k", v, sizeof(v), &len), STORE_OK);
	assert_int_equal(len, sizeof(bin));
	assert_memory_equal(v, bin, sizeof(bin));

	/* Overwrite with a longer value: truncated copy, full size reported. */
	const unsigned char longer[] = "0123456789abcdef";
	assert_int_equal(store_meta_set_sync(s, "k", longer, 16), STORE_OK);
	memset(v, 0, sizeof(v));
	assert_int_equal(store_meta_get_sync(s, "k", v, sizeof(v), &len), STORE_OK);
	assert_int_equal(len, 16);
	assert_memory_equal(v, "01234567", 8);

	assert_int_equal(store_meta_set_sync(s, "empty", NULL, 0), STORE_OK);
	assert_int_equal(store_meta_get_sync(s, "empty", v, sizeof(v), &len), STORE_OK);
	assert_int_equal(len, 0);
	store_close(s);
}

static void test_newer_schema_refused(void **state)
{
	struct fx *f = *state;
	struct store *s = store_open(f->path, NULL);
	assert_non_null(s);
	store_close(s);

	assert_int_equal(raw_int(f->path, "INSERT INTO schema_version (version, applied)"
					  " VALUES (99, 0) RETURNING version"),
			 99);
	assert_null(store_open(f->path, NULL));
	/* It refused because of the version, not for some other reason. */
	raw_int(f->path, "DELETE FROM schema_version WHERE version = 99");
	s = store_open(f->path, NULL);
	assert_non_null(s);
	assert_int_equal(store_schema_version(s), store_schema_latest());
	store_close(s);
}

/* ---- the generic job API ---- */

static struct store_query q_put = STORE_QUERY("INSERT INTO meta (key, value) VALUES (?1, x'00')");
static struct store_query q_bad = STORE_QUERY("SELECT no_such_column FROM meta");

struct put_job {
	struct store_job job;
	const char *key;
	int want_rc; /* what run returns after inserting */
	int rc;
	int calls;
};

static int put_run(struct store_job *job, struct store_db *db)
{
	struct put_job *p = (struct put_job *)job;
	sqlite3_stmt *st = store_stmt(db, &q_put);
	if (!st)
		return STORE_ERROR;
	sqlite3_bind_text(st, 1, p->key, -1, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_DONE)
		return store_db_fail(db, "put");
	return p->want_rc;
}

static void put_done(struct store_job *job, int rc)
{
	struct put_job *p = (struct put_job *)job;
	p->rc = rc;
	p->calls++;
}

static int bad_run(struct store_job *job, struct store_db *db)
{
	return store_stmt(db, &q_bad) ? STORE_OK : STORE_ERROR;
}

/* A write job that fails is rolled back alone; its neighbours in the same
 * transaction commit. */
static void test_job_savepoints(void **state)
{
	struct fx *f = *state;
	inbox_reset();
	struct store *s = store_open(f->path, test_post);
	assert_non_null(s);
	struct store_stats before, after;
	store_stats(s, &before);

	struct gate g;
	gate_close(s, &g);
	struct put_job p[3] = {
	    {.key = "a", .want_rc = STORE_OK},
	    {.key = "b", .want_rc = STORE_EXISTS},
	    {.key = "c", .want_rc = STORE_OK},
	};
	for (int i = 0; i < 3; i++) {
		p[i].job.origin = &inbox_origin;
		p[i].job.write = true;
		p[i].job.run = put_run;
		p[i].job.done = put_done;
		store_job_submit(s, &p[i].job);
	}
	gate_open(&g);
	pump_until(&p[2].calls, 1);
	assert_int_equal(p[0].calls + p[1].calls + p[2].calls, 3);
	gate_destroy(&g);
	assert_int_equal(p[0].rc, STORE_OK);
	assert_int_equal(p[1].rc, STORE_EXISTS);
	assert_int_equal(p[2].rc, STORE_OK);
	store_stats(s, &after);
	assert_int_equal(after.commits - before.commits, 1);

	size_t len;
	unsigned char v[4];
	assert_int_equal(store_meta_get_sync(s, "a", v, sizeof(v), &len), STORE_OK);
	assert_int_equal(store_meta_get_sync(s, "b", v, sizeof(v), &len), STORE_NOT_FOUND);
	assert_int_equal(store_meta_get_sync(s, "c", v, sizeof(v), &len), STORE_OK);

	/* SQLite errors come back as STORE_ERROR, and the store goes on. */
	struct store_job bad = {.run = bad_run};
	assert_int_equal(store_job_sync(s, &bad), STORE_ERROR);
	struct put_job dup = {.job = {.write = true, .run = put_run}, .key = "a"};
	assert_int_equal(store_job_sync(s, &dup.job), STORE_ERROR); /* duplicate key */
	struct put_job fresh = {.job = {.write = true, .run = put_run}, .key = "d"};
	assert_int_equal(store_job_sync(s, &fresh.job), STORE_OK);
	store_stats(s, &after);
	assert_int_equal(after.errors - before.errors, 2);
	store_close(s);
}

/* A writer on another connection (parleyctl) holding the lock for a while
 * does not make requests fail, it only delays them (busy_timeout). */
static void *commit_later(void *arg)
{
	sqlite3 *h = arg;
	usleep(300 * 1000);
	assert_int_equal(sqlite3_exec(h, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
	return NULL;
}

static void test_concurrent_writer(void **state)
{
	struct fx *f = *state;
	struct store *s = store_open(f->path, NULL);
	assert_non_null(s);
	sqlite3 *h;
	assert_int_equal(sqlite3_open(f->path, &h), SQLITE_OK);
	assert_int_equal(sqlite3_exec(h, "BEGIN IMMEDIATE; INSERT INTO meta VALUES ('x', x'01')",
				      NULL, NULL, NULL),
			 SQLITE_OK);
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, commit_later, h), 0);

	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	struct scram_creds c;
	make_creds(&c, 1);
	assert_int_equal(store_user_create_sync(s, "a.example", "juliet", &c), STORE_OK);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	pthread_join(t, NULL);
	long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
	assert_true(ms >= 200); /* it did wait for the other writer */

	/* And the other writer's row is visible to the store. */
	unsigned char v[4];
	size_t len;
	assert_int_equal(store_meta_get_sync(s, "x", v, sizeof(v), &len), STORE_OK);
	assert_int_equal(len, 1);
	assert_int_equal(sqlite3_close(h), SQLITE_OK);
	store_close(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_open_schema, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_users, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_list_pages, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_delete_cascades, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_async_get, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_many_async_writes, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_async_write_kinds, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_close_drains, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_lazy_writes, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_reopen, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_meta, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_newer_schema_refused, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_job_savepoints, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_concurrent_writer, fx_setup, fx_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
