/* XEP-0049: Private XML Storage (1.2). An account stores elements on its
 * server, one per namespace, and reads them back; nobody else can see
 * them (§4: only the account's own resources).
 *
 * Choices where the XEP leaves room:
 * - To another account: forbidden, the condition §2.3 prefers.
 * - <query/> without a child element: bad-request (the "Bad Format" of §3,
 *   as XEP-0086 maps it). More than one child: bad-request as well. The
 *   schema allows one element per query, and §2.3 forbids asking for more
 *   than one namespace; we also refuse a set with several elements (which
 *   §2.3 allows when they share a namespace) rather than define what a
 *   get would return for them. Known gap; no client we know sends it.
 * - Reserved namespaces (§2.3: 'jabber:...', 'http://jabber.org/...',
 *   'vcard-temp'), plus the stream and core namespaces of RFC 6120 and
 *   elements without a namespace: not-acceptable. Refusing them is
 *   OPTIONAL in the XEP; we do, so a client cannot make the server store
 *   (and later emit) what looks like protocol.
 * - Size: each stored element at most ACCOUNT_XML_MAX serialized bytes;
 *   larger: not-acceptable, as in vcard.c. */
#include "server/module.h"

#include <stdio.h>
#include <string.h>

#include "core/buf.h"
#include "storage/account_store.h"

#define NS_PRIVATE "jabber:iq:private"

static bool ns_reserved(const char *ns)
{
	static const char *const prefixes[] = {
	    "jabber:",			    /* jabber:client, jabber:server, jabber:iq:* ... */
	    "http://jabber.org/",	    /* XEP-0049 §2.3 */
	    "http://etherx.jabber.org/",    /* the stream namespace */
	    "urn:ietf:params:xml:ns:xmpp-", /* RFC 6120: stanzas, streams, TLS, SASL, bind */
	};
	if (!*ns || !strcmp(ns, "vcard-temp"))
		return true;
	for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
		if (!strncmp(ns, prefixes[i], strlen(prefixes[i])))
			return true;
	return false;
}

static void private_got(void *ud, int rc, struct xml_el *el)
{
	struct stanza *st = ud;
	if (rc != STORE_OK && rc != STORE_NOT_FOUND) {
		route_error(st, SE_INTERNAL_SERVER_ERROR, NULL);
		return;
	}
	/* The asked-for element's name and namespace, before the result
	 * clears the payload (they live in the arena, which stays). */
	struct xml_el *asked = xml_first_el(stanza_payload(st));
	const char *ns = asked->ns, *name = asked->name;
	stanza_make_result(st);
	struct xml_el *q = xml_add_child(st->arena, st->el, NS_PRIVATE, "query");
	if (rc == STORE_OK)
		xml_append(q, el);
	else
		xml_add_child(st->arena, q, ns, name); /* nothing stored: the empty element */
	route(st, NULL);
}

static void private_stored(void *ud, int rc)
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

static enum hook_rc private_iq(struct hook_ev *ev)
{
	if (ev->dest != DEST_SELF) {
		ev_error(ev, SE_FORBIDDEN, NULL); /* §2.3, §3 */
		return HOOK_DONE;
	}
	struct xml_el *query = stanza_payload(ev->st);
	struct xml_el *child = xml_first_el(query);
	if (!child || xml_next_el(child)) {
		ev_error(ev, SE_BAD_REQUEST, child ? "One element per query" : "No element given");
		return HOOK_DONE;
	}
	if (ns_reserved(child->ns)) {
		ev_error(ev, SE_NOT_ACCEPTABLE, "Reserved namespace");
		return HOOK_DONE;
	}
	struct jid_names n;
	jid_names(&ev->st->to, &n);
	const char *user = n.user;
	const char *host = host_domain(ev->host);

	if (ev->st->type == ST_GET) {
		struct stanza *st = ev->st;
		ev->st = NULL; /* ours until the store answers */
		store_private_get(server_store(), worker_origin(), host, user, child->ns, st->arena,
				  private_got, st);
		return HOOK_DONE;
	}
	struct buf b = BUF_INIT;
	xml_serialize(child, "", &b);
	if (buf_pending(&b) > ACCOUNT_XML_MAX) {
		char text[64];
		snprintf(text, sizeof(text), "Element larger than %d bytes", ACCOUNT_XML_MAX);
		buf_free(&b);
		ev_error(ev, SE_NOT_ACCEPTABLE, text);
		return HOOK_DONE;
	}
	struct stanza *st = ev->st;
	ev->st = NULL;
	store_private_set(server_store(), worker_origin(), host, user, child->ns, buf_head(&b),
			  buf_pending(&b), private_stored, st);
	buf_free(&b);
	return HOOK_DONE;
}

static const struct iq_reg private_iqs[] = {
    /* Another account's bare JID comes here to be refused with forbidden. */
    {NS_PRIVATE, "query", IQ_GET | IQ_SET, DEST_SELF | DEST_BARE, private_iq},
    {0},
};

const struct module mod_private = {
    .name = "private",
    /* XEP-0049 defines no disco feature; servers commonly announce the
     * namespace, and some clients look for it before using it. */
    .features = (const char *const[]){NS_PRIVATE, NULL},
    .iqs = private_iqs,
    .xeps = (const struct xep_ref[]){{49, "1.2", "partial"}, {0}},
};
