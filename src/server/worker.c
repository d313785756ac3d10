/* Workers (DESIGN §3): one thread per core, each with its own epoll loop,
 * its own SO_REUSEPORT listeners (the kernel spreads the accepts), and the
 * sessions it accepted. The main thread only waits for signals: SIGHUP
 * reloads, SIGTERM/SIGINT shut down cleanly. */
#include "server/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include "core/conn.h"
#include "core/log.h"
#include "storage/store.h"
#include "xmpp/jid.h"

#define SHUTDOWN_GRACE_MS 3000

struct server *srv;
static __thread struct worker *cur_worker;

struct worker *worker_current(void)
{
	return cur_worker;
}

struct store *server_store(void)
{
	return srv->store;
}

void *worker_origin(void)
{
	return cur_worker ? cur_worker->loop : NULL;
}

struct host *host_find(const char *domain, size_t len)
{
	for (size_t i = 0; i < srv->n_hosts; i++)
		if (strlen(srv->hosts[i].domain) == len &&
		    !memcmp(srv->hosts[i].domain, domain, len))
			return &srv->hosts[i];
	return NULL;
}

/* --- listeners --- */

enum listener_kind { L_C2S, L_C2S_TLS, L_S2S, L_S2S_TLS };

struct listener {
	struct io io;
	struct worker *w;
	enum listener_kind kind;
	struct timer retry; /* out of descriptors: listen again later */
};

static void listener_retry(struct timer *t)
{
	struct listener *l = t->ud;
	if (!l->w->shutting_down && loop_io_add(l->w->loop, &l->io, IO_READ) < 0)
		LOG(LOG_ERROR, "cannot watch a listener again");
}

static void on_accept(struct io *io, uint32_t events)
{
	struct listener *l = (struct listener *)io;
	(void)events;
	for (int i = 0; i < 64; i++) {
		struct sockaddr_storage peer;
		socklen_t pl = sizeof(peer);
		int fd =
		    accept4(io->fd, (struct sockaddr *)&peer, &pl, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE) {
				/* The listener is level-triggered: stop watching it for a
				 * second rather than spin on a connection we cannot take. */
				LOG(LOG_WARN,
				    "accept: out of file descriptors; pausing accepts for 1 s");
				loop_io_del(l->w->loop, io);
				timer_init(&l->retry, listener_retry, l);
				loop_timer_set(l->w->loop, &l->retry, 1000);
			}
			return;
		}
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (l->kind == L_S2S || l->kind == L_S2S_TLS)
			s2s_accept(l->w, fd, &peer, l->kind == L_S2S_TLS);
		else
			c2s_accept(l->w, fd, &peer, l->kind == L_C2S_TLS);
	}
}

static int open_listener(const char *addr, unsigned port, char *err, size_t errlen)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
				 .ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV};
	struct addrinfo *ai;
	char ps[16];
	snprintf(ps, sizeof(ps), "%u", port);
	int rc = getaddrinfo(addr, ps, &hints, &ai);
	if (rc) {
		snprintf(err, errlen, "interface %s: %s", addr, gai_strerror(rc));
		return -1;
	}
	int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		freeaddrinfo(ai);
		return -1;
	}
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	if (ai->ai_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 1024) < 0) {
		snprintf(err, errlen, "cannot listen on [%s]:%u: %s", addr, port, strerror(errno));
		close(fd);
		freeaddrinfo(ai);
		return -1;
	}
	freeaddrinfo(ai);
	return fd;
}

/* Opens this worker's listeners: one socket per (address, port) per
 * worker, all bound with SO_REUSEPORT. */
