/* Offline messages (XEP-0160; RFC 6121 §8.5.2.2.1 and §8.5.3.2.1).
 *
 * A chat or normal message for a local account with no available
 * resource is stored durably; the sender hears nothing on success,
 * service-unavailable if the account does not exist (RFC 6121 §8.5.1),
 * resource-constraint (type wait) when the user's quota is full. The
 * router already discards or bounces headline, groupchat and error
 * messages before HP_MESSAGE_OFFLINE (RFC 6121 §8.5.2.1), and XEP-0160 §3
 * says not to store them; we check the type again anyway.
 *
 * When a session of the user sends available presence with non-negative
 * priority and has not had the stored messages yet (XEP-0160 §2 step 5),
 * they are claimed, delivered to that session in order with a XEP-0203
 * <delay/> stamped by this server, and deleted only once queued to it. A
 * session that goes away before delivery gives them back. Stored bytes are
 * parsed again by our own stream parser with fixed limits and checked
 * before anything is sent: the database is not trusted to hold a
 * well-formed stanza for this user. */
#include "server/module.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/arena.h"
#include "core/buf.h"
#include "core/log.h"
#include "server/config.h"
#include "storage/offline_store.h"
#include "xml/xmlstream.h"

#define NS_DELAY      "urn:xmpp:delay"			      /* XEP-0203 */
#define NS_CHATSTATES "http://jabber.org/protocol/chatstates" /* XEP-0085 */
#define NS_HINTS      "urn:xmpp:hints"			      /* XEP-0334 */

/* Per-user quota. The count is the usual one; the byte cap keeps a few
 * maximal stanzas from filling the disk and bounds what one delivery
 * loads into memory. */
static unsigned max_messages = 1000; /* limits.offline_messages */
#define OFFLINE_MAX_BYTES (2u * 1024 * 1024)
/* A claim older than this is abandoned (a crash between claim and delete). */
#define OFFLINE_CLAIM_STALE 60u
#define MAX_RESOURCES	    64

/* SLOT_OFFLINE: per-session state (malloc), freed in HP_SESSION_FREE. */
struct offline_sess {
	bool delivered; /* stored messages were fetched for this session */
};

/* --- storing --- */

/* XEP-0085 (business rules) and XEP-0334 §4 (no-store): a message that
 * carries only chat states, or asks not to be stored, is not worth keeping
 * for later. It is dropped silently, whether the account exists or not, so
 * this answer reveals nothing. */
static bool worth_storing(const struct stanza *st)
{
	bool content = false;
	for (const struct xml_el *e = xml_first_el(st->el); e; e = xml_next_el(e)) {
		if (!strcmp(e->ns, NS_HINTS) && !strcmp(e->name, "no-store"))
			return false;
		if (strcmp(e->ns, NS_CHATSTATES))
			content = true;
	}
	return content;
}

/* As the router answers what nobody takes: the error goes back to the
 * sender and is never answered again (RFC 6120 §8.3.1). */
static void bounce(struct stanza *st, enum st_err e)
{
	if (!stanza_make_error(st, e, NULL) || !st->to.len) {
		stanza_free(st);
		return;
	}
	route(st, NULL);
}

static void put_done(void *ud, int rc)
{
	struct stanza *st = ud;
	if (!worker_origin()) {
		stanza_free(st); /* the drain at exit: nobody left to tell */
		return;
	}
	switch (rc) {
	case STORE_OK:
		stanza_free(st); /* XEP-0160 §2 step 3: stored; the sender hears nothing */
		return;
	case STORE_NOT_FOUND:
		/* RFC 6121 §8.5.1: the same answer as every other message that
		 * cannot be delivered. */
		bounce(st, SE_SERVICE_UNAVAILABLE);
		return;
	case OFFLINE_QUOTA:
		/* RFC 6120 §8.3.3.18: resource-constraint, type wait. */
		bounce(st, SE_RESOURCE_CONSTRAINT);
		return;
	default:
		bounce(st, SE_INTERNAL_SERVER_ERROR);
		return;
	}
}

static enum hook_rc offline_store(struct hook_ev *ev)
{
	struct stanza *st = ev->st;
	/* XEP-0160 §3, RFC 6121 §8.5.2.2.1: only chat and normal. */
	if (st->kind != ST_MESSAGE || (st->type != ST_CHAT && st->type != ST_NORMAL) ||
	    !jid_has_local(&st->to))
		return HOOK_PASS;
	if (!worker_origin())
		return HOOK_PASS; /* the store is closed: the router answers */
	if (!worth_storing(st)) {
		stanza_free(st);
		return HOOK_DONE;
	}
	struct jid_names n;
	jid_names(&st->to, &n);
	struct buf b = BUF_INIT;
	xml_serialize(st->el, NS_CLIENT, &b);
	store_offline_put(server_store(), worker_origin(), host_domain(ev->host), n.user,
			  buf_head(&b), buf_pending(&b), (long long)time(NULL), max_messages,
			  OFFLINE_MAX_BYTES, put_done, st);
	buf_free(&b);
	return HOOK_DONE; /* st is ours until put_done */
}

