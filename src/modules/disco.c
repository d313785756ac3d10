/* XEP-0030: Service Discovery. The server's disco#info is assembled by the
 * core from every module's features and the configured contact addresses
 * (XEP-0157); its entity capabilities (XEP-0115) are offered as a stream
 * feature, and a disco#info to the caps node answers the same.
 *
 * An account's bare JID is answered by the server for the account
 * (XEP-0030 §3.1, identity account/registered): to the account itself,
 * and to contacts with a subscription to its presence (RFC 6121 §4.3.2's
 * rule for who may know about the account); anyone else gets
 * service-unavailable, the answer for an account that does not exist, so
 * discovery reveals nothing to strangers. */
#include "server/module.h"

#include <stdio.h>
#include <string.h>

#include "storage/roster_store.h"
#include "storage/store.h"
#include "xml/xml.h"

static void account_info(struct stanza *st)
{
	struct xml_el *q = xml_add_child(st->arena, st->el, NS_DISCO_INFO, "query");
	struct xml_el *i = xml_add_child(st->arena, q, NS_DISCO_INFO, "identity");
	xml_set_attr(st->arena, i, "category", "account");
	xml_set_attr(st->arena, i, "type", "registered");
	static const char *const features[] = {NS_DISCO_INFO, NS_DISCO_ITEMS};
	for (size_t k = 0; k < 2; k++)
		xml_set_attr(st->arena, xml_add_child(st->arena, q, NS_DISCO_INFO, "feature"),
			     "var", features[k]);
}

static void account_answer(struct stanza *st, bool info)
{
	stanza_make_result(st);
	if (info)
		account_info(st);
	else
		xml_add_child(st->arena, st->el, NS_DISCO_ITEMS, "query");
	route(st, NULL);
}

static void contact_checked(void *ud, int rc, unsigned sub)
{
	struct stanza *st = ud;
	if (rc != STORE_OK) {
		route_error(st, SE_INTERNAL_SERVER_ERROR, NULL);
		return;
	}
	if (!(sub & ROSTER_SUB_FROM)) {
		route_error(st, SE_SERVICE_UNAVAILABLE, NULL);
		return;
	}
	account_answer(st, !strcmp(stanza_payload(st)->ns, NS_DISCO_INFO));
}

/* DEST_BARE: someone else asks about an account. */
static void ask_about_account(struct hook_ev *ev)
{
	struct stanza *st = ev->st;
	ev->st = NULL;
	struct jid_names n;
	char contact[3 * JID_PART_MAX + 3];
	jid_names(&st->to, &n);
	snprintf(contact, sizeof(contact), "%.*s", (int)jid_bare_len(&st->from), st->from.s);
	roster_subscription(server_store(), worker_origin(), n.host, n.user, contact,
			    contact_checked, st);
}

static enum hook_rc disco_info(struct hook_ev *ev)
{
	struct xml_el *req = stanza_payload(ev->st);
	const char *node = xml_attr(req, "node");
	if (ev->dest == DEST_BARE && !node) {
		ask_about_account(ev);
		return HOOK_DONE;
	}
	if (node && (ev->dest != DEST_HOST || strcmp(node, host_caps_node(ev->host)))) {
		ev_error(ev, SE_ITEM_NOT_FOUND, NULL);
		return HOOK_DONE;
	}
	struct stanza *st = ev_result(ev);
	if (ev->dest == DEST_HOST) {
		struct xml_el *q = xml_add_child(st->arena, st->el, NS_DISCO_INFO, "query");
		if (node) /* XEP-0115 §6.2: the node is echoed */
			xml_set_attr(st->arena, q, "node", host_caps_node(ev->host));
		host_disco_info(ev->host, st->arena, q);
	} else {
		account_info(st);
	}
	ev_send(ev);
	return HOOK_DONE;
}

static enum hook_rc disco_items(struct hook_ev *ev)
{
	struct xml_el *req = stanza_payload(ev->st);
	if (xml_attr(req, "node")) {
		ev_error(ev, SE_ITEM_NOT_FOUND, NULL);
		return HOOK_DONE;
	}
	if (ev->dest == DEST_BARE) {
		ask_about_account(ev);
		return HOOK_DONE;
	}
	struct stanza *st = ev_result(ev);
	xml_add_child(st->arena, st->el, NS_DISCO_ITEMS, "query");
	ev_send(ev);
	return HOOK_DONE;
}

static const struct iq_reg disco_iqs[] = {
    {NS_DISCO_INFO, "query", IQ_GET, DEST_HOST | DEST_SELF | DEST_BARE, disco_info},
    {NS_DISCO_ITEMS, "query", IQ_GET, DEST_HOST | DEST_SELF | DEST_BARE, disco_items},
    {0},
};

const struct module mod_disco = {
    .name = "disco",
    .features = (const char *const[]){NS_DISCO_INFO, NS_DISCO_ITEMS, NULL},
    .iqs = disco_iqs,
    .xeps = (const struct xep_ref[]){{30, "2.5rc3", "complete"},
				     {115, "1.6.0", "complete"},
				     {128, "1.0.1", "complete"},
				     {157, "1.1.1", "complete"},
				     {0}},
};
