/* XEP-0012: Last Activity (2.0).
 *
 * - To the server (§5): how long it has been up, in seconds.
 * - To an account's bare JID (§3): 0 if it has an available resource,
 *   otherwise the seconds since it last logged out, with the status text
 *   of its last unavailable presence. Only those allowed to see the
 *   account's presence may ask (§3, §8): the account itself and contacts
 *   with a subscription to it ('from' or 'both' in its roster, RFC 6121
 *   §4.3.2); others get forbidden.
 * - To a full JID (§4): the router delivers it to that client.
 *
 * What is recorded: on every unavailable broadcast presence of a session
 * (sent by the client, or the one the core emits when an available
 * session ends) the time and its <status/>; when a session ends (bound,
 * whether it was ever available or not) the time again, keeping the text.
 * The last of these is the account's "last logout". */
#include "server/module.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "storage/account_store.h"
#include "storage/roster_store.h"

#define NS_LAST "jabber:iq:last"

/* When the server started, for §5. Modules have no start hook (yet), so
 * this is taken when the program is loaded, a few milliseconds before the
 * server accepts anything. */
static struct timespec started;

__attribute__((constructor)) static void last_init(void)
{
	clock_gettime(CLOCK_MONOTONIC, &started);
}

static void set_seconds(struct stanza *st, struct xml_el *q, long long secs)
{
	char v[24];
	snprintf(v, sizeof(v), "%lld", secs < 0 ? 0 : secs);
	xml_set_attr(st->arena, q, "seconds", v);
}

static void answer_last(void *ud, int rc, long long when, const char *status)
{
	struct stanza *st = ud;
	struct hook_ev ev = {.st = st}; /* answered without the session */
	if (rc == STORE_NOT_FOUND) {
		/* The account has never logged out. */
		ev_error(&ev, SE_ITEM_NOT_FOUND, NULL);
		return;
	}
	if (rc != STORE_OK) {
		ev_error(&ev, SE_INTERNAL_SERVER_ERROR, NULL);
		return;
	}
	stanza_make_result(st);
	struct xml_el *q = xml_add_child(st->arena, st->el, NS_LAST, "query");
	set_seconds(st, q, (long long)time(NULL) - when);
	if (*status)
		xml_add_text(st->arena, q, status, strlen(status));
	ev_send(&ev);
}

/* §3: the account's own answer (consumes st). */
static void answer_account(struct stanza *st)
{
	/* An account with an available resource was active just now. */
	struct resource_ref refs[64];
	size_t n = resources_of(&st->to, refs, 64);
	for (size_t i = 0; i < n && i < 64; i++) {
		if (refs[i].available) {
			stanza_make_result(st);
			struct xml_el *q = xml_add_child(st->arena, st->el, NS_LAST, "query");
			set_seconds(st, q, 0);
			route(st, NULL);
			return;
		}
	}
	struct jid_names names;
	jid_names(&st->to, &names);
	store_last_get(server_store(), worker_origin(), names.host, names.user, answer_last, st);
}

static void contact_checked(void *ud, int rc, unsigned sub)
{
	struct stanza *st = ud;
	if (rc != STORE_OK) {
		route_error(st, SE_INTERNAL_SERVER_ERROR, NULL);
		return;
	}
	if (!(sub & ROSTER_SUB_FROM)) {
		route_error(st, SE_FORBIDDEN, NULL); /* §3 */
		return;
	}
	answer_account(st);
}

static enum hook_rc last_query(struct hook_ev *ev)
{
	if (ev->dest == DEST_HOST) {
		struct timespec now;
		clock_gettime(CLOCK_MONOTONIC, &now);
		struct stanza *st = ev_result(ev);
		struct xml_el *q = xml_add_child(st->arena, st->el, NS_LAST, "query");
		set_seconds(st, q, (long long)(now.tv_sec - started.tv_sec));
		ev_send(ev);
		return HOOK_DONE;
	}
	if (ev->dest == DEST_BARE) {
		struct stanza *st = ev->st;
		ev->st = NULL; /* ours until the store answers */
		struct jid_names n;
		char contact[3 * JID_PART_MAX + 3];
		jid_names(&st->to, &n);
		snprintf(contact, sizeof(contact), "%.*s", (int)jid_bare_len(&st->from),
			 st->from.s);
		roster_subscription(server_store(), worker_origin(), n.host, n.user, contact,
				    contact_checked, st);
		return HOOK_DONE;
	}
	struct stanza *st = ev->st;
	ev->st = NULL;
	answer_account(st);
	return HOOK_DONE;
}

static void record(struct session *s, const char *status)
{
	struct jid_names n;
	jid_names(session_jid(s), &n);
	store_last_set(server_store(), worker_origin(), n.host, n.user, (long long)time(NULL),
		       status, NULL, NULL);
}

/* Observe only: ev->st stays the core's. */
static enum hook_rc last_presence(struct hook_ev *ev)
{
	struct stanza *st = ev->st;
	if (st->type != ST_UNAVAILABLE || !ev->origin)
		return HOOK_PASS;
	struct xml_el *status = xml_child(st->el, st->el->ns, "status");
	record(ev->origin, status ? xml_text(st->arena, status) : "");
	return HOOK_PASS;
}

static enum hook_rc last_session_end(struct hook_ev *ev)
{
	if (ev->origin && jid_has_local(session_jid(ev->origin)))
		record(ev->origin, NULL);
	return HOOK_PASS;
}

static const struct iq_reg last_iqs[] = {
    {NS_LAST, "query", IQ_GET, DEST_HOST | DEST_SELF | DEST_BARE, last_query},
    {0},
};

static const struct hook_reg last_hooks[] = {
    {HP_PRESENCE_BROADCAST, 0, last_presence},
    {HP_SESSION_FREE, 0, last_session_end},
    {.fn = NULL},
};

const struct module mod_last = {
    .name = "last",
    .features = (const char *const[]){NS_LAST, NULL}, /* §6 */
    .iqs = last_iqs,
    .hooks = last_hooks,
    .xeps = (const struct xep_ref[]){{12, "2.0", "complete"}, {0}},
};
