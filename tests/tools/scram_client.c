/* scram-client: a small XMPP client for the SASL integration tests.
 *
 * It connects to 127.0.0.1, negotiates TLS (STARTTLS, RFC 6120 §5, or
 * direct TLS, XEP-0368, with ALPN "xmpp-client"), verifies the server
 * certificate for "localhost" against a CA file, authenticates with
 * SCRAM-SHA-1/256/512 (RFC 5802, RFC 7677) with or without channel
 * binding (-PLUS: tls-exporter, RFC 9266; tls-server-end-point,
 * RFC 5929 §4.1), or with PLAIN (RFC 4616), checks the server signature,
 * binds a resource and pings the server (XEP-0199).
 *
 * It can also misbehave on request, so that the tests can check that the
 * server refuses: corrupt the binding data (--bad-cb), claim that it
 * could bind but thinks the server cannot (--gs2-y), use any password
 * or authorization identity, and try a binding type or mechanism the
 * server did not offer.
 *
 * Output, one line on stdout:
 *   OK <mech> <cbtype|none> <TLS version>
 *   FAIL <reason> <the server's <failure/> or <stream:error/>, or ->
 * exit status 0 or 1. What the server offered goes to stderr as
 *   MECHS <name>...   and   CBTYPES <type>...
 *
 * The XML handling is deliberately small: it looks for the few elements
 * the exchange needs in what the server sends, which is enough for a test
 * tool talking to a known server. Every read is bounded in size and time
 * (SO_RCVTIMEO, and alarm() as a last resort).
 *
 * Passwords are used as given (no SASLprep/OpaqueString): the tests use
 * ASCII passwords, for which preparation changes nothing. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/objects.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#define HOST		"localhost"
#define IO_TIMEOUT_S	10
#define TOTAL_TIMEOUT_S 60
#define INBUF_MAX	(256 * 1024)
#define MAX_ITERATIONS	10000000
#define CB_MAX		64 /* longest binding data: a SHA-512 digest */
#define NS_SASL		"urn:ietf:params:xml:ns:xmpp-sasl"

struct opts {
	int port;
	const char *ca, *user, *password, *mech, *cbtype, *authzid;
	bool direct_tls, tls12, bad_cb, gs2_y;
};

struct conn {
	int fd;
	SSL_CTX *ctx;
	SSL *ssl; /* NULL until TLS is up */
	char *in; /* received, not yet consumed; NUL-terminated */
	size_t len;
};

