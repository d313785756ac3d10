/* TLS contexts (RFC 7590, DESIGN §9): TLS 1.2 and 1.3 only, forward-secret
 * AEAD suites, no compression, no renegotiation, server preference, no
 * stateless session tickets, OCSP stapling when the certificate names a
 * responder, ALPN "xmpp-client" for direct TLS (XEP-0368), SNI picks the
 * host's certificate, and the channel-binding data SCRAM-PLUS needs.
 * tests/integration/test_tls_grade.py runs testssl.sh against all of it. */
#include "server/server.h"

#include <openssl/err.h>
#include <openssl/ocsp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/conn.h"
#include "core/log.h"

/* TLS 1.2 suites: ECDHE key exchange, AEAD ciphers only. TLS 1.3 suites
 * are all AEAD and forward secret already. */
#define TLS12_CIPHERS                                                                              \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                               \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                               \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
/* Spelled out so that a changed OpenSSL default (or a system-wide
 * openssl.cnf) cannot add the CCM suites. */
#define TLS13_SUITES "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256"

/* Resumption. OpenSSL's stateless tickets are sealed with one key per
 * context that never changes while the process runs; in TLS 1.2 a ticket
 * carries the master secret, so whoever reads that key from memory can
 * decrypt every recorded connection that got one: no forward secrecy. So
 * no stateless tickets: TLS 1.2 resumes by session ID and TLS 1.3 gets
 * stateful tickets (one per handshake), both from the context's in-memory
 * cache, which is bounded (oldest evicted first, so a peer opening
 * handshakes in a loop costs at most this many sessions, ~1 KiB each) and
 * expires entries. A reload builds new contexts and so starts new caches.
 * XMPP streams are long-lived; resumption only saves a mobile client's
 * reconnect a round trip. */
#define TLS_SESS_CACHE_MAX 4096
#define TLS_SESS_LIFETIME  3600 /* seconds */

/* OCSP stapling (RFC 6066 §8; RFC 8446 §4.4.2.1 for TLS 1.3).
 *
 * Parley makes no outgoing HTTP requests: the response is a file next to
 * the certificate, "<certificate>.ocsp" (DER, as written by
 * `openssl ocsp -issuer ISSUER.pem -cert CERT.pem -url URL -respout
 * CERT.pem.ocsp`), which the administrator's cron job refreshes well
 * before its nextUpdate, then sends SIGHUP. Each context reads it when it
 * is built (start and every reload) and staples it only if it is a
 * successful response about this certificate, signed by its issuer (or a
 * responder the issuer delegated to), and current. A response past its
 * nextUpdate is no longer stapled, since clients would reject it. Without
 * an OCSP URL in the certificate (self-signed ones) there is nothing to
 * staple. */
#define OCSP_SUFFIX    ".ocsp"
#define OCSP_MAX_BYTES (64 * 1024)
#define OCSP_SKEW      300 /* seconds of clock difference tolerated */

struct ocsp_staple {
	unsigned char *der; /* owned */
	long len;
	time_t not_after; /* nextUpdate; 0 if the response has none */
	atomic_bool expired_logged;
};

static int staple_idx = -1; /* SSL_CTX ex_data slot owning a struct ocsp_staple */

static void staple_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	struct ocsp_staple *st = ptr;
	if (st) {
		OPENSSL_free(st->der);
		free(st);
	}
}

/* Called during every handshake in which the client asked for the
 * certificate status, on whichever worker thread runs it; the staple is
 * read-only once its context is built. s->ctx is the host's context once
 * SNI has picked it, so each host staples its own response. */
static int ocsp_status(SSL *ssl, void *arg)
{
	struct ocsp_staple *st = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), staple_idx);
	if (!st)
		return SSL_TLSEXT_ERR_NOACK;
	if (st->not_after && time(NULL) >= st->not_after) {
		if (!atomic_exchange(&st->expired_logged, true))
			LOG(LOG_WARN, "OCSP response passed its nextUpdate; no longer stapled: "
				      "refresh the " OCSP_SUFFIX " file and reload");
		return SSL_TLSEXT_ERR_NOACK;
	}
	unsigned char *copy = OPENSSL_memdup(st->der, (size_t)st->len);
	/* OpenSSL takes ownership of the copy. */
	if (!copy || !SSL_set_tlsext_status_ocsp_resp(ssl, copy, st->len)) {
		OPENSSL_free(copy);
		return SSL_TLSEXT_ERR_NOACK;
	}
	return SSL_TLSEXT_ERR_OK;
}

static unsigned char *read_file(const char *path, long max, long *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	unsigned char *buf = OPENSSL_malloc((size_t)max + 1);
	size_t n = buf ? fread(buf, 1, (size_t)max + 1, f) : 0;
	fclose(f);
	if (!buf || n == 0 || n > (size_t)max) {
		OPENSSL_free(buf);
		return NULL;
	}
	*len = (long)n;
	return buf;
}

