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

#include <idn2.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "net/certs.h"

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

static int add_san(X509 *x, const char *domain, const char *ascii)
{
	GENERAL_NAMES *names = sk_GENERAL_NAME_new_null();
	char srv[2][300];
	int rc = -1;

	if (!names)
		return -1;
	/* RFC 4985 §2: SRVName is "_Service.Name", the service without the
	 * protocol label; RFC 7673 §4 lists the XMPP ones. */
	if (strlen(ascii) + sizeof("_xmpp-client.") > sizeof(srv[0]))
		goto out;
	snprintf(srv[0], sizeof(srv[0]), "_xmpp-client.%s", ascii);
	snprintf(srv[1], sizeof(srv[1]), "_xmpp-server.%s", ascii);

	if (push_name(names, gn_dns(ascii)) < 0 ||
	    /* RFC 6120 §13.7.1.4: id-on-xmppAddr is a UTF8String holding
	     * the JID in its internationalized (U-label) form. */
	    push_name(names, gn_other(NID_XmppAddr, V_ASN1_UTF8STRING, domain)) < 0 ||
	    push_name(names, gn_other(NID_SRVName, V_ASN1_IA5STRING, srv[0])) < 0 ||
	    push_name(names, gn_other(NID_SRVName, V_ASN1_IA5STRING, srv[1])) < 0)
		goto out;
	if (X509_add1_ext_i2d(x, NID_subject_alt_name, names, 0, X509V3_ADD_DEFAULT) != 1)
		goto out;
	rc = 0;
out:
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

int cert_generate(const char *domain, enum cert_keytype kt, int days, const char *key_path,
		  const char *cert_path, char *err, size_t errlen)
{
	EVP_PKEY *pkey = NULL;
	X509 *x = NULL;
	BIO *kmem = NULL, *cmem = NULL;
	char *ascii = NULL, *ktmp = NULL, *ctmp = NULL;
	int rc = -1;

	if (!domain || !*domain) {
		seterr(err, errlen, "empty domain");
		return -1;
	}
	if (days < 1 || days > CERT_DAYS_MAX) {
		seterr(err, errlen, "validity must be 1..%d days", CERT_DAYS_MAX);
		return -1;
	}
	if (cert_domain_ascii(domain, &ascii) < 0) {
		seterr(err, errlen, "%s: not a valid domain name", domain);
		return -1;
	}
	if (strlen(ascii) > CN_MAX) {
		seterr(err, errlen, "%s: longer than the %d characters a certificate name holds",
		       domain, CN_MAX);
		goto out;
	}

	if (kt == CERT_RSA_2048)
		pkey = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	else
		pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	if (!pkey) {
		ssl_seterr(err, errlen, "generating the key");
		goto out;
	}
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

static X509 *load_cert(const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	X509 *x;

	if (!f) {
		seterr(err, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	if (!x)
		ssl_seterr(err, errlen, path);
	return x;
}

/* A daemon cannot ask for a passphrase, and OpenSSL's default callback
 * would prompt on the terminal: an encrypted key is an error instead. */
static int no_passphrase(char *buf, int size, int rwflag, void *ud)
{
	return 0;
}

static EVP_PKEY *load_key(const char *path, char *err, size_t errlen)
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

int cert_check(const char *domain, const char *cert_path, const char *key_path, char *err,
	       size_t errlen)
{
	X509 *x = NULL;
	EVP_PKEY *k = NULL;
	char *ascii = NULL;
	int rc = -1;

	x = load_cert(cert_path, err, errlen);
	if (!x)
		goto out;
	k = load_key(key_path, err, errlen);
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
