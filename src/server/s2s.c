/* Server-to-server streams (RFC 6120 §4-§9, federation).
 *
 * Outgoing: one link per (local domain, remote domain), owned by the
 * worker that hash(remote) names, so stanzas for a remote domain always go
 * through one loop and keep their order. A link finds the peer with DNS
 * (_xmpps-server._tcp for direct TLS, XEP-0368, and _xmpp-server._tcp,
 * else the domain itself on 5269; libunbound, asynchronous), connects,
 * requires TLS, checks the peer's certificate (RFC 6125 identities) and
 * authenticates with SASL EXTERNAL (XEP-0178) when the certificate is
 * good, else with dialback (XEP-0220) where policy allows it. Stanzas wait
 * in a bounded queue meanwhile and are bounced with remote-server-not-found
 * or remote-server-timeout when the link fails (RFC 6120 §8.3.3.x).
 *
 * Incoming: any worker accepts. TLS is required before anything else; the
 * peer authenticates each domain it sends from, with EXTERNAL (its
 * certificate must name the domain) or dialback (verified by asking that
 * domain's authoritative server over our own outgoing link). Stanzas must
 * come from an authenticated domain and go to one of ours, else the
 * stream ends with invalid-from or host-unknown (RFC 6120 §4.9.3). Every
 * stanza is rebuilt from the parsed tree before it goes anywhere. */
#include "server/server.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/buf.h"
#include "core/conn.h"
#include "core/log.h"
#include "net/certs.h"
#include "net/dane.h"
#include "net/dns.h"
#include "server/module.h"
#include "server/throttle.h"
#include "xml/xmlstream.h"
#include "xmpp/base64.h"
#include "xmpp/ns.h"

#define NS_DIALBACK	    "jabber:server:dialback"	 /* XEP-0220 */
#define NS_DIALBACK_FEATURE "urn:xmpp:features:dialback" /* XEP-0220 §2.1 */
#define NS_BIDI		    "urn:xmpp:bidi"		 /* XEP-0288 */
#define NS_BIDI_FEATURE	    "urn:xmpp:features:bidi"	 /* XEP-0288 §2.1 */
#define S2S_PORT	    5269
#define SETUP_DEADLINE_MS   30000  /* DNS, connect, TLS and authentication */
#define CONNECT_TIMEOUT_MS  10000  /* one address: TCP */
#define NEGOTIATE_MS	    10000  /* one address: TLS and authentication */
#define IDLE_MS		    600000 /* an idle link is closed after 10 minutes */
#define CLOSE_DEADLINE_MS   5000
#define BACKOFF_MIN_S	    5
#define BACKOFF_MAX_S	    300
#define QUEUE_MAX	    1000       /* stanzas waiting for a link */
#define QUEUE_BYTES_MAX	    (4u << 20) /* and their size */
#define MAX_TARGETS	    16
#define MAX_ADDRS	    16
#define MAX_AUTHED	    32 /* domain pairs one incoming stream may authenticate */
#define MAX_PENDING_DB	    16 /* dialback requests waiting on one stream */
#define DB_KEY_HEX	    (2 * SHA256_DIGEST_LENGTH)
#define MAX_LINKS	    4096  /* remote domains one worker talks to at once */
#define MAX_VERIFIES	    64	  /* dialback keys waiting on one link */
#define VERIFY_TIMEOUT_MS   30000 /* an authoritative server that never answers */
#define SHUTDOWN_S2S_MS	    1000  /* ready links outlive the client sessions by this */

enum s2s_dir { S2S_IN, S2S_OUT };

/* Stream flags. */
#define F_TLS	      0x001u
#define F_DIRECT_TLS  0x002u
#define F_OPENED      0x004u /* peer's header received */
#define F_CLOSING     0x008u
#define F_FEATURES    0x010u   /* out: features after TLS seen */
#define F_SASL_SENT   0x020u   /* out: <auth mechanism='EXTERNAL'/> sent */
#define F_SASL_DONE   0x040u   /* out: EXTERNAL succeeded; restarting */
#define F_DB_SENT     0x080u   /* out: <db:result/> sent */
#define F_READY	      0x100u   /* out: authenticated, stanzas may go */
#define F_CERT_OK     0x200u   /* the peer's certificate is valid for its domain */
#define F_CERT_CHECKS 0x400u   /* the check above was made */
#define F_RESTART     0x800u   /* the XML layer paused for a stream restart */
#define F_DANE	      0x1000u  /* out: TLSA records were given to TLS (DANE decides) */
#define F_WAIT_DANE   0x2000u  /* in: features wait for the peer's TLSA records */
#define F_BIDI	      0x4000u  /* XEP-0288 negotiated: stanzas flow both ways */
#define F_THROTTLED   0x8000u  /* reading paused: over limits.s2s_bytes_per_second */
#define F_DANE_BAD    0x10000u /* in: dane_domain's TLSA records rule the certificate out */

struct pair {
	char remote[JID_PART_MAX + 1];
	char local[JID_PART_MAX + 1];
};

/* A dialback key to check with a domain's authoritative server. */
struct dbv {
	struct dbv *next;
	char local[JID_PART_MAX + 1], remote[JID_PART_MAX + 1];
	/* The two as the peer wrote them (A-labels, say): answers and our
	 * <db:verify/> echo them, since the peer's key was made over them. */
	char raw_local[JID_PART_MAX + 1], raw_remote[JID_PART_MAX + 1];
	char id[64];		  /* the stream id the key was made for */
	char key[DB_KEY_HEX + 1]; /* as received */
	unsigned reply_worker;
	uint64_t reply_uid; /* the incoming stream that asked */
	bool sent;
	uint64_t since; /* loop ms, for VERIFY_TIMEOUT_MS */
};

struct s2s_link;

struct s2s {
	enum s2s_dir dir;
	uint64_t uid; /* unique per worker */
	struct worker *w;
	struct conn *conn;
	struct xmlstream *xs;
	unsigned flags;
	char stream_id[64];		    /* in: ours; out: the peer's */
	char peer_domain[JID_PART_MAX + 1]; /* in: header 'from'; out: the remote */
	char why_cert[240];		    /* why the certificate did not do */
	char cert_domain[JID_PART_MAX + 1]; /* what F_CERT_OK was decided for */
	struct timer timer;
	uint64_t last_io;
	struct bucket rl;	 /* limits.s2s_bytes_per_second */
	struct timer rl_timer;	 /* ends a pause of reading */
	struct s2s *next, *prev; /* the worker's list */
	/* in */
	struct host *host; /* header 'to' */
	uint64_t ip_gauge; /* counted among its address's unauthenticated connections */
	struct pair authed[MAX_AUTHED];
	unsigned n_authed;
	unsigned n_pending_db;
	/* DANE for the peer's certificate (net/dane.h), once per domain. */
	struct dane_lookup *dane;
	char dane_domain[JID_PART_MAX + 1];
	char *held; /* input that arrived while the lookup ran */
	size_t n_held;
	/* out */
	struct s2s_link *link;
};

struct target {
	char host[256]; /* A-label */
	uint16_t port;
	bool direct_tls;
	bool secure; /* found through a DNSSEC-validated SRV record (RFC 7673) */
};

#define MAX_TLSA 8

/* LS_BIDI: no stream of our own; stanzas go over an incoming stream on
 * which the peer enabled XEP-0288 (on worker bidi_worker, uid bidi_uid). */
enum link_state { LS_IDLE, LS_RESOLVING, LS_CONNECTING, LS_READY, LS_BIDI };

struct s2s_link {
	struct s2s_link *next;
	struct worker *w;
	char local[JID_PART_MAX + 1], remote[JID_PART_MAX + 1];
	char remote_ascii[256];
	enum link_state state;
	struct s2s *s;
	struct stanza **q;
	size_t nq, capq, qbytes;
	struct dbv *verifies;
	/* Where to connect: SRV targets in order, then each one's addresses. */
	struct target t[MAX_TARGETS];
	size_t nt, ti;
	struct sockaddr_storage addrs[MAX_ADDRS];
	size_t na, ai;
	struct dns_query *dq[2];
	int srv_left; /* SRV answers still expected */
	struct dns_srv srv[2][MAX_TARGETS];
	size_t nsrv[2];
	int srv_rc[2]; /* each SRV answer's dns_rc */
	bool srv_secure[2];
	/* DANE (RFC 7673): validated TLSA records of the current target. */
	struct dns_tlsa tlsa[MAX_TLSA];
	size_t ntlsa;
	struct timer deadline; /* setup; then idle */
	struct timer vtimer;   /* the oldest dialback verification's deadline */
	uint64_t retry_at;     /* after a failure: bounce at once until then */
	unsigned bidi_worker;
	uint64_t bidi_uid;
	unsigned backoff_s;
	const char *fail_text; /* the last failure, for the bounces */
	bool fail_timeout;
};

/* Per worker: the streams and links it owns (worker.h keeps the heads). */
struct s2s_worker {
	struct s2s *streams;
	size_t n_streams;
	struct s2s_link *links;
	size_t n_links;
	struct dns *dns;
	bool shutting_down;
	struct timer shutdown; /* closes the ready links (s2s_worker_shutdown) */
	uint64_t next_uid;
};

static X509_STORE *trust;

static struct s2s_worker *sw(struct worker *w)
{
	return w->s2s;
}

/* --- policy --- */

static bool in_list(char *const *list, size_t n, const char *d)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(list[i], d))
			return true;
	return false;
}

static bool insecure_ok(const char *remote)
{
	return in_list(srv->cfg.s2s_insecure_domains, srv->cfg.n_s2s_insecure_domains, remote);
}

/* XEP-0220 §2.4 / our policy: dialback never in the clear (unless the
 * domain is explicitly insecure), never for domains that must show a
 * certificate, and only while s2s_dialback is on. */
static bool dialback_ok(const char *remote, bool tls)
{
	if (!srv->cfg.s2s_dialback ||
	    in_list(srv->cfg.s2s_secure_domains, srv->cfg.n_s2s_secure_domains, remote))
		return false;
	return tls || insecure_ok(remote);
}

/* XEP-0185 §3: key = HMAC-SHA256(hex(SHA256(secret)), receiving ' '
 * originating ' ' stream-id), as lowercase hex. */
static void db_key(const char *receiving, const char *originating, const char *id,
		   char out[DB_KEY_HEX + 1])
{
	unsigned char h[SHA256_DIGEST_LENGTH], mac[SHA256_DIGEST_LENGTH];
	char hk[DB_KEY_HEX + 1];
	SHA256(srv->secret, sizeof(srv->secret), h);
	for (size_t i = 0; i < sizeof(h); i++)
		snprintf(hk + 2 * i, 3, "%02x", h[i]);
	struct buf m = BUF_INIT;
	buf_printf(&m, "%s %s %s", receiving, originating, id);
	unsigned ml = 0;
	HMAC(EVP_sha256(), hk, DB_KEY_HEX, (const unsigned char *)buf_head(&m), buf_pending(&m),
	     mac, &ml);
	buf_free(&m);
	for (size_t i = 0; i < SHA256_DIGEST_LENGTH; i++)
		snprintf(out + 2 * i, 3, "%02x", mac[i]);
	OPENSSL_cleanse(hk, sizeof(hk));
}

static bool prep_domain(const char *in, char out[JID_PART_MAX + 1])
{
	if (!in)
		return false;
	int n = jid_prep_domain(in, strlen(in), out, JID_PART_MAX + 1);
	return n > 0;
}

/* --- streams: common --- */