static int worker_listen(struct worker *w, char *err, size_t errlen)
{
	const struct config *c = &srv->cfg;
	struct {
		unsigned port;
		enum listener_kind kind;
	} ports[] = {{c->c2s_port, L_C2S},
		     {c->c2s_tls_port, L_C2S_TLS},
		     {c->s2s_port, L_S2S},
		     {c->s2s_tls_port, L_S2S_TLS}};
	size_t np = sizeof(ports) / sizeof(ports[0]);
	size_t max = c->n_interfaces * 2 * np;
	w->listeners = calloc(max, sizeof(struct listener));
	if (!w->listeners)
		die_oom();
	struct listener *ls = (struct listener *)w->listeners;
	for (size_t i = 0; i < c->n_interfaces; i++) {
		const char *addrs[2] = {c->interfaces[i], NULL};
		if (!strcmp(c->interfaces[i], "*")) {
			addrs[0] = "0.0.0.0";
			addrs[1] = "::";
		}
		for (int a = 0; a < 2 && addrs[a]; a++)
			for (size_t p = 0; p < np; p++) {
				if (!ports[p].port)
					continue;
				int fd = open_listener(addrs[a], ports[p].port, err, errlen);
				if (fd < 0) {
					/* No IPv6 on this machine is not fatal for "*". */
					if (a == 1 && errno == EAFNOSUPPORT)
						continue;
					return -1;
				}
				struct listener *l = &ls[w->n_listeners++];
				l->io = (struct io){.fd = fd, .cb = on_accept, .ud = l};
				l->w = w;
				l->kind = ports[p].kind;
			}
	}
	return 0;
}

/* --- worker threads --- */

static void shutdown_timeout(struct timer *t)
{
	struct worker *w = t->ud;
	loop_stop(w->loop);
}

static void shutdown_check(struct loop *l, void *ud)
{
	struct worker *w = ud;
	if (w->shutting_down && w->n_sessions == 0 && s2s_worker_streams(w) == 0)
		loop_stop(l);
}

void worker_shutdown(struct worker *w)
{
	w->shutting_down = true;
	struct listener *ls = (struct listener *)w->listeners;
	for (size_t i = 0; i < w->n_listeners; i++) {
		if (ls[i].retry.cb)
			loop_timer_cancel(w->loop, &ls[i].retry);
		loop_io_del(w->loop, &ls[i].io);
		close(ls[i].io.fd);
	}
	w->n_listeners = 0;
	/* RFC 6120 §4.9.3.19: tell every client why the stream ends. */
	for (struct session *s = w->sessions, *next; s; s = next) {
		next = s->next;
		session_close(s, "system-shutdown", NULL);
	}
	s2s_worker_shutdown(w);
	timer_init(&w->shutdown_timer, shutdown_timeout, w);
	loop_timer_set(w->loop, &w->shutdown_timer, SHUTDOWN_GRACE_MS);
}

static void post_shutdown(void *arg)
{
	worker_shutdown(arg);
}

void worker_conf_from(struct worker_conf *wc, const struct config *c)
{
	wc->limits = c->limits;
	wc->require_encryption = c->c2s_require_encryption;
	wc->sasl_plain = c->sasl_plain;
	wc->conflict = c->resource_conflict;
	wc->registration = c->registration;
	wc->scram_iterations = c->scram_iterations;
}

struct reload_msg {
	struct worker *w;
	struct worker_conf conf;
};

static void post_reload(void *arg)
{
	struct reload_msg *m = arg;
	m->w->conf = m->conf;
	free(m);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	cur_worker = w;
	conn_loop_init(w->loop);
	loop_on_before_sleep(w->loop, shutdown_check, w);
	s2s_worker_start(w);
	struct listener *ls = (struct listener *)w->listeners;
	for (size_t i = 0; i < w->n_listeners; i++)
		if (loop_io_add(w->loop, &ls[i].io, IO_READ) < 0)
			die("cannot watch listener");
	loop_run(w->loop);
	/* Anything still open after the grace period is simply dropped. */
	while (w->sessions) {
		struct session *s = w->sessions;
		if (s->conn)
			conn_abort(s->conn); /* on_closed unlinks s */
		else
			break;
	}
	s2s_worker_abort(w);
	/* What was posted to us in the last iteration (the unavailable
	 * presence of a session that closed in it, and what it sets off) runs
	 * here, on this worker, while the store is open. */
	loop_drain(w->loop);
	conn_loop_done();
	return NULL;
}

/* --- server lifecycle --- */

