/* SASL server mechanisms: SCRAM against the published exchanges
 * (RFC 5802 §5, RFC 7677 §3), every hash and -PLUS variant against a
 * client written here with OpenSSL, the unknown-user disguise, malformed
 * input, PLAIN and the mechanism list. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "core/buf.h"
#include "xmpp/base64.h"
#include "xmpp/sasl/sasl.h"

static const unsigned char secret[32] = "0123456789abcdef0123456789abcdef";
static const unsigned char exporter[32] = "exporter-exporter-exporter-expor";
static const unsigned char endpoint[32] = "endpoint-endpoint-endpoint-endpo";

static const struct sasl_cbind cb_both = {exporter, 32, endpoint, 32};
static const struct sasl_cbind cb_endpoint_only = {NULL, 0, endpoint, 32};

static struct sasl_ctx ctx_plain(void)
{
	return (struct sasl_ctx){.tls = true,
				 .allow_plain = true,
				 .server_secret = secret,
				 .secret_len = sizeof secret,
				 .fake_iterations = 4096};
}

static struct sasl_ctx ctx_cb(const struct sasl_cbind *cb)
{
	struct sasl_ctx c = ctx_plain();
	c.cb = cb;
	return c;
}

static const EVP_MD *md_of(enum scram_hash h)
{
	return h == SCRAM_SHA1 ? EVP_sha1() : h == SCRAM_SHA256 ? EVP_sha256() : EVP_sha512();
}

static const char *mech_of(enum scram_hash h, bool plus)
{
	static const char *names[2][3] = {
	    {"SCRAM-SHA-1", "SCRAM-SHA-256", "SCRAM-SHA-512"},
	    {"SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS", "SCRAM-SHA-512-PLUS"},
	};
	return names[plus][h];
}

/* Test client side of RFC 5802 §3, written against OpenSSL directly so
 * that it does not share code with the server. */
static void client_keys(enum scram_hash h, const char *password, const unsigned char *salt,
			size_t salt_len, int iter, unsigned char *client_key,
			unsigned char *stored_key, unsigned char *server_key)
{
	unsigned char salted[64];
	unsigned int n;
	int hl = EVP_MD_get_size(md_of(h));

	assert_int_equal(PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, (int)salt_len,
					   iter, md_of(h), hl, salted),
			 1);
	assert_non_null(
	    HMAC(md_of(h), salted, hl, (const unsigned char *)"Client Key", 10, client_key, &n));
	assert_non_null(
	    HMAC(md_of(h), salted, hl, (const unsigned char *)"Server Key", 10, server_key, &n));
	assert_int_equal(EVP_Digest(client_key, (size_t)hl, stored_key, &n, md_of(h), NULL), 1);
}

/* Stored keys for one hash, as an account would have them. */
static void set_key(struct scram_creds *c, enum scram_hash h, const char *password,
		    const unsigned char *salt, size_t salt_len, int iter)
{
	unsigned char ck[64];
	struct scram_key *k = &c->k[h];

	k->iterations = iter;
	k->salt_len = salt_len;
	memcpy(k->salt, salt, salt_len);
	client_keys(h, password, salt, salt_len, iter, ck, k->stored_key, k->server_key);
}

static void str_of(struct buf *b, char *out, size_t cap)
{
	size_t n = buf_pending(b);
	assert_true(n < cap);
	if (n)
		memcpy(out, buf_head(b), n);
	out[n] = '\0';
	buf_reset(b);
}

struct client {
	enum scram_hash h;
	const char *gs2;	 /* gs2 header, e.g. "n,," */
	const unsigned char *cb; /* binding data the client sees */
	size_t cb_len;
	const char *user; /* as sent, already saslname-encoded */
	const char *password;
	const char *cnonce;
	const char *final_nonce; /* NULL: the server's combined nonce */
	/* outputs */
	char server_first[512];
	char server_final[256];
	const char *condition;
	int fail_at; /* 1: client-first, 2: creds, 3: client-final, 0: none */
};

/* Runs a whole exchange; creds NULL plays an unknown account. */
static enum sasl_rc client_run(struct sasl *s, struct client *c, const struct scram_creds *creds)
{
	struct buf out = BUF_INIT;
	char first[512], final[1024], cbind_in[256], cbind64[512], proof64[128], nonce[256];
	char salt64[128];
	unsigned char salt[64], ck[64], sk[64], svk[64], sig[64], proof[64];
	char auth[2048];
	int iter = 0;
	unsigned int n;
	int hl = EVP_MD_get_size(md_of(c->h));
	enum sasl_rc rc;

	c->fail_at = 0;
	c->server_first[0] = c->server_final[0] = '\0';
	snprintf(first, sizeof first,
		 "%s"
		 "n=%s,r=%s",
		 c->gs2, c->user, c->cnonce);
	rc = sasl_step(s, (const unsigned char *)first, strlen(first), &out);
	assert_int_equal(buf_pending(&out), 0);
	if (rc != SASL_NEED_CREDS) {
		c->fail_at = 1;
		goto out;
	}
	rc = sasl_supply_creds(s, creds, &out);
	str_of(&out, c->server_first, sizeof c->server_first);
	if (rc != SASL_CONTINUE) {
		c->fail_at = 2;
		goto out;
	}

	/* r=<nonce>,s=<salt>,i=<iter> */
	assert_int_equal(
	    sscanf(c->server_first, "r=%255[^,],s=%127[^,],i=%d", nonce, salt64, &iter), 3);
	assert_memory_equal(nonce, c->cnonce, strlen(c->cnonce));
	ssize_t salt_len = base64_decode(salt64, strlen(salt64), salt, sizeof salt);
	assert_true(salt_len > 0);
	client_keys(c->h, c->password, salt, (size_t)salt_len, iter, ck, sk, svk);

