#include "core/conn.h"
#include "core/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <unistd.h>

#define READ_CHUNK     16384
#define READS_PER_WAKE 8 /* fairness: then the conn goes on the pending list */

struct conn_ops {
	/* Return >0 bytes, 0 on EOF, -EAGAIN, or another negative errno. */
	ssize_t (*read)(struct conn *c, char *p, size_t n);
	ssize_t (*write)(struct conn *c, const char *p, size_t n);
};

/* Per-loop lists; one loop per thread, so thread-local is per-loop. */
struct conn_loop {
	struct conn *dirty;
	struct conn *pending;
	struct conn *dead;
};
static __thread struct conn_loop *cl;

static void conn_io(struct io *io, uint32_t events);
static void update_events(struct conn *c);
static void set_peer_ip(struct conn *c);

/* --- TCP --- */
static ssize_t tcp_read(struct conn *c, char *p, size_t n)
{
	ssize_t r = read(c->io.fd, p, n);
	if (r < 0)
		return errno == EAGAIN || errno == EINTR ? -EAGAIN : -errno;
	return r;
}

static ssize_t tcp_write(struct conn *c, const char *p, size_t n)
{
	ssize_t r = send(c->io.fd, p, n, MSG_NOSIGNAL);
	if (r < 0)
		return errno == EAGAIN || errno == EINTR ? -EAGAIN : -errno;
	return r;
}

static const struct conn_ops tcp_ops = {tcp_read, tcp_write};

/* --- TLS --- */
static void tls_log_errors(struct conn *c, const char *what)
{
	unsigned long e;
	char buf[256];
	while ((e = ERR_get_error()) != 0) {
		ERR_error_string_n(e, buf, sizeof(buf));
		LOG(LOG_DEBUG, "tls %s from %s: %s", what, c->peer_ip, buf);
	}
}

static ssize_t tls_result(struct conn *c, int ok, size_t done, const char *what)
{
	if (ok)
		return (ssize_t)done;
	int err = SSL_get_error(c->ssl, 0);
	switch (err) {
	case SSL_ERROR_WANT_READ:
		return -EAGAIN;
	case SSL_ERROR_WANT_WRITE:
		/* OpenSSL must write before it can go on (a read that answers a
		 * KeyUpdate, say): wait for writability, then read again. */
		c->flags |= CONN_TLS_READ_WANTS_WRITE | CONN_WANT_WRITE;
		update_events(c);
		return -EAGAIN;
	case SSL_ERROR_ZERO_RETURN:
		return 0;
	default:
		tls_log_errors(c, what);
		ERR_clear_error();
		return -EIO;
	}
}

static ssize_t tls_read(struct conn *c, char *p, size_t n)
{
	size_t done = 0;
	ERR_clear_error();
	int ok = SSL_read_ex(c->ssl, p, n, &done);
	return tls_result(c, ok, done, "read");
}

static ssize_t tls_write(struct conn *c, const char *p, size_t n)
{
	size_t done = 0;
	ERR_clear_error();
	int ok = SSL_write_ex(c->ssl, p, n, &done);
	ssize_t r = tls_result(c, ok, done, "write");
	return r == 0 ? -EIO : r;
}

static const struct conn_ops tls_ops = {tls_read, tls_write};

bool conn_is_tls(const struct conn *c)
{
	return c->flags & CONN_TLS;
}

/* --- lists --- */
static void mark_dirty(struct conn *c)
{
	if (c->flags & (CONN_DIRTY | CONN_DEAD))
		return;
	c->flags |= CONN_DIRTY;
	c->dirty_next = cl->dirty;
	cl->dirty = c;
}

static void mark_pending(struct conn *c)
{
	if (c->flags & (CONN_PENDING | CONN_DEAD))
		return;
	c->flags |= CONN_PENDING;
	c->pend_next = cl->pending;
	cl->pending = c;
	loop_no_sleep(c->loop);
}

/* The socket is finished: stop all I/O, tell the upper layer, free later. */
static void conn_kill(struct conn *c, const char *reason)
{
	if (c->flags & CONN_DEAD)
		return;
	c->flags |= CONN_DEAD;
	if (!c->close_reason)
		c->close_reason = reason;
	loop_io_del(c->loop, &c->io);
	if (c->ssl && !(c->flags & CONN_HANDSHAKE) && (c->flags & CONN_CLOSING)) {
		/* Best effort close_notify; we do not wait for the peer's. */
		ERR_clear_error();
		SSL_shutdown(c->ssl);
		ERR_clear_error();
	}
	close(c->io.fd);
	c->io.fd = -1;
	if (c->h && c->h->closed)
		c->h->closed(c, c->close_reason);
	c->h = NULL;
	c->dead_next = cl->dead;
	cl->dead = c;
}

