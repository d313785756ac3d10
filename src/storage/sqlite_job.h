/* Generic jobs on the SQLite storage thread, for SQLite-backed feature code
 * (rosters, offline messages, archives, ...).
 *
 * Why a second header: store.h is the typed, backend-neutral interface that
 * c2s and parleyctl call, and a PostgreSQL driver will implement it as
 * well. A job sees the SQLite connection, so it cannot be portable; keeping
 * it here means only a feature's SQLite backend includes SQLite types, and
 * callers never do. A feature adds typed functions to store.h (or its own
 * header) and implements them in its SQLite file with jobs, as sqlite.c does
 * for accounts.
 *
 * A job is a one-shot request that the caller allocates, usually embedded
 * first in its own request struct (one malloc per request, found again in
 * the callbacks with a cast or container_of):
 *
 *	struct roster_req { struct store_job job; ...arguments and results... };
 *
 * Jobs run in submission order (lazy writes aside, see below). Consecutive
 * write jobs share one transaction (group commit), each in its own
 * savepoint, so a write job applies whole or not at all whatever its
 * neighbours do. A read job runs
 * in its own read transaction, so all its queries see one snapshot. */
#ifndef PARLEY_SQLITE_JOB_H
#define PARLEY_SQLITE_JOB_H

#include <stdbool.h>

#include "storage/store.h"

struct sqlite3;
struct sqlite3_stmt;
struct store_db; /* the connection as a job sees it: handle and statement cache */

struct store_job {
	/* Set by the submitter. */
	void *origin; /* borrowed: handed to post(); unused by store_job_sync */
	bool write;
	/* On the storage thread. Returns STORE_OK or another enum store_rc;
	 * a write job that does not return STORE_OK is rolled back. Results
	 * are copied into the job: nothing may point into SQLite's memory
	 * once run returns. */
	int (*run)(struct store_job *job, struct store_db *db);
	/* On origin's thread, through post(), once the transaction is durable.
	 * rc is run's, or STORE_ERROR if the commit failed. The job is the
	 * submitter's again and may be freed here. Unused by store_job_sync. */
	void (*done)(struct store_job *job, int rc);
	/* Optional, for state kept in memory beside the store (blocklists):
	 * on the storage thread, in commit order, once the write is durable
	 * and run returned STORE_OK, before done is posted. Applying a change
	 * to the memory copy here, not in done, keeps it in the order the
	 * store applied the changes; done callbacks on different workers can
	 * run in any order. Must be quick and must not block. */
	void (*committed)(struct store_job *job);

	/* Private to the store. */
	struct store_job *next;
	int rc;
	bool sync;
	bool finished;
	bool lazy;	 /* store_job_submit_lazy() */
	bool after_lazy; /* store_job_submit_after_lazy() */
};

/* Queues a job; done will be posted to job->origin. The store must have
 * been opened with a post function. */
void store_job_submit(struct store *s, struct store_job *job);
/* Queues a write that may wait a few milliseconds (STORE_LAZY_MS) to
 * share the next transaction, for data nobody waits on (last activity):
 * under load that saves an fsync per write. It still runs before every write queued
 * after it, but a read queued after it may not see it, unless the read is
 * queued with store_job_submit_after_lazy(). */
void store_job_submit_lazy(struct store *s, struct store_job *job);
/* Queues a read that sees every write queued before it, lazy ones too. */
void store_job_submit_after_lazy(struct store *s, struct store_job *job);
/* Runs a job through the queue and waits for it; returns its rc. */
int store_job_sync(struct store *s, struct store_job *job);

/* A query whose prepared statement is cached per connection. Declare it
 * static next to the code that uses it:
 *	static struct store_query q_get = STORE_QUERY("SELECT ... WHERE k = ?1");
 */
struct store_query {
	const char *sql;
	int slot; /* private: cache slot + 1, assigned on first use */
};
#define STORE_QUERY(text)                                                                          \
	{                                                                                          \
		.sql = (text)                                                                      \
	}

/* The cached statement for q, reset and unbound, or NULL (logged) if it
 * does not prepare. The store resets it again after the job, so a job may
 * stop stepping early. Storage thread only. */
struct sqlite3_stmt *store_stmt(struct store_db *db, struct store_query *q);
struct sqlite3 *store_db_handle(struct store_db *db);
/* Logs SQLite's last error with what was being done; returns STORE_ERROR. */
int store_db_fail(struct store_db *db, const char *what);
/* Whether the account host/user exists: STORE_OK, STORE_NOT_FOUND or
 * STORE_ERROR (logged). For jobs that must not write for a missing one. */
int store_db_user_exists(struct store_db *db, const char *host, const char *user);

#endif
