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

struct scram_key {
	int iterations;
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
const char *scram_hash_name(enum scram_hash h);   /* "SHA-1", "SHA-256", "SHA-512" */
/* Derives keys for every hash from a password (already prepared with the
 * OpaqueString profile by the caller, or raw: see sasl_prep_password),
 * with a fresh random salt per hash. Returns 0 or -1. */
int scram_make_creds(const char *password, int iterations, struct scram_creds *out);
/* RFC 8265 §4.2 OpaqueString preparation of a password. Returns length or -1. */
int sasl_prep_password(const char *in, size_t len, char *out, size_t cap);

/* Channel binding data of the TLS connection (NULL/0 when absent). */
struct sasl_cbind {
	const unsigned char *tls_exporter;   /* 32 bytes, TLS 1.3 only */
	size_t tls_exporter_len;
	const unsigned char *tls_server_end_point; /* hash of the server certificate */
	size_t tls_server_end_point_len;
};

enum sasl_rc {
	SASL_CONTINUE,   /* send a <challenge/> with the output */
	SASL_NEED_CREDS, /* look up sasl_authcid() and call sasl_supply_creds() */
	SASL_SUCCESS,    /* send <success/> with the output as additional data */
	SASL_FAIL,       /* send <failure/> with sasl_condition() */
};

struct sasl;

/* Mechanisms offered on a stream (names, NULL-terminated, strongest first).
 * tls: the stream is encrypted; cb: binding types available; allow_plain. */
size_t sasl_mechanisms(bool tls, const struct sasl_cbind *cb, bool allow_plain,
		       const char **out, size_t cap);
/* Starts a mechanism by name. Returns NULL if it is not offered under these
 * conditions (then answer <invalid-mechanism/>). server_secret: a per-server
 * secret used to derive fake salts for unknown users (at least 32 bytes).
 * -PLUS mechanisms are offered exactly when cb carries binding data; a
 * client that says "y" (it supports binding but thinks we do not) while
 * they were offered fails (downgrade protection, RFC 5802 §6). */
struct sasl *sasl_new(const char *mech, bool tls, const struct sasl_cbind *cb, bool allow_plain,
		      const unsigned char *server_secret, size_t secret_len);
void sasl_free(struct sasl *s);
/* One step with the decoded client data (in may be NULL: no initial
 * response). Output (raw, to be base64-encoded) is appended to out. */
enum sasl_rc sasl_step(struct sasl *s, const unsigned char *in, size_t len, struct buf *out);
/* After SASL_NEED_CREDS. creds NULL: unknown account. Returns as sasl_step. */
enum sasl_rc sasl_supply_creds(struct sasl *s, const struct scram_creds *creds, struct buf *out);
const char *sasl_authcid(const struct sasl *s);  /* prepared username (UsernameCaseMapped) */
/* Authorization identity the client asked for, or NULL. The caller checks
 * it equals the account's bare JID and fails with invalid-authzid if not. */
const char *sasl_authzid(const struct sasl *s);
/* RFC 6120 §6.5 condition for SASL_FAIL: "not-authorized", "malformed-request",
 * "invalid-authzid", "encryption-required", "mechanism-too-weak", "temporary-auth-failure". */
const char *sasl_condition(const struct sasl *s);
const char *sasl_mech_name(const struct sasl *s);

#endif
