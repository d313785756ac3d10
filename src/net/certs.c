/* Key and self-signed certificate generation for a served domain, and the
 * consistency check that parleyctl and start-up run on configured pairs.
 *
 * The certificate is meant to be accepted by XMPP peers that do check
 * identities (RFC 6120 §13.7.1.2, RFC 7590 §3.2, RFC 6125), so it carries
 * every identifier type they may look for: DNS-ID, XmppAddr and SRV-IDs.
 * Everything is built from ASN.1 structures rather than from textual
 * extension configuration, so no domain string is ever parsed as syntax. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <idn2.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "net/certs.h"
#include "xmpp/jid.h"

/* X.520 ub-common-name */
#define CN_MAX 64

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* what: the step that failed; the reason comes from OpenSSL's error queue,
 * which is emptied so that it does not leak into a later report. */
static void ssl_seterr(char *err, size_t errlen, const char *what)
{
	unsigned long e = ERR_peek_last_error();
	char reason[256];

	if (e) {
		ERR_error_string_n(e, reason, sizeof(reason));
		seterr(err, errlen, "%s: %s", what, reason);
	} else {
		seterr(err, errlen, "%s", what);
	}
	ERR_clear_error();
}

static bool is_ascii(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s >= 0x80)
			return false;
	return true;
}

int cert_domain_ascii(const char *domain, char **out)
{
	char *a = NULL;

	/* ASCII domains (and IP literals, which IDNA would refuse) are
	 * already in the form that dNSName and SRVName want. */
	if (is_ascii(domain)) {
		a = strdup(domain);
		if (!a)
			return -1;
		*out = a;
		return 0;
	}
	/* RFC 5280 §7.2 and RFC 4985 §2: internationalized names go into
	 * IA5String identifiers as A-labels. */
	if (idn2_to_ascii_8z(domain, &a, IDN2_NONTRANSITIONAL) != IDN2_OK)
		return -1;
	*out = a;
	return 0;
}

static GENERAL_NAME *gn_dns(const char *name)
{
	GENERAL_NAME *gn = GENERAL_NAME_new();
	ASN1_IA5STRING *s = ASN1_IA5STRING_new();

	if (!gn || !s || !ASN1_STRING_set(s, name, -1)) {
		GENERAL_NAME_free(gn);
		ASN1_IA5STRING_free(s);
		return NULL;
	}
	GENERAL_NAME_set0_value(gn, GEN_DNS, s);
	return gn;
}

/* otherName ::= SEQUENCE { type-id OID, value [0] EXPLICIT ANY }, with the
 * value a string of the given universal type (V_ASN1_UTF8STRING or
 * V_ASN1_IA5STRING). */
static GENERAL_NAME *gn_other(int nid, int strtype, const char *value)
{
	GENERAL_NAME *gn = GENERAL_NAME_new();
	ASN1_TYPE *t = ASN1_TYPE_new();
	ASN1_STRING *s = ASN1_STRING_type_new(strtype);
	ASN1_OBJECT *oid = OBJ_nid2obj(nid);

	if (!gn || !t || !s || !oid || !ASN1_STRING_set(s, value, -1))
		goto fail;
	ASN1_TYPE_set(t, strtype, s);
	s = NULL;
	/* OBJ_nid2obj returns a static object; set0 takes ownership, so
	 * give it a copy that GENERAL_NAME_free may release. */
	oid = OBJ_dup(oid);
	if (!oid || !GENERAL_NAME_set0_othername(gn, oid, t))
		goto fail;
	return gn;
fail:
	ASN1_OBJECT_free(oid);
	ASN1_STRING_free(s);
	ASN1_TYPE_free(t);
	GENERAL_NAME_free(gn);
	return NULL;
}

static int push_name(GENERAL_NAMES *names, GENERAL_NAME *gn)
{
	if (!gn)
		return -1;
	if (!sk_GENERAL_NAME_push(names, gn)) {
		GENERAL_NAME_free(gn);
		return -1;
	}
	return 0;
}

/* The subjectAltNames of a certificate for domain, or NULL. */
static GENERAL_NAMES *xmpp_names(const char *domain, const char *ascii)
{
	GENERAL_NAMES *names = sk_GENERAL_NAME_new_null();
	char srv[2][300];

	if (!names)
		return NULL;
	/* RFC 4985 §2: SRVName is "_Service.Name", the service without the
	 * protocol label; RFC 7673 §4 lists the XMPP ones. */
	if (strlen(ascii) + sizeof("_xmpp-client.") > sizeof(srv[0]))
		goto fail;
	snprintf(srv[0], sizeof(srv[0]), "_xmpp-client.%s", ascii);
	snprintf(srv[1], sizeof(srv[1]), "_xmpp-server.%s", ascii);

	if (push_name(names, gn_dns(ascii)) < 0 ||
	    /* RFC 6120 §13.7.1.4: id-on-xmppAddr is a UTF8String holding
	     * the JID in its internationalized (U-label) form. */
	    push_name(names, gn_other(NID_XmppAddr, V_ASN1_UTF8STRING, domain)) < 0 ||
	    push_name(names, gn_other(NID_SRVName, V_ASN1_IA5STRING, srv[0])) < 0 ||
	    push_name(names, gn_other(NID_SRVName, V_ASN1_IA5STRING, srv[1])) < 0)
		goto fail;
	return names;
fail:
	GENERAL_NAMES_free(names);
	return NULL;
}

static int add_san(X509 *x, const char *domain, const char *ascii)
{
	GENERAL_NAMES *names = xmpp_names(domain, ascii);
	int rc = -1;

	if (!names)
		return -1;
	if (X509_add1_ext_i2d(x, NID_subject_alt_name, names, 0, X509V3_ADD_DEFAULT) == 1)
		rc = 0;
	GENERAL_NAMES_free(names);
	return rc;
}

