/* SASL server mechanisms (RFC 6120 §6, RFC 4422), sans-I/O.
 * SCRAM-SHA-1, SCRAM-SHA-256, SCRAM-SHA-512 (RFC 5802, RFC 7677) and their
 * -PLUS variants with channel binding (tls-exporter, RFC 9266;
 * tls-server-end-point, RFC 5929), and PLAIN (RFC 4616).
 *
 * Only salted keys are stored (struct scram_creds); passwords never are.
 * Credential lookup is asynchronous: when a mechanism needs the user's
 * credentials, sasl_step() returns SASL_NEED_CREDS; the caller looks up
 * sasl_authcid() and calls sasl_supply_creds() (NULL if no such user: the
 * exchange then continues with fake, deterministic salt so that the
 * failure is indistinguishable from a wrong password). */
#ifndef PARLEY_SASL_H
#define PARLEY_SASL_H

#include <stdbool.h>
#include <stddef.h>

struct buf;

enum scram_hash { SCRAM_SHA1, SCRAM_SHA256, SCRAM_SHA512, SCRAM_NHASH };

#define SCRAM_MAX_KEY  64
#define SCRAM_MAX_SALT 64
/* Bounds on the iteration count of stored keys and of scram_make_creds().
 * The floor is RFC 7677 §4's minimum; the ceiling keeps one login from
 * holding a worker for minutes. */
#define SCRAM_MIN_ITERATIONS 4096
#define SCRAM_MAX_ITERATIONS 10000000

struct scram_key {
	int iterations; /* 0: no key for this hash */
	size_t salt_len;
	unsigned char salt[SCRAM_MAX_SALT];
	unsigned char stored_key[SCRAM_MAX_KEY];
	unsigned char server_key[SCRAM_MAX_KEY]; /* key length = digest size of the hash */
};

/* All stored keys of one account. */
struct scram_creds {
	struct scram_key k[SCRAM_NHASH];
};

size_t scram_hash_len(enum scram_hash h);
const char *scram_hash_name(enum scram_hash h); /* "SHA-1", "SHA-256", "SHA-512" */
/* Derives keys for every hash from a password (already prepared with the
 * OpaqueString profile by the caller, or raw: see sasl_prep_password),
 * with a fresh random 16-byte salt per hash. iterations must be within
 * SCRAM_MIN_ITERATIONS..SCRAM_MAX_ITERATIONS. Returns 0 or -1. */
int scram_make_creds(const char *password, int iterations, struct scram_creds *out);
/* RFC 8265 §4.2 OpaqueString preparation of a password. Returns length or -1. */
int sasl_prep_password(const char *in, size_t len, char *out, size_t cap);

/* Channel binding data of the TLS connection (NULL/0 when absent). */
struct sasl_cbind {
	const unsigned char *tls_exporter; /* 32 bytes, TLS 1.3 only */
	size_t tls_exporter_len;
	const unsigned char *tls_server_end_point; /* hash of the server certificate */
	size_t tls_server_end_point_len;
};
/* Longest binding data sasl_new() accepts per type (a SHA-512 digest). */
#define SASL_MAX_CBIND 64

/* What a stream offers and the server's settings. sasl_new() copies what
 * it needs, so the context and everything it points to are only borrowed
 * for the duration of the call. */
struct sasl_ctx {
	bool tls;		     /* the stream is encrypted */
	const struct sasl_cbind *cb; /* NULL or no data: no -PLUS mechanisms */
	bool allow_plain;	     /* offer PLAIN (never without tls) */
	/* Per-server secret (at least 32 bytes) from which fake salts for
	 * unknown users are derived, so they are stable across attempts. */
	const unsigned char *server_secret;
	size_t secret_len;
	/* Iteration count announced for unknown users: the one new accounts
	 * get, so it does not stand out. Clamped to the SCRAM_*_ITERATIONS. */
	int fake_iterations;
};

enum sasl_rc {
	SASL_CONTINUE,	 /* send a <challenge/> with the output */
	SASL_NEED_CREDS, /* look up sasl_authcid() and call sasl_supply_creds() */
	SASL_SUCCESS,	 /* send <success/> with the output as additional data */
	SASL_FAIL,	 /* send <failure/> with sasl_condition() */
};

/* Client messages longer than this fail with malformed-request. */
#define SASL_MAX_INPUT 4096

struct sasl;

/* Mechanisms offered on a stream (names, strongest first), written to
 * out[0..cap-1) and NULL-terminated. Returns how many were written.
 * tls: the stream is encrypted; cb: binding data (-PLUS only with some);
 * allow_plain: PLAIN, only with tls. */
size_t sasl_mechanisms(bool tls, const struct sasl_cbind *cb, bool allow_plain, const char **out,
		       size_t cap);
/* Starts a mechanism by name. Returns NULL if it is not offered under
 * these conditions (then answer <invalid-mechanism/>) or the context has
 * no server secret. -PLUS mechanisms are offered exactly when ctx->cb
 * carries binding data; a client that says "y" (it supports binding but
 * thinks we do not) while they were offered fails (downgrade protection,
 * RFC 5802 §6). */
struct sasl *sasl_new(const char *mech, const struct sasl_ctx *ctx);
void sasl_free(struct sasl *s);
/* One step with the decoded client data (in NULL: no initial response,
 * which is answered with an empty challenge; in non-NULL with len 0: an
 * empty response). Output (raw, to be base64-encoded) is appended to out. */
enum sasl_rc sasl_step(struct sasl *s, const unsigned char *in, size_t len, struct buf *out);
/* After SASL_NEED_CREDS. creds NULL: unknown account. Borrowed for the
 * call. Returns as sasl_step. */
enum sasl_rc sasl_supply_creds(struct sasl *s, const struct scram_creds *creds, struct buf *out);
/* Prepared username (UsernameCaseMapped), or NULL before the client said it. */
const char *sasl_authcid(const struct sasl *s);
/* Authorization identity the client asked for, or NULL. The caller checks
 * it equals the account's bare JID and fails with invalid-authzid if not. */
const char *sasl_authzid(const struct sasl *s);
/* RFC 6120 §6.5 condition for SASL_FAIL: "not-authorized", "malformed-request",
 * "invalid-authzid", "encryption-required", "mechanism-too-weak", "temporary-auth-failure". */
const char *sasl_condition(const struct sasl *s);
const char *sasl_mech_name(const struct sasl *s);

/* Test only: use nonce (printable, no ',') as the SCRAM server nonce
 * instead of 24 random bytes, so that published exchanges can be
 * replayed byte for byte. Call before the client-first message. Never
 * call it in the server: a predictable nonce allows replay. */
void sasl_set_test_nonce(struct sasl *s, const char *nonce);

#endif
