/* parley-bench: a load generator for XMPP servers (issue #6). It speaks
 * the client protocol to any server (Parley, Prosody, ejabberd): TCP from
 * many loopback source addresses, STARTTLS or direct TLS (XEP-0368),
 * SASL SCRAM-SHA-1/256/512 or PLAIN, resource binding, initial presence,
 * roster get. Scenarios:
 *
 *   login     full logins at a fixed concurrency for a fixed time:
 *             logins/s and latency percentiles (connect to roster result)
 *   idle      N authenticated sessions held open: the server's RSS before
 *             and after (KiB per session) and its CPU while idle
 *   chat      N online users send one-to-one messages at a fixed total
 *             rate, or as fast as a window of messages in flight allows:
 *             delivered msgs/s and delivery latency percentiles
 *   presence  N users, each subscribed to R others, log in and
 *             broadcast presence: presence stanzas delivered per second
 *
 * Each run prints a human summary and one JSON line (prefixed "JSON ").
 * One thread, one epoll loop; it measures its own CPU and warns when it,
 * rather than the server, is the bottleneck. Like real clients it keeps
 * SCRAM salted passwords (in memory, and in --scram-cache FILE across
 * runs), so it measures the server rather than PBKDF2; logins that had to
 * derive a key are left out of the figures.
 *
 * XML is parsed with Parley's own stream parser (src/xml/xmlstream.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include "core/arena.h"
#include "core/buf.h"
#include "xml/xml.h"
#include "xml/xmlstream.h"
#include "xmpp/base64.h"

#define NS_STREAMS "http://etherx.jabber.org/streams"
#define NS_TLS	   "urn:ietf:params:xml:ns:xmpp-tls"
#define NS_SASL	   "urn:ietf:params:xml:ns:xmpp-sasl"
#define NS_BIND	   "urn:ietf:params:xml:ns:xmpp-bind"
#define NS_CLIENT  "jabber:client"
#define NS_ROSTER  "jabber:iq:roster"

#define LOGIN_TIMEOUT_NS (30ull * 1000000000ull)
#define READ_CHUNK	 16384
#define MAX_ERRORS_SHOWN 5

/* ---------------------------------------------------------------- options */

enum scenario { SC_LOGIN, SC_IDLE, SC_CHAT, SC_PRESENCE, SC_REGISTER };

static struct opts {
	enum scenario sc;
	const char *host;
	int port;
	const char *domain;
	bool direct_tls;
	const char *user_fmt; /* printf with one %d */
	int first, count;
	const char *password;
	const char *mech;
	int concurrency;
	double duration, warmup, hold;
	int sessions;
	double rate; /* chat: messages/s in total; 0: as fast as the window allows */
	int window;  /* chat at rate 0: messages in flight per sender */
	int roster;  /* presence: contacts per user */
	int sources; /* 127.0.0.1 .. 127.0.0.N */
	int server_pid;
	const char *scram_cache;
	bool quiet;
} o = {
    .host = "127.0.0.1",
    .port = 5222,
    .domain = "localhost",
    .user_fmt = "bench%d",
    .count = 100,
    .password = "bench",
    .mech = "SCRAM-SHA-256",
    .concurrency = 50,
    .duration = 10,
    .warmup = 2,
    .hold = 5,
    .sessions = 1000,
    .window = 4,
    .roster = 10,
    .sources = 50,
};

/* ---------------------------------------------------------------- time */

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double cpu_self(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
	       ru.ru_stime.tv_usec / 1e6;
}

/* The server's CPU seconds (utime + stime) and RSS in KiB, from /proc. */
static double cpu_of(int pid)
{
	char path[64], line[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	size_t n = fread(line, 1, sizeof(line) - 1, f);
	fclose(f);
	line[n] = 0;
	char *p = strrchr(line, ')');
	if (!p)
		return -1;
	unsigned long ut = 0, st = 0;
	/* fields after the command: state(3) ... utime(14) stime(15) */
	if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
		return -1;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static long rss_of(int pid)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	long kib = -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "VmRSS:", 6))
			kib = strtol(line + 6, NULL, 10);
	fclose(f);
	return kib;
}

/* ---------------------------------------------------------------- latency */

/* A histogram: 1 µs buckets up to 100 ms, then 1 ms buckets up to 100 s. */
#define H_FINE	 100000
#define H_COARSE 100000
struct hist {
	uint64_t fine[H_FINE];
	uint64_t coarse[H_COARSE];
	uint64_t n, over;
	double sum_us;
};

static void hist_add(struct hist *h, uint64_t ns)
{
	uint64_t us = ns / 1000;
	h->n++;
	h->sum_us += (double)us;
	if (us < H_FINE)
		h->fine[us]++;
	else if (us / 1000 < H_COARSE)
		h->coarse[us / 1000]++;
	else
		h->over++;
}

/* The q-quantile in milliseconds. */
static double hist_q(const struct hist *h, double q)
{
	if (!h->n)
		return 0;
	uint64_t want = (uint64_t)ceil(q * (double)h->n), seen = 0;
	if (!want)
		want = 1;
	for (size_t i = 0; i < H_FINE; i++)
		if ((seen += h->fine[i]) >= want)
			return (double)i / 1000.0;
	for (size_t i = 0; i < H_COARSE; i++)
		if ((seen += h->coarse[i]) >= want)
			return (double)i;
	return 1e5;
}

/* ---------------------------------------------------------------- SCRAM cache */

struct salted {
	struct salted *next;
	char key[160]; /* mech salt iterations */
	unsigned char v[EVP_MAX_MD_SIZE];
	size_t len;
};
#define SALT_BUCKETS 4096
static struct salted *salts[SALT_BUCKETS];

static size_t str_hash(const char *s)
{
	size_t h = 5381;
	while (*s)
		h = h * 33 + (unsigned char)*s++;
	return h % SALT_BUCKETS;
}

static struct salted *salt_find(const char *key)
{
	for (struct salted *s = salts[str_hash(key)]; s; s = s->next)
		if (!strcmp(s->key, key))
			return s;
	return NULL;
}

static struct salted *salt_put(const char *key, const unsigned char *v, size_t len)
{
	struct salted *s = calloc(1, sizeof(*s));
	if (!s)
		abort();
	snprintf(s->key, sizeof(s->key), "%s", key);
	memcpy(s->v, v, len);
	s->len = len;
	size_t h = str_hash(key);
	s->next = salts[h];
	salts[h] = s;
	return s;
}

static void salt_load(void)
{
	if (!o.scram_cache)
		return;
	FILE *f = fopen(o.scram_cache, "r");
	if (!f)
		return;
	char line[512];
	while (fgets(line, sizeof(line), f)) {
		char mech[32], salt[96], hex[2 * EVP_MAX_MD_SIZE + 2], key[160];
		unsigned it;
		if (sscanf(line, "%31s %95s %u %129s", mech, salt, &it, hex) != 4)
			continue;
		unsigned char v[EVP_MAX_MD_SIZE];
		size_t len = strlen(hex) / 2;
		if (len > sizeof(v))
			continue;
		for (size_t i = 0; i < len; i++)
			sscanf(hex + 2 * i, "%2hhx", &v[i]);
		snprintf(key, sizeof(key), "%s %s %u", mech, salt, it);
		if (!salt_find(key))
			salt_put(key, v, len);
	}
	fclose(f);
}

static void salt_save(const char *key, const unsigned char *v, size_t len)
{
	if (!o.scram_cache)
		return;
	FILE *f = fopen(o.scram_cache, "a");
	if (!f)
		return;
	fprintf(f, "%s ", key);
	for (size_t i = 0; i < len; i++)
		fprintf(f, "%02x", v[i]);
	fputc('\n', f);
	fclose(f);
}

/* ---------------------------------------------------------------- clients */

