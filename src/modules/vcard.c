/* XEP-0054: vcard-temp (1.2). The server keeps each account's vCard and
 * answers for it: the account sets and gets its own (IQ to its bare JID
 * or without 'to'), anyone may get another local account's (§3.3: the
 * server answers on the account's behalf; vCards are world-readable, §6).
 *
 * No vCard stored: the account itself gets an empty <vCard/> result (one
 * of the two answers §3.1 allows; clients handle it better than an error
 * when they are about to fill in a new vCard); anyone else gets
 * item-not-found, the same whether the account exists or not (§3.3), so
 * the answer does not tell who has an account.
 *
 * Later: XEP-0153 avatar hashes in presence need the SHA-1 of the PHOTO
 * kept when a vCard is stored; nothing here computes it yet. */
#include "server/module.h"

#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/buf.h"
#include "core/log.h"
#include "server/config.h"
#include "storage/account_store.h"
#include "xml/xml.h"
#include "xmpp/base64.h"

#define NS_VCARD "vcard-temp"

/* limits.vcard_bytes, at most what the store reads back (ACCOUNT_XML_MAX). */
static size_t max_bytes = ACCOUNT_XML_MAX;

static int vcard_start(struct store *st, const struct config *cfg)
{
	(void)st;
	max_bytes =
	    cfg->limits.vcard_bytes < ACCOUNT_XML_MAX ? cfg->limits.vcard_bytes : ACCOUNT_XML_MAX;
	return 0;
}

/* --- XEP-0153 (1.1): the avatar hash in presence ---
 * The server knows each account's vCard, so it stamps every available
 * broadcast presence of the account's sessions with
 * <x xmlns='vcard-temp:x:update'><photo>SHA-1 of the image</photo></x>
 * (an empty <photo/> when the vCard has no photo), replacing what the
 * client put there (§4.3 lets a client send <photo/> before it knows).
 * Contacts then fetch the vCard only when the hash changes. Each session
 * reads the hash when it binds (the read is queued before the roster read
 * of its initial presence, so it is known by then for clients that fetch
 * the roster first); a vCard set updates every session of the account. */

#define NS_VCARD_UPDATE "vcard-temp:x:update"

struct avatar {
	unsigned refs; /* the session + a load in flight */
	bool known;    /* the vCard was read */
	bool photo;    /* it has a photo; sha1 is its hash */
	char sha1[2 * SHA_DIGEST_LENGTH + 1];
	struct arena *load; /* where a vCard being read is parsed */
};

static void avatar_unref(struct avatar *a)
{
	if (a && --a->refs == 0)
		free(a);
}

/* §4.1: the hash is of the image bytes: BINVAL decoded. false if the
 * vCard has no usable photo. */
static bool photo_hash(const struct xml_el *vcard, struct arena *ar, char out[41])
{
	struct xml_el *photo = xml_child(vcard, NS_VCARD, "PHOTO");
	struct xml_el *bin = photo ? xml_child(photo, NS_VCARD, "BINVAL") : NULL;
	if (!bin)
		return false;
	const char *t = xml_text(ar, bin);
	size_t n = strlen(t), k = 0;
	char *clean = malloc(n + 1);
	unsigned char *img = malloc(n + 1);
	if (!clean || !img)
		die_oom();
	for (size_t i = 0; i < n; i++) /* vCards fold base64 over lines */
		if (t[i] != ' ' && t[i] != '\t' && t[i] != '\r' && t[i] != '\n')
			clean[k++] = t[i];
	ssize_t len = k ? base64_decode(clean, k, img, n + 1) : -1;
	bool ok = len > 0;
	if (ok) {
		unsigned char md[SHA_DIGEST_LENGTH];
		SHA1(img, (size_t)len, md);
		for (size_t i = 0; i < sizeof(md); i++)
			snprintf(out + 2 * i, 3, "%02x", md[i]);
	}
	free(clean);
	free(img);
	return ok;
}

static void avatar_loaded(void *ud, int rc, struct xml_el *el)
{
	struct avatar *a = ud;
	if (rc == STORE_OK || rc == STORE_NOT_FOUND) {
		a->known = true;
		a->photo = rc == STORE_OK && photo_hash(el, a->load, a->sha1);
	}
	arena_free(a->load);
	a->load = NULL;
	avatar_unref(a);
}

