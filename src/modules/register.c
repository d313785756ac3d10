/* XEP-0077: In-Band Registration (2.4), the part for an authenticated
 * account: what is registered (§3.1 "already registered"), password
 * change (§3.3) and account removal (§3.2). Registration itself happens
 * before authentication, in c2s.c.
 *
 * Removal (§3.2 and RFC 6121 §3.2, §3.3): every presence subscription in
 * the account's roster is cancelled toward the contact first (unsubscribe
 * where the account was subscribed or asking, unsubscribed where the
 * contact was, or had asked), then the account and everything stored for
 * it is deleted, the request is answered, and every session of the
 * account is closed with a not-authorized stream error.
 *
 * Choices where the XEP leaves room:
 * - Password change only for the account itself, with <username/> naming
 *   it; an empty password is refused (bad-request), never stored (§3.3).
 *   At most PW_CHANGES_PER_MINUTE per account (policy-violation), since
 *   each change costs a key derivation.
 * - No data forms: the legacy fields are all we ask for. */
#include "server/module.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "storage/roster_store.h"
#include "storage/store.h"
#include "xml/xml.h"
#include "xmpp/sasl/sasl.h"

#define NS_REGISTER	      "jabber:iq:register"
#define PW_CHANGES_PER_MINUTE 5

static void answer(void *ud, int rc)
{
	struct stanza *st = ud;
	if (rc == STORE_OK) {
		stanza_make_result(st);
		route(st, NULL);
	} else if (rc == STORE_NOT_FOUND) {
		route_error(st, SE_REGISTRATION_REQUIRED, NULL);
	} else if (rc == ACCOUNT_BUSY) {
		route_error(st, SE_RESOURCE_CONSTRAINT, "The server is busy; try again shortly");
	} else {
		route_error(st, SE_INTERNAL_SERVER_ERROR, NULL);
	}
}

/* --- removal --- */

struct removal {
	struct stanza *st; /* the request */
	struct host *host;
	struct jid bare; /* in st's arena */
	struct jid_names n;
};

static void send_sub(const char *type, const struct jid *from, const char *to)
{
	struct stanza *st = stanza_new(ST_PRESENCE, type);
	struct jid t;
	if (jid_parse(&t, to, strlen(to), st->arena) < 0) {
		stanza_free(st);
		return;
	}
	stanza_set_from(st, from);
	stanza_set_to(st, &t);
	st->unfiltered = true; /* blocked contacts learn it too (RFC 6121 §3.2, §3.3) */
	route(st, NULL);
}

static void removed(void *ud, int rc)
{
	struct removal *r = ud;
	if (rc != STORE_OK) {
		answer(r->st, rc);
		free(r);
		return;
	}
	LOG(LOG_INFO, "account %s removed in band", r->bare.s);
	account_removed(r->host, &r->bare);
	struct jid bare = r->bare; /* the arena goes with the answer */
	char copy[3 * JID_PART_MAX + 3];
	snprintf(copy, sizeof(copy), "%s", bare.s);
	bare.s = copy;
	answer(r->st, STORE_OK);
	/* §3.2: "terminate all active sessions"; posted, so the answer
	 * queued above leaves first. */
	account_kick(&bare, "not-authorized", "Account removed");
	free(r);
}

static void remove_roster_read(void *ud, int rc, const struct roster_view *v)
{
	struct removal *r = ud;
	if (rc != STORE_OK) {
		route_error(r->st, SE_INTERNAL_SERVER_ERROR, NULL);
		free(r);
		return;
	}
	/* RFC 6121 §3.3.2 / §3.2.2: each contact learns the subscription is
	 * gone, as if the user had cancelled it by hand. */
	for (size_t i = 0; i < v->n_items; i++) {
		const struct roster_item *it = &v->items[i];
		if ((it->sub & ROSTER_SUB_TO) || it->ask)
			send_sub("unsubscribe", &r->bare, it->jid);
		if (it->sub & ROSTER_SUB_FROM)
			send_sub("unsubscribed", &r->bare, it->jid);
	}
	for (size_t i = 0; i < v->n_pending; i++)
		send_sub("unsubscribed", &r->bare, v->pending[i].jid);
	/* Queued after the contacts' updates those stanzas started. */
	store_user_delete(server_store(), worker_origin(), r->n.host, r->n.user, removed, r);
}

