/* A connection: TCP or TLS behind one table of I/O functions, so callers
 * never branch on TLS (Redis's ConnectionType). STARTTLS swaps the table.
 * Writes are queued and flushed once per loop iteration, before the loop
 * sleeps. Closing is deferred: conn_close() marks the connection and it is
 * freed before the loop sleeps, so any callback may close its own
 * connection. Reading can be paused (flow control, async work). */
#ifndef PARLEY_CONN_H
#define PARLEY_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/buf.h"
#include "core/loop.h"

struct conn;
typedef struct ssl_st SSL;
typedef struct ssl_ctx_st SSL_CTX;

struct conn_handler {
	/* Bytes read (plaintext). */
	void (*data)(struct conn *c, const char *p, size_t n);
	/* TLS handshake finished (after conn_starttls or on a direct-TLS accept). */
	void (*tls_ready)(struct conn *c);
	/* The connection is gone (peer closed, error, or conn_close()); the
	 * upper layer drops its pointer. Called exactly once. reason: for logs. */
	void (*closed)(struct conn *c, const char *reason);
	/* Outgoing connections (conn_connect): the TCP connection is up. */
	void (*connected)(struct conn *c);
};

struct conn_ops;

struct conn {
	const struct conn_ops *ops;
	struct io io;
	struct loop *loop;
	SSL *ssl;
	struct buf out;
	const struct conn_handler *h;
	void *ud;		 /* upper layer (the session) */
	struct conn *dirty_next; /* on the loop's flush list */
	struct conn *pend_next;	 /* on the list of TLS conns with SSL_pending() > 0 */
	struct conn *dead_next;	 /* on the list of conns to free */
	struct sockaddr_storage peer;
	char peer_ip[46];
	uint32_t flags;
	const char *close_reason;
	int connect_errno; /* why an outgoing connection failed, or 0 */
};

#define CONN_CLOSING		  0x01u /* conn_close called: stop reading, flush, free */
#define CONN_DIRTY		  0x02u
#define CONN_PAUSED		  0x04u /* reading paused */
#define CONN_TLS		  0x08u /* TLS active (or handshaking) */
#define CONN_HANDSHAKE		  0x10u
#define CONN_PENDING		  0x20u
#define CONN_WANT_WRITE		  0x40u /* write blocked: EPOLLOUT armed */
#define CONN_DEAD		  0x80u /* socket is done: no more I/O */
#define CONN_TLS_READ_WANTS_WRITE 0x100u
#define CONN_CONNECTING		  0x200u /* outgoing: connect(2) in progress */
#define CONN_CLIENT		  0x400u /* we connected: TLS client side */

/* Wraps an accepted, non-blocking fd and starts watching it. tls_ctx
 * non-NULL: direct TLS (XEP-0368), the handshake starts at once. */
struct conn *conn_accept(struct loop *l, int fd, const struct sockaddr_storage *peer,
			 SSL_CTX *tls_ctx, const struct conn_handler *h, void *ud);
/* Starts a non-blocking TCP connection to addr; h->connected runs when it
 * is up, h->closed if it fails. Bytes written meanwhile wait. NULL with
 * errno set if no socket could be made. */
struct conn *conn_connect(struct loop *l, const struct sockaddr_storage *addr,
			  const struct conn_handler *h, void *ud);
/* Client side of TLS (after connected, or after the peer's <proceed/>):
 * sni is the server name to ask for, alpn an ALPN protocol or NULL. The
 * handshake runs from the loop; h->tls_ready when done. */
void conn_starttls_client(struct conn *c, SSL_CTX *ctx, const char *sni, const char *alpn);
/* Queues bytes; flushed before the loop sleeps. */
void conn_write(struct conn *c, const void *p, size_t n);
/* The output buffer, for serializing straight into it; marks the
 * connection for flushing. NULL if the connection is closing. */
struct buf *conn_wbuf(struct conn *c);
/* Switches to TLS after everything queued so far has been written
 * (STARTTLS: queue <proceed/>, then call this). Bytes already read but not
 * yet processed by the caller must be discarded by the caller. */
void conn_starttls(struct conn *c, SSL_CTX *ctx);
/* Flush what is queued, then close. */
void conn_close(struct conn *c, const char *reason);
void conn_pause(struct conn *c, bool paused);
static inline size_t conn_queued(const struct conn *c)
{
	return buf_pending(&c->out);
}
bool conn_is_tls(const struct conn *c);

/* Installs the per-loop flush / pending / free machinery. Once per loop. */
void conn_loop_init(struct loop *l);
/* Drops a connection at once, without flushing (shutdown after the grace
 * period). The closed callback runs. */
void conn_abort(struct conn *c);
/* Frees what the loop's connections left behind; on the loop's thread,
 * after loop_run() returned. */
void conn_loop_done(void);

#endif