enum cstate {
	C_FREE,
	C_CONNECTING,
	C_FEATURES1, /* before TLS */
	C_PROCEED,
	C_HANDSHAKE,
	C_FEATURES2, /* mechanisms */
	C_SASL,
	C_REGISTER,  /* in-band registration sent (XEP-0077) */
	C_FEATURES3, /* bind */
	C_BIND,
	C_ROSTER,
	C_READY,
};

struct client {
	int slot;
	int fd;
	SSL *ssl;
	enum cstate st;
	struct xmlstream *xs;
	bool restart; /* the parser paused for a stream restart */
	bool in_feed; /* inside xmlstream_feed: the parser must not be freed */
	bool recycle; /* login done: close and start the next one after the feed */
	bool dead;
	struct buf out;
	bool pollout;
	int user;
	char resource[16];
	uint64_t t0;
	uint64_t retry_at; /* register: ask again then (the server said wait) */
	bool uncached;	   /* a key had to be derived */
	/* SCRAM */
	const EVP_MD *md;
	char cnonce[33];
	char *first_bare;
	unsigned char server_sig[EVP_MAX_MD_SIZE];
	size_t sig_len;
	/* chat */
	int partner;	   /* slot of the peer */
	unsigned inflight; /* messages sent, not yet received */
	bool dirty;	   /* in B.dirty: output waits for the end of the loop pass */
	char *msg_head;	   /* "<message to='partner' type='chat'><body>s<slot> t", made once */
	/* presence */
	unsigned presences;
	unsigned roster_both; /* items with subscription both in the roster result */
};

static struct bench {
	int ep;
	struct client *c;
	int n; /* slots */
	SSL_CTX *ctx;
	int src_next;
	uint64_t started, measure_from, measure_to;
	bool measuring, stopping;
	/* Clients with output queued during this loop pass: flushed together
	 * after it, so that several messages go out in one record and one
	 * write, as a real client's would. */
	struct client **dirty;
	int n_dirty;
	uint64_t swept; /* last sweep for timeouts and retries */
	/* results */
	uint64_t logins, logins_uncached, errors, msgs_sent, msgs_recv, presences, subscribed;
	uint64_t last_presence;
	uint64_t existing; /* register: accounts that were there already */
	int next_user;	   /* register: the next user to register */
	struct hist *lat;
	int ready; /* sessions that completed login and are still up */
	char errs[MAX_ERRORS_SHOWN][160];
	int n_errs;
} B;

static void client_start(struct client *c);
static void on_ready(struct client *c);
static void on_stanza(struct client *c, struct xml_el *el, struct arena *a);
static void client_flush(struct client *c);
static void login_next(struct client *c);