/* --- loading stored stanzas back --- */

/* The most the c2s configuration can allow, except the stanza size, which
 * the byte quota bounds: a stanza that was accepted and stored always
 * parses again, and a damaged row costs bounded memory. */
static const struct xs_limits reparse_limits = {
    .max_stanza_bytes = OFFLINE_MAX_BYTES,
    .max_depth = 1024,
    .max_attrs = 1024,
    .max_attr_len = OFFLINE_MAX_BYTES,
    .max_text_len = OFFLINE_MAX_BYTES,
    .max_children = 1000000,
    .max_header_bytes = 4096,
};

static const char reparse_header[] =
    "<stream:stream xmlns='" NS_CLIENT "' xmlns:stream='" NS_STREAMS "'>";

struct reparse {
	struct xml_el *el;
	struct arena *arena; /* owned: the first element's */
	unsigned n;	     /* top-level elements seen */
};

static void reparse_element(void *ud, struct xml_el *el, struct arena *a)
{
	struct reparse *r = ud;
	if (r->n++) {
		arena_free(a);
		return;
	}
	r->el = el;
	r->arena = a;
}

static const struct xs_callbacks reparse_cb = {.element = reparse_element};

/* Parses one stored stanza for the account owner (bare or full JID).
 * NULL unless it is exactly one well-formed chat or normal message in
 * jabber:client addressed to owner's account. */
static struct stanza *offline_parse(const char *xml, size_t len, const struct jid *owner)
{
	struct reparse r = {0};
	struct xmlstream *xs = xmlstream_new(&reparse_cb, &r, &reparse_limits);
	size_t hl = sizeof(reparse_header) - 1;
	bool ok = xmlstream_feed(xs, reparse_header, hl) == (ssize_t)hl &&
		  xmlstream_feed(xs, xml, len) == (ssize_t)len;
	xmlstream_free(xs);
	if (!ok || r.n != 1 || strcmp(r.el->ns, NS_CLIENT) || strcmp(r.el->name, "message")) {
		arena_free(r.arena);
		return NULL;
	}
	int err;
	struct stanza *st = stanza_wrap(r.el, r.arena, &err);
	if (err != SE_NONE || (st->type != ST_CHAT && st->type != ST_NORMAL) || !st->to.len ||
	    !jid_bare_eq(&st->to, owner)) {
		stanza_free(st);
		return NULL;
	}
	return st;
}

/* XEP-0203 §3 and XEP-0160 §2 step 5: when and by whom it was held. A
 * delay added on the way by someone else stays; one that claims to be
 * ours but is not is dropped, so the client sees one from this server. */
static void add_delay(struct stanza *st, const char *domain, long long stamp)
{
	for (struct xml_el *e = xml_first_el(st->el), *next; e; e = next) {
		next = xml_next_el(e);
		const char *from = xml_attr(e, "from");
		if (!strcmp(e->ns, NS_DELAY) && !strcmp(e->name, "delay") && from &&
		    !strcmp(from, domain))
			xml_remove(e);
	}
	/* XEP-0082: UTC, no fractions. */
	char ts[32];
	time_t t = (time_t)stamp;
	struct tm tm;
	if (!gmtime_r(&t, &tm) || !strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm))
		memcpy(ts, "1970-01-01T00:00:00Z", sizeof("1970-01-01T00:00:00Z"));
	struct xml_el *d = xml_add_child(st->arena, st->el, NS_DELAY, "delay");
	xml_set_attr(st->arena, d, "from", domain);
	xml_set_attr(st->arena, d, "stamp", ts);
}

/* --- delivery --- */

struct delivery {
	struct resource_ref ref; /* the session to deliver to */
	struct jid bare;	 /* malloc: the account */
	char *host;		 /* owned */
	char *user;		 /* owned */
	struct offline_batch *batch;
};

static void delivery_free(struct delivery *d)
{
	offline_batch_free(d->batch);
	jid_free(&d->bare);
	free(d->host);
	free(d->user);
	free(d);
}

static bool still_bound(const struct delivery *d)
{
	struct resource_ref refs[MAX_RESOURCES];
	size_t n = resources_of(&d->bare, refs, MAX_RESOURCES);
	for (size_t i = 0; i < n && i < MAX_RESOURCES; i++)
		if (refs[i].sess_id == d->ref.sess_id)
			return true;
	return false;
}

