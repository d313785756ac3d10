/* TLSA records of a domain's XMPP servers, DNSSEC-validated (dane.h). */
#include "net/dane.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

#define XMPP_SERVER_PORT 5269 /* RFC 6120 §3.2.2 */

struct dane_target {
	struct dane_lookup *l;
	char host[256];
	uint16_t port;
	struct dns_query *q;
};

struct dane_lookup {
	struct dns *dns;
	char domain[254];
	dane_lookup_cb *cb;
	void *ud;
	struct dns_query *srvq[2]; /* _xmpps-server, _xmpp-server */
	int left;		   /* answers still expected */
	bool srv_none_secure[2];   /* that service has no records, provably */
	bool no_service;	   /* a "." target: none at all */
	struct dane_target t[DANE_MAX_TARGETS];
	size_t nt;
	struct dns_tlsa r[DANE_MAX_RECORDS];
	size_t nr;
	bool bogus;
};

static void finish(struct dane_lookup *l)
{
	l->cb(l->ud, l->r, l->nr, l->bogus);
	free(l);
}

static void tlsa_cb(void *ud, int rc, bool secure, const struct dns_tlsa *r, size_t n)
{
	struct dane_target *t = ud;
	struct dane_lookup *l = t->l;
	t->q = NULL;
	if (rc == DNS_BOGUS)
		l->bogus = true;
	else if (rc == DNS_OK && secure)
		for (size_t i = 0; i < n && l->nr < DANE_MAX_RECORDS; i++)
			l->r[l->nr++] = r[i];
	if (--l->left == 0)
		finish(l);
}

static void add_target(struct dane_lookup *l, const char *host, uint16_t port)
{
	for (size_t i = 0; i < l->nt; i++)
		if (l->t[i].port == port && !strcmp(l->t[i].host, host))
			return;
	if (l->nt == DANE_MAX_TARGETS)
		return;
	struct dane_target *t = &l->t[l->nt++];
	t->l = l;
	snprintf(t->host, sizeof(t->host), "%s", host);
	t->port = port;
}

static void srv_cb(struct dane_lookup *l, int which, int rc, bool secure, const struct dns_srv *r,
		   size_t n)
{
	l->srvq[which] = NULL;
	if (rc == DNS_BOGUS)
		l->bogus = true;
	else if (rc == DNS_NONE && secure)
		l->srv_none_secure[which] = true;
	else if (rc == DNS_NOSERVICE)
		l->no_service = true;
	else if (rc == DNS_OK && secure)
		for (size_t i = 0; i < n; i++)
			add_target(l, r[i].target, r[i].port);
	if (--l->left > 0)
		return;
	/* RFC 7673 §3.2: without SRV records the domain itself is the target,
	 * on the default port; only when their absence is proven. */
	if (!l->nt && !l->no_service && l->srv_none_secure[0] && l->srv_none_secure[1])
		add_target(l, l->domain, XMPP_SERVER_PORT);
	if (!l->nt) {
		finish(l);
		return;
	}
	/* All queries are started before any can answer (dns.h: never inside
	 * the call), so left cannot reach zero early. */
	l->left = (int)l->nt;
	for (size_t i = 0; i < l->nt; i++)
		l->t[i].q = dns_tlsa(l->dns, l->t[i].host, l->t[i].port, tlsa_cb, &l->t[i]);
}

static void srv_tls_cb(void *ud, int rc, bool secure, const struct dns_srv *r, size_t n)
{
	srv_cb(ud, 0, rc, secure, r, n);
}

static void srv_tcp_cb(void *ud, int rc, bool secure, const struct dns_srv *r, size_t n)
{
	srv_cb(ud, 1, rc, secure, r, n);
}

struct dane_lookup *dane_lookup(struct dns *d, const char *domain, dane_lookup_cb *cb, void *ud)
{
	struct dane_lookup *l = calloc(1, sizeof(*l));
	if (!l)
		die_oom();
	l->dns = d;
	l->cb = cb;
	l->ud = ud;
	snprintf(l->domain, sizeof(l->domain), "%s", domain);
	char name[300];
	l->left = 2;
	snprintf(name, sizeof(name), "_xmpps-server._tcp.%s", domain); /* XEP-0368 */
	l->srvq[0] = dns_srv(d, name, srv_tls_cb, l);
	snprintf(name, sizeof(name), "_xmpp-server._tcp.%s", domain); /* RFC 6120 §3.2.1 */
	l->srvq[1] = dns_srv(d, name, srv_tcp_cb, l);
	return l;
}

void dane_lookup_cancel(struct dane_lookup *l)
{
	if (!l)
		return;
	for (int i = 0; i < 2; i++)
		if (l->srvq[i])
			dns_cancel(l->srvq[i]);
	for (size_t i = 0; i < l->nt; i++)
		if (l->t[i].q)
			dns_cancel(l->t[i].q);
	free(l);
}