static enum hook_rc avatar_bound(struct hook_ev *ev)
{
	struct session *s = ev->origin;
	if (!s || !worker_origin())
		return HOOK_PASS;
	struct avatar *a = calloc(1, sizeof(*a));
	if (!a)
		die_oom();
	a->refs = 2;
	a->load = arena_new(0);
	*(struct avatar **)session_slot(s, SLOT_AVATAR) = a;
	const struct jid *j = session_jid(s);
	struct jid_names n;
	jid_names(j, &n);
	store_vcard_get(server_store(), worker_origin(), host_domain(ev->host), n.user, a->load,
			avatar_loaded, a);
	return HOOK_PASS;
}

static enum hook_rc avatar_free(struct hook_ev *ev)
{
	struct avatar **slot = (struct avatar **)session_slot(ev->origin, SLOT_AVATAR);
	avatar_unref(*slot);
	*slot = NULL;
	return HOOK_PASS;
}

/* HP_PRESENCE_OUT: stamp available broadcast presence (§3.2, §4.3). */
static enum hook_rc avatar_stamp(struct hook_ev *ev)
{
	struct stanza *st = ev->st;
	struct avatar *a =
	    ev->origin ? *(struct avatar **)session_slot(ev->origin, SLOT_AVATAR) : NULL;
	if (st->type != ST_AVAILABLE || !a)
		return HOOK_PASS;
	struct xml_el *x;
	if (!a->known) {
		/* The store has not answered yet (a presence right after
		 * binding): the client's own hash, if it sent one, is the best
		 * there is; else §3.2's empty element, "not ready to advertise". */
		if (!xml_child(st->el, NS_VCARD_UPDATE, "x"))
			xml_add_child(st->arena, st->el, NS_VCARD_UPDATE, "x");
		return HOOK_PASS;
	}
	while ((x = xml_child(st->el, NS_VCARD_UPDATE, "x")))
		xml_remove(x);
	x = xml_add_child(st->arena, st->el, NS_VCARD_UPDATE, "x");
	struct xml_el *photo = xml_add_child(st->arena, x, NS_VCARD_UPDATE, "photo");
	if (a->photo)
		xml_add_text(st->arena, photo, a->sha1, strlen(a->sha1));
	return HOOK_PASS;
}

/* After a vCard set: every session of the account stamps the new hash. */
struct avatar_news {
	bool photo;
	char sha1[2 * SHA_DIGEST_LENGTH + 1];
};

static void avatar_update(struct session *s, void *arg)
{
	struct avatar_news *n = arg;
	struct avatar *a = s ? *(struct avatar **)session_slot(s, SLOT_AVATAR) : NULL;
	if (a) {
		a->known = true;
		a->photo = n->photo;
		memcpy(a->sha1, n->sha1, sizeof(a->sha1));
	}
	free(n);
}

static void avatar_changed(const struct jid *account, bool photo, const char *sha1)
{
	struct resource_ref refs[64];
	size_t n = resources_of(account, refs, 64);
	for (size_t i = 0; i < n && i < 64; i++) {
		struct avatar_news *m = calloc(1, sizeof(*m));
		if (!m)
			die_oom();
		m->photo = photo;
		if (photo)
			memcpy(m->sha1, sha1, sizeof(m->sha1));
		session_call(&refs[i], avatar_update, m);
	}
}

/* Completions run on the worker, without the session: the answer is
 * routed to the full JID that asked, like any stanza from the server, and
 * simply dropped if that session has gone meanwhile. */
static void vcard_got(void *ud, int rc, struct xml_el *el)
{
	struct stanza *st = ud;
	bool own = jid_bare_eq(&st->to, &st->from);
	switch (rc) {
	case STORE_OK:
		stanza_make_result(st);
		xml_append(st->el, el);
		route(st, NULL);
		return;
	case STORE_NOT_FOUND:
		if (!own) {
			route_error(st, SE_ITEM_NOT_FOUND, NULL); /* §3.3 */
			return;
		}
		stanza_make_result(st);
		xml_add_child(st->arena, st->el, NS_VCARD, "vCard"); /* §3.1 */
		route(st, NULL);
		return;
	default:
		route_error(st, SE_INTERNAL_SERVER_ERROR, NULL);
		return;
	}
}

