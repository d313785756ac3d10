#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdbool.h>
#include <string.h>
#include <cmocka.h>

#include "xmpp/base64.h"

/* RFC 4648 §10 */
static const struct {
	const char *raw, *enc;
} rfc4648[] = {
    {"", ""},
    {"f", "Zg=="},
    {"fo", "Zm8="},
    {"foo", "Zm9v"},
    {"foob", "Zm9vYg=="},
    {"fooba", "Zm9vYmE="},
    {"foobar", "Zm9vYmFy"},
};

static void test_rfc4648_vectors(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof rfc4648 / sizeof rfc4648[0]; i++) {
		const char *raw = rfc4648[i].raw, *enc = rfc4648[i].enc;
		char out[16];
		unsigned char dec[16];

		memset(out, 'X', sizeof out);
		assert_int_equal(base64_encoded_len(strlen(raw)), strlen(enc));
		base64_encode((const unsigned char *)raw, strlen(raw), out);
		assert_string_equal(out, enc);
		assert_int_equal(base64_decode(enc, strlen(enc), dec, sizeof dec), strlen(raw));
		assert_memory_equal(dec, raw, strlen(raw));
	}
}

static void test_all_bytes_round_trip(void **state)
{
	(void)state;
	unsigned char in[256], dec[256];
	char enc[345]; /* base64_encoded_len(256) + 1 */

	for (int i = 0; i < 256; i++)
		in[i] = (unsigned char)(255 - i);
	for (size_t n = 0; n <= 256; n++) {
		base64_encode(in, n, enc);
		assert_int_equal(strlen(enc), base64_encoded_len(n));
		assert_int_equal(base64_decode(enc, strlen(enc), dec, sizeof dec), n);
		assert_memory_equal(dec, in, n);
	}
	/* Every character of the alphabet and its value. */
	unsigned char ones[3] = {0xfb, 0xff, 0xbf};
	base64_encode(ones, 3, enc);
	assert_string_equal(enc, "+/+/");
	base64_encode((const unsigned char *)"\x00\x10\x83\x10\x51\x87", 6, enc);
	assert_string_equal(enc, "ABCDEFGH");
}

static void test_lone_pad_is_empty(void **state)
{
	(void)state;
	unsigned char dec[4];
	/* RFC 6120 §6.4.2 */
	assert_int_equal(base64_decode("=", 1, dec, sizeof dec), 0);
	assert_int_equal(base64_decode("", 0, dec, sizeof dec), 0);
}

static void test_rejects(void **state)
{
	(void)state;
	static const char *const bad[] = {
	    "Zg",		/* padding missing */
	    "Zg=",		/* padding short */
	    "Zg===",		/* padding long */
	    "Zm9",     "Zh==",	/* non-zero trailing bits: only "Zg==" is canonical */
	    "Zm9=",		/* same with one pad */
	    "QR==",    "Zm 9v", /* whitespace */
	    "Zm9v\n",  " Zm9v",	   "Zm9v\r\nYmFy", "Zg==Zg==", /* padding in the middle */
	    "Z===",    "====",	   "==",	   "Zm9v====",
	    "Zm=v",    "=m9v",	   "Zm-_", /* base64url alphabet */
	    "Zm9\xc3", "Zm9v.A==",
	};
	unsigned char dec[64];

	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		assert_int_equal(base64_decode(bad[i], strlen(bad[i]), dec, sizeof dec), -1);

	/* NUL inside the length counts as a bad character, not an end. */
	assert_int_equal(base64_decode("Zm\0v", 4, dec, sizeof dec), -1);

	/* Every byte outside the alphabet, in every position of a quantum. */
	for (int c = 0; c < 256; c++) {
		bool in_alpha = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
				(c >= '0' && c <= '9') || c == '+' || c == '/';
		for (int pos = 0; pos < 4; pos++) {
			char q[5] = "AAAA";
			q[pos] = (char)c;
			ssize_t r = base64_decode(q, 4, dec, sizeof dec);
			if (in_alpha)
				assert_int_equal(r, 3);
			else if (c == '=' && pos == 3)
				assert_int_equal(r, 2); /* "AAA=" is canonical */
			else
				assert_int_equal(r, -1);
		}
	}
}

static void test_capacity(void **state)
{
	(void)state;
	unsigned char dec[8];
	assert_int_equal(base64_decode("Zm9vYmFy", 8, dec, 6), 6);
	assert_int_equal(base64_decode("Zm9vYmFy", 8, dec, 5), -1);
	assert_int_equal(base64_decode("Zm9vYg==", 8, dec, 4), 4);
	assert_int_equal(base64_decode("Zm9vYg==", 8, dec, 3), -1);
	assert_int_equal(base64_decode("Zg==", 4, dec, 0), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_rfc4648_vectors),   cmocka_unit_test(test_all_bytes_round_trip),
	    cmocka_unit_test(test_lone_pad_is_empty), cmocka_unit_test(test_rejects),
	    cmocka_unit_test(test_capacity),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