static void note_error(struct client *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void note_error(struct client *c, const char *fmt, ...)
{
	B.errors++;
	if (B.n_errs < MAX_ERRORS_SHOWN) {
		va_list ap;
		va_start(ap, fmt);
		int k = snprintf(B.errs[B.n_errs], sizeof(B.errs[0]), "user %d: ", c->user);
		vsnprintf(B.errs[B.n_errs] + k, sizeof(B.errs[0]) - (size_t)k, fmt, ap);
		va_end(ap);
		B.n_errs++;
	}
}

static void client_close(struct client *c)
{
	if (c->st == C_FREE)
		return;
	if (c->st == C_READY)
		B.ready--;
	if (c->fd >= 0) {
		epoll_ctl(B.ep, EPOLL_CTL_DEL, c->fd, NULL);
		close(c->fd);
	}
	SSL_free(c->ssl);
	xmlstream_free(c->xs);
	buf_free(&c->out);
	free(c->first_bare);
	free(c->msg_head);
	*c = (struct client){
	    .slot = c->slot, .fd = -1, .st = C_FREE, .user = c->user, .partner = c->partner};
}

static void client_fail(struct client *c, const char *why)
{
	if (c->dead)
		return;
	note_error(c, "%s (state %d)", why, c->st);
	if (c->in_feed) {
		c->dead = true; /* closed when the feed returns */
		xmlstream_pause(c->xs);
		return;
	}
	client_close(c);
	c->dead = true;
}

static void send_str(struct client *c, const char *s)
{
	buf_adds(&c->out, s);
}

static void send_header(struct client *c)
{
	buf_printf(&c->out,
		   "<?xml version='1.0'?><stream:stream to='%s' version='1.0' "
		   "xmlns='jabber:client' xmlns:stream='" NS_STREAMS "'>",
		   o.domain);
}

/* ---- SCRAM (RFC 5802) ---- */

static const EVP_MD *mech_md(const char *mech)
{
	if (!strcmp(mech, "SCRAM-SHA-1"))
		return EVP_sha1();
	if (!strcmp(mech, "SCRAM-SHA-256"))
		return EVP_sha256();
	if (!strcmp(mech, "SCRAM-SHA-512"))
		return EVP_sha512();
	return NULL;
}

static void b64(const unsigned char *in, size_t n, struct buf *out)
{
	char *t = malloc(base64_encoded_len(n) + 1);
	if (!t)
		abort();
	base64_encode(in, n, t);
	buf_adds(out, t);
	free(t);
}

/* --users is split at its %d once, so no format string comes from the
 * command line. */
static char user_prefix[64], user_suffix[64];

static void user_name(int user, char *out, size_t cap)
{
	snprintf(out, cap, "%s%d%s", user_prefix, user, user_suffix);
}

/* XEP-0077 §3.1 registration of the client's user. */
static void send_register(struct client *c)
{
	char user[128];
	user_name(c->user, user, sizeof(user));
	buf_adds(&c->out, "<iq type='set' id='reg'><query xmlns='jabber:iq:register'>"
			  "<username>");
	xml_escape(&c->out, user, strlen(user), false);
	buf_adds(&c->out, "</username><password>");
	xml_escape(&c->out, o.password, strlen(o.password), false);
	buf_adds(&c->out, "</password></query></iq>");
}

static void sasl_start(struct client *c)
{
	char user[128];
	user_name(c->user, user, sizeof(user));
	struct buf msg = BUF_INIT;
	if (!strcmp(o.mech, "PLAIN")) {
		buf_addc(&msg, 0);
		buf_adds(&msg, user);
		buf_addc(&msg, 0);
		buf_adds(&msg, o.password);
	} else {
		unsigned char rnd[16];
		RAND_bytes(rnd, sizeof(rnd));
		for (size_t i = 0; i < sizeof(rnd); i++)
			snprintf(c->cnonce + 2 * i, 3, "%02x", rnd[i]);
		struct buf bare = BUF_INIT;
		buf_printf(&bare, "n=%s,r=%s", user, c->cnonce); /* bench names need no escaping */
		buf_addc(&bare, 0);
		c->first_bare = strdup(buf_head(&bare));
		buf_free(&bare);
		buf_printf(&msg, "n,,%s", c->first_bare);
	}
	buf_printf(&c->out, "<auth xmlns='" NS_SASL "' mechanism='%s'>", o.mech);
	b64((const unsigned char *)buf_head(&msg), buf_pending(&msg), &c->out);
	send_str(c, "</auth>");
	buf_free(&msg);
}

static char *scram_attr(const char *msg, char a)
{
	for (const char *p = msg; p && *p;) {
		if (p[0] == a && p[1] == '=') {
			const char *e = strchr(p, ',');
			return strndup(p + 2, e ? (size_t)(e - p - 2) : strlen(p + 2));
		}
		p = strchr(p, ',');
		if (p)
			p++;
	}
	return NULL;
}

static bool sasl_challenge(struct client *c, const char *text)
{
	unsigned char sf[1024];
	ssize_t n = base64_decode(text, strlen(text), sf, sizeof(sf) - 1);
	if (n <= 0)
		return false;
	sf[n] = 0;
	const char *server_first = (const char *)sf;
	char *r = scram_attr(server_first, 'r'), *s = scram_attr(server_first, 's'),
	     *i = scram_attr(server_first, 'i');
	bool ok = r && s && i && !strncmp(r, c->cnonce, strlen(c->cnonce));
	if (!ok) {
		free(r), free(s), free(i);
		return false;
	}
	const EVP_MD *md = c->md;
	size_t mdlen = (size_t)EVP_MD_get_size(md);
	char key[160];
	snprintf(key, sizeof(key), "%s %s %s", o.mech, s, i);
	struct salted *sp = salt_find(key);
	if (!sp) {
		unsigned char salt[128], v[EVP_MAX_MD_SIZE];
		ssize_t sl = base64_decode(s, strlen(s), salt, sizeof(salt));
		int it = atoi(i);
		if (sl <= 0 || it <= 0 ||
		    !PKCS5_PBKDF2_HMAC(o.password, (int)strlen(o.password), salt, (int)sl, it, md,
				       (int)mdlen, v)) {
			free(r), free(s), free(i);
			return false;
		}
		sp = salt_put(key, v, mdlen);
		salt_save(key, v, mdlen);
		c->uncached = true;
	}
	unsigned char ck[EVP_MAX_MD_SIZE], sk[EVP_MAX_MD_SIZE], stored[EVP_MAX_MD_SIZE],
	    sig[EVP_MAX_MD_SIZE], proof[EVP_MAX_MD_SIZE];
	unsigned l;
	HMAC(md, sp->v, (int)mdlen, (const unsigned char *)"Client Key", 10, ck, &l);
	HMAC(md, sp->v, (int)mdlen, (const unsigned char *)"Server Key", 10, sk, &l);
	EVP_Digest(ck, mdlen, stored, NULL, md, NULL);
	struct buf auth = BUF_INIT, final = BUF_INIT;
	buf_printf(&final, "c=biws,r=%s", r);
	buf_printf(&auth, "%s,%s,%.*s", c->first_bare, server_first, (int)buf_pending(&final),
		   buf_head(&final));
	HMAC(md, stored, (int)mdlen, (const unsigned char *)buf_head(&auth), buf_pending(&auth),
	     sig, &l);
	for (size_t k = 0; k < mdlen; k++)
		proof[k] = ck[k] ^ sig[k];
	HMAC(md, sk, (int)mdlen, (const unsigned char *)buf_head(&auth), buf_pending(&auth),
	     c->server_sig, &l);
	c->sig_len = mdlen;
	buf_adds(&final, ",p=");
	b64(proof, mdlen, &final);
	send_str(c, "<response xmlns='" NS_SASL "'>");
	b64((const unsigned char *)buf_head(&final), buf_pending(&final), &c->out);
	send_str(c, "</response>");
	buf_free(&auth);
	buf_free(&final);
	free(r), free(s), free(i);
	return true;
}

/* RFC 5802 §5: the server proves it knew the key. */
static bool sasl_verify(struct client *c, const char *text)
{
	if (!c->md)
		return true; /* PLAIN */
	unsigned char sf[512];
	ssize_t n = base64_decode(text, strlen(text), sf, sizeof(sf) - 1);
	if (n <= 0)
		return false;
	sf[n] = 0;
	char *v = scram_attr((const char *)sf, 'v');
	struct buf want = BUF_INIT;
	b64(c->server_sig, c->sig_len, &want);
	buf_addc(&want, 0);
	bool ok = v && !strcmp(v, buf_head(&want));
	free(v);
	buf_free(&want);
	return ok;
}

/* ---- the XML stream ---- */

static void xs_open(void *ud, const struct xml_el *hdr, const char *default_ns)
{
	(void)ud;
	(void)hdr;
	(void)default_ns;
}

static bool is(const struct xml_el *el, const char *ns, const char *name)
{
	return el->ns && !strcmp(el->ns, ns) && !strcmp(el->name, name);
}

static bool has_mech(const struct xml_el *features, const char *mech)
{
	struct xml_el *m = xml_child(features, NS_SASL, "mechanisms");
	struct arena *a = arena_new(0);
	bool found = false;
	for (struct xml_el *e = m ? xml_first_el(m) : NULL; e && !found; e = xml_next_el(e))
		found = !strcmp(xml_text(a, e), mech);
	arena_free(a);
	return found;
}

static void xs_element(void *ud, struct xml_el *el, struct arena *a)
{
	struct client *c = ud;
	if (c->dead || c->st == C_FREE) {
		arena_free(a);
		return;
	}
	if (is(el, NS_STREAMS, "error")) {
		struct xml_el *cond = xml_first_el(el);
		char why[96];
		snprintf(why, sizeof(why), "stream error %s", cond ? cond->name : "?");
		arena_free(a);
		client_fail(c, why);
		return;
	}
	switch (c->st) {
	case C_FEATURES1:
		if (!is(el, NS_STREAMS, "features"))
			break;
		send_str(c, "<starttls xmlns='" NS_TLS "'/>");
		c->st = C_PROCEED;
		break;
	case C_PROCEED:
		if (!is(el, NS_TLS, "proceed")) {
			arena_free(a);
			client_fail(c, "STARTTLS refused");
			return;
		}
		c->restart = true;
		xmlstream_pause(c->xs);
		break;
	case C_FEATURES2:
		if (!is(el, NS_STREAMS, "features"))
			break;
		if (o.sc == SC_REGISTER) {
			send_register(c);
			c->st = C_REGISTER;
			break;
		}
		if (!has_mech(el, o.mech)) {
			arena_free(a);
			client_fail(c, "mechanism not offered");
			return;
		}
		sasl_start(c);
		c->st = C_SASL;
		break;
	case C_SASL: {
		const char *text = xml_text(a, el);
		if (is(el, NS_SASL, "challenge")) {
			if (!sasl_challenge(c, text)) {
				arena_free(a);
				client_fail(c, "bad SCRAM challenge");
				return;
			}
		} else if (is(el, NS_SASL, "success")) {
			if (!sasl_verify(c, text)) {
				arena_free(a);
				client_fail(c, "server signature wrong");
				return;
			}
			c->restart = true;
			xmlstream_pause(c->xs);
		} else {
			arena_free(a);
			client_fail(c, "authentication failed");
			return;
		}
		break;
	}
	case C_REGISTER: {
		if (!is(el, NS_CLIENT, "iq"))
			break;
		const char *type = xml_attr(el, "type");
		struct xml_el *err = xml_child(el, NS_CLIENT, "error");
		if (type && !strcmp(type, "result")) {
			B.logins++;
		} else if (err &&
			   xml_child(err, "urn:ietf:params:xml:ns:xmpp-stanzas", "conflict")) {
			B.existing++;
		} else if (err && xml_attr(err, "type") && !strcmp(xml_attr(err, "type"), "wait")) {
			/* RFC 6120 §8.3.2: retry after waiting (a server that bounds
			 * its concurrent key derivations says so). */
			c->retry_at = now_ns() + 20000000ull;
			break;
		} else {
			struct xml_el *cond = err ? xml_first_el(err) : NULL;
			char why[96];
			snprintf(why, sizeof(why), "registration refused: %s",
				 cond ? cond->name : "?");
			arena_free(a);
			client_fail(c, why);
			return;
		}
		send_str(c, "</stream:stream>");
		c->recycle = true;
		xmlstream_pause(c->xs);
		break;
	}
	case C_FEATURES3:
		if (!is(el, NS_STREAMS, "features"))
			break;
		buf_printf(&c->out,
			   "<iq type='set' id='b'><bind xmlns='" NS_BIND
			   "'><resource>%s</resource></bind></iq>",
			   c->resource);
		c->st = C_BIND;
		break;
	case C_BIND:
		if (!is(el, NS_CLIENT, "iq"))
			break;
		if (strcmp(xml_attr(el, "type") ? xml_attr(el, "type") : "", "result")) {
			arena_free(a);
			client_fail(c, "bind refused");
			return;
		}
		/* RFC 6121 §2.2 and §4.2: roster, then initial presence, as
		 * clients do. */
		send_str(c, "<iq type='get' id='r'><query xmlns='" NS_ROSTER "'/></iq><presence/>");
		c->st = C_ROSTER;
		break;
	case C_ROSTER:
		if (is(el, NS_CLIENT, "iq") && xml_attr(el, "id") &&
		    !strcmp(xml_attr(el, "id"), "r")) {
			struct xml_el *q = xml_child(el, NS_ROSTER, "query");
			c->roster_both = 0;
			for (struct xml_el *it = q ? xml_first_el(q) : NULL; it;
			     it = xml_next_el(it)) {
				const char *sub = xml_attr(it, "subscription");
				c->roster_both += sub && !strcmp(sub, "both");
			}
			c->st = C_READY;
			B.ready++;
			arena_free(a);
			on_ready(c);
			return;
		}
		on_stanza(c, el, a);
		return;
	case C_READY:
		on_stanza(c, el, a);
		return;
	default:
		break;
	}
	arena_free(a);
}

static void xs_close(void *ud)
{
	struct client *c = ud;
	if (!c->dead && c->st != C_FREE && !B.stopping)
		client_fail(c, "server closed the stream");
}

static const struct xs_callbacks xs_cb = {xs_open, xs_element, xs_close};

static const struct xs_limits xs_lim = {
    .max_stanza_bytes = 1 << 20,
    .max_depth = 64,
    .max_attrs = 64,
    .max_attr_len = 1 << 16,
    .max_text_len = 1 << 20,
    .max_children = 100000,
    .max_header_bytes = 4096,
};

/* ---- I/O ---- */

static void set_events(struct client *c)
{
	bool want = buf_pending(&c->out) || c->st == C_CONNECTING;
	if (want == c->pollout)
		return;
	struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c};
	epoll_ctl(B.ep, EPOLL_CTL_MOD, c->fd, &ev);
	c->pollout = want;
}