static int add_constraints(X509 *x, enum cert_keytype kt)
{
	BASIC_CONSTRAINTS *bc = BASIC_CONSTRAINTS_new();
	ASN1_BIT_STRING *ku = ASN1_BIT_STRING_new();
	EXTENDED_KEY_USAGE *eku = sk_ASN1_OBJECT_new_null();
	ASN1_OCTET_STRING *skid = ASN1_OCTET_STRING_new();
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	int rc = -1;

	if (!bc || !ku || !eku || !skid)
		goto out;

	/* An end-entity certificate: peers must not accept it as a CA. */
	bc->ca = 0;
	if (X509_add1_ext_i2d(x, NID_basic_constraints, bc, 1, X509V3_ADD_DEFAULT) != 1)
		goto out;

	/* RFC 5280 §4.2.1.3 bit numbers. ECDHE/ECDSA and RSA signatures need
	 * digitalSignature; keyEncipherment only matters for TLS 1.2 RSA key
	 * transport, which an RSA server key may still be asked for. */
	if (!ASN1_BIT_STRING_set_bit(ku, 0, 1))
		goto out;
	if (kt == CERT_RSA_2048 && !ASN1_BIT_STRING_set_bit(ku, 2, 1))
		goto out;
	if (X509_add1_ext_i2d(x, NID_key_usage, ku, 1, X509V3_ADD_DEFAULT) != 1)
		goto out;

	/* s2s uses the same certificate in both directions: as server on
	 * accepted connections and as client on outgoing ones (RFC 7590 §3). */
	if (!sk_ASN1_OBJECT_push(eku, OBJ_nid2obj(NID_server_auth)) ||
	    !sk_ASN1_OBJECT_push(eku, OBJ_nid2obj(NID_client_auth)))
		goto out;
	if (X509_add1_ext_i2d(x, NID_ext_key_usage, eku, 0, X509V3_ADD_DEFAULT) != 1)
		goto out;

	/* RFC 5280 §4.2.1.2 method (1): SHA-1 of the subjectPublicKey bits. */
	if (!X509_pubkey_digest(x, EVP_sha1(), md, &mdlen) ||
	    !ASN1_OCTET_STRING_set(skid, md, (int)mdlen))
		goto out;
	if (X509_add1_ext_i2d(x, NID_subject_key_identifier, skid, 0, X509V3_ADD_DEFAULT) != 1)
		goto out;
	rc = 0;
out:
	BASIC_CONSTRAINTS_free(bc);
	ASN1_BIT_STRING_free(ku);
	/* The objects came from OBJ_nid2obj (static): free only the stack. */
	sk_ASN1_OBJECT_free(eku);
	ASN1_OCTET_STRING_free(skid);
	return rc;
}

static int set_serial(X509 *x)
{
	BIGNUM *bn = BN_new();
	ASN1_INTEGER *serial = NULL;
	int rc = -1;

	/* RFC 5280 §4.1.2.2: positive, at most 20 octets; 128 random bits
	 * make it unique without any state (CA/B Forum asks for >= 64). */
	if (!bn || !BN_rand(bn, 128, BN_RAND_TOP_ONE, BN_RAND_BOTTOM_ANY))
		goto out;
	serial = BN_to_ASN1_INTEGER(bn, NULL);
	if (!serial || !X509_set_serialNumber(x, serial))
		goto out;
	rc = 0;
out:
	ASN1_INTEGER_free(serial);
	BN_free(bn);
	return rc;
}

static X509 *build_cert(EVP_PKEY *pkey, const char *domain, const char *ascii, enum cert_keytype kt,
			int days, char *err, size_t errlen)
{
	X509 *x = X509_new();
	X509_NAME *name;

	if (!x)
		goto fail_ssl;
	if (!X509_set_version(x, X509_VERSION_3) || set_serial(x) < 0)
		goto fail_ssl;
	if (!X509_gmtime_adj(X509_getm_notBefore(x), 0) ||
	    !X509_time_adj_ex(X509_getm_notAfter(x), days, 0, NULL))
		goto fail_ssl;
	if (!X509_set_pubkey(x, pkey))
		goto fail_ssl;

	/* The CN holds the DNS name too, for the peers that still match on
	 * it (RFC 6125 §6.4.4); the SAN is what current ones use. */
	name = X509_get_subject_name(x);
	if (!X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_UTF8,
					(const unsigned char *)ascii, -1, -1, 0))
		goto fail_ssl;
	if (!X509_set_issuer_name(x, name))
		goto fail_ssl;

	if (add_constraints(x, kt) < 0 || add_san(x, domain, ascii) < 0)
		goto fail_ssl;
	if (!X509_sign(x, pkey, EVP_sha256()))
		goto fail_ssl;
	return x;
fail_ssl:
	ssl_seterr(err, errlen, "building the certificate");
	X509_free(x);
	return NULL;
}

/* Writes the PEM in mem to a fresh temporary file next to path with the
 * given mode, synced, and returns its malloc'd name in *tmp. */
static int write_tmp(const char *path, mode_t mode, BIO *mem, char **tmp, char *err, size_t errlen)
{
	unsigned char rnd[4] = {0};
	char *name = NULL;
	char *data = NULL;
	long len = BIO_get_mem_data(mem, &data);
	int fd;

	(void)RAND_bytes(rnd, sizeof(rnd));
	if (asprintf(&name, "%s.%ld.%02x%02x%02x%02x.tmp", path, (long)getpid(), rnd[0], rnd[1],
		     rnd[2], rnd[3]) < 0) {
		seterr(err, errlen, "out of memory");
		return -1;
	}
	/* O_EXCL: never follow a planted symlink or share a file someone
	 * else holds open; the key must not exist even briefly with wider
	 * permissions, hence the mode at creation. */
	fd = open(name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	if (fd < 0) {
		seterr(err, errlen, "%s: %s", name, strerror(errno));
		free(name);
		return -1;
	}
	/* The umask could only have narrowed the mode; a certificate that
	 * other users (the TLS terminator, monitoring) cannot read is a
	 * surprise, so set it exactly. */
	if (fchmod(fd, mode) < 0)
		goto fail;
	for (long off = 0; off < len;) {
		ssize_t n = write(fd, data + off, (size_t)(len - off));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			goto fail;
		}
		off += n;
	}
	if (fsync(fd) < 0)
		goto fail;
	if (close(fd) < 0) {
		fd = -1;
		goto fail;
	}
	*tmp = name;
	return 0;
fail:
	seterr(err, errlen, "%s: %s", name, strerror(errno));
	if (fd >= 0)
		close(fd);
	unlink(name);
	free(name);
	return -1;
}

