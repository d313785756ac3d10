/* XEP-0030: Service Discovery. The server's disco#info is assembled from
 * the feature lists of all modules; an account's bare JID answers for the
 * account (identity account/registered, XEP-0030 §3.1 and the registry of
 * categories). */
#include "server/module.h"

#include <string.h>

static void add_identity(struct stanza *st, struct xml_el *q, const char *cat, const char *type,
			 const char *name)
{
	struct xml_el *i = xml_add_child(st->arena, q, NS_DISCO_INFO, "identity");
	xml_set_attr(st->arena, i, "category", cat);
	xml_set_attr(st->arena, i, "type", type);
	if (name)
		xml_set_attr(st->arena, i, "name", name);
}

static enum hook_rc disco_info(struct hook_ev *ev)
{
	struct xml_el *req = stanza_payload(ev->st);
	const char *node = xml_attr(req, "node");
	if (node) {
		/* No nodes yet (entity capabilities arrive with the IM issue). */
		ev_error(ev, SE_ITEM_NOT_FOUND, NULL);
		return HOOK_DONE;
	}
	struct stanza *st = ev_result(ev);
	struct xml_el *q = xml_add_child(st->arena, st->el, NS_DISCO_INFO, "query");
	if (ev->dest == DEST_HOST) {
		add_identity(st, q, "server", "im", "Parley");
		host_disco_features(ev->host, st->arena, q);
	} else {
		/* Only the account itself learns about the account here; others
		 * get their answer once presence subscriptions exist. */
		add_identity(st, q, "account", "registered", NULL);
		struct xml_el *f = xml_add_child(st->arena, q, NS_DISCO_INFO, "feature");
		xml_set_attr(st->arena, f, "var", NS_DISCO_INFO);
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
	struct stanza *st = ev_result(ev);
	xml_add_child(st->arena, st->el, NS_DISCO_ITEMS, "query");
	ev_send(ev);
	return HOOK_DONE;
}

static const struct iq_reg disco_iqs[] = {
    {NS_DISCO_INFO, "query", IQ_GET, DEST_HOST | DEST_SELF, disco_info},
    {NS_DISCO_ITEMS, "query", IQ_GET, DEST_HOST | DEST_SELF, disco_items},
    {0},
};

const struct module mod_disco = {
    .name = "disco",
    .features = (const char *const[]){NS_DISCO_INFO, NS_DISCO_ITEMS, NULL},
    .iqs = disco_iqs,
    .xeps = (const struct xep_ref[]){{30, "2.5rc3", "partial"}, {0}},
};