static void stream_unref_free(struct s2s *s);
static void link_stream_gone(struct s2s_link *l, struct s2s *s);
static void link_fail(struct s2s_link *l, bool timeout, const char *why);
static void link_next_address(struct s2s_link *l);
static void link_deadline(struct timer *t);
static void verify_timeout(struct timer *t);
static void verify_reply(const struct dbv *v, int result);
static void tlsa_done(void *ud, int rc, bool secure, const struct dns_tlsa *r, size_t n);
static void process(struct s2s *s, const char *p, size_t n);
static void bidi_announce(struct s2s *s, const struct pair *p, bool up);

static struct buf *out(struct s2s *s)
{
	if (!s->conn)
		return NULL;
	if (conn_queued(s->conn) > s->w->conf.limits.out_queue_bytes) {
		LOG(LOG_INFO, "s2s %s: output queue over %zu bytes: closing", s->peer_domain,
		    s->w->conf.limits.out_queue_bytes);
		s->flags |= F_CLOSING;
		conn_close(s->conn, "output queue full");
		loop_timer_set(s->w->loop, &s->timer, CLOSE_DEADLINE_MS);
		return NULL;
	}
	return conn_wbuf(s->conn);
}

static void new_stream_id(char *id, size_t cap)
{
	unsigned char rnd[12];
	char b[24];
	if (RAND_bytes(rnd, sizeof(rnd)) != 1)
		die("RAND_bytes failed");
	base64_encode(rnd, sizeof(rnd), b);
	for (char *p = b; *p; p++)
		if (*p == '/' || *p == '+')
			*p = 'x';
	snprintf(id, cap, "%s", b);
}

static void send_header(struct s2s *s, const char *from, const char *to, bool with_id)
{
	struct buf *b = out(s);
	if (!b)
		return;
	buf_adds(b, "<?xml version='1.0'?><stream:stream xmlns='" NS_SERVER
		    "' xmlns:stream='" NS_STREAMS "' xmlns:db='" NS_DIALBACK "'");
	if (with_id) {
		buf_adds(b, " id='");
		buf_adds(b, s->stream_id);
		buf_addc(b, '\'');
	}
	if (from) {
		buf_adds(b, " from='");
		xml_escape(b, from, strlen(from), true);
		buf_addc(b, '\'');
	}
	if (to) {
		buf_adds(b, " to='");
		xml_escape(b, to, strlen(to), true);
		buf_addc(b, '\'');
	}
	buf_adds(b, " version='1.0'>");
}

static void stream_close(struct s2s *s, const char *cond, const char *text)
{
	if (!s->conn || (s->flags & F_CLOSING))
		return;
	s->flags |= F_CLOSING;
	if (cond) {
		LOG(LOG_INFO, "s2s %s %s: stream error %s%s%s", s->dir == S2S_IN ? "from" : "to",
		    s->peer_domain[0] ? s->peer_domain : s->conn->peer_ip, cond, text ? ": " : "",
		    text ? text : "");
		if (s->dir == S2S_IN && !(s->flags & F_OPENED)) {
			new_stream_id(s->stream_id, sizeof(s->stream_id));
			send_header(s, srv->hosts[0].domain, NULL, true);
		}
		struct buf *b = out(s);
		if (b) {
			buf_printf(b, "<stream:error><%s xmlns='" NS_STREAM_ERRORS "'/>", cond);
			if (text) {
				buf_adds(b, "<text xmlns='" NS_STREAM_ERRORS "'>");
				xml_escape(b, text, strlen(text), false);
				buf_adds(b, "</text>");
			}
			buf_adds(b, "</stream:error>");
		}
	}
	struct buf *b = out(s);
	if (b)
		buf_adds(b, "</stream:stream>");
	if (s->conn)
		conn_close(s->conn, cond ? cond : "closed");
	loop_timer_set(s->w->loop, &s->timer, CLOSE_DEADLINE_MS);
}

static void apply_limits(struct s2s *s, bool authed)
{
	const struct limits_conf *l = &s->w->conf.limits;
	struct xs_limits xl = {
	    .max_stanza_bytes = authed ? l->stanza_bytes : l->stanza_bytes_preauth,
	    .max_depth = l->xml_depth,
	    .max_attrs = l->xml_attrs,
	    .max_attr_len = l->xml_attr_len,
	    .max_text_len = l->xml_text_len,
	    .max_children = l->xml_children,
	    .max_header_bytes = 4096,
	};
	if (xl.max_attr_len > xl.max_stanza_bytes)
		xl.max_attr_len = xl.max_stanza_bytes;
	if (xl.max_text_len > xl.max_stanza_bytes)
		xl.max_text_len = xl.max_stanza_bytes;
	xmlstream_set_limits(s->xs, &xl);
}

/* The peer's certificate against its domain (RFC 6125, XEP-0178): once
 * per TLS session, logged either way. */
static bool check_cert(struct s2s *s, const char *domain)
{
	if (!(s->flags & F_TLS) || !s->conn || !s->conn->ssl)
		return false;
	/* The verdict is remembered for the domain it was made for only (a
	 * restarted stream may name another). */
	if ((s->flags & F_CERT_CHECKS) && !strcmp(domain, s->cert_domain))
		return s->flags & F_CERT_OK;
	X509 *cert = SSL_get0_peer_certificate(s->conn->ssl);
	enum cert_id id = CERT_ID_NONE;
	if (s->flags & F_DANE) {
		/* RFC 7673 §4, RFC 7671 §5: with usable TLSA records, DANE alone
		 * decides; a certificate that does not match them is refused even
		 * if a CA signed it. */
		uint8_t usage = 0, sel = 0, mt = 0;
		long vr = SSL_get_verify_result(s->conn->ssl);
		int depth = SSL_get0_dane_tlsa(s->conn->ssl, &usage, &sel, &mt, NULL, NULL);
		bool ok = cert && vr == X509_V_OK && depth >= 0;
		s->flags |= F_CERT_CHECKS;
		snprintf(s->cert_domain, sizeof(s->cert_domain), "%s", domain);
		if (ok) {
			s->flags |= F_CERT_OK;
			LOG(LOG_INFO,
			    "s2s to %s: certificate valid (DANE-%s matched, TLSA %u %u %u)", domain,
			    usage == 3 ? "EE" : "TA", usage, sel, mt);
		} else {
			snprintf(s->why_cert, sizeof(s->why_cert),
				 "certificate does not match its DNSSEC-signed TLSA records (%s)",
				 X509_verify_cert_error_string(vr));
			LOG(LOG_WARN, "s2s to %s: %s", domain, s->why_cert);
		}
		return ok;
	}
	if (!cert) {
		snprintf(s->why_cert, sizeof(s->why_cert), "no certificate presented");
	} else {
		id = cert_verify_server(trust, cert, SSL_get_peer_cert_chain(s->conn->ssl), domain,
					s->why_cert, sizeof(s->why_cert));
	}
	s->flags &= ~(F_CERT_CHECKS | F_CERT_OK);
	s->flags |= F_CERT_CHECKS;
	if (id != CERT_ID_NONE)
		s->flags |= F_CERT_OK;
	snprintf(s->cert_domain, sizeof(s->cert_domain), "%s", domain);
	if (id != CERT_ID_NONE)
		LOG(LOG_INFO, "s2s %s %s: certificate valid (%s matched)",
		    s->dir == S2S_IN ? "from" : "to", domain, cert_id_name(id));
	else
		LOG(LOG_INFO, "s2s %s %s: certificate not accepted: %s",
		    s->dir == S2S_IN ? "from" : "to", domain, s->why_cert);
	return id != CERT_ID_NONE;
}

static void s2s_timer(struct timer *t)
{
	struct s2s *s = t->ud;
	if (!s->conn)
		return;
	if (s->flags & F_CLOSING) {
		conn_abort(s->conn);
		return;
	}
	uint64_t now = loop_now(s->w->loop);
	if (s->dir == S2S_OUT && (s->conn->flags & CONN_CONNECTING)) {
		s->conn->connect_errno = ETIMEDOUT;
		conn_abort(s->conn); /* on_closed tries the next address */
		return;
	}
	if (s->dir == S2S_OUT && !(s->flags & F_READY) && s->link) {
		if (now - s->last_io < NEGOTIATE_MS) {
			/* Progress (a peer slowly checking our dialback key, say). */
			loop_timer_set(s->w->loop, &s->timer,
				       NEGOTIATE_MS - (now - s->last_io) + 1);
			return;
		}
		/* Connected but stuck (a black hole behind TCP, a peer that never
		 * answers): the next address or target gets the rest of the
		 * link's setup time. */
		LOG(LOG_INFO, "s2s to %s: no progress with %s in %u s; trying the next address",
		    s->peer_domain, s->conn->peer_ip, NEGOTIATE_MS / 1000);
		conn_abort(s->conn);
		return;
	}
	if (s->dir == S2S_IN && !s->n_authed) {
		stream_close(s, "connection-timeout", "Not authenticated in time");
		return;
	}
	if (now - s->last_io >= IDLE_MS) {
		LOG(LOG_INFO, "s2s %s %s: idle, closing", s->dir == S2S_IN ? "from" : "to",
		    s->peer_domain);
		stream_close(s, NULL, NULL);
		return;
	}
	loop_timer_set(s->w->loop, &s->timer, IDLE_MS - (now - s->last_io) + 1);
}

/* limits.s2s_bytes_per_second: a token bucket holding 5 seconds' worth
 * (at least one largest stanza); past it reading pauses, so TCP pushes
 * back on the peer, and nothing is dropped. */
#define RL_BURST_S 5

static uint64_t rl_cap(const struct limits_conf *l)
{
	uint64_t cap = (uint64_t)l->s2s_bytes_per_second * RL_BURST_S;
	return cap < l->stanza_bytes ? l->stanza_bytes : cap;
}

static void rl_fire(struct timer *t)
{
	struct s2s *s = t->ud;
	const struct limits_conf *l = &s->w->conf.limits;
	if (!s->conn || (s->flags & F_CLOSING))
		return;
	bucket_refill(&s->rl, loop_now(s->w->loop), l->s2s_bytes_per_second, rl_cap(l));
	uint64_t ms = bucket_wait_ms(&s->rl, l->s2s_bytes_per_second);
	if (ms) {
		loop_timer_set(s->w->loop, &s->rl_timer, ms);
		return;
	}
	s->flags &= ~F_THROTTLED;
	if (!(s->flags & F_WAIT_DANE))
		conn_pause(s->conn, false);
}

/* After a read: spend its bytes, and pause if the bucket is empty. */
static void rl_spend(struct s2s *s, size_t n)
{
	const struct limits_conf *l = &s->w->conf.limits;
	if (!l->s2s_bytes_per_second)
		return;
	uint64_t now = loop_now(s->w->loop);
	bucket_refill(&s->rl, now, l->s2s_bytes_per_second, rl_cap(l));
	bucket_take(&s->rl, n);
	uint64_t ms = bucket_wait_ms(&s->rl, l->s2s_bytes_per_second);
	if (!ms || !s->conn || (s->flags & (F_THROTTLED | F_CLOSING)))
		return;
	LOG(LOG_DEBUG, "s2s %s %s: over limits.s2s_bytes_per_second: not reading for %llu ms",
	    s->dir == S2S_IN ? "from" : "to", s->peer_domain[0] ? s->peer_domain : s->conn->peer_ip,
	    (unsigned long long)ms);
	s->flags |= F_THROTTLED;
	conn_pause(s->conn, true);
	loop_timer_set(s->w->loop, &s->rl_timer, ms);
}