static void start_removal(struct hook_ev *ev)
{
	struct removal *r = calloc(1, sizeof(*r));
	if (!r)
		die_oom();
	r->st = ev->st;
	ev->st = NULL;
	r->host = ev->host;
	jid_bare(&r->bare, &r->st->from, r->st->arena);
	jid_names(&r->bare, &r->n);
	roster_read(server_store(), worker_origin(), r->n.host, r->n.user, NULL,
		    ROSTER_READ_PENDING, remove_roster_read, r);
}

/* --- the IQ --- */

static enum hook_rc register_iq(struct hook_ev *ev)
{
	struct stanza *st = ev->st;
	struct xml_el *q = stanza_payload(st);
	if (!ev->origin) {
		ev_error(ev, SE_FORBIDDEN, NULL);
		return HOOK_DONE;
	}
	struct jid bare;
	jid_bare(&bare, &st->from, st->arena);
	struct jid_names n;
	jid_names(&bare, &n);
	if (st->type == ST_GET) {
		/* §3.1: an account that asks is registered already. */
		struct stanza *res = ev_result(ev);
		struct xml_el *rq = xml_add_child(res->arena, res->el, NS_REGISTER, "query");
		xml_add_child(res->arena, rq, NS_REGISTER, "registered");
		xml_add_text(res->arena, xml_add_child(res->arena, rq, NS_REGISTER, "username"),
			     n.user, strlen(n.user));
		ev_send(ev);
		return HOOK_DONE;
	}
	if (xml_child(q, NS_REGISTER, "remove")) {
		if (xml_count_children(q) != 1) {
			ev_error(ev, SE_BAD_REQUEST, "<remove/> must be alone"); /* §3.2 */
			return HOOK_DONE;
		}
		start_removal(ev);
		return HOOK_DONE;
	}
	struct xml_el *u = xml_child(q, NS_REGISTER, "username");
	struct xml_el *p = xml_child(q, NS_REGISTER, "password");
	const char *ut = u ? xml_text(st->arena, u) : "", *pt = p ? xml_text(st->arena, p) : "";
	if (!*ut || !*pt) {
		ev_error(ev, SE_BAD_REQUEST,
			 "A username and a new password are required"); /* §3.3 */
		return HOOK_DONE;
	}
	char prepped[JID_PART_MAX + 1];
	if (jid_prep_local(ut, strlen(ut), prepped, sizeof(prepped)) < 0 ||
	    strcmp(prepped, n.user)) {
		ev_error(ev, SE_NOT_ALLOWED, "Only the account's own password can be changed");
		return HOOK_DONE;
	}
	char pw[ACCOUNT_PASSWORD_MAX + 1];
	size_t pl = strlen(pt);
	if (pl > ACCOUNT_PASSWORD_MAX || sasl_prep_password(pt, pl, pw, sizeof(pw)) <= 0) {
		ev_error(ev, SE_NOT_ACCEPTABLE,
			 "The password must be UTF-8 text without control characters, at most "
			 "1023 bytes");
		return HOOK_DONE;
	}
	if (!account_rate(&bare, "pwchange", PW_CHANGES_PER_MINUTE)) {
		OPENSSL_cleanse(pw, sizeof(pw));
		ev_error(ev, SE_POLICY_VIOLATION, "Too many password changes; try again later");
		return HOOK_DONE;
	}
	ev->st = NULL;
	account_password_write(ACCOUNT_PW_CHANGE, n.host, n.user, pw, NULL, answer, st);
	OPENSSL_cleanse(pw, sizeof(pw));
	LOG(LOG_INFO, "account %s: password change asked in band", bare.s);
	return HOOK_DONE;
}

static const struct iq_reg register_iqs[] = {
    {NS_REGISTER, "query", IQ_GET | IQ_SET, DEST_HOST | DEST_SELF, register_iq},
    {0},
};

const struct module mod_register = {
    .name = "register",
    .features = (const char *const[]){NS_REGISTER, NULL},
    .iqs = register_iqs,
    .xeps = (const struct xep_ref[]){{77, "2.4", "complete"}, {445, "0.2.0", "complete"}, {0}},
};
