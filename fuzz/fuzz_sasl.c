/* libFuzzer target: the SASL server mechanisms (src/xmpp/sasl/), run as a
 * server runs them, with the input as what the client sends.
 *
 * Input: byte 0 picks the exchange, the rest is the client's data.
 *   bits 0-2: mechanism, an index into mechs[] (modulo its size);
 *   bit 3:    the account does not exist (creds NULL: fake salt and keys);
 *   bit 4:    no initial response (the server must send one empty
 *             challenge first);
 *   bit 5:    the TLS channel has only tls-server-end-point binding data;
 *   bit 6:    send one more message after the exchange ended;
 *   bit 7:    random server nonce instead of the fixed test nonce.
 * For SCRAM the data is client-first, then optionally a 0xff byte and
 * client-final (0xff is never in valid UTF-8, so no valid message loses
 * anything). A client-final that ends in ",p=" gets the correct proof for
 * the test password appended, so that the success path is reached too.
 * For PLAIN the data is the whole message.
 *
 * Oracles: no crash, no leak (ASan); SASL_SUCCESS only for an existing
 * account and the right password or proof, and then always for a
 * well-formed exchange with it; the server signature is the one RFC 5802
 * §3 defines; a step after the end fails; every failure names a
 * condition of RFC 6120 §6.5.
 *
 * The harness reads the exchange state through mech.h (the AuthMessage,
 * the expected channel binding and nonce) to build the proof the way a
 * real client would have. */
#include "fuzz.h"

#include <stdbool.h>
#include <string.h>

#include <openssl/evp.h>

#include "core/buf.h"
#include "xmpp/base64.h"
#include "xmpp/sasl/mech.h"
#include "xmpp/sasl/sasl.h"

#define PASSWORD   "pencil"
#define TEST_NONCE "fuzzsnonce"
#define SEP	   0xff

static const char *const mechs[] = {
    "SCRAM-SHA-1",	  "SCRAM-SHA-256",	"SCRAM-SHA-512", "SCRAM-SHA-1-PLUS",
    "SCRAM-SHA-256-PLUS", "SCRAM-SHA-512-PLUS", "PLAIN",
};

static const unsigned char secret[32] = "fuzz-secret-fuzz-secret-fuzz-sec";
static const unsigned char exporter[32] = "exporter-exporter-exporter-expor";
static const unsigned char endpoint[32] = "endpoint-endpoint-endpoint-endpo";
static const struct sasl_cbind cb_both = {exporter, 32, endpoint, 32};
static const struct sasl_cbind cb_endpoint = {NULL, 0, endpoint, 32};

/* The account, derived once: PBKDF2 per input would make the target a
 * PBKDF2 benchmark. client_key is what a client derives from PASSWORD. */
static struct scram_creds creds;
static unsigned char client_key[SCRAM_NHASH][SCRAM_MAX_KEY];

static const EVP_MD *md_of(enum scram_hash h)
{
	return h == SCRAM_SHA1 ? EVP_sha1() : h == SCRAM_SHA256 ? EVP_sha256() : EVP_sha512();
}

static void init(void)
{
	static bool done;

	if (done)
		return;
	done = true;
	FUZZ_CHECK(scram_make_creds(PASSWORD, SCRAM_MIN_ITERATIONS, &creds) == 0);
	for (int h = 0; h < SCRAM_NHASH; h++) {
		const struct scram_key *k = &creds.k[h];
		size_t hl = scram_hash_len((enum scram_hash)h);
		unsigned char salted[SCRAM_MAX_KEY], stored[SCRAM_MAX_KEY];

		FUZZ_CHECK(PKCS5_PBKDF2_HMAC(PASSWORD, strlen(PASSWORD), k->salt, (int)k->salt_len,
					     k->iterations, md_of((enum scram_hash)h), (int)hl,
					     salted) == 1);
		FUZZ_CHECK(scram_hmac((enum scram_hash)h, salted, hl, "Client Key", 10,
				      client_key[h]) == 0);
		/* The harness's client and the server agree on the keys. */
		FUZZ_CHECK(scram_digest((enum scram_hash)h, client_key[h], hl, stored) == 0);
		FUZZ_CHECK(memcmp(stored, k->stored_key, hl) == 0);
	}
}

static bool known_condition(const char *c)
{
	static const char *const conds[] = {
	    "not-authorized",	   "malformed-request",	 "invalid-authzid",
	    "encryption-required", "mechanism-too-weak", "temporary-auth-failure",
	};
	for (size_t i = 0; i < sizeof conds / sizeof conds[0]; i++)
		if (strcmp(c, conds[i]) == 0)
			return true;
	return false;
}

