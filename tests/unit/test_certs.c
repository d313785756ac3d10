#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include <arpa/inet.h>

#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "net/certs.h"

/* Each test gets its own directory, removed afterwards. */
struct tdir {
	char dir[256];
	char key[300];
	char crt[300];
};

static int setup(void **state)
{
	struct tdir *t = calloc(1, sizeof(*t));
	const char *base = getenv("TMPDIR");

	if (!t)
		return -1;
	snprintf(t->dir, sizeof(t->dir), "%s/parley-certs-XXXXXX", base ? base : "/tmp");
	if (!mkdtemp(t->dir)) {
		free(t);
		return -1;
	}
	snprintf(t->key, sizeof(t->key), "%s/host.key", t->dir);
	snprintf(t->crt, sizeof(t->crt), "%s/host.crt", t->dir);
	*state = t;
	return 0;
}

static int teardown(void **state)
{
	struct tdir *t = *state;
	DIR *d = opendir(t->dir);
	struct dirent *e;
	char p[600];

	while (d && (e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "%s/%s", t->dir, e->d_name);
		unlink(p);
	}
	if (d)
		closedir(d);
	rmdir(t->dir);
	free(t);
	return 0;
}

static int count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	assert_non_null(d);
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

static X509 *read_cert(const char *path)
{
	FILE *f = fopen(path, "r");
	X509 *x;

	assert_non_null(f);
	x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	assert_non_null(x);
	return x;
}

static EVP_PKEY *read_key(const char *path)
{
	FILE *f = fopen(path, "r");
	EVP_PKEY *k;

	assert_non_null(f);
	k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	assert_non_null(k);
	return k;
}

static int str_is(const ASN1_STRING *s, const char *want)
{
	size_t n = strlen(want);

	return (size_t)ASN1_STRING_length(s) == n && memcmp(ASN1_STRING_get0_data(s), want, n) == 0;
}

static mode_t file_mode(const char *path)
{
	struct stat st;

	assert_int_equal(stat(path, &st), 0);
	return st.st_mode & 07777;
}

/* Exactly one DNS-ID, one XmppAddr and the two SRV-IDs, nothing else. */
static void check_names(GENERAL_NAMES *names, const char *domain, const char *ascii)
{
	char want_c2s[300], want_s2s[300];
	int dns = 0, xmpp = 0, c2s = 0, s2s = 0;

	snprintf(want_c2s, sizeof(want_c2s), "_xmpp-client.%s", ascii);
	snprintf(want_s2s, sizeof(want_s2s), "_xmpp-server.%s", ascii);
	assert_non_null(names);
	assert_int_equal(sk_GENERAL_NAME_num(names), 4);
	for (int i = 0; i < sk_GENERAL_NAME_num(names); i++) {
		GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
		ASN1_OBJECT *oid = NULL;
		ASN1_TYPE *val = NULL;
		char txt[64];

		if (gn->type == GEN_DNS) {
			assert_true(str_is(gn->d.dNSName, ascii));
			dns++;
			continue;
		}
		assert_int_equal(gn->type, GEN_OTHERNAME);
		assert_int_equal(GENERAL_NAME_get0_otherName(gn, &oid, &val), 1);
		assert_true(OBJ_obj2txt(txt, sizeof(txt), oid, 1) > 0);
		if (!strcmp(txt, "1.3.6.1.5.5.7.8.5")) {
			/* RFC 6120 §13.7.1.4: UTF8String */
			assert_int_equal(val->type, V_ASN1_UTF8STRING);
			assert_true(str_is(val->value.utf8string, domain));
			xmpp++;
		} else if (!strcmp(txt, "1.3.6.1.5.5.7.8.7")) {
			/* RFC 4985 §2: IA5String */
			assert_int_equal(val->type, V_ASN1_IA5STRING);
			if (str_is(val->value.ia5string, want_c2s))
				c2s++;
			else if (str_is(val->value.ia5string, want_s2s))
				s2s++;
			else
				fail_msg("unexpected SRVName %.*s",
					 ASN1_STRING_length(val->value.ia5string),
					 (const char *)ASN1_STRING_get0_data(val->value.ia5string));
		} else {
			fail_msg("unexpected otherName %s", txt);
		}
	}
	assert_int_equal(dns, 1);
	assert_int_equal(xmpp, 1);
	assert_int_equal(c2s, 1);
	assert_int_equal(s2s, 1);
}

static void check_san(X509 *x, const char *domain, const char *ascii)
{
	int crit = -1;
	GENERAL_NAMES *names = X509_get_ext_d2i(x, NID_subject_alt_name, &crit, NULL);

	assert_non_null(names);
	/* The subject is not empty, so the SAN need not be critical
	 * (RFC 5280 §4.2.1.6), and some old peers reject unknown critical
	 * extensions. */
	assert_int_equal(crit, 0);
	check_names(names, domain, ascii);
	GENERAL_NAMES_free(names);
}

/* Everything a verifying peer looks at, for both key types. */
static void check_cert(X509 *x, EVP_PKEY *k, const char *domain, const char *ascii,
		       enum cert_keytype kt, int days)
{
	int crit = -1, day = -1, sec = -1;
	BASIC_CONSTRAINTS *bc;
	BIGNUM *serial;
	X509_NAME *subj;
	char cn[300];
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	const ASN1_OCTET_STRING *skid;

	assert_int_equal(X509_get_version(x), X509_VERSION_3);

	serial = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
	assert_non_null(serial);
	assert_false(BN_is_negative(serial));
	assert_int_equal(BN_num_bits(serial), 128);
	BN_free(serial);

	subj = X509_get_subject_name(x);
	assert_int_equal(X509_NAME_entry_count(subj), 1);
	assert_true(X509_NAME_get_text_by_NID(subj, NID_commonName, cn, sizeof(cn)) > 0);
	assert_string_equal(cn, ascii);
	assert_int_equal(X509_NAME_cmp(subj, X509_get_issuer_name(x)), 0);

	bc = X509_get_ext_d2i(x, NID_basic_constraints, &crit, NULL);
	assert_non_null(bc);
	assert_int_equal(crit, 1);
	assert_int_equal(bc->ca, 0);
	BASIC_CONSTRAINTS_free(bc);

	ASN1_BIT_STRING *ku = X509_get_ext_d2i(x, NID_key_usage, &crit, NULL);
	assert_non_null(ku);
	assert_int_equal(crit, 1);
	ASN1_BIT_STRING_free(ku);
	assert_true(X509_get_key_usage(x) & KU_DIGITAL_SIGNATURE);
	if (kt == CERT_RSA_2048)
		assert_true(X509_get_key_usage(x) & KU_KEY_ENCIPHERMENT);
	else
		assert_false(X509_get_key_usage(x) & KU_KEY_ENCIPHERMENT);
	assert_false(X509_get_key_usage(x) & (KU_KEY_CERT_SIGN | KU_CRL_SIGN));

	assert_true(X509_get_extension_flags(x) & EXFLAG_XKUSAGE);
	assert_int_equal(X509_get_extended_key_usage(x) & (XKU_SSL_SERVER | XKU_SSL_CLIENT),
			 XKU_SSL_SERVER | XKU_SSL_CLIENT);

	skid = X509_get0_subject_key_id(x);
	assert_non_null(skid);
	assert_true(X509_pubkey_digest(x, EVP_sha1(), md, &mdlen));
	assert_int_equal(ASN1_STRING_length(skid), mdlen);
	assert_memory_equal(ASN1_STRING_get0_data(skid), md, mdlen);

	check_san(x, domain, ascii);

	assert_int_equal(ASN1_TIME_diff(&day, &sec, X509_get0_notBefore(x), X509_get0_notAfter(x)),
			 1);
	assert_int_equal(day, days);
	assert_int_equal(sec, 0);
	assert_true(X509_cmp_current_time(X509_get0_notBefore(x)) <= 0);
	assert_true(X509_cmp_current_time(X509_get0_notAfter(x)) > 0);

	if (kt == CERT_RSA_2048) {
		assert_true(EVP_PKEY_is_a(k, "RSA"));
		assert_int_equal(EVP_PKEY_get_bits(k), 2048);
		assert_int_equal(X509_get_signature_nid(x), NID_sha256WithRSAEncryption);
	} else {
		char group[64];
		size_t glen = 0;
		assert_true(EVP_PKEY_is_a(k, "EC"));
		assert_int_equal(EVP_PKEY_get_group_name(k, group, sizeof(group), &glen), 1);
		assert_string_equal(group, "prime256v1");
		assert_int_equal(X509_get_signature_nid(x), NID_ecdsa_with_SHA256);
	}

	assert_int_equal(X509_check_private_key(x, k), 1);