/* What the server sent last that explains a failure, for the FAIL line. */
static char last_error[2048] = "-";

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void fail(const char *fmt, ...)
{
	va_list ap;

	fputs("FAIL ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf(" %s\n", last_error);
	fflush(stdout);
	exit(1);
}

/* --- base64 (RFC 4648 §4), strict --- */

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *b64_encode(const unsigned char *in, size_t n)
{
	char *out = malloc((n + 2) / 3 * 4 + 1), *o = out;

	if (!out)
		fail("oom");
	for (size_t i = 0; i < n; i += 3) {
		unsigned v = (unsigned)in[i] << 16;
		if (i + 1 < n)
			v |= (unsigned)in[i + 1] << 8;
		if (i + 2 < n)
			v |= in[i + 2];
		*o++ = b64chars[v >> 18 & 63];
		*o++ = b64chars[v >> 12 & 63];
		*o++ = i + 1 < n ? b64chars[v >> 6 & 63] : '=';
		*o++ = i + 2 < n ? b64chars[v & 63] : '=';
	}
	*o = '\0';
	return out;
}

/* Decodes in[0..n) into out (cap bytes). Returns the length or -1. */
static long b64_decode(const char *in, size_t n, unsigned char *out, size_t cap)
{
	size_t o = 0;

	if (n % 4)
		return -1;
	for (size_t i = 0; i < n; i += 4) {
		unsigned v = 0;
		int pad = 0;
		for (int k = 0; k < 4; k++) {
			const char *c = in[i + k] ? strchr(b64chars, in[i + k]) : NULL;
			if (in[i + k] == '=' && i + 4 == n && k >= 2) {
				pad++;
				v <<= 6;
				continue;
			}
			if (!c || pad)
				return -1;
			v = v << 6 | (unsigned)(c - b64chars);
		}
		if (o + 3 - (size_t)pad > cap)
			return -1;
		out[o++] = (unsigned char)(v >> 16);
		if (pad < 2)
			out[o++] = (unsigned char)(v >> 8);
		if (pad < 1)
			out[o++] = (unsigned char)v;
	}
	return (long)o;
}

/* --- I/O --- */

static void conn_write(struct conn *c, const char *s)
{
	size_t n = strlen(s), done = 0;

	while (done < n) {
		int w;
		if (c->ssl) {
			w = SSL_write(c->ssl, s + done, (int)(n - done));
		} else {
			ssize_t r = send(c->fd, s + done, n - done, MSG_NOSIGNAL);
			w = r > 0 ? (int)r : -1;
		}
		if (w <= 0)
			fail("write-error");
		done += (size_t)w;
	}
}

/* Reads once more into c->in. Returns false on end of stream, error or
 * timeout. */
static bool conn_read(struct conn *c)
{
	char tmp[16384];
	int n;

	if (c->len >= INBUF_MAX)
		fail("too-much-input");
	if (c->ssl) {
		n = SSL_read(c->ssl, tmp, sizeof tmp);
	} else {
		ssize_t r = recv(c->fd, tmp, sizeof tmp, 0);
		n = r > 0 ? (int)r : 0;
	}
	if (n <= 0)
		return false;
	if (memchr(tmp, '\0', (size_t)n))
		fail("nul-in-input");
	c->in = realloc(c->in, c->len + (size_t)n + 1);
	if (!c->in)
		fail("oom");
	memcpy(c->in + c->len, tmp, (size_t)n);
	c->len += (size_t)n;
	c->in[c->len] = '\0';
	return true;
}

static void conn_consume(struct conn *c, const char *upto)
{
	size_t n = (size_t)(upto - c->in);

	memmove(c->in, upto, c->len - n + 1);
	c->len -= n;
}

/* --- just enough XML --- */

/* Start of the first <name ...> tag in s, or NULL. */
static const char *find_tag(const char *s, const char *name)
{
	size_t n = strlen(name);

	for (const char *p = strchr(s, '<'); p; p = strchr(p + 1, '<'))
		if (!strncmp(p + 1, name, n) && strchr(" \t\r\n/>", p[1 + n]))
			return p;
	return NULL;
}

/* End (one past) of the complete element that starts at tag, or NULL if
 * not all of it has arrived. */
static const char *element_end(const char *tag, const char *name)
{
	const char *gt = strchr(tag, '>');
	char close[128];

	if (!gt)
		return NULL;
	if (gt[-1] == '/')
		return gt + 1;
	snprintf(close, sizeof close, "</%s>", name);
	const char *e = strstr(gt, close);
	return e ? e + strlen(close) : NULL;
}

/* Text content of the element at tag (up to the next '<'), copied. */
static char *element_text(const char *tag)
{
	const char *gt = strchr(tag, '>');
	if (!gt || gt[-1] == '/')
		return strdup("");
	const char *lt = strchr(gt, '<');
	return strndup(gt + 1, lt ? (size_t)(lt - gt - 1) : strlen(gt + 1));
}

/* Value of attribute attr in the start tag at tag, copied, or NULL. */
static char *attr_value(const char *tag, const char *attr)
{
	const char *gt = strchr(tag, '>');
	size_t n = strlen(attr);

	if (!gt)
		return NULL;
	for (const char *p = tag + 1; p < gt; p++) {
		if ((p[-1] == ' ' || p[-1] == '\t' || p[-1] == '\n' || p[-1] == '\r') &&
		    !strncmp(p, attr, n) && p[n] == '=' && (p[n + 1] == '\'' || p[n + 1] == '"')) {
			const char *v = p + n + 2, *e = strchr(v, p[n + 1]);
			if (!e || e > gt)
				return NULL;
			return strndup(v, (size_t)(e - v));
		}
	}
	return NULL;
}

static void note_error(const char *start, const char *end)
{
	size_t n = (size_t)(end - start);

	if (n >= sizeof last_error)
		n = sizeof last_error - 1;
	memcpy(last_error, start, n);
	last_error[n] = '\0';
	for (char *p = last_error; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
}

/* Fails if the server sent a stream error or closed the stream. */
static void check_stream_error(struct conn *c)
{
	const char *t = find_tag(c->in, "stream:error");
	if (t) {
		const char *e = element_end(t, "stream:error");
		note_error(t, e ? e : c->in + c->len);
		fail("stream-error");
	}
}

/* Reads until one of names[] is complete in the input; returns its index
 * and sets *tag and *end to the element. Fails on a stream error, the
 * end of the stream or a timeout. */
static int read_element(struct conn *c, const char *const *names, const char **tag,
			const char **end)
{
	for (;;) {
		for (int i = 0; names[i]; i++) {
			const char *t = find_tag(c->in, names[i]);
			const char *e = t ? element_end(t, names[i]) : NULL;
			if (e) {
				*tag = t;
				*end = e;
				return i;
			}
		}
		check_stream_error(c);
		if (!conn_read(c)) {
			check_stream_error(c);
			fail("connection-closed-or-timeout");
		}
	}
}

/* Opens a stream and reads its features; the caller frees the result. */
static char *open_stream(struct conn *c)
{
	static const char *const features[] = {"stream:features", NULL};
	const char *tag, *end;

	conn_write(c, "<?xml version='1.0'?><stream:stream to='" HOST "' xmlns='jabber:client' "
		      "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>");
	read_element(c, features, &tag, &end);
	char *f = strndup(tag, (size_t)(end - tag));
	if (!f)
		fail("oom");
	conn_consume(c, end);
	return f;
}

/* --- TLS --- */

static const char *tls_version(SSL *ssl)
{
	return SSL_get_version(ssl);
}

static void tls_start(struct conn *c, const struct opts *o)
{
	static const unsigned char alpn[] = "\x0bxmpp-client";

	c->ctx = SSL_CTX_new(TLS_client_method());
	if (!c->ctx)
		fail("tls-init");
	SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION);
	if (o->tls12)
		SSL_CTX_set_max_proto_version(c->ctx, TLS1_2_VERSION);
	if (SSL_CTX_load_verify_locations(c->ctx, o->ca, NULL) != 1)
		fail("cannot-load-ca");
	SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
	c->ssl = SSL_new(c->ctx);
	if (!c->ssl)
		fail("tls-init");
	SSL_set_tlsext_host_name(c->ssl, HOST);
	if (SSL_set1_host(c->ssl, HOST) != 1)
		fail("tls-init");
	if (o->direct_tls && SSL_set_alpn_protos(c->ssl, alpn, sizeof alpn - 1) != 0)
		fail("tls-init");
	SSL_set_fd(c->ssl, c->fd);
	if (SSL_connect(c->ssl) != 1) {
		unsigned long e = ERR_peek_last_error();
		fail("tls-handshake:%s", e ? ERR_reason_error_string(e) : "?");
	}
	if (SSL_get_verify_result(c->ssl) != X509_V_OK)
		fail("certificate-not-verified");
	if (o->direct_tls) {
		const unsigned char *sel = NULL;
		unsigned sel_len = 0;
		SSL_get0_alpn_selected(c->ssl, &sel, &sel_len);
		if (sel_len != 11 || memcmp(sel, "xmpp-client", 11) != 0)
			fail("alpn-not-selected");
	}
}

/* Binding data for type, into out (CB_MAX bytes). Returns its length. */
static size_t channel_binding(SSL *ssl, const char *type, unsigned char *out)
{
	if (!strcmp(type, "tls-exporter")) {
		/* RFC 9266 §2: 32 bytes, this label, no context. */
		if (SSL_export_keying_material(ssl, out, 32, "EXPORTER-Channel-Binding", 24, NULL,
					       0, 0) != 1)
			fail("cannot-export-keying-material");
		return 32;
	}
	if (!strcmp(type, "tls-server-end-point")) {
		/* RFC 5929 §4.1: the hash of the server's certificate with the
		 * hash of its signature algorithm, SHA-256 for MD5 or SHA-1.
		 * A signature without a separate hash (Ed25519) has no
		 * definition; use SHA-256 as the server does. */
		X509 *cert = SSL_get1_peer_certificate(ssl);
		int md_nid = NID_undef, pk_nid = NID_undef;
		const EVP_MD *md = NULL;
		unsigned len = 0;

		if (!cert)
			fail("no-peer-certificate");
		if (OBJ_find_sigid_algs(X509_get_signature_nid(cert), &md_nid, &pk_nid))
			md = EVP_get_digestbynid(md_nid);
		if (!md || md_nid == NID_md5 || md_nid == NID_sha1)
			md = EVP_sha256();
		if (X509_digest(cert, md, out, &len) != 1 || len > CB_MAX)
			fail("cannot-hash-certificate");
		X509_free(cert);
		return len;
	}
	/* Any other name is sent with no data, to see the server refuse it. */
	return 0;
}

/* --- SASL --- */

static const EVP_MD *scram_md(const char *mech, bool *plus)
{
	static const struct {
		const char *name;
		const EVP_MD *(*md)(void);
	} m[] = {{"SCRAM-SHA-1", EVP_sha1},
		 {"SCRAM-SHA-256", EVP_sha256},
		 {"SCRAM-SHA-512", EVP_sha512}};

	for (size_t i = 0; i < sizeof m / sizeof m[0]; i++) {
		size_t n = strlen(m[i].name);
		if (!strncmp(mech, m[i].name, n) && (!mech[n] || !strcmp(mech + n, "-PLUS"))) {
			*plus = mech[n] != '\0';
			return m[i].md();
		}
	}
	return NULL;
}

/* RFC 5802 §5.1: ',' and '=' in a saslname are escaped. */
static char *saslname(const char *s)
{
	char *out = malloc(strlen(s) * 3 + 1), *o = out;

	if (!out)
		fail("oom");
	for (; *s; s++) {
		if (*s == ',')
			o = stpcpy(o, "=2C");
		else if (*s == '=')
			o = stpcpy(o, "=3D");
		else
			*o++ = *s;
	}
	*o = '\0';
	return out;
}

static void send_sasl(struct conn *c, const char *el, const char *mech, const unsigned char *data,
		      size_t len)
{
	char *b64 = b64_encode(data, len);
	size_t n = strlen(b64) + 256;
	char *x = malloc(n);

	if (!x)
		fail("oom");
	if (mech)
		snprintf(x, n, "<%s xmlns='" NS_SASL "' mechanism='%s'>%s</%s>", el, mech,
			 len ? b64 : "=", el);
	else
		snprintf(x, n, "<%s xmlns='" NS_SASL "'>%s</%s>", el, len ? b64 : "=", el);
	conn_write(c, x);
	free(x);
	free(b64);
}

enum sasl_answer { ANS_CHALLENGE, ANS_SUCCESS, ANS_FAILURE };

/* Reads the server's answer; decodes its data into out (cap bytes, NUL
 * added), length in *len. A <failure/> ends the program. */
static enum sasl_answer read_sasl(struct conn *c, char *out, size_t cap, size_t *len)
{
	static const char *const names[] = {"challenge", "success", "failure", NULL};
	const char *tag, *end;
	int i = read_element(c, names, &tag, &end);

	if (i == 2) {
		note_error(tag, end);
		fail("sasl-failure");
	}
	char *text = element_text(tag);
	long n = 0;
	if (!text)
		fail("oom");
	if (strcmp(text, "=") && *text) {
		n = b64_decode(text, strlen(text), (unsigned char *)out, cap - 1);
		if (n < 0)
			fail("server-sent-bad-base64");
	}
	out[n] = '\0';
	*len = (size_t)n;
	free(text);
	conn_consume(c, end);
	return i == 0 ? ANS_CHALLENGE : ANS_SUCCESS;
}

/* Value of attribute a ("r", "s", "i", "v") in a SCRAM message, copied. */
static char *scram_attr(const char *msg, char a)
{
	for (const char *p = msg; p && *p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL) {
		if (p[0] == a && p[1] == '=') {
			const char *e = strchr(p, ',');
			return strndup(p + 2, e ? (size_t)(e - p - 2) : strlen(p + 2));
		}
	}
	return NULL;
}

static void hmac(const EVP_MD *md, const unsigned char *key, size_t klen, const void *data,
		 size_t dlen, unsigned char *out)
{
	unsigned n = 0;
	if (!HMAC(md, key, (int)klen, data, dlen, out, &n))
		fail("hmac");
}

static void auth_plain(struct conn *c, const struct opts *o)
{
	char msg[4096], buf[1024];
	size_t len;
	int n = snprintf(msg, sizeof msg, "%s%c%s%c%s", o->authzid ? o->authzid : "", 0, o->user, 0,
			 o->password);

	if (n < 0 || (size_t)n >= sizeof msg)
		fail("arguments-too-long");
	send_sasl(c, "auth", "PLAIN", (unsigned char *)msg, (size_t)n);
	OPENSSL_cleanse(msg, sizeof msg);
	if (read_sasl(c, buf, sizeof buf, &len) != ANS_SUCCESS)
		fail("unexpected-challenge");
}

static void auth_scram(struct conn *c, const struct opts *o, const EVP_MD *md, bool plus)
{
	size_t hl = (size_t)EVP_MD_get_size(md);
	unsigned char rnd[24], cb[CB_MAX], salt[256];
	unsigned char salted[EVP_MAX_MD_SIZE], client_key[EVP_MAX_MD_SIZE],
	    stored_key[EVP_MAX_MD_SIZE], client_sig[EVP_MAX_MD_SIZE], proof[EVP_MAX_MD_SIZE],
	    server_key[EVP_MAX_MD_SIZE], server_sig[EVP_MAX_MD_SIZE], got_sig[EVP_MAX_MD_SIZE];
	char gs2[512], first[4096], server_first[4096], final[8192], authmsg[16384], in[4096];
	size_t cb_len = 0, in_len;
	char *cnonce, *user = saslname(o->user), *az = o->authzid ? saslname(o->authzid) : NULL;

	/* RFC 5802 §7: gs2-header = gs2-cbind-flag "," [ authzid ] "," */
	if (plus) {
		snprintf(gs2, sizeof gs2, "p=%s,%s%s,", o->cbtype, az ? "a=" : "", az ? az : "");
		cb_len = channel_binding(c->ssl, o->cbtype, cb);
		if (o->bad_cb && cb_len)
			cb[cb_len - 1] ^= 0x01;
	} else {
		snprintf(gs2, sizeof gs2, "%c,%s%s,", o->gs2_y ? 'y' : 'n', az ? "a=" : "",
			 az ? az : "");
	}

	if (RAND_bytes(rnd, sizeof rnd) != 1)
		fail("rand");
	cnonce = b64_encode(rnd, sizeof rnd);
	int n = snprintf(first, sizeof first, "%sn=%s,r=%s", gs2, user, cnonce);
	if (n < 0 || (size_t)n >= sizeof first)
		fail("arguments-too-long");
	const char *bare = first + strlen(gs2);
	send_sasl(c, "auth", o->mech, (unsigned char *)first, (size_t)n);

	/* server-first-message = nonce "," salt "," iteration-count */
	if (read_sasl(c, server_first, sizeof server_first, &in_len) != ANS_CHALLENGE)
		fail("success-without-proof");
	char *r = scram_attr(server_first, 'r'), *s64 = scram_attr(server_first, 's'),
	     *i64 = scram_attr(server_first, 'i');
	if (!r || !s64 || !i64 || strncmp(server_first, "r=", 2))
		fail("bad-server-first:%s", server_first);
	/* RFC 5802 §5.1: the nonce starts with ours and adds to it. */
	if (strncmp(r, cnonce, strlen(cnonce)) || strlen(r) <= strlen(cnonce))
		fail("server-nonce-does-not-extend-ours");
	char *iend;
	long iter = strtol(i64, &iend, 10);
	if (*iend || iter < 1 || iter > MAX_ITERATIONS)
		fail("bad-iteration-count:%s", i64);
	long salt_len = b64_decode(s64, strlen(s64), salt, sizeof salt);
	if (salt_len <= 0)
		fail("bad-salt");

	/* client-final-message-without-proof = channel-binding "," nonce */
	unsigned char cbind[sizeof gs2 + CB_MAX];
	size_t gl = strlen(gs2);
	memcpy(cbind, gs2, gl);
	memcpy(cbind + gl, cb, cb_len);
	char *c64 = b64_encode(cbind, gl + cb_len);
	snprintf(final, sizeof final, "c=%s,r=%s", c64, r);
	n = snprintf(authmsg, sizeof authmsg, "%s,%s,%s", bare, server_first, final);
	if (n < 0 || (size_t)n >= sizeof authmsg)
		fail("auth-message-too-long");

	/* RFC 5802 §3 */
	if (PKCS5_PBKDF2_HMAC(o->password, (int)strlen(o->password), salt, (int)salt_len, (int)iter,
			      md, (int)hl, salted) != 1)
		fail("pbkdf2");
	hmac(md, salted, hl, "Client Key", 10, client_key);
	if (EVP_Digest(client_key, hl, stored_key, NULL, md, NULL) != 1)
		fail("digest");
	hmac(md, stored_key, hl, authmsg, (size_t)n, client_sig);
	for (size_t k = 0; k < hl; k++)
		proof[k] = client_key[k] ^ client_sig[k];
	hmac(md, salted, hl, "Server Key", 10, server_key);
	hmac(md, server_key, hl, authmsg, (size_t)n, server_sig);
	char *p64 = b64_encode(proof, hl);
	size_t fl = strlen(final);
	snprintf(final + fl, sizeof final - fl, ",p=%s", p64);
	send_sasl(c, "response", NULL, (unsigned char *) final, strlen(final));

	/* server-final-message = verifier; RFC 6120 §6.3.10 puts it in
	 * <success/>, an older style in a last <challenge/>. */
	enum sasl_answer ans = read_sasl(c, in, sizeof in, &in_len);
	char *err = scram_attr(in, 'e');
	if (err)
		fail("server-error:%s", err);
	char *v = scram_attr(in, 'v');
	if (!v)
		fail("no-server-signature");
	long vl = b64_decode(v, strlen(v), got_sig, sizeof got_sig);
	if (vl != (long)hl || CRYPTO_memcmp(got_sig, server_sig, hl) != 0)
		fail("wrong-server-signature");
	if (ans == ANS_CHALLENGE) {
		send_sasl(c, "response", NULL, NULL, 0);
		if (read_sasl(c, in, sizeof in, &in_len) != ANS_SUCCESS)
			fail("no-success-after-signature");
	}

	OPENSSL_cleanse(salted, sizeof salted);
	OPENSSL_cleanse(client_key, sizeof client_key);
	free(v);
	free(p64);
	free(c64);
	free(r);
	free(s64);
	free(i64);
	free(cnonce);
	free(user);
	free(az);
}

/* --- after authentication --- */

static void bind_and_ping(struct conn *c)
{
	static const char *const iq[] = {"iq", NULL};
	const char *tag, *end;
	char *f = open_stream(c);

	if (!find_tag(f, "bind"))
		fail("no-bind-feature");
	free(f);
	conn_write(c, "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
		      "<resource>scram-client</resource></bind></iq>");
	read_element(c, iq, &tag, &end);
	char *type = attr_value(tag, "type"), *id = attr_value(tag, "id");
	const char *jid = find_tag(tag, "jid");
	if (!type || strcmp(type, "result") || !id || strcmp(id, "bind1") || !jid || jid > end) {
		note_error(tag, end);
		fail("bind-failed");
	}
	free(type);
	free(id);
	conn_consume(c, end);

	conn_write(c, "<iq type='get' id='ping1' to='" HOST "'><ping xmlns='urn:xmpp:ping'/></iq>");
	for (;;) {
		read_element(c, iq, &tag, &end);
		id = attr_value(tag, "id");
		bool ours = id && !strcmp(id, "ping1");
		free(id);
		if (ours)
			break;
		conn_consume(c, end); /* something else; not ours */
	}
	type = attr_value(tag, "type");
	if (!type || strcmp(type, "result")) {
		note_error(tag, end);
		fail("ping-failed");
	}
	free(type);
	conn_consume(c, end);
	conn_write(c, "</stream:stream>");
}

/* --- main --- */

static void usage(void)
{
	fprintf(stderr, "usage: scram-client --port P --ca FILE --user U --password PW --mech M\n"
			"  [--cb tls-exporter|tls-server-end-point] [--authzid JID]\n"
			"  [--direct-tls] [--tls12] [--bad-cb] [--gs2-y]\n");
	exit(2);
}

static void parse_args(int argc, char **argv, struct opts *o)
{
	memset(o, 0, sizeof *o);
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char **val = NULL;
		if (!strcmp(a, "--direct-tls"))
			o->direct_tls = true;
		else if (!strcmp(a, "--tls12"))
			o->tls12 = true;
		else if (!strcmp(a, "--bad-cb"))
			o->bad_cb = true;
		else if (!strcmp(a, "--gs2-y"))
			o->gs2_y = true;
		else if (!strcmp(a, "--ca"))
			val = &o->ca;
		else if (!strcmp(a, "--user"))
			val = &o->user;
		else if (!strcmp(a, "--password"))
			val = &o->password;
		else if (!strcmp(a, "--mech"))
			val = &o->mech;
		else if (!strcmp(a, "--cb"))
			val = &o->cbtype;
		else if (!strcmp(a, "--authzid"))
			val = &o->authzid;
		else if (!strcmp(a, "--port")) {
			if (++i >= argc)
				usage();
			o->port = atoi(argv[i]);
		} else
			usage();
		if (val) {
			if (++i >= argc)
				usage();
			*val = argv[i];
		}
	}
	if (o->port <= 0 || o->port > 65535 || !o->ca || !o->user || !o->password || !o->mech)
		usage();
}