/* The leaf's issuer, from the chain in the certificate file. */
static X509 *chain_issuer(SSL_CTX *ctx, X509 *leaf)
{
	STACK_OF(X509) *chain = NULL;
	SSL_CTX_get0_chain_certs(ctx, &chain);
	for (int i = 0; i < sk_X509_num(chain); i++) {
		X509 *c = sk_X509_value(chain, i);
		if (X509_check_issued(c, leaf) == X509_V_OK)
			return c;
	}
	return NULL;
}

/* Checks the response in der against the leaf; 0 with the certificate's
 * status (V_OCSP_CERTSTATUS_*) and *not_after, or -1 with the reason in
 * why. */
static int ocsp_check(SSL_CTX *ctx, X509 *leaf, const unsigned char *der, long len, int *status,
		      time_t *not_after, const char **why)
{
	int rc = -1, reason;
	OCSP_RESPONSE *resp = NULL;
	OCSP_BASICRESP *bs = NULL;
	OCSP_CERTID *id = NULL;
	X509_STORE *store = NULL;
	ASN1_GENERALIZEDTIME *rev, *this_upd, *next_upd;
	const unsigned char *p = der;
	STACK_OF(X509) *chain = NULL;

	X509 *issuer = chain_issuer(ctx, leaf);
	if (!issuer) {
		*why = "the certificate file has no issuer certificate after the leaf";
		goto out;
	}
	resp = d2i_OCSP_RESPONSE(NULL, &p, len);
	if (!resp || p != der + len) {
		*why = "not a DER OCSP response";
		goto out;
	}
	if (OCSP_response_status(resp) != OCSP_RESPONSE_STATUS_SUCCESSFUL ||
	    !(bs = OCSP_response_get1_basic(resp))) {
		*why = "the responder did not answer successfully";
		goto out;
	}
	/* RFC 6960 §4.2.2.2: signed by the issuer itself, or by a responder
	 * certificate the issuer signed for id-kp-OCSPSigning. The issuer is
	 * the only trust anchor here (partial chain) and no other signer is
	 * accepted (OCSP_NOEXPLICIT): this checks that the file belongs to
	 * this certificate, not whether its CA is trusted. */
	store = X509_STORE_new();
	if (!store || !X509_STORE_add_cert(store, issuer) ||
	    !X509_STORE_set_flags(store, X509_V_FLAG_PARTIAL_CHAIN)) {
		*why = "out of memory";
		goto out;
	}
	SSL_CTX_get0_chain_certs(ctx, &chain);
	if (OCSP_basic_verify(bs, chain, store, OCSP_NOEXPLICIT) <= 0) {
		*why = "its signature does not verify against the certificate's issuer";
		goto out;
	}
	/* The CertID's hash is the responder's choice: SHA-1 usually. */
	const EVP_MD *mds[] = {EVP_sha1(), EVP_sha256(), EVP_sha384(), EVP_sha512()};
	bool found = false;
	for (size_t i = 0; !found && i < sizeof(mds) / sizeof(mds[0]); i++) {
		OCSP_CERTID_free(id);
		id = OCSP_cert_to_id(mds[i], leaf, issuer);
		found = id &&
			OCSP_resp_find_status(bs, id, status, &reason, &rev, &this_upd, &next_upd);
	}
	if (!found) {
		*why = "it is not about this certificate";
		goto out;
	}
	if (!OCSP_check_validity(this_upd, next_upd, OCSP_SKEW, -1)) {
		*why = "it is not current (thisUpdate in the future or nextUpdate passed)";
		goto out;
	}
	*not_after = 0;
	int days, secs;
	if (next_upd && ASN1_TIME_diff(&days, &secs, NULL, next_upd))
		*not_after = time(NULL) + (time_t)days * 86400 + secs;
	rc = 0;
out:
	OCSP_CERTID_free(id);
	X509_STORE_free(store);
	OCSP_BASICRESP_free(bs);
	OCSP_RESPONSE_free(resp);
	return rc;
}

/* Attaches "<cert_file>.ocsp" to ctx when the certificate names an OCSP
 * responder and the file holds a usable response. Never fails the
 * context: without a staple clients just ask the responder themselves. */