	size_t gl = strlen(c->gs2);
	memcpy(cbind_in, c->gs2, gl);
	if (c->cb_len)
		memcpy(cbind_in + gl, c->cb, c->cb_len);
	EVP_EncodeBlock((unsigned char *)cbind64, (const unsigned char *)cbind_in,
			(int)(gl + c->cb_len));
	snprintf(final, sizeof final, "c=%s,r=%s", cbind64,
		 c->final_nonce ? c->final_nonce : nonce);
	snprintf(auth, sizeof auth, "%s,%s,%s", first + gl, c->server_first, final);
	assert_non_null(
	    HMAC(md_of(c->h), sk, hl, (const unsigned char *)auth, strlen(auth), sig, &n));
	for (int i = 0; i < hl; i++)
		proof[i] = ck[i] ^ sig[i];
	EVP_EncodeBlock((unsigned char *)proof64, proof, hl);
	size_t fl = strlen(final);
	snprintf(final + fl, sizeof final - fl, ",p=%s", proof64);

	rc = sasl_step(s, (const unsigned char *) final, strlen(final), &out);
	str_of(&out, c->server_final, sizeof c->server_final);
	if (rc != SASL_SUCCESS) {
		c->fail_at = 3;
		goto out;
	}
	/* The server must prove it knows ServerKey. */
	char want[200];
	assert_non_null(
	    HMAC(md_of(c->h), svk, hl, (const unsigned char *)auth, strlen(auth), sig, &n));
	memcpy(want, "v=", 2);
	EVP_EncodeBlock((unsigned char *)want + 2, sig, hl);
	assert_string_equal(c->server_final, want);
out:
	c->condition = rc == SASL_FAIL ? sasl_condition(s) : NULL;
	buf_free(&out);
	return rc;
}

static struct scram_creds pencil_creds(void)
{
	struct scram_creds c;
	assert_int_equal(scram_make_creds("pencil", 4096, &c), 0);
	return c;
}

/* Feeds one message; returns rc and leaves the output in out. */
static enum sasl_rc step_str(struct sasl *s, const char *msg, char *out, size_t cap)
{
	struct buf b = BUF_INIT;
	enum sasl_rc rc = sasl_step(s, (const unsigned char *)msg, strlen(msg), &b);
	str_of(&b, out, cap);
	buf_free(&b);
	return rc;
}

static enum sasl_rc supply(struct sasl *s, const struct scram_creds *c, char *out, size_t cap)
{
	struct buf b = BUF_INIT;
	enum sasl_rc rc = sasl_supply_creds(s, c, &b);
	str_of(&b, out, cap);
	buf_free(&b);
	return rc;
}

/* RFC 5802 §5, byte for byte. */
static void test_rfc5802_sha1(void **state)
{
	(void)state;
	struct sasl_ctx ctx = ctx_plain();
	struct sasl *s = sasl_new("SCRAM-SHA-1", &ctx);
	struct scram_creds creds;
	unsigned char salt[16];
	char out[512];

	assert_non_null(s);
	memset(&creds, 0, sizeof creds);
	assert_int_equal(base64_decode("QSXCR+Q6sek8bf92", 16, salt, sizeof salt), 12);
	set_key(&creds, SCRAM_SHA1, "pencil", salt, 12, 4096);
	sasl_set_test_nonce(s, "3rfcNHYJY1ZVvWVs7j");

	assert_int_equal(step_str(s, "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL", out, sizeof out),
			 SASL_NEED_CREDS);
	assert_string_equal(out, "");
	assert_string_equal(sasl_authcid(s), "user");
	assert_null(sasl_authzid(s));
	assert_int_equal(supply(s, &creds, out, sizeof out), SASL_CONTINUE);
	assert_string_equal(
	    out, "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096");
	assert_int_equal(step_str(s,
				  "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,"
				  "p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
				  out, sizeof out),
			 SASL_SUCCESS);
	assert_string_equal(out, "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=");
	/* Nothing after the end. */
	assert_int_equal(step_str(s, "x", out, sizeof out), SASL_FAIL);
	sasl_free(s);
}