static void sync_dir_of(const char *path)
{
	const char *slash = strrchr(path, '/');
	char *dir;
	int fd;

	if (!slash)
		dir = strdup(".");
	else
		dir = strndup(path, slash == path ? 1 : (size_t)(slash - path));
	if (!dir)
		return;
	/* Best effort: the renames are durable once the directory is. */
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		(void)fsync(fd);
		close(fd);
	}
	free(dir);
}

/* The A-label form of domain for the subject and the SANs, malloc'd into
 * *ascii; it must fit the CN. */
static int subject_ascii(const char *domain, char **ascii, char *err, size_t errlen)
{
	if (!domain || !*domain) {
		seterr(err, errlen, "empty domain");
		return -1;
	}
	if (cert_domain_ascii(domain, ascii) < 0) {
		seterr(err, errlen, "%s: not a valid domain name", domain);
		return -1;
	}
	if (strlen(*ascii) > CN_MAX) {
		seterr(err, errlen, "%s: longer than the %d characters a certificate name holds",
		       domain, CN_MAX);
		free(*ascii);
		*ascii = NULL;
		return -1;
	}
	return 0;
}

static EVP_PKEY *new_key(enum cert_keytype kt, char *err, size_t errlen)
{
	EVP_PKEY *pkey;

	if (kt == CERT_RSA_2048)
		pkey = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	else
		pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	if (!pkey)
		ssl_seterr(err, errlen, "generating the key");
	return pkey;
}

int cert_generate(const char *domain, enum cert_keytype kt, int days, const char *key_path,
		  const char *cert_path, char *err, size_t errlen)
{
	EVP_PKEY *pkey = NULL;
	X509 *x = NULL;
	BIO *kmem = NULL, *cmem = NULL;
	char *ascii = NULL, *ktmp = NULL, *ctmp = NULL;
	int rc = -1;

	if (days < 1 || days > CERT_DAYS_MAX) {
		seterr(err, errlen, "validity must be 1..%d days", CERT_DAYS_MAX);
		return -1;
	}
	if (subject_ascii(domain, &ascii, err, errlen) < 0)
		return -1;
	pkey = new_key(kt, err, errlen);
	if (!pkey)
		goto out;
	x = build_cert(pkey, domain, ascii, kt, days, err, errlen);
	if (!x)
		goto out;

	kmem = BIO_new(BIO_s_mem());
	cmem = BIO_new(BIO_s_mem());
	if (!kmem || !cmem || !PEM_write_bio_PrivateKey(kmem, pkey, NULL, NULL, 0, NULL, NULL) ||
	    !PEM_write_bio_X509(cmem, x)) {
		ssl_seterr(err, errlen, "encoding PEM");
		goto out;
	}

	/* Both files are complete on disk before either replaces anything,
	 * so a failure never leaves a key without its certificate. */
	if (write_tmp(key_path, 0600, kmem, &ktmp, err, errlen) < 0 ||
	    write_tmp(cert_path, 0644, cmem, &ctmp, err, errlen) < 0)
		goto out;
	if (rename(ktmp, key_path) < 0) {
		seterr(err, errlen, "%s: %s", key_path, strerror(errno));
		goto out;
	}
	free(ktmp);
	ktmp = NULL;
	if (rename(ctmp, cert_path) < 0) {
		seterr(err, errlen, "%s: %s", cert_path, strerror(errno));
		goto out;
	}
	free(ctmp);
	ctmp = NULL;
	sync_dir_of(key_path);
	sync_dir_of(cert_path);
	rc = 0;
out:
	if (ktmp) {
		unlink(ktmp);
		free(ktmp);
	}
	if (ctmp) {
		unlink(ctmp);
		free(ctmp);
	}
	BIO_free(kmem);
	BIO_free(cmem);
	X509_free(x);
	EVP_PKEY_free(pkey);
	free(ascii);
	return rc;
}

/* After the last PEM block a read fails with "no start line"; any other
 * failure is a damaged block. Clears that expected error. */
static bool pem_at_end(void)
{
	unsigned long e = ERR_peek_last_error();

	if (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE) {
		ERR_clear_error();
		return true;
	}
	return false;
}

