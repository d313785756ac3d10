/* Certificates that carry XMPP identities (RFC 6120 §13.7.1.2, RFC 7622):
 * generation of a key and a self-signed certificate whose subjectAltName
 * has the DNS name, an id-on-xmppAddr (1.3.6.1.5.5.7.8.5) and SRVNames
 * (1.3.6.1.5.5.7.8.7, RFC 4985) for _xmpp-client and _xmpp-server. */
#ifndef PARLEY_CERTS_H
#define PARLEY_CERTS_H

#include <stddef.h>

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

#endif
