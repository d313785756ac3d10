/* Certificates that carry XMPP identities (RFC 6120 §13.7.1.2, RFC 7622):
 * generation of a key and a self-signed certificate (or a signing request)
 * whose subjectAltName has the DNS name, an id-on-xmppAddr
 * (1.3.6.1.5.5.7.8.5) and SRVNames (1.3.6.1.5.5.7.8.7, RFC 4985) for
 * _xmpp-client and _xmpp-server; and the checks of the identity a peer's
 * certificate presents (RFC 6125 §6, RFC 6120 §13.7.2, RFC 7712 §4). */
#ifndef PARLEY_CERTS_H
#define PARLEY_CERTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

enum cert_keytype { CERT_EC_P256, CERT_RSA_2048 };

#define CERT_DAYS_MAX 36500

/* Writes key_path (mode 0600) and cert_path (mode 0644), both PEM, each
 * replaced atomically (an existing file is overwritten: callers that must
 * not overwrite check first). domain: normalized (U-labels, as jid.h
 * gives it). days: 1..CERT_DAYS_MAX of validity from now.
 * Returns 0 or -1 with a one-line reason in err. */
int cert_generate(const char *domain, enum cert_keytype kt, int days, const char *key_path,
		  const char *cert_path, char *err, size_t errlen);

/* Checks that cert_path and key_path exist and parse, that the key is the
 * certificate's, that the certificate is within its validity period and
 * that it covers domain (RFC 6125 DNS-ID). Returns 0 or -1 with a one-line
 * reason in err. */
int cert_check(const char *domain, const char *cert_path, const char *key_path, char *err,
	       size_t errlen);

/* The A-label (ASCII) form of a domain for DNS-IDs and SRV-IDs, malloc'd
 * into *out. Returns 0 or -1. */
int cert_domain_ascii(const char *domain, char **out);

/* Writes csr_path (mode 0644, PEM), a PKCS #10 request signed with the key
 * in key_path, for CN=domain and the subjectAltNames cert_generate() puts
 * in a certificate (in the extensionRequest attribute, RFC 2986 §4.1 and
 * RFC 2985 §5.4.2). The key is read if key_path exists; otherwise a new
 * one of type kt is written there (mode 0600) and *key_created is set.
 * An existing csr_path is replaced. Returns 0 or -1 with err. */
int cert_request(const char *domain, enum cert_keytype kt, const char *key_path,
		 const char *csr_path, bool *key_created, char *err, size_t errlen);

/* Reads the first PEM certificate of path and, if chain is not NULL, the
 * certificates after it (the intermediates a server sends) into a new
 * *chain (release with sk_X509_pop_free(chain, X509_free)). NULL with err
 * on failure. */
X509 *cert_load(const char *path, STACK_OF(X509) * *chain, char *err, size_t errlen);
/* An unencrypted PEM private key; NULL with err on failure. */
EVP_PKEY *cert_load_key(const char *path, char *err, size_t errlen);

/* Peer identity ---------------------------------------------------------- */

/* The kinds of identifier that can present a domain, strongest first
 * (RFC 6125 §6.3 and §6.4, RFC 6120 §13.7.1.2). */
enum cert_id {
	CERT_ID_NONE,
	CERT_ID_SRV,	      /* SRVName _xmpp-server.<domain> (RFC 4985) */
	CERT_ID_XMPPADDR,     /* id-on-xmppAddr <domain> (RFC 6120 §13.7.1.4) */
	CERT_ID_DNS,	      /* dNSName <domain> */
	CERT_ID_DNS_WILDCARD, /* dNSName *.<parent of domain> */
	CERT_ID_CN,	      /* the subject's CN, only without any of the above */
};
#define CERT_ID_BIT(id) (1u << (id))

/* Who checks the certificate: a client connecting to the domain (it looks
 * for SRV-ID _xmpp-client) or a peer server (SRV-ID _xmpp-server). */
enum cert_use { CERT_USE_C2S, CERT_USE_S2S };