static struct s2s *stream_new(struct worker *w, enum s2s_dir dir)
{
	struct s2s *s = calloc(1, sizeof(*s));
	if (!s)
		die_oom();
	struct s2s_worker *x = sw(w);
	s->dir = dir;
	s->w = w;
	s->uid = ++x->next_uid;
	s->last_io = loop_now(w->loop);
	timer_init(&s->timer, s2s_timer, s);
	timer_init(&s->rl_timer, rl_fire, s);
	bucket_fill(&s->rl, s->last_io, rl_cap(&w->conf.limits));
	s->next = x->streams;
	if (x->streams)
		x->streams->prev = s;
	x->streams = s;
	x->n_streams++;
	return s;
}

static struct s2s *stream_find(struct worker *w, uint64_t uid)
{
	for (struct s2s *s = sw(w)->streams; s; s = s->next)
		if (s->uid == uid)
			return s;
	return NULL;
}

static void stream_unref_free(struct s2s *s)
{
	struct s2s_worker *x = sw(s->w);
	if (s->ip_gauge)
		throttle_gauge_dec(s->ip_gauge);
	if (s->prev)
		s->prev->next = s->next;
	else
		x->streams = s->next;
	if (s->next)
		s->next->prev = s->prev;
	x->n_streams--;
	/* (Not at shutdown: the other workers' loops may be gone.) */
	if ((s->flags & F_BIDI) && !x->shutting_down)
		for (unsigned i = 0; i < s->n_authed; i++)
			bidi_announce(s, &s->authed[i], false);
	loop_timer_cancel(s->w->loop, &s->timer);
	loop_timer_cancel(s->w->loop, &s->rl_timer);
	dane_lookup_cancel(s->dane);
	free(s->held);
	xmlstream_free(s->xs);
	free(s);
}

static void rename_ns(struct xml_el *e)
{
	/* Stanzas travel as jabber:client inside the server; on an s2s stream
	 * the same elements are jabber:server (RFC 6120 §4.8.3). */
	if (xml_is_text(e))
		return;
	if (e->ns && !strcmp(e->ns, NS_SERVER))
		e->ns = NS_CLIENT;
	for (struct xml_el *c = e->first; c; c = c->next)
		rename_ns(c);
}

/* --- incoming streams --- */

static bool in_is_authed(const struct s2s *s, const char *remote, const char *local)
{
	for (unsigned i = 0; i < s->n_authed; i++)
		if (!strcmp(s->authed[i].remote, remote) && !strcmp(s->authed[i].local, local))
			return true;
	return false;
}

static void in_authorize(struct s2s *s, const char *remote, const char *local, const char *how)
{
	if (in_is_authed(s, remote, local) || s->n_authed >= MAX_AUTHED)
		return;
	struct pair *p = &s->authed[s->n_authed++];
	snprintf(p->remote, sizeof(p->remote), "%s", remote);
	snprintf(p->local, sizeof(p->local), "%s", local);
	LOG(LOG_INFO, "s2s from %s to %s: authenticated by %s (from %s)", remote, local, how,
	    s->conn ? s->conn->peer_ip : "?");
	/* After a SASL success the announcement waits for the restarted
	 * stream (in_open): nothing of ours may precede its header. */
	if ((s->flags & F_BIDI) && !(s->flags & F_RESTART))
		bidi_announce(s, p, true);
	if (s->ip_gauge) {
		throttle_gauge_dec(s->ip_gauge);
		s->ip_gauge = 0;
	}
	apply_limits(s, true);
}

static void in_send_features(struct s2s *s)
{
	struct buf *b = out(s);
	if (!b)
		return;
	buf_adds(b, "<stream:features>");
	bool insecure = s->peer_domain[0] && insecure_ok(s->peer_domain);
	if (!(s->flags & F_TLS)) {
		/* RFC 6120 §5.3.1: only STARTTLS before TLS (unless the peer may
		 * go without, which must be configured by name). */
		buf_adds(b, "<starttls xmlns='" NS_TLS "'>");
		if (!insecure)
			buf_adds(b, "<required/>");
		buf_adds(b, "</starttls>");
	}
	if ((s->flags & F_TLS) && !s->n_authed && s->peer_domain[0] &&
	    check_cert(s, s->peer_domain)) {
		/* XEP-0178 §3.1: EXTERNAL only when the certificate is good. */
		buf_adds(b, "<mechanisms xmlns='" NS_SASL
			    "'><mechanism>EXTERNAL</mechanism></mechanisms>");
	}
	/* Offered even to a peer that policy will refuse it to: its own
	 * <db:verify/> requests use the same stream, and a refusal comes with
	 * a reason (XEP-0220 §2.4). */
	if (srv->cfg.s2s_dialback && ((s->flags & F_TLS) || insecure))
		buf_adds(b, "<dialback xmlns='" NS_DIALBACK_FEATURE "'><errors/></dialback>");
	/* XEP-0288 §2.1; enabling it needs TLS first (§2.2). */
	if (s->flags & F_TLS)
		buf_adds(b, "<bidi xmlns='" NS_BIDI_FEATURE "'/>");
	buf_adds(b, "</stream:features>");
}

/* The TLSA records of the peer's servers have arrived: a certificate
 * that no CA vouched for may still match them (XEP-0178 EXTERNAL by DANE). */
static void in_dane_done(void *ud, const struct dns_tlsa *r, size_t n, bool bogus)
{
	struct s2s *s = ud;
	s->dane = NULL;
	s->flags &= ~F_WAIT_DANE;
	if (!s->conn || (s->flags & F_CLOSING))
		return;
	/* (A throttled stream stays paused; rl_fire resumes it.) */
	SSL *ssl = s->conn->ssl;
	if (n && ssl && !strcmp(s->cert_domain, s->dane_domain)) {
		struct cert_tlsa t[DANE_MAX_RECORDS];
		for (size_t i = 0; i < n; i++)
			t[i] = (struct cert_tlsa){r[i].usage, r[i].selector, r[i].mtype, r[i].len,
						  r[i].data};
		char why[200];
		int k =
		    cert_dane_match(SSL_get0_peer_certificate(ssl), SSL_get_peer_cert_chain(ssl),
				    s->dane_domain, t, n, why, sizeof(why));
		if (k >= 0) {
			s->flags |= F_CERT_OK;
			LOG(LOG_INFO,
			    "s2s from %s: certificate valid (DANE-%s matched, TLSA %u %u %u of "
			    "its servers)",
			    s->dane_domain, r[k].usage == 3 ? "EE" : "TA", r[k].usage,
			    r[k].selector, r[k].mtype);
		} else {
			s->flags |= F_DANE_BAD;
			snprintf(s->why_cert, sizeof(s->why_cert),
				 "%s (DNSSEC-signed TLSA records)", why);
			LOG(LOG_WARN, "s2s from %s: certificate not accepted: %s", s->dane_domain,
			    s->why_cert);
		}
	} else if (bogus) {
		s->flags |= F_DANE_BAD;
		LOG(LOG_WARN, "s2s from %s: DNSSEC validation of its SRV or TLSA records failed",
		    s->dane_domain);
	}
	in_send_features(s);
	if (!(s->flags & F_THROTTLED))
		conn_pause(s->conn, false);
	if (s->n_held) {
		char *p = s->held;
		size_t len = s->n_held;
		s->held = NULL;
		s->n_held = 0;
		process(s, p, len);
		free(p);
	}
}

/* RFC 7673 with XEP-0344's reasoning applied to the initiating server: a
 * certificate that fails the PKIX checks is looked up in the TLSA records
 * of the peer domain's servers before the features are sent. Returns true
 * when a lookup started (reading and parsing wait for it). */
static bool in_start_dane(struct s2s *s)
{
	struct dns *d = sw(s->w)->dns;
	if (!d || !(s->flags & F_TLS) || !s->conn || !s->conn->ssl || !s->peer_domain[0] ||
	    s->n_authed || !SSL_get0_peer_certificate(s->conn->ssl) ||
	    !strcmp(s->dane_domain, s->peer_domain) || check_cert(s, s->peer_domain))
		return false;
	snprintf(s->dane_domain, sizeof(s->dane_domain), "%s", s->peer_domain);
	char *ascii = NULL;
	cert_domain_ascii(s->peer_domain, &ascii);
	s->dane = dane_lookup(d, ascii ? ascii : s->peer_domain, in_dane_done, s);
	free(ascii);
	s->flags |= F_WAIT_DANE;
	conn_pause(s->conn, true);
	xmlstream_pause(s->xs);
	return true;
}

static void in_open(struct s2s *s, const struct xml_el *hdr, const char *default_ns)
{
	const char *to = xml_attr(hdr, "to");
	const char *from = xml_attr(hdr, "from");
	char dom[JID_PART_MAX + 1];
	struct host *h = prep_domain(to, dom) ? host_find(dom, strlen(dom)) : NULL;
	if (s->host && h != s->host)
		h = NULL;
	if (h)
		s->host = h;
	char peer[JID_PART_MAX + 1];
	if (prep_domain(from, peer))
		snprintf(s->peer_domain, sizeof(s->peer_domain), "%s", peer);
	new_stream_id(s->stream_id, sizeof(s->stream_id));
	send_header(s, h ? h->domain : srv->hosts[0].domain,
		    s->peer_domain[0] ? s->peer_domain : NULL, true);
	s->flags |= F_OPENED;
	if (strcmp(default_ns, NS_SERVER)) {
		stream_close(s, "invalid-namespace", NULL); /* RFC 6120 §4.9.3.10 */
		return;
	}
	if (!h) {
		stream_close(s, "host-unknown", NULL); /* RFC 6120 §4.9.3.6 */
		return;
	}
	const char *version = xml_attr(hdr, "version");
	if (!version || atoi(version) < 1) {
		/* Pre-1.0 peers have no STARTTLS, which we require. */
		stream_close(s, "unsupported-version", NULL);
		return;
	}
	if (in_start_dane(s))
		return; /* the features follow the lookup */
	in_send_features(s);
	if (s->flags & F_BIDI)
		for (unsigned i = 0; i < s->n_authed; i++)
			bidi_announce(s, &s->authed[i], true); /* the restart after SASL */
}

/* XEP-0178: <auth mechanism='EXTERNAL'>authzid or =</auth>. */
static void in_sasl(struct s2s *s, struct xml_el *el, struct arena *a)
{
	if (strcmp(el->name, "auth")) {
		stream_close(s, "policy-violation", "Unexpected SASL element");
		return;
	}
	if (s->flags & F_SASL_DONE) {
		/* RFC 6120 §6.4.6: one successful SASL negotiation per stream. */
		stream_close(s, "policy-violation", "Already authenticated");
		return;
	}
	const char *mech = xml_attr(el, "mechanism");
	struct buf *b;
	if (!(s->flags & F_TLS) || !mech || strcmp(mech, "EXTERNAL")) {
		if ((b = out(s)))
			buf_adds(b, "<failure xmlns='" NS_SASL "'><invalid-mechanism/></failure>");
		return;
	}
	const char *text = xml_text(a, el);
	char authz[JID_PART_MAX + 1] = "";
	size_t tl = strlen(text);
	if (tl && strcmp(text, "=")) {
		unsigned char dec[JID_PART_MAX + 1];
		ssize_t n = tl < 2048 ? base64_decode(text, tl, dec, sizeof(dec) - 1) : -1;
		if (n <= 0) {
			if ((b = out(s)))
				buf_adds(b, "<failure xmlns='" NS_SASL
					    "'><incorrect-encoding/></failure>");
			return;
		}
		dec[n] = 0;
		if (!prep_domain((const char *)dec, authz)) {
			if ((b = out(s)))
				buf_adds(b, "<failure xmlns='" NS_SASL
					    "'><invalid-authzid/></failure>");
			return;
		}
	} else {
		snprintf(authz, sizeof(authz), "%s", s->peer_domain);
	}
	if (!authz[0] || !check_cert(s, authz)) {
		LOG(LOG_INFO, "s2s from %s: SASL EXTERNAL refused: %s", authz[0] ? authz : "?",
		    authz[0] ? s->why_cert : "no domain named");
		if ((b = out(s)))
			buf_adds(b, "<failure xmlns='" NS_SASL "'><not-authorized/></failure>");
		/* XEP-0178 §3.1: not-authorized, then the stream closes. */
		stream_close(s, NULL, NULL);
		return;
	}
	/* RFC 6120 §6.4.6: the peer restarts the stream. */
	s->flags &= ~F_OPENED;
	s->flags |= F_SASL_DONE | F_RESTART;
	in_authorize(s, authz, s->host->domain, "SASL EXTERNAL (certificate)");
	if ((b = out(s)))
		buf_adds(b, "<success xmlns='" NS_SASL "'/>");
	xmlstream_pause(s->xs);
}