X509 *cert_load(const char *path, STACK_OF(X509) * *chain, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	STACK_OF(X509) *sk = NULL;
	X509 *x, *c;

	if (chain)
		*chain = NULL;
	if (!f) {
		seterr(err, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	ERR_clear_error();
	x = PEM_read_X509(f, NULL, NULL, NULL);
	if (!x) {
		if (pem_at_end())
			seterr(err, errlen, "%s: no PEM certificate in it", path);
		else
			ssl_seterr(err, errlen, path);
		fclose(f);
		return NULL;
	}
	if (chain) {
		/* The rest of the file is the chain a server sends after its
		 * own certificate (RFC 8446 §4.4.2); other blocks, such as a
		 * key kept in the same file, are skipped by PEM_read_X509. */
		sk = sk_X509_new_null();
		if (!sk)
			goto fail_ssl;
		while ((c = PEM_read_X509(f, NULL, NULL, NULL))) {
			if (!sk_X509_push(sk, c)) {
				X509_free(c);
				goto fail_ssl;
			}
		}
		if (!pem_at_end())
			goto fail_ssl;
		*chain = sk;
	}
	fclose(f);
	ERR_clear_error();
	return x;
fail_ssl:
	ssl_seterr(err, errlen, path);
	sk_X509_pop_free(sk, X509_free);
	X509_free(x);
	fclose(f);
	return NULL;
}

/* A daemon cannot ask for a passphrase, and OpenSSL's default callback
 * would prompt on the terminal: an encrypted key is an error instead. */
static int no_passphrase(char *buf, int size, int rwflag, void *ud)
{
	return 0;
}

EVP_PKEY *cert_load_key(const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	EVP_PKEY *k;

	if (!f) {
		seterr(err, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	k = PEM_read_PrivateKey(f, NULL, no_passphrase, NULL);
	fclose(f);
	if (!k)
		ssl_seterr(err, errlen, path);
	return k;
}

static X509_REQ *build_req(EVP_PKEY *pkey, const char *domain, const char *ascii, char *err,
			   size_t errlen)
{
	X509_REQ *req = X509_REQ_new();
	GENERAL_NAMES *names = NULL;
	STACK_OF(X509_EXTENSION) *exts = NULL;
	X509_NAME *name;

	if (!req || !X509_REQ_set_version(req, X509_REQ_VERSION_1) ||
	    !X509_REQ_set_pubkey(req, pkey))
		goto fail_ssl;
	/* The same subject as cert_generate() writes: CAs copy what they
	 * validate, and some still want a CN. */
	name = X509_REQ_get_subject_name(req);
	if (!X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_UTF8,
					(const unsigned char *)ascii, -1, -1, 0))
		goto fail_ssl;
	/* RFC 2985 §5.4.2: the extensions the CA is asked to include. */
	names = xmpp_names(domain, ascii);
	if (!names ||
	    X509V3_add1_i2d(&exts, NID_subject_alt_name, names, 0, X509V3_ADD_DEFAULT) != 1 ||
	    !X509_REQ_add_extensions(req, exts))
		goto fail_ssl;
	if (!X509_REQ_sign(req, pkey, EVP_sha256()))
		goto fail_ssl;
	GENERAL_NAMES_free(names);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	return req;
fail_ssl:
	ssl_seterr(err, errlen, "building the request");
	GENERAL_NAMES_free(names);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	X509_REQ_free(req);
	return NULL;
}

int cert_request(const char *domain, enum cert_keytype kt, const char *key_path,
		 const char *csr_path, bool *key_created, char *err, size_t errlen)
{
	EVP_PKEY *pkey = NULL;
	X509_REQ *req = NULL;
	BIO *kmem = NULL, *rmem = NULL;
	char *ascii = NULL, *ktmp = NULL, *rtmp = NULL;
	struct stat st;
	bool fresh;
	int rc = -1;

	if (key_created)
		*key_created = false;
	if (subject_ascii(domain, &ascii, err, errlen) < 0)
		return -1;
	/* A key that is there is the one the server uses (or will use with
	 * the certificate this request brings back): never replace it. */
	fresh = lstat(key_path, &st) < 0 && errno == ENOENT;
	pkey = fresh ? new_key(kt, err, errlen) : cert_load_key(key_path, err, errlen);
	if (!pkey)
		goto out;
	req = build_req(pkey, domain, ascii, err, errlen);
	if (!req)
		goto out;

	rmem = BIO_new(BIO_s_mem());
	if (!rmem || !PEM_write_bio_X509_REQ(rmem, req)) {
		ssl_seterr(err, errlen, "encoding PEM");
		goto out;
	}
	if (fresh) {
		kmem = BIO_new(BIO_s_mem());
		if (!kmem || !PEM_write_bio_PrivateKey(kmem, pkey, NULL, NULL, 0, NULL, NULL)) {
			ssl_seterr(err, errlen, "encoding PEM");
			goto out;
		}
		if (write_tmp(key_path, 0600, kmem, &ktmp, err, errlen) < 0)
			goto out;
	}
	if (write_tmp(csr_path, 0644, rmem, &rtmp, err, errlen) < 0)
		goto out;
	/* link(), not rename(): should a key have appeared since lstat(),
	 * it stays, and this request (for another key) is not written. */
	if (ktmp) {
		if (link(ktmp, key_path) < 0) {
			seterr(err, errlen, "%s: %s", key_path, strerror(errno));
			goto out;
		}
		unlink(ktmp);
		free(ktmp);
		ktmp = NULL;
		sync_dir_of(key_path);
	}
	if (rename(rtmp, csr_path) < 0) {
		seterr(err, errlen, "%s: %s", csr_path, strerror(errno));
		goto out;
	}
	free(rtmp);
	rtmp = NULL;
	sync_dir_of(csr_path);
	if (key_created)
		*key_created = fresh;
	rc = 0;
out:
	if (ktmp) {
		unlink(ktmp);
		free(ktmp);
	}
	if (rtmp) {
		unlink(rtmp);
		free(rtmp);
	}
	BIO_free(kmem);
	BIO_free(rmem);
	X509_REQ_free(req);
	EVP_PKEY_free(pkey);
	free(ascii);
	return rc;
}

int cert_check(const char *domain, const char *cert_path, const char *key_path, char *err,
	       size_t errlen)
{
	X509 *x = NULL;
	EVP_PKEY *k = NULL;
	char *ascii = NULL;
	int rc = -1;

	x = cert_load(cert_path, NULL, err, errlen);
	if (!x)
		goto out;
	k = cert_load_key(key_path, err, errlen);
	if (!k)
		goto out;
	if (X509_check_private_key(x, k) != 1) {
		ERR_clear_error();
		seterr(err, errlen, "%s: key does not match the certificate %s", key_path,
		       cert_path);
		goto out;
	}
	if (X509_cmp_current_time(X509_get0_notBefore(x)) > 0) {
		seterr(err, errlen, "%s: not valid yet", cert_path);
		goto out;
	}
	if (X509_cmp_current_time(X509_get0_notAfter(x)) < 0) {
		seterr(err, errlen, "%s: expired", cert_path);
		goto out;
	}
	if (cert_domain_ascii(domain, &ascii) < 0) {
		seterr(err, errlen, "%s: not a valid domain name", domain);
		goto out;
	}
	/* RFC 6125 §6.4: peers match the DNS-ID (A-labels); a certificate
	 * that fails here is rejected by every verifying client. */
	if (X509_check_host(x, ascii, 0, 0, NULL) != 1) {
		ERR_clear_error();
		seterr(err, errlen, "%s: does not cover %s", cert_path, domain);
		goto out;
	}
	rc = 0;
out:
	free(ascii);
	EVP_PKEY_free(k);
	X509_free(x);
	return rc;
}

/* Peer identity (RFC 6125 §6) ----------------------------------------------- */

/* The reference identifier (RFC 6125 §6.2): the domain a peer server
 * claims, in both forms its presented identifiers may use. */
struct ref {
	char udomain[JID_PART_MAX + 1]; /* U-labels, as jid.h prepares it */
	char *ascii;			/* A-labels: DNS-IDs and SRV-IDs */
	size_t alen;
	bool ip; /* an IP literal, which no wildcard may cover */
};

static int ref_init(struct ref *r, const char *domain)
{
	memset(r, 0, sizeof(*r));
	/* Prepared again so that "Example.COM." is example.com here too. */
	if (!domain || jid_prep_domain(domain, strlen(domain), r->udomain, sizeof(r->udomain)) <= 0)
		return -1;
	if (cert_domain_ascii(r->udomain, &r->ascii) < 0)
		return -1;
	r->alen = strlen(r->ascii);
	/* jid.h gives IPv6 literals in brackets and refuses names that are
	 * all digits and dots but not an IPv4 address. */
	r->ip = r->udomain[0] == '[' || strspn(r->udomain, "0123456789.") == strlen(r->udomain);
	return 0;
}

/* RFC 6125 §6.4.1: DNS names compare case-insensitively in ASCII, and
 * A-labels are ASCII, so this is the whole comparison. */
static bool ascii_ieq(const char *a, size_t an, const char *b, size_t bn)
{
	if (an != bn)
		return false;
	for (size_t i = 0; i < an; i++) {
		unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
		if (x >= 'A' && x <= 'Z')
			x = (unsigned char)(x + ('a' - 'A'));
		if (y >= 'A' && y <= 'Z')
			y = (unsigned char)(y + ('a' - 'A'));
		if (x != y)
			return false;
	}
	return true;
}

/* The bytes of a string identifier, or NULL when it is empty or holds a
 * NUL: "example.com\0.evil.net" must not pass for example.com. */
static const char *str_bytes(const ASN1_STRING *s, size_t *n)
{
	const char *p = (const char *)ASN1_STRING_get0_data(s);
	int len = ASN1_STRING_length(s);

	if (!p || len <= 0 || memchr(p, '\0', (size_t)len))
		return NULL;
	*n = (size_t)len;
	return p;
}

/* A fully qualified name may end with a dot (RFC 6125 §6.4.1). */
static size_t no_final_dot(const char *s, size_t n)
{
	return n > 1 && s[n - 1] == '.' ? n - 1 : n;
}

/* A DNS-ID (or a CN-ID, which follows the same rules) against r. */
static enum cert_id dns_match(const struct ref *r, const char *name, size_t n)
{
	const char *rest, *dot;
	size_t rn;

	n = no_final_dot(name, n);
	if (ascii_ieq(name, n, r->ascii, r->alen))
		return CERT_ID_DNS;
	/* RFC 6125 §6.4.3: the wildcard is the whole left-most label and
	 * stands for exactly one label (rules 1 and 2); partial wildcards
	 * such as f*.example.com (rule 3, a MAY) are not honoured, as in
	 * the CA/Browser Forum requirements. */
	if (n < 3 || name[0] != '*' || name[1] != '.' || r->ip)
		return CERT_ID_NONE;
	rest = name + 2;
	rn = n - 2;
	/* RFC 6125 §7.2: "*.com" would cover a whole top-level domain;
	 * without a public suffix list, at least two labels must follow. */
	if (!memchr(rest, '.', rn) || memchr(rest, '*', rn))
		return CERT_ID_NONE;
	dot = memchr(r->ascii, '.', r->alen);
	if (!dot || dot == r->ascii)
		return CERT_ID_NONE;
	dot++;
	if (ascii_ieq(rest, rn, dot, r->alen - (size_t)(dot - r->ascii)))
		return CERT_ID_DNS_WILDCARD;
	return CERT_ID_NONE;
}

/* RFC 6120 §13.7.1.4: an id-on-xmppAddr is a UTF8String holding a JID.
 * A server is a domain JID; it is prepared as the reference was (RFC 7622
 * §3.2) and compared in the U-label form. Never a wildcard. */
static bool xmppaddr_match(const struct ref *r, const ASN1_TYPE *val)
{
	char prepped[JID_PART_MAX + 1];
	const char *p;
	size_t n;

	if (val->type != V_ASN1_UTF8STRING || !(p = str_bytes(val->value.utf8string, &n)))
		return false;
	/* A full JID (user@domain) identifies a user, not this server:
	 * jid_prep_domain() refuses '@' and '/'. */
	return jid_prep_domain(p, n, prepped, sizeof(prepped)) > 0 && !strcmp(prepped, r->udomain);
}

/* RFC 4985 §2 and RFC 6125 §6.5.1: an SRV-ID is the IA5String
 * "_Service.Name", the name in A-labels. RFC 6120 §13.7.1.2: peers look for
 * _xmpp-server, clients for _xmpp-client; XEP-0368 adds the direct TLS
 * services. No wildcards in SRV-IDs here. */
static bool srv_match(const struct ref *r, const ASN1_TYPE *val, enum cert_use use)
{
	static const char *const services[2][2] = {
	    [CERT_USE_C2S] = {"_xmpp-client", "_xmpps-client"},
	    [CERT_USE_S2S] = {"_xmpp-server", "_xmpps-server"},
	};
	const char *p, *dot;
	size_t n, sn;

	if (val->type != V_ASN1_IA5STRING || !(p = str_bytes(val->value.ia5string, &n)))
		return false;
	dot = memchr(p, '.', n);
	if (!dot)
		return false;
	sn = (size_t)(dot - p);
	if (!ascii_ieq(p, sn, services[use][0], strlen(services[use][0])) &&
	    !ascii_ieq(p, sn, services[use][1], strlen(services[use][1])))
		return false;
	n -= sn + 1;
	return ascii_ieq(dot + 1, no_final_dot(dot + 1, n), r->ascii, r->alen);
}

/* What one subjectAltName entry says about r. *ids is set when the entry
 * is of a kind that rules out the CN (RFC 6125 §6.4.4). */
static unsigned san_match(const struct ref *r, const GENERAL_NAME *gn, enum cert_use use, bool *ids)
{
	ASN1_OBJECT *oid = NULL;
	ASN1_TYPE *val = NULL;
	const char *p;
	size_t n;

	switch (gn->type) {
	case GEN_DNS:
		*ids = true;
		if (!(p = str_bytes(gn->d.dNSName, &n)))
			return 0;
		return CERT_ID_BIT(dns_match(r, p, n)) & ~CERT_ID_BIT(CERT_ID_NONE);
	case GEN_URI:
		/* A URI-ID: XMPP defines none to match, but it is an
		 * identifier all the same. */
		*ids = true;
		return 0;
	case GEN_OTHERNAME:
		if (GENERAL_NAME_get0_otherName(gn, &oid, &val) != 1 || !val)
			return 0;
		switch (OBJ_obj2nid(oid)) {
		case NID_XmppAddr:
			*ids = true;
			return xmppaddr_match(r, val) ? CERT_ID_BIT(CERT_ID_XMPPADDR) : 0;
		case NID_SRVName:
			*ids = true;
			return srv_match(r, val, use) ? CERT_ID_BIT(CERT_ID_SRV) : 0;
		}
		return 0;
	}
	return 0;
}

/* RFC 6125 §6.4.4: the CN-ID is used only when the certificate has no
 * DNS-ID, SRV-ID, URI-ID or XmppAddr, and then by the DNS-ID rules.
 * Returns 1 on a match, 0 if none, -1 (with why) if it cannot say. */
static int cn_match(const struct ref *r, X509 *cert, char *why, size_t whylen)
{
	X509_NAME *subj = X509_get_subject_name(cert);
	int i = X509_NAME_get_index_by_NID(subj, NID_commonName, -1);
	unsigned char *u = NULL;
	char *ascii = NULL;
	enum cert_id id = CERT_ID_NONE;
	int n;

	if (i < 0)
		return 0;
	/* RFC 6125 §1.8: a CN-ID is the one CN of the subject; with more,
	 * which names the service would be a guess. */
	if (X509_NAME_get_index_by_NID(subj, NID_commonName, i) >= 0) {
		seterr(why, whylen, "certificate has no subjectAltName and several common names");
		return -1;
	}
	n = ASN1_STRING_to_UTF8(&u, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, i)));
	if (n <= 0 || memchr(u, '\0', (size_t)n)) {
		ERR_clear_error();
		OPENSSL_free(u);
		return 0;
	}
	if (is_ascii((const char *)u))
		id = dns_match(r, (const char *)u, (size_t)n);
	else if (cert_domain_ascii((const char *)u, &ascii) == 0)
		id = dns_match(r, ascii, strlen(ascii));
	free(ascii);
	OPENSSL_free(u);
	return id != CERT_ID_NONE;
}

/* A list of names for people, truncated with "..." to fit. */
struct namebuf {
	char *p;
	size_t cap, len;
	int n;
	bool full;
};

static bool namebuf_has(const struct namebuf *b, const char *t)
{
	size_t tl = strlen(t);
	const char *s = b->p;

	/* Items are separated by ", ". */
	for (;;) {
		const char *sep = strstr(s, ", ");
		size_t l = sep ? (size_t)(sep - s) : strlen(s);
		if (l == tl && !memcmp(s, t, tl))
			return true;
		if (!sep)
			return false;
		s = sep + 2;
	}
}

/* kind: "DNS:" and the like, or "" for a bare name; a bare name already
 * listed is not repeated. Control characters become '?', and so does
 * anything but ASCII when utf8 is false. */
static void namebuf_add(struct namebuf *b, const char *kind, const char *s, size_t n, bool utf8)
{
	char item[300];
	size_t k = (size_t)snprintf(item, sizeof(item), "%s", kind), need;

	b->n++;
	if (b->full || !b->cap)
		return;
	for (size_t i = 0; i < n && k + 1 < sizeof(item); i++) {
		unsigned char c = (unsigned char)s[i];
		item[k++] = (char)(c < 0x20 || c == 0x7f || (c >= 0x80 && !utf8) ? '?' : c);
	}
	item[k] = '\0';
	if (!*kind && b->len && namebuf_has(b, item)) {
		b->n--;
		return;
	}
	/* Room for this item, and for ", ..." after it should the next one
	 * not fit. */
	need = (b->len ? 2 : 0) + k;
	if (b->len + need + sizeof(", ...") > b->cap || k + 1 >= sizeof(item)) {
		if (b->len + sizeof(", ...") <= b->cap)
			snprintf(b->p + b->len, b->cap - b->len, "%s...", b->len ? ", " : "");
		b->full = true;
		return;
	}
	b->len +=
	    (size_t)snprintf(b->p + b->len, b->cap - b->len, "%s%s", b->len ? ", " : "", item);
}

/* The names of cert into b; kinds: prefix each with its kind. */
static void list_names(X509 *cert, bool kinds, struct namebuf *b)
{
	GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
	bool ids = false;

	if (b->cap)
		b->p[0] = '\0';
	for (int i = 0; i < sk_GENERAL_NAME_num(names); i++) {
		const GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
		ASN1_OBJECT *oid = NULL;
		ASN1_TYPE *val = NULL;
		char ip[INET6_ADDRSTRLEN];
		const char *p;
		size_t n;

		switch (gn->type) {
		case GEN_DNS:
			ids = true;
			if ((p = str_bytes(gn->d.dNSName, &n)))
				namebuf_add(b, kinds ? "DNS:" : "", p, n, false);
			break;
		case GEN_URI:
			ids = true;
			if ((p = str_bytes(gn->d.uniformResourceIdentifier, &n)))
				namebuf_add(b, kinds ? "URI:" : "", p, n, false);
			break;
		case GEN_IPADD:
			n = (size_t)ASN1_STRING_length(gn->d.iPAddress);
			if (kinds && (n == 4 || n == 16) &&
			    inet_ntop(n == 4 ? AF_INET : AF_INET6,
				      ASN1_STRING_get0_data(gn->d.iPAddress), ip, sizeof(ip)))
				namebuf_add(b, "IP:", ip, strlen(ip), false);
			break;
		case GEN_OTHERNAME:
			if (GENERAL_NAME_get0_otherName(gn, &oid, &val) != 1 || !val)
				break;
			if (OBJ_obj2nid(oid) == NID_XmppAddr) {
				ids = true;
				if (val->type == V_ASN1_UTF8STRING &&
				    (p = str_bytes(val->value.utf8string, &n)))
					namebuf_add(b, kinds ? "XmppAddr:" : "", p, n, true);
			} else if (OBJ_obj2nid(oid) == NID_SRVName) {
				ids = true;
				if (val->type == V_ASN1_IA5STRING &&
				    (p = str_bytes(val->value.ia5string, &n)))
					namebuf_add(b, kinds ? "SRV:" : "", p, n, false);
			}
			break;
		}
	}
	GENERAL_NAMES_free(names);
	ERR_clear_error();
	if (!ids) {
		/* Only then does the CN count (RFC 6125 §6.4.4). */
		X509_NAME *subj = X509_get_subject_name(cert);
		for (int i = -1; (i = X509_NAME_get_index_by_NID(subj, NID_commonName, i)) >= 0;) {
			unsigned char *u = NULL;
			int n = ASN1_STRING_to_UTF8(
			    &u, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, i)));
			if (n > 0)
				namebuf_add(b, kinds ? "CN:" : "CN=", (const char *)u, (size_t)n,
					    true);
			OPENSSL_free(u);
		}
		ERR_clear_error();
	}
}