static void print_list(const char *label, const char *features, const char *parent,
		       const char *child, bool attr)
{
	const char *p = find_tag(features, parent);
	const char *e = p ? element_end(p, parent) : NULL;

	fputs(label, stderr);
	for (const char *t = p ? find_tag(p, child) : NULL; t && t < e;
	     t = find_tag(t + 1, child)) {
		char *v = attr ? attr_value(t, "type") : element_text(t);
		fprintf(stderr, " %s", v ? v : "?");
		free(v);
	}
	fputc('\n', stderr);
}

int main(int argc, char **argv)
{
	struct opts o;
	struct conn c = {.fd = -1, .in = calloc(1, 1)};
	struct sockaddr_in sa = {.sin_family = AF_INET};
	struct timeval tv = {.tv_sec = IO_TIMEOUT_S};
	bool plus = false;
	const EVP_MD *md = NULL;

	parse_args(argc, argv, &o);
	if (strcmp(o.mech, "PLAIN")) {
		md = scram_md(o.mech, &plus);
		if (!md)
			fail("unknown-mechanism:%s", o.mech);
	}
	if (plus && !o.cbtype)
		fail("usage:-PLUS-needs-cb");
	if (!plus && (o.cbtype || o.bad_cb))
		fail("usage:cb-options-need-PLUS");
	if (plus && o.gs2_y)
		fail("usage:gs2-y-needs-no-PLUS");
	alarm(TOTAL_TIMEOUT_S);

	c.fd = socket(AF_INET, SOCK_STREAM, 0);
	if (c.fd < 0)
		fail("socket");
	setsockopt(c.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(c.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	sa.sin_port = htons((unsigned short)o.port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(c.fd, (struct sockaddr *)&sa, sizeof sa) < 0)
		fail("connect:%s", strerror(errno));

	if (o.direct_tls) {
		tls_start(&c, &o);
	} else {
		/* RFC 6120 §5.4.2 */
		static const char *const proceed[] = {"proceed", "failure", NULL};
		const char *tag, *end;
		char *f = open_stream(&c);
		if (!find_tag(f, "starttls"))
			fail("no-starttls-offered");
		free(f);
		conn_write(&c, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
		if (read_element(&c, proceed, &tag, &end) != 0) {
			note_error(tag, end);
			fail("starttls-refused");
		}
		conn_consume(&c, end);
		if (c.len)
			fail("data-after-proceed"); /* would be a plaintext injection */
		tls_start(&c, &o);
	}

	char *features = open_stream(&c);
	print_list("MECHS", features, "mechanisms", "mechanism", false);
	print_list("CBTYPES", features, "sasl-channel-binding", "channel-binding", true);
	free(features);

	if (md)
		auth_scram(&c, &o, md, plus);
	else
		auth_plain(&c, &o);
	bind_and_ping(&c);

	printf("OK %s %s %s\n", o.mech, plus ? o.cbtype : "none", tls_version(c.ssl));
	fflush(stdout);
	SSL_shutdown(c.ssl);
	SSL_free(c.ssl);
	SSL_CTX_free(c.ctx);
	close(c.fd);
	free(c.in);
	return 0;
}