/* Does cert present the identity of the XMPP server `domain` (normalized,
 * U-labels as jid.h gives it)? Returns the kind of identifier that matched
 * (strongest first: SRV-ID _xmpp-server.<domain> (also accept _xmpps-server),
 * id-on-xmppAddr equal to the domain, DNS-ID exact, DNS-ID wildcard), or
 * CERT_ID_NONE with a one-line reason in why (e.g. "certificate names
 * example.org, *.example.net; not example.com"). */
enum cert_id cert_match_server(X509 *cert, const char *domain, char *why, size_t whylen);
/* Every kind of identifier in cert that presents domain for use, as a set
 * of CERT_ID_BIT()s (for c2s the SRV-ID is _xmpp-client or _xmpps-client);
 * 0 with the reason in why (may be NULL) when none does. */
unsigned cert_match(X509 *cert, const char *domain, enum cert_use use, char *why, size_t whylen);
/* "SRV-ID", "XmppAddr", "DNS-ID", "DNS-ID wildcard", "CN-ID", "none": for logs. */
const char *cert_id_name(enum cert_id id);
/* The names cert carries, for people: "DNS:example.org, XmppAddr:example.org,
 * SRV:_xmpp-server.example.org" (also URI:, IP:, and CN: when there is no
 * subjectAltName), control characters replaced, truncated with "..." to
 * fit out. Returns how many names there are. */
int cert_names(X509 *cert, char *out, size_t cap);

/* Verifies the chain of cert (with the untrusted certificates in chain,
 * may be NULL) up to an anchor in store, at the current time. For
 * CERT_USE_C2S the certificate must be fit for a TLS server; for
 * CERT_USE_S2S for a TLS server or a TLS client (a peer presents its server
 * certificate on the connections it initiates, and many carry only the
 * serverAuth purpose). Does not look at names. Returns 0, or -1 with
 * OpenSSL's reason in why ("certificate has expired", ...). */
int cert_verify_chain(X509_STORE *store, X509 *cert, STACK_OF(X509) * chain, enum cert_use use,
		      char *why, size_t whylen);
/* Verifies the chain of a peer's certificate against the trust store
 * (X509_STORE built by cert_trust_store()) and then its identity. Returns
 * the identity that matched, or CERT_ID_NONE with why ("certificate has
 * expired", "unable to get local issuer certificate", or the name
 * mismatch). chain: the peer's chain as SSL_get_peer_cert_chain gives it
 * (may be NULL). */
enum cert_id cert_verify_server(X509_STORE *store, X509 *cert, STACK_OF(X509) * chain,
				const char *domain, char *why, size_t whylen);
/* DANE (RFC 6698, RFC 7671) for a certificate that arrived without
 * OpenSSL's DANE being set up in advance: a peer server's client
 * certificate, whose domain is only known from its stream header.
 * usage 3 (DANE-EE) matches the leaf, with no other check (RFC 7671 §5.1);
 * usage 2 (DANE-TA) matches a certificate of chain, which must then issue
 * a currently valid leaf that names domain (RFC 7671 §5.2). Usages 0 and 1
 * (PKIX-TA/EE) are not used for XMPP servers (RFC 7673 §3.2 follows RFC
 * 7672 §3.1.3) and are skipped, as are unknown selectors and matching
 * types. Returns the index of the record that matched, or -1 with the
 * reason in why. */
struct cert_tlsa {
	uint8_t usage, selector, mtype;
	uint16_t len;
	const unsigned char *data;
};
int cert_dane_match(X509 *leaf, STACK_OF(X509) * chain, const char *domain,
		    const struct cert_tlsa *r, size_t n, char *why, size_t whylen);

/* The system's trust store (OpenSSL's default paths) plus, if ca_file is
 * non-NULL, the PEM certificates in it. NULL with err on failure. Release
 * with X509_STORE_free(). */
X509_STORE *cert_trust_store(const char *ca_file, char *err, size_t errlen);

#endif