	/* Self-signed: issuer is subject and its own key verifies the
	 * signature. (X509_check_issued would refuse it: an end-entity
	 * certificate has no keyCertSign, RFC 5280 §4.2.1.9.) */
	assert_int_equal(X509_verify(x, X509_get0_pubkey(x)), 1);
	/* A peer that pins it as a trust anchor accepts it for the domain,
	 * both as a server and as a client (s2s). */
	for (int purpose = 0; purpose < 2; purpose++) {
		X509_STORE *store = X509_STORE_new();
		X509_STORE_CTX *ctx = X509_STORE_CTX_new();
		assert_non_null(store);
		assert_non_null(ctx);
		assert_int_equal(X509_STORE_add_cert(store, x), 1);
		assert_int_equal(X509_STORE_CTX_init(ctx, store, x, NULL), 1);
		X509_STORE_CTX_set_purpose(ctx, purpose ? X509_PURPOSE_SSL_CLIENT
							: X509_PURPOSE_SSL_SERVER);
		assert_int_equal(
		    X509_VERIFY_PARAM_set1_host(X509_STORE_CTX_get0_param(ctx), ascii, 0), 1);
		assert_int_equal(X509_verify_cert(ctx), 1);
		X509_STORE_CTX_free(ctx);
		X509_STORE_free(store);
	}
	assert_int_equal(X509_check_host(x, "other.example", 0, 0, NULL), 0);
}

static void generate_and_check(struct tdir *t, const char *domain, const char *ascii,
			       enum cert_keytype kt, int days)
{
	char err[256] = "";
	X509 *x;
	EVP_PKEY *k;

	assert_int_equal(cert_generate(domain, kt, days, t->key, t->crt, err, sizeof(err)), 0);
	assert_string_equal(err, "");
	/* No temporary file is left behind. */
	assert_int_equal(count_entries(t->dir), 2);
	assert_int_equal(file_mode(t->key), 0600);
	assert_int_equal(file_mode(t->crt), 0644);
	x = read_cert(t->crt);
	k = read_key(t->key);
	check_cert(x, k, domain, ascii, kt, days);
	assert_int_equal(cert_check(domain, t->crt, t->key, err, sizeof(err)), 0);
	X509_free(x);
	EVP_PKEY_free(k);
}

static void test_generate_ec(void **state)
{
	/* umask 0: the key is 0600 because we say so, not by luck. */
	mode_t old = umask(0);
	generate_and_check(*state, "example.org", "example.org", CERT_EC_P256, 30);
	umask(old);
}

static void test_generate_rsa(void **state)
{
	/* umask 077: the certificate stays world-readable all the same. */
	mode_t old = umask(077);
	generate_and_check(*state, "xmpp.example.net", "xmpp.example.net", CERT_RSA_2048, 825);
	umask(old);
}

static void test_generate_idn(void **state)
{
	/* The XmppAddr keeps U-labels; DNS-ID and SRV-IDs carry A-labels. */
	generate_and_check(*state, "b\303\274cher.example", "xn--bcher-kva.example", CERT_EC_P256,
			   1);
}

static void test_regenerate_replaces(void **state)
{
	struct tdir *t = *state;
	char err[256];
	X509 *a, *b;
	EVP_PKEY *ka, *kb;

	assert_int_equal(
	    cert_generate("example.com", CERT_EC_P256, 10, t->key, t->crt, err, sizeof(err)), 0);
	a = read_cert(t->crt);
	ka = read_key(t->key);
	assert_int_equal(
	    cert_generate("example.com", CERT_EC_P256, 10, t->key, t->crt, err, sizeof(err)), 0);
	b = read_cert(t->crt);
	kb = read_key(t->key);
	assert_int_equal(count_entries(t->dir), 2);
	/* Fresh key and fresh random serial each time. */
	assert_int_not_equal(ASN1_INTEGER_cmp(X509_get0_serialNumber(a), X509_get0_serialNumber(b)),
			     0);
	assert_int_not_equal(EVP_PKEY_eq(ka, kb), 1);
	assert_int_equal(X509_check_private_key(b, kb), 1);
	assert_int_not_equal(X509_check_private_key(b, ka), 1);
	X509_free(a);
	X509_free(b);
	EVP_PKEY_free(ka);
	EVP_PKEY_free(kb);
}

static void test_check_rejects(void **state)
{
	struct tdir *t = *state;
	char err[256], key2[320], crt2[320], junk[320];
	FILE *f;

	snprintf(key2, sizeof(key2), "%s/other.key", t->dir);
	snprintf(crt2, sizeof(crt2), "%s/other.crt", t->dir);
	snprintf(junk, sizeof(junk), "%s/junk.pem", t->dir);
	assert_int_equal(
	    cert_generate("a.example", CERT_EC_P256, 5, t->key, t->crt, err, sizeof(err)), 0);
	assert_int_equal(cert_generate("b.example", CERT_EC_P256, 5, key2, crt2, err, sizeof(err)),
			 0);
	assert_int_equal(cert_check("a.example", t->crt, t->key, err, sizeof(err)), 0);
	assert_int_equal(cert_check("b.example", crt2, key2, err, sizeof(err)), 0);

	err[0] = '\0';
	assert_int_equal(cert_check("a.example", t->crt, key2, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "does not match"));

	err[0] = '\0';
	assert_int_equal(cert_check("b.example", t->crt, t->key, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "does not cover"));

	/* A subdomain is not covered either: there is no wildcard. */
	assert_int_equal(cert_check("conference.a.example", t->crt, t->key, err, sizeof(err)), -1);

	err[0] = '\0';
	assert_int_equal(cert_check("a.example", junk, t->key, err, sizeof(err)), -1);
	assert_non_null(strstr(err, junk));

	f = fopen(junk, "w");
	assert_non_null(f);
	fputs("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n", f);
	fclose(f);
	err[0] = '\0';
	assert_int_equal(cert_check("a.example", junk, t->key, err, sizeof(err)), -1);
	assert_non_null(strstr(err, junk));
	err[0] = '\0';
	assert_int_equal(cert_check("a.example", t->crt, junk, err, sizeof(err)), -1);
	assert_non_null(strstr(err, junk));
	/* The key is not a certificate, nor the reverse. */
	assert_int_equal(cert_check("a.example", t->key, t->key, err, sizeof(err)), -1);
	assert_int_equal(cert_check("a.example", t->crt, t->crt, err, sizeof(err)), -1);
}

static void test_generate_errors(void **state)
{
	struct tdir *t = *state;
	char err[256], nodir[320], nokey[340], nocrt[340], longd[80];

	err[0] = '\0';
	assert_int_equal(
	    cert_generate("example.org", CERT_EC_P256, 0, t->key, t->crt, err, sizeof(err)), -1);
	assert_true(strlen(err) > 0);
	assert_int_equal(cert_generate("example.org", CERT_EC_P256, CERT_DAYS_MAX + 1, t->key,
				       t->crt, err, sizeof(err)),
			 -1);
	assert_int_equal(cert_generate("", CERT_EC_P256, 1, t->key, t->crt, err, sizeof(err)), -1);

	/* 65 characters: more than a CN can hold. */
	memset(longd, 'a', 61);
	memcpy(longd + 61, ".org", 5);
	err[0] = '\0';
	assert_int_equal(cert_generate(longd, CERT_EC_P256, 1, t->key, t->crt, err, sizeof(err)),
			 -1);
	assert_true(strlen(err) > 0);
	assert_int_equal(count_entries(t->dir), 0);

	/* An unwritable place fails with the path in the message, and
	 * leaves nothing behind. */
	snprintf(nodir, sizeof(nodir), "%s/missing", t->dir);
	snprintf(nokey, sizeof(nokey), "%s/x.key", nodir);
	snprintf(nocrt, sizeof(nocrt), "%s/x.crt", nodir);
	err[0] = '\0';
	assert_int_equal(
	    cert_generate("example.org", CERT_EC_P256, 1, nokey, nocrt, err, sizeof(err)), -1);
	assert_non_null(strstr(err, nodir));
	/* The key is written, the certificate cannot be: neither appears. */
	assert_int_equal(
	    cert_generate("example.org", CERT_EC_P256, 1, t->key, nocrt, err, sizeof(err)), -1);
	assert_int_equal(count_entries(t->dir), 0);
	/* A short error buffer is truncated, not overrun. */
	char tiny[8];
	memset(tiny, 'x', sizeof(tiny));
	assert_int_equal(
	    cert_generate("example.org", CERT_EC_P256, 0, t->key, t->crt, tiny, sizeof(tiny)), -1);
	assert_non_null(memchr(tiny, '\0', sizeof(tiny)));
}