static void ocsp_load(SSL_CTX *ctx, const struct host_conf *hc)
{
	X509 *leaf = SSL_CTX_get0_certificate(ctx);
	STACK_OF(OPENSSL_STRING) *urls = leaf ? X509_get1_ocsp(leaf) : NULL;
	unsigned char *der = NULL;
	long len = 0;
	time_t not_after = 0;
	const char *why = NULL;
	int status = V_OCSP_CERTSTATUS_UNKNOWN;
	char path[4096];

	if (sk_OPENSSL_STRING_num(urls) <= 0)
		goto out; /* no responder, nothing to staple */
	int pl = snprintf(path, sizeof(path), "%s" OCSP_SUFFIX, hc->cert_file);
	if (pl < 0 || (size_t)pl >= sizeof(path))
		goto out;
	der = read_file(path, OCSP_MAX_BYTES, &len);
	if (!der) {
		LOG(LOG_WARN,
		    "%s: the certificate names an OCSP responder (%s) but %s is missing, empty or "
		    "over %d bytes: no OCSP stapling",
		    hc->domain, sk_OPENSSL_STRING_value(urls, 0), path, OCSP_MAX_BYTES);
		goto out;
	}
	if (ocsp_check(ctx, leaf, der, len, &status, &not_after, &why) < 0) {
		LOG(LOG_WARN, "%s: %s: %s: no OCSP stapling", hc->domain, path, why);
		goto out;
	}
	/* Stapled whatever it says: it is what the CA tells anyone who asks. */
	if (status == V_OCSP_CERTSTATUS_REVOKED)
		LOG(LOG_ERROR, "%s: %s says the certificate is REVOKED", hc->domain, path);
	else if (status != V_OCSP_CERTSTATUS_GOOD)
		LOG(LOG_WARN, "%s: %s says the certificate's status is unknown", hc->domain, path);
	struct ocsp_staple *st = calloc(1, sizeof(*st));
	if (!st || !SSL_CTX_set_ex_data(ctx, staple_idx, st)) {
		free(st);
		LOG(LOG_WARN, "%s: out of memory: no OCSP stapling", hc->domain);
		goto out;
	}
	st->der = der;
	st->len = len;
	st->not_after = not_after;
	atomic_init(&st->expired_logged, false);
	der = NULL;
	LOG(LOG_INFO, "%s: stapling the OCSP response in %s", hc->domain, path);
out:
	OPENSSL_free(der);
	X509_email_free(urls);
	ERR_clear_error();
}

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
		       const unsigned char *in, unsigned int inlen, void *arg)
{
	const char *want = arg; /* "xmpp-client" or "xmpp-server" */
	size_t wl = strlen(want);
	for (unsigned i = 0; i < inlen;) {
		unsigned l = in[i];
		if (i + 1 + l > inlen)
			break;
		if (l == wl && !memcmp(in + i + 1, want, l)) {
			*out = in + i + 1;
			*outlen = (unsigned char)l;
			return SSL_TLSEXT_ERR_OK;
		}
		i += 1 + l;
	}
	/* XEP-0368 §4: a client that offers other protocols only is not ours,
	 * but tolerate clients that send no xmpp-client: no ALPN selected. */
	return SSL_TLSEXT_ERR_NOACK;
}

static int sni_select(SSL *ssl, int *ad, void *arg)
{
	const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	if (!name)
		return SSL_TLSEXT_ERR_OK; /* default certificate */
	/* RFC 4343: host names compare without case; normalize as the
	 * stream header's 'to' is. */
	char dom[JID_PART_MAX + 1];
	int dl = jid_prep_domain(name, strlen(name), dom, sizeof(dom));
	struct host *h = dl > 0 ? host_find(dom, (size_t)dl) : NULL;
	if (!h)
		return SSL_TLSEXT_ERR_OK; /* the stream header will say host-unknown */
	SSL_CTX *ctx = arg ? atomic_load(&h->s2s_tls) : atomic_load(&h->tls);
	if (ctx && ctx != SSL_get_SSL_CTX(ssl))
		SSL_set_SSL_CTX(ssl, ctx);
	return SSL_TLSEXT_ERR_OK;
}

/* Inbound s2s: ask for the peer server's certificate (SASL EXTERNAL,
 * XEP-0178), but let the handshake finish without one or with one we do
 * not trust: s2s.c decides afterwards, with the reason logged, and may
 * still accept dialback (XEP-0220). */
static int verify_later(int ok, X509_STORE_CTX *x)
{
	(void)ok;
	(void)x;
	return 1;
}

SSL_CTX *tls_ctx_new(const struct host_conf *hc, char *err, size_t errlen)
{
	return tls_ctx_new_kind(hc, TLS_C2S, err, errlen);
}