static int load_hosts(struct config *cfg, char *err, size_t errlen)
{
	srv->n_hosts = cfg->n_hosts;
	srv->hosts = calloc(cfg->n_hosts, sizeof(*srv->hosts));
	if (!srv->hosts)
		die_oom();
	for (size_t i = 0; i < cfg->n_hosts; i++) {
		struct host *h = &srv->hosts[i];
		h->domain = strdup(cfg->hosts[i].domain);
		if (!h->domain)
			die_oom();
		SSL_CTX *ctx = tls_ctx_new(&cfg->hosts[i], err, errlen);
		if (!ctx)
			return -1;
		atomic_init(&h->tls, ctx);
		SSL_CTX *sctx = tls_ctx_new_kind(&cfg->hosts[i], TLS_S2S_SERVER, err, errlen);
		SSL_CTX *cctx = tls_ctx_new_kind(&cfg->hosts[i], TLS_S2S_CLIENT, err, errlen);
		if (!sctx || !cctx) {
			tls_ctx_free(sctx);
			tls_ctx_free(cctx);
			return -1;
		}
		atomic_init(&h->s2s_tls, sctx);
		atomic_init(&h->s2s_client_tls, cctx);
		modules_register(h);
	}
	return 0;
}

static int load_secret(void)
{
	size_t len = 0;
	if (store_meta_get_sync(srv->store, "server_secret", srv->secret, sizeof(srv->secret),
				&len) == STORE_OK &&
	    len == sizeof(srv->secret))
		return 0;
	if (RAND_bytes(srv->secret, sizeof(srv->secret)) != 1)
		return -1;
	return store_meta_set_sync(srv->store, "server_secret", srv->secret, sizeof(srv->secret));
}

static void post_to_origin(void *origin, void (*fn)(void *arg), void *arg)
{
	loop_post(origin, fn, arg);
}

int server_start(const char *config_path, char *err, size_t errlen)
{
	srv = calloc(1, sizeof(*srv));
	if (!srv)
		die_oom();
	srv->config_path = strdup(config_path);
	if (config_load(config_path, &srv->cfg, err, errlen) < 0)
		return -1;
	log_set_level(srv->cfg.log_level);
	registry_init();
	if (load_hosts(&srv->cfg, err, errlen) < 0 || s2s_init(err, errlen) < 0)
		return -1;
	srv->store = store_open(srv->cfg.store_path, post_to_origin);
	if (!srv->store) {
		snprintf(err, errlen, "%s: cannot open the store", srv->cfg.store_path);
		return -1;
	}
	if (load_secret() < 0) {
		snprintf(err, errlen, "cannot create the server secret");
		return -1;
	}
	for (const struct module *const *mp = parley_modules; *mp; mp++)
		if ((*mp)->start && (*mp)->start(srv->store, &srv->cfg) != 0) {
			snprintf(err, errlen, "module %s failed to start", (*mp)->name);
			return -1;
		}
	unsigned n = srv->cfg.workers ? srv->cfg.workers : (unsigned)get_nprocs();
	if (n < 1)
		n = 1;
	srv->n_workers = n;
	srv->workers = calloc(n, sizeof(*srv->workers));
	if (!srv->workers)
		die_oom();
	for (unsigned i = 0; i < n; i++) {
		struct worker *w = &srv->workers[i];
		w->idx = i;
		w->loop = loop_new();
		worker_conf_from(&w->conf, &srv->cfg);
		if (worker_listen(w, err, errlen) < 0)
			return -1;
	}
	for (unsigned i = 0; i < n; i++)
		if (pthread_create(&srv->workers[i].thread, NULL, worker_main, &srv->workers[i]))
			die("pthread_create failed");
	return 0;
}