int cert_names(X509 *cert, char *out, size_t cap)
{
	struct namebuf b = {out, cap, 0, 0, false};

	list_names(cert, true, &b);
	return b.n;
}

unsigned cert_match(X509 *cert, const char *domain, enum cert_use use, char *why, size_t whylen)
{
	GENERAL_NAMES *names = NULL;
	struct ref r;
	unsigned found = 0;
	bool ids = false;
	int crit = -1;

	if (why && whylen)
		why[0] = '\0';
	if (!cert) {
		seterr(why, whylen, "no certificate");
		return 0;
	}
	if (ref_init(&r, domain) < 0) {
		seterr(why, whylen, "%s: not a valid domain name", domain ? domain : "(none)");
		goto out;
	}
	names = X509_get_ext_d2i(cert, NID_subject_alt_name, &crit, NULL);
	if (!names && crit != -1) {
		/* RFC 5280 §4.2: one subjectAltName at most. One that is
		 * there but unreadable must not let the CN speak instead. */
		seterr(why, whylen, "certificate has %s subjectAltName",
		       crit == -2 ? "more than one" : "an unreadable");
		ERR_clear_error();
		goto out;
	}
	for (int i = 0; i < sk_GENERAL_NAME_num(names); i++)
		found |= san_match(&r, sk_GENERAL_NAME_value(names, i), use, &ids);
	if (!ids) {
		int m = cn_match(&r, cert, why, whylen);
		if (m < 0)
			goto out;
		if (m > 0)
			found |= CERT_ID_BIT(CERT_ID_CN);
	}
	if (!found) {
		char list[256];
		struct namebuf b = {list, sizeof(list), 0, 0, false};

		list_names(cert, false, &b);
		seterr(why, whylen, "certificate names %s; not %s", b.n ? list : "nothing",
		       r.udomain);
	}
out:
	GENERAL_NAMES_free(names);
	free(r.ascii);
	return found;
}