static void update_events(struct conn *c)
{
	if (c->flags & CONN_DEAD)
		return;
	uint32_t ev = 0;
	if (!(c->flags & (CONN_PAUSED | CONN_CLOSING)) || (c->flags & CONN_HANDSHAKE))
		ev |= EPOLLIN;
	if (c->flags & CONN_WANT_WRITE)
		ev |= EPOLLOUT;
	if (loop_io_mod(c->loop, &c->io, ev) < 0)
		conn_kill(c, "epoll");
}

/* Returns false if the connection died. */
static bool conn_flush(struct conn *c)
{
	if (c->flags & CONN_CONNECTING)
		return true; /* the queue waits for the connection */
	if (c->flags & CONN_HANDSHAKE) {
		/* A stream closed during the handshake has nothing to flush. */
		if (c->flags & CONN_CLOSING) {
			conn_kill(c, c->close_reason);
			return false;
		}
		return true; /* handshake first; the queue waits */
	}
	while (buf_pending(&c->out)) {
		size_t n = buf_pending(&c->out);
		if (n > 65536)
			n = 65536;
		ssize_t r = c->ops->write(c, buf_head(&c->out), n);
		if (r == -EAGAIN) {
			c->flags |= CONN_WANT_WRITE;
			update_events(c);
			return true;
		}
		if (r <= 0) {
			conn_kill(c, "write error");
			return false;
		}
		buf_consume(&c->out, (size_t)r);
	}
	buf_shrink(&c->out);
	if ((c->flags & CONN_WANT_WRITE) && !(c->flags & CONN_TLS_READ_WANTS_WRITE)) {
		c->flags &= ~CONN_WANT_WRITE;
		update_events(c);
	}
	if (c->flags & CONN_CLOSING) {
		/* conn_kill sends the TLS close_notify before closing. */
		conn_kill(c, c->close_reason);
		return false;
	}
	return true;
}

static void do_handshake(struct conn *c)
{
	ERR_clear_error();
	int r = SSL_do_handshake(c->ssl);
	if (r == 1) {
		c->flags &= ~CONN_HANDSHAKE;
		LOG(LOG_DEBUG, "tls %s with %s from %s", SSL_get_version(c->ssl),
		    SSL_get_cipher_name(c->ssl), c->peer_ip);
		if (c->h && c->h->tls_ready)
			c->h->tls_ready(c);
		if (!(c->flags & CONN_DEAD))
			mark_dirty(c);
		return;
	}
	int err = SSL_get_error(c->ssl, r);
	if (err == SSL_ERROR_WANT_READ) {
		if (c->flags & CONN_WANT_WRITE) {
			c->flags &= ~CONN_WANT_WRITE;
			update_events(c);
		}
		return;
	}
	if (err == SSL_ERROR_WANT_WRITE) {
		c->flags |= CONN_WANT_WRITE;
		update_events(c);
		return;
	}
	tls_log_errors(c, "handshake");
	ERR_clear_error();
	conn_kill(c, "tls handshake failed");
}

static void conn_read(struct conn *c)
{
	char buf[READ_CHUNK];
	for (int i = 0; i < READS_PER_WAKE; i++) {
		if (c->flags & (CONN_DEAD | CONN_CLOSING | CONN_PAUSED | CONN_HANDSHAKE))
			return;
		ssize_t r = c->ops->read(c, buf, sizeof(buf));
		if (r == -EAGAIN)
			return;
		if (r == 0) {
			conn_kill(c, "peer closed");
			return;
		}
		if (r < 0) {
			conn_kill(c, c->ssl ? "tls error" : "read error");
			return;
		}
		c->h->data(c, buf, (size_t)r);
	}
	/* Budget used up: more may be waiting in the socket or in OpenSSL. */
	mark_pending(c);
}

