/* The DNSSEC-validated TLSA records of a domain's XMPP servers (RFC 7673),
 * for checking a certificate that a peer of that domain presents.
 *
 * Outgoing links get their target's TLSA records as they resolve it, and
 * hand them to OpenSSL before the handshake (s2s.c). An incoming stream
 * learns the peer's domain only from its header, after TLS: its
 * certificate is then checked against the TLSA records of every server the
 * domain's SRV records name (XEP-0344 §2.4 suggests this for the
 * connection's other direction; Prosody's mod_s2s_auth_dane does the
 * same). Only what DNSSEC vouches for counts: SRV answers that are not
 * secure contribute no targets (RFC 7673 §3.2), and insecure TLSA answers
 * no records. */
#ifndef PARLEY_DANE_H
#define PARLEY_DANE_H

#include <stdbool.h>
#include <stddef.h>

#include "net/dns.h"

#define DANE_MAX_TARGETS 8  /* SRV targets looked at */
#define DANE_MAX_RECORDS 16 /* TLSA records kept, over all targets */

struct dane_lookup;

/* n == 0 and !bogus: DANE does not apply to the domain (no signed SRV or
 * TLSA records). bogus: some answer failed DNSSEC validation, which must
 * not be mistaken for "no records" (RFC 7671 §4); what was found is still
 * passed. r is valid during the call only. */
typedef void dane_lookup_cb(void *ud, const struct dns_tlsa *r, size_t n, bool bogus);

/* domain: A-label form. The callback runs once, later, unless cancelled. */
struct dane_lookup *dane_lookup(struct dns *d, const char *domain, dane_lookup_cb *cb, void *ud);
void dane_lookup_cancel(struct dane_lookup *l);

#endif