static void check_rc(const struct sasl *s, enum sasl_rc rc)
{
	if (rc == SASL_FAIL)
		FUZZ_CHECK(known_condition(sasl_condition(s)));
}

static bool ends_with(const char *p, size_t len, const char *suffix)
{
	size_t n = strlen(suffix);
	return len >= n && memcmp(p + len - n, suffix, n) == 0;
}

/* RFC 5802 §3: ClientProof = ClientKey XOR HMAC(StoredKey, AuthMessage),
 * appended in base64 to the client-final-message-without-proof. */
static void add_proof(const struct sasl *s, struct buf *final, const char *wp, size_t wp_len)
{
	enum scram_hash h = s->hash;
	size_t hl = scram_hash_len(h);
	unsigned char sig[SCRAM_MAX_KEY], proof[SCRAM_MAX_KEY];
	char b64[((SCRAM_MAX_KEY + 2) / 3) * 4 + 1];
	struct buf auth = BUF_INIT;

	buf_add(&auth, buf_head(&s->auth), buf_pending(&s->auth));
	buf_addc(&auth, ',');
	buf_add(&auth, wp, wp_len);
	FUZZ_CHECK(scram_hmac(h, creds.k[h].stored_key, hl, buf_head(&auth), buf_pending(&auth),
			      sig) == 0);
	for (size_t i = 0; i < hl; i++)
		proof[i] = client_key[h][i] ^ sig[i];
	base64_encode(proof, hl, b64);
	buf_add(final, wp, wp_len);
	buf_adds(final, ",p=");
	buf_adds(final, b64);
	buf_free(&auth);
}

/* What a correct client sends as client-final-message-without-proof. */
static bool well_formed_final(const struct sasl *s, const char *wp, size_t wp_len)
{
	struct buf want = BUF_INIT;
	char *b64 = malloc(base64_encoded_len(buf_pending(&s->cbind)) + 1);

	FUZZ_CHECK(b64 != NULL);
	base64_encode((const unsigned char *)buf_head(&s->cbind), buf_pending(&s->cbind), b64);
	buf_adds(&want, "c=");
	buf_adds(&want, b64);
	buf_adds(&want, ",r=");
	buf_add(&want, buf_head(&s->nonce), buf_pending(&s->nonce));
	bool same = buf_pending(&want) == wp_len && memcmp(buf_head(&want), wp, wp_len) == 0;
	buf_free(&want);
	free(b64);
	return same;
}

/* RFC 5802 §3: the server's answer is v=base64(HMAC(ServerKey, AuthMessage)). */
static void check_server_signature(const struct sasl *s, const char *auth, size_t auth_len,
				   const struct buf *out)
{
	enum scram_hash h = s->hash;
	size_t hl = scram_hash_len(h);
	unsigned char sig[SCRAM_MAX_KEY];
	char b64[((SCRAM_MAX_KEY + 2) / 3) * 4 + 1];

	FUZZ_CHECK(scram_hmac(h, creds.k[h].server_key, hl, auth, auth_len, sig) == 0);
	base64_encode(sig, hl, b64);
	FUZZ_CHECK(buf_pending(out) == 2 + strlen(b64));
	FUZZ_CHECK(memcmp(buf_head(out), "v=", 2) == 0);
	FUZZ_CHECK(memcmp(buf_head(out) + 2, b64, strlen(b64)) == 0);
}

static enum sasl_rc scram_final(struct sasl *s, bool unknown, const char *in, size_t len,
				struct buf *out)
{
	struct buf final = BUF_INIT, auth = BUF_INIT;
	bool self_proof = ends_with(in, len, ",p=");
	size_t wp_len = self_proof ? len - 3 : 0;
	bool correct = false;
	enum sasl_rc rc;

	if (self_proof) {
		add_proof(s, &final, in, wp_len);
		correct = !unknown && well_formed_final(s, in, wp_len);
		buf_add(&auth, buf_head(&s->auth), buf_pending(&s->auth));
		buf_addc(&auth, ',');
		buf_add(&auth, in, wp_len);
	} else {
		buf_add(&final, in, len);
	}
	buf_reset(out);
	/* An empty response is data of length 0, not "no data" (NULL). */
	rc = sasl_step(s, (const unsigned char *)(final.data ? buf_head(&final) : ""),
		       buf_pending(&final), out);
	check_rc(s, rc);
	FUZZ_CHECK(rc == SASL_SUCCESS || rc == SASL_FAIL);
	if (rc == SASL_SUCCESS) {
		/* Without the password nobody gets in. */
		FUZZ_CHECK(self_proof && !unknown);
		check_server_signature(s, buf_head(&auth), buf_pending(&auth), out);
	}
	if (correct && buf_pending(&final) <= SASL_MAX_INPUT)
		FUZZ_CHECK(rc == SASL_SUCCESS);
	buf_free(&final);
	buf_free(&auth);
	return rc;
}