static void db_result_reply(struct s2s *s, const char *local, const char *remote, const char *type,
			    const char *err)
{
	struct buf *b = out(s);
	if (!b)
		return;
	buf_adds(b, "<db:result from='");
	xml_escape(b, local, strlen(local), true);
	buf_adds(b, "' to='");
	xml_escape(b, remote, strlen(remote), true);
	buf_printf(b, "' type='%s'", type);
	if (err)
		buf_printf(b,
			   "><error type='cancel'><%s xmlns='" NS_STANZA_ERRORS
			   "'/></error></db:result>",
			   err);
	else
		buf_adds(b, "/>");
}

struct verify_done {
	uint64_t uid;
	char local[JID_PART_MAX + 1], remote[JID_PART_MAX + 1];
	char raw_local[JID_PART_MAX + 1], raw_remote[JID_PART_MAX + 1];
	int result; /* 1 valid, 0 invalid, -1 could not ask */
};

/* On the incoming stream's worker: the authoritative server answered. */
static void verify_done_here(void *arg)
{
	struct verify_done *v = arg;
	struct s2s *s = stream_find(worker_current(), v->uid);
	if (s && s->conn && !(s->flags & F_CLOSING)) {
		if (s->n_pending_db)
			s->n_pending_db--;
		if (v->result == 1 && s->n_authed >= MAX_AUTHED) {
			db_result_reply(s, v->raw_local, v->raw_remote, "error",
					"resource-constraint");
		} else if (v->result == 1) {
			in_authorize(s, v->remote, v->local, "dialback");
			db_result_reply(s, v->raw_local, v->raw_remote, "valid", NULL);
		} else {
			LOG(LOG_INFO, "s2s from %s to %s: dialback %s", v->remote, v->local,
			    v->result == 0 ? "key invalid" : "could not be verified");
			db_result_reply(s, v->raw_local, v->raw_remote,
					v->result == 0 ? "invalid" : "error",
					v->result == 0 ? NULL : "remote-server-not-found");
			if (v->result == 0)
				stream_close(s, NULL, NULL); /* XEP-0220 §2.2.1 */
		}
	}
	free(v);
}

static void link_verify(struct dbv *v); /* on the link's worker */

static void verify_posted(void *arg)
{
	link_verify(arg);
}

static unsigned owner_of(const char *remote)
{
	/* FNV-1a: the same worker for a remote domain every time. */
	uint32_t h = 2166136261u;
	for (const char *p = remote; *p; p++) {
		h ^= (unsigned char)*p;
		h *= 16777619u;
	}
	return h % srv->n_workers;
}

/* XEP-0220 §2.1.2: <db:result from='remote' to='local'>key</db:result>. */
static void in_db_result(struct s2s *s, struct xml_el *el, struct arena *a)
{
	char remote[JID_PART_MAX + 1], local[JID_PART_MAX + 1];
	const char *rfrom = xml_attr(el, "from"), *rto = xml_attr(el, "to");
	if (!prep_domain(rfrom, remote) || !prep_domain(rto, local) ||
	    strlen(rfrom) > JID_PART_MAX || strlen(rto) > JID_PART_MAX) {
		stream_close(s, "improper-addressing", "db:result needs from and to");
		return;
	}
	if (!host_find(local, strlen(local))) {
		db_result_reply(s, rto, rfrom, "error", "item-not-found");
		return;
	}
	if ((s->flags & F_DANE_BAD) && !strcmp(remote, s->dane_domain)) {
		/* Its DNSSEC-signed TLSA records rule out the certificate this
		 * peer showed (or were tampered with): someone else answers, as
		 * on our own links (RFC 7673 §4), so no dialback either. */
		LOG(LOG_INFO, "s2s from %s: dialback refused: its certificate failed DANE", remote);
		db_result_reply(s, rto, rfrom, "error", "not-authorized");
		return;
	}
	if (!dialback_ok(remote, s->flags & F_TLS)) {
		LOG(LOG_INFO, "s2s from %s: dialback refused by policy (%s)", remote,
		    !(s->flags & F_TLS) ? "not over TLS" : "certificate required for this domain");
		db_result_reply(s, rto, rfrom, "error",
				(s->flags & F_TLS) ? "not-authorized" : "policy-violation");
		return;
	}
	if (in_is_authed(s, remote, local)) {
		db_result_reply(s, rto, rfrom, "valid", NULL);
		return;
	}
	const char *key = xml_text(a, el);
	if (strlen(key) != DB_KEY_HEX && (strlen(key) < 16 || strlen(key) > DB_KEY_HEX)) {
		db_result_reply(s, rto, rfrom, "invalid", NULL);
		return;
	}
	if (s->n_pending_db >= MAX_PENDING_DB) {
		db_result_reply(s, rto, rfrom, "error", "resource-constraint");
		return;
	}
	s->n_pending_db++;
	struct dbv *v = calloc(1, sizeof(*v));
	if (!v)
		die_oom();
	snprintf(v->local, sizeof(v->local), "%s", local);
	snprintf(v->remote, sizeof(v->remote), "%s", remote);
	snprintf(v->raw_local, sizeof(v->raw_local), "%s", rto);
	snprintf(v->raw_remote, sizeof(v->raw_remote), "%s", rfrom);
	snprintf(v->id, sizeof(v->id), "%s", s->stream_id);
	snprintf(v->key, sizeof(v->key), "%s", key);
	v->reply_worker = s->w->idx;
	v->reply_uid = s->uid;
	loop_post(srv->workers[owner_of(remote)].loop, verify_posted, v);
}

/* XEP-0220 §2.3: we are the authoritative server; is the key ours? */
static void in_db_verify(struct s2s *s, struct xml_el *el, struct arena *a)
{
	char remote[JID_PART_MAX + 1], local[JID_PART_MAX + 1];
	const char *id = xml_attr(el, "id");
	const char *rfrom = xml_attr(el, "from"), *rto = xml_attr(el, "to");
	if (!prep_domain(rfrom, remote) || !prep_domain(rto, local) || !id) {
		stream_close(s, "improper-addressing", "db:verify needs from, to and id");
		return;
	}
	if (!(s->flags & F_TLS) && !insecure_ok(remote)) {
		stream_close(s, "policy-violation", "Dialback only over TLS");
		return;
	}
	bool ok = false;
	if (host_find(local, strlen(local))) {
		char want[DB_KEY_HEX + 1];
		db_key(remote, local, id, want);
		const char *key = xml_text(a, el);
		ok = strlen(key) == DB_KEY_HEX && CRYPTO_memcmp(key, want, DB_KEY_HEX) == 0;
	}
	struct buf *b = out(s);
	if (!b)
		return;
	/* The names as the asker wrote them (XEP-0220 §2.3.2: to and from
	 * swapped), whatever form of a domain it uses. */
	buf_adds(b, "<db:verify from='");
	xml_escape(b, rto, strlen(rto), true);
	buf_adds(b, "' to='");
	xml_escape(b, rfrom, strlen(rfrom), true);
	buf_adds(b, "' id='");
	xml_escape(b, id, strlen(id), true);
	buf_printf(b, "' type='%s'/>", ok ? "valid" : "invalid");
}

/* Whether the peer may send a stanza from domain remote to our domain
 * local on this stream. */
static bool may_receive(const struct s2s *s, const char *remote, const char *local)
{
	if (s->dir == S2S_IN)
		return in_is_authed(s, remote, local);
	/* XEP-0288 §2.2: over our own stream, once we are authenticated to
	 * the peer, and only from its domain to ours. Our policy accepted the
	 * peer's identity before we went ahead (out_features). */
	return (s->flags & F_BIDI) && (s->flags & F_READY) && s->link &&
	       !strcmp(remote, s->peer_domain) && !strcmp(local, s->link->local);
}

/* A stanza from the peer: on an incoming stream, or on our outgoing one
 * when XEP-0288 is on. */
static void in_stanza(struct s2s *s, struct xml_el *el, struct arena *a)
{
	if (strcmp(el->name, "message") && strcmp(el->name, "presence") && strcmp(el->name, "iq")) {
		arena_free(a);
		stream_close(s, "unsupported-stanza-type", NULL);
		return;
	}
	const char *from = xml_attr(el, "from"), *to = xml_attr(el, "to");
	if (!from || !to) {
		arena_free(a);
		stream_close(s, "improper-addressing", NULL); /* RFC 6120 §4.9.3.11 */
		return;
	}
	rename_ns(el);
	int err;
	struct stanza *st = stanza_wrap(el, a, &err);
	if (!st->from.len || !st->to.len) {
		stanza_free(st);
		stream_close(s, "improper-addressing", "Malformed from or to");
		return;
	}
	char fd[JID_PART_MAX + 1], td[JID_PART_MAX + 1];
	snprintf(fd, sizeof(fd), "%.*s", (int)st->from.dom_len, st->from.s + st->from.dom_off);
	snprintf(td, sizeof(td), "%.*s", (int)st->to.dom_len, st->to.s + st->to.dom_off);
	if (!host_find(td, strlen(td))) {
		stanza_free(st);
		stream_close(s, "host-unknown", "We do not serve that domain");
		return;
	}
	if (!may_receive(s, fd, td)) {
		/* RFC 6120 §4.9.3.9, §13.7.2: only what the peer proved it is. */
		stanza_free(st);
		stream_close(s, "invalid-from", "That domain is not authenticated on this stream");
		return;
	}
	if (err != SE_NONE) {
		route_error(st, (enum st_err)err, NULL);
		return;
	}
	LOG(LOG_DEBUG, "s2s from %s: %s from %s to %s%s", fd, el->name, st->from.s, st->to.s,
	    s->dir == S2S_OUT ? " (on our stream, XEP-0288)" : "");
	route(st, NULL);
}

/* --- outgoing streams --- */

static void out_send_verifies(struct s2s_link *l);

static void out_ready(struct s2s *s)
{
	struct s2s_link *l = s->link;
	s->flags |= F_READY;
	apply_limits(s, true);
	loop_timer_set(s->w->loop, &s->timer, IDLE_MS);
	if (!l)
		return;
	l->state = LS_READY;
	l->backoff_s = 0;
	l->retry_at = 0;
	LOG(LOG_INFO, "s2s to %s from %s: ready (%s), %zu stanza%s waiting", l->remote, l->local,
	    (s->flags & F_SASL_DONE) ? "SASL EXTERNAL" : "dialback", l->nq, l->nq == 1 ? "" : "s");
	loop_timer_cancel(s->w->loop, &l->deadline);
	struct buf *b = out(s);
	for (size_t i = 0; i < l->nq; i++) {
		if (b)
			xml_serialize(l->q[i]->el, NS_CLIENT, b);
		stanza_free(l->q[i]);
	}
	l->nq = 0;
	l->qbytes = 0;
}

