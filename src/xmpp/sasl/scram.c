/* SCRAM server side (RFC 5802), with SHA-1, SHA-256 (RFC 7677) and
 * SHA-512, and channel binding for the -PLUS variants: tls-exporter
 * (RFC 9266) and tls-server-end-point (RFC 5929).
 *
 * The server knows StoredKey and ServerKey only. It checks the proof by
 * recovering ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage) and
 * comparing H(ClientKey) with StoredKey (RFC 5802 §3). */
#include "xmpp/sasl/mech.h"

#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "xmpp/base64.h"

/* RFC 5802 §5.1: the server nonce; 24 random bytes, 32 characters. */
#define SCRAM_SNONCE_BYTES 24
#define SCRAM_NEW_SALT_LEN 16
/* base64_encoded_len() as a constant expression, for array sizes. */
#define B64_LEN(n) (((n) + 2) / 3 * 4)

static const EVP_MD *scram_md(enum scram_hash h)
{
	switch (h) {
	case SCRAM_SHA1:
		return EVP_sha1();
	case SCRAM_SHA256:
		return EVP_sha256();
	case SCRAM_SHA512:
		return EVP_sha512();
	case SCRAM_NHASH:
		break;
	}
	return NULL;
}

size_t scram_hash_len(enum scram_hash h)
{
	switch (h) {
	case SCRAM_SHA1:
		return 20;
	case SCRAM_SHA256:
		return 32;
	case SCRAM_SHA512:
		return 64;
	case SCRAM_NHASH:
		break;
	}
	return 0;
}

const char *scram_hash_name(enum scram_hash h)
{
	switch (h) {
	case SCRAM_SHA1:
		return "SHA-1";
	case SCRAM_SHA256:
		return "SHA-256";
	case SCRAM_SHA512:
		return "SHA-512";
	case SCRAM_NHASH:
		break;
	}
	return "";
}

int scram_hmac(enum scram_hash h, const unsigned char *key, size_t klen, const void *data,
	       size_t dlen, unsigned char *out)
{
	unsigned int n = 0;

	if (!HMAC(scram_md(h), key, (int)klen, data, dlen, out, &n) || n != scram_hash_len(h))
		return -1;
	return 0;
}

int scram_digest(enum scram_hash h, const void *data, size_t len, unsigned char *out)
{
	unsigned int n = 0;

	if (EVP_Digest(data, len, out, &n, scram_md(h), NULL) != 1 || n != scram_hash_len(h))
		return -1;
	return 0;
}

int scram_derive(enum scram_hash h, const char *password, size_t plen, const unsigned char *salt,
		 size_t salt_len, int iterations, unsigned char *stored_key,
		 unsigned char *server_key)
{
	size_t hl = scram_hash_len(h);
	unsigned char salted[SCRAM_MAX_KEY], client_key[SCRAM_MAX_KEY];
	int rc = -1;

	if (plen > SASL_MAX_INPUT || salt_len > SCRAM_MAX_SALT)
		return -1;
	/* RFC 5802 §2.2: Hi() is PBKDF2 with HMAC as the PRF. */
	if (PKCS5_PBKDF2_HMAC(password, (int)plen, salt, (int)salt_len, iterations, scram_md(h),
			      (int)hl, salted) != 1)
		goto out;
	if (scram_hmac(h, salted, hl, "Client Key", 10, client_key) < 0 ||
	    scram_digest(h, client_key, hl, stored_key) < 0)
		goto out;
	if (server_key && scram_hmac(h, salted, hl, "Server Key", 10, server_key) < 0)
		goto out;
	rc = 0;
out:
	OPENSSL_cleanse(salted, sizeof salted);
	OPENSSL_cleanse(client_key, sizeof client_key);
	return rc;
}

int scram_make_creds(const char *password, int iterations, struct scram_creds *out)
{
	memset(out, 0, sizeof *out);
	if (!password || iterations < SCRAM_MIN_ITERATIONS || iterations > SCRAM_MAX_ITERATIONS)
		return -1;
	for (int h = 0; h < SCRAM_NHASH; h++) {
		struct scram_key *k = &out->k[h];

		k->iterations = iterations;
		k->salt_len = SCRAM_NEW_SALT_LEN;
		if (RAND_bytes(k->salt, SCRAM_NEW_SALT_LEN) != 1 ||
		    scram_derive((enum scram_hash)h, password, strlen(password), k->salt,
				 k->salt_len, iterations, k->stored_key, k->server_key) < 0) {
			OPENSSL_cleanse(out, sizeof *out);
			return -1;
		}
	}
	return 0;
}