static void test_domain_ascii(void **state)
{
	char *a = NULL;

	assert_int_equal(cert_domain_ascii("example.org", &a), 0);
	assert_string_equal(a, "example.org");
	free(a);
	assert_int_equal(cert_domain_ascii("\xe4\xbe\x8b\xe3\x81\x88.jp", &a), 0);
	assert_string_equal(a, "xn--r8jz45g.jp");
	free(a);
	/* Not UTF-8 */
	a = NULL;
	assert_int_equal(cert_domain_ascii("\xff\xfe.example", &a), -1);
	assert_null(a);
}

/* Peer identity ------------------------------------------------------------- */

static EVP_PKEY *ec_key(void)
{
	EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");

	assert_non_null(k);
	return k;
}

static GENERAL_NAME *gn_string(int type, const char *v, size_t n)
{
	GENERAL_NAME *gn = GENERAL_NAME_new();
	ASN1_IA5STRING *s = ASN1_IA5STRING_new();

	assert_non_null(gn);
	assert_non_null(s);
	assert_int_equal(ASN1_STRING_set(s, v, (int)n), 1);
	GENERAL_NAME_set0_value(gn, type, s);
	return gn;
}

static GENERAL_NAME *gn_other(int nid, int strtype, const char *v, size_t n)
{
	GENERAL_NAME *gn = GENERAL_NAME_new();
	ASN1_TYPE *t = ASN1_TYPE_new();
	ASN1_STRING *s = ASN1_STRING_type_new(strtype);

	assert_non_null(gn);
	assert_non_null(t);
	assert_non_null(s);
	assert_int_equal(ASN1_STRING_set(s, v, (int)n), 1);
	ASN1_TYPE_set(t, strtype, s);
	assert_int_equal(GENERAL_NAME_set0_othername(gn, OBJ_dup(OBJ_nid2obj(nid)), t), 1);
	return gn;
}

/* "DNS:x", "SRV:_xmpp-server.x", "XMPP:x" (UTF8String), "URI:x", "IP:a.b.c.d",
 * "SRVU:x" (an SRVName wrongly as UTF8String), "XMPPI:x" (an XmppAddr
 * wrongly as IA5String). */
static GENERAL_NAMES *names_of(const char *const *sans)
{
	GENERAL_NAMES *names = sk_GENERAL_NAME_new_null();

	assert_non_null(names);
	for (; *sans; sans++) {
		const char *colon = strchr(*sans, ':'), *v = colon + 1;
		size_t kl = (size_t)(colon - *sans), n = strlen(v);
		GENERAL_NAME *gn;

		if (kl == 3 && !memcmp(*sans, "DNS", 3)) {
			gn = gn_string(GEN_DNS, v, n);
		} else if (kl == 3 && !memcmp(*sans, "URI", 3)) {
			gn = gn_string(GEN_URI, v, n);
		} else if (kl == 2 && !memcmp(*sans, "IP", 2)) {
			unsigned char a[4];
			ASN1_OCTET_STRING *o = ASN1_OCTET_STRING_new();
			assert_int_equal(inet_pton(AF_INET, v, a), 1);
			assert_int_equal(ASN1_OCTET_STRING_set(o, a, 4), 1);
			gn = GENERAL_NAME_new();
			GENERAL_NAME_set0_value(gn, GEN_IPADD, o);
		} else if (kl == 4 && !memcmp(*sans, "XMPP", 4)) {
			gn = gn_other(NID_XmppAddr, V_ASN1_UTF8STRING, v, n);
		} else if (kl == 5 && !memcmp(*sans, "XMPPI", 5)) {
			gn = gn_other(NID_XmppAddr, V_ASN1_IA5STRING, v, n);
		} else if (kl == 3 && !memcmp(*sans, "SRV", 3)) {
			gn = gn_other(NID_SRVName, V_ASN1_IA5STRING, v, n);
		} else if (kl == 4 && !memcmp(*sans, "SRVU", 4)) {
			gn = gn_other(NID_SRVName, V_ASN1_UTF8STRING, v, n);
		} else {
			fail_msg("bad SAN spec %s", *sans);
			return NULL;
		}
		assert_true(sk_GENERAL_NAME_push(names, gn) > 0);
	}
	return names;
}

static void add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509_EXTENSION *e;

	X509V3_set_ctx(&ctx, issuer ? issuer : x, x, NULL, NULL, 0);
	e = X509V3_EXT_nconf_nid(NULL, &ctx, nid, value);
	assert_non_null(e);
	assert_int_equal(X509_add_ext(x, e, -1), 1);
	X509_EXTENSION_free(e);
}

struct spec {
	const char *cn;		  /* NULL: no CN */
	const char *cn2;	  /* a second CN */
	const char *const *sans;  /* NULL: no subjectAltName */
	GENERAL_NAMES *raw_names; /* instead of sans (consumed) */
	EVP_PKEY *key;		  /* the subject's; NULL: a new one */
	X509 *issuer;		  /* NULL: self-signed */
	EVP_PKEY *issuer_key;
	long from, to; /* validity in days from now; 0, 0: yesterday to +30 */
	bool ca;
	const char *eku; /* extendedKeyUsage, or NULL for none */
};

static X509 *make(const struct spec *s)
{
	X509 *x = X509_new();
	EVP_PKEY *key = s->key ? s->key : ec_key();
	X509_NAME *name;
	ASN1_INTEGER *serial;
	static long next_serial = 1;

	assert_non_null(x);
	assert_int_equal(X509_set_version(x, X509_VERSION_3), 1);
	serial = ASN1_INTEGER_new();
	ASN1_INTEGER_set(serial, next_serial++);
	X509_set_serialNumber(x, serial);
	ASN1_INTEGER_free(serial);
	assert_non_null(
	    X509_time_adj_ex(X509_getm_notBefore(x), s->from || s->to ? s->from : -1, 0, NULL));
	assert_non_null(
	    X509_time_adj_ex(X509_getm_notAfter(x), s->from || s->to ? s->to : 30, 0, NULL));
	assert_int_equal(X509_set_pubkey(x, key), 1);
	name = X509_get_subject_name(x);
	if (s->cn)
		assert_int_equal(X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_UTF8,
							    (const unsigned char *)s->cn, -1, -1,
							    0),
				 1);
	if (s->cn2)
		assert_int_equal(X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_UTF8,
							    (const unsigned char *)s->cn2, -1, -1,
							    0),
				 1);
	/* An empty subject would be legal with a critical SAN; the tests
	 * do not need it. */
	assert_int_equal(X509_NAME_add_entry_by_NID(name, NID_organizationName, MBSTRING_UTF8,
						    (const unsigned char *)"Parley tests", -1, -1,
						    0),
			 1);
	assert_int_equal(
	    X509_set_issuer_name(x, s->issuer ? X509_get_subject_name(s->issuer) : name), 1);
	add_ext(x, s->issuer, NID_subject_key_identifier, "hash");
	if (s->issuer)
		add_ext(x, s->issuer, NID_authority_key_identifier, "keyid:always");
	if (s->ca) {
		add_ext(x, s->issuer, NID_basic_constraints, "critical,CA:TRUE");
		add_ext(x, s->issuer, NID_key_usage, "critical,keyCertSign,cRLSign");
	} else {
		add_ext(x, s->issuer, NID_basic_constraints, "critical,CA:FALSE");
		add_ext(x, s->issuer, NID_key_usage, "critical,digitalSignature");
	}
	if (s->eku)
		add_ext(x, s->issuer, NID_ext_key_usage, s->eku);
	if (s->sans || s->raw_names) {
		GENERAL_NAMES *names = s->raw_names ? s->raw_names : names_of(s->sans);
		assert_int_equal(
		    X509_add1_ext_i2d(x, NID_subject_alt_name, names, 0, X509V3_ADD_DEFAULT), 1);
		GENERAL_NAMES_free(names);
	}
	assert_true(X509_sign(x, s->issuer ? s->issuer_key : key, EVP_sha256()) > 0);
	if (!s->key)
		EVP_PKEY_free(key);
	return x;
}

/* cert_match_server() on a self-signed certificate with these names. */
static enum cert_id match_names(const char *cn, const char *const *sans, const char *domain,
				char *why, size_t whylen)
{
	X509 *x = make(&(struct spec){.cn = cn, .sans = sans});
	enum cert_id id = cert_match_server(x, domain, why, whylen);

	X509_free(x);
	return id;
}

#define SANS(...) ((const char *const[]){__VA_ARGS__, NULL})

static enum cert_id match(const char *cn, const char *const *sans, const char *domain)
{
	char why[512] = "untouched";
	enum cert_id id = match_names(cn, sans, domain, why, sizeof(why));

	/* why is a reason exactly when there is no match. */
	if (id == CERT_ID_NONE)
		assert_true(why[0] && strcmp(why, "untouched"));
	else
		assert_string_equal(why, "");
	return id;
}

