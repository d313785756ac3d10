/* Internals shared by the mechanisms in src/xmpp/sasl/ (sasl.c holds the
 * session and dispatch, scram.c and plain.c one mechanism each). Other
 * layers include sasl.h only. */
#ifndef PARLEY_SASL_MECH_H
#define PARLEY_SASL_MECH_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"
#include "xmpp/sasl/sasl.h"

/* Prepared username, NUL included: a JID localpart is at most 1023 bytes. */
#define SASL_AUTHCID_MAX 1024
/* Authorization identity as sent, NUL included: a full JID at most. */
#define SASL_AUTHZID_MAX 3072
/* Length of the fake salt derived for unknown users; the same as the
 * salt scram_make_creds() draws, so the two cannot be told apart. */
#define SASL_FAKE_SALT_LEN 16
#define SCRAM_NONCE_MAX	   64

enum sasl_state {
	SASL_ST_START, /* nothing received yet */
	SASL_ST_CREDS, /* waiting for sasl_supply_creds() */
	SASL_ST_FINAL, /* SCRAM: server-first sent, waiting for client-final */
	SASL_ST_DONE,  /* succeeded or failed; every further step fails */
};

struct sasl {
	const char *mech; /* static name */
	bool plain;	  /* PLAIN; otherwise SCRAM with hash and plus */
	enum scram_hash hash;
	bool plus;
	enum sasl_state state;
	bool challenged;       /* sent the empty challenge for a missing initial response */
	const char *condition; /* static; set when a step returns SASL_FAIL */

	unsigned char *secret; /* owned copy of the server secret */
	size_t secret_len;
	int fake_iterations;
	bool cb_offered; /* -PLUS mechanisms were offered on this stream */
	unsigned char cb_exporter[SASL_MAX_CBIND];
	size_t cb_exporter_len;
	unsigned char cb_endpoint[SASL_MAX_CBIND];
	size_t cb_endpoint_len;

	bool have_authcid, have_authzid;
	char authcid[SASL_AUTHCID_MAX];
	char authzid[SASL_AUTHZID_MAX];

	/* SCRAM */
	char test_nonce[SCRAM_NONCE_MAX + 1]; /* "" unless sasl_set_test_nonce() */
	struct buf cbind;		      /* gs2 header + binding data: what c= must carry */
	struct buf nonce;		      /* client nonce + server nonce */
	struct buf auth;		      /* AuthMessage as far as it is known */
	struct scram_key key;		      /* the account's key, or a fake one */

	/* PLAIN */
	char *password; /* owned, prepared; wiped once used */
	size_t password_len;
};

/* Sets the failure condition and ends the exchange. */
enum sasl_rc sasl_fail(struct sasl *s, const char *condition);
/* Prepares raw[0..len) with UsernameCaseMapped into s->authcid. 0 or -1. */
int sasl_set_authcid(struct sasl *s, const char *raw, size_t len);
bool sasl_utf8_valid(const char *p, size_t len);
/* Fills key with the fake credentials of s->authcid for hash h. 0 or -1. */
int sasl_fake_key(const struct sasl *s, enum scram_hash h, struct scram_key *key);
/* Whether a stored key can be used: bounded iterations and salt. */
bool scram_key_usable(const struct scram_key *k);

/* Crypto of RFC 5802 §3; out holds scram_hash_len(h) bytes. 0 or -1. */
int scram_hmac(enum scram_hash h, const unsigned char *key, size_t klen, const void *data,
	       size_t dlen, unsigned char *out);
int scram_digest(enum scram_hash h, const void *data, size_t len, unsigned char *out);
/* StoredKey and (if server_key is not NULL) ServerKey from a password. */
int scram_derive(enum scram_hash h, const char *password, size_t plen, const unsigned char *salt,
		 size_t salt_len, int iterations, unsigned char *stored_key,
		 unsigned char *server_key);

enum sasl_rc scram_client_first(struct sasl *s, const char *in, size_t len);
enum sasl_rc scram_server_first(struct sasl *s, const struct scram_creds *creds, struct buf *out);
enum sasl_rc scram_client_final(struct sasl *s, const char *in, size_t len, struct buf *out);

enum sasl_rc plain_response(struct sasl *s, const char *in, size_t len);
enum sasl_rc plain_verify(struct sasl *s, const struct scram_creds *creds);

#endif