static void client_flush(struct client *c)
{
	while (buf_pending(&c->out) && !c->dead) {
		ssize_t n;
		if (c->ssl) {
			ERR_clear_error();
			int r = SSL_write(c->ssl, buf_head(&c->out), (int)buf_pending(&c->out));
			if (r <= 0) {
				int e = SSL_get_error(c->ssl, r);
				if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ)
					break;
				client_fail(c, "TLS write failed");
				return;
			}
			n = r;
		} else {
			n = write(c->fd, buf_head(&c->out), buf_pending(&c->out));
			if (n < 0) {
				if (errno == EAGAIN || errno == EINTR)
					break;
				client_fail(c, "write failed");
				return;
			}
		}
		buf_consume(&c->out, (size_t)n);
	}
	if (!c->dead && c->st != C_FREE)
		set_events(c);
}

static void tls_begin(struct client *c)
{
	c->ssl = SSL_new(B.ctx);
	SSL_set_fd(c->ssl, c->fd);
	char sni[256]; /* the macro casts to void *: a copy that is not const */
	snprintf(sni, sizeof(sni), "%s", o.domain);
	SSL_set_tlsext_host_name(c->ssl, sni);
	SSL_set_connect_state(c->ssl);
	c->st = C_HANDSHAKE;
}

static void handshake(struct client *c)
{
	ERR_clear_error();
	int r = SSL_do_handshake(c->ssl);
	if (r == 1) {
		xmlstream_reset(c->xs);
		send_header(c);
		c->st = C_FEATURES2;
		client_flush(c);
		return;
	}
	int e = SSL_get_error(c->ssl, r);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		struct epoll_event ev = {
		    .events = EPOLLIN | (e == SSL_ERROR_WANT_WRITE ? EPOLLOUT : 0), .data.ptr = c};
		epoll_ctl(B.ep, EPOLL_CTL_MOD, c->fd, &ev);
		c->pollout = e == SSL_ERROR_WANT_WRITE;
		return;
	}
	client_fail(c, "TLS handshake failed");
}

/* Feeds what was read; handles the restarts the parser paused for. */
static void feed(struct client *c, const char *p, size_t n)
{
	while (n && !c->dead && c->st != C_FREE) {
		c->in_feed = true;
		ssize_t used = xmlstream_feed(c->xs, p, n);
		c->in_feed = false;
		if (c->dead) {
			client_close(c);
			c->dead = true;
			return;
		}
		if (c->recycle)
			return;
		if (used < 0) {
			client_fail(c, "XML error from server");
			return;
		}
		p += used;
		n -= (size_t)used;
		if (!c->restart)
			continue;
		c->restart = false;
		if (c->st == C_PROCEED) {
			client_flush(c);
			tls_begin(c);
			handshake(c);
			return; /* RFC 6120 §5.4.3.3: nothing else in the clear */
		}
		/* SASL success: a new stream on the same connection. */
		xmlstream_reset(c->xs);
		send_header(c);
		c->st = C_FEATURES3;
	}
}

static void client_read(struct client *c)
{
	char buf[READ_CHUNK];
	for (;;) {
		if (c->dead || c->st == C_FREE)
			return;
		if (c->st == C_HANDSHAKE) {
			handshake(c);
			if (c->st == C_HANDSHAKE)
				return;
			continue;
		}
		ssize_t n;
		if (c->ssl) {
			ERR_clear_error();
			int r = SSL_read(c->ssl, buf, sizeof(buf));
			if (r <= 0) {
				int e = SSL_get_error(c->ssl, r);
				if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
					break;
				if (!B.stopping)
					client_fail(c, "connection closed");
				else
					client_close(c);
				return;
			}
			n = r;
		} else {
			n = read(c->fd, buf, sizeof(buf));
			if (n < 0 && (errno == EAGAIN || errno == EINTR))
				break;
			if (n <= 0) {
				if (!B.stopping)
					client_fail(c, "connection closed");
				else
					client_close(c);
				return;
			}
		}
		feed(c, buf, (size_t)n);
		if (c->recycle) {
			c->recycle = false;
			client_flush(c);
			login_next(c);
			return;
		}
	}
	client_flush(c);
}

static void client_event(struct client *c, uint32_t events)
{
	if (c->st == C_CONNECTING) {
		int err = 0;
		socklen_t len = sizeof(err);
		getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
		if (err) {
			client_fail(c, strerror(err));
			return;
		}
		if (o.direct_tls) {
			tls_begin(c);
			handshake(c);
		} else {
			send_header(c);
			c->st = C_FEATURES1;
			client_flush(c);
		}
		return;
	}
	if (c->st == C_HANDSHAKE) {
		handshake(c);
		if (c->st != C_HANDSHAKE)
			client_read(c);
		return;
	}
	if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
		client_read(c);
	if (!c->dead && c->st != C_FREE && (events & EPOLLOUT))
		client_flush(c);
}

static void client_start(struct client *c)
{
	c->dead = false;
	c->retry_at = 0;
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		note_error(c, "socket: %s", strerror(errno));
		c->dead = true;
		return;
	}
	int one = 1;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	struct sockaddr_in src = {.sin_family = AF_INET};
	src.sin_addr.s_addr = htonl(0x7f000001u + (uint32_t)(B.src_next++ % o.sources));
	if (bind(c->fd, (struct sockaddr *)&src, sizeof(src)) < 0) {
		note_error(c, "bind: %s", strerror(errno));
		close(c->fd);
		c->fd = -1;
		c->dead = true;
		return;
	}
	struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)o.port)};
	inet_pton(AF_INET, o.host, &dst.sin_addr);
	c->xs = xmlstream_new(&xs_cb, c, &xs_lim);
	c->st = C_CONNECTING;
	c->t0 = now_ns();
	c->uncached = false;
	c->md = strcmp(o.mech, "PLAIN") ? mech_md(o.mech) : NULL;
	snprintf(c->resource, sizeof(c->resource), "b%d", c->slot);
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
	c->pollout = true;
	epoll_ctl(B.ep, EPOLL_CTL_ADD, c->fd, &ev);
	if (connect(c->fd, (struct sockaddr *)&dst, sizeof(dst)) < 0 && errno != EINPROGRESS) {
		client_fail(c, "connect failed");
		return;
	}
}