static void server_reload(void)
{
	struct config cfg;
	char err[512];
	if (config_load(srv->config_path, &cfg, err, sizeof(err)) < 0) {
		LOG(LOG_ERROR, "reload failed, keeping the running configuration: %s", err);
		return;
	}
	/* Certificates: new contexts for the hosts we serve; old ones stay
	 * alive (live connections and concurrent accepts still use them). */
	for (size_t i = 0; i < srv->n_hosts; i++) {
		const struct host_conf *hc = config_host(&cfg, srv->hosts[i].domain);
		if (!hc) {
			LOG(LOG_WARN,
			    "reload: host %s removed from the file; it stays served until restart",
			    srv->hosts[i].domain);
			continue;
		}
		SSL_CTX *ctx = tls_ctx_new(hc, err, sizeof(err));
		SSL_CTX *sctx = ctx ? tls_ctx_new_kind(hc, TLS_S2S_SERVER, err, sizeof(err)) : NULL;
		SSL_CTX *cctx =
		    sctx ? tls_ctx_new_kind(hc, TLS_S2S_CLIENT, err, sizeof(err)) : NULL;
		if (!cctx) {
			LOG(LOG_ERROR, "reload: %s: %s", srv->hosts[i].domain, err);
			tls_ctx_free(ctx);
			tls_ctx_free(sctx);
			continue;
		}
		SSL_CTX *old[3] = {atomic_exchange(&srv->hosts[i].tls, ctx),
				   atomic_exchange(&srv->hosts[i].s2s_tls, sctx),
				   atomic_exchange(&srv->hosts[i].s2s_client_tls, cctx)};
		srv->old_tls = realloc(srv->old_tls, (srv->n_old_tls + 3) * sizeof(*srv->old_tls));
		if (!srv->old_tls)
			die_oom();
		for (int k = 0; k < 3; k++)
			srv->old_tls[srv->n_old_tls++] = old[k];
	}
	for (size_t i = 0; i < cfg.n_hosts; i++)
		if (!host_find(cfg.hosts[i].domain, strlen(cfg.hosts[i].domain)))
			LOG(LOG_WARN, "reload: new host %s needs a restart", cfg.hosts[i].domain);
	log_set_level(cfg.log_level);
	for (unsigned i = 0; i < srv->n_workers; i++) {
		struct reload_msg *m = malloc(sizeof(*m));
		if (!m)
			die_oom();
		m->w = &srv->workers[i];
		worker_conf_from(&m->conf, &cfg);
		loop_post(srv->workers[i].loop, post_reload, m);
	}
	LOG(LOG_INFO, "configuration and certificates reloaded from %s", srv->config_path);
	config_free(&cfg);
}

void server_run(void)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	for (;;) {
		int sig;
		if (sigwait(&set, &sig))
			continue;
		if (sig == SIGHUP) {
			server_reload();
			continue;
		}
		LOG(LOG_INFO, "%s: closing all streams", sig == SIGTERM ? "SIGTERM" : "SIGINT");
		break;
	}
	for (unsigned i = 0; i < srv->n_workers; i++)
		loop_post(srv->workers[i].loop, post_shutdown, &srv->workers[i]);
	for (unsigned i = 0; i < srv->n_workers; i++)
		pthread_join(srv->workers[i].thread, NULL);
	account_wait_idle();
	/* Work still posted between the stopped workers (and the store's
	 * completions, which may ask the store again) runs here, with this
	 * thread standing in for each worker in turn, until nothing is left;
	 * only then does the store close. */
	for (int round = 0; round < 64; round++) {
		store_barrier(srv->store);
		bool ran = false;
		for (unsigned i = 0; i < srv->n_workers; i++) {
			cur_worker = &srv->workers[i];
			ran |= loop_drain(srv->workers[i].loop);
		}
		if (!ran)
			break;
	}
	cur_worker = NULL;
	store_close(srv->store);
	for (unsigned i = 0; i < srv->n_workers; i++) {
		struct worker *w = &srv->workers[i];
		s2s_worker_done(w);
		loop_free(w->loop);
		free(w->listeners);
		free(w->slots);
		free(w->free_list);
	}
	/* Replaced TLS contexts were kept alive for accepts in progress. */
	for (size_t i = 0; i < srv->n_old_tls; i++)
		tls_ctx_free(srv->old_tls[i]);
	for (size_t i = 0; i < srv->n_hosts; i++) {
		tls_ctx_free(atomic_load(&srv->hosts[i].tls));
		tls_ctx_free(atomic_load(&srv->hosts[i].s2s_tls));
		tls_ctx_free(atomic_load(&srv->hosts[i].s2s_client_tls));
		modules_unregister(&srv->hosts[i]);
	}
	for (const struct module *const *mp = parley_modules; *mp; mp++)
		if ((*mp)->stop)
			(*mp)->stop();
	LOG(LOG_INFO, "stopped");
}
