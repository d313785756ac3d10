/* Server-wide structures: the server, its hosts, its workers and the
 * sessions they own (DESIGN §3). */
#ifndef PARLEY_SERVER_H
#define PARLEY_SERVER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <sys/socket.h>

#include "core/bucket.h"
#include "core/loop.h"
#include "server/config.h"
#include "server/module.h"
#include "xmpp/jid.h"

struct store;
struct conn;
struct xmlstream;
struct sasl;
typedef struct ssl_ctx_st SSL_CTX;

struct iq_entry;

/* The reloadable options, copied into each worker (SIGHUP posts a new
 * copy), so workers never read a config that the main thread replaces. */
struct worker_conf {
	struct limits_conf limits;
	bool require_encryption;
	bool sasl_plain;
	enum conflict_policy conflict;
	enum registration_mode registration;
	unsigned scram_iterations;
};
void worker_conf_from(struct worker_conf *wc, const struct config *c);

struct host {
	char *domain;			   /* owned */
	_Atomic(SSL_CTX *) tls;		   /* swapped on reload; old ones are kept until exit */
	_Atomic(SSL_CTX *) s2s_tls;	   /* accepting servers: asks for their certificate */
	_Atomic(SSL_CTX *) s2s_client_tls; /* connecting to servers */
	struct iq_entry **iq_table;	   /* hash: (ns, name) -> handlers; read-only after start */
	size_t iq_buckets;
	struct {
		const struct hook_reg *reg;
		const struct module *mod;
	} * hooks[HP_COUNT]; /* sorted by prio, NULL-terminated by reg == NULL */
	size_t n_hooks[HP_COUNT];
	const char **features; /* disco#info features of all modules, sorted */
	char caps_ver[32];     /* XEP-0115 verification string of the disco#info */
	char caps_node[64];    /* "node#ver" */
	char *stream_features; /* modules' post-auth stream features, concatenated */
	size_t n_features;
};

struct s2s_worker;

struct worker {
	unsigned idx;
	struct s2s_worker *s2s; /* its server-to-server streams, links and resolver */
	pthread_t thread;
	struct loop *loop;
	struct session *sessions; /* all sessions of this worker */
	size_t n_sessions;
	/* Session ids are (generation << 32 | worker << 24 | slot), so a
	 * stanza posted from another worker finds its session in O(1) and
	 * notices when the slot was reused. */
	struct session **slots;
	uint32_t n_slots, cap_slots;
	uint32_t *free_list;
	uint32_t n_free;
	uint32_t gen;
	struct worker_conf conf; /* this worker's copy; replaced on reload */
	struct timer shutdown_timer;
	struct io *listeners;
	size_t n_listeners;
	bool shutting_down;
};

struct server {
	struct config cfg;
	char *config_path;
	struct host *hosts;
	size_t n_hosts;
	struct store *store;
	struct worker *workers;
	unsigned n_workers;
	unsigned char secret[32]; /* fake SCRAM salts for unknown users */
	SSL_CTX **old_tls;	  /* replaced contexts, freed at exit */
	size_t n_old_tls;
};

extern struct server *srv;

/* Loads the config, opens the store, starts the workers. */
int server_start(const char *config_path, char *err, size_t errlen);
/* Waits for signals; returns after a clean shutdown. */
void server_run(void);

struct host *host_find(const char *domain, size_t len);
/* Waits until no key derivation of account.c is still running (its jobs
 * are queued in the store then): shutdown, before the last drain. */
void account_wait_idle(void);
struct worker *worker_current(void); /* the worker running this thread, or NULL */

/* --- Sessions (c2s.c) --- */
#define SF_TLS	      0x0001u
#define SF_OPENED     0x0002u /* stream header received and answered */
#define SF_AUTHED     0x0004u
#define SF_BOUND      0x0008u
#define SF_AVAILABLE  0x0010u /* sent available presence */
#define SF_CLOSING    0x0020u
#define SF_WAIT_STORE 0x0040u /* input paused while the store answers */
#define SF_DIRECT_TLS 0x0080u
#define SF_GONE	      0x0100u /* connection gone; waiting for refs to drop */
#define SF_UNBOUND    0x0200u /* removed from the registry (closing) */
#define SF_THROTTLED  0x0400u /* input paused: over limits.stanzas/bytes_per_second */

struct session {
	uint64_t id;
	struct worker *w;
	struct conn *conn; /* NULL once the connection is gone */
	struct xmlstream *xs;
	struct host *host; /* set when the stream header names a served host */
	unsigned flags;
	unsigned refs;	/* async operations in flight + 1 for the conn */
	struct jid jid; /* full JID once bound (malloc); bare part after auth */
	char *user;	/* authenticated localpart (malloc) */
	struct sasl *sasl;
	unsigned sasl_failures; /* attempts that reached a password check */
	unsigned sasl_rejects;	/* attempts refused before any password check */
	bool sasl_checked;	/* the current attempt looked up credentials */
	int priority;
	struct buf *inbuf;		    /* input held back while paused (malloc), or NULL */
	struct timer timer;		    /* handshake / idle deadline */
	struct timer delay;		    /* a SASL failure held back (throttling) */
	struct timer rl_timer;		    /* reading resumes when the token buckets refill */
	struct bucket rl_bytes, rl_stanzas; /* limits.bytes/stanzas_per_second */
	uint64_t ip_gauge; /* counted in the unauthenticated connections of its IP, or 0 */
	const char *delay_cond;
	uint64_t last_read;
	unsigned char cb_exporter[32];
	unsigned char cb_endpoint[64];
	size_t cb_endpoint_len;
	bool cb_have_exporter;
	/* In-band registration before authentication (XEP-0077, XEP-0445). */
	bool reg_busy;		      /* a registration is being written */
	bool reg_done;		      /* this stream registered an account */
	bool reg_invited;	      /* a valid invitation token was presented */
	unsigned char reg_invite[32]; /* its SHA-256 */
	struct session *next, *prev;  /* worker's list */
	char stream_id[24];
	void *slots[SLOT_MAX]; /* module state (module.h) */
};