/* RFC 5802 §7: saslname = 1*(value-safe-char / "=2C" / "=3D"); "," ends
 * it. Decodes p[0..len) into out (cap bytes, NUL-terminated). Returns the
 * decoded length or -1. */
static int saslname_decode(const char *p, size_t len, char *out, size_t cap)
{
	size_t o = 0;

	if (len == 0)
		return -1;
	for (size_t i = 0; i < len; i++) {
		char c = p[i];

		if (c == '=') {
			if (len - i < 3)
				return -1;
			if (p[i + 1] == '2' && p[i + 2] == 'C')
				c = ',';
			else if (p[i + 1] == '3' && p[i + 2] == 'D')
				c = '=';
			else
				return -1;
			i += 2;
		} else if (c == ',' || c == '\0') {
			return -1;
		}
		if (o + 1 >= cap)
			return -1;
		out[o++] = c;
	}
	out[o] = '\0';
	return (int)o;
}

/* RFC 5802 §7: printable = %x21-2B / %x2D-7E. */
static bool nonce_valid(const char *p, size_t len)
{
	if (len == 0)
		return false;
	for (size_t i = 0; i < len; i++)
		if (p[i] < 0x21 || p[i] > 0x7e || p[i] == ',')
			return false;
	return true;
}

/* RFC 5802 §7: attr-val = ALPHA "=" value; value = 1*value-char. The
 * message holds no ',' or NUL inside a field by construction. */
static bool attr_val_valid(const char *p, size_t len)
{
	return len >= 3 && ((p[0] >= 'a' && p[0] <= 'z') || (p[0] >= 'A' && p[0] <= 'Z')) &&
	       p[1] == '=';
}

/* RFC 5802 §7: cb-name = 1*(ALPHA / DIGIT / "." / "-"). */
static bool cb_name_valid(const char *p, size_t len)
{
	if (len == 0)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = p[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '-'))
			return false;
	}
	return true;
}

/* Length of the field at p (up to the next ',' or end). */
static size_t field_len(const char *p, const char *end)
{
	const char *c = memchr(p, ',', (size_t)(end - p));
	return c ? (size_t)(c - p) : (size_t)(end - p);
}

static bool starts(const char *p, const char *end, const char *prefix)
{
	size_t n = strlen(prefix);
	return (size_t)(end - p) >= n && memcmp(p, prefix, n) == 0;
}

enum sasl_rc scram_client_first(struct sasl *s, const char *in, size_t len)
{
	const char *p = in, *end = in + len;
	const char *cb_name = NULL, *user, *cnonce;
	size_t cb_name_len = 0, user_len, cnonce_len, gs2_len;
	char flag;
	char user_raw[SASL_AUTHCID_MAX];
	const unsigned char *cb_data = NULL;
	size_t cb_data_len = 0;

	if (len == 0 || memchr(in, '\0', len) || !sasl_utf8_valid(in, len))
		return sasl_fail(s, "malformed-request");

	/* RFC 5802 §7: gs2-header = gs2-cbind-flag "," [ authzid ] "," */
	flag = *p;
	if (starts(p, end, "n,") || starts(p, end, "y,")) {
		p += 2;
	} else if (starts(p, end, "p=")) {
		p += 2;
		cb_name = p;
		cb_name_len = field_len(p, end);
		if (!cb_name_valid(cb_name, cb_name_len) || p + cb_name_len == end)
			return sasl_fail(s, "malformed-request");
		p += cb_name_len + 1;
	} else {
		return sasl_fail(s, "malformed-request");
	}
	if (starts(p, end, "a=")) {
		size_t n = field_len(p + 2, end);
		if (p + 2 + n == end ||
		    saslname_decode(p + 2, n, s->authzid, sizeof s->authzid) < 0)
			return sasl_fail(s, "malformed-request");
		s->have_authzid = true;
		p += 2 + n;
	}
	if (p == end || *p != ',')
		return sasl_fail(s, "malformed-request");
	p++;
	gs2_len = (size_t)(p - in);