/* ---------------------------------------------------------------- scenarios */

static bool in_window(uint64_t t)
{
	return B.measuring && t >= B.measure_from && t < B.measure_to;
}

static void login_next(struct client *c)
{
	int slot = c->slot, user = c->user;
	client_close(c);
	if (B.stopping)
		return;
	if (o.sc == SC_REGISTER) {
		if (B.next_user >= o.count)
			return;
		c->user = o.first + B.next_user++;
		client_start(c);
		return;
	}
	c->user = o.first + ((user - o.first) + o.concurrency) % o.count;
	(void)slot;
	client_start(c);
}

/* Appends n in decimal (printf was a tenth of the load generator's time). */
static void add_u64(struct buf *b, unsigned long long n)
{
	char d[24];
	size_t i = sizeof(d);
	do {
		d[--i] = (char)('0' + n % 10);
		n /= 10;
	} while (n);
	buf_add(b, d + i, sizeof(d) - i);
}

static void chat_send(struct client *c)
{
	if (!c->msg_head) {
		struct client *p = &B.c[c->partner];
		char to[160];
		user_name(p->user, to, sizeof(to));
		struct buf h = BUF_INIT;
		buf_printf(&h, "<message to='%s@%s/%s' type='chat'><body>s%d t", to, o.domain,
			   p->resource, c->slot);
		buf_addc(&h, '\0');
		c->msg_head = h.data;
	}
	buf_adds(&c->out, c->msg_head);
	add_u64(&c->out, (unsigned long long)now_ns());
	buf_adds(&c->out, "</body></message>");
	c->inflight++;
	B.msgs_sent++;
}

/* Reads "s<slot> t<ns>", the body chat_send() writes. */
static bool parse_body(const char *b, int *from, unsigned long long *sent)
{
	char *end;
	if (b[0] != 's')
		return false;
	long f = strtol(b + 1, &end, 10);
	if (end == b + 1 || end[0] != ' ' || end[1] != 't' || f < 0 || f > INT_MAX)
		return false;
	const char *t = end + 2;
	unsigned long long v = strtoull(t, &end, 10);
	if (end == t)
		return false;
	*from = (int)f;
	*sent = v;
	return true;
}

static void on_ready(struct client *c)
{
	uint64_t t = now_ns();
	if (o.sc == SC_LOGIN) {
		if (in_window(c->t0) && !c->uncached) {
			B.logins++;
			hist_add(B.lat, t - c->t0);
		} else if (c->uncached) {
			B.logins_uncached++;
		}
		send_str(c, "</stream:stream>");
		c->recycle = true; /* after the feed: the parser is in use */
		xmlstream_pause(c->xs);
		return;
	}
	if (c->uncached)
		B.logins_uncached++;
	B.logins++;
	hist_add(B.lat, t - c->t0);
}

static void on_stanza(struct client *c, struct xml_el *el, struct arena *a)
{
	if (o.sc == SC_CHAT && is(el, NS_CLIENT, "message")) {
		struct xml_el *body = xml_child(el, NS_CLIENT, "body");
		int from = -1;
		unsigned long long sent = 0;
		if (body && parse_body(xml_text(a, body), &from, &sent) && from < B.n) {
			uint64_t t = now_ns();
			B.msgs_recv++;
			if (in_window(sent))
				hist_add(B.lat, t - sent);
			struct client *s = &B.c[from];
			if (s->inflight)
				s->inflight--;
			if (o.rate == 0 && !B.stopping && s->st == C_READY && B.measuring) {
				chat_send(s);
				if (!s->dirty) {
					s->dirty = true;
					B.dirty[B.n_dirty++] = s;
				}
			}
		}
	} else if (is(el, NS_CLIENT, "presence")) {
		const char *type = xml_attr(el, "type");
		const char *from = xml_attr(el, "from");
		if (type && !strcmp(type, "subscribe") && from) {
			/* Roster set-up: approve, and ask back (RFC 6121 §3.1.5). */
			struct buf *b = &c->out;
			for (int k = 0; k < 2; k++) {
				buf_adds(b, "<presence to='");
				xml_escape(b, from, strlen(from), true);
				buf_adds(b, k ? "' type='subscribe'/>" : "' type='subscribed'/>");
			}
		} else if (type && !strcmp(type, "subscribed")) {
			B.subscribed++;
		} else if (!type || !strcmp(type, "unavailable")) {
			c->presences++;
			if (B.measuring) {
				B.presences++;
				B.last_presence = now_ns();
			}
		}
	} else if (is(el, NS_CLIENT, "iq")) {
		const char *type = xml_attr(el, "type");
		if (type && (!strcmp(type, "get") || !strcmp(type, "set"))) {
			/* Answer what the server asks (pings, roster pushes). */
			const char *id = xml_attr(el, "id");
			struct buf *b = &c->out;
			buf_adds(b, "<iq type='result'");
			if (id) {
				buf_adds(b, " id='");
				xml_escape(b, id, strlen(id), true);
				buf_addc(b, '\'');
			}
			const char *from = xml_attr(el, "from");
			if (from) {
				buf_adds(b, " to='");
				xml_escape(b, from, strlen(from), true);
				buf_addc(b, '\'');
			}
			buf_adds(b, "/>");
		}
	}
	arena_free(a);
}

/* ---------------------------------------------------------------- the loop */

static volatile sig_atomic_t interrupted;
static void on_sigint(int sig)
{
	(void)sig;
	interrupted = 1;
}

static void run_loop(uint64_t until, bool (*done)(void))
{
	struct epoll_event evs[256];
	while (!interrupted && now_ns() < until && !(done && done())) {
		uint64_t left = (until - now_ns()) / 1000000;
		int n = epoll_wait(B.ep, evs, 256, left > 50 ? 50 : (int)left + 1);
		for (int i = 0; i < n; i++)
			client_event(evs[i].data.ptr, evs[i].events);
		for (int i = 0; i < B.n_dirty; i++) {
			struct client *c = B.dirty[i];
			c->dirty = false;
			if (!c->dead && c->st != C_FREE)
				client_flush(c);
		}
		B.n_dirty = 0;
		/* login timeouts, and restarting what failed: every millisecond
		 * at most, not after every wakeup */
		uint64_t t = now_ns();
		if (t - B.swept < 1000000)
			continue;
		B.swept = t;
		for (int i = 0; i < B.n; i++) {
			struct client *c = &B.c[i];
			if (c->st != C_FREE && c->st != C_READY && t - c->t0 > LOGIN_TIMEOUT_NS)
				client_fail(c, "login timed out");
			if (c->retry_at && t >= c->retry_at && !c->dead) {
				c->retry_at = 0;
				if (c->st == C_REGISTER) {
					send_register(c);
					client_flush(c);
				}
			}
			if (c->dead && (o.sc == SC_LOGIN || o.sc == SC_REGISTER) && !B.stopping) {
				c->dead = false;
				login_next(c);
			}
		}
	}
}

static int n_ready_target;
static bool all_ready(void)
{
	int dead = 0;
	for (int i = 0; i < B.n; i++)
		dead += B.c[i].dead;
	return B.ready + dead >= n_ready_target;
}