static void test_match_srv(void **state)
{
	/* RFC 6120 §13.7.1.2: a peer looks for _xmpp-server (XEP-0368:
	 * _xmpps-server); the CN does not count next to a SAN. */
	assert_int_equal(
	    match("other.example", SANS("SRV:_xmpp-server.example.com"), "example.com"),
	    CERT_ID_SRV);
	assert_int_equal(match(NULL, SANS("SRV:_xmpps-server.example.com"), "example.com"),
			 CERT_ID_SRV);
	assert_int_equal(match(NULL, SANS("SRV:_XMPP-Server.EXAMPLE.com."), "example.com"),
			 CERT_ID_SRV);
	/* A client service is not a server's identity, and it still rules
	 * out the CN (RFC 6125 §6.4.4). */
	assert_int_equal(match("example.com", SANS("SRV:_xmpp-client.example.com"), "example.com"),
			 CERT_ID_NONE);
	assert_int_equal(match(NULL, SANS("SRV:_sip.example.com"), "example.com"), CERT_ID_NONE);
	assert_int_equal(match(NULL, SANS("SRV:_xmpp-server.example.com"), "chat.example.com"),
			 CERT_ID_NONE);
	/* No wildcards in SRV-IDs. */
	assert_int_equal(match(NULL, SANS("SRV:_xmpp-server.*.example.com"), "a.example.com"),
			 CERT_ID_NONE);
	/* RFC 4985 §2: IA5String; a UTF8String SRVName is ignored. */
	assert_int_equal(match(NULL, SANS("SRVU:_xmpp-server.example.com"), "example.com"),
			 CERT_ID_NONE);
	assert_int_equal(match(NULL, SANS("SRV:_xmpp-server"), "example.com"), CERT_ID_NONE);
	assert_int_equal(match(NULL, SANS("SRV:_xmpp-server."), "example.com"), CERT_ID_NONE);
}

static void test_match_srv_c2s(void **state)
{
	X509 *x = make(&(struct spec){.sans = SANS("SRV:_xmpp-client.example.com")});
	char why[256];

	assert_int_equal(cert_match(x, "example.com", CERT_USE_C2S, why, sizeof(why)),
			 CERT_ID_BIT(CERT_ID_SRV));
	assert_int_equal(cert_match(x, "example.com", CERT_USE_S2S, why, sizeof(why)), 0);
	assert_string_equal(why, "certificate names _xmpp-client.example.com; not example.com");
	X509_free(x);
}

static void test_match_xmppaddr(void **state)
{
	assert_int_equal(match(NULL, SANS("XMPP:example.com"), "example.com"), CERT_ID_XMPPADDR);
	/* Prepared like a JID before comparing (RFC 7622 §3.2). */
	assert_int_equal(match(NULL, SANS("XMPP:Example.COM."), "example.com"), CERT_ID_XMPPADDR);
	/* A user's address is not the server's. */
	assert_int_equal(match(NULL, SANS("XMPP:admin@example.com"), "example.com"), CERT_ID_NONE);
	assert_int_equal(match(NULL, SANS("XMPP:example.com/res"), "example.com"), CERT_ID_NONE);
	/* No wildcards in XmppAddr. */
	assert_int_equal(match(NULL, SANS("XMPP:*.example.com"), "a.example.com"), CERT_ID_NONE);
	/* RFC 6120 §13.7.1.4: UTF8String only. */
	assert_int_equal(match(NULL, SANS("XMPPI:example.com"), "example.com"), CERT_ID_NONE);
	assert_int_equal(match(NULL, SANS("XMPP:example.org"), "example.com"), CERT_ID_NONE);
}

static void test_match_dns(void **state)
{
	assert_int_equal(match(NULL, SANS("DNS:example.com"), "example.com"), CERT_ID_DNS);
	/* Case and a final dot do not matter, on either side. */
	assert_int_equal(match(NULL, SANS("DNS:EXAMPLE.Com"), "example.com"), CERT_ID_DNS);
	assert_int_equal(match(NULL, SANS("DNS:example.com."), "example.com"), CERT_ID_DNS);
	assert_int_equal(match(NULL, SANS("DNS:example.com"), "Example.COM."), CERT_ID_DNS);
	/* Any one of several. */
	assert_int_equal(
	    match(NULL, SANS("DNS:a.example", "DNS:example.com", "DNS:b.example"), "example.com"),
	    CERT_ID_DNS);
	assert_int_equal(match(NULL, SANS("DNS:example.com"), "xmpp.example.com"), CERT_ID_NONE);
	assert_int_equal(match(NULL, SANS("DNS:xmpp.example.com"), "example.com"), CERT_ID_NONE);
	assert_int_equal(match(NULL, SANS("DNS:example.co"), "example.com"), CERT_ID_NONE);
	assert_int_equal(match(NULL, SANS("DNS:example.comm"), "example.com"), CERT_ID_NONE);
	/* An IP literal compares as a string, but no wildcard covers it:
	 * "*.0.2.1" would otherwise take 192 as its label. */
	assert_int_equal(match(NULL, SANS("DNS:192.0.2.1"), "192.0.2.1"), CERT_ID_DNS);
	assert_int_equal(match(NULL, SANS("DNS:*.0.2.1"), "192.0.2.1"), CERT_ID_NONE);
	assert_int_equal(match(NULL, SANS("DNS:*.2.1"), "192.0.2.1"), CERT_ID_NONE);
}

static void test_match_wildcard(void **state)
{
	/* RFC 6125 §6.4.3: the whole left-most label, exactly one label. */
	assert_int_equal(match(NULL, SANS("DNS:*.example.com"), "xmpp.example.com"),
			 CERT_ID_DNS_WILDCARD);
	assert_int_equal(match(NULL, SANS("DNS:*.EXAMPLE.com."), "XMPP.example.com"),
			 CERT_ID_DNS_WILDCARD);
	assert_int_equal(match(NULL, SANS("DNS:*.example.com"), "example.com"), CERT_ID_NONE);
	assert_int_equal(match(NULL, SANS("DNS:*.example.com"), "a.b.example.com"), CERT_ID_NONE);
	assert_int_equal(match(NULL, SANS("DNS:*.example.com"), "xmpp.example.org"), CERT_ID_NONE);
	/* An exact name is stronger than a wildcard. */
	assert_int_equal(
	    match(NULL, SANS("DNS:*.example.com", "DNS:xmpp.example.com"), "xmpp.example.com"),
	    CERT_ID_DNS);
}

static void test_match_wildcard_refused(void **state)
{
	/* Partial wildcards (RFC 6125 §6.4.3 rule 3 is a MAY) are not honoured. */
	assert_int_equal(match(NULL, SANS("DNS:f*.example.com"), "foo.example.com"), CERT_ID_NONE);
	assert_int_equal(match(NULL, SANS("DNS:*oo.example.com"), "foo.example.com"), CERT_ID_NONE);
	assert_int_equal(match(NULL, SANS("DNS:f*o.example.com"), "foo.example.com"), CERT_ID_NONE);
	/* Only the left-most label (rule 1). */
	assert_int_equal(match(NULL, SANS("DNS:xmpp.*.example.com"), "xmpp.a.example.com"),
			 CERT_ID_NONE);
	assert_int_equal(match(NULL, SANS("DNS:*.*.example.com"), "a.b.example.com"), CERT_ID_NONE);
	/* Never a whole top-level domain, nor everything. */
	assert_int_equal(match(NULL, SANS("DNS:*.com"), "example.com"), CERT_ID_NONE);
	assert_int_equal(match(NULL, SANS("DNS:*.com."), "example.com"), CERT_ID_NONE);
	assert_int_equal(match(NULL, SANS("DNS:*"), "localhost"), CERT_ID_NONE);
	assert_int_equal(match(NULL, SANS("DNS:*."), "example.com"), CERT_ID_NONE);
	/* The CN follows the DNS-ID rules. */
	assert_int_equal(match("*.com", NULL, "example.com"), CERT_ID_NONE);
	assert_int_equal(match("f*.example.com", NULL, "foo.example.com"), CERT_ID_NONE);
}

