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

#include <stdio.h>
#include <string.h>

#include "core/buf.h"
#include "server/config.h"
#include "storage/account_store.h"

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

/* The account an IQ is about: its bare 'to' (the router puts the sender's
 * bare JID there when the IQ had none). */
static void account_of(const struct stanza *st, char *user, size_t cap)
{
	size_t n = st->to.local_len < cap ? st->to.local_len : cap - 1;
	memcpy(user, st->to.s, n);
	user[n] = 0;
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

static void vcard_stored(void *ud, int rc)
{
	struct stanza *st = ud;
	if (rc == STORE_OK) {
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
	char user[JID_PART_MAX + 1];
	account_of(ev->st, user, sizeof(user));
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
	char user[JID_PART_MAX + 1];
	account_of(ev->st, user, sizeof(user));
	struct stanza *st = ev->st;
	ev->st = NULL;
	store_vcard_set(server_store(), worker_origin(), host_domain(ev->host), user, buf_head(&b),
			buf_pending(&b), vcard_stored, st);
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

const struct module mod_vcard = {
    .name = "vcard",
    .start = vcard_start,
    .features = (const char *const[]){NS_VCARD, NULL},
    .iqs = vcard_iqs,
    .xeps = (const struct xep_ref[]){{54, "1.2", "complete"}, {0}},
};