SSL_CTX *tls_ctx_new_kind(const struct host_conf *hc, enum tls_kind kind, char *err, size_t errlen)
{
	/* Contexts are built on the main thread only (start, --check,
	 * SIGHUP), so this lazy initialization does not race. */
	if (staple_idx < 0)
		staple_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, staple_free);
	if (staple_idx < 0) {
		snprintf(err, errlen, "SSL_CTX_get_ex_new_index failed");
		return NULL;
	}
	SSL_CTX *ctx =
	    SSL_CTX_new(kind == TLS_S2S_CLIENT ? TLS_client_method() : TLS_server_method());
	if (!ctx) {
		snprintf(err, errlen, "SSL_CTX_new failed");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	/* Our order wins, except that a client which puts ChaCha20 first
	 * (no AES hardware: phones) gets it. */
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
				     SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_PRIORITIZE_CHACHA |
				     SSL_OP_NO_TICKET);
	SSL_CTX_set_num_tickets(ctx, 1);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
	SSL_CTX_sess_set_cache_size(ctx, TLS_SESS_CACHE_MAX);
	SSL_CTX_set_timeout(ctx, TLS_SESS_LIFETIME);
	/* Idle sessions keep no read/write buffers (DESIGN §4). */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
				  SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	if (!SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) ||
	    !SSL_CTX_set_ciphersuites(ctx, TLS13_SUITES) ||
	    !SSL_CTX_set1_groups_list(ctx, "X25519:P-256:P-384")) {
		snprintf(err, errlen, "cannot set TLS cipher suites");
		goto fail;
	}
	if (SSL_CTX_use_certificate_chain_file(ctx, hc->cert_file) != 1) {
		snprintf(err, errlen, "%s: cannot load certificate: %s", hc->cert_file,
			 ERR_reason_error_string(ERR_peek_last_error()));
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, hc->key_file, SSL_FILETYPE_PEM) != 1) {
		snprintf(err, errlen, "%s: cannot load key: %s", hc->key_file,
			 ERR_reason_error_string(ERR_peek_last_error()));
		goto fail;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		snprintf(err, errlen, "%s does not match %s", hc->key_file, hc->cert_file);
		goto fail;
	}
	if (kind == TLS_S2S_CLIENT) {
		/* Our certificate goes out as the client's, for the peer's SASL
		 * EXTERNAL; theirs is checked by s2s.c after the handshake
		 * (RFC 6125 identities, then DANE or dialback). */
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
		/* DANE (RFC 7673) for peers with DNSSEC-signed TLSA records:
		 * s2s.c adds them per connection. */
		if (SSL_CTX_dane_enable(ctx) <= 0) {
			snprintf(err, errlen, "SSL_CTX_dane_enable failed");
			goto fail;
		}
		ERR_clear_error();
		return ctx;
	}
	SSL_CTX_set_alpn_select_cb(
	    ctx, alpn_select, (void *)(kind == TLS_S2S_SERVER ? "xmpp-server" : "xmpp-client"));
	SSL_CTX_set_tlsext_servername_callback(ctx, sni_select);
	if (kind == TLS_S2S_SERVER) {
		SSL_CTX_set_tlsext_servername_arg(ctx, (void *)1);
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_CLIENT_ONCE, verify_later);
	}
	SSL_CTX_set_tlsext_status_cb(ctx, ocsp_status);
	ocsp_load(ctx, hc);
	SSL_CTX_set_session_id_context(
	    ctx, (const unsigned char *)(kind == TLS_S2S_SERVER ? "parley-s2s" : "parley"),
	    kind == TLS_S2S_SERVER ? 10 : 6);
	ERR_clear_error();
	return ctx;
fail:
	ERR_clear_error();
	SSL_CTX_free(ctx);
	return NULL;
}

void tls_ctx_free(SSL_CTX *ctx)
{
	SSL_CTX_free(ctx);
}

void tls_channel_binding(struct session *s)
{
	SSL *ssl = s->conn->ssl;
	s->cb_have_exporter = false;
	s->cb_endpoint_len = 0;
	/* RFC 9266: tls-exporter, defined for TLS 1.3 (and 1.2 only with the
	 * extended master secret; we offer it on 1.3 only). */
	if (SSL_version(ssl) == TLS1_3_VERSION &&
	    SSL_export_keying_material(ssl, s->cb_exporter, sizeof(s->cb_exporter),
				       "EXPORTER-Channel-Binding", 24, NULL, 0, 0) == 1)
		s->cb_have_exporter = true;
	/* RFC 5929 §4.1: hash of our certificate with its signature's hash,
	 * SHA-256 when that is MD5 or SHA-1. */
	X509 *cert = SSL_get_certificate(ssl);
	if (cert) {
		int md_nid = NID_undef, pk_nid;
		const EVP_MD *md = NULL;
		if (OBJ_find_sigid_algs(X509_get_signature_nid(cert), &md_nid, &pk_nid))
			md = EVP_get_digestbynid(md_nid);
		if (!md || md_nid == NID_md5 || md_nid == NID_sha1)
			md = EVP_sha256();
		unsigned len = 0;
		if (X509_digest(cert, md, s->cb_endpoint, &len) == 1)
			s->cb_endpoint_len = len;
	}
	ERR_clear_error();
}
