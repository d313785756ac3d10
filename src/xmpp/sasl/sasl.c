/* SASL sessions: which mechanisms a stream offers, the state of one
 * exchange, and what every mechanism shares (usernames, fake keys for
 * unknown accounts). The mechanisms themselves are in scram.c and plain.c. */
#include "xmpp/sasl/mech.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "core/log.h"
#include "xmpp/precis.h"

struct sasl_mech_def {
	const char *name;
	bool plain;
	enum scram_hash hash;
	bool plus;
};

/* Strongest first: the order of <mechanisms/> is the server's preference
 * (RFC 6120 §6.4.1). */
static const struct sasl_mech_def sasl_mechs[] = {
    {"SCRAM-SHA-512-PLUS", false, SCRAM_SHA512, true},
    {"SCRAM-SHA-256-PLUS", false, SCRAM_SHA256, true},
    {"SCRAM-SHA-1-PLUS", false, SCRAM_SHA1, true},
    {"SCRAM-SHA-512", false, SCRAM_SHA512, false},
    {"SCRAM-SHA-256", false, SCRAM_SHA256, false},
    {"SCRAM-SHA-1", false, SCRAM_SHA1, false},
    {"PLAIN", true, SCRAM_SHA256, false},
};

static bool cb_part_usable(const unsigned char *p, size_t len)
{
	return p && len > 0 && len <= SASL_MAX_CBIND;
}

static bool cb_usable(const struct sasl_cbind *cb)
{
	return cb && (cb_part_usable(cb->tls_exporter, cb->tls_exporter_len) ||
		      cb_part_usable(cb->tls_server_end_point, cb->tls_server_end_point_len));
}

static bool mech_offered(const struct sasl_mech_def *m, bool tls, const struct sasl_cbind *cb,
			 bool allow_plain)
{
	if (m->plain)
		return tls && allow_plain; /* RFC 4616 §6: never in the clear */
	if (m->plus)
		return tls && cb_usable(cb);
	return true;
}

size_t sasl_mechanisms(bool tls, const struct sasl_cbind *cb, bool allow_plain, const char **out,
		       size_t cap)
{
	size_t n = 0;

	if (cap == 0)
		return 0;
	for (size_t i = 0; i < sizeof sasl_mechs / sizeof sasl_mechs[0] && n + 1 < cap; i++)
		if (mech_offered(&sasl_mechs[i], tls, cb, allow_plain))
			out[n++] = sasl_mechs[i].name;
	out[n] = NULL;
	return n;
}

static int clamp_iterations(int i)
{
	if (i < SCRAM_MIN_ITERATIONS)
		return SCRAM_MIN_ITERATIONS;
	if (i > SCRAM_MAX_ITERATIONS)
		return SCRAM_MAX_ITERATIONS;
	return i;
}

struct sasl *sasl_new(const char *mech, const struct sasl_ctx *ctx)
{
	const struct sasl_mech_def *m = NULL;
	struct sasl *s;

	if (!mech || !ctx || !ctx->server_secret || ctx->secret_len == 0)
		return NULL;
	for (size_t i = 0; i < sizeof sasl_mechs / sizeof sasl_mechs[0]; i++)
		if (strcmp(sasl_mechs[i].name, mech) == 0)
			m = &sasl_mechs[i];
	if (!m || !mech_offered(m, ctx->tls, ctx->cb, ctx->allow_plain))
		return NULL;

	s = calloc(1, sizeof *s);
	if (!s)
		die_oom();
	s->mech = m->name;
	s->plain = m->plain;
	s->hash = m->hash;
	s->plus = m->plus;
	s->state = SASL_ST_START;
	s->secret = malloc(ctx->secret_len);
	if (!s->secret)
		die_oom();
	memcpy(s->secret, ctx->server_secret, ctx->secret_len);
	s->secret_len = ctx->secret_len;
	s->fake_iterations = clamp_iterations(ctx->fake_iterations);
	if (ctx->tls && cb_usable(ctx->cb)) {
		const struct sasl_cbind *cb = ctx->cb;
		s->cb_offered = true;
		if (cb_part_usable(cb->tls_exporter, cb->tls_exporter_len)) {
			memcpy(s->cb_exporter, cb->tls_exporter, cb->tls_exporter_len);
			s->cb_exporter_len = cb->tls_exporter_len;
		}
		if (cb_part_usable(cb->tls_server_end_point, cb->tls_server_end_point_len)) {
			memcpy(s->cb_endpoint, cb->tls_server_end_point,
			       cb->tls_server_end_point_len);
			s->cb_endpoint_len = cb->tls_server_end_point_len;
		}
	}
	return s;
}

void sasl_free(struct sasl *s)
{
	if (!s)
		return;
	OPENSSL_cleanse(s->secret, s->secret_len);
	free(s->secret);
	if (s->password) {
		OPENSSL_cleanse(s->password, s->password_len);
		free(s->password);
	}
	buf_free(&s->cbind);
	buf_free(&s->nonce);
	buf_free(&s->auth);
	OPENSSL_cleanse(s, sizeof *s);
	free(s);
}

enum sasl_rc sasl_fail(struct sasl *s, const char *condition)
{
	s->state = SASL_ST_DONE;
	s->condition = condition;
	return SASL_FAIL;
}

enum sasl_rc sasl_step(struct sasl *s, const unsigned char *in, size_t len, struct buf *out)
{
	const char *p = (const char *)in;

	if (s->state == SASL_ST_DONE) {
		if (!s->condition)
			s->condition = "malformed-request";
		return SASL_FAIL;
	}
	if (in && len > SASL_MAX_INPUT)
		return sasl_fail(s, "malformed-request");