enum cert_id cert_match_server(X509 *cert, const char *domain, char *why, size_t whylen)
{
	unsigned found = cert_match(cert, domain, CERT_USE_S2S, why, whylen);

	for (enum cert_id id = CERT_ID_SRV; id <= CERT_ID_CN; id++)
		if (found & CERT_ID_BIT(id))
			return id;
	return CERT_ID_NONE;
}

const char *cert_id_name(enum cert_id id)
{
	switch (id) {
	case CERT_ID_SRV:
		return "SRV-ID";
	case CERT_ID_XMPPADDR:
		return "XmppAddr";
	case CERT_ID_DNS:
		return "DNS-ID";
	case CERT_ID_DNS_WILDCARD:
		return "DNS-ID wildcard";
	case CERT_ID_CN:
		return "CN-ID";
	case CERT_ID_NONE:
		break;
	}
	return "none";
}

/* Chain ------------------------------------------------------------------- */

int cert_verify_chain(X509_STORE *store, X509 *cert, STACK_OF(X509) * chain, enum cert_use use,
		      char *why, size_t whylen)
{
	/* A client checks a server certificate; a peer server may also
	 * present it as a TLS client, and RFC 6120 §13.7.2 asks for no
	 * clientAuth purpose then: server certificates that carry only
	 * serverAuth are common. */
	static const int purposes[] = {X509_PURPOSE_SSL_SERVER, X509_PURPOSE_SSL_CLIENT};
	int tries = use == CERT_USE_S2S ? 2 : 1;
	int err = X509_V_OK, depth = 0;
	char subj[256] = "";
	const char *what;

	if (!store || !cert) {
		seterr(why, whylen, "no %s", store ? "certificate" : "trust store");
		return -1;
	}
	for (int i = 0; i < tries; i++) {
		X509_STORE_CTX *ctx = X509_STORE_CTX_new();
		int rc, e;

		/* The store's flags are OpenSSL's defaults: no
		 * X509_V_FLAG_X509_STRICT, which refuses certificates that
		 * public CAs issue and every peer accepts. */
		if (!ctx || X509_STORE_CTX_init(ctx, store, cert, chain) != 1 ||
		    X509_STORE_CTX_set_purpose(ctx, purposes[i]) != 1) {
			X509_STORE_CTX_free(ctx);
			ssl_seterr(why, whylen, "verifying the certificate chain");
			return -1;
		}
		rc = X509_verify_cert(ctx);
		e = X509_STORE_CTX_get_error(ctx);
		if (i == 0) {
			X509 *cur = X509_STORE_CTX_get_current_cert(ctx);
			err = e;
			depth = X509_STORE_CTX_get_error_depth(ctx);
			if (cur && depth > 0)
				X509_NAME_oneline(X509_get_subject_name(cur), subj, sizeof(subj));
		}
		X509_STORE_CTX_free(ctx);
		if (rc == 1) {
			ERR_clear_error();
			return 0;
		}
		if (e != X509_V_ERR_INVALID_PURPOSE)
			break;
	}
	if (err == X509_V_OK) {
		ssl_seterr(why, whylen, "verifying the certificate chain");
		return -1;
	}
	what = X509_verify_cert_error_string(err);
	if (depth > 0)
		seterr(why, whylen, "%s (chain depth %d, %s)", what, depth, subj);
	else
		seterr(why, whylen, "%s", what);
	ERR_clear_error();
	return -1;
}