	/* client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions]
	 * RFC 5802 §5.1: "m" announces a mandatory extension we do not
	 * know, so the exchange must fail. */
	const char *bare = p;
	if (starts(p, end, "m="))
		return sasl_fail(s, "malformed-request");
	if (!starts(p, end, "n="))
		return sasl_fail(s, "malformed-request");
	user = p + 2;
	user_len = field_len(user, end);
	p = user + user_len;
	if (p == end || !starts(p + 1, end, "r="))
		return sasl_fail(s, "malformed-request");
	cnonce = p + 3;
	cnonce_len = field_len(cnonce, end);
	if (!nonce_valid(cnonce, cnonce_len))
		return sasl_fail(s, "malformed-request");
	p = cnonce + cnonce_len;
	while (p < end) {
		size_t n;
		p++; /* the ',' */
		n = field_len(p, end);
		if (!attr_val_valid(p, n))
			return sasl_fail(s, "malformed-request");
		p += n;
	}
	int ulen = saslname_decode(user, user_len, user_raw, sizeof user_raw);
	if (ulen < 0)
		return sasl_fail(s, "malformed-request");

	/* Channel binding: the flag has to agree with the mechanism. */
	if (flag == 'p') {
		if (!s->plus)
			return sasl_fail(s, "malformed-request");
		if (cb_name_len == 12 && memcmp(cb_name, "tls-exporter", 12) == 0) {
			cb_data = s->cb_exporter; /* RFC 9266 */
			cb_data_len = s->cb_exporter_len;
		} else if (cb_name_len == 20 && memcmp(cb_name, "tls-server-end-point", 20) == 0) {
			cb_data = s->cb_endpoint; /* RFC 5929 §4 */
			cb_data_len = s->cb_endpoint_len;
		}
		/* A type we do not know, or have no data for, cannot be
		 * verified (RFC 5802 §5.1: unsupported-channel-binding-type). */
		if (cb_data_len == 0)
			return sasl_fail(s, "not-authorized");
	} else {
		if (s->plus)
			return sasl_fail(s, "malformed-request");
		/* RFC 5802 §6: "y" says the client could bind but believes
		 * we cannot. We offered -PLUS, so someone removed it from
		 * the list on the way. */
		if (flag == 'y' && s->cb_offered)
			return sasl_fail(s, "not-authorized");
	}

	if (sasl_set_authcid(s, user_raw, (size_t)ulen) < 0) {
		OPENSSL_cleanse(user_raw, sizeof user_raw);
		return sasl_fail(s, "not-authorized");
	}

	/* RFC 5802 §7: c= carries gs2-header and, with "p=", the binding data. */
	buf_add(&s->cbind, in, gs2_len);
	if (cb_data_len)
		buf_add(&s->cbind, cb_data, cb_data_len);

	buf_add(&s->nonce, cnonce, cnonce_len);
	if (s->test_nonce[0]) {
		buf_adds(&s->nonce, s->test_nonce);
	} else {
		unsigned char rnd[SCRAM_SNONCE_BYTES];
		char b64[B64_LEN(SCRAM_SNONCE_BYTES) + 1];
		if (RAND_bytes(rnd, sizeof rnd) != 1)
			return sasl_fail(s, "temporary-auth-failure");
		base64_encode(rnd, sizeof rnd, b64);
		buf_adds(&s->nonce, b64);
	}

	buf_add(&s->auth, bare, (size_t)(end - bare));
	s->state = SASL_ST_CREDS;
	return SASL_NEED_CREDS;
}

enum sasl_rc scram_server_first(struct sasl *s, const struct scram_creds *creds, struct buf *out)
{
	char salt64[B64_LEN(SCRAM_MAX_SALT) + 1];
	size_t start;

	/* No usable key for this hash (an account from before the hash
	 * was supported, or a damaged record) is treated like no account:
	 * the client cannot prove anything, and fails like a wrong password. */
	if (creds && scram_key_usable(&creds->k[s->hash]))
		s->key = creds->k[s->hash];
	else if (sasl_fake_key(s, s->hash, &s->key) < 0)
		return sasl_fail(s, "temporary-auth-failure");

	/* RFC 5802 §7: server-first-message = nonce "," salt "," iteration-count */
	base64_encode(s->key.salt, s->key.salt_len, salt64);
	start = s->auth.len;
	buf_addc(&s->auth, ',');
	buf_adds(&s->auth, "r=");
	buf_add(&s->auth, buf_head(&s->nonce), buf_pending(&s->nonce));
	buf_printf(&s->auth, ",s=%s,i=%d", salt64, s->key.iterations);
	buf_add(out, s->auth.data + start + 1, s->auth.len - start - 1);
	s->state = SASL_ST_FINAL;
	return SASL_CONTINUE;
}