/* On the session's worker (session_call). */
static void deliver(struct session *s, void *arg)
{
	struct delivery *d = arg;
	if (!s) {
		/* Gone before delivery: the messages stay, for the next one. */
		store_offline_release(server_store(), worker_origin(), d->host, d->user,
				      d->ref.sess_id, NULL, NULL);
		delivery_free(d);
		return;
	}
	const char *domain = host_domain(session_host(s));
	long long upto = 0;
	for (size_t i = 0; i < d->batch->n; i++) {
		const struct offline_msg *m = &d->batch->msgs[i];
		upto = m->id;
		struct stanza *st = offline_parse(m->xml, m->len, &d->bare);
		if (!st) {
			/* It would fail the same way every time: drop it. */
			LOG(LOG_WARN, "offline: %s@%s: stored message %lld is damaged; dropped",
			    d->user, d->host, m->id);
			continue;
		}
		if (blocking_blocks(&d->bare, &st->from)) {
			/* Stored before its sender was blocked (XEP-0191 §3.3). */
			stanza_free(st);
			continue;
		}
		add_delay(st, domain, m->stamp);
		session_deliver(s, st);
	}
	/* Queued to the session: only now may they go. */
	store_offline_delete_claimed(server_store(), worker_origin(), d->host, d->user,
				     d->ref.sess_id, upto, NULL, NULL);
	delivery_free(d);
}

static void claimed(void *ud, int rc, struct offline_batch *b)
{
	struct delivery *d = ud;
	d->batch = b;
	if (!worker_origin() || rc != STORE_OK || !b->n) {
		/* On a database error the messages stay for the next login. */
		delivery_free(d);
		return;
	}
	/* A session that already left the registry is closing; the claim
	 * expires by itself. */
	if (!still_bound(d)) {
		delivery_free(d);
		return;
	}
	session_call(&d->ref, deliver, d);
}

static void start_delivery(struct session *s)
{
	struct delivery *d = calloc(1, sizeof(*d));
	if (!d)
		die_oom();
	const struct jid *full = session_jid(s);
	if (jid_bare(&d->bare, full, NULL) < 0)
		goto out_free;
	d->host = strdup(host_domain(session_host(s)));
	d->user = strndup(full->s, full->local_len);
	if (!d->host || !d->user)
		die_oom();
	struct resource_ref refs[MAX_RESOURCES];
	size_t n = resources_of(&d->bare, refs, MAX_RESOURCES);
	bool found = false;
	for (size_t i = 0; i < n && i < MAX_RESOURCES && !found; i++) {
		if (refs[i].priv[1] == s) {
			d->ref = refs[i];
			found = true;
		}
	}
	if (!found)
		goto out_free;
	store_offline_claim(server_store(), worker_origin(), d->host, d->user, d->ref.sess_id,
			    OFFLINE_CLAIM_STALE, claimed, d);
	return;

out_free:
	delivery_free(d);
}

static struct offline_sess *sess_state(struct session *s, bool create)
{
	void **slot = session_slot(s, SLOT_OFFLINE);
	if (!*slot && create) {
		*slot = calloc(1, sizeof(struct offline_sess));
		if (!*slot)
			die_oom();
	}
	return *slot;
}

/* Observe only (module.h): never consumes ev->st. */
static enum hook_rc offline_presence(struct hook_ev *ev)
{
	struct session *s = ev->origin;
	if (!s)
		return HOOK_PASS;
	if (ev->st->type != ST_AVAILABLE || session_priority(s) < 0) {
		/* RFC 6121 §4.7.2.3: a negative priority takes no messages for
		 * the bare JID, so offline ones stay too; once it becomes
		 * available again with a usable priority, it looks again. */
		struct offline_sess *os = sess_state(s, false);
		if (os)
			os->delivered = false;
		return HOOK_PASS;
	}
	struct offline_sess *os = sess_state(s, true);
	if (os->delivered)
		return HOOK_PASS;
	os->delivered = true;
	start_delivery(s);
	return HOOK_PASS;
}

static enum hook_rc offline_session_free(struct hook_ev *ev)
{
	void **slot = session_slot(ev->origin, SLOT_OFFLINE);
	free(*slot);
	*slot = NULL;
	return HOOK_PASS;
}

static const struct hook_reg offline_hooks[] = {
    {HP_MESSAGE_OFFLINE, 0, offline_store},
    {HP_PRESENCE_BROADCAST, 0, offline_presence},
    {HP_SESSION_FREE, 0, offline_session_free},
    {.fn = NULL},
};

static int offline_start(struct store *st, const struct config *cfg)
{
	(void)st;
	max_messages = cfg->limits.offline_messages;
	return 0;
}

const struct module mod_offline = {
    .start = offline_start,
    .name = "offline",
    /* XEP-0160 §4: servers that store offline messages say so. */
    .features = (const char *const[]){"msgoffline", NULL},
    .hooks = offline_hooks,
    .xeps = (const struct xep_ref[]){{160, "1.0.1", "complete"}, {203, "2.0", "partial"}, {0}},
};
