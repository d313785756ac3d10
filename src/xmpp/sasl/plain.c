/* PLAIN (RFC 4616), checked against the stored SCRAM keys: the password
 * is salted and hashed the way scram_make_creds() did it, and the
 * resulting StoredKey compared with the stored one. Offered only on
 * encrypted streams (sasl.c decides). */
#include "xmpp/sasl/mech.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "core/log.h"

/* RFC 4616 §2: message = [authzid] UTF8NUL authcid UTF8NUL passwd */
enum sasl_rc plain_response(struct sasl *s, const char *in, size_t len)
{
	const char *end = in + len, *nul1, *nul2;
	const char *authcid, *passwd;
	size_t zlen, clen, plen;
	char prepared[SASL_MAX_INPUT];
	int n;

	nul1 = memchr(in, '\0', len);
	if (!nul1)
		return sasl_fail(s, "malformed-request");
	authcid = nul1 + 1;
	nul2 = memchr(authcid, '\0', (size_t)(end - authcid));
	if (!nul2)
		return sasl_fail(s, "malformed-request");
	passwd = nul2 + 1;
	zlen = (size_t)(nul1 - in);
	clen = (size_t)(nul2 - authcid);
	plen = (size_t)(end - passwd);
	if (clen == 0 || plen == 0 || memchr(passwd, '\0', plen) || zlen >= SASL_AUTHZID_MAX ||
	    !sasl_utf8_valid(in, zlen))
		return sasl_fail(s, "malformed-request");

	if (zlen) {
		memcpy(s->authzid, in, zlen);
		s->authzid[zlen] = '\0';
		s->have_authzid = true;
	}
	if (sasl_set_authcid(s, authcid, clen) < 0)
		return sasl_fail(s, "not-authorized");
	/* RFC 8265 §4.2: passwords are compared after OpaqueString, as
	 * scram_make_creds() callers prepare them. */
	n = sasl_prep_password(passwd, plen, prepared, sizeof prepared);
	if (n <= 0 || (size_t)n >= sizeof prepared) {
		OPENSSL_cleanse(prepared, sizeof prepared);
		return sasl_fail(s, "not-authorized");
	}
	s->password = malloc((size_t)n);
	if (!s->password)
		die_oom();
	memcpy(s->password, prepared, (size_t)n);
	s->password_len = (size_t)n;
	OPENSSL_cleanse(prepared, sizeof prepared);
	s->state = SASL_ST_CREDS;
	return SASL_NEED_CREDS;
}

/* SHA-256 first: it is what every account has since it was created; the
 * others only serve accounts whose SHA-256 key is missing. */
static const enum scram_hash plain_pref[] = {SCRAM_SHA256, SCRAM_SHA1, SCRAM_SHA512};

enum sasl_rc plain_verify(struct sasl *s, const struct scram_creds *creds)
{
	const struct scram_key *k = NULL;
	struct scram_key fake;
	enum scram_hash h = SCRAM_SHA256;
	unsigned char stored[SCRAM_MAX_KEY];
	enum sasl_rc rc;

	for (size_t i = 0; creds && i < sizeof plain_pref / sizeof plain_pref[0]; i++) {
		if (scram_key_usable(&creds->k[plain_pref[i]])) {
			h = plain_pref[i];
			k = &creds->k[h];
			break;
		}
	}
	/* Unknown account: still pay for one PBKDF2, with the fake salt and
	 * iteration count, so the answer takes as long as for a wrong
	 * password. The random key never matches. */
	if (!k) {
		if (sasl_fake_key(s, h, &fake) < 0) {
			rc = sasl_fail(s, "temporary-auth-failure");
			goto out;
		}
		k = &fake;
	}
	if (scram_derive(h, s->password, s->password_len, k->salt, k->salt_len, k->iterations,
			 stored, NULL) < 0) {
		rc = sasl_fail(s, "temporary-auth-failure");
		goto out;
	}
	if (CRYPTO_memcmp(stored, k->stored_key, scram_hash_len(h)) != 0) {
		rc = sasl_fail(s, "not-authorized");
		goto out;
	}
	s->state = SASL_ST_DONE;
	rc = SASL_SUCCESS;
out:
	OPENSSL_cleanse(s->password, s->password_len);
	OPENSSL_cleanse(&fake, sizeof fake);
	OPENSSL_cleanse(stored, sizeof stored);
	return rc;
}
