/* TLS contexts (RFC 7590, DESIGN §9): TLS 1.2 and 1.3 only, forward-secret
 * AEAD suites, no compression, no renegotiation, server preference, ALPN
 * "xmpp-client" for direct TLS (XEP-0368), SNI picks the host's
 * certificate, and the channel-binding data SCRAM-PLUS needs. */
#include "server/server.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <string.h>

#include "core/conn.h"
#include "core/log.h"

/* TLS 1.2 suites: ECDHE key exchange, AEAD ciphers only. TLS 1.3 suites
 * are all AEAD and forward secret already. */
#define TLS12_CIPHERS                                                                              \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                               \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                               \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
		       const unsigned char *in, unsigned int inlen, void *arg)
{
	static const unsigned char want[] = "xmpp-client";
	for (unsigned i = 0; i < inlen;) {
		unsigned l = in[i];
		if (i + 1 + l > inlen)
			break;
		if (l == sizeof(want) - 1 && !memcmp(in + i + 1, want, l)) {
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
	SSL_CTX *ctx = atomic_load(&h->tls);
	if (ctx && ctx != SSL_get_SSL_CTX(ssl))
		SSL_set_SSL_CTX(ssl, ctx);
	return SSL_TLSEXT_ERR_OK;
}

SSL_CTX *tls_ctx_new(const struct host_conf *hc, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx) {
		snprintf(err, errlen, "SSL_CTX_new failed");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
				     SSL_OP_CIPHER_SERVER_PREFERENCE);
	/* Idle sessions keep no read/write buffers (DESIGN §4). */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
				  SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	if (!SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) ||
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
	SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
	SSL_CTX_set_tlsext_servername_callback(ctx, sni_select);
	SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"parley", 6);
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