	switch (s->state) {
	case SASL_ST_START:
		/* RFC 6120 §6.4.2: without an initial response the server
		 * sends an empty challenge, once. */
		if (!in) {
			if (s->challenged)
				return sasl_fail(s, "malformed-request");
			s->challenged = true;
			return SASL_CONTINUE;
		}
		return s->plain ? plain_response(s, p, len) : scram_client_first(s, p, len);
	case SASL_ST_FINAL:
		if (!in)
			return sasl_fail(s, "malformed-request");
		return scram_client_final(s, p, len, out);
	case SASL_ST_CREDS:
		/* A <response/> while the lookup runs: the client is
		 * not following the protocol. */
	case SASL_ST_DONE:
		break;
	}
	return sasl_fail(s, "malformed-request");
}

enum sasl_rc sasl_supply_creds(struct sasl *s, const struct scram_creds *creds, struct buf *out)
{
	if (s->state != SASL_ST_CREDS) {
		LOG(LOG_WARN, "sasl: credentials supplied out of turn");
		return sasl_fail(s, "temporary-auth-failure");
	}
	return s->plain ? plain_verify(s, creds) : scram_server_first(s, creds, out);
}

const char *sasl_authcid(const struct sasl *s)
{
	return s->have_authcid ? s->authcid : NULL;
}

const char *sasl_authzid(const struct sasl *s)
{
	return s->have_authzid ? s->authzid : NULL;
}

const char *sasl_condition(const struct sasl *s)
{
	return s->condition ? s->condition : "not-authorized";
}

const char *sasl_mech_name(const struct sasl *s)
{
	return s->mech;
}

void sasl_set_test_nonce(struct sasl *s, const char *nonce)
{
	size_t n = strlen(nonce);

	ASSERT(n > 0 && n <= SCRAM_NONCE_MAX);
	for (size_t i = 0; i < n; i++)
		ASSERT(nonce[i] >= 0x21 && nonce[i] <= 0x7e && nonce[i] != ',');
	memcpy(s->test_nonce, nonce, n + 1);
}

int sasl_prep_password(const char *in, size_t len, char *out, size_t cap)
{
	return precis_opaque_string(in, len, out, cap);
}

int sasl_set_authcid(struct sasl *s, const char *raw, size_t len)
{
	int n = precis_username_casemapped(raw, len, s->authcid, sizeof s->authcid);

	/* RFC 5802 §5.1: a name that cannot be prepared, or prepares to
	 * nothing, ends the exchange. */
	if (n <= 0 || (size_t)n >= sizeof s->authcid)
		return -1;
	s->authcid[n] = '\0';
	/* A NUL inside would make the name the store looks up differ from
	 * the one that was checked. */
	if (memchr(s->authcid, '\0', (size_t)n))
		return -1;
	s->have_authcid = true;
	return 0;
}

/* RFC 3629 §4, strictly: no overlong forms, no surrogates, nothing
 * beyond U+10FFFF. */
bool sasl_utf8_valid(const char *p, size_t len)
{
	const unsigned char *u = (const unsigned char *)p;
	size_t i = 0;

	while (i < len) {
		unsigned char c = u[i];
		size_t n;
		uint32_t cp, min;

		if (c < 0x80) {
			i++;
			continue;
		} else if ((c & 0xe0) == 0xc0) {
			n = 1, cp = c & 0x1f, min = 0x80;
		} else if ((c & 0xf0) == 0xe0) {
			n = 2, cp = c & 0x0f, min = 0x800;
		} else if ((c & 0xf8) == 0xf0) {
			n = 3, cp = c & 0x07, min = 0x10000;
		} else {
			return false;
		}
		if (len - i - 1 < n)
			return false;
		for (size_t k = 1; k <= n; k++) {
			if ((u[i + k] & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (u[i + k] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += n + 1;
	}
	return true;
}

bool scram_key_usable(const struct scram_key *k)
{
	return k->iterations >= SCRAM_MIN_ITERATIONS && k->iterations <= SCRAM_MAX_ITERATIONS &&
	       k->salt_len > 0 && k->salt_len <= SCRAM_MAX_SALT;
}

/* An account that does not exist must look like one with a wrong
 * password (RFC 5802 §9 leaves this to the server; we owe it to users
 * whose addresses would otherwise be confirmed). So the exchange goes on
 * with a salt that is the same on every attempt for the same name, as
 * a real one would be: the first 16 bytes of
 * HMAC-SHA-256(server secret, hash name || 0 || username). The iteration
 * count is the one new accounts get, and the keys are random, so the
 * proof cannot match and the exchange fails exactly where a wrong
 * password fails, with the same not-authorized. */
int sasl_fake_key(const struct sasl *s, enum scram_hash h, struct scram_key *key)
{
	const char *name = scram_hash_name(h);
	size_t nlen = strlen(name), ulen = strlen(s->authcid);
	unsigned char msg[16 + SASL_AUTHCID_MAX];
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int maclen = 0;

	memset(key, 0, sizeof *key);
	memcpy(msg, name, nlen);
	msg[nlen] = 0;
	memcpy(msg + nlen + 1, s->authcid, ulen);
	if (!HMAC(EVP_sha256(), s->secret, (int)s->secret_len, msg, nlen + 1 + ulen, mac, &maclen))
		return -1;
	memcpy(key->salt, mac, SASL_FAKE_SALT_LEN);
	key->salt_len = SASL_FAKE_SALT_LEN;
	key->iterations = s->fake_iterations;
	if (RAND_bytes(key->stored_key, (int)scram_hash_len(h)) != 1 ||
	    RAND_bytes(key->server_key, (int)scram_hash_len(h)) != 1)
		return -1;
	return 0;
}