enum cert_id cert_verify_server(X509_STORE *store, X509 *cert, STACK_OF(X509) * chain,
				const char *domain, char *why, size_t whylen)
{
	if (cert_verify_chain(store, cert, chain, CERT_USE_S2S, why, whylen) < 0)
		return CERT_ID_NONE;
	return cert_match_server(cert, domain, why, whylen);
}

/* RFC 6698 §2.1.2-2.1.3: the certificate (selector 0) or its
 * SubjectPublicKeyInfo (1), in full (matching type 0), SHA-256 (1) or
 * SHA-512 (2). */
static bool tlsa_matches(X509 *x, const struct cert_tlsa *t)
{
	unsigned char *der = NULL;
	int len;
	if (t->selector == 0)
		len = i2d_X509(x, &der);
	else if (t->selector == 1)
		len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &der);
	else
		return false;
	if (len <= 0)
		return false;
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	const unsigned char *v = der;
	size_t vlen = (size_t)len;
	bool ok = true;
	if (t->mtype == 1 || t->mtype == 2) {
		ok = EVP_Digest(der, (size_t)len, md, &mdlen,
				t->mtype == 1 ? EVP_sha256() : EVP_sha512(), NULL) == 1;
		v = md;
		vlen = mdlen;
	} else if (t->mtype != 0) {
		ok = false;
	}
	ok = ok && vlen == t->len && CRYPTO_memcmp(v, t->data, vlen) == 0;
	OPENSSL_free(der);
	return ok;
}