struct set_req {
	struct stanza *st;
	struct avatar_news news; /* the new vCard's photo */
};

static void vcard_stored(void *ud, int rc)
{
	struct set_req *q = ud;
	struct stanza *st = q->st;
	struct avatar_news news = q->news;
	free(q);
	if (rc == STORE_OK) {
		struct jid bare;
		jid_bare(&bare, &st->to, st->arena);
		avatar_changed(&bare, news.photo, news.sha1);
		stanza_make_result(st);
		route(st, NULL);
	} else if (rc == STORE_NOT_FOUND) {
		route_error(st, SE_ITEM_NOT_FOUND, "The account no longer exists");
	} else {
		route_error(st, SE_INTERNAL_SERVER_ERROR, NULL);
	}
}

static enum hook_rc vcard_get(struct hook_ev *ev)
{
	/* The account the IQ is about: its bare 'to' (the router puts the
	 * sender's bare JID there when the IQ had none). */
	struct jid_names n;
	jid_names(&ev->st->to, &n);
	const char *user = n.user;
	struct stanza *st = ev->st;
	ev->st = NULL; /* ours until the store answers */
	store_vcard_get(server_store(), worker_origin(), host_domain(ev->host), user, st->arena,
			vcard_got, st);
	return HOOK_DONE;
}

static enum hook_rc vcard_set(struct hook_ev *ev)
{
	if (ev->dest != DEST_SELF) {
		/* §3.2: only the account itself updates its vCard. */
		ev_error(ev, SE_FORBIDDEN, NULL);
		return HOOK_DONE;
	}
	struct buf b = BUF_INIT;
	xml_serialize(stanza_payload(ev->st), "", &b);
	if (buf_pending(&b) > max_bytes) {
		/* XEP-0054 names no error for this. not-acceptable (RFC 6120
		 * §8.3.3.11: the request does not meet the server's criteria)
		 * is what XEP-0060 and XEP-0363 use for payloads over a size
		 * limit, and unlike resource-constraint it tells the client
		 * not to retry as is. */
		char text[64];
		snprintf(text, sizeof(text), "vCard larger than %zu bytes", max_bytes);
		buf_free(&b);
		ev_error(ev, SE_NOT_ACCEPTABLE, text);
		return HOOK_DONE;
	}
	/* The account the IQ is about: its bare 'to' (the router puts the
	 * sender's bare JID there when the IQ had none). */
	struct jid_names n;
	jid_names(&ev->st->to, &n);
	const char *user = n.user;
	struct set_req *q = calloc(1, sizeof(*q));
	if (!q)
		die_oom();
	q->st = ev->st;
	ev->st = NULL;
	q->news.photo = photo_hash(stanza_payload(q->st), q->st->arena, q->news.sha1);
	store_vcard_set(server_store(), worker_origin(), host_domain(ev->host), user, buf_head(&b),
			buf_pending(&b), vcard_stored, q);
	buf_free(&b);
	return HOOK_DONE;
}

static enum hook_rc vcard_iq(struct hook_ev *ev)
{
	return ev->st->type == ST_SET ? vcard_set(ev) : vcard_get(ev);
}

static const struct iq_reg vcard_iqs[] = {
    /* A set to another account's bare JID comes here too, to be refused
     * with forbidden (§3.2) rather than service-unavailable. */
    {NS_VCARD, "vCard", IQ_GET | IQ_SET, DEST_SELF | DEST_BARE, vcard_iq},
    {0},
};

static const struct hook_reg vcard_hooks[] = {
    {HP_SESSION_BOUND, 0, avatar_bound},
    {HP_SESSION_FREE, 0, avatar_free},
    {HP_PRESENCE_OUT, 0, avatar_stamp},
    {.fn = NULL},
};

const struct module mod_vcard = {
    .hooks = vcard_hooks,
    .name = "vcard",
    .start = vcard_start,
    .features = (const char *const[]){NS_VCARD, NULL},
    .iqs = vcard_iqs,
    .xeps = (const struct xep_ref[]){{54, "1.2", "complete"}, {153, "1.1", "complete"}, {0}},
};
