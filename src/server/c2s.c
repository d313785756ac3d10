/* Client-to-server streams (RFC 6120 §4-§7): stream headers and features,
 * STARTTLS, SASL, resource binding, then stanzas handed to the router.
 * The XML front end (xmlstream) does no I/O; this file joins it to a
 * connection. Everything here runs on the session's own worker. */
#include "server/server.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/arena.h"
#include "core/buf.h"
#include "core/conn.h"
#include "core/log.h"
#include "server/throttle.h"
#include "storage/store.h"
#include "xml/xmlstream.h"
#include "xmpp/base64.h"
#include "xmpp/ns.h"
#include "xmpp/sasl/sasl.h"

/* RFC 6120 §6.4.5: after so many retries the stream is closed. Password
 * guesses are counted strictly; attempts refused before any password is
 * checked (a channel-binding type we do not have, a downgrade flag, a
 * malformed message) get a looser bound of their own, because clients walk
 * down their mechanism list that way: slixmpp, for one, tries every -PLUS
 * mechanism with tls-unique (undefined for TLS 1.3, RFC 9266) and then each
 * SCRAM with the 'y' flag, which RFC 5802 §6 makes us refuse, before PLAIN. */
#define SASL_MAX_FAILURES 3
#define SASL_MAX_REJECTS  10
#define CLOSE_DEADLINE_MS 5000 /* a closing stream that does not drain is dropped */
#define MAX_SASL_BYTES	  16384
#define HELD_INPUT_MAX	  (64 * 1024) /* read while input was paused: at most a read or two */
/* A bound session that has sent nothing for this long gives back its XML
 * parser (about 12 KiB; xmlstream_park()) until input comes again. */
#define PARK_MS 2000

enum pause_action { PA_NONE, PA_STARTTLS, PA_RESTART, PA_WAIT };

/* Action requested by an element handler, carried out once the XML layer
 * has returned (it must not be reset from inside its own callback). */
static __thread enum pause_action pending_action;
static __thread bool in_feed; /* inside xmlstream_feed: the XML layer can pause */

static void session_unref(struct session *s);
static void session_unregister(struct session *s);
static void process_input(struct session *s, const char *p, size_t n);
static void resume_input(struct session *s);

/* Asks the XML layer to stop after the current element; process_input()
 * then carries out the action. */
static void request(struct session *s, enum pause_action a)
{
	pending_action = a;
	if (in_feed)
		xmlstream_pause(s->xs);
}

/* --- output --- */

static void check_queue(struct session *s)
{
	/* A reader that does not read must not make us buffer without bound. */
	if (s->conn && conn_queued(s->conn) > s->w->conf.limits.out_queue_bytes) {
		LOGS(LOG_INFO, s->id, "output queue over %zu bytes: closing",
		     s->w->conf.limits.out_queue_bytes);
		session_unregister(s);
		s->flags |= SF_CLOSING;
		conn_close(s->conn, "output queue full");
		loop_timer_set(s->w->loop, &s->timer, CLOSE_DEADLINE_MS);
	}
}

/* Every write goes through here: past the output limit there is no buffer
 * (the one write that crosses it is the most we hold beyond it). */
static struct buf *out(struct session *s)
{
	check_queue(s);
	return s->conn ? conn_wbuf(s->conn) : NULL;
}

static void send_raw(struct session *s, const char *str)
{
	struct buf *b = out(s);
	if (b)
		buf_adds(b, str);
}

static void send_el(struct session *s, const struct xml_el *el)
{
	struct buf *b = out(s);
	if (!b)
		return;
	xml_serialize(el, NS_CLIENT, b);
	check_queue(s);
}

void session_send(struct session *s, struct stanza *st)
{
	if (s->conn && (s->flags & SF_BOUND))
		send_el(s, st->el);
	stanza_free(st);
}

/* --- the module API's view of a session --- */

void **session_slot(struct session *s, enum sess_slot k)
{
	ASSERT(k < SLOT_MAX);
	return &s->slots[k];
}

const struct jid *session_jid(const struct session *s)
{
	return &s->jid;
}

bool session_available(const struct session *s)
{
	return s->flags & SF_AVAILABLE;
}

int session_priority(const struct session *s)
{
	return s->priority;
}

struct host *session_host(const struct session *s)
{
	return s->host;
}

void session_deliver(struct session *s, struct stanza *st)
{
	session_send(s, st);
}

static void send_header(struct session *s, const char *to_attr)
{
	struct buf *b = out(s);
	if (!b)
		return;
	unsigned char rnd[9];
	char id[16];
	if (RAND_bytes(rnd, sizeof(rnd)) != 1)
		die("RAND_bytes failed");
	base64_encode(rnd, sizeof(rnd), id);
	for (char *p = id; *p; p++)
		if (*p == '/' || *p == '+')
			*p = 'x';
	snprintf(s->stream_id, sizeof(s->stream_id), "%s", id);
	buf_adds(b, "<?xml version='1.0'?><stream:stream xmlns='" NS_CLIENT
		    "' xmlns:stream='" NS_STREAMS "' id='");
	buf_adds(b, s->stream_id);
	buf_adds(b, "' from='");
	const char *dom = s->host ? s->host->domain : srv->hosts[0].domain;
	xml_escape(b, dom, strlen(dom), true);
	if (to_attr) {
		buf_adds(b, "' to='");
		xml_escape(b, to_attr, strlen(to_attr), true);
	}
	buf_adds(b, "' version='1.0' xml:lang='en'>");
	s->flags |= SF_OPENED;
}

static void unavailable_posted(void *arg)
{
	struct session *s = arg;
	struct stanza *st = stanza_new(ST_PRESENCE, "unavailable");
	stanza_set_from(st, &s->jid);
	route(st, s);
	session_unref(s);
}

/* The session stops being reachable: stanzas for it are routed as if it
 * never existed (RFC 6121 §8.5.3.2) instead of dropped, and its other
 * resources (later: contacts) learn it is gone (RFC 6121 §4.5.3). The
 * presence is posted, not routed here: we may be deep inside a delivery
 * (an output queue that just overflowed), and it must not overtake
 * stanzas that delivery is still handing out. */
static void session_unregister(struct session *s)
{
	if (!(s->flags & SF_BOUND) || (s->flags & SF_UNBOUND))
		return;
	s->flags |= SF_UNBOUND;
	registry_unbind(&s->jid, s->id);
	if (s->flags & SF_AVAILABLE) {
		s->flags &= ~SF_AVAILABLE;
		s->refs++;
		loop_post(s->w->loop, unavailable_posted, s);
	}
}