static void test_match_cn(void **state)
{
	char why[256];

	/* RFC 6125 §6.4.4: the CN only when no DNS-, SRV-, URI-ID or
	 * XmppAddr is there. */
	assert_int_equal(match("example.com", NULL, "example.com"), CERT_ID_CN);
	assert_int_equal(match("EXAMPLE.com", NULL, "example.com"), CERT_ID_CN);
	assert_int_equal(match("*.example.com", NULL, "xmpp.example.com"), CERT_ID_CN);
	assert_int_equal(match("example.org", NULL, "example.com"), CERT_ID_NONE);
	assert_int_equal(match(NULL, NULL, "example.com"), CERT_ID_NONE);
	/* An IP address SAN is not one of those kinds. */
	assert_int_equal(match("example.com", SANS("IP:192.0.2.1"), "example.com"), CERT_ID_CN);
	/* ... but any of those rules out the CN, matching or not. */
	assert_int_equal(match("example.com", SANS("DNS:example.org"), "example.com"),
			 CERT_ID_NONE);
	assert_int_equal(match("example.com", SANS("XMPP:example.org"), "example.com"),
			 CERT_ID_NONE);
	assert_int_equal(match("example.com", SANS("URI:xmpp:example.org"), "example.com"),
			 CERT_ID_NONE);
	assert_int_equal(match("example.com", SANS("SRV:_xmpp-server.example.org"), "example.com"),
			 CERT_ID_NONE);
	/* Two CNs: which is the name would be a guess (RFC 6125 §1.8). */
	X509 *x = make(&(struct spec){.cn = "example.com", .cn2 = "example.org"});
	assert_int_equal(cert_match_server(x, "example.com", why, sizeof(why)), CERT_ID_NONE);
	assert_non_null(strstr(why, "several common names"));
	X509_free(x);
}

static void test_match_idn(void **state)
{
	const char *u = "b\303\274cher.example", *sub = "chat.b\303\274cher.example";

	/* XmppAddr in U-labels, DNS-ID and SRV-ID in A-labels. */
	assert_int_equal(match(NULL, SANS("XMPP:b\303\274cher.example"), u), CERT_ID_XMPPADDR);
	assert_int_equal(match(NULL, SANS("DNS:xn--bcher-kva.example"), u), CERT_ID_DNS);
	assert_int_equal(match(NULL, SANS("DNS:XN--BCHER-KVA.example"), u), CERT_ID_DNS);
	assert_int_equal(match(NULL, SANS("SRV:_xmpp-server.xn--bcher-kva.example"), u),
			 CERT_ID_SRV);
	assert_int_equal(match(NULL, SANS("DNS:*.xn--bcher-kva.example"), sub),
			 CERT_ID_DNS_WILDCARD);
	assert_int_equal(match("xn--bcher-kva.example", NULL, u), CERT_ID_CN);
	/* The reference may come in A-labels too. */
	assert_int_equal(match(NULL, SANS("XMPP:b\303\274cher.example"), "xn--bcher-kva.example"),
			 CERT_ID_XMPPADDR);
	/* A dNSName is IA5String: U-labels there are not a DNS name. */
	assert_int_equal(match(NULL, SANS("DNS:b\303\274cher.example"), u), CERT_ID_NONE);
	/* bucher is not bücher. */
	assert_int_equal(match(NULL, SANS("DNS:bucher.example", "XMPP:bucher.example"), u),
			 CERT_ID_NONE);
}

static void test_match_strongest(void **state)
{
	const char *const *all = SANS("DNS:*.example.com", "DNS:xmpp.example.com",
				      "XMPP:xmpp.example.com", "SRV:_xmpp-server.xmpp.example.com");
	X509 *x = make(&(struct spec){.cn = "xmpp.example.com", .sans = all});

	assert_int_equal(cert_match_server(x, "xmpp.example.com", NULL, 0), CERT_ID_SRV);
	assert_int_equal(cert_match(x, "xmpp.example.com", CERT_USE_S2S, NULL, 0),
			 CERT_ID_BIT(CERT_ID_SRV) | CERT_ID_BIT(CERT_ID_XMPPADDR) |
			     CERT_ID_BIT(CERT_ID_DNS) | CERT_ID_BIT(CERT_ID_DNS_WILDCARD));
	/* No _xmpp-client SRV-ID: clients match the rest. */
	assert_int_equal(cert_match(x, "xmpp.example.com", CERT_USE_C2S, NULL, 0),
			 CERT_ID_BIT(CERT_ID_XMPPADDR) | CERT_ID_BIT(CERT_ID_DNS) |
			     CERT_ID_BIT(CERT_ID_DNS_WILDCARD));
	X509_free(x);
	assert_int_equal(match(NULL, SANS("DNS:example.com", "XMPP:example.com"), "example.com"),
			 CERT_ID_XMPPADDR);
	assert_int_equal(
	    match(NULL, SANS("DNS:*.example.com", "XMPP:a.example.com"), "a.example.com"),
	    CERT_ID_XMPPADDR);

	assert_string_equal(cert_id_name(CERT_ID_SRV), "SRV-ID");
	assert_string_equal(cert_id_name(CERT_ID_XMPPADDR), "XmppAddr");
	assert_string_equal(cert_id_name(CERT_ID_DNS), "DNS-ID");
	assert_string_equal(cert_id_name(CERT_ID_DNS_WILDCARD), "DNS-ID wildcard");
	assert_string_equal(cert_id_name(CERT_ID_CN), "CN-ID");
	assert_string_equal(cert_id_name(CERT_ID_NONE), "none");
}

static void test_match_why(void **state)
{
	char why[256], tiny[24];

	assert_int_equal(
	    match_names("ignored.example",
			SANS("DNS:example.org", "DNS:*.example.net", "XMPP:example.org"),
			"example.com", why, sizeof(why)),
	    CERT_ID_NONE);
	/* The XmppAddr says the same name as the DNS-ID: said once. */
	assert_string_equal(why, "certificate names example.org, *.example.net; not example.com");
	assert_int_equal(match_names("example.org", NULL, "example.com", why, sizeof(why)),
			 CERT_ID_NONE);
	assert_string_equal(why, "certificate names CN=example.org; not example.com");
	assert_int_equal(match_names(NULL, NULL, "example.com", why, sizeof(why)), CERT_ID_NONE);
	assert_string_equal(why, "certificate names nothing; not example.com");
	/* What a peer put in its certificate cannot write control
	 * characters into our logs. */
	assert_int_equal(
	    match_names(NULL, SANS("DNS:evil.example\nFAKE LOG"), "example.com", why, sizeof(why)),
	    CERT_ID_NONE);
	assert_null(strchr(why, '\n'));
	assert_non_null(strstr(why, "evil.example?FAKE LOG"));
	/* A short buffer truncates. */
	assert_int_equal(
	    match_names(NULL, SANS("DNS:example.org"), "example.com", tiny, sizeof(tiny)),
	    CERT_ID_NONE);
	assert_int_equal(strlen(tiny), sizeof(tiny) - 1);
	/* A reference that is not a domain. */
	assert_int_equal(
	    match_names(NULL, SANS("DNS:example.org"), "not a domain", why, sizeof(why)),
	    CERT_ID_NONE);
	assert_non_null(strstr(why, "not a valid domain"));
	assert_int_equal(cert_match_server(NULL, "example.com", why, sizeof(why)), CERT_ID_NONE);
}

static void test_match_malformed(void **state)
{
	GENERAL_NAMES *names = sk_GENERAL_NAME_new_null();
	X509 *x;
	char why[256];

	/* "example.com\0.evil.net": the NUL must not end the comparison. */
	assert_true(sk_GENERAL_NAME_push(names, gn_string(GEN_DNS, "example.com\0.evil.net", 21)) >
		    0);
	assert_true(sk_GENERAL_NAME_push(names, gn_other(NID_XmppAddr, V_ASN1_UTF8STRING,
							 "example.com\0x", 13)) > 0);
	assert_true(sk_GENERAL_NAME_push(names, gn_other(NID_SRVName, V_ASN1_IA5STRING,
							 "_xmpp-server.example.com\0x", 26)) > 0);
	x = make(&(struct spec){.cn = "example.com", .raw_names = names});
	assert_int_equal(cert_match_server(x, "example.com", why, sizeof(why)), CERT_ID_NONE);
	X509_free(x);

	/* Two subjectAltName extensions: which one counts is ambiguous,
	 * and the CN must not be used instead. */
	x = make(&(struct spec){.cn = "example.com", .sans = SANS("DNS:example.org")});
	names = names_of(SANS("DNS:example.com"));
	X509_EXTENSION *e = X509V3_EXT_i2d(NID_subject_alt_name, 0, names);
	assert_non_null(e);
	assert_int_equal(X509_add_ext(x, e, -1), 1);
	X509_EXTENSION_free(e);
	GENERAL_NAMES_free(names);
	assert_int_equal(cert_match_server(x, "example.com", why, sizeof(why)), CERT_ID_NONE);
	assert_non_null(strstr(why, "more than one subjectAltName"));
	X509_free(x);
}