static void out_features(struct s2s *s, struct xml_el *el)
{
	struct s2s_link *l = s->link;
	const char *remote = s->peer_domain;
	if (!l) {
		stream_close(s, NULL, NULL); /* the link gave up meanwhile */
		return;
	}
	if (!(s->flags & F_TLS)) {
		if (xml_child(el, NS_TLS, "starttls")) {
			struct buf *b = out(s);
			if (b)
				buf_adds(b, "<starttls xmlns='" NS_TLS "'/>");
			return;
		}
		if (!insecure_ok(remote)) {
			LOG(LOG_WARN,
			    "s2s to %s: the peer offers no TLS; refused (list it in "
			    "s2s_insecure_domains to allow it)",
			    remote);
			/* The stream error first: link_fail() closes without one. */
			stream_close(s, "policy-violation", "TLS is required");
			link_fail(l, false, "The remote server does not offer TLS");
			return;
		}
	}
	if (s->flags & F_SASL_DONE) {
		out_ready(s);
		return;
	}
	s->flags |= F_FEATURES;
	if (l)
		out_send_verifies(l);
	if (s->flags & (F_SASL_SENT | F_DB_SENT | F_READY))
		return;
	struct xml_el *mechs = xml_child(el, NS_SASL, "mechanisms");
	bool external = false;
	if (mechs)
		for (struct xml_el *m = xml_first_el(mechs); m; m = xml_next_el(m))
			if (!strcmp(m->name, "mechanism") && m->first && xml_is_text(m->first) &&
			    !strcmp(m->first->text, "EXTERNAL"))
				external = true;
	bool cert = check_cert(s, remote);
	if (!cert && (s->flags & F_DANE)) {
		/* A DANE mismatch means someone else answers: no dialback. */
		stream_close(s, "policy-violation", NULL);
		link_fail(l, false,
			  "The remote server's certificate does not match its TLSA records");
		return;
	}
	if ((s->flags & F_TLS) && !(s->flags & F_BIDI) && xml_child(el, NS_BIDI_FEATURE, "bidi")) {
		/* XEP-0288 §2.2: before SASL or dialback; there is no answer. The
		 * peer may then send us its stanzas on this stream. */
		struct buf *b = out(s);
		if (b)
			buf_adds(b, "<bidi xmlns='" NS_BIDI "'/>");
		s->flags |= F_BIDI;
	}
	/* EXTERNAL proves us to the peer; what proves the peer to us is its
	 * certificate, or else DNS alone, as with dialback (below), which its
	 * policy must allow. */
	if (external && (cert || dialback_ok(remote, s->flags & F_TLS))) {
		char b64[((JID_PART_MAX + 2) / 3) * 4 + 4];
		base64_encode((const unsigned char *)l->local, strlen(l->local), b64);
		struct buf *b = out(s);
		if (b)
			buf_printf(b, "<auth xmlns='" NS_SASL "' mechanism='EXTERNAL'>%s</auth>",
				   b64);
		s->flags |= F_SASL_SENT;
		return;
	}
	/* Dialback proves us to the peer. Without a valid certificate (or
	 * DANE) the peer's own identity rests on DNS alone, which its
	 * policy must allow; with one, only our dialback switch counts. */
	bool db_allowed = cert
			      ? srv->cfg.s2s_dialback && ((s->flags & F_TLS) || insecure_ok(remote))
			      : dialback_ok(remote, s->flags & F_TLS);
	if (db_allowed && xml_child(el, NS_DIALBACK_FEATURE, "dialback")) {
		char key[DB_KEY_HEX + 1];
		db_key(remote, l->local, s->stream_id, key);
		struct buf *b = out(s);
		if (b) {
			buf_adds(b, "<db:result from='");
			xml_escape(b, l->local, strlen(l->local), true);
			buf_adds(b, "' to='");
			xml_escape(b, remote, strlen(remote), true);
			buf_printf(b, "'>%s</db:result>", key);
		}
		s->flags |= F_DB_SENT;
		return;
	}
	LOG(LOG_WARN, "s2s to %s: cannot authenticate: %s%s", remote,
	    cert ? "the peer offers no SASL EXTERNAL and dialback is not possible" : s->why_cert,
	    cert ? ""
		 : (dialback_ok(remote, s->flags & F_TLS) ? "; no dialback offered"
							  : "; dialback not allowed"));
	stream_close(s, "policy-violation", NULL);
	link_fail(l, false, "The remote server could not be authenticated");
}

static void out_sasl(struct s2s *s, struct xml_el *el)
{
	if (!strcmp(el->name, "success") && (s->flags & F_SASL_SENT)) {
		s->flags |= F_SASL_DONE | F_RESTART;
		s->flags &= ~F_OPENED;
		xmlstream_pause(s->xs); /* restart once the XML layer returns */
		return;
	}
	LOG(LOG_INFO, "s2s to %s: SASL EXTERNAL refused by the peer", s->peer_domain);
	s->flags &= ~F_SASL_SENT;
	/* Fall back to dialback when allowed (XEP-0178 §3.2 leaves it open). */
	if (s->link && srv->cfg.s2s_dialback && (s->flags & F_TLS)) {
		/* (EXTERNAL was tried with the peer's identity accepted by its
		 * certificate, or by DNS where dialback_ok() allows that.) */
		char key[DB_KEY_HEX + 1];
		db_key(s->peer_domain, s->link->local, s->stream_id, key);
		struct buf *b = out(s);
		if (b) {
			buf_printf(b, "<db:result from='%s' to='%s'>%s</db:result>", s->link->local,
				   s->peer_domain, key);
			s->flags |= F_DB_SENT;
		}
		return;
	}
	if (s->link)
		link_fail(s->link, false, "The remote server refused our certificate");
	stream_close(s, NULL, NULL);
}

static void out_db(struct s2s *s, struct xml_el *el)
{
	const char *type = xml_attr(el, "type");
	if (!strcmp(el->name, "result")) {
		if (!(s->flags & F_DB_SENT) || !type)
			return;
		if (!strcmp(type, "valid")) {
			out_ready(s);
			return;
		}
		LOG(LOG_WARN, "s2s to %s: dialback %s by the peer", s->peer_domain, type);
		if (s->link)
			link_fail(s->link, false, "The remote server refused our dialback");
		stream_close(s, NULL, NULL);
		return;
	}
	if (!strcmp(el->name, "verify") && s->link) {
		const char *id = xml_attr(el, "id");
		struct dbv **pp = &s->link->verifies;
		for (; *pp; pp = &(*pp)->next)
			if ((*pp)->sent && id && !strcmp((*pp)->id, id))
				break;
		struct dbv *v = *pp;
		if (!v)
			return;
		*pp = v->next;
		verify_reply(v, type && !strcmp(type, "valid") ? 1 : 0);
		free(v);
	}
}

/* --- the stream layer's callbacks, both directions --- */

static void on_open(void *ud, const struct xml_el *hdr, const char *default_ns)
{
	struct s2s *s = ud;
	if (s->dir == S2S_IN) {
		in_open(s, hdr, default_ns);
		return;
	}
	s->flags |= F_OPENED;
	const char *id = xml_attr(hdr, "id");
	if (strcmp(default_ns, NS_SERVER) || !id || strlen(id) >= sizeof(s->stream_id)) {
		stream_close(s, strcmp(default_ns, NS_SERVER) ? "invalid-namespace" : "bad-format",
			     NULL);
		if (s->link)
			link_fail(s->link, false, "The remote server sent a bad stream header");
		return;
	}
	snprintf(s->stream_id, sizeof(s->stream_id), "%s", id);
}

static void on_element(void *ud, struct xml_el *el, struct arena *a)
{
	struct s2s *s = ud;
	s->last_io = loop_now(s->w->loop);
	if ((s->flags & F_CLOSING) || !(s->flags & F_OPENED)) {
		arena_free(a);
		return;
	}
	if (!strcmp(el->ns, NS_STREAMS) && !strcmp(el->name, "error")) {
		struct xml_el *c = xml_first_el(el);
		LOG(LOG_INFO, "s2s %s %s: stream error from the peer: %s",
		    s->dir == S2S_IN ? "from" : "to", s->peer_domain, c ? c->name : "?");
		if (s->link && s->link->state != LS_READY)
			link_fail(s->link, false, "The remote server closed the stream");
		arena_free(a);
		stream_close(s, NULL, NULL);
		return;
	}
	if (s->dir == S2S_OUT) {
		if (!strcmp(el->ns, NS_STREAMS) && !strcmp(el->name, "features"))
			out_features(s, el);
		else if (!strcmp(el->ns, NS_TLS) && !strcmp(el->name, "proceed") &&
			 !(s->flags & F_TLS)) {
			s->flags |= F_TLS | F_RESTART;
			s->flags &= ~F_OPENED;
			xmlstream_pause(s->xs);
		} else if (!strcmp(el->ns, NS_SASL)) {
			out_sasl(s, el);
		} else if (!strcmp(el->ns, NS_DIALBACK)) {
			/* With XEP-0288 the peer may ask us, its authoritative
			 * server, to verify a key here (no type: a request). */
			if ((s->flags & F_BIDI) && !strcmp(el->name, "verify") &&
			    !xml_attr(el, "type"))
				in_db_verify(s, el, a);
			else
				out_db(s, el);
		} else if ((s->flags & F_BIDI) && !strcmp(el->ns, NS_SERVER)) {
			in_stanza(s, el, a); /* takes a */
			return;
		}
		/* Anything else on an outgoing stream (RFC 6120 §4.1: one
		 * direction, unless XEP-0288) is ignored. */
		arena_free(a);
		return;
	}
	if (!strcmp(el->ns, NS_TLS)) {
		bool bad = strcmp(el->name, "starttls") || (s->flags & F_TLS);
		arena_free(a);
		if (bad) {
			stream_close(s, "policy-violation", "Unexpected STARTTLS");
			return;
		}
		struct buf *b = out(s);
		if (b)
			buf_adds(b, "<proceed xmlns='" NS_TLS "'/>");
		s->flags |= F_TLS | F_RESTART;
		s->flags &= ~F_OPENED;
		xmlstream_pause(s->xs);
		return;
	}
	if (!(s->flags & F_TLS) && !(s->peer_domain[0] && insecure_ok(s->peer_domain))) {
		arena_free(a);
		stream_close(s, "policy-violation", "STARTTLS is required first");
		return;
	}
	if (!strcmp(el->ns, NS_BIDI) && !strcmp(el->name, "bidi")) {
		/* XEP-0288 §2.2: only after TLS, even for a peer allowed to go
		 * without. Pairs already authenticated become routes now; later
		 * ones as they come. */
		arena_free(a);
		if (!(s->flags & F_TLS)) {
			stream_close(s, "policy-violation", "Bidirectional streams need TLS first");
			return;
		}
		if (!(s->flags & F_BIDI)) {
			s->flags |= F_BIDI;
			LOG(LOG_DEBUG, "s2s from %s: bidirectional stream requested (XEP-0288)",
			    s->peer_domain);
			for (unsigned i = 0; i < s->n_authed; i++)
				bidi_announce(s, &s->authed[i], true);
		}
		return;
	}
	if (!strcmp(el->ns, NS_SASL))
		in_sasl(s, el, a);
	else if (!strcmp(el->ns, NS_DIALBACK) && !strcmp(el->name, "result"))
		in_db_result(s, el, a);
	else if (!strcmp(el->ns, NS_DIALBACK) && !strcmp(el->name, "verify"))
		in_db_verify(s, el, a);
	else if (!strcmp(el->ns, NS_SERVER)) {
		in_stanza(s, el, a); /* takes a */
		return;
	} else {
		arena_free(a);
		stream_close(s, "unsupported-stanza-type", NULL);
		return;
	}
	arena_free(a);
}