/* Opens every slot's session, at most o.concurrency logins at a time. */
static bool open_sessions(int n, double timeout_s)
{
	n_ready_target = n;
	int started = 0;
	uint64_t deadline = now_ns() + (uint64_t)(timeout_s * 1e9);
	while (!interrupted && !all_ready() && now_ns() < deadline) {
		int pending = 0;
		for (int i = 0; i < started; i++)
			pending += B.c[i].st != C_FREE && B.c[i].st != C_READY;
		while (started < n && pending < o.concurrency) {
			client_start(&B.c[started++]);
			pending++;
		}
		run_loop(now_ns() + 20000000ull, all_ready);
	}
	return B.ready >= n;
}

static void summary_errors(void)
{
	for (int i = 0; i < B.n_errs; i++)
		fprintf(stderr, "  error: %s\n", B.errs[i]);
}

static void warn_if_bottleneck(double cpu, double wall)
{
	if (wall > 0 && cpu / wall > 0.9)
		fprintf(stderr,
			"warning: parley-bench used %.0f%% of a core: the load generator, "
			"not the server, may be the limit\n",
			100 * cpu / wall);
}

/* presence: first make sure each user and the next R/2 (mod N) are
 * subscribed both ways, then log everyone out and back in, and count the
 * presence stanzas the login storm delivers (each login broadcasts to its
 * R contacts and probes them, RFC 6121 §4.2). */
static uint64_t sub_target;
static bool subs_done(void)
{
	return B.subscribed >= sub_target;
}

static int presence_scenario(int slots)
{
	int half = o.roster / 2;
	if (half < 1 || half * 2 >= slots) {
		fprintf(stderr, "parley-bench: presence needs 2 <= --roster < --sessions\n");
		return 2;
	}
	if (!open_sessions(slots, 600)) {
		fprintf(stderr, "presence: only %d of %d sessions logged in\n", B.ready, slots);
		summary_errors();
		return 1;
	}
	/* Set-up, unless an earlier run did it: subscriptions both ways. */
	int missing = 0;
	for (int i = 0; i < slots; i++)
		missing += B.c[i].roster_both < (unsigned)(2 * half);
	sub_target = missing ? (uint64_t)slots * (uint64_t)half * 2 : 0;
	for (int i = 0; i < slots && missing; i++) {
		struct client *c = &B.c[i];
		for (int k = 1; k <= half; k++) {
			char to[160];
			user_name(B.c[(i + k) % slots].user, to, sizeof(to));
			buf_printf(&c->out, "<presence to='%s@%s' type='subscribe'/>", to,
				   o.domain);
		}
		client_flush(c);
	}
	uint64_t t = now_ns();
	run_loop(t + 60ull * 1000000000ull, subs_done);
	run_loop(now_ns() + 1000000000ull, NULL); /* let the pushes settle */
	printf("presence: set-up: %llu subscription approvals in %.1f s\n",
	       (unsigned long long)B.subscribed, (double)(now_ns() - t) / 1e9);
	/* Everyone leaves, then the measured login storm. */
	B.stopping = true;
	for (int i = 0; i < slots; i++) {
		send_str(&B.c[i], "</stream:stream>");
		client_flush(&B.c[i]);
		client_close(&B.c[i]);
	}
	B.stopping = false;
	B.ready = 0;
	run_loop(now_ns() + 1000000000ull, NULL);
	B.logins = 0;
	memset(B.lat, 0, sizeof(*B.lat));
	B.measuring = true;
	B.measure_from = now_ns();
	B.measure_to = UINT64_MAX;
	B.presences = 0;
	double c0 = cpu_self(), s0 = o.server_pid ? cpu_of(o.server_pid) : -1;
	bool ok = open_sessions(slots, 600);
	/* Until no presence has arrived for half a second. */
	while (!interrupted &&
	       now_ns() - (B.last_presence ? B.last_presence : B.measure_from) < 500000000ull)
		run_loop(now_ns() + 100000000ull, NULL);
	double secs =
	    (double)((B.last_presence ? B.last_presence : now_ns()) - B.measure_from) / 1e9;
	double cpu = cpu_self() - c0;
	double scpu = o.server_pid ? cpu_of(o.server_pid) - s0 : -1;
	double rate = secs > 0 ? (double)B.presences / secs : 0;
	B.stopping = true;
	printf("presence: %d users with %d contacts each logged in: %llu presence stanzas "
	       "delivered in %.2f s = %.0f/s\n",
	       B.ready, half * 2, (unsigned long long)B.presences, secs, rate);
	printf("  login latency ms: p50 %.2f  p99 %.2f\n", hist_q(B.lat, .5), hist_q(B.lat, .99));
	if (scpu >= 0)
		printf("  server CPU %.2f s = %.1f µs per presence delivered\n", scpu,
		       B.presences ? scpu * 1e6 / (double)B.presences : 0);
	printf("  bench CPU %.0f%% of a core; errors %llu\n", secs > 0 ? 100 * cpu / secs : 0,
	       (unsigned long long)B.errors);
	warn_if_bottleneck(cpu, secs);
	summary_errors();
	printf("JSON {\"scenario\":\"presence\",\"users\":%d,\"roster\":%d,"
	       "\"presences\":%llu,\"seconds\":%.3f,\"presences_per_s\":%.1f,"
	       "\"login_p99_ms\":%.3f,\"server_cpu_s\":%.3f,\"bench_cpu_s\":%.3f,"
	       "\"errors\":%llu}\n",
	       B.ready, half * 2, (unsigned long long)B.presences, secs, rate, hist_q(B.lat, .99),
	       scpu, cpu, (unsigned long long)B.errors);
	return ok && B.presences ? 0 : 1;
}

/* ---------------------------------------------------------------- setup */

static void usage(void)
{
	fputs("usage: parley-bench login|idle|chat|presence|register [options]\n"
	      "  register: creates --count users by in-band registration (XEP-0077)\n"
	      "  --host ADDR            server address (IPv4, default 127.0.0.1)\n"
	      "  --port N               c2s port (default 5222)\n"
	      "  --direct-tls           TLS from the first byte (XEP-0368) instead of STARTTLS\n"
	      "  --domain D             XMPP domain (default localhost)\n"
	      "  --users FMT            user name pattern with one %d (default bench%d)\n"
	      "  --first N --count N    user numbers used: first .. first+count-1 (0, 100)\n"
	      "  --password P           every user's password (default bench)\n"
	      "  --mech M               SCRAM-SHA-1, SCRAM-SHA-256, SCRAM-SHA-512 or PLAIN\n"
	      "  --concurrency N        logins in progress at once (default 50)\n"
	      "  --duration S --warmup S  measured seconds, and unmeasured before (10, 2)\n"
	      "  --sessions N           idle/chat/presence: sessions (default 1000)\n"
	      "  --hold S               idle: seconds to hold them (default 5)\n"
	      "  --rate R               chat: messages/s in total; 0: each sender keeps\n"
	      "                         --window messages in flight (default 0, window 4)\n"
	      "  --roster R             presence: contacts per user (default 10)\n"
	      "  --sources N            source addresses 127.0.0.1..127.0.0.N (default 50)\n"
	      "  --server-pid PID       read the server's CPU and memory from /proc\n"
	      "  --scram-cache FILE     keep SCRAM salted passwords across runs\n",
	      stderr);
	exit(2);
}