static void test_names(void **state)
{
	X509 *x = make(&(struct spec){.cn = "ignored",
				      .sans = SANS("DNS:example.org", "XMPP:b\303\274cher.example",
						   "SRV:_xmpp-server.example.org",
						   "URI:https://example.org/", "IP:192.0.2.7")});
	char out[256], tiny[sizeof("DNS:example.org, ...")];

	assert_int_equal(cert_names(x, out, sizeof(out)), 5);
	assert_string_equal(out, "DNS:example.org, XmppAddr:b\303\274cher.example, "
				 "SRV:_xmpp-server.example.org, URI:https://example.org/, "
				 "IP:192.0.2.7");
	assert_int_equal(cert_names(x, tiny, sizeof(tiny)), 5);
	assert_string_equal(tiny, "DNS:example.org, ...");
	X509_free(x);
	x = make(&(struct spec){.cn = "example.org"});
	assert_int_equal(cert_names(x, out, sizeof(out)), 1);
	assert_string_equal(out, "CN:example.org");
	X509_free(x);
}

/* What cert_generate() writes is what peers look for: the SRV-ID first. */
static void test_generated_matches(void **state)
{
	struct tdir *t = *state;
	char err[256];
	X509 *x;

	assert_int_equal(
	    cert_generate("example.org", CERT_EC_P256, 5, t->key, t->crt, err, sizeof(err)), 0);
	x = read_cert(t->crt);
	assert_int_equal(cert_match_server(x, "example.org", err, sizeof(err)), CERT_ID_SRV);
	assert_int_equal(cert_match(x, "example.org", CERT_USE_S2S, NULL, 0),
			 CERT_ID_BIT(CERT_ID_SRV) | CERT_ID_BIT(CERT_ID_XMPPADDR) |
			     CERT_ID_BIT(CERT_ID_DNS));
	assert_int_equal(cert_match(x, "example.org", CERT_USE_C2S, NULL, 0),
			 CERT_ID_BIT(CERT_ID_SRV) | CERT_ID_BIT(CERT_ID_XMPPADDR) |
			     CERT_ID_BIT(CERT_ID_DNS));
	assert_int_equal(cert_match_server(x, "chat.example.org", err, sizeof(err)), CERT_ID_NONE);
	assert_int_equal(cert_names(x, err, sizeof(err)), 4);
	X509_free(x);

	assert_int_equal(cert_generate("b\303\274cher.example", CERT_EC_P256, 5, t->key, t->crt,
				       err, sizeof(err)),
			 0);
	x = read_cert(t->crt);
	assert_int_equal(cert_match_server(x, "b\303\274cher.example", err, sizeof(err)),
			 CERT_ID_SRV);
	assert_int_equal(cert_match(x, "b\303\274cher.example", CERT_USE_S2S, NULL, 0),
			 CERT_ID_BIT(CERT_ID_SRV) | CERT_ID_BIT(CERT_ID_XMPPADDR) |
			     CERT_ID_BIT(CERT_ID_DNS));
	X509_free(x);
}

/* Chains --------------------------------------------------------------------- */

struct pki {
	EVP_PKEY *root_key, *int_key;
	X509 *root, *inter;
	X509_STORE *store; /* the root only */
};

static struct pki *pki_new(void)
{
	struct pki *p = calloc(1, sizeof(*p));

	assert_non_null(p);
	p->root_key = ec_key();
	p->int_key = ec_key();
	p->root = make(&(struct spec){.cn = "Parley Test Root", .key = p->root_key, .ca = true});
	p->inter = make(&(struct spec){.cn = "Parley Test Intermediate",
				       .key = p->int_key,
				       .issuer = p->root,
				       .issuer_key = p->root_key,
				       .ca = true});
	p->store = X509_STORE_new();
	assert_non_null(p->store);
	assert_int_equal(X509_STORE_add_cert(p->store, p->root), 1);
	return p;
}

static void pki_free(struct pki *p)
{
	X509_STORE_free(p->store);
	X509_free(p->root);
	X509_free(p->inter);
	EVP_PKEY_free(p->root_key);
	EVP_PKEY_free(p->int_key);
	free(p);
}

/* A leaf for example.com issued by the root. */
static X509 *leaf(struct pki *p, long from, long to, const char *eku)
{
	return make(&(struct spec){.cn = "example.com",
				   .sans = SANS("DNS:example.com", "SRV:_xmpp-server.example.com"),
				   .issuer = p->root,
				   .issuer_key = p->root_key,
				   .from = from,
				   .to = to,
				   .eku = eku});
}

static void test_verify_ca(void **state)
{
	struct pki *p = pki_new();
	X509_STORE *empty = X509_STORE_new();
	X509 *x = leaf(p, 0, 0, "serverAuth,clientAuth");
	char why[256] = "untouched";

	assert_int_equal(cert_verify_server(p->store, x, NULL, "example.com", why, sizeof(why)),
			 CERT_ID_SRV);
	assert_string_equal(why, "");
	/* The right chain, the wrong name. */
	assert_int_equal(cert_verify_server(p->store, x, NULL, "example.org", why, sizeof(why)),
			 CERT_ID_NONE);
	assert_string_equal(why, "certificate names example.com, _xmpp-server.example.com; "
				 "not example.org");
	/* Without the CA in the store. */
	assert_int_equal(cert_verify_server(empty, x, NULL, "example.com", why, sizeof(why)),
			 CERT_ID_NONE);
	assert_string_equal(why, "unable to get local issuer certificate");
	/* Sending the root along does not make it trusted. */
	STACK_OF(X509) *chain = sk_X509_new_null();
	sk_X509_push(chain, p->root);
	assert_int_equal(cert_verify_server(empty, x, chain, "example.com", why, sizeof(why)),
			 CERT_ID_NONE);
	assert_non_null(strstr(why, "self-signed certificate in certificate chain"));
	sk_X509_free(chain);
	X509_free(x);
	X509_STORE_free(empty);
	pki_free(p);
}

static void test_verify_expired(void **state)
{
	struct pki *p = pki_new();
	X509 *x = leaf(p, -30, -1, NULL);
	char why[256];

	assert_int_equal(cert_verify_server(p->store, x, NULL, "example.com", why, sizeof(why)),
			 CERT_ID_NONE);
	assert_string_equal(why, "certificate has expired");
	X509_free(x);
	x = leaf(p, 2, 30, NULL);
	assert_int_equal(cert_verify_server(p->store, x, NULL, "example.com", why, sizeof(why)),
			 CERT_ID_NONE);
	assert_string_equal(why, "certificate is not yet valid");
	X509_free(x);
	pki_free(p);
}

static void test_verify_self_signed(void **state)
{
	struct pki *p = pki_new();
	X509 *x =
	    make(&(struct spec){.cn = "example.com",
				.sans = SANS("DNS:example.com", "SRV:_xmpp-server.example.com"),
				.eku = "serverAuth,clientAuth"});
	X509_STORE *pinned = X509_STORE_new();
	char why[256];

	assert_int_equal(cert_verify_server(p->store, x, NULL, "example.com", why, sizeof(why)),
			 CERT_ID_NONE);
	assert_string_equal(why, "self-signed certificate");
	/* Unless the admin put it in the store. */
	assert_int_equal(X509_STORE_add_cert(pinned, x), 1);
	assert_int_equal(cert_verify_server(pinned, x, NULL, "example.com", why, sizeof(why)),
			 CERT_ID_SRV);
	X509_STORE_free(pinned);
	X509_free(x);
	pki_free(p);
}

static void test_verify_intermediate(void **state)
{
	struct pki *p = pki_new();
	X509 *x = make(&(struct spec){.cn = "example.com",
				      .sans = SANS("XMPP:example.com"),
				      .issuer = p->inter,
				      .issuer_key = p->int_key,
				      .eku = "serverAuth"});
	STACK_OF(X509) *chain = sk_X509_new_null();
	char why[256];

	/* SSL_get_peer_cert_chain() on a client includes the leaf itself. */
	sk_X509_push(chain, x);
	sk_X509_push(chain, p->inter);
	assert_int_equal(cert_verify_server(p->store, x, chain, "example.com", why, sizeof(why)),
			 CERT_ID_XMPPADDR);
	assert_int_equal(cert_verify_server(p->store, x, NULL, "example.com", why, sizeof(why)),
			 CERT_ID_NONE);
	assert_string_equal(why, "unable to get local issuer certificate");
	sk_X509_free(chain);
	X509_free(x);

	/* An expired intermediate is named. */
	X509 *old = make(&(struct spec){.cn = "Parley Old Intermediate",
					.key = p->int_key,
					.issuer = p->root,
					.issuer_key = p->root_key,
					.from = -30,
					.to = -2,
					.ca = true});
	x = make(&(struct spec){.cn = "example.com",
				.sans = SANS("DNS:example.com"),
				.issuer = old,
				.issuer_key = p->int_key});
	chain = sk_X509_new_null();
	sk_X509_push(chain, old);
	assert_int_equal(cert_verify_server(p->store, x, chain, "example.com", why, sizeof(why)),
			 CERT_ID_NONE);
	assert_non_null(strstr(why, "certificate has expired"));
	assert_non_null(strstr(why, "depth 1"));
	assert_non_null(strstr(why, "Parley Old Intermediate"));
	sk_X509_free(chain);
	X509_free(x);
	X509_free(old);
	pki_free(p);
}