static void on_xclose(void *ud)
{
	struct s2s *s = ud;
	stream_close(s, NULL, NULL);
}

static const struct xs_callbacks xs_cb = {on_open, on_element, on_xclose};

static SSL_CTX *client_ctx(struct s2s *s)
{
	struct host *h = s->link ? host_find(s->link->local, strlen(s->link->local)) : NULL;
	return atomic_load(&(h ? h : &srv->hosts[0])->s2s_client_tls);
}

/* Client TLS towards the peer, with its TLSA records when DANE applies
 * (OpenSSL's DANE: DANE-EE matches the leaf, DANE-TA a chain certificate
 * that must then issue a leaf naming the domain). */
static void start_client_tls(struct s2s *s, const char *alpn)
{
	char *sni = NULL;
	cert_domain_ascii(s->peer_domain, &sni);
	const char *name = sni ? sni : s->peer_domain;
	conn_starttls_client(s->conn, client_ctx(s), name, alpn);
	struct s2s_link *l = s->link;
	if (l && l->ntlsa && s->conn && s->conn->ssl && SSL_dane_enable(s->conn->ssl, name) > 0) {
		size_t usable = 0;
		for (size_t i = 0; i < l->ntlsa; i++)
			if (SSL_dane_tlsa_add(s->conn->ssl, l->tlsa[i].usage, l->tlsa[i].selector,
					      l->tlsa[i].mtype, l->tlsa[i].data,
					      l->tlsa[i].len) > 0)
				usable++;
		if (usable)
			s->flags |= F_DANE;
	}
	free(sni);
}

/* Plaintext from the peer, through the XML layer. */
static void process(struct s2s *s, const char *p, size_t n)
{
	while (n && s->conn && !(s->flags & F_CLOSING)) {
		ssize_t r = xmlstream_feed(s->xs, p, n);
		if (r < 0) {
			stream_close(s, xmlstream_condition(xmlstream_error(s->xs)),
				     xmlstream_error(s->xs) == XS_ERR_POLICY
					 ? xmlstream_error_text(s->xs)
					 : NULL);
			if (s->link && s->link->state != LS_READY)
				link_fail(s->link, false, "The remote server sent bad XML");
			return;
		}
		p += r;
		n -= (size_t)r;
		if (s->flags & F_WAIT_DANE) {
			/* Kept until the TLSA records are in (in_dane_done). */
			if (n) {
				char *h = realloc(s->held, s->n_held + n);
				if (!h)
					die_oom();
				memcpy(h + s->n_held, p, n);
				s->held = h;
				s->n_held += n;
			}
			return;
		}
		if (!(s->flags & F_RESTART) || !s->conn)
			continue;
		s->flags &= ~F_RESTART;
		/* Paused for a restart: STARTTLS (what follows in this read was
		 * sent in the clear and is dropped, RFC 6120 §5.4.3.3) or SASL. */
		xmlstream_reset(s->xs);
		bool tls_now = (s->flags & F_TLS) && !conn_is_tls(s->conn);
		if (tls_now) {
			if (s->dir == S2S_IN) {
				/* RFC 6120 §5.4.3.3: nothing learned in the clear counts. */
				s->n_authed = 0;
				s->flags &= ~(F_CERT_CHECKS | F_CERT_OK);
				conn_starttls(s->conn, atomic_load(&s->host->s2s_tls));
			} else {
				start_client_tls(s, NULL);
			}
			return;
		}
		if (s->dir == S2S_OUT)
			send_header(s, s->link ? s->link->local : NULL, s->peer_domain, false);
	}
}

static void on_tls_ready(struct conn *c)
{
	struct s2s *s = c->ud;
	s->flags |= F_TLS;
	if (s->dir == S2S_OUT && s->link)
		send_header(s, s->link->local, s->peer_domain, false);
}

static void on_connected(struct conn *c)
{
	struct s2s *s = c->ud;
	struct s2s_link *l = s->link;
	LOG(LOG_DEBUG, "s2s to %s: connected to %s%s", s->peer_domain, c->peer_ip,
	    (s->flags & F_DIRECT_TLS) ? " (direct TLS)" : "");
	if (l)
		loop_timer_set(s->w->loop, &s->timer, NEGOTIATE_MS);
	if (s->flags & F_DIRECT_TLS) {
		start_client_tls(s, "xmpp-server");
		return;
	}
	send_header(s, l ? l->local : NULL, s->peer_domain, false);
}

static void on_closed(struct conn *c, const char *reason)
{
	struct s2s *s = c->ud;
	s->conn = NULL;
	if (s->link) {
		struct s2s_link *l = s->link;
		s->link = NULL;
		if (!(s->flags & F_READY) && !l->fail_text) {
			/* Never got going: this address did not work; try the next. */
			LOG(LOG_INFO, "s2s to %s: %s (%s)", l->remote, reason ? reason : "closed",
			    c->peer_ip);
			l->s = NULL;
			for (struct dbv *v = l->verifies; v; v = v->next)
				v->sent = false; /* the next stream sends them again */
			link_next_address(l);
		} else {
			link_stream_gone(l, s);
		}
	} else {
		LOG(LOG_INFO, "s2s %s %s: closed (%s)", s->dir == S2S_IN ? "from" : "to",
		    s->peer_domain[0] ? s->peer_domain : c->peer_ip, reason ? reason : "");
	}
	stream_unref_free(s);
}

static void on_data(struct conn *c, const char *p, size_t n)
{
	struct s2s *s = c->ud;
	s->last_io = loop_now(s->w->loop);
	rl_spend(s, n);
	process(s, p, n);
}

static const struct conn_handler s2s_handler = {on_data, on_tls_ready, on_closed, on_connected};

void s2s_accept(struct worker *w, int fd, const struct sockaddr_storage *peer, bool direct_tls)
{
	uint64_t gauge;
	if (!accept_admit(w, fd, peer, direct_tls, true, &gauge))
		return;
	struct s2s *s = stream_new(w, S2S_IN);
	s->ip_gauge = gauge;
	s->xs = xmlstream_new(&xs_cb, s, NULL);
	apply_limits(s, false);
	if (direct_tls)
		s->flags |= F_TLS | F_DIRECT_TLS;
	s->conn =
	    conn_accept(w->loop, fd, peer, direct_tls ? atomic_load(&srv->hosts[0].s2s_tls) : NULL,
			&s2s_handler, s);
	if (!s->conn) {
		stream_unref_free(s);
		return;
	}
	LOG(LOG_DEBUG, "s2s connection from %s%s", s->conn->peer_ip,
	    direct_tls ? " (direct TLS)" : "");
	loop_timer_set(w->loop, &s->timer, (uint64_t)w->conf.limits.handshake_timeout * 1000u);
}

/* --- links --- */

static bool link_unused(const struct s2s_link *l, uint64_t now)
{
	return l->state == LS_IDLE && !l->s && !l->nq && !l->verifies && now >= l->retry_at &&
	       !l->dq[0] && !l->dq[1];
}

static struct s2s_link *link_find(struct worker *w, const char *local, const char *remote,
				  bool create)
{
	uint64_t now = loop_now(w->loop);
	for (struct s2s_link **pp = &sw(w)->links, *l; (l = *pp);) {
		if (!strcmp(l->local, local) && !strcmp(l->remote, remote))
			return l;
		if (link_unused(l, now)) {
			/* Links to domains nobody talks to any more go. */
			*pp = l->next;
			loop_timer_cancel(w->loop, &l->deadline);
			loop_timer_cancel(w->loop, &l->vtimer);
			free(l->q);
			free(l);
			sw(w)->n_links--;
			continue;
		}
		pp = &l->next;
	}
	if (create && sw(w)->n_links >= MAX_LINKS) {
		LOG(LOG_WARN, "s2s: %d remote domains at once on worker %u; refusing %s", MAX_LINKS,
		    w->idx, remote);
		return NULL;
	}
	if (!create)
		return NULL;
	struct s2s_link *l = calloc(1, sizeof(*l));
	if (!l)
		die_oom();
	l->w = w;
	timer_init(&l->deadline, link_deadline, l);
	snprintf(l->local, sizeof(l->local), "%s", local);
	snprintf(l->remote, sizeof(l->remote), "%s", remote);
	char *a = NULL;
	if (cert_domain_ascii(remote, &a) == 0 && a && strlen(a) < sizeof(l->remote_ascii))
		snprintf(l->remote_ascii, sizeof(l->remote_ascii), "%s", a);
	else
		snprintf(l->remote_ascii, sizeof(l->remote_ascii), "%s", remote);
	free(a);
	timer_init(&l->vtimer, verify_timeout, l);
	l->next = sw(w)->links;
	sw(w)->links = l;
	sw(w)->n_links++;
	return l;
}

static void bounce_queue(struct s2s_link *l)
{
	enum st_err e = l->fail_timeout ? SE_REMOTE_SERVER_TIMEOUT : SE_REMOTE_SERVER_NOT_FOUND;
	for (size_t i = 0; i < l->nq; i++)
		route_error(l->q[i], e, l->fail_text);
	l->nq = 0;
	l->qbytes = 0;
}

static void verify_reply(const struct dbv *v, int result)
{
	struct verify_done *d = calloc(1, sizeof(*d));
	if (!d)
		die_oom();
	d->uid = v->reply_uid;
	snprintf(d->local, sizeof(d->local), "%s", v->local);
	snprintf(d->remote, sizeof(d->remote), "%s", v->remote);
	snprintf(d->raw_local, sizeof(d->raw_local), "%s", v->raw_local);
	snprintf(d->raw_remote, sizeof(d->raw_remote), "%s", v->raw_remote);
	d->result = result;
	loop_post(srv->workers[v->reply_worker].loop, verify_done_here, d);
}

/* Verifications the authoritative server left unanswered too long fail. */
static void verify_timeout(struct timer *t)
{
	struct s2s_link *l = t->ud;
	uint64_t now = loop_now(l->w->loop), next = 0;
	for (struct dbv **pp = &l->verifies, *v; (v = *pp);) {
		if (now - v->since >= VERIFY_TIMEOUT_MS) {
			*pp = v->next;
			verify_reply(v, -1);
			free(v);
			continue;
		}
		uint64_t left = VERIFY_TIMEOUT_MS - (now - v->since);
		if (!next || left < next)
			next = left;
		pp = &v->next;
	}
	if (next)
		loop_timer_set(l->w->loop, &l->vtimer, next);
}

static void fail_verifies(struct s2s_link *l)
{
	while (l->verifies) {
		struct dbv *v = l->verifies;
		l->verifies = v->next;
		verify_reply(v, -1);
		free(v);
	}
}

static void cancel_dns(struct s2s_link *l)
{
	for (int i = 0; i < 2; i++)
		if (l->dq[i]) {
			dns_cancel(l->dq[i]);
			l->dq[i] = NULL;
		}
}