enum sasl_rc scram_client_final(struct sasl *s, const char *in, size_t len, struct buf *out)
{
	const char *end = in + len, *p = in;
	const char *c64, *nonce, *proof64 = NULL, *without_proof_end = NULL;
	size_t c64_len, nonce_len, proof64_len = 0;
	size_t hl = scram_hash_len(s->hash);
	unsigned char cbind[SASL_MAX_INPUT];
	unsigned char proof[SCRAM_MAX_KEY], sig[SCRAM_MAX_KEY], client_key[SCRAM_MAX_KEY];
	unsigned char stored[SCRAM_MAX_KEY];
	char v64[B64_LEN(SCRAM_MAX_KEY) + 1];
	ssize_t n;
	enum sasl_rc rc;

	if (len == 0 || memchr(in, '\0', len) || !sasl_utf8_valid(in, len))
		return sasl_fail(s, "malformed-request");

	/* RFC 5802 §7: client-final-message-without-proof =
	 *   channel-binding "," nonce ["," extensions]; then "," proof */
	if (!starts(p, end, "c="))
		return sasl_fail(s, "malformed-request");
	c64 = p + 2;
	c64_len = field_len(c64, end);
	p = c64 + c64_len;
	if (p == end || !starts(p + 1, end, "r="))
		return sasl_fail(s, "malformed-request");
	nonce = p + 3;
	nonce_len = field_len(nonce, end);
	p = nonce + nonce_len;
	while (p < end) {
		const char *f = p + 1;
		size_t flen = field_len(f, end);

		if (f + flen == end && starts(f, end, "p=")) {
			without_proof_end = p;
			proof64 = f + 2;
			proof64_len = flen - 2;
		} else if (!attr_val_valid(f, flen)) {
			return sasl_fail(s, "malformed-request");
		}
		p = f + flen;
	}
	if (!proof64)
		return sasl_fail(s, "malformed-request");

	n = base64_decode(c64, c64_len, cbind, sizeof cbind);
	if (n < 0 || c64_len == 0)
		return sasl_fail(s, "malformed-request");
	if ((size_t)n != buf_pending(&s->cbind) ||
	    CRYPTO_memcmp(cbind, buf_head(&s->cbind), (size_t)n) != 0)
		return sasl_fail(s, "not-authorized");
	if (nonce_len != buf_pending(&s->nonce) ||
	    memcmp(nonce, buf_head(&s->nonce), nonce_len) != 0)
		return sasl_fail(s, "not-authorized");
	if (proof64_len != base64_encoded_len(hl))
		return sasl_fail(s, "malformed-request");
	n = base64_decode(proof64, proof64_len, proof, sizeof proof);
	if (n < 0)
		return sasl_fail(s, "malformed-request");
	if ((size_t)n != hl)
		return sasl_fail(s, "not-authorized");

	/* AuthMessage = client-first-message-bare "," server-first-message ","
	 *               client-final-message-without-proof (RFC 5802 §3) */
	buf_addc(&s->auth, ',');
	buf_add(&s->auth, in, (size_t)(without_proof_end - in));

	rc = SASL_FAIL;
	if (scram_hmac(s->hash, s->key.stored_key, hl, buf_head(&s->auth), buf_pending(&s->auth),
		       sig) < 0)
		goto out_internal;
	for (size_t i = 0; i < hl; i++)
		client_key[i] = proof[i] ^ sig[i];
	if (scram_digest(s->hash, client_key, hl, stored) < 0)
		goto out_internal;
	if (CRYPTO_memcmp(stored, s->key.stored_key, hl) != 0) {
		rc = sasl_fail(s, "not-authorized");
		goto out;
	}
	/* RFC 5802 §3: ServerSignature proves we hold ServerKey. */
	if (scram_hmac(s->hash, s->key.server_key, hl, buf_head(&s->auth), buf_pending(&s->auth),
		       sig) < 0)
		goto out_internal;
	base64_encode(sig, hl, v64);
	buf_adds(out, "v=");
	buf_adds(out, v64);
	s->state = SASL_ST_DONE;
	rc = SASL_SUCCESS;
	goto out;
out_internal:
	rc = sasl_fail(s, "temporary-auth-failure");
out:
	OPENSSL_cleanse(client_key, sizeof client_key);
	OPENSSL_cleanse(&s->key, sizeof s->key);
	return rc;
}