static void conn_io(struct io *io, uint32_t events)
{
	struct conn *c = io->ud;
	if (c->flags & CONN_DEAD)
		return;
	if (c->flags & CONN_CONNECTING) {
		int err = 0;
		socklen_t el = sizeof(err);
		if (getsockopt(c->io.fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
			err = errno;
		if (err) {
			c->connect_errno = err;
			conn_kill(c, "connect failed");
			return;
		}
		if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
			return;
		c->flags &= ~(CONN_CONNECTING | CONN_WANT_WRITE);
		update_events(c);
		if (c->h && c->h->connected)
			c->h->connected(c);
		if (!(c->flags & CONN_DEAD))
			mark_dirty(c);
		return;
	}
	if ((events & (EPOLLERR | EPOLLHUP)) && !(events & EPOLLIN)) {
		conn_kill(c, "connection reset");
		return;
	}
	if (c->flags & CONN_HANDSHAKE) {
		do_handshake(c);
		if (c->flags & (CONN_HANDSHAKE | CONN_DEAD))
			return;
	}
	if (events & EPOLLOUT) {
		bool read_again = c->flags & CONN_TLS_READ_WANTS_WRITE;
		c->flags &= ~CONN_TLS_READ_WANTS_WRITE;
		if (!conn_flush(c))
			return;
		if (read_again)
			events |= EPOLLIN;
	}
	if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
		conn_read(c);
	if (!(c->flags & CONN_DEAD) && c->ssl && SSL_pending(c->ssl) > 0 &&
	    !(c->flags & (CONN_PAUSED | CONN_CLOSING)))
		mark_pending(c);
}

static void conn_before_sleep(struct loop *l, void *ud)
{
	(void)ud;
	/* 1. Connections with data epoll cannot see (decrypted TLS records
	 *    buffered by OpenSSL, or a read budget that ran out). */
	struct conn *p = cl->pending;
	cl->pending = NULL;
	while (p) {
		struct conn *next = p->pend_next;
		p->flags &= ~CONN_PENDING;
		if (!(p->flags & CONN_DEAD))
			conn_read(p);
		p = next;
	}
	/* 2. Batched writes: one flush per connection per iteration. */
	while (cl->dirty) {
		struct conn *c = cl->dirty;
		cl->dirty = c->dirty_next;
		c->flags &= ~CONN_DIRTY;
		if (!(c->flags & CONN_DEAD))
			conn_flush(c);
	}
	/* 3. Deferred frees. Nothing refers to these any more. */
	while (cl->dead) {
		struct conn *c = cl->dead;
		if (c->flags & CONN_PENDING) {
			/* still linked on the pending list of the next round */
			break;
		}
		cl->dead = c->dead_next;
		SSL_free(c->ssl);
		buf_free(&c->out);
		free(c);
	}
	(void)l;
}

void conn_loop_init(struct loop *l)
{
	ASSERT(!cl);
	cl = calloc(1, sizeof(*cl));
	if (!cl)
		die_oom();
	loop_on_before_sleep(l, conn_before_sleep, NULL);
}

void conn_abort(struct conn *c)
{
	conn_kill(c, "aborted");
}

void conn_loop_done(void)
{
	cl->pending = NULL;
	cl->dirty = NULL;
	while (cl->dead) {
		struct conn *c = cl->dead;
		cl->dead = c->dead_next;
		SSL_free(c->ssl);
		buf_free(&c->out);
		free(c);
	}
	free(cl);
	cl = NULL;
}

static void start_tls(struct conn *c, SSL_CTX *ctx)
{
	/* The client speaks first (ClientHello): the handshake starts when
	 * its bytes arrive, never from inside the caller's stack. */
	c->ssl = SSL_new(ctx);
	if (!c->ssl || !SSL_set_fd(c->ssl, c->io.fd))
		die_oom();
	if (c->flags & CONN_CLIENT)
		SSL_set_connect_state(c->ssl);
	else
		SSL_set_accept_state(c->ssl);
	/* One read(2) takes in as many records as the socket holds, not a
	 * header and a body per record. conn_read() reads until EAGAIN, so
	 * nothing complete is left in OpenSSL's buffer when it stops, except
	 * when its budget ran out, and then the conn is on the pending list. */
	SSL_set_read_ahead(c->ssl, 1);
	SSL_set_app_data(c->ssl, c);
	c->ops = &tls_ops;
	c->flags |= CONN_TLS | CONN_HANDSHAKE;
	update_events(c);
}

struct conn *conn_accept(struct loop *l, int fd, const struct sockaddr_storage *peer,
			 SSL_CTX *tls_ctx, const struct conn_handler *h, void *ud)
{
	struct conn *c = calloc(1, sizeof(*c));
	if (!c)
		die_oom();
	c->ops = &tcp_ops;
	c->loop = l;
	c->h = h;
	c->ud = ud;
	c->peer = *peer;
	c->io = (struct io){.fd = fd, .cb = conn_io, .ud = c};
	set_peer_ip(c);
	if (loop_io_add(l, &c->io, EPOLLIN) < 0) {
		close(fd);
		free(c);
		return NULL;
	}
	if (tls_ctx)
		start_tls(c, tls_ctx);
	return c;
}

static void set_peer_ip(struct conn *c)
{
	const struct sockaddr_storage *peer = &c->peer;
	if (peer->ss_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)peer)->sin_addr, c->peer_ip,
			  sizeof(c->peer_ip));
	else if (peer->ss_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)peer)->sin6_addr, c->peer_ip,
			  sizeof(c->peer_ip));
	else
		snprintf(c->peer_ip, sizeof(c->peer_ip), "local");
}

