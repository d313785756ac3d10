/* Certificates that carry XMPP identities (RFC 6120 §13.7.1.2, RFC 7622):
 * generation of a key and a self-signed certificate whose subjectAltName
 * has the DNS name, an id-on-xmppAddr (1.3.6.1.5.5.7.8.5) and SRVNames
 * (1.3.6.1.5.5.7.8.7, RFC 4985) for _xmpp-client and _xmpp-server. */
#ifndef PARLEY_CERTS_H
#define PARLEY_CERTS_H

enum cert_keytype { CERT_EC_P256, CERT_RSA_2048 };

/* Writes key_path (mode 0600) and cert_path (PEM). days of validity.
 * Returns 0 or -1 with a one-line reason in err. */
int cert_generate(const char *domain, enum cert_keytype kt, int days, const char *key_path,
		  const char *cert_path, char *err, size_t errlen);

#endif