int cert_dane_match(X509 *leaf, STACK_OF(X509) * chain, const char *domain,
		    const struct cert_tlsa *r, size_t n, char *why, size_t whylen)
{
	size_t usable = 0;
	char ta_why[200] = "";
	if (!leaf) {
		seterr(why, whylen, "no certificate presented");
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		if (r[i].usage == 3) {
			usable++;
			if (tlsa_matches(leaf, &r[i]))
				return (int)i;
		} else if (r[i].usage == 2) {
			usable++;
			for (int k = 0; k < sk_X509_num(chain); k++) {
				X509 *ta = sk_X509_value(chain, k);
				if (!X509_cmp(ta, leaf) || !tlsa_matches(ta, &r[i]))
					continue;
				/* The matched certificate is the only anchor, even
				 * when it is not self-signed (an intermediate CA,
				 * the usual DANE-TA pin). */
				X509_STORE *st = X509_STORE_new();
				if (!st || X509_STORE_add_cert(st, ta) != 1 ||
				    X509_STORE_set_flags(st, X509_V_FLAG_PARTIAL_CHAIN) != 1) {
					X509_STORE_free(st);
					continue;
				}
				enum cert_id id = cert_verify_server(st, leaf, chain, domain,
								     ta_why, sizeof(ta_why));
				X509_STORE_free(st);
				if (id != CERT_ID_NONE)
					return (int)i;
			}
		}
	}
	if (!usable)
		seterr(why, whylen, "no usable TLSA records (only DANE-EE and DANE-TA count)");
	else if (ta_why[0])
		seterr(why, whylen, "a DANE-TA record matched an issuer, but %s", ta_why);
	else
		seterr(why, whylen, "certificate does not match the TLSA records");
	return -1;
}

X509_STORE *cert_trust_store(const char *ca_file, char *err, size_t errlen)
{
	X509_STORE *st = X509_STORE_new();
	STACK_OF(X509) *more = NULL;
	X509 *first = NULL;

	if (!st) {
		ssl_seterr(err, errlen, "creating the trust store");
		return NULL;
	}
	/* OpenSSL's default file and directory ($SSL_CERT_FILE and
	 * $SSL_CERT_DIR when set; on Debian /etc/ssl/certs, which
	 * ca-certificates fills). Missing ones leave the store empty. */
	if (X509_STORE_set_default_paths(st) != 1) {
		ssl_seterr(err, errlen, "loading the system trust store");
		goto fail;
	}
	if (ca_file) {
		first = cert_load(ca_file, &more, err, errlen);
		if (!first)
			goto fail;
		if (X509_STORE_add_cert(st, first) != 1) {
			ssl_seterr(err, errlen, ca_file);
			goto fail;
		}
		for (int i = 0; i < sk_X509_num(more); i++) {
			if (X509_STORE_add_cert(st, sk_X509_value(more, i)) != 1) {
				ssl_seterr(err, errlen, ca_file);
				goto fail;
			}
		}
	}
	X509_free(first);
	sk_X509_pop_free(more, X509_free);
	ERR_clear_error();
	return st;
fail:
	X509_free(first);
	sk_X509_pop_free(more, X509_free);
	X509_STORE_free(st);
	return NULL;
}