/* The link could not be set up: everything waiting is bounced, and new
 * stanzas are bounced at once until the backoff has passed. */
static void link_fail(struct s2s_link *l, bool timeout, const char *why)
{
	if (!l || l->fail_text)
		return;
	l->fail_text = why;
	l->fail_timeout = timeout;
	LOG(LOG_WARN, "s2s to %s: %s; %zu stanza%s bounced", l->remote, why, l->nq,
	    l->nq == 1 ? "" : "s");
	cancel_dns(l);
	bounce_queue(l);
	fail_verifies(l);
	l->backoff_s = l->backoff_s ? l->backoff_s * 2 : BACKOFF_MIN_S;
	if (l->backoff_s > BACKOFF_MAX_S)
		l->backoff_s = BACKOFF_MAX_S;
	l->retry_at = loop_now(l->w->loop) + l->backoff_s * 1000u;
	l->state = LS_IDLE;
	loop_timer_cancel(l->w->loop, &l->deadline);
	if (l->s) {
		struct s2s *s = l->s;
		l->s = NULL;
		s->link = NULL;
		stream_close(s, NULL, NULL);
	}
}

static void link_stream_gone(struct s2s_link *l, struct s2s *s)
{
	if (l->s == s)
		l->s = NULL;
	if (l->state == LS_READY || l->fail_text) {
		l->state = LS_IDLE;
		/* Stanzas queued after it closed start a new connection. */
		fail_verifies(l);
		bounce_queue(l);
	}
}

static void link_deadline(struct timer *t)
{
	struct s2s_link *l = t->ud;
	if (l->state != LS_READY && l->state != LS_IDLE)
		link_fail(l, true, "The remote server did not answer in time");
}

static void link_connect_addr(struct s2s_link *l)
{
	const struct target *t = &l->t[l->ti];
	while (l->ai < l->na) {
		const struct sockaddr_storage *a = &l->addrs[l->ai++];
		struct s2s *s = stream_new(l->w, S2S_OUT);
		s->link = l;
		snprintf(s->peer_domain, sizeof(s->peer_domain), "%s", l->remote);
		s->xs = xmlstream_new(&xs_cb, s, NULL);
		apply_limits(s, false);
		if (t->direct_tls)
			s->flags |= F_DIRECT_TLS;
		s->conn = conn_connect(l->w->loop, a, &s2s_handler, s);
		if (!s->conn) {
			stream_unref_free(s);
			continue;
		}
		l->s = s;
		l->state = LS_CONNECTING;
		loop_timer_set(l->w->loop, &s->timer, CONNECT_TIMEOUT_MS);
		return;
	}
	/* This target's addresses are used up: the next target. */
	l->ti++;
	l->na = l->ai = 0;
	link_next_address(l);
}

static void tlsa_done(void *ud, int rc, bool secure, const struct dns_tlsa *r, size_t n)
{
	struct s2s_link *l = ud;
	l->dq[0] = NULL;
	if (rc == DNS_BOGUS) {
		/* Someone tampers with the records that pin the certificate. */
		link_fail(l, false,
			  "DNSSEC validation failed for the remote server's TLSA records");
		return;
	}
	l->ntlsa = 0;
	for (size_t i = 0; secure && rc == DNS_OK && i < n && l->ntlsa < MAX_TLSA; i++)
		if (r[i].usage == 2 || r[i].usage == 3) /* DANE-TA, DANE-EE (RFC 7672 §3.1) */
			l->tlsa[l->ntlsa++] = r[i];
	if (l->ntlsa)
		LOG(LOG_INFO, "s2s to %s: %zu TLSA record%s for %s:%u (DNSSEC): DANE applies",
		    l->remote, l->ntlsa, l->ntlsa == 1 ? "" : "s", l->t[l->ti].host,
		    l->t[l->ti].port);
	link_connect_addr(l);
}

static void addrs_done(void *ud, int rc, bool secure, const struct sockaddr_storage *a, size_t n)
{
	struct s2s_link *l = ud;
	l->dq[0] = NULL;
	(void)secure;
	l->na = 0;
	l->ai = 0;
	for (size_t i = 0; rc == DNS_OK && i < n && l->na < MAX_ADDRS; i++)
		l->addrs[l->na++] = a[i];
	if (!l->na) {
		LOG(LOG_INFO, "s2s to %s: no address for %s", l->remote, l->t[l->ti].host);
		l->ti++;
		link_next_address(l);
		return;
	}
	l->ntlsa = 0;
	if (l->t[l->ti].secure) {
		/* RFC 7673 §3: a target from a secure SRV record may have TLSA
		 * records at _port._tcp.target; look before connecting. */
		l->dq[0] =
		    dns_tlsa(sw(l->w)->dns, l->t[l->ti].host, l->t[l->ti].port, tlsa_done, l);
		return;
	}
	link_connect_addr(l);
}

static void link_next_address(struct s2s_link *l)
{
	if (l->fail_text)
		return;
	if (l->ai < l->na) {
		link_connect_addr(l);
		return;
	}
	if (l->na) {
		/* This target's addresses are used up: on to the next one. */
		l->ti++;
		l->na = l->ai = 0;
	}
	if (l->ti >= l->nt) {
		link_fail(l, false, "The remote server could not be reached");
		return;
	}
	const struct target *t = &l->t[l->ti];
	l->state = LS_RESOLVING;
	l->dq[0] = dns_addr(sw(l->w)->dns, t->host, t->port, addrs_done, l);
}

static void add_target(struct s2s_link *l, const char *host, uint16_t port, bool direct)
{
	if (l->nt >= MAX_TARGETS || strlen(host) >= sizeof(l->t[0].host))
		return;
	struct target *t = &l->t[l->nt++];
	snprintf(t->host, sizeof(t->host), "%s", host);
	t->port = port;
	t->direct_tls = direct;
	t->secure = false;
}

/* Both SRV answers are in: XEP-0368 §3 merges _xmpps-server (direct TLS)
 * and _xmpp-server records by priority, direct TLS first among equals;
 * with no records at all, the domain itself on 5269 (RFC 6120 §3.2.2). */
static void srv_all_done(struct s2s_link *l)
{
	l->nt = 0;
	size_t i = 0, j = 0;
	while (i < l->nsrv[0] || j < l->nsrv[1]) {
		bool take_tls = j >= l->nsrv[1] ||
				(i < l->nsrv[0] && l->srv[0][i].priority <= l->srv[1][j].priority);
		const struct dns_srv *r = take_tls ? &l->srv[0][i++] : &l->srv[1][j++];
		add_target(l, r->target, r->port, take_tls);
		if (l->nt)
			l->t[l->nt - 1].secure = l->srv_secure[take_tls ? 0 : 1];
	}
	if (!l->nt) {
		/* RFC 6120 §3.2.1-3.2.2: no SRV records, or a failed lookup: the
		 * domain itself. Not when a "." target says there is no service
		 * (a "." for _xmpps-server only rules out direct TLS, XEP-0368),
		 * nor when DNSSEC says an answer was tampered with. */
		int r0 = l->srv_rc[0], r1 = l->srv_rc[1];
		if (r1 == DNS_NOSERVICE) {
			link_fail(l, false, "The remote domain offers no XMPP service (SRV \".\")");
			return;
		}
		if (r0 == DNS_BOGUS || r1 == DNS_BOGUS) {
			link_fail(l, false,
				  "DNSSEC validation failed for the remote domain's SRV records");
			return;
		}
		if (r0 == DNS_ERROR || r1 == DNS_ERROR) {
			/* With validation on, a failed lookup may be an attacker's
			 * forged SERVFAIL hiding signed SRV and TLSA records (rcodes
			 * are not signed): going to the bare domain would skip
			 * DANE. Only without DNSSEC is the fallback no weaker than
			 * the lookup itself. */
			if (dns_validating(sw(l->w)->dns)) {
				link_fail(l, false,
					  "The remote domain's SRV lookup failed (with DNSSEC "
					  "validation on, no fallback to its address)");
				return;
			}
			LOG(LOG_INFO,
			    "s2s to %s: SRV lookup failed; trying the domain itself on %u",
			    l->remote, S2S_PORT);
		}
		add_target(l, l->remote_ascii, S2S_PORT, false);
	}
	l->ti = 0;
	l->na = l->ai = 0;
	link_next_address(l);
}

static void srv_done(struct s2s_link *l, int which, int rc, bool secure, const struct dns_srv *r,
		     size_t n)
{
	l->dq[which] = NULL;
	l->srv_secure[which] = secure && rc == DNS_OK;
	l->nsrv[which] = 0;
	l->srv_rc[which] = rc;
	for (size_t i = 0; rc == DNS_OK && i < n && l->nsrv[which] < MAX_TARGETS; i++)
		l->srv[which][l->nsrv[which]++] = r[i];
	if (rc == DNS_BOGUS)
		LOG(LOG_WARN, "s2s to %s: DNSSEC validation failed for its SRV records", l->remote);
	if (--l->srv_left == 0)
		srv_all_done(l);
}

static void srv_tls_done(void *ud, int rc, bool secure, const struct dns_srv *r, size_t n)
{
	srv_done(ud, 0, rc, secure, r, n);
}

static void srv_tcp_done(void *ud, int rc, bool secure, const struct dns_srv *r, size_t n)
{
	srv_done(ud, 1, rc, secure, r, n);
}

static void link_start(struct s2s_link *l)
{
	l->fail_text = NULL;
	l->fail_timeout = false;
	if (!sw(l->w)->dns) {
		link_fail(l, false, "No DNS resolver");
		return;
	}
	l->state = LS_RESOLVING;
	loop_timer_set(l->w->loop, &l->deadline, SETUP_DEADLINE_MS);
	char name[300];
	l->srv_left = 2;
	snprintf(name, sizeof(name), "_xmpps-server._tcp.%s", l->remote_ascii);
	l->dq[0] = dns_srv(sw(l->w)->dns, name, srv_tls_done, l);
	snprintf(name, sizeof(name), "_xmpp-server._tcp.%s", l->remote_ascii);
	l->dq[1] = dns_srv(sw(l->w)->dns, name, srv_tcp_done, l);
}

static void out_send_verifies(struct s2s_link *l)
{
	struct s2s *s = l->s;
	if (!s || !(s->flags & F_FEATURES))
		return;
	for (struct dbv *v = l->verifies; v; v = v->next) {
		if (v->sent)
			continue;
		struct buf *b = out(s);
		if (!b)
			return;
		buf_adds(b, "<db:verify from='");
		xml_escape(b, v->raw_local, strlen(v->raw_local), true);
		buf_adds(b, "' to='");
		xml_escape(b, v->raw_remote, strlen(v->raw_remote), true);
		buf_adds(b, "' id='");
		xml_escape(b, v->id, strlen(v->id), true);
		buf_adds(b, "'>");
		xml_escape(b, v->key, strlen(v->key), false);
		buf_adds(b, "</db:verify>");
		v->sent = true;
	}
}

static bool link_usable(struct s2s_link *l)
{
	if (l->fail_text && loop_now(l->w->loop) < l->retry_at)
		return false;
	if (sw(l->w)->shutting_down && l->state != LS_READY && l->state != LS_BIDI) {
		l->fail_text = "The server is shutting down";
		l->retry_at = UINT64_MAX;
		return false;
	}
	if (l->state == LS_IDLE)
		link_start(l);
	return true;
}

/* On the owner worker: check a dialback key with the remote's
 * authoritative server (XEP-0220 §2.3). */