static void parse(int argc, char **argv)
{
	static const struct option lo[] = {
	    {"host", 1, 0, 'H'},	{"port", 1, 0, 'p'},	    {"direct-tls", 0, 0, 'T'},
	    {"domain", 1, 0, 'd'},	{"users", 1, 0, 'u'},	    {"first", 1, 0, 'f'},
	    {"count", 1, 0, 'n'},	{"password", 1, 0, 'P'},    {"mech", 1, 0, 'm'},
	    {"concurrency", 1, 0, 'c'}, {"duration", 1, 0, 't'},    {"warmup", 1, 0, 'w'},
	    {"sessions", 1, 0, 's'},	{"hold", 1, 0, 'h'},	    {"rate", 1, 0, 'r'},
	    {"window", 1, 0, 'W'},	{"roster", 1, 0, 'R'},	    {"sources", 1, 0, 'S'},
	    {"server-pid", 1, 0, 'i'},	{"scram-cache", 1, 0, 'C'}, {0, 0, 0, 0},
	};
	if (argc < 2)
		usage();
	const char *sc = argv[1];
	if (!strcmp(sc, "login"))
		o.sc = SC_LOGIN;
	else if (!strcmp(sc, "idle"))
		o.sc = SC_IDLE;
	else if (!strcmp(sc, "chat"))
		o.sc = SC_CHAT;
	else if (!strcmp(sc, "presence"))
		o.sc = SC_PRESENCE;
	else if (!strcmp(sc, "register"))
		o.sc = SC_REGISTER;
	else
		usage();
	optind = 2;
	int ch;
	while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (ch) {
		case 'H':
			o.host = optarg;
			break;
		case 'p':
			o.port = atoi(optarg);
			break;
		case 'T':
			o.direct_tls = true;
			break;
		case 'd':
			o.domain = optarg;
			break;
		case 'u':
			o.user_fmt = optarg;
			break;
		case 'f':
			o.first = atoi(optarg);
			break;
		case 'n':
			o.count = atoi(optarg);
			break;
		case 'P':
			o.password = optarg;
			break;
		case 'm':
			o.mech = optarg;
			break;
		case 'c':
			o.concurrency = atoi(optarg);
			break;
		case 't':
			o.duration = atof(optarg);
			break;
		case 'w':
			o.warmup = atof(optarg);
			break;
		case 's':
			o.sessions = atoi(optarg);
			break;
		case 'h':
			o.hold = atof(optarg);
			break;
		case 'r':
			o.rate = atof(optarg);
			break;
		case 'W':
			o.window = atoi(optarg);
			break;
		case 'R':
			o.roster = atoi(optarg);
			break;
		case 'S':
			o.sources = atoi(optarg);
			break;
		case 'i':
			o.server_pid = atoi(optarg);
			break;
		case 'C':
			o.scram_cache = optarg;
			break;
		default:
			usage();
		}
	}
	if (strcmp(o.mech, "PLAIN") && !mech_md(o.mech)) {
		fprintf(stderr, "parley-bench: unknown mechanism %s\n", o.mech);
		exit(2);
	}
	const char *pct = strchr(o.user_fmt, '%');
	if (!pct || pct[1] != 'd' || strchr(pct + 1, '%') ||
	    (size_t)(pct - o.user_fmt) >= sizeof(user_prefix) ||
	    strlen(pct + 2) >= sizeof(user_suffix)) {
		fprintf(stderr, "parley-bench: --users needs exactly one %%d\n");
		exit(2);
	}
	snprintf(user_prefix, sizeof(user_prefix), "%.*s", (int)(pct - o.user_fmt), o.user_fmt);
	snprintf(user_suffix, sizeof(user_suffix), "%s", pct + 2);
	if (o.count < 1 || o.concurrency < 1 || o.sources < 1 || o.sources > 254 ||
	    o.sessions < 1 || o.window < 1) {
		fprintf(stderr, "parley-bench: counts must be positive (sources 1..254)\n");
		exit(2);
	}
}