static void test_verify_purpose(void **state)
{
	struct pki *p = pki_new();
	X509 *server_only = leaf(p, 0, 0, "serverAuth");
	X509 *client_only = leaf(p, 0, 0, "clientAuth");
	X509 *signing = leaf(p, 0, 0, "codeSigning");
	char why[256];

	/* XEP-0178 / RFC 6120 §13.7.2: a peer's server certificate is good
	 * on the connections it initiates too, clientAuth or not. */
	assert_int_equal(
	    cert_verify_server(p->store, server_only, NULL, "example.com", why, sizeof(why)),
	    CERT_ID_SRV);
	assert_int_equal(
	    cert_verify_server(p->store, client_only, NULL, "example.com", why, sizeof(why)),
	    CERT_ID_SRV);
	assert_int_equal(
	    cert_verify_chain(p->store, server_only, NULL, CERT_USE_C2S, why, sizeof(why)), 0);
	/* A client wants a server certificate. */
	assert_int_equal(
	    cert_verify_chain(p->store, client_only, NULL, CERT_USE_C2S, why, sizeof(why)), -1);
	assert_string_equal(why, "unsuitable certificate purpose");
	/* Not for TLS at all. */
	assert_int_equal(
	    cert_verify_server(p->store, signing, NULL, "example.com", why, sizeof(why)),
	    CERT_ID_NONE);
	assert_string_equal(why, "unsuitable certificate purpose");
	X509_free(server_only);
	X509_free(client_only);
	X509_free(signing);
	pki_free(p);
}

static void write_pem(const char *path, X509 *a, X509 *b)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(PEM_write_X509(f, a), 1);
	if (b)
		assert_int_equal(PEM_write_X509(f, b), 1);
	fclose(f);
}

static void test_trust_store(void **state)
{
	struct tdir *t = *state;
	struct pki *p = pki_new();
	X509 *x = leaf(p, 0, 0, NULL);
	X509 *other = make(&(struct spec){.cn = "Other CA", .ca = true});
	char ca[320], err[512], missing[320], *old_env;
	X509_STORE *st;
	FILE *f;

	snprintf(ca, sizeof(ca), "%s/ca.pem", t->dir);
	snprintf(missing, sizeof(missing), "%s/missing.pem", t->dir);

	/* The system store does not know our test root. */
	st = cert_trust_store(NULL, err, sizeof(err));
	assert_non_null(st);
	assert_int_equal(cert_verify_server(st, x, NULL, "example.com", err, sizeof(err)),
			 CERT_ID_NONE);
	assert_string_equal(err, "unable to get local issuer certificate");
	X509_STORE_free(st);

	/* Every certificate of the file, not only the first. */
	write_pem(ca, other, p->root);
	st = cert_trust_store(ca, err, sizeof(err));
	assert_non_null(st);
	assert_int_equal(cert_verify_server(st, x, NULL, "example.com", err, sizeof(err)),
			 CERT_ID_SRV);
	X509_STORE_free(st);

	/* The default paths are OpenSSL's: $SSL_CERT_FILE is one. */
	old_env = getenv("SSL_CERT_FILE") ? strdup(getenv("SSL_CERT_FILE")) : NULL;
	setenv("SSL_CERT_FILE", ca, 1);
	st = cert_trust_store(NULL, err, sizeof(err));
	assert_non_null(st);
	assert_int_equal(cert_verify_server(st, x, NULL, "example.com", err, sizeof(err)),
			 CERT_ID_SRV);
	X509_STORE_free(st);
	if (old_env)
		setenv("SSL_CERT_FILE", old_env, 1);
	else
		unsetenv("SSL_CERT_FILE");
	free(old_env);

	err[0] = '\0';
	assert_null(cert_trust_store(missing, err, sizeof(err)));
	assert_non_null(strstr(err, missing));
	assert_non_null(strstr(err, "No such file"));

	f = fopen(ca, "w");
	fputs("not a certificate\n", f);
	fclose(f);
	err[0] = '\0';
	assert_null(cert_trust_store(ca, err, sizeof(err)));
	/* "FILE: reason" */
	assert_ptr_equal(strstr(err, ca), err);
	assert_non_null(strstr(err, "no PEM certificate"));

	/* A damaged second certificate is an error, not silently dropped. */
	write_pem(ca, p->root, NULL);
	f = fopen(ca, "a");
	fputs("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n", f);
	fclose(f);
	err[0] = '\0';
	assert_null(cert_trust_store(ca, err, sizeof(err)));
	assert_non_null(strstr(err, ca));

	X509_free(other);
	X509_free(x);
	pki_free(p);
}

static void test_load_chain(void **state)
{
	struct tdir *t = *state;
	struct pki *p = pki_new();
	STACK_OF(X509) *chain = NULL;
	char err[256];
	X509 *x;
	FILE *f;

	/* Leaf, a key in the same file (skipped), intermediate. */
	f = fopen(t->crt, "w");
	assert_non_null(f);
	assert_int_equal(PEM_write_X509(f, p->root), 1);
	assert_int_equal(PEM_write_PrivateKey(f, p->int_key, NULL, NULL, 0, NULL, NULL), 1);
	assert_int_equal(PEM_write_X509(f, p->inter), 1);
	fclose(f);
	x = cert_load(t->crt, &chain, err, sizeof(err));
	assert_non_null(x);
	assert_int_equal(X509_cmp(x, p->root), 0);
	assert_int_equal(sk_X509_num(chain), 1);
	assert_int_equal(X509_cmp(sk_X509_value(chain, 0), p->inter), 0);
	X509_free(x);
	sk_X509_pop_free(chain, X509_free);

	/* Without a chain wanted, the rest is not read. */
	x = cert_load(t->crt, NULL, err, sizeof(err));
	assert_non_null(x);
	X509_free(x);
	pki_free(p);
}

/* Signing requests ----------------------------------------------------------- */

static X509_REQ *read_req(const char *path)
{
	FILE *f = fopen(path, "r");
	X509_REQ *r;

	assert_non_null(f);
	r = PEM_read_X509_REQ(f, NULL, NULL, NULL);
	fclose(f);
	assert_non_null(r);
	return r;
}

static void check_req(const char *path, EVP_PKEY *k, const char *domain, const char *ascii)
{
	X509_REQ *r = read_req(path);
	STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(r);
	char cn[300];
	int i;

	assert_int_equal(X509_REQ_verify(r, X509_REQ_get0_pubkey(r)), 1);
	assert_int_equal(EVP_PKEY_eq(X509_REQ_get0_pubkey(r), k), 1);
	assert_true(X509_NAME_get_text_by_NID(X509_REQ_get_subject_name(r), NID_commonName, cn,
					      sizeof(cn)) > 0);
	assert_string_equal(cn, ascii);
	assert_non_null(exts);
	i = X509v3_get_ext_by_NID(exts, NID_subject_alt_name, -1);
	assert_true(i >= 0);
	GENERAL_NAMES *names = X509V3_EXT_d2i(sk_X509_EXTENSION_value(exts, i));
	check_names(names, domain, ascii);
	GENERAL_NAMES_free(names);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	X509_REQ_free(r);
}

static void test_request(void **state)
{
	struct tdir *t = *state;
	char csr[320], err[256] = "", before[4096], after[4096];
	bool created = false;
	EVP_PKEY *k;
	FILE *f;
	size_t n1, n2;
	mode_t old = umask(0);

	snprintf(csr, sizeof(csr), "%s/host.csr", t->dir);
	assert_int_equal(
	    cert_request("example.org", CERT_EC_P256, t->key, csr, &created, err, sizeof(err)), 0);
	umask(old);
	assert_string_equal(err, "");
	assert_true(created);
	assert_int_equal(file_mode(t->key), 0600);
	assert_int_equal(file_mode(csr), 0644);
	assert_int_equal(count_entries(t->dir), 2);
	k = read_key(t->key);
	check_req(csr, k, "example.org", "example.org");

	/* Again: the key is reused as it is, the request replaced. */
	f = fopen(t->key, "r");
	n1 = fread(before, 1, sizeof(before), f);
	fclose(f);
	assert_int_equal(
	    cert_request("example.org", CERT_RSA_2048, t->key, csr, &created, err, sizeof(err)), 0);
	assert_false(created);
	f = fopen(t->key, "r");
	n2 = fread(after, 1, sizeof(after), f);
	fclose(f);
	assert_int_equal(n1, n2);
	assert_memory_equal(before, after, n1);
	check_req(csr, k, "example.org", "example.org");
	assert_int_equal(count_entries(t->dir), 2);
	EVP_PKEY_free(k);

	/* A key of cert_generate()'s, for an IDN. */
	assert_int_equal(cert_generate("b\303\274cher.example", CERT_RSA_2048, 1, t->key, t->crt,
				       err, sizeof(err)),
			 0);
	assert_int_equal(cert_request("b\303\274cher.example", CERT_EC_P256, t->key, csr, &created,
				      err, sizeof(err)),
			 0);
	assert_false(created);
	k = read_key(t->key);
	assert_true(EVP_PKEY_is_a(k, "RSA"));
	check_req(csr, k, "b\303\274cher.example", "xn--bcher-kva.example");
	EVP_PKEY_free(k);
}