static void link_verify(struct dbv *v)
{
	struct s2s_link *l = link_find(worker_current(), v->local, v->remote, true);
	size_t n = 0;
	for (struct dbv *x = l ? l->verifies : NULL; x; x = x->next)
		n++;
	if (!l || n >= MAX_VERIFIES) {
		verify_reply(v, -1);
		free(v);
		return;
	}
	if (l->state == LS_BIDI) {
		/* XEP-0288 §2.2 forbids verifying a key on the connection that
		 * carried it; rather than track which that was, verifications
		 * get a stream of our own, which then carries our stanzas too. */
		l->state = LS_IDLE;
	}
	v->since = loop_now(l->w->loop);
	v->next = l->verifies;
	l->verifies = v;
	if (!timer_armed(&l->vtimer))
		loop_timer_set(l->w->loop, &l->vtimer, VERIFY_TIMEOUT_MS);
	if (!link_usable(l)) {
		fail_verifies(l);
		return;
	}
	out_send_verifies(l);
}

/* --- XEP-0288: the peer's incoming stream carries our stanzas too --- */

struct bidi_msg {
	char local[JID_PART_MAX + 1], remote[JID_PART_MAX + 1];
	unsigned worker; /* where the stream is */
	uint64_t uid;
	struct stanza *st; /* bidi_send_here only */
};

static void send_posted(void *arg);

static void bidi_post(unsigned to, post_fn *fn, const char *local, const char *remote,
		      unsigned worker, uint64_t uid, struct stanza *st)
{
	struct bidi_msg *m = calloc(1, sizeof(*m));
	if (!m)
		die_oom();
	snprintf(m->local, sizeof(m->local), "%s", local);
	snprintf(m->remote, sizeof(m->remote), "%s", remote);
	m->worker = worker;
	m->uid = uid;
	m->st = st;
	loop_post(srv->workers[to].loop, fn, m);
}

/* On the owner of the remote domain: it authenticated on a stream that
 * enabled XEP-0288, which becomes our route to it unless we have (or are
 * setting up) one of our own. */
static void bidi_up_here(void *arg)
{
	struct bidi_msg *m = arg;
	struct s2s_link *l = link_find(worker_current(), m->local, m->remote, true);
	if (l && l->state == LS_IDLE && !l->s && !l->nq && !l->verifies &&
	    !sw(l->w)->shutting_down) {
		l->state = LS_BIDI;
		l->bidi_worker = m->worker;
		l->bidi_uid = m->uid;
		l->fail_text = NULL;
		l->retry_at = 0;
		l->backoff_s = 0;
		LOG(LOG_INFO,
		    "s2s to %s from %s: ready (the peer's bidirectional stream, XEP-0288)",
		    l->remote, l->local);
	}
	free(m);
}

/* On the owner: that stream is gone. */
static void bidi_down_here(void *arg)
{
	struct bidi_msg *m = arg;
	struct s2s_link *l = link_find(worker_current(), m->local, m->remote, false);
	if (l && l->state == LS_BIDI && l->bidi_worker == m->worker && l->bidi_uid == m->uid)
		l->state = LS_IDLE;
	free(m);
}

/* On the stream's worker: one of our stanzas to write on it. */
static void bidi_send_here(void *arg)
{
	struct bidi_msg *m = arg;
	struct s2s *s = stream_find(worker_current(), m->uid);
	if (s && s->conn && !(s->flags & F_CLOSING) && in_is_authed(s, m->remote, m->local)) {
		struct buf *b = out(s);
		if (b)
			xml_serialize(m->st->el, NS_CLIENT, b);
		s->last_io = loop_now(s->w->loop);
		stanza_free(m->st);
		free(m);
		return;
	}
	/* It closed meanwhile: the owner stops using it, then the stanza goes
	 * the usual way (both posts keep their order). */
	unsigned owner = owner_of(m->remote);
	struct stanza *st = m->st;
	m->st = NULL;
	loop_post(srv->workers[owner].loop, bidi_down_here, m);
	loop_post(srv->workers[owner].loop, send_posted, st);
}

static void bidi_announce(struct s2s *s, const struct pair *p, bool up)
{
	bidi_post(owner_of(p->remote), up ? bidi_up_here : bidi_down_here, p->local, p->remote,
		  s->w->idx, s->uid, NULL);
}

static void send_posted(void *arg)
{
	struct stanza *st = arg;
	char local[JID_PART_MAX + 1], remote[JID_PART_MAX + 1];
	snprintf(local, sizeof(local), "%.*s", (int)st->from.dom_len,
		 st->from.s + st->from.dom_off);
	snprintf(remote, sizeof(remote), "%.*s", (int)st->to.dom_len, st->to.s + st->to.dom_off);
	struct s2s_link *l = link_find(worker_current(), local, remote, true);
	if (!l) {
		route_error(st, SE_RESOURCE_CONSTRAINT, "Too many remote servers at once");
		return;
	}
	if (l->state == LS_READY && l->s && (l->s->flags & F_CLOSING)) {
		/* Its stream is ending (idle, or the peer closed it): this stanza
		 * waits for a new connection instead of being written to a
		 * stream that will not send it. */
		struct s2s *old = l->s;
		old->link = NULL;
		l->s = NULL;
		l->state = LS_IDLE;
	}
	if (l->state == LS_BIDI) {
		LOG(LOG_DEBUG, "s2s to %s: %s from %s to %s (over the peer's stream)", remote,
		    st->el->name, st->from.s, st->to.s);
		bidi_post(l->bidi_worker, bidi_send_here, local, remote, l->bidi_worker,
			  l->bidi_uid, st);
		return;
	}
	if (!link_usable(l)) {
		route_error(st,
			    l->fail_timeout ? SE_REMOTE_SERVER_TIMEOUT : SE_REMOTE_SERVER_NOT_FOUND,
			    l->fail_text);
		return;
	}
	LOG(LOG_DEBUG, "s2s to %s: %s from %s to %s%s", remote, st->el->name, st->from.s, st->to.s,
	    l->state == LS_READY ? "" : " (queued)");
	if (l->state == LS_READY && l->s && (l->s->flags & F_READY)) {
		struct buf *b = out(l->s);
		if (b)
			xml_serialize(st->el, NS_CLIENT, b);
		l->s->last_io = loop_now(l->w->loop);
		stanza_free(st);
		return;
	}
	if (l->nq >= QUEUE_MAX || l->qbytes > QUEUE_BYTES_MAX) {
		route_error(st, SE_RESOURCE_CONSTRAINT, "Too many stanzas waiting for that server");
		return;
	}
	if (l->nq == l->capq) {
		size_t cap = l->capq ? l->capq * 2 : 16;
		struct stanza **q = realloc(l->q, cap * sizeof(*q));
		if (!q)
			die_oom();
		l->q = q;
		l->capq = cap;
	}
	struct buf sz = BUF_INIT;
	xml_serialize(st->el, NS_CLIENT, &sz);
	l->qbytes += buf_pending(&sz);
	buf_free(&sz);
	l->q[l->nq++] = st;
}

void s2s_route(struct stanza *st)
{
	/* Only our own users' stanzas leave: the server is no open relay. */
	if (!st->from.len || !host_find(st->from.s + st->from.dom_off, st->from.dom_len)) {
		stanza_free(st);
		return;
	}
	char remote[JID_PART_MAX + 1];
	snprintf(remote, sizeof(remote), "%.*s", (int)st->to.dom_len, st->to.s + st->to.dom_off);
	struct worker *w = &srv->workers[owner_of(remote)];
	if (w == worker_current())
		send_posted(st);
	else
		loop_post(w->loop, send_posted, st);
}

/* --- workers --- */

int s2s_init(char *err, size_t errlen)
{
	trust = cert_trust_store(srv->cfg.s2s_ca_file, err, errlen);
	return trust ? 0 : -1;
}

void s2s_worker_start(struct worker *w)
{
	struct s2s_worker *x = calloc(1, sizeof(*x));
	if (!x)
		die_oom();
	w->s2s = x;
	struct dns_conf dc = {
	    .servers = (const char *const *)srv->cfg.dns_servers,
	    .n_servers = srv->cfg.n_dns_servers,
	    .trust_anchor_file = srv->cfg.dns_trust_anchor,
	    .dnssec_fallback = srv->cfg.dns_dnssec_fallback,
	};
	char err[256];
	x->dns = dns_new(w->loop, &dc, err, sizeof(err));
	if (!x->dns)
		LOG(LOG_ERROR, "worker %u: no DNS resolver (%s): federation is off", w->idx, err);
}

size_t s2s_worker_streams(struct worker *w)
{
	return w->s2s ? sw(w)->n_streams : 0;
}

/* Shutdown, second phase: the unavailable presences of the local users
 * (RFC 6121 §4.5.2) have had their time to leave over the ready links. */
static void shutdown_streams(struct timer *t)
{
	struct worker *w = t->ud;
	for (struct s2s_link *l = sw(w)->links; l; l = l->next) {
		l->fail_text = "The server is shutting down";
		l->retry_at = UINT64_MAX;
		bounce_queue(l);
		fail_verifies(l);
	}
	for (struct s2s *s = sw(w)->streams, *next; s; s = next) {
		next = s->next;
		stream_close(s, "system-shutdown", NULL);
	}
}

void s2s_worker_shutdown(struct worker *w)
{
	if (!w->s2s)
		return;
	sw(w)->shutting_down = true;
	/* Links still being set up give up now; ready ones carry what the
	 * closing client sessions still send (their unavailable presence),
	 * and close a little later, within the grace period. */
	for (struct s2s_link *l = sw(w)->links; l; l = l->next) {
		if (l->state == LS_READY)
			continue;
		cancel_dns(l);
		loop_timer_cancel(w->loop, &l->deadline);
		l->fail_text = "The server is shutting down";
		l->retry_at = UINT64_MAX;
		bounce_queue(l);
		fail_verifies(l);
		if (l->s) {
			struct s2s *s = l->s;
			l->s = NULL;
			s->link = NULL;
			stream_close(s, "system-shutdown", NULL);
		}
	}
	for (struct s2s *s = sw(w)->streams, *next; s; s = next) {
		next = s->next;
		if (s->dir == S2S_IN)
			stream_close(s, "system-shutdown", NULL);
	}
	timer_init(&sw(w)->shutdown, shutdown_streams, w);
	loop_timer_set(w->loop, &sw(w)->shutdown, SHUTDOWN_S2S_MS);
}

void s2s_worker_abort(struct worker *w)
{
	if (!w->s2s)
		return;
	while (sw(w)->streams && sw(w)->streams->conn)
		conn_abort(sw(w)->streams->conn);
}

void s2s_worker_done(struct worker *w)
{
	struct s2s_worker *x = w->s2s;
	if (!x)
		return;
	if (x->shutting_down)
		loop_timer_cancel(w->loop, &x->shutdown);
	x->shutting_down = true;
	while (x->streams)
		stream_unref_free(x->streams);
	while (x->links) {
		struct s2s_link *l = x->links;
		x->links = l->next;
		cancel_dns(l);
		/* Timers stay in the loop's heap, which dns_free() still uses. */
		loop_timer_cancel(w->loop, &l->deadline);
		loop_timer_cancel(w->loop, &l->vtimer);
		for (size_t i = 0; i < l->nq; i++)
			stanza_free(l->q[i]);
		free(l->q);
		while (l->verifies) {
			struct dbv *v = l->verifies;
			l->verifies = v->next;
			free(v);
		}
		free(l);
	}
	if (x->dns)
		dns_free(x->dns);
	free(x);
	w->s2s = NULL;
}