struct conn *conn_connect(struct loop *l, const struct sockaddr_storage *addr,
			  const struct conn_handler *h, void *ud)
{
	int fd = socket(addr->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return NULL;
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	socklen_t len =
	    addr->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
	if (connect(fd, (const struct sockaddr *)addr, len) < 0 && errno != EINPROGRESS) {
		int e = errno;
		close(fd);
		errno = e;
		return NULL;
	}
	struct conn *c = calloc(1, sizeof(*c));
	if (!c)
		die_oom();
	c->ops = &tcp_ops;
	c->loop = l;
	c->h = h;
	c->ud = ud;
	c->peer = *addr;
	c->io = (struct io){.fd = fd, .cb = conn_io, .ud = c};
	c->flags = CONN_CLIENT | CONN_CONNECTING | CONN_WANT_WRITE;
	set_peer_ip(c);
	if (loop_io_add(l, &c->io, EPOLLOUT) < 0) {
		int e = errno;
		close(fd);
		free(c);
		errno = e;
		return NULL;
	}
	return c;
}

void conn_starttls_client(struct conn *c, SSL_CTX *ctx, const char *sni, const char *alpn)
{
	if (c->flags & CONN_DEAD)
		return;
	/* Anything queued in the clear (our <starttls/>) was sent before the
	 * peer's <proceed/> could arrive. */
	c->flags |= CONN_CLIENT;
	start_tls(c, ctx);
	if (sni) {
		/* The macro casts to void *: a copy that is not const. */
		char name[256];
		snprintf(name, sizeof(name), "%s", sni);
		SSL_set_tlsext_host_name(c->ssl, name);
	}
	if (alpn) {
		unsigned char wire[64];
		size_t n = strlen(alpn);
		if (n < sizeof(wire) - 1) {
			wire[0] = (unsigned char)n;
			memcpy(wire + 1, alpn, n);
			SSL_set_alpn_protos(c->ssl, wire, (unsigned)n + 1);
		}
	}
	/* The client speaks first: the handshake starts when the socket is
	 * writable, from the loop, never inside the caller. */
	c->flags |= CONN_WANT_WRITE;
	update_events(c);
}

void conn_write(struct conn *c, const void *p, size_t n)
{
	if (c->flags & (CONN_DEAD | CONN_CLOSING))
		return;
	buf_add(&c->out, p, n);
	mark_dirty(c);
}

struct buf *conn_wbuf(struct conn *c)
{
	if (c->flags & (CONN_DEAD | CONN_CLOSING))
		return NULL;
	mark_dirty(c);
	return &c->out;
}

void conn_starttls(struct conn *c, SSL_CTX *ctx)
{
	if (c->flags & CONN_DEAD)
		return;
	/* The <proceed/> must go out in the clear before the handshake. */
	while (buf_pending(&c->out)) {
		ssize_t r = c->ops->write(c, buf_head(&c->out), buf_pending(&c->out));
		if (r <= 0 && r != -EAGAIN) {
			conn_kill(c, "write error");
			return;
		}
		if (r == -EAGAIN) {
			/* A 50-byte write to a fresh socket does not block in practice;
			 * if it does, give up rather than mix plaintext and TLS. */
			conn_kill(c, "starttls: could not send proceed");
			return;
		}
		buf_consume(&c->out, (size_t)r);
	}
	start_tls(c, ctx);
}

void conn_close(struct conn *c, const char *reason)
{
	if (c->flags & (CONN_CLOSING | CONN_DEAD))
		return;
	c->flags |= CONN_CLOSING;
	c->close_reason = reason;
	update_events(c);
	mark_dirty(c);
}

void conn_pause(struct conn *c, bool paused)
{
	if (c->flags & CONN_DEAD)
		return;
	if (paused)
		c->flags |= CONN_PAUSED;
	else
		c->flags &= ~CONN_PAUSED;
	update_events(c);
	if (!paused)
		mark_pending(c); /* there may be buffered TLS data */
}