/* RFC 7677 §3, byte for byte. */
static void test_rfc7677_sha256(void **state)
{
	(void)state;
	struct sasl_ctx ctx = ctx_plain();
	struct sasl *s = sasl_new("SCRAM-SHA-256", &ctx);
	struct scram_creds creds;
	unsigned char salt[16];
	char out[512];

	assert_non_null(s);
	memset(&creds, 0, sizeof creds);
	assert_int_equal(base64_decode("W22ZaJ0SNY7soEsUEjb6gQ==", 24, salt, sizeof salt), 16);
	set_key(&creds, SCRAM_SHA256, "pencil", salt, 16, 4096);
	sasl_set_test_nonce(s, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");

	assert_int_equal(step_str(s, "n,,n=user,r=rOprNGfwEbeRWgbNEkqO", out, sizeof out),
			 SASL_NEED_CREDS);
	assert_int_equal(supply(s, &creds, out, sizeof out), SASL_CONTINUE);
	assert_string_equal(out, "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
				 "s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
	assert_int_equal(step_str(s,
				  "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
				  "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
				  out, sizeof out),
			 SASL_SUCCESS);
	assert_string_equal(out, "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
	sasl_free(s);
}

/* The same published exchange with a wrong proof must fail: guards
 * against a server that accepts any proof. */
static void test_rfc5802_wrong_proof(void **state)
{
	(void)state;
	struct sasl_ctx ctx = ctx_plain();
	struct sasl *s = sasl_new("SCRAM-SHA-1", &ctx);
	struct scram_creds creds;
	unsigned char salt[16];
	char out[512];

	memset(&creds, 0, sizeof creds);
	assert_int_equal(base64_decode("QSXCR+Q6sek8bf92", 16, salt, sizeof salt), 12);
	set_key(&creds, SCRAM_SHA1, "pencil", salt, 12, 4096);
	sasl_set_test_nonce(s, "3rfcNHYJY1ZVvWVs7j");
	assert_int_equal(step_str(s, "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL", out, sizeof out),
			 SASL_NEED_CREDS);
	assert_int_equal(supply(s, &creds, out, sizeof out), SASL_CONTINUE);
	/* Last proof byte changed: 0x3b ('Ts=' -> 'Tc=' keeps canonical). */
	assert_int_equal(step_str(s,
				  "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,"
				  "p=v0X8v3Bz2T0CJGbJQyF0X+HI4Tc=",
				  out, sizeof out),
			 SASL_FAIL);
	assert_string_equal(out, "");
	assert_string_equal(sasl_condition(s), "not-authorized");
	sasl_free(s);
}

static void test_every_hash_round_trip(void **state)
{
	(void)state;
	struct scram_creds creds = pencil_creds();
	struct sasl_ctx ctx = ctx_plain();

	for (int h = 0; h < SCRAM_NHASH; h++) {
		struct sasl *s = sasl_new(mech_of((enum scram_hash)h, false), &ctx);
		struct client c = {.h = (enum scram_hash)h,
				   .gs2 = "n,,",
				   .user = "User",
				   .password = "pencil",
				   .cnonce = "abc"};
		assert_non_null(s);
		assert_string_equal(sasl_mech_name(s), mech_of((enum scram_hash)h, false));
		assert_int_equal(client_run(s, &c, &creds), SASL_SUCCESS);
		/* UsernameCaseMapped */
		assert_string_equal(sasl_authcid(s), "user");
		sasl_free(s);

		/* Same account, wrong password. */
		s = sasl_new(mech_of((enum scram_hash)h, false), &ctx);
		c.password = "pencil2";
		assert_int_equal(client_run(s, &c, &creds), SASL_FAIL);
		assert_int_equal(c.fail_at, 3);
		assert_string_equal(c.condition, "not-authorized");
		assert_string_equal(c.server_final, "");
		sasl_free(s);
	}
}

static void test_plus_variants(void **state)
{
	(void)state;
	struct scram_creds creds = pencil_creds();
	struct sasl_ctx ctx = ctx_cb(&cb_both);
	static const struct {
		const char *gs2;
		const unsigned char *data;
	} types[] = {
	    {"p=tls-exporter,,", exporter},
	    {"p=tls-server-end-point,,", endpoint},
	};
	unsigned char wrong[32];

	memcpy(wrong, exporter, 32);
	wrong[31] ^= 1;
	for (int h = 0; h < SCRAM_NHASH; h++) {
		for (size_t t = 0; t < 2; t++) {
			struct client c = {.h = (enum scram_hash)h,
					   .gs2 = types[t].gs2,
					   .cb = types[t].data,
					   .cb_len = 32,
					   .user = "user",
					   .password = "pencil",
					   .cnonce = "xyz"};
			struct sasl *s = sasl_new(mech_of((enum scram_hash)h, true), &ctx);
			assert_non_null(s);
			assert_int_equal(client_run(s, &c, &creds), SASL_SUCCESS);
			sasl_free(s);

			/* The client sees other binding data: a man in the middle. */
			c.cb = wrong;
			s = sasl_new(mech_of((enum scram_hash)h, true), &ctx);
			assert_int_equal(client_run(s, &c, &creds), SASL_FAIL);
			assert_int_equal(c.fail_at, 3);
			assert_string_equal(c.condition, "not-authorized");
			sasl_free(s);

			/* The other type's data under this type's name. */
			c.cb = types[1 - t].data;
			s = sasl_new(mech_of((enum scram_hash)h, true), &ctx);
			assert_int_equal(client_run(s, &c, &creds), SASL_FAIL);
			assert_int_equal(c.fail_at, 3);
			sasl_free(s);

			/* Right data, no data appended: c= carries the header only. */
			c.cb_len = 0;
			s = sasl_new(mech_of((enum scram_hash)h, true), &ctx);
			assert_int_equal(client_run(s, &c, &creds), SASL_FAIL);
			sasl_free(s);
		}

		/* -PLUS needs "p=". */
		static const char *const no_p[] = {"n,,", "y,,"};
		for (size_t i = 0; i < 2; i++) {
			struct client c = {.h = (enum scram_hash)h,
					   .gs2 = no_p[i],
					   .user = "user",
					   .password = "pencil",
					   .cnonce = "xyz"};
			struct sasl *s = sasl_new(mech_of((enum scram_hash)h, true), &ctx);
			assert_int_equal(client_run(s, &c, &creds), SASL_FAIL);
			assert_int_equal(c.fail_at, 1);
			sasl_free(s);
		}
	}
}

static void test_cb_types(void **state)
{
	(void)state;
	struct scram_creds creds = pencil_creds();
	struct sasl_ctx ctx = ctx_cb(&cb_endpoint_only);
	struct client c = {.h = SCRAM_SHA256,
			   .gs2 = "p=tls-exporter,,",
			   .cb = exporter,
			   .cb_len = 32,
			   .user = "user",
			   .password = "pencil",
			   .cnonce = "n"};
	struct sasl *s;

	/* Only tls-server-end-point is available: tls-exporter fails. */
	s = sasl_new("SCRAM-SHA-256-PLUS", &ctx);
	assert_int_equal(client_run(s, &c, &creds), SASL_FAIL);
	assert_int_equal(c.fail_at, 1);
	sasl_free(s);

	c.gs2 = "p=tls-server-end-point,,";
	c.cb = endpoint;
	s = sasl_new("SCRAM-SHA-256-PLUS", &ctx);
	assert_int_equal(client_run(s, &c, &creds), SASL_SUCCESS);
	sasl_free(s);

	/* Types we do not implement. */
	ctx = ctx_cb(&cb_both);
	static const char *const unknown[] = {"p=tls-unique,,", "p=TLS-EXPORTER,,",
					      "p=tls-exporter-x,,"};
	for (size_t i = 0; i < 3; i++) {
		c.gs2 = unknown[i];
		c.cb = exporter;
		s = sasl_new("SCRAM-SHA-256-PLUS", &ctx);
		assert_int_equal(client_run(s, &c, &creds), SASL_FAIL);
		assert_int_equal(c.fail_at, 1);
		sasl_free(s);
	}
}

static void test_downgrade(void **state)
{
	(void)state;
	struct scram_creds creds = pencil_creds();
	struct sasl_ctx with_cb = ctx_cb(&cb_both), without_cb = ctx_plain();
	struct client c = {
	    .h = SCRAM_SHA256, .gs2 = "y,,", .user = "user", .password = "pencil", .cnonce = "n"};
	struct sasl *s;

	/* "y" without -PLUS on offer is honest: the client could bind, we cannot. */
	s = sasl_new("SCRAM-SHA-256", &without_cb);
	assert_int_equal(client_run(s, &c, &creds), SASL_SUCCESS);
	sasl_free(s);

	/* "y" when we offered -PLUS: someone stripped it. RFC 5802 §6. */
	s = sasl_new("SCRAM-SHA-256", &with_cb);
	assert_int_equal(client_run(s, &c, &creds), SASL_FAIL);
	assert_int_equal(c.fail_at, 1);
	assert_string_equal(c.condition, "not-authorized");
	sasl_free(s);

	/* "n" on a plain SCRAM mechanism is fine either way. */
	c.gs2 = "n,,";
	s = sasl_new("SCRAM-SHA-256", &with_cb);
	assert_int_equal(client_run(s, &c, &creds), SASL_SUCCESS);
	sasl_free(s);

	/* "p=" on a mechanism without -PLUS is malformed. */
	c.gs2 = "p=tls-exporter,,";
	c.cb = exporter;
	c.cb_len = 32;
	s = sasl_new("SCRAM-SHA-256", &with_cb);
	assert_int_equal(client_run(s, &c, &creds), SASL_FAIL);
	assert_int_equal(c.fail_at, 1);
	assert_string_equal(c.condition, "malformed-request");
	sasl_free(s);
}

/* An unknown account and a wrong password must be indistinguishable. */
static void test_unknown_user_like_wrong_password(void **state)
{
	(void)state;
	struct scram_creds creds = pencil_creds();
	struct sasl_ctx ctx = ctx_plain();

	for (int h = 0; h < SCRAM_NHASH; h++) {
		struct client wrong = {.h = (enum scram_hash)h,
				       .gs2 = "n,,",
				       .user = "user",
				       .password = "nope",
				       .cnonce = "cn"};
		struct client unknown = wrong, unknown2 = wrong, other = wrong;
		struct sasl *s1 = sasl_new(mech_of((enum scram_hash)h, false), &ctx);
		struct sasl *s2 = sasl_new(mech_of((enum scram_hash)h, false), &ctx);
		struct sasl *s3 = sasl_new(mech_of((enum scram_hash)h, false), &ctx);
		struct sasl *s4 = sasl_new(mech_of((enum scram_hash)h, false), &ctx);
		sasl_set_test_nonce(s1, "SRV");
		sasl_set_test_nonce(s2, "SRV");
		sasl_set_test_nonce(s3, "SRV");
		sasl_set_test_nonce(s4, "SRV");
		other.user = "someone";

		assert_int_equal(client_run(s1, &wrong, &creds), SASL_FAIL);
		assert_int_equal(client_run(s2, &unknown, NULL), SASL_FAIL);
		assert_int_equal(client_run(s3, &unknown2, NULL), SASL_FAIL);
		assert_int_equal(client_run(s4, &other, NULL), SASL_FAIL);

		assert_int_equal(wrong.fail_at, 3);
		assert_int_equal(unknown.fail_at, 3);
		assert_string_equal(wrong.condition, unknown.condition);
		assert_string_equal(unknown.condition, "not-authorized");
		assert_string_equal(wrong.server_final, unknown.server_final);
		/* Same shape: r=cnSRV,s=<16 bytes>,i=4096 */
		assert_int_equal(strlen(wrong.server_first), strlen(unknown.server_first));
		assert_string_equal(strstr(wrong.server_first, ",i="),
				    strstr(unknown.server_first, ",i="));
		/* A real account's salt is stable, so the fake one must be too... */
		assert_string_equal(unknown.server_first, unknown2.server_first);
		/* ...and differ between names and from the real one. */
		assert_string_not_equal(unknown.server_first, other.server_first);
		assert_string_not_equal(unknown.server_first, wrong.server_first);
		sasl_free(s1);
		sasl_free(s2);
		sasl_free(s3);
		sasl_free(s4);
	}

	/* The fake iteration count is the configured one, clamped. */
	ctx.fake_iterations = 10000;
	struct sasl *s = sasl_new("SCRAM-SHA-256", &ctx);
	char out[512];
	assert_int_equal(step_str(s, "n,,n=ghost,r=abc", out, sizeof out), SASL_NEED_CREDS);
	assert_int_equal(supply(s, NULL, out, sizeof out), SASL_CONTINUE);
	assert_non_null(strstr(out, ",i=10000"));
	sasl_free(s);
	ctx.fake_iterations = 1;
	s = sasl_new("SCRAM-SHA-256", &ctx);
	assert_int_equal(step_str(s, "n,,n=ghost,r=abc", out, sizeof out), SASL_NEED_CREDS);
	assert_int_equal(supply(s, NULL, out, sizeof out), SASL_CONTINUE);
	assert_non_null(strstr(out, ",i=4096"));
	sasl_free(s);
}

/* Stored keys out of bounds are not used: the exchange goes on as for an
 * unknown account, and the right password does not get in. */
static void test_stored_bounds(void **state)
{
	(void)state;
	struct scram_creds creds = pencil_creds();
	struct sasl_ctx ctx = ctx_plain();
	struct client c = {
	    .h = SCRAM_SHA256, .gs2 = "n,,", .user = "user", .password = "pencil", .cnonce = "cn"};
	struct sasl *s;

	creds.k[SCRAM_SHA256].iterations = 20000000;
	s = sasl_new("SCRAM-SHA-256", &ctx);
	assert_int_equal(client_run(s, &c, &creds), SASL_FAIL);
	assert_int_equal(c.fail_at, 3);
	assert_non_null(strstr(c.server_first, ",i=4096"));
	sasl_free(s);

	creds = pencil_creds();
	creds.k[SCRAM_SHA256].salt_len = SCRAM_MAX_SALT + 1;
	s = sasl_new("SCRAM-SHA-256", &ctx);
	assert_int_equal(client_run(s, &c, &creds), SASL_FAIL);
	sasl_free(s);

	/* An account without a SHA-512 key cannot use SCRAM-SHA-512. */
	creds = pencil_creds();
	creds.k[SCRAM_SHA512].iterations = 0;
	c.h = SCRAM_SHA512;
	s = sasl_new("SCRAM-SHA-512", &ctx);
	assert_int_equal(client_run(s, &c, &creds), SASL_FAIL);
	assert_string_equal(c.condition, "not-authorized");
	sasl_free(s);

	/* scram_make_creds refuses counts out of bounds, and salts are fresh. */
	struct scram_creds a, b;
	assert_int_equal(scram_make_creds("x", 4095, &a), -1);
	assert_int_equal(scram_make_creds("x", 10000001, &a), -1);
	assert_int_equal(scram_make_creds("x", 4096, &a), 0);
	assert_int_equal(scram_make_creds("x", 4096, &b), 0);
	for (int h = 0; h < SCRAM_NHASH; h++) {
		assert_int_equal(a.k[h].salt_len, 16);
		assert_int_equal(a.k[h].iterations, 4096);
		assert_memory_not_equal(a.k[h].salt, b.k[h].salt, 16);
		assert_memory_not_equal(a.k[h].stored_key, b.k[h].stored_key,
					scram_hash_len((enum scram_hash)h));
	}
	assert_memory_not_equal(a.k[0].salt, a.k[1].salt, 16);
	assert_int_equal(scram_hash_len(SCRAM_SHA1), 20);
	assert_int_equal(scram_hash_len(SCRAM_SHA256), 32);
	assert_int_equal(scram_hash_len(SCRAM_SHA512), 64);
	assert_string_equal(scram_hash_name(SCRAM_SHA512), "SHA-512");
}

static bool cond_ok(const struct sasl *s)
{
	const char *c = sasl_condition(s);
	return strcmp(c, "malformed-request") == 0 || strcmp(c, "not-authorized") == 0;
}

static void test_malformed_first(void **state)
{
	(void)state;
	static const char *const bad[] = {
	    "",
	    "n",
	    "n,",
	    "n,,",
	    "x,,n=user,r=abc",
	    "N,,n=user,r=abc",
	    ",,n=user,r=abc",
	    "n,,n=user",
	    "n,,n=user,",
	    "n,,r=abc",
	    "n,,r=abc,n=user",
	    "n,,n=,r=abc",
	    "n,,n=us=2Xer,r=abc", /* bad escape */
	    "n,,n=us=2cer,r=abc", /* escapes are upper case */
	    "n,,n=user=,r=abc",
	    "n,,n=us=er,r=abc",
	    "n,,m=ext,n=user,r=abc", /* RFC 5802 §5.1: mandatory extension */
	    "n,,n=user,r=",
	    "n,,n=user,r=ab cd", /* space is not printable */
	    "n,,n=user,r=ab\x7f",
	    "n,,n=user,r=\xc3\xa9",
	    "n,,n=user,r=abc,",
	    "n,,n=user,r=abc,1=x",
	    "n,,n=user,r=abc,x=",
	    "n,,n=user,r=abc,x",
	    "n,a=,n=user,r=abc",
	    "n,a=x,,n=user,r=abc",
	    "n,b=x,n=user,r=abc",
	    "n,a=x",
	    "p=,,n=user,r=abc",
	    "p=tls exporter,,n=user,r=abc",
	    "p=tls-exporter",
	    "n,,n=\xff\xfe,r=abc",		 /* not UTF-8 */
	    "n,,n=\xc0\xaf,r=abc",		 /* overlong */
	    "n,,n=a\xed\xa0\x80,r=abc",		 /* surrogate */
	    "n,a=\xc0\xaf,n=user,r=abc",	 /* overlong, where PRECIS does not look */
	    "n,a=\xf4\x90\x80\x80,n=user,r=abc", /* beyond U+10FFFF */
	    "n,a=\xe0\x80,n=user,r=abc",	 /* truncated */
	    "n,,n=user,r=abc,x=a\xe0\x80",	 /* truncated at the very end */
	};
	struct sasl_ctx ctx = ctx_plain();
	char out[512];

	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct sasl *s = sasl_new("SCRAM-SHA-256", &ctx);
		enum sasl_rc rc = step_str(s, bad[i], out, sizeof out);
		if (rc != SASL_FAIL)
			fail_msg("accepted client-first \"%s\"", bad[i]);
		assert_string_equal(out, "");
		assert_true(cond_ok(s));
		/* And it stays failed. */
		assert_int_equal(step_str(s, "n,,n=user,r=abc", out, sizeof out), SASL_FAIL);
		sasl_free(s);
	}

	/* NUL inside. */
	struct sasl *s = sasl_new("SCRAM-SHA-256", &ctx);
	struct buf b = BUF_INIT;
	assert_int_equal(sasl_step(s, (const unsigned char *)"n,,n=us\0er,r=abc", 16, &b),
			 SASL_FAIL);
	sasl_free(s);

	/* Huge: over 4 KiB, however well formed. */
	char *huge = malloc(8192);
	memcpy(huge, "n,,n=user,r=", 12);
	memset(huge + 12, 'a', 8000);
	huge[8012] = '\0';
	s = sasl_new("SCRAM-SHA-256", &ctx);
	assert_int_equal(sasl_step(s, (const unsigned char *)huge, 8012, &b), SASL_FAIL);
	assert_string_equal(sasl_condition(s), "malformed-request");
	sasl_free(s);
	/* Just under the bound is accepted. */
	huge[4096] = '\0';
	s = sasl_new("SCRAM-SHA-256", &ctx);
	assert_int_equal(sasl_step(s, (const unsigned char *)huge, 4096, &b), SASL_NEED_CREDS);
	sasl_free(s);
	free(huge);
	buf_free(&b);
}

/* A valid start, then each bad client-final. */
static void test_malformed_final(void **state)
{
	(void)state;
	struct scram_creds creds = pencil_creds();
	struct sasl_ctx ctx = ctx_plain();
	static const char *const bad[] = {
	    "",
	    "c=biws",
	    "c=biws,r=cnSRV",	     /* no proof */
	    "r=cnSRV,c=biws,p=AAAA", /* order */
	    "c=biw,r=cnSRV,p=AAAA",  /* bad base64 */
	    "c=bi ws,r=cnSRV,p=AAAA",
	    "c=biws\n,r=cnSRV,p=AAAA",
	    "c=,r=cnSRV,p=AAAA",
	    "c=eSws,r=cnSRV,p=AAAA", /* "y,," is not what was sent */
	    "c=biwsAA==,r=cnSRV,p=AAAA",
	    "c=biws,r=cn,p=AAAA", /* client nonce only */
	    "c=biws,r=cnSRVx,p=AAAA",
	    "c=biws,r=,p=AAAA",
	    "c=biws,p=AAAA",
	    "c=biws,r=cnSRV,p=",
	    "c=biws,r=cnSRV,p=AAAA", /* proof too short */
	    "c=biws,r=cnSRV,p=AAAA!AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
	    "c=biws,r=cnSRV,p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", /* wrong proof */
	    "c=biws,r=cnSRV,p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB=", /* bad bits */
	    "c=biws,r=cnSRV,1=x,p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
	    "c=biws,r=cnSRV,p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=,x=y",
	    "c=biws,r=cnSRV,p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=,",
	};
	char out[512];

	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct sasl *s = sasl_new("SCRAM-SHA-256", &ctx);
		sasl_set_test_nonce(s, "SRV");
		assert_int_equal(step_str(s, "n,,n=user,r=cn", out, sizeof out), SASL_NEED_CREDS);
		assert_int_equal(supply(s, &creds, out, sizeof out), SASL_CONTINUE);
		enum sasl_rc rc = step_str(s, bad[i], out, sizeof out);
		if (rc != SASL_FAIL)
			fail_msg("accepted client-final \"%s\"", bad[i]);
		assert_string_equal(out, "");
		assert_true(cond_ok(s));
		sasl_free(s);
	}

	/* A proof made over another nonce: right password, but a replay
	 * of an old exchange looks like this. */
	struct client c = {.h = SCRAM_SHA256,
			   .gs2 = "n,,",
			   .user = "user",
			   .password = "pencil",
			   .cnonce = "cn",
			   .final_nonce = "cnSRW"};
	struct sasl *s2 = sasl_new("SCRAM-SHA-256", &ctx);
	sasl_set_test_nonce(s2, "SRV");
	assert_int_equal(client_run(s2, &c, &creds), SASL_FAIL);
	assert_int_equal(c.fail_at, 3);
	sasl_free(s2);
	c.final_nonce = "cnSRV";
	s2 = sasl_new("SCRAM-SHA-256", &ctx);
	sasl_set_test_nonce(s2, "SRV");
	assert_int_equal(client_run(s2, &c, &creds), SASL_SUCCESS);
	sasl_free(s2);

	/* Huge client-final. */
	struct sasl *s = sasl_new("SCRAM-SHA-256", &ctx);
	char *huge = calloc(1, 5000);
	struct buf b = BUF_INIT;
	memset(huge, 'A', 4999);
	memcpy(huge, "c=", 2);
	assert_int_equal(step_str(s, "n,,n=user,r=cn", out, sizeof out), SASL_NEED_CREDS);
	assert_int_equal(supply(s, &creds, out, sizeof out), SASL_CONTINUE);
	assert_int_equal(sasl_step(s, (const unsigned char *)huge, 4999, &b), SASL_FAIL);
	assert_string_equal(sasl_condition(s), "malformed-request");
	sasl_free(s);
	free(huge);
	buf_free(&b);
}

static void test_sequence(void **state)
{
	(void)state;
	struct scram_creds creds = pencil_creds();
	struct sasl_ctx ctx = ctx_plain();
	struct buf b = BUF_INIT;
	char out[512];
	struct sasl *s;

	/* No initial response: one empty challenge, then the exchange. */
	s = sasl_new("SCRAM-SHA-1", &ctx);
	assert_int_equal(sasl_step(s, NULL, 0, &b), SASL_CONTINUE);
	assert_int_equal(buf_pending(&b), 0);
	struct client c = {
	    .h = SCRAM_SHA1, .gs2 = "n,,", .user = "user", .password = "pencil", .cnonce = "q"};
	assert_int_equal(client_run(s, &c, &creds), SASL_SUCCESS);
	sasl_free(s);

	/* Twice no data. */
	s = sasl_new("SCRAM-SHA-1", &ctx);
	assert_int_equal(sasl_step(s, NULL, 0, &b), SASL_CONTINUE);
	assert_int_equal(sasl_step(s, NULL, 0, &b), SASL_FAIL);
	sasl_free(s);

	/* A response while credentials are looked up. */
	s = sasl_new("SCRAM-SHA-1", &ctx);
	assert_int_equal(step_str(s, "n,,n=user,r=q", out, sizeof out), SASL_NEED_CREDS);
	assert_int_equal(step_str(s, "c=biws", out, sizeof out), SASL_FAIL);
	assert_string_equal(sasl_condition(s), "malformed-request");
	sasl_free(s);

	/* Credentials nobody asked for. */
	s = sasl_new("SCRAM-SHA-1", &ctx);
	assert_int_equal(supply(s, &creds, out, sizeof out), SASL_FAIL);
	sasl_free(s);

	/* Names and identities: saslname escapes, case mapping, authzid. */
	s = sasl_new("SCRAM-SHA-1", &ctx);
	c.user = "Us=2Cer=3D";
	c.gs2 = "n,a=juliet=2Cx=3Dy@example.com,";
	assert_int_equal(client_run(s, &c, NULL), SASL_FAIL);
	assert_string_equal(sasl_authcid(s), "us,er=");
	assert_string_equal(sasl_authzid(s), "juliet,x=y@example.com");
	sasl_free(s);

	/* The authzid is part of what c= must repeat. */
	struct scram_creds k2;
	assert_int_equal(scram_make_creds("pencil", 4096, &k2), 0);
	s = sasl_new("SCRAM-SHA-1", &ctx);
	c.user = "user";
	c.gs2 = "n,a=user@example.com,";
	assert_int_equal(client_run(s, &c, &k2), SASL_SUCCESS);
	assert_string_equal(sasl_authzid(s), "user@example.com");
	sasl_free(s);

	/* A name PRECIS refuses (a space) ends the exchange. */
	s = sasl_new("SCRAM-SHA-1", &ctx);
	assert_int_equal(step_str(s, "n,,n=us er,r=q", out, sizeof out), SASL_FAIL);
	assert_true(cond_ok(s));
	assert_null(sasl_authcid(s));
	sasl_free(s);

	sasl_free(NULL);
	buf_free(&b);
}

static enum sasl_rc plain_run(struct sasl *s, const char *msg, size_t len,
			      const struct scram_creds *creds)
{
	struct buf b = BUF_INIT;
	enum sasl_rc rc = sasl_step(s, (const unsigned char *)msg, len, &b);
	if (rc == SASL_NEED_CREDS)
		rc = sasl_supply_creds(s, creds, &b);
	assert_int_equal(buf_pending(&b), 0);
	buf_free(&b);
	return rc;
}

#define PLAIN_MSG(s) s, sizeof(s) - 1

static void test_plain(void **state)
{
	(void)state;
	struct scram_creds creds = pencil_creds();
	struct sasl_ctx ctx = ctx_plain();
	struct sasl *s;

	s = sasl_new("PLAIN", &ctx);
	assert_non_null(s);
	assert_int_equal(plain_run(s, PLAIN_MSG("\0User\0pencil"), &creds), SASL_SUCCESS);
	assert_string_equal(sasl_authcid(s), "user");
	assert_null(sasl_authzid(s));
	sasl_free(s);

	s = sasl_new("PLAIN", &ctx);
	assert_int_equal(plain_run(s, PLAIN_MSG("user@example.com\0user\0pencil"), &creds),
			 SASL_SUCCESS);
	assert_string_equal(sasl_authzid(s), "user@example.com");
	sasl_free(s);

	s = sasl_new("PLAIN", &ctx);
	assert_int_equal(plain_run(s, PLAIN_MSG("\0user\0pencil2"), &creds), SASL_FAIL);
	assert_string_equal(sasl_condition(s), "not-authorized");
	sasl_free(s);

	s = sasl_new("PLAIN", &ctx);
	assert_int_equal(plain_run(s, PLAIN_MSG("\0user\0Pencil"), &creds), SASL_FAIL);
	sasl_free(s);

	s = sasl_new("PLAIN", &ctx);
	assert_int_equal(plain_run(s, PLAIN_MSG("\0ghost\0pencil"), NULL), SASL_FAIL);
	assert_string_equal(sasl_condition(s), "not-authorized");
	sasl_free(s);

	/* Verified with whichever key the account has. */
	for (int only = 0; only < SCRAM_NHASH; only++) {
		struct scram_creds one = creds;
		for (int h = 0; h < SCRAM_NHASH; h++)
			if (h != only)
				one.k[h].iterations = 0;
		s = sasl_new("PLAIN", &ctx);
		assert_int_equal(plain_run(s, PLAIN_MSG("\0user\0pencil"), &one), SASL_SUCCESS);
		sasl_free(s);
		s = sasl_new("PLAIN", &ctx);
		assert_int_equal(plain_run(s, PLAIN_MSG("\0user\0pencill"), &one), SASL_FAIL);
		sasl_free(s);
	}
	/* The preferred key decides; a mismatch there is not retried with
	 * the others, whose keys still match. */
	struct scram_creds bad = creds;
	memset(bad.k[SCRAM_SHA256].stored_key, 0, sizeof bad.k[SCRAM_SHA256].stored_key);
	s = sasl_new("PLAIN", &ctx);
	assert_int_equal(plain_run(s, PLAIN_MSG("\0user\0pencil"), &bad), SASL_FAIL);
	sasl_free(s);

	static const struct {
		const char *m;
		size_t len;
	} malformed[] = {
	    {PLAIN_MSG("")},
	    {PLAIN_MSG("user\0pencil")},
	    {PLAIN_MSG("\0\0pencil")},
	    {PLAIN_MSG("\0user\0")},
	    {PLAIN_MSG("\0user\0pen\0cil")},
	    {PLAIN_MSG("\xff\0user\0pencil")},
	    {PLAIN_MSG("\0us er\0pencil")},
	    {PLAIN_MSG("\0user\0\xff")},
	};
	for (size_t i = 0; i < sizeof malformed / sizeof malformed[0]; i++) {
		s = sasl_new("PLAIN", &ctx);
		if (plain_run(s, malformed[i].m, malformed[i].len, &creds) != SASL_FAIL)
			fail_msg("PLAIN accepted malformed message %zu", i);
		assert_true(cond_ok(s));
		sasl_free(s);
	}

	/* Not offered in the clear, nor when disabled. */
	ctx.tls = false;
	assert_null(sasl_new("PLAIN", &ctx));
	ctx = ctx_plain();
	ctx.allow_plain = false;
	assert_null(sasl_new("PLAIN", &ctx));
}

static void test_mechanisms(void **state)
{
	(void)state;
	const char *m[10];
	struct sasl_ctx ctx = ctx_plain();

	assert_int_equal(sasl_mechanisms(false, NULL, true, m, 10), 3);
	assert_string_equal(m[0], "SCRAM-SHA-512");
	assert_string_equal(m[1], "SCRAM-SHA-256");
	assert_string_equal(m[2], "SCRAM-SHA-1");
	assert_null(m[3]);

	assert_int_equal(sasl_mechanisms(true, NULL, false, m, 10), 3);
	assert_int_equal(sasl_mechanisms(true, NULL, true, m, 10), 4);
	assert_string_equal(m[3], "PLAIN");
	assert_null(m[4]);

	static const struct sasl_cbind empty = {0};
	assert_int_equal(sasl_mechanisms(true, &empty, true, m, 10), 4);

	assert_int_equal(sasl_mechanisms(true, &cb_both, true, m, 10), 7);
	static const char *const all[] = {"SCRAM-SHA-512-PLUS",
					  "SCRAM-SHA-256-PLUS",
					  "SCRAM-SHA-1-PLUS",
					  "SCRAM-SHA-512",
					  "SCRAM-SHA-256",
					  "SCRAM-SHA-1",
					  "PLAIN"};
	for (int i = 0; i < 7; i++)
		assert_string_equal(m[i], all[i]);
	assert_null(m[7]);
	assert_int_equal(sasl_mechanisms(true, &cb_endpoint_only, false, m, 10), 6);
	assert_string_equal(m[0], "SCRAM-SHA-512-PLUS");
	assert_string_equal(m[5], "SCRAM-SHA-1");

	/* Truncated, still terminated. */
	assert_int_equal(sasl_mechanisms(true, &cb_both, true, m, 3), 2);
	assert_null(m[2]);
	assert_int_equal(sasl_mechanisms(true, &cb_both, true, m, 0), 0);

	/* sasl_new agrees with the list. */
	struct sasl *s;
	ctx.cb = NULL;
	assert_null(sasl_new("SCRAM-SHA-256-PLUS", &ctx));
	ctx.cb = &empty;
	assert_null(sasl_new("SCRAM-SHA-256-PLUS", &ctx));
	assert_null(sasl_new("scram-sha-256", &ctx));
	assert_null(sasl_new("SCRAM-SHA-384", &ctx));
	assert_null(sasl_new("DIGEST-MD5", &ctx));
	assert_null(sasl_new("", &ctx));
	ctx.cb = &cb_both;
	for (int i = 0; i < 7; i++) {
		s = sasl_new(all[i], &ctx);
		assert_non_null(s);
		assert_string_equal(sasl_mech_name(s), all[i]);
		sasl_free(s);
	}
	ctx.server_secret = NULL;
	assert_null(sasl_new("SCRAM-SHA-256", &ctx));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_rfc5802_sha1),
	    cmocka_unit_test(test_rfc7677_sha256),
	    cmocka_unit_test(test_rfc5802_wrong_proof),
	    cmocka_unit_test(test_every_hash_round_trip),
	    cmocka_unit_test(test_plus_variants),
	    cmocka_unit_test(test_cb_types),
	    cmocka_unit_test(test_downgrade),
	    cmocka_unit_test(test_unknown_user_like_wrong_password),
	    cmocka_unit_test(test_stored_bounds),
	    cmocka_unit_test(test_malformed_first),
	    cmocka_unit_test(test_malformed_final),
	    cmocka_unit_test(test_sequence),
	    cmocka_unit_test(test_plain),
	    cmocka_unit_test(test_mechanisms),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
