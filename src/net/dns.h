/* Asynchronous DNS with DNSSEC validation, through libunbound (DESIGN.md §3).
 *
 * One struct dns per worker, used only on that worker's thread. libunbound runs
 * inside the worker's loop through its pluggable event API (unbound-event.h):
 * its sockets and timers are the loop's, so it starts no thread and forks no
 * process, and a lookup never blocks the worker.
 *
 * Every dns_srv/dns_addr/dns_tlsa call returns a query (never NULL; it aborts
 * on out-of-memory like the rest of the server) and its callback runs exactly
 * once, later, on the loop's thread, never inside the starting call, unless
 * the query is cancelled or the dns freed first. Invalid input (a name that
 * is not an A-label host name of at most 253 octets, say) is reported through
 * the callback as DNS_ERROR. The arrays handed to a callback are valid only
 * during the call. */
#ifndef PARLEY_DNS_H
#define PARLEY_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct loop;

struct dns_conf {
	const char *const *servers; /* forwarders "IP" or "IP@port"; none: /etc/resolv.conf */
	size_t n_servers;
	/* DNSSEC anchors (DS/DNSKEY lines, as unbound's auto-trust-anchor or a
	 * zone file); NULL: Debian's /usr/share/dns/root.key if it exists, else
	 * no validation. */
	const char *trust_anchor_file;
	/* Resolvers that strip DNSSEC data: go on without validation. */
	bool dnssec_fallback;
};

struct dns;	  /* one per worker thread, used only on that thread */
struct dns_query; /* an outstanding lookup, for dns_cancel */

enum dns_rc {
	DNS_OK = 0,
	DNS_NONE = -1,	/* NXDOMAIN or no records of that type */
	DNS_BOGUS = -2, /* DNSSEC validation failed */
	DNS_ERROR = -3, /* SERVFAIL, timeout, anything else */
	/* SRV only: a lone "." target, the service is decidedly not available
	 * at this domain (RFC 2782; RFC 6120 §3.2.1: no fallback then). */
	DNS_NOSERVICE = -4,
};

/* Most records one answer yields (the rest are ignored). */
#define DNS_MAX_RECORDS 64

/* NULL with a one-line reason in err when the configuration is unusable (a
 * forwarder that does not parse, an anchor file that cannot be read). */
struct dns *dns_new(struct loop *l, const struct dns_conf *c, char *err, size_t errlen);
/* Cancels what is outstanding; callbacks are not called. Call it from a
 * timer, a dns callback or after loop_run returns, not from an fd callback
 * of the same loop iteration in which the resolver's sockets fired (the
 * loop may still hold their events). */
void dns_free(struct dns *d);

struct dns_srv {
	char target[256]; /* host name, no trailing dot */
	uint16_t port, priority, weight;
};
/* secure: the answer was DNSSEC-validated (unbound's ub_result->secure);
 * for DNS_NONE, the denial of existence was. */
typedef void dns_srv_cb(void *ud, int rc, bool secure, const struct dns_srv *r, size_t n);
/* SRV records of name (e.g. "_xmpp-server._tcp.example.org"), in the order to try them
 * (RFC 2782: priority ascending, weighted random within a priority). A single record with
 * target "." means the service is decidedly not available: rc DNS_NOSERVICE. Records that do
 * not parse, or whose target is not a host name, are skipped; if none is left, DNS_ERROR. */
struct dns_query *dns_srv(struct dns *d, const char *name, dns_srv_cb *cb, void *ud);

typedef void dns_addr_cb(void *ud, int rc, bool secure, const struct sockaddr_storage *a, size_t n);
/* A and AAAA of host (both queried in parallel; IPv6 first in the result, RFC 6724 lite:
 * the families then alternate, as RFC 8305 §4 does, so that a broken IPv6 path costs one
 * connection attempt), port set in every address. An IP literal (IPv6 with or without
 * brackets) answers at once (on the next loop turn, never inside the call), secure = false.
 * If one family has addresses and the other failed (even as bogus), rc is DNS_OK with
 * what there is; secure is true only when both answers (data or denial) were secure. */
struct dns_query *dns_addr(struct dns *d, const char *host, uint16_t port, dns_addr_cb *cb,
			   void *ud);

struct dns_tlsa {
	uint8_t usage, selector, mtype;
	uint16_t len;
	unsigned char data[512];
};
typedef void dns_tlsa_cb(void *ud, int rc, bool secure, const struct dns_tlsa *r, size_t n);
/* TLSA records of _<port>._tcp.<host> (RFC 6698, RFC 7673). Records whose
 * association data is longer than 512 octets (a full certificate, matching
 * type 0) are skipped: rc DNS_OK with n == 0 means a TLSA RRset exists but
 * none of it is usable (RFC 7672 §2.2 treats that case specially). */
struct dns_query *dns_tlsa(struct dns *d, const char *host, uint16_t port, dns_tlsa_cb *cb,
			   void *ud);

void dns_cancel(struct dns_query *q); /* the callback will not be called */
/* Answers are DNSSEC-validated now: a trust anchor is in use and the
 * resolvers were not found to strip DNSSEC data. */
bool dns_validating(const struct dns *d);

/* Internals exposed for tests/unit/test_dns.c; not for other layers. */

/* Host-name check and copy: A-label host name (letters, digits, '-', '_'),
 * labels 1..63, at most 253 octets without the optional final dot, which
 * is dropped in out. Returns 0 or -1. */
int dns_name_check(const char *name, char out[254]);
/* Reads the answer section of a DNS response (pkt, len) to the question
 * qname/qtype, following a CNAME chain from qname (bounded), and calls fn
 * for each rdata of type qtype whose owner is in the chain, at most
 * DNS_MAX_RECORDS times. off/rdlen locate the rdata inside pkt (for names
 * that point back into the message). Returns the DNS rcode of the response
 * (0 NOERROR, 3 NXDOMAIN, ...) or -1 if it does not parse. */
typedef void dns_rdata_fn(void *ud, const unsigned char *pkt, size_t len, size_t off, size_t rdlen);
int dns_parse_answer(const unsigned char *pkt, size_t len, const char *qname, uint16_t qtype,
		     dns_rdata_fn *fn, void *ud);
/* One SRV / TLSA rdata at pkt+off, rdlen octets. 0, or -1 if malformed or
 * unusable. A SRV target of "." gives target "." */
int dns_parse_srv(const unsigned char *pkt, size_t len, size_t off, size_t rdlen,
		  struct dns_srv *out);
int dns_parse_tlsa(const unsigned char *rdata, size_t rdlen, struct dns_tlsa *out);
/* RFC 2782 ordering in place; rnd(ud, bound) returns a uniform value in
 * [0, bound] inclusive. */
void dns_srv_order(struct dns_srv *r, size_t n, uint32_t (*rnd)(void *ud, uint32_t bound),
		   void *ud);

#endif