void c2s_accept(struct worker *w, int fd, const struct sockaddr_storage *peer, bool direct_tls);
/* The per-address limits on a new connection (limits.connections_per_ip,
 * limits.connections_per_second_per_ip), for clients and servers alike.
 * false: fd was refused and closed. true: *gauge is the connection's share
 * of its address's unauthenticated count (0 if not counted), to be given
 * to throttle_gauge_dec() once it authenticates or closes. */
bool accept_admit(struct worker *w, int fd, const struct sockaddr_storage *peer, bool direct_tls,
		  bool server, uint64_t *gauge);
/* --- Server-to-server (s2s.c) --- */
int s2s_init(char *err, size_t errlen); /* main thread, before the workers */
void s2s_accept(struct worker *w, int fd, const struct sockaddr_storage *peer, bool direct_tls);
/* A stanza for a domain we do not serve, from one we do (consumed). */
void s2s_route(struct stanza *st);
void s2s_worker_start(struct worker *w);     /* on the worker's thread */
size_t s2s_worker_streams(struct worker *w); /* open s2s streams */
void s2s_worker_shutdown(struct worker *w);  /* close streams, bounce queues */
void s2s_worker_abort(struct worker *w);     /* after the grace period */
void s2s_worker_done(struct worker *w);	     /* free everything */

/* Closes, on every worker, the streams of user@host that are not bound
 * yet: authenticated, or in the middle of SASL (an account removal; the
 * bound ones are found through the registry). */
void c2s_kick_unbound(const char *host, const char *user, const char *cond, const char *text);
struct session *worker_session(struct worker *w, uint64_t id); /* NULL if gone */
void worker_shutdown(struct worker *w);
/* Delivers a stanza to a session of this worker (consumes it). */
void session_send(struct session *s, struct stanza *st);
/* Closes with a stream error (RFC 6120 §4.9); cond NULL: plain close. */
void session_close(struct session *s, const char *cond, const char *text);

/* --- Registry (registry.c): who is online, shared by all workers --- */
struct reg_target {
	uint64_t sess_id;
	struct worker *w;
	struct session *sess; /* may only be dereferenced on w */
	int priority;
	bool available;
};

void registry_init(void);
/* Adds a bound resource. If the full JID is taken: with kick_old, *old
 * receives the old session and the new one replaces it (returns 1); else
 * returns -1 (conflict). 0 on success with no conflict. -2: too many
 * resources for this account. */
int registry_bind(const struct jid *full, struct session *s, bool kick_old, struct reg_target *old);
void registry_unbind(const struct jid *full, uint64_t sess_id);
void registry_set_presence(const struct jid *full, uint64_t sess_id, bool available, int prio);
bool registry_find_full(const struct jid *full, struct reg_target *out);
/* Resources of a bare JID (up to cap); returns how many there are. */
size_t registry_find_bare(const struct jid *bare, struct reg_target *out, size_t cap);

/* Delivers st to a target found in the registry, posting to its worker
 * when needed (consumes st). If the session is gone by then, the
 * stanza is routed again as if to the bare JID (RFC 6121 §8.5.3.2). */
void deliver_to(const struct reg_target *t, struct stanza *st);

/* Closes a session (possibly on another worker) with a stream error;
 * cond and text must be static strings. */
void kick_session(const struct reg_target *t, const char *cond, const char *text);

/* --- Modules (module.c) --- */
void modules_register(struct host *h);
void modules_unregister(struct host *h);
/* Runs the hooks of a point; returns HOOK_DONE if one consumed ev->st. */
enum hook_rc hooks_run(struct host *h, enum hook_point p, struct hook_ev *ev);
/* Finds the handler for an IQ payload; NULL if none. */
hook_fn *iq_handler(struct host *h, const char *ns, const char *name, enum st_type type,
		    unsigned dest);

/* docs/COMPLIANCE.md (compliance.c). */
void compliance_write(FILE *f);

/* --- TLS (tls.c) --- */
SSL_CTX *tls_ctx_new(const struct host_conf *hc, char *err, size_t errlen); /* TLS_C2S */
enum tls_kind { TLS_C2S, TLS_S2S_SERVER, TLS_S2S_CLIENT };
SSL_CTX *tls_ctx_new_kind(const struct host_conf *hc, enum tls_kind kind, char *err, size_t errlen);
void tls_ctx_free(SSL_CTX *ctx);
/* Fills the channel-binding data of an established connection. */
void tls_channel_binding(struct session *s);

#endif
