/* Account writes that need a password turned into SCRAM keys. PBKDF2 at
 * our iteration counts costs tens of milliseconds per account (three
 * hashes), far too long for an event loop, so the keys are derived on a
 * short-lived thread of their own, which then queues the store write; the
 * store's completion comes back to the asking worker as usual. Callers
 * rate-limit these requests (registrations per IP, password changes per
 * account), and at most ACCOUNT_KDF_MAX run at once server-wide, so many
 * addresses together cannot start threads without bound either. */
#include "server/server.h"

#include <openssl/crypto.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <unistd.h>

#include "core/log.h"
#include "server/throttle.h"
#include "storage/store.h"

static atomic_int in_flight;

struct pw_job {
	enum account_pw_op op;
	int iterations;
	void *origin;
	store_done_cb *cb;
	void *ud;
	bool invited;
	unsigned char invite[STORE_INVITE_HASH];
	char host[JID_PART_MAX + 1];
	char user[JID_PART_MAX + 1];
	char password[ACCOUNT_PASSWORD_MAX + 1];
};

/* On the asking worker, when no keys could be made (the RNG failed). */
static void pw_failed(void *arg)
{
	struct pw_job *j = arg;
	j->cb(j->ud, STORE_ERROR);
	free(j);
}

/* On the asking worker, when too many derivations were running. */
static void pw_busy(void *arg)
{
	struct pw_job *j = arg;
	j->cb(j->ud, ACCOUNT_BUSY);
	free(j);
}

static void *pw_main(void *arg)
{
	struct pw_job *j = arg;
	struct scram_creds creds;
	int ok = scram_make_creds(j->password, j->iterations, &creds);
	OPENSSL_cleanse(j->password, sizeof(j->password));
	struct store *st = srv->store;
	if (ok < 0) {
		LOG(LOG_ERROR, "account: %s@%s: cannot derive SCRAM keys", j->user, j->host);
		loop_post(j->origin, pw_failed, j);
		j = NULL;
	} else if (j->op == ACCOUNT_PW_CHANGE) {
		store_user_set_creds(st, j->origin, j->host, j->user, &creds, j->cb, j->ud);
	} else if (j->invited) {
		store_user_create_invited(st, j->origin, j->host, j->user, &creds, j->invite, j->cb,
					  j->ud);
	} else {
		store_user_create(st, j->origin, j->host, j->user, &creds, j->cb, j->ud);
	}
	OPENSSL_cleanse(&creds, sizeof(creds));
	free(j);
	atomic_fetch_sub(&in_flight, 1);
	return NULL;
}

void account_password_write(enum account_pw_op op, const char *host, const char *user,
			    const char *password, const unsigned char *invite, store_done_cb *cb,
			    void *ud)
{
	struct worker *w = worker_current();
	ASSERT(w && strlen(password) <= ACCOUNT_PASSWORD_MAX);
	struct pw_job *j = calloc(1, sizeof(*j));
	if (!j)
		die_oom();
	j->op = op;
	j->iterations = (int)w->conf.scram_iterations;
	j->origin = w->loop;
	j->cb = cb;
	j->ud = ud;
	if (invite) {
		j->invited = true;
		memcpy(j->invite, invite, STORE_INVITE_HASH);
	}
	snprintf(j->host, sizeof(j->host), "%s", host);
	snprintf(j->user, sizeof(j->user), "%s", user);
	snprintf(j->password, sizeof(j->password), "%s", password);
	if (atomic_fetch_add(&in_flight, 1) >= ACCOUNT_KDF_MAX) {
		atomic_fetch_sub(&in_flight, 1);
		OPENSSL_cleanse(j->password, sizeof(j->password));
		LOG(LOG_WARN, "account: %d key derivations running already; %s@%s refused for now",
		    ACCOUNT_KDF_MAX, user, host);
		/* Answered later, as the store would: callers expect no reentry. */
		loop_post(w->loop, pw_busy, j);
		return;
	}
	pthread_attr_t attr;
	pthread_t t;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&t, &attr, pw_main, j) != 0) {
		LOG(LOG_WARN, "account: no thread for key derivation; deriving on the worker");
		pw_main(j);
	}
	pthread_attr_destroy(&attr);
}

void account_wait_idle(void)
{
	while (atomic_load(&in_flight) > 0)
		usleep(1000);
}

void account_kick(const struct jid *bare, const char *cond, const char *text)
{
	struct reg_target t[64];
	size_t n = registry_find_bare(bare, t, 64);
	for (size_t i = 0; i < n && i < 64; i++)
		kick_session(&t[i], cond, text);
	/* Streams that authenticated (or are authenticating) but have not
	 * bound are not in the registry; they would bind to an account that
	 * is gone. A login whose credentials were read before the removal
	 * committed has its completion queued on its worker before this
	 * post, so it is caught too. */
	struct jid_names nm;
	jid_names(bare, &nm);
	c2s_kick_unbound(nm.host, nm.user, cond, text);
}

void account_removed(struct host *h, const struct jid *bare)
{
	struct stanza *st = stanza_new(ST_PRESENCE, "unavailable");
	stanza_set_from(st, bare);
	struct hook_ev ev = {.st = st, .host = h};
	hooks_run(h, HP_ACCOUNT_REMOVED, &ev);
	stanza_free(st);
}

bool account_rate(const struct jid *bare, const char *what, unsigned per_minute)
{
	char key[3 * JID_PART_MAX + 64];
	snprintf(key, sizeof(key), "%s:%.*s", what, (int)jid_bare_len(bare), bare->s);
	return throttle_add(THR_PASSWD, key, loop_now(worker_current()->loop)) <= per_minute;
}