int main(int argc, char **argv)
{
	parse(argc, argv);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGINT, on_sigint);
	salt_load();
	B.ep = epoll_create1(EPOLL_CLOEXEC);
	B.ctx = SSL_CTX_new(TLS_client_method());
	SSL_CTX_set_min_proto_version(B.ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(B.ctx, SSL_VERIFY_NONE, NULL); /* a benchmark, not a client */
	SSL_CTX_set_mode(B.ctx,
			 SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_CTX_set_session_cache_mode(B.ctx, SSL_SESS_CACHE_OFF); /* full handshakes only */
	SSL_CTX_set_read_ahead(B.ctx, 1);
	B.lat = calloc(1, sizeof(*B.lat));
	if (!B.lat)
		abort();

	int slots = o.sc == SC_LOGIN || o.sc == SC_REGISTER ? o.concurrency : o.sessions;
	if (o.sc == SC_REGISTER && slots > o.count)
		slots = o.count;
	if (o.sc == SC_PRESENCE && o.count < slots) {
		fprintf(stderr,
			"parley-bench: presence needs --count >= --sessions (one user each)\n");
		return 2;
	}
	if (o.sc == SC_LOGIN && o.count < o.concurrency) {
		fprintf(stderr, "parley-bench: login needs --count >= --concurrency\n");
		return 2;
	}
	B.n = slots;
	B.c = calloc((size_t)slots, sizeof(*B.c));
	B.dirty = calloc((size_t)slots, sizeof(*B.dirty));
	if (!B.c || !B.dirty)
		abort();
	for (int i = 0; i < slots; i++) {
		/* More sessions than users: each user gets several resources. */
		B.c[i] = (struct client){
		    .slot = i, .fd = -1, .st = C_FREE, .user = o.first + i % o.count};
		B.c[i].partner = i ^ 1;
		if (B.c[i].partner >= slots)
			B.c[i].partner = i; /* an odd one out talks to itself */
	}

	long rss0 = o.server_pid ? rss_of(o.server_pid) : -1;
	int rc = 0;

	if (o.sc == SC_REGISTER) {
		uint64_t t = now_ns();
		B.next_user = slots;
		for (int i = 0; i < slots; i++)
			client_start(&B.c[i]);
		while (!interrupted && (B.logins + B.existing + B.errors < (uint64_t)o.count) &&
		       now_ns() - t < 3600ull * 1000000000ull) {
			run_loop(now_ns() + 100000000ull, NULL);
			bool busy = false;
			for (int i = 0; i < slots; i++)
				busy |= B.c[i].st != C_FREE;
			if (!busy && B.next_user >= o.count)
				break;
		}
		double secs = (double)(now_ns() - t) / 1e9;
		B.stopping = true;
		printf("register: %llu accounts created, %llu existed, %llu errors in %.1f s "
		       "(%.0f/s)\n",
		       (unsigned long long)B.logins, (unsigned long long)B.existing,
		       (unsigned long long)B.errors, secs, (double)(B.logins + B.existing) / secs);
		summary_errors();
		printf("JSON {\"scenario\":\"register\",\"created\":%llu,\"existing\":%llu,"
		       "\"errors\":%llu,\"seconds\":%.2f}\n",
		       (unsigned long long)B.logins, (unsigned long long)B.existing,
		       (unsigned long long)B.errors, secs);
		rc = B.logins + B.existing == (uint64_t)o.count ? 0 : 1;
	} else if (o.sc == SC_LOGIN) {
		for (int i = 0; i < slots; i++)
			client_start(&B.c[i]);
		uint64_t t = now_ns();
		B.measuring = true;
		B.measure_from = t + (uint64_t)(o.warmup * 1e9);
		B.measure_to = B.measure_from + (uint64_t)(o.duration * 1e9);
		run_loop(B.measure_from, NULL);
		double cpu0 = cpu_self(), s0 = o.server_pid ? cpu_of(o.server_pid) : -1;
		run_loop(B.measure_to, NULL);
		double cpu = cpu_self() - cpu0;
		double scpu = o.server_pid ? cpu_of(o.server_pid) - s0 : -1;
		B.stopping = true;
		double rate = (double)B.logins / o.duration;
		printf("login: %llu logins in %.1f s = %.0f logins/s (concurrency %d, %s, %s)\n",
		       (unsigned long long)B.logins, o.duration, rate, o.concurrency, o.mech,
		       o.direct_tls ? "direct TLS" : "STARTTLS");
		printf("  latency ms: p50 %.2f  p99 %.2f  p999 %.2f  mean %.2f\n",
		       hist_q(B.lat, .5), hist_q(B.lat, .99), hist_q(B.lat, .999),
		       B.lat->n ? B.lat->sum_us / (double)B.lat->n / 1000 : 0);
		printf("  errors %llu, logins with a key derivation (left out) %llu\n",
		       (unsigned long long)B.errors, (unsigned long long)B.logins_uncached);
		if (scpu >= 0)
			printf("  server CPU %.2f s = %.0f µs per login\n", scpu,
			       B.logins ? scpu * 1e6 / (double)B.logins : 0);
		printf("  bench CPU %.2f s (%.0f%% of a core)\n", cpu, 100 * cpu / o.duration);
		warn_if_bottleneck(cpu, o.duration);
		summary_errors();
		printf("JSON {\"scenario\":\"login\",\"mech\":\"%s\",\"tls\":\"%s\","
		       "\"concurrency\":%d,\"duration\":%.1f,\"logins\":%llu,"
		       "\"logins_per_s\":%.1f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"p999_ms\":%.3f,"
		       "\"errors\":%llu,\"uncached\":%llu,\"server_cpu_s\":%.3f,"
		       "\"server_us_per_login\":%.1f,\"bench_cpu_s\":%.3f}\n",
		       o.mech, o.direct_tls ? "direct" : "starttls", o.concurrency, o.duration,
		       (unsigned long long)B.logins, rate, hist_q(B.lat, .5), hist_q(B.lat, .99),
		       hist_q(B.lat, .999), (unsigned long long)B.errors,
		       (unsigned long long)B.logins_uncached, scpu,
		       B.logins && scpu >= 0 ? scpu * 1e6 / (double)B.logins : -1, cpu);
		rc = B.logins > 0 ? 0 : 1;
	} else if (o.sc == SC_IDLE) {
		uint64_t t0 = now_ns();
		bool ok = open_sessions(slots, 600);
		double open_s = (double)(now_ns() - t0) / 1e9;
		/* Let the server settle, then measure while nothing happens. */
		run_loop(now_ns() + 1000000000ull, NULL);
		double s0 = o.server_pid ? cpu_of(o.server_pid) : -1, c0 = cpu_self();
		run_loop(now_ns() + (uint64_t)(o.hold * 1e9), NULL);
		double scpu = o.server_pid ? cpu_of(o.server_pid) - s0 : -1;
		double cpu = cpu_self() - c0;
		long rss1 = o.server_pid ? rss_of(o.server_pid) : -1;
		double kib = rss0 >= 0 && B.ready ? (double)(rss1 - rss0) / B.ready : -1;
		printf("idle: %d of %d sessions open (%.1f s to open, %llu errors)\n", B.ready,
		       slots, open_s, (unsigned long long)B.errors);
		if (o.server_pid)
			printf("  server RSS %ld KiB -> %ld KiB: %.1f KiB per session; server CPU "
			       "while idle %.1f%% of a core\n",
			       rss0, rss1, kib, 100 * scpu / o.hold);
		printf("  bench CPU while idle %.1f%%\n", 100 * cpu / o.hold);
		summary_errors();
		printf("JSON {\"scenario\":\"idle\",\"sessions\":%d,\"open\":%d,\"errors\":%llu,"
		       "\"rss_before_kib\":%ld,\"rss_after_kib\":%ld,\"kib_per_session\":%.2f,"
		       "\"server_idle_cpu_pct\":%.2f,\"open_s\":%.2f}\n",
		       slots, B.ready, (unsigned long long)B.errors, rss0, rss1, kib,
		       scpu >= 0 ? 100 * scpu / o.hold : -1, open_s);
		rc = ok ? 0 : 1;
	} else if (o.sc == SC_CHAT) {
		bool ok = open_sessions(slots, 600);
		if (!ok) {
			fprintf(stderr, "chat: only %d of %d sessions logged in\n", B.ready, slots);
			summary_errors();
		}
		memset(B.lat, 0, sizeof(*B.lat));
		B.msgs_sent = B.msgs_recv = 0;
		uint64_t t = now_ns();
		B.measuring = true;
		B.measure_from = t + (uint64_t)(o.warmup * 1e9);
		B.measure_to = B.measure_from + (uint64_t)(o.duration * 1e9);
		uint64_t recv_at_from = 0, end = B.measure_to;
		double c0 = 0, s0 = 0;
		bool counted = false;
		if (o.rate == 0) {
			for (int i = 0; i < slots; i++)
				if (B.c[i].st == C_READY) {
					for (int k = 0; k < o.window; k++)
						chat_send(&B.c[i]);
					client_flush(&B.c[i]);
				}
		}
		double credit = 0;
		uint64_t last = now_ns();
		int next_sender = 0;
		while (!interrupted && now_ns() < end) {
			if (!counted && now_ns() >= B.measure_from) {
				counted = true;
				recv_at_from = B.msgs_recv;
				c0 = cpu_self();
				s0 = o.server_pid ? cpu_of(o.server_pid) : -1;
			}
			if (o.rate > 0) {
				uint64_t n = now_ns();
				credit += o.rate * (double)(n - last) / 1e9;
				last = n;
				while (credit >= 1) {
					for (int tries = 0; tries < slots; tries++) {
						struct client *c = &B.c[next_sender];
						next_sender = (next_sender + 1) % slots;
						if (c->st == C_READY) {
							chat_send(c);
							client_flush(c);
							break;
						}
					}
					credit -= 1;
				}
			}
			run_loop(now_ns() + 1000000ull, NULL);
		}
		uint64_t delivered = B.msgs_recv - recv_at_from;
		double cpu = cpu_self() - c0;
		double scpu = o.server_pid ? cpu_of(o.server_pid) - s0 : -1;
		B.stopping = true;
		double rate = (double)delivered / o.duration;
		printf("chat: %d users, %s: %.0f msgs/s delivered (%llu in %.1f s)\n", B.ready,
		       o.rate > 0 ? "fixed rate" : "window", rate, (unsigned long long)delivered,
		       o.duration);
		if (o.rate > 0)
			printf("  offered %.0f msgs/s\n", o.rate);
		printf("  latency ms: p50 %.3f  p99 %.3f  p999 %.3f\n", hist_q(B.lat, .5),
		       hist_q(B.lat, .99), hist_q(B.lat, .999));
		if (scpu >= 0)
			printf("  server CPU %.2f s = %.1f µs per message\n", scpu,
			       delivered ? scpu * 1e6 / (double)delivered : 0);
		printf("  bench CPU %.0f%% of a core; errors %llu\n", 100 * cpu / o.duration,
		       (unsigned long long)B.errors);
		warn_if_bottleneck(cpu, o.duration);
		summary_errors();
		printf("JSON {\"scenario\":\"chat\",\"users\":%d,\"offered_rate\":%.1f,"
		       "\"window\":%d,\"msgs_per_s\":%.1f,\"delivered\":%llu,\"p50_ms\":%.3f,"
		       "\"p99_ms\":%.3f,\"p999_ms\":%.3f,\"server_cpu_s\":%.3f,"
		       "\"server_us_per_msg\":%.2f,\"bench_cpu_s\":%.3f,\"errors\":%llu}\n",
		       B.ready, o.rate, o.rate > 0 ? 0 : o.window, rate,
		       (unsigned long long)delivered, hist_q(B.lat, .5), hist_q(B.lat, .99),
		       hist_q(B.lat, .999), scpu,
		       delivered && scpu >= 0 ? scpu * 1e6 / delivered : -1, cpu,
		       (unsigned long long)B.errors);
		rc = ok && delivered > 0 ? 0 : 1;
	} else {
		rc = presence_scenario(slots);
	}
	for (int i = 0; i < B.n; i++)
		client_close(&B.c[i]);
	SSL_CTX_free(B.ctx);
	free(B.c);
	free(B.lat);
	for (size_t i = 0; i < SALT_BUCKETS; i++)
		while (salts[i]) {
			struct salted *n = salts[i]->next;
			free(salts[i]);
			salts[i] = n;
		}
	close(B.ep);
	return rc;
}