static void test_request_errors(void **state)
{
	struct tdir *t = *state;
	char csr[320], err[256], nodir[320];
	bool created = true;
	FILE *f;

	snprintf(csr, sizeof(csr), "%s/host.csr", t->dir);
	snprintf(nodir, sizeof(nodir), "%s/missing/host.csr", t->dir);

	/* An unreadable key is not replaced. */
	f = fopen(t->key, "w");
	fputs("garbage\n", f);
	fclose(f);
	err[0] = '\0';
	assert_int_equal(
	    cert_request("example.org", CERT_EC_P256, t->key, csr, &created, err, sizeof(err)), -1);
	assert_false(created);
	assert_non_null(strstr(err, t->key));
	assert_int_equal(count_entries(t->dir), 1);
	unlink(t->key);

	/* Nowhere to write the request: no key is left behind either. */
	err[0] = '\0';
	assert_int_equal(
	    cert_request("example.org", CERT_EC_P256, t->key, nodir, &created, err, sizeof(err)),
	    -1);
	assert_non_null(strstr(err, "missing"));
	assert_int_equal(count_entries(t->dir), 0);

	assert_int_equal(cert_request("", CERT_EC_P256, t->key, csr, NULL, err, sizeof(err)), -1);
	assert_int_equal(
	    cert_request("\xff.example", CERT_EC_P256, t->key, csr, NULL, err, sizeof(err)), -1);
	assert_int_equal(count_entries(t->dir), 0);
}

/* DANE --------------------------------------------------------------------- */

/* Association data of x for selector sel, matching type mt, into out. */
static uint16_t tlsa_data(X509 *x, int sel, int mt, unsigned char *out)
{
	unsigned char *der = NULL;
	int len = sel ? i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &der) : i2d_X509(x, &der);
	unsigned n = 0;

	assert_true(len > 0);
	if (mt == 0) {
		memcpy(out, der, (size_t)len);
		n = (unsigned)len;
	} else {
		assert_int_equal(EVP_Digest(der, (size_t)len, out, &n,
					    mt == 1 ? EVP_sha256() : EVP_sha512(), NULL),
				 1);
	}
	OPENSSL_free(der);
	return (uint16_t)n;
}

static void test_dane_match(void **state)
{
	struct pki *p = pki_new();
	X509 *x = leaf(p, 0, 0, NULL);
	X509 *expired = leaf(p, -30, -1, NULL);
	STACK_OF(X509) *chain = sk_X509_new_null();
	unsigned char d[4][4096];
	char why[256];

	sk_X509_push(chain, p->root);
	struct cert_tlsa r[4] = {
	    {3, 1, 1, tlsa_data(x, 1, 1, d[0]), d[0]},	     /* DANE-EE SPKI SHA-256 */
	    {3, 0, 2, tlsa_data(x, 0, 2, d[1]), d[1]},	     /* DANE-EE cert SHA-512 */
	    {3, 0, 0, tlsa_data(x, 0, 0, d[2]), d[2]},	     /* DANE-EE cert in full */
	    {2, 1, 1, tlsa_data(p->root, 1, 1, d[3]), d[3]}, /* DANE-TA: the root */
	};
	for (int i = 0; i < 3; i++)
		assert_int_equal(
		    cert_dane_match(x, NULL, "example.com", &r[i], 1, why, sizeof(why)), 0);
	/* DANE-EE ignores names and dates (RFC 7671 §5.1). */
	assert_int_equal(cert_dane_match(x, NULL, "other.example", r, 1, why, sizeof(why)), 0);
	/* Another certificate of the same CA does not match DANE-EE records. */
	assert_int_equal(cert_dane_match(expired, NULL, "example.com", r, 3, why, sizeof(why)), -1);
	assert_string_equal(why, "certificate does not match the TLSA records");
	/* DANE-TA: the root (sent in the chain) issues a leaf naming the domain. */
	assert_int_equal(cert_dane_match(x, chain, "example.com", &r[3], 1, why, sizeof(why)), 0);
	assert_int_equal(cert_dane_match(x, chain, "example.org", &r[3], 1, why, sizeof(why)), -1);
	assert_non_null(strstr(why, "a DANE-TA record matched an issuer, but certificate names"));
	assert_int_equal(cert_dane_match(expired, chain, "example.com", &r[3], 1, why, sizeof(why)),
			 -1);
	assert_non_null(strstr(why, "certificate has expired"));
	/* DANE-TA pinning an intermediate CA (not self-signed): a partial chain
	 * up to it is enough (RFC 7671 §5.2.2). */
	X509 *by_int = make(&(struct spec){.cn = "example.com",
					   .sans = SANS("DNS:example.com"),
					   .issuer = p->inter,
					   .issuer_key = p->int_key});
	STACK_OF(X509) *ichain = sk_X509_new_null();
	unsigned char di[64];
	sk_X509_push(ichain, p->inter);
	struct cert_tlsa ta_int = {2, 1, 1, tlsa_data(p->inter, 1, 1, di), di};
	assert_int_equal(
	    cert_dane_match(by_int, ichain, "example.com", &ta_int, 1, why, sizeof(why)), 0);
	assert_int_equal(
	    cert_dane_match(by_int, ichain, "example.net", &ta_int, 1, why, sizeof(why)), -1);
	sk_X509_free(ichain);
	X509_free(by_int);
	/* The anchor must come with the chain: a TA record alone proves nothing. */
	assert_int_equal(cert_dane_match(x, NULL, "example.com", &r[3], 1, why, sizeof(why)), -1);
	/* PKIX-EE (usage 1) is not used for XMPP servers. */
	struct cert_tlsa pkix = r[0];
	pkix.usage = 1;
	assert_int_equal(cert_dane_match(x, NULL, "example.com", &pkix, 1, why, sizeof(why)), -1);
	assert_string_equal(why, "no usable TLSA records (only DANE-EE and DANE-TA count)");
	/* A flipped bit, an unknown matching type, a short record. */
	struct cert_tlsa bad = r[0];
	d[0][5] ^= 1;
	assert_int_equal(cert_dane_match(x, NULL, "example.com", &bad, 1, why, sizeof(why)), -1);
	bad = r[1];
	bad.mtype = 9;
	assert_int_equal(cert_dane_match(x, NULL, "example.com", &bad, 1, why, sizeof(why)), -1);
	bad = r[1];
	bad.len = 32;
	assert_int_equal(cert_dane_match(x, NULL, "example.com", &bad, 1, why, sizeof(why)), -1);
	assert_int_equal(cert_dane_match(NULL, NULL, "example.com", r, 4, why, sizeof(why)), -1);
	assert_string_equal(why, "no certificate presented");
	sk_X509_free(chain);
	X509_free(x);
	X509_free(expired);
	pki_free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_generate_ec, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_generate_rsa, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_generate_idn, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_regenerate_replaces, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_check_rejects, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_generate_errors, setup, teardown),
	    cmocka_unit_test(test_domain_ascii),
	    cmocka_unit_test(test_match_srv),
	    cmocka_unit_test(test_match_srv_c2s),
	    cmocka_unit_test(test_match_xmppaddr),
	    cmocka_unit_test(test_match_dns),
	    cmocka_unit_test(test_match_wildcard),
	    cmocka_unit_test(test_match_wildcard_refused),
	    cmocka_unit_test(test_match_cn),
	    cmocka_unit_test(test_match_idn),
	    cmocka_unit_test(test_match_strongest),
	    cmocka_unit_test(test_match_why),
	    cmocka_unit_test(test_match_malformed),
	    cmocka_unit_test(test_names),
	    cmocka_unit_test_setup_teardown(test_generated_matches, setup, teardown),
	    cmocka_unit_test(test_verify_ca),
	    cmocka_unit_test(test_verify_expired),
	    cmocka_unit_test(test_verify_self_signed),
	    cmocka_unit_test(test_verify_intermediate),
	    cmocka_unit_test(test_verify_purpose),
	    cmocka_unit_test(test_dane_match),
	    cmocka_unit_test_setup_teardown(test_trust_store, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_load_chain, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_request, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_request_errors, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
