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
static void check_san(X509 *x, const char *domain, const char *ascii)
{
	int crit = -1;
	GENERAL_NAMES *names = X509_get_ext_d2i(x, NID_subject_alt_name, &crit, NULL);
	char want_c2s[300], want_s2s[300];
	int dns = 0, xmpp = 0, c2s = 0, s2s = 0;

	snprintf(want_c2s, sizeof(want_c2s), "_xmpp-client.%s", ascii);
	snprintf(want_s2s, sizeof(want_s2s), "_xmpp-server.%s", ascii);
	assert_non_null(names);
	/* The subject is not empty, so the SAN need not be critical
	 * (RFC 5280 §4.2.1.6), and some old peers reject unknown critical
	 * extensions. */
	assert_int_equal(crit, 0);
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
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
