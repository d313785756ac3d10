/* Module registration (DESIGN §5): the core reads each module's const
 * table and builds, per host, the IQ handler table, the hook lists in
 * priority order and the disco#info feature list. The tables are built
 * before the workers start and are read-only afterwards, so workers read
 * them without locks. */
#include "server/server.h"

#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/buf.h"
#include "core/log.h"
#include "xml/xml.h"
#include "xmpp/base64.h"

struct iq_entry {
	struct iq_entry *next;
	const char *ns, *name;
	const struct iq_reg *reg;
};

static size_t iq_hash(const char *ns, const char *name, size_t buckets)
{
	size_t h = 5381;
	for (const char *p = ns; *p; p++)
		h = h * 33 + (unsigned char)*p;
	for (const char *p = name; *p; p++)
		h = h * 33 + (unsigned char)*p;
	return h % buckets;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The server's disco#info (XEP-0030): one identity, every module's
 * features, and the XEP-0157 contact addresses as a XEP-0128 form. */
#define SERVER_CATEGORY "server"
#define SERVER_TYPE	"im"
#define SERVER_NAME	"Parley"
#define NS_CAPS		"http://jabber.org/protocol/caps"
#define CAPS_NODE	"urn:x-parley:server"
#define NS_DATA		"jabber:x:data"
#define SERVERINFO	"http://jabber.org/network/serverinfo"

static bool has_contacts(const struct config *c)
{
	for (int k = 0; k < CONTACT_KINDS; k++)
		if (c->n_contact[k])
			return true;
	return false;
}

static int cmp_strp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* XEP-0115 §5.1: the verification string of what host_disco_info()
 * answers, hashed with SHA-1 and base64-encoded. Features are already
 * sorted; contact_fields[] is in byte order, and each field's values are
 * sorted here. */
static void host_caps_compute(struct host *h)
{
	struct buf b = BUF_INIT;
	buf_adds(&b, SERVER_CATEGORY "/" SERVER_TYPE "//" SERVER_NAME "<");
	for (size_t i = 0; i < h->n_features; i++) {
		buf_adds(&b, h->features[i]);
		buf_addc(&b, '<');
	}
	const struct config *c = &srv->cfg;
	if (has_contacts(c)) {
		buf_adds(&b, SERVERINFO "<");
		for (int k = 0; k < CONTACT_KINDS; k++) {
			if (!c->n_contact[k])
				continue;
			buf_adds(&b, contact_fields[k]);
			buf_addc(&b, '<');
			char **v = malloc(c->n_contact[k] * sizeof(*v));
			if (!v)
				die_oom();
			memcpy(v, c->contact[k], c->n_contact[k] * sizeof(*v));
			qsort(v, c->n_contact[k], sizeof(*v), cmp_strp);
			for (size_t i = 0; i < c->n_contact[k]; i++) {
				buf_adds(&b, v[i]);
				buf_addc(&b, '<');
			}
			free(v);
		}
	}
	unsigned char md[SHA_DIGEST_LENGTH];
	SHA1((const unsigned char *)buf_head(&b), buf_pending(&b), md);
	buf_free(&b);
	base64_encode(md, sizeof(md), h->caps_ver);
	snprintf(h->caps_node, sizeof(h->caps_node), CAPS_NODE "#%s", h->caps_ver);
}

void host_disco_info(const struct host *h, struct arena *a, struct xml_el *query)
{
	struct xml_el *id = xml_add_child(a, query, query->ns, "identity");
	xml_set_attr(a, id, "category", SERVER_CATEGORY);
	xml_set_attr(a, id, "type", SERVER_TYPE);
	xml_set_attr(a, id, "name", SERVER_NAME);
	host_disco_features(h, a, query);
	const struct config *c = &srv->cfg;
	if (!has_contacts(c))
		return;
	/* XEP-0157 §3, in a XEP-0128 extension form. */
	struct xml_el *x = xml_add_child(a, query, NS_DATA, "x");
	xml_set_attr(a, x, "type", "result");
	struct xml_el *f = xml_add_child(a, x, NS_DATA, "field");
	xml_set_attr(a, f, "var", "FORM_TYPE");
	xml_set_attr(a, f, "type", "hidden");
	xml_add_text(a, xml_add_child(a, f, NS_DATA, "value"), SERVERINFO, strlen(SERVERINFO));
	for (int k = 0; k < CONTACT_KINDS; k++) {
		if (!c->n_contact[k])
			continue;
		f = xml_add_child(a, x, NS_DATA, "field");
		xml_set_attr(a, f, "var", contact_fields[k]);
		for (size_t i = 0; i < c->n_contact[k]; i++)
			xml_add_text(a, xml_add_child(a, f, NS_DATA, "value"), c->contact[k][i],
				     strlen(c->contact[k][i]));
	}
}

const char *host_caps_node(const struct host *h)
{
	return h->caps_node;
}

void modules_register(struct host *h)
{
	h->iq_buckets = 64;
	h->iq_table = calloc(h->iq_buckets, sizeof(*h->iq_table));
	if (!h->iq_table)
		die_oom();
	size_t nf = 0, capf = 16;
	h->features = malloc(capf * sizeof(*h->features));
	if (!h->features)
		die_oom();
	for (const struct module *const *mp = parley_modules; *mp; mp++) {
		const struct module *m = *mp;
		for (const struct iq_reg *r = m->iqs; r && r->fn; r++) {
			struct iq_entry *e = calloc(1, sizeof(*e));
			if (!e)
				die_oom();
			e->ns = r->ns;
			e->name = r->name;
			e->reg = r;
			size_t k = iq_hash(r->ns, r->name, h->iq_buckets);
			e->next = h->iq_table[k];
			h->iq_table[k] = e;
		}
		for (const struct hook_reg *r = m->hooks; r && r->fn; r++) {
			size_t n = h->n_hooks[r->point];
			h->hooks[r->point] =
			    realloc(h->hooks[r->point], (n + 2) * sizeof(*h->hooks[r->point]));
			if (!h->hooks[r->point])
				die_oom();
			/* insertion by priority, highest first; stable for equal ones */
			size_t i = n;
			while (i > 0 && h->hooks[r->point][i - 1].reg->prio < r->prio) {
				h->hooks[r->point][i] = h->hooks[r->point][i - 1];
				i--;
			}
			h->hooks[r->point][i].reg = r;
			h->hooks[r->point][i].mod = m;
			h->hooks[r->point][n + 1].reg = NULL;
			h->n_hooks[r->point] = n + 1;
		}
		for (const char *const *f = m->features; f && *f; f++) {
			if (nf == capf) {
				capf *= 2;
				h->features = realloc(h->features, capf * sizeof(*h->features));
				if (!h->features)
					die_oom();
			}
			h->features[nf++] = *f;
		}
	}
	qsort(h->features, nf, sizeof(*h->features), cmp_str);
	struct buf sf = BUF_INIT;
	for (const struct module *const *mp = parley_modules; *mp; mp++)
		for (const char *const *f = (*mp)->stream_features; f && *f; f++)
			buf_adds(&sf, *f);
	h->n_features = nf;
	host_caps_compute(h);
	/* XEP-0115 §6.3: the server's own capabilities, offered with the
	 * stream features. */
	buf_printf(&sf, "<c xmlns='" NS_CAPS "' hash='sha-1' node='" CAPS_NODE "' ver='%s'/>",
		   h->caps_ver);
	buf_addc(&sf, '\0');
	h->stream_features = sf.data; /* owned */
}

void modules_unregister(struct host *h)
{
	for (size_t i = 0; i < h->iq_buckets; i++) {
		struct iq_entry *e = h->iq_table[i];
		while (e) {
			struct iq_entry *n = e->next;
			free(e);
			e = n;
		}
	}
	free(h->iq_table);
	h->iq_table = NULL;
	for (int p = 0; p < HP_COUNT; p++) {
		free(h->hooks[p]);
		h->hooks[p] = NULL;
		h->n_hooks[p] = 0;
	}
	free(h->features);
	h->features = NULL;
	free(h->stream_features);
	h->stream_features = NULL;
	h->n_features = 0;
}

enum hook_rc hooks_run(struct host *h, enum hook_point p, struct hook_ev *ev)
{
	for (size_t i = 0; i < h->n_hooks[p]; i++)
		if (h->hooks[p][i].reg->fn(ev) == HOOK_DONE)
			return HOOK_DONE;
	return HOOK_PASS;
}

hook_fn *iq_handler(struct host *h, const char *ns, const char *name, enum st_type type,
		    unsigned dest)
{
	unsigned t = type == ST_GET ? IQ_GET : type == ST_SET ? IQ_SET : 0;
	for (struct iq_entry *e = h->iq_table[iq_hash(ns, name, h->iq_buckets)]; e; e = e->next)
		if (!strcmp(e->ns, ns) && !strcmp(e->name, name) && (e->reg->types & t) &&
		    (e->reg->dests & dest))
			return e->reg->fn;
	return NULL;
}

const char *host_domain(const struct host *h)
{
	return h->domain;
}

void host_disco_features(const struct host *h, struct arena *a, struct xml_el *query)
{
	for (size_t i = 0; i < h->n_features; i++) {
		struct xml_el *f = xml_add_child(a, query, query->ns, "feature");
		xml_set_attr(a, f, "var", h->features[i]);
	}
}