void session_close(struct session *s, const char *cond, const char *text)
{
	if (!s->conn || (s->flags & SF_CLOSING))
		return;
	session_unregister(s);
	s->flags |= SF_CLOSING;
	/* A peer that never reads or never finishes its handshake must not
	 * keep the socket: after the deadline it is dropped. */
	loop_timer_set(s->w->loop, &s->timer, CLOSE_DEADLINE_MS);
	/* RFC 6120 §4.9.1.2: an error on the initial header still needs our header. */
	if (!(s->flags & SF_OPENED))
		send_header(s, NULL);
	if (cond) {
		LOGS(LOG_DEBUG, s->id, "stream error %s%s%s", cond, text ? ": " : "",
		     text ? text : "");
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
	send_raw(s, "</stream:stream>");
	conn_close(s->conn, cond ? cond : "closed");
}

#define NS_REGISTER	    "jabber:iq:register"
#define NS_REGISTER_FEATURE "http://jabber.org/features/iq-register"
#define NS_IBR_TOKEN	    "urn:xmpp:ibr-token:0" /* XEP-0445 §4 */
#define NS_PARS		    "urn:xmpp:pars:0"	   /* XEP-0401 / XEP-0445 §5 */

static bool reg_allowed(const struct session *s)
{
	return s->host && s->w->conf.registration != REGISTRATION_OFF &&
	       ((s->flags & SF_TLS) || !s->w->conf.require_encryption);
}

static void send_features(struct session *s)
{
	struct buf *b = out(s);
	if (!b)
		return;
	const struct limits_conf *lim = &s->w->conf.limits;
	buf_adds(b, "<stream:features>");
	if (!(s->flags & SF_TLS)) {
		buf_adds(b, "<starttls xmlns='" NS_TLS "'>");
		if (s->w->conf.require_encryption)
			buf_adds(b, "<required/>");
		buf_adds(b, "</starttls>");
	}
	if (!(s->flags & SF_AUTHED) && ((s->flags & SF_TLS) || !s->w->conf.require_encryption)) {
		/* RFC 6120 §5.3.1: while TLS is mandatory-to-negotiate we offer
		 * nothing else before it. */
		struct sasl_cbind cb = {0};
		if (s->flags & SF_TLS) {
			if (s->cb_have_exporter) {
				cb.tls_exporter = s->cb_exporter;
				cb.tls_exporter_len = sizeof(s->cb_exporter);
			}
			if (s->cb_endpoint_len) {
				cb.tls_server_end_point = s->cb_endpoint;
				cb.tls_server_end_point_len = s->cb_endpoint_len;
			}
		}
		const char *mechs[16];
		size_t n =
		    sasl_mechanisms(s->flags & SF_TLS, &cb, s->w->conf.sasl_plain, mechs, 16);
		buf_adds(b, "<mechanisms xmlns='" NS_SASL "'>");
		for (size_t i = 0; i < n; i++)
			buf_printf(b, "<mechanism>%s</mechanism>", mechs[i]);
		buf_adds(b, "</mechanisms>");
		/* XEP-0440: the channel-binding types we can verify. */
		if (cb.tls_exporter || cb.tls_server_end_point) {
			buf_adds(b, "<sasl-channel-binding xmlns='" NS_SASL_CB "'>");
			if (cb.tls_exporter)
				buf_adds(b, "<channel-binding type='tls-exporter'/>");
			if (cb.tls_server_end_point)
				buf_adds(b, "<channel-binding type='tls-server-end-point'/>");
			buf_adds(b, "</sasl-channel-binding>");
		}
	}
	if (!(s->flags & SF_AUTHED) && reg_allowed(s)) {
		/* XEP-0077 §8, XEP-0445 §4. */
		if (s->w->conf.registration == REGISTRATION_INVITE)
			buf_adds(b, "<register xmlns='" NS_IBR_TOKEN "'/>");
		buf_adds(b, "<register xmlns='" NS_REGISTER_FEATURE "'/>");
	}
	if (s->flags & SF_AUTHED) {
		buf_adds(b, "<bind xmlns='" NS_BIND "'/>");
		/* RFC 6121 Appendix E / RFC 3921 session: offered as optional. */
		buf_adds(b, "<session xmlns='" NS_SESSION "'><optional/></session>");
		buf_adds(b, s->host->stream_features);
	}
	/* XEP-0478: tell the client our limits. */
	buf_printf(b,
		   "<limits xmlns='" NS_STREAM_LIMITS "'><max-bytes>%zu</max-bytes>"
		   "<idle-seconds>%u</idle-seconds></limits>",
		   (s->flags & SF_AUTHED) ? lim->stanza_bytes : lim->stanza_bytes_preauth,
		   lim->idle_timeout);
	buf_adds(b, "</stream:features>");
}

/* --- limits and timers --- */

static void apply_limits(struct session *s)
{
	const struct limits_conf *l = &s->w->conf.limits;
	struct xs_limits xl = {
	    .max_stanza_bytes = (s->flags & SF_AUTHED) ? l->stanza_bytes : l->stanza_bytes_preauth,
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

/* The timer of a bound session: the parser is parked PARK_MS after the
 * last input (retried PARK_MS later if a stanza is half read), and the
 * session closed after limits.idle_timeout. */
static void arm_idle(struct session *s, bool park_failed)
{
	uint64_t now = loop_now(s->w->loop);
	uint64_t idle_ms = (uint64_t)s->w->conf.limits.idle_timeout * 1000u;
	uint64_t since = now - s->last_read;
	uint64_t due = since >= idle_ms ? 0 : idle_ms - since;
	if (!xmlstream_parked(s->xs)) {
		uint64_t park = park_failed ? PARK_MS : since >= PARK_MS ? 0 : PARK_MS - since;
		if (park < due)
			due = park;
	}
	loop_timer_set(s->w->loop, &s->timer, due + 1);
}

static void session_timer(struct timer *t)
{
	struct session *s = t->ud;
	if (!s->conn)
		return;
	if (s->flags & SF_CLOSING) {
		LOGS(LOG_DEBUG, s->id, "close deadline passed: dropping the connection");
		conn_abort(s->conn);
		return;
	}
	uint64_t now = loop_now(s->w->loop);
	if (!(s->flags & SF_BOUND)) {
		/* Handshake deadline: TLS, SASL and bind must be done by now. */
		LOGS(LOG_INFO, s->id, "handshake timeout from %s", s->conn->peer_ip);
		session_close(s, "connection-timeout", NULL);
		return;
	}
	uint64_t idle_ms = (uint64_t)s->w->conf.limits.idle_timeout * 1000u;
	if (now - s->last_read >= idle_ms) {
		LOGS(LOG_INFO, s->id, "idle timeout");
		session_close(s, "connection-timeout", NULL);
		return;
	}
	bool park_failed = false;
	if (now - s->last_read >= PARK_MS && !xmlstream_parked(s->xs)) {
		park_failed = !xmlstream_park(s->xs);
		if (!park_failed)
			LOGS(LOG_DEBUG, s->id, "idle: XML parser parked");
	}
	/* Reads do not touch the heap; re-arm for what is left. */
	arm_idle(s, park_failed);
}

/* --- per-session rate limits (limits.stanzas_per_second, bytes_per_second) ---
 * Token buckets holding RL_BURST_S seconds' worth, counted in thousandths
 * of a token so slow rates refill smoothly. Past a limit, reading pauses
 * (the rest of the current read is held in s->inbuf) until the bucket is
 * positive again: nothing is dropped, and TCP pushes back on the sender. */
#define RL_BURST_S 5

static uint64_t rl_cap_bytes(const struct limits_conf *l)
{
	uint64_t cap = (uint64_t)l->bytes_per_second * RL_BURST_S;
	if (cap < l->stanza_bytes)
		cap = l->stanza_bytes; /* one stanza of the largest size always passes */
	return cap;
}

static void rl_refill(struct session *s, uint64_t now)
{
	const struct limits_conf *l = &s->w->conf.limits;
	if (l->bytes_per_second)
		bucket_refill(&s->rl_bytes, now, l->bytes_per_second, rl_cap_bytes(l));
	if (l->stanzas_per_second)
		bucket_refill(&s->rl_stanzas, now, l->stanzas_per_second,
			      (uint64_t)l->stanzas_per_second * RL_BURST_S);
}

/* Milliseconds until both buckets are positive again; 0 if they are. */
static uint64_t rl_wait_ms(const struct session *s)
{
	const struct limits_conf *l = &s->w->conf.limits;
	uint64_t ms = l->bytes_per_second ? bucket_wait_ms(&s->rl_bytes, l->bytes_per_second) : 0;
	uint64_t m =
	    l->stanzas_per_second ? bucket_wait_ms(&s->rl_stanzas, l->stanzas_per_second) : 0;
	return m > ms ? m : ms;
}

/* Pauses reading if a bucket is empty. */
static void rl_check(struct session *s)
{
	if (!s->conn || (s->flags & (SF_THROTTLED | SF_CLOSING)))
		return;
	uint64_t ms = rl_wait_ms(s);
	if (!ms)
		return;
	LOGS(LOG_DEBUG, s->id, "over its rate limit: not reading for %llu ms",
	     (unsigned long long)ms);
	s->flags |= SF_THROTTLED;
	conn_pause(s->conn, true);
	if (in_feed && pending_action == PA_NONE)
		request(s, PA_WAIT); /* stop after this element; the rest waits */
	loop_timer_set(s->w->loop, &s->rl_timer, ms);
}

static void rl_fire(struct timer *t)
{
	struct session *s = t->ud;
	s->flags &= ~SF_THROTTLED;
	if (!s->conn || (s->flags & SF_CLOSING))
		return;
	rl_refill(s, loop_now(s->w->loop));
	rl_check(s);
	if (!(s->flags & (SF_THROTTLED | SF_WAIT_STORE)))
		resume_input(s);
}

/* The session stops counting against its address's unauthenticated
 * connections (limits.connections_per_ip). */
static void release_ip_gauge(struct session *s)
{
	if (s->ip_gauge) {
		throttle_gauge_dec(s->ip_gauge);
		s->ip_gauge = 0;
	}
}

/* --- SASL --- */

static void sasl_cbind_of(struct session *s, struct sasl_cbind *cb)
{
	memset(cb, 0, sizeof(*cb));
	if (s->cb_have_exporter) {
		cb->tls_exporter = s->cb_exporter;
		cb->tls_exporter_len = sizeof(s->cb_exporter);
	}
	if (s->cb_endpoint_len) {
		cb->tls_server_end_point = s->cb_endpoint;
		cb->tls_server_end_point_len = s->cb_endpoint_len;
	}
}

static void sasl_failure(struct session *s, const char *cond)
{
	sasl_free(s->sasl);
	s->sasl = NULL;
	struct buf *b = out(s);
	if (b)
		buf_printf(b, "<failure xmlns='" NS_SASL "'><%s/></failure>", cond);
	bool guess = s->sasl_checked;
	s->sasl_checked = false;
	if (guess ? ++s->sasl_failures >= SASL_MAX_FAILURES
		  : ++s->sasl_rejects >= SASL_MAX_REJECTS) {
		/* RFC 6120 §6.4.5: too many retries: policy-violation. */
		session_close(s, "policy-violation", "Too many failed authentication attempts");
	}
}

static void sasl_send_data(struct session *s, const char *elname, const struct buf *data)
{
	struct buf *b = out(s);
	if (!b)
		return;
	buf_printf(b, "<%s xmlns='" NS_SASL "'>", elname);
	if (buf_pending(data)) {
		size_t need = base64_encoded_len(buf_pending(data)) + 1;
		buf_reserve(b, need);
		base64_encode((const unsigned char *)buf_head(data), buf_pending(data),
			      b->data + b->len);
		b->len += need - 1;
	} else if (!strcmp(elname, "success")) {
		/* RFC 6120 §6.4.6: no additional data means an empty element. */
	} else {
		buf_addc(b, '=');
	}
	buf_printf(b, "</%s>", elname);
}

static void sasl_result(struct session *s, enum sasl_rc rc, struct buf *data);

/* Input held back while we waited (store, throttling) is processed now,
 * unless the rate limit still holds it (rl_fire() resumes then). */
static void resume_input(struct session *s)
{
	s->flags &= ~SF_WAIT_STORE;
	if (!s->conn || (s->flags & SF_THROTTLED))
		return;
	conn_pause(s->conn, false);
	if (s->inbuf && buf_pending(s->inbuf)) {
		struct buf *in = s->inbuf;
		s->inbuf = NULL;
		process_input(s, buf_head(in), buf_pending(in));
		buf_free(in);
		free(in);
	}
}

static void pause_input(struct session *s)
{
	s->flags |= SF_WAIT_STORE;
	conn_pause(s->conn, true);
	request(s, PA_WAIT);
}

static void delay_fire(struct timer *t)
{
	struct session *s = t->ud;
	if (s->conn && !(s->flags & SF_CLOSING)) {
		sasl_failure(s, s->delay_cond);
		resume_input(s);
	}
	session_unref(s);
}

/* A failed login: counted per IP and per account (throttle.c). Past the
 * account's limit the answer is held back, which slows a distributed
 * guess at one account without locking its owner out; an unknown account
 * is counted the same way, so the delay tells nothing either. */
static void auth_failed(struct session *s, const char *cond)
{
	if (!s->sasl_checked) {
		/* No password was tried: nothing for the brute-force counters. */
		sasl_failure(s, cond);
		return;
	}
	uint64_t now = loop_now(s->w->loop);
	char ipkey[THROTTLE_IP_KEY];
	throttle_ip_key(&s->conn->peer, ipkey);
	throttle_add(THR_AUTH, ipkey, now);
	const char *user = s->sasl ? sasl_authcid(s->sasl) : NULL;
	unsigned limit = s->w->conf.limits.auth_failures_per_account;
	if (user && limit && s->host) {
		char key[JID_PART_MAX * 2 + 8];
		snprintf(key, sizeof(key), "acct:%s@%s", user, s->host->domain);
		unsigned n = throttle_add(THR_AUTH, key, now);
		if (n > limit) {
			uint64_t ms = 1000u * (n - limit);
			s->delay_cond = cond;
			s->refs++;
			pause_input(s);
			loop_timer_set(s->w->loop, &s->delay, ms > 5000 ? 5000 : ms);
			return;
		}
	}
	sasl_failure(s, cond);
}

static void creds_done(void *ud, int rc, const struct scram_creds *creds)
{
	struct session *s = ud;
	if (s->conn && s->sasl && !(s->flags & SF_CLOSING)) {
		struct buf data = BUF_INIT;
		enum sasl_rc r;
		if (rc == STORE_ERROR) {
			sasl_failure(s, "temporary-auth-failure");
		} else {
			pending_action = PA_NONE;
			r = sasl_supply_creds(s->sasl, rc == STORE_OK ? creds : NULL, &data);
			sasl_result(s, r, &data);
			if (pending_action == PA_RESTART && s->conn) {
				xmlstream_reset(s->xs);
				apply_limits(s);
			}
			pending_action = PA_NONE;
		}
		buf_free(&data);
		if (!timer_armed(&s->delay))
			resume_input(s);
	}
	session_unref(s);
}

static void sasl_result(struct session *s, enum sasl_rc rc, struct buf *data)
{
	switch (rc) {
	case SASL_CONTINUE:
		sasl_send_data(s, "challenge", data);
		return;
	case SASL_NEED_CREDS:
		s->refs++;
		s->sasl_checked = true;
		pause_input(s);
		store_user_get_creds(srv->store, s->w->loop, s->host->domain, sasl_authcid(s->sasl),
				     creds_done, s);
		return;
	case SASL_SUCCESS: {
		const char *authzid = sasl_authzid(s->sasl);
		if (authzid && *authzid) {
			/* RFC 6120 §6.3.8: we only allow the account itself. */
			struct jid az;
			char bare[JID_PART_MAX * 2 + 2];
			snprintf(bare, sizeof(bare), "%s@%s", sasl_authcid(s->sasl),
				 s->host->domain);
			bool parsed = jid_parse(&az, authzid, strlen(authzid), NULL) == 0;
			bool ok = parsed && jid_is_bare(&az) && !strcmp(az.s, bare);
			if (parsed)
				jid_free(&az);
			if (!ok) {
				sasl_failure(s, "invalid-authzid");
				return;
			}
		}
		s->user = strdup(sasl_authcid(s->sasl));
		if (!s->user)
			die_oom();
		LOGS(LOG_INFO, s->id, "authenticated %s@%s with %s from %s", s->user,
		     s->host->domain, sasl_mech_name(s->sasl), s->conn->peer_ip);
		sasl_send_data(s, "success", data);
		sasl_free(s->sasl);
		s->sasl = NULL;
		s->flags |= SF_AUTHED;
		s->flags &= ~SF_OPENED;
		release_ip_gauge(s);
		request(s, PA_RESTART); /* RFC 6120 §6.4.6: stream restart */
		return;
	}
	case SASL_FAIL:
		LOGS(LOG_INFO, s->id, "authentication failed for '%s' from %s: %s",
		     s->sasl && sasl_authcid(s->sasl) ? sasl_authcid(s->sasl) : "",
		     s->conn ? s->conn->peer_ip : "?", sasl_condition(s->sasl));
		auth_failed(s, sasl_condition(s->sasl));
		return;
	}
}

static void handle_sasl(struct session *s, struct xml_el *el, struct arena *a)
{
	if (s->flags & SF_AUTHED) {
		session_close(s, "policy-violation", "Already authenticated");
		return;
	}
	if (!(s->flags & SF_TLS) && s->w->conf.require_encryption) {
		sasl_failure(s, "encryption-required");
		return;
	}
	if (!strcmp(el->name, "abort")) {
		/* RFC 6120 §6.4.4 */
		sasl_failure(s, "aborted");
		return;
	}
	bool is_auth = !strcmp(el->name, "auth");
	if (!is_auth && strcmp(el->name, "response")) {
		session_close(s, "unsupported-stanza-type", NULL);
		return;
	}
	if (is_auth) {
		s->sasl_checked = false;
		if (s->sasl) {
			sasl_free(s->sasl);
			s->sasl = NULL;
		}
		const char *mech = xml_attr(el, "mechanism");
		struct sasl_cbind cb;
		sasl_cbind_of(s, &cb);
		struct sasl_ctx ctx = {
		    .tls = s->flags & SF_TLS,
		    .cb = &cb,
		    .allow_plain = s->w->conf.sasl_plain,
		    .server_secret = srv->secret,
		    .secret_len = sizeof(srv->secret),
		    .fake_iterations = (int)s->w->conf.scram_iterations,
		};
		unsigned ip_limit = s->w->conf.limits.auth_failures_per_ip;
		char ipkey[THROTTLE_IP_KEY];
		throttle_ip_key(&s->conn->peer, ipkey);
		if (ip_limit && throttle_count(THR_AUTH, ipkey, loop_now(s->w->loop)) >= ip_limit) {
			/* RFC 6120 §6.5.12: try again later. */
			LOGS(LOG_INFO, s->id, "too many failed logins from %s: refused for now",
			     s->conn->peer_ip);
			sasl_failure(s, "temporary-auth-failure");
			return;
		}
		s->sasl = mech ? sasl_new(mech, &ctx) : NULL;
		if (!s->sasl) {
			sasl_failure(s, "invalid-mechanism");
			return;
		}
	} else if (!s->sasl) {
		session_close(s, "policy-violation", "SASL response without auth");
		return;
	}
	/* RFC 6120 §6.4.2: base64, "=" for an empty response, nothing for none. */
	const char *text = xml_text(a, el);
	size_t tl = strlen(text);
	if (tl > MAX_SASL_BYTES) {
		sasl_failure(s, "malformed-request");
		return;
	}
	unsigned char *dec = NULL;
	ssize_t dl = 0;
	bool have = tl > 0;
	if (have && !(tl == 1 && text[0] == '=')) {
		dec = arena_alloc(a, tl);
		dl = base64_decode(text, tl, dec, tl);
		if (dl < 0) {
			sasl_failure(s, "incorrect-encoding");
			return;
		}
	}
	struct buf data = BUF_INIT;
	enum sasl_rc rc = sasl_step(s->sasl, have ? (dec ? dec : (const unsigned char *)"") : NULL,
				    (size_t)dl, &data);
	sasl_result(s, rc, &data);
	buf_free(&data);
}

/* --- binding --- */

static void iq_reply_error(struct session *s, struct stanza *st, enum st_err e, const char *text)
{
	if (stanza_make_error(st, e, text)) {
		/* Before binding the stanza has no usable 'to'. */
		xml_set_attr(st->arena, st->el, "to", NULL);
		if (s->conn)
			send_el(s, st->el);
	}
	stanza_free(st);
}

/* --- in-band registration before authentication (XEP-0077 §3.1, XEP-0445) ---
 * Only on an encrypted stream (or where encryption is not required), only
 * when the host's registration mode allows it, at most one account per
 * stream and limits.registrations_per_ip per address and hour. What an
 * unauthenticated peer sends here is answered and never routed. */

static void reg_reply(struct session *s, struct stanza *st)
{
	xml_set_attr(st->arena, st->el, "to", NULL);
	xml_set_attr(st->arena, st->el, "from", s->host->domain);
	if (s->conn)
		send_el(s, st->el);
	stanza_free(st);
}

static void reg_error(struct session *s, struct stanza *st, enum st_err e, const char *text)
{
	if (stanza_make_error(st, e, text)) {
		reg_reply(s, st);
		return;
	}
	stanza_free(st);
}

struct reg_req {
	struct session *s; /* referenced */
	struct stanza *st; /* the request, answered in place */
	char user[JID_PART_MAX + 1];
};

static void reg_created(void *ud, int rc)
{
	struct reg_req *q = ud;
	struct session *s = q->s;
	s->reg_busy = false;
	bool live = s->conn && !(s->flags & SF_CLOSING);
	if (rc == STORE_OK) {
		s->reg_done = true;
		s->reg_invited = false;
		LOGS(LOG_INFO, s->id, "registered %s@%s in band", q->user, s->host->domain);
	}
	if (!live) {
		stanza_free(q->st);
	} else if (rc == STORE_OK) {
		stanza_make_result(q->st);
		reg_reply(s, q->st);
	} else if (rc == STORE_EXISTS) {
		reg_error(s, q->st, SE_CONFLICT, "That username is taken"); /* §3.1 */
	} else if (rc == STORE_INVITE_INVALID) {
		s->reg_invited = false;
		reg_error(s, q->st, SE_NOT_ALLOWED, "The invitation has been used or has expired");
	} else if (rc == ACCOUNT_BUSY) {
		reg_error(s, q->st, SE_RESOURCE_CONSTRAINT,
			  "The server is busy; try again shortly");
	} else {
		reg_error(s, q->st, SE_INTERNAL_SERVER_ERROR, NULL);
	}
	free(q);
	if (live)
		resume_input(s);
	session_unref(s);
}

static void reg_set(struct session *s, struct stanza *st, struct xml_el *q)
{
	const struct worker_conf *wc = &s->w->conf;
	if (xml_child(q, NS_REGISTER, "remove")) {
		/* §3.2: nothing to cancel before authentication. */
		reg_error(s, st, SE_REGISTRATION_REQUIRED, NULL);
		return;
	}
	if (s->reg_done || s->reg_busy) {
		reg_error(s, st, SE_NOT_ALLOWED, "One registration per connection");
		return;
	}
	if (wc->registration == REGISTRATION_INVITE && !s->reg_invited) {
		reg_error(s, st, SE_NOT_ALLOWED, "Registration needs an invitation");
		return;
	}
	struct xml_el *u = xml_child(q, NS_REGISTER, "username");
	struct xml_el *p = xml_child(q, NS_REGISTER, "password");
	const char *ut = u ? xml_text(st->arena, u) : "", *pt = p ? xml_text(st->arena, p) : "";
	if (!*ut || !*pt) {
		reg_error(s, st, SE_NOT_ACCEPTABLE, "A username and a password are required");
		return;
	}
	struct reg_req *r = calloc(1, sizeof(*r));
	if (!r)
		die_oom();
	char pw[ACCOUNT_PASSWORD_MAX + 1];
	struct jid probe;
	size_t pl = strlen(pt);
	if (jid_prep_local(ut, strlen(ut), r->user, sizeof(r->user)) < 0 ||
	    jid_make(&probe, r->user, s->host->domain, NULL, st->arena) < 0) {
		free(r);
		reg_error(s, st, SE_NOT_ACCEPTABLE, "That username is not a valid JID localpart");
		return;
	}
	if (pl > ACCOUNT_PASSWORD_MAX || sasl_prep_password(pt, pl, pw, sizeof(pw)) <= 0) {
		free(r);
		reg_error(s, st, SE_NOT_ACCEPTABLE,
			  "The password must be UTF-8 text without control characters, at most "
			  "1023 bytes");
		return;
	}
	unsigned limit = wc->limits.registrations_per_ip;
	char key[THROTTLE_IP_KEY];
	throttle_ip_key(&s->conn->peer, key);
	/* Counted when tried, not when done: parallel connections must not
	 * all pass the check before the first account is written. */
	if (limit && throttle_add(THR_REGISTER, key, loop_now(s->w->loop)) > limit) {
		free(r);
		OPENSSL_cleanse(pw, sizeof(pw));
		LOGS(LOG_INFO, s->id, "registration refused: %u accounts from %s this hour", limit,
		     s->conn->peer_ip);
		reg_error(s, st, SE_POLICY_VIOLATION,
			  "Too many accounts registered from your address; try again later");
		return;
	}
	r->s = s;
	r->st = st;
	s->refs++;
	s->reg_busy = true;
	/* One registration step at a time: nothing else is read until the
	 * account is written (as for a SASL credential lookup). */
	pause_input(s);
	account_password_write(ACCOUNT_PW_CREATE, s->host->domain, r->user, pw,
			       s->reg_invited ? s->reg_invite : NULL, reg_created, r);
	OPENSSL_cleanse(pw, sizeof(pw));
}

static void reg_token_checked(void *ud, int rc)
{
	struct reg_req *q = ud;
	struct session *s = q->s;
	bool live = s->conn && !(s->flags & SF_CLOSING);
	s->reg_busy = false;
	if (!live) {
		stanza_free(q->st);
	} else if (rc == STORE_OK) {
		s->reg_invited = true;
		stanza_make_result(q->st);
		reg_reply(s, q->st);
	} else {
		s->reg_invited = false;
		reg_error(s, q->st,
			  rc == STORE_INVITE_INVALID ? SE_ITEM_NOT_FOUND : SE_INTERNAL_SERVER_ERROR,
			  rc == STORE_INVITE_INVALID ? "The token is invalid or expired" : NULL);
	}
	free(q);
	if (live)
		resume_input(s);
	session_unref(s);
}

/* XEP-0445 §5: the client presents its invitation before registering. */
static void reg_preauth(struct session *s, struct stanza *st, struct xml_el *pa)
{
	if (s->reg_done || s->reg_busy) {
		reg_error(s, st, SE_NOT_ALLOWED, "One registration per connection");
		return;
	}
	const char *token = xml_attr(pa, "token");
	if (!token || !*token || strlen(token) > 256) {
		reg_error(s, st, SE_BAD_REQUEST, "No token");
		return;
	}
	struct reg_req *r = calloc(1, sizeof(*r));
	if (!r)
		die_oom();
	r->s = s;
	r->st = st;
	s->refs++;
	s->reg_busy = true;
	pause_input(s); /* one store request per stream at a time */
	SHA256((const unsigned char *)token, strlen(token), s->reg_invite);
	store_invite_check(srv->store, s->w->loop, s->host->domain, s->reg_invite,
			   reg_token_checked, r);
}

/* Takes (and answers) a registration IQ before authentication; false if
 * el is something else, for the caller to refuse. Consumes a if true. */
static bool preauth_register(struct session *s, struct xml_el *el, struct arena *a)
{
	if (!reg_allowed(s) || strcmp(el->ns, NS_CLIENT) || strcmp(el->name, "iq"))
		return false;
	struct xml_el *p = xml_first_el(el);
	bool reg = p && !strcmp(p->ns, NS_REGISTER) && !strcmp(p->name, "query");
	bool pars = p && !strcmp(p->ns, NS_PARS) && !strcmp(p->name, "preauth");
	if (!reg && !pars)
		return false;
	int err;
	struct stanza *st = stanza_wrap(el, a, &err);
	if (err != SE_NONE) {
		reg_error(s, st, (enum st_err)err, NULL);
		return true;
	}
	if (pars && st->type == ST_SET) {
		reg_preauth(s, st, p);
	} else if (reg && st->type == ST_GET) {
		/* §3.1: the fields we need. */
		stanza_make_result(st);
		struct xml_el *q = xml_add_child(st->arena, st->el, NS_REGISTER, "query");
		const char *text = s->w->conf.registration == REGISTRATION_INVITE
				       ? "Registration on this server needs an invitation."
				       : "Choose a username and password.";
		xml_add_text(st->arena, xml_add_child(st->arena, q, NS_REGISTER, "instructions"),
			     text, strlen(text));
		xml_add_child(st->arena, q, NS_REGISTER, "username");
		xml_add_child(st->arena, q, NS_REGISTER, "password");
		reg_reply(s, st);
	} else if (reg && st->type == ST_SET) {
		reg_set(s, st, p);
	} else {
		reg_error(s, st, SE_BAD_REQUEST, NULL);
	}
	return true;
}

static void handle_bind(struct session *s, struct stanza *st)
{
	struct xml_el *bind = stanza_payload(st);
	if (s->flags & SF_BOUND) {
		/* RFC 6120 §7.7.2.1: one resource per stream here. */
		iq_reply_error(s, st, SE_NOT_ALLOWED, "Resource already bound");
		return;
	}
	char res[JID_PART_MAX + 1];
	struct xml_el *r = xml_child(bind, NS_BIND, "resource");
	const char *want = r ? xml_text(st->arena, r) : "";
	int rl;
	if (*want) {
		rl = jid_prep_resource(want, strlen(want), res, sizeof(res));
		if (rl < 0) {
			/* RFC 6120 §7.7.2.1 */
			iq_reply_error(s, st, SE_BAD_REQUEST, "Invalid resource");
			return;
		}
	} else {
		/* RFC 6120 §7.6: the server generates one. */
		unsigned char rnd[9];
		if (RAND_bytes(rnd, sizeof(rnd)) != 1)
			die("RAND_bytes");
		base64_encode(rnd, sizeof(rnd), res);
		for (char *p = res; *p; p++)
			if (*p == '/' || *p == '+')
				*p = '-';
	}
	struct jid full;
	if (jid_make(&full, s->user, s->host->domain, res, NULL) < 0) {
		iq_reply_error(s, st, SE_BAD_REQUEST, "Invalid resource");
		return;
	}
	struct reg_target old;
	int rc = registry_bind(&full, s, s->w->conf.conflict == CONFLICT_KICK_OLD, &old);
	if (rc == -1 || rc == -2) {
		jid_free(&full);
		/* RFC 6120 §7.7.2.2 conflict; §7.6.2.1 resource-constraint */
		iq_reply_error(s, st, rc == -1 ? SE_CONFLICT : SE_RESOURCE_CONSTRAINT, NULL);
		return;
	}
	s->jid = full;
	s->flags |= SF_BOUND;
	LOGS(LOG_INFO, s->id, "worker %u bound %s", s->w->idx, s->jid.s);
	if (rc == 1) {
		/* RFC 6120 §7.7.2.2: the old session gets a conflict stream error. */
		kick_session(&old, "conflict", "Replaced by new connection");
	}
	stanza_make_result(st);
	xml_set_attr(st->arena, st->el, "from", NULL);
	struct xml_el *b = xml_add_child(st->arena, st->el, NS_BIND, "bind");
	struct xml_el *j = xml_add_child(st->arena, b, NS_BIND, "jid");
	xml_add_text(st->arena, j, s->jid.s, s->jid.len);
	xml_set_attr(st->arena, st->el, "to", s->jid.s);
	send_el(s, st->el);
	stanza_free(st);
	struct hook_ev bound = {.origin = s, .host = s->host, .dest = DEST_SELF};
	hooks_run(s->host, HP_SESSION_BOUND, &bound);
	/* From now on the idle timeout applies (unless we are closing). */
	if (!(s->flags & SF_CLOSING))
		arm_idle(s, false);
}

/* --- stream callbacks --- */

/* RFC 6120 §4.7.5: "major.minor", each an integer (leading zeros
 * ignored); we accept any 1.x and answer 1.0. */
static bool version_ok(const char *v)
{
	if (!v)
		return false;
	const char *dot = strchr(v, '.');
	if (!dot || dot == v || !dot[1])
		return false;
	for (const char *p = v; *p; p++)
		if (p != dot && (*p < '0' || *p > '9'))
			return false;
	while (*v == '0' && v + 1 < dot)
		v++;
	return dot - v == 1 && *v == '1';
}

static void on_open(void *ud, const struct xml_el *hdr, const char *default_ns)
{
	struct session *s = ud;
	const char *to = xml_attr(hdr, "to");
	const char *from = xml_attr(hdr, "from");
	const char *version = xml_attr(hdr, "version");
	struct host *h = NULL;
	if (to) {
		char dom[JID_PART_MAX + 1];
		int dl = jid_prep_domain(to, strlen(to), dom, sizeof(dom));
		if (dl > 0)
			h = host_find(dom, (size_t)dl);
	}
	if (s->host && h != s->host)
		h = NULL; /* a restarted stream must stay on its host */
	if (h)
		s->host = h;
	/* RFC 6120 §4.7.2: echo a valid 'from' back as 'to'. */
	struct jid fj;
	bool from_ok = from && jid_parse(&fj, from, strlen(from), NULL) == 0;
	send_header(s, from_ok ? fj.s : NULL);
	if (from_ok)
		jid_free(&fj);
	if (strcmp(default_ns, NS_CLIENT)) {
		session_close(s, "invalid-namespace", NULL); /* RFC 6120 §4.9.3.10 */
		return;
	}
	if (!h) {
		session_close(s, "host-unknown", NULL); /* RFC 6120 §4.9.3.6 */
		return;
	}
	if (!version_ok(version)) {
		/* RFC 6120 §4.7.5: no version means pre-1.0, which we do not
		 * speak; a higher minor version gets our 1.0 answer. */
		session_close(s, "unsupported-version", NULL);
		return;
	}
	send_features(s);
}

static void handle_stanza(struct session *s, struct xml_el *el, struct arena *a)
{
	if (strcmp(el->ns, NS_CLIENT) || (strcmp(el->name, "message") &&
					  strcmp(el->name, "presence") && strcmp(el->name, "iq"))) {
		arena_free(a);
		session_close(s, "unsupported-stanza-type", NULL); /* RFC 6120 §4.9.3.22 */
		return;
	}
	int err;
	struct stanza *st = stanza_wrap(el, a, &err);
	/* RFC 6120 §8.1.2.1: the server stamps 'from'; a client may only name
	 * itself (full or bare JID). */
	if (st->from.len && !jid_eq(&st->from, &s->jid)) {
		struct jid bare;
		jid_bare(&bare, &s->jid, st->arena);
		if (!jid_eq(&st->from, &bare)) {
			stanza_free(st);
			session_close(s, "invalid-from", NULL);
			return;
		}
	}
	stanza_set_from(st, &s->jid);
	if (err != SE_NONE) {
		if (stanza_make_error(st, (enum st_err)err, NULL)) {
			stanza_set_to(st, &s->jid);
			xml_set_attr(st->arena, st->el, "from", NULL);
			send_el(s, st->el);
		}
		stanza_free(st);
		return;
	}
	route(st, s);
}

static void handle_element(struct session *s, struct xml_el *el, struct arena *a)
{
	if (s->flags & SF_CLOSING) {
		arena_free(a);
		return;
	}
	if (!(s->flags & SF_OPENED)) {
		arena_free(a);
		return;
	}
	if (!strcmp(el->ns, NS_TLS)) {
		if (strcmp(el->name, "starttls") || (s->flags & (SF_TLS | SF_AUTHED))) {
			arena_free(a);
			session_close(s, "policy-violation", "Unexpected STARTTLS");
			return;
		}
		arena_free(a);
		send_raw(s, "<proceed xmlns='" NS_TLS "'/>");
		/* RFC 6120 §5.4.3.3: nothing after <starttls/> in the clear is
		 * processed; the rest of this read is discarded. */
		request(s, PA_STARTTLS);
		return;
	}
	if (!strcmp(el->ns, NS_SASL)) {
		handle_sasl(s, el, a);
		arena_free(a);
		return;
	}
	if (!(s->flags & SF_AUTHED) && preauth_register(s, el, a))
		return;
	if (!(s->flags & SF_AUTHED)) {
		arena_free(a);
		/* RFC 6120 §6.4: nothing but negotiation before authentication. */
		session_close(s, "not-authorized", NULL);
		return;
	}
	if (!(s->flags & SF_BOUND)) {
		if (strcmp(el->ns, NS_CLIENT) || strcmp(el->name, "iq")) {
			arena_free(a);
			session_close(s, "not-authorized", "Bind a resource first");
			return;
		}
		int err;
		struct stanza *st = stanza_wrap(el, a, &err);
		struct xml_el *p = stanza_payload(st);
		if (err == SE_NONE && st->type == ST_SET && p && !strcmp(p->ns, NS_BIND) &&
		    !strcmp(p->name, "bind")) {
			handle_bind(s, st);
			return;
		}
		if (err == SE_NONE && st->type == ST_SET && p && !strcmp(p->ns, NS_SESSION)) {
			stanza_make_result(st);
			xml_set_attr(st->arena, st->el, "from", NULL);
			send_el(s, st->el);
			stanza_free(st);
			return;
		}
		iq_reply_error(s, st, err == SE_NONE ? SE_NOT_AUTHORIZED : (enum st_err)err, NULL);
		return;
	}
	/* RFC 3921 §3 session establishment: accepted as a no-op. */
	if (!strcmp(el->name, "iq") && !strcmp(el->ns, NS_CLIENT)) {
		struct xml_el *p = xml_first_el(el);
		if (p && !strcmp(p->ns, NS_SESSION) && !strcmp(p->name, "session") &&
		    !xml_attr(el, "to")) {
			int err;
			struct stanza *st = stanza_wrap(el, a, &err);
			if (err == SE_NONE && st->type == ST_SET) {
				stanza_make_result(st);
				stanza_set_to(st, &s->jid);
				send_el(s, st->el);
				stanza_free(st);
				return;
			}
			stanza_free(st);
			return;
		}
	}
	handle_stanza(s, el, a);
}

static void on_element(void *ud, struct xml_el *el, struct arena *a)
{
	struct session *s = ud;
	if (s->w->conf.limits.stanzas_per_second)
		bucket_take(&s->rl_stanzas, 1);
	handle_element(s, el, a);
	rl_check(s);
}

static void on_close(void *ud)
{
	struct session *s = ud;
	/* RFC 6120 §4.4: answer the peer's close with ours. */
	session_close(s, NULL, NULL);
}

static const struct xs_callbacks xs_cb = {on_open, on_element, on_close};

static void process_input(struct session *s, const char *p, size_t n)
{
	/* The parser comes back with this input: park it again PARK_MS after
	 * the last (idle_timeout is at least a minute). */
	if (n && xmlstream_parked(s->xs) && (s->flags & SF_BOUND) && !(s->flags & SF_CLOSING))
		loop_timer_set(s->w->loop, &s->timer, PARK_MS + 1);
	while (n && s->conn && !(s->flags & SF_CLOSING)) {
		pending_action = PA_NONE;
		in_feed = true;
		ssize_t r = xmlstream_feed(s->xs, p, n);
		in_feed = false;
		if (r < 0) {
			enum xs_error e = xmlstream_error(s->xs);
			LOGS(LOG_INFO, s->id, "XML error from %s: %s", s->conn->peer_ip,
			     xmlstream_error_text(s->xs));
			session_close(s, xmlstream_condition(e),
				      e == XS_ERR_POLICY ? xmlstream_error_text(s->xs) : NULL);
			return;
		}
		p += r;
		n -= (size_t)r;
		switch (pending_action) {
		case PA_NONE:
			break;
		case PA_STARTTLS:
			s->flags |= SF_TLS;
			s->flags &= ~SF_OPENED;
			xmlstream_reset(s->xs);
			conn_starttls(s->conn, atomic_load(&s->host->tls));
			return; /* the rest was sent in the clear: discarded */
		case PA_RESTART:
			xmlstream_reset(s->xs);
			apply_limits(s);
			break;
		case PA_WAIT:
			if (n && s->conn) {
				if (!s->inbuf) {
					s->inbuf = calloc(1, sizeof(*s->inbuf));
					if (!s->inbuf)
						die_oom();
				}
				buf_add(s->inbuf, p, n);
			}
			return;
		}
	}
}

/* --- connection callbacks --- */

static void on_data(struct conn *c, const char *p, size_t n)
{
	struct session *s = c->ud;
	s->last_read = loop_now(s->w->loop);
	rl_refill(s, s->last_read);
	if (s->w->conf.limits.bytes_per_second)
		bucket_take(&s->rl_bytes, n);
	if (s->flags & (SF_WAIT_STORE | SF_THROTTLED)) {
		/* Reading is paused, but a read already in progress may land. */
		if (!s->inbuf) {
			s->inbuf = calloc(1, sizeof(*s->inbuf));
			if (!s->inbuf)
				die_oom();
		}
		if (buf_pending(s->inbuf) + n > HELD_INPUT_MAX) {
			session_close(s, "policy-violation", NULL);
			return;
		}
		buf_add(s->inbuf, p, n);
		return;
	}
	process_input(s, p, n);
	rl_check(s);
}

static void on_tls_ready(struct conn *c)
{
	struct session *s = c->ud;
	tls_channel_binding(s);
	if (s->flags & SF_DIRECT_TLS) {
		const unsigned char *alpn;
		unsigned alen;
		SSL_get0_alpn_selected(c->ssl, &alpn, &alen);
		LOGS(LOG_DEBUG, s->id, "direct TLS from %s (ALPN %.*s)", c->peer_ip, (int)alen,
		     alen ? (const char *)alpn : "none");
	}
}

static void session_free(struct session *s)
{
	if ((s->flags & SF_BOUND) && s->host) {
		struct hook_ev ev = {.origin = s, .host = s->host, .dest = DEST_SELF};
		hooks_run(s->host, HP_SESSION_FREE, &ev);
	}
	sasl_free(s->sasl);
	xmlstream_free(s->xs);
	if (s->inbuf) {
		buf_free(s->inbuf);
		free(s->inbuf);
	}
	if (s->jid.s)
		jid_free(&s->jid);
	free(s->user);
	free(s);
}

static void session_unref(struct session *s)
{
	ASSERT(s->refs > 0);
	if (--s->refs == 0)
		session_free(s);
}

static void on_closed(struct conn *c, const char *reason)
{
	struct session *s = c->ud;
	struct worker *w = s->w;
	LOGS(LOG_INFO, s->id, "closed (%s)%s%s", reason ? reason : "", s->jid.s ? " " : "",
	     s->jid.s ? s->jid.s : "");
	s->conn = NULL;
	s->flags |= SF_GONE;
	loop_timer_cancel(w->loop, &s->timer);
	loop_timer_cancel(w->loop, &s->rl_timer);
	release_ip_gauge(s);
	if (timer_armed(&s->delay)) {
		loop_timer_cancel(w->loop, &s->delay);
		s->refs--; /* the delay's reference; the conn's is dropped below */
	}
	session_unregister(s);
	/* Unlink from the worker. */
	if (s->prev)
		s->prev->next = s->next;
	else
		w->sessions = s->next;
	if (s->next)
		s->next->prev = s->prev;
	w->n_sessions--;
	uint32_t slot = (uint32_t)(s->id & 0xffffffu);
	w->slots[slot] = NULL;
	w->free_list[w->n_free++] = slot;
	session_unref(s);
}

static const struct conn_handler c2s_handler = {on_data, on_tls_ready, on_closed};

struct session *worker_session(struct worker *w, uint64_t id)
{
	uint32_t slot = (uint32_t)(id & 0xffffffu);
	if (slot >= w->n_slots || !w->slots[slot] || w->slots[slot]->id != id)
		return NULL;
	return w->slots[slot];
}

static uint64_t alloc_slot(struct worker *w, struct session *s)
{
	uint32_t slot;
	if (w->n_free) {
		slot = w->free_list[--w->n_free];
	} else {
		if (w->n_slots == w->cap_slots) {
			uint32_t cap = w->cap_slots ? w->cap_slots * 2 : 1024;
			ASSERT(cap <= 0x1000000u);
			w->slots = realloc(w->slots, cap * sizeof(*w->slots));
			w->free_list = realloc(w->free_list, cap * sizeof(*w->free_list));
			if (!w->slots || !w->free_list)
				die_oom();
			w->cap_slots = cap;
		}
		slot = w->n_slots++;
	}
	w->slots[slot] = s;
	return (uint64_t)(++w->gen) << 32 | (uint64_t)w->idx << 24 | slot;
}

struct kick_unbound {
	char host[JID_PART_MAX + 1];
	char user[JID_PART_MAX + 1];
	const char *cond, *text; /* static */
};

static void kick_unbound_here(void *arg)
{
	struct kick_unbound *k = arg;
	struct worker *w = worker_current();
	for (struct session *s = w->sessions, *next; s; s = next) {
		next = s->next;
		if ((s->flags & SF_BOUND) || !s->host || strcmp(s->host->domain, k->host))
			continue;
		const char *who = s->user ? s->user : s->sasl ? sasl_authcid(s->sasl) : NULL;
		if (who && !strcmp(who, k->user)) {
			LOGS(LOG_INFO, s->id, "closing an unbound stream of %s@%s: %s", k->user,
			     k->host, k->text);
			session_close(s, k->cond, k->text);
		}
	}
	free(k);
}

void c2s_kick_unbound(const char *host, const char *user, const char *cond, const char *text)
{
	for (unsigned i = 0; i < srv->n_workers; i++) {
		struct kick_unbound *k = calloc(1, sizeof(*k));
		if (!k)
			die_oom();
		snprintf(k->host, sizeof(k->host), "%s", host);
		snprintf(k->user, sizeof(k->user), "%s", user);
		k->cond = cond;
		k->text = text;
		loop_post(srv->workers[i].loop, kick_unbound_here, k);
	}
}

/* A connection over a per-address limit is closed before any TLS or XML
 * work. On the STARTTLS port it gets a stream error first (RFC 6120
 * §4.9.1.1: our header, then the error), written without waiting for the
 * peer's header; on the direct TLS port nothing can be said before a
 * handshake, which is what the limit saves. */
static void refuse(struct worker *w, int fd, bool direct_tls, bool server, const char *ip,
		   const char *why)
{
	static __thread uint64_t last_log;
	uint64_t now = loop_now(w->loop);
	/* A flood must not flood the log too: one line per second and worker. */
	int level = now - last_log >= 1000 || !last_log ? LOG_INFO : LOG_DEBUG;
	if (level == LOG_INFO)
		last_log = now;
	LOG(level, "refused a connection from %s: %s", ip, why);
	if (!direct_tls) {
		char msg[512];
		int n = snprintf(msg, sizeof(msg),
				 "<?xml version='1.0'?><stream:stream xmlns='%s"
				 "' xmlns:stream='" NS_STREAMS "' from='%s' version='1.0'>"
				 "<stream:error><policy-violation xmlns='" NS_STREAM_ERRORS "'/>"
				 "<text xmlns='" NS_STREAM_ERRORS "'>%s</text></stream:error>"
				 "</stream:stream>",
				 server ? NS_SERVER : NS_CLIENT, srv->hosts[0].domain, why);
		if (n > 0 && (size_t)n < sizeof(msg) &&
		    send(fd, msg, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
			/* The peer is gone already: nothing to tell it. */
		}
	}
	close(fd);
}

bool accept_admit(struct worker *w, int fd, const struct sockaddr_storage *peer, bool direct_tls,
		  bool server, uint64_t *gauge)
{
	const struct limits_conf *lim = &w->conf.limits;
	char ipkey[THROTTLE_IP_KEY];
	throttle_ip_key(peer, ipkey);
	*gauge = 0;
	if (lim->connections_per_second_per_ip &&
	    throttle_add(THR_CONNECT, ipkey, loop_now(w->loop)) >
		lim->connections_per_second_per_ip * THROTTLE_CONNECT_WINDOW_S) {
		refuse(w, fd, direct_tls, server, ipkey,
		       "Too many new connections from your address");
		return false;
	}
	if (lim->connections_per_ip &&
	    throttle_gauge_inc(ipkey, lim->connections_per_ip, gauge) == GAUGE_FULL) {
		refuse(w, fd, direct_tls, server, ipkey,
		       "Too many unauthenticated connections from your address");
		return false;
	}
	return true;
}

void c2s_accept(struct worker *w, int fd, const struct sockaddr_storage *peer, bool direct_tls)
{
	const struct limits_conf *lim = &w->conf.limits;
	uint64_t gauge;
	if (!accept_admit(w, fd, peer, direct_tls, false, &gauge))
		return;
	struct session *s = calloc(1, sizeof(*s));
	if (!s)
		die_oom();
	s->w = w;
	s->refs = 1;
	s->id = alloc_slot(w, s);
	s->xs = xmlstream_new(&xs_cb, s, NULL);
	apply_limits(s);
	s->last_read = loop_now(w->loop);
	timer_init(&s->timer, session_timer, s);
	timer_init(&s->delay, delay_fire, s);
	timer_init(&s->rl_timer, rl_fire, s);
	s->ip_gauge = gauge;
	bucket_fill(&s->rl_bytes, s->last_read, rl_cap_bytes(lim));
	bucket_fill(&s->rl_stanzas, s->last_read, (uint64_t)lim->stanzas_per_second * RL_BURST_S);
	if (direct_tls)
		s->flags |= SF_TLS | SF_DIRECT_TLS;
	s->next = w->sessions;
	if (w->sessions)
		w->sessions->prev = s;
	w->sessions = s;
	w->n_sessions++;
	s->conn = conn_accept(w->loop, fd, peer,
			      direct_tls ? atomic_load(&srv->hosts[0].tls) : NULL, &c2s_handler, s);
	if (!s->conn) {
		LOG(LOG_WARN, "could not watch an accepted connection");
		release_ip_gauge(s);
		s->flags |= SF_GONE;
		w->sessions = s->next;
		if (s->next)
			s->next->prev = NULL;
		w->n_sessions--;
		uint32_t slot = (uint32_t)(s->id & 0xffffffu);
		w->slots[slot] = NULL;
		w->free_list[w->n_free++] = slot;
		session_unref(s);
		return;
	}
	LOGS(LOG_DEBUG, s->id, "connection from %s on worker %u%s", s->conn->peer_ip, w->idx,
	     direct_tls ? " (direct TLS)" : "");
	loop_timer_set(w->loop, &s->timer, (uint64_t)w->conf.limits.handshake_timeout * 1000u);
}