static enum sasl_rc plain_final(struct sasl *s, bool unknown, const char *in, size_t len,
				struct buf *out)
{
	/* PLAIN's password is the part after the second NUL. */
	const char *nul1 = memchr(in, '\0', len);
	const char *nul2 = nul1 ? memchr(nul1 + 1, '\0', len - (size_t)(nul1 + 1 - in)) : NULL;
	const char *pw = nul2 ? nul2 + 1 : NULL;
	size_t pw_len = pw ? len - (size_t)(pw - in) : 0;
	bool right = !unknown && pw_len == strlen(PASSWORD) && memcmp(pw, PASSWORD, pw_len) == 0;

	enum sasl_rc rc = sasl_supply_creds(s, unknown ? NULL : &creds, out);
	check_rc(s, rc);
	FUZZ_CHECK(rc == SASL_SUCCESS || rc == SASL_FAIL);
	/* OpaqueString leaves ASCII as it is, so only these bytes prepare to
	 * the password. */
	FUZZ_CHECK((rc == SASL_SUCCESS) == right);
	FUZZ_CHECK(buf_pending(out) == 0);
	return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct buf out = BUF_INIT;
	enum sasl_rc rc;

	init();
	if (size < 1)
		return 0;
	uint8_t sel = data[0];
	const char *mech = mechs[(sel & 7) % (sizeof mechs / sizeof mechs[0])];
	bool plain = strcmp(mech, "PLAIN") == 0;
	bool unknown = sel & 8, no_initial = sel & 16, extra = sel & 64;
	struct sasl_ctx ctx = {
	    .tls = true,
	    .cb = sel & 32 ? &cb_endpoint : &cb_both,
	    .allow_plain = true,
	    .server_secret = secret,
	    .secret_len = sizeof secret,
	    .fake_iterations = SCRAM_MIN_ITERATIONS,
	};
	const char *first = (const char *)data + 1, *second = NULL;
	size_t first_len = size - 1, second_len = 0;
	if (!plain) {
		const char *sep = memchr(first, SEP, first_len);
		if (sep) {
			second = sep + 1;
			second_len = first_len - (size_t)(second - first);
			first_len = (size_t)(sep - first);
		}
	}

	struct sasl *s = sasl_new(mech, &ctx);
	FUZZ_CHECK(s != NULL);
	FUZZ_CHECK(strcmp(sasl_mech_name(s), mech) == 0);
	if (!(sel & 128))
		sasl_set_test_nonce(s, TEST_NONCE);

	if (no_initial) {
		rc = sasl_step(s, NULL, 0, &out);
		FUZZ_CHECK(rc == SASL_CONTINUE && buf_pending(&out) == 0);
	}
	rc = sasl_step(s, (const unsigned char *)first, first_len, &out);
	check_rc(s, rc);
	FUZZ_CHECK(rc == SASL_NEED_CREDS || rc == SASL_FAIL);
	if (rc == SASL_NEED_CREDS) {
		const char *authcid = sasl_authcid(s);
		FUZZ_CHECK(authcid != NULL && authcid[0] != '\0');
		FUZZ_CHECK(strlen(authcid) < SASL_AUTHCID_MAX);
		if (sasl_authzid(s))
			FUZZ_CHECK(strlen(sasl_authzid(s)) < SASL_AUTHZID_MAX);
		/* A response while the lookup runs is out of turn. */
		if (extra && second_len == 0) {
			rc = sasl_step(s, (const unsigned char *)"x", 1, &out);
			FUZZ_CHECK(rc == SASL_FAIL);
			goto out;
		}
		if (plain) {
			rc = plain_final(s, unknown, first, first_len, &out);
		} else {
			rc = sasl_supply_creds(s, unknown ? NULL : &creds, &out);
			check_rc(s, rc);
			FUZZ_CHECK(rc == SASL_CONTINUE);
			/* RFC 5802 §7: server-first-message = nonce "," salt "," count */
			FUZZ_CHECK(buf_pending(&out) > 2 && memcmp(buf_head(&out), "r=", 2) == 0);
			if (second)
				rc = scram_final(s, unknown, second, second_len, &out);
		}
	}
	if (extra && rc != SASL_CONTINUE) {
		rc = sasl_step(s, (const unsigned char *)"x", 1, &out);
		FUZZ_CHECK(rc == SASL_FAIL);
		check_rc(s, rc);
	}
out:
	sasl_free(s);
	buf_free(&out);
	return 0;
}
