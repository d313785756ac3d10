/* libFuzzer target: base64 (src/xmpp/base64.c). The input is both what a
 * peer sends in a SASL element and, for the other direction, raw data.
 *
 * Oracles (base64.h: strict decoding, padding required, "=" alone is
 * empty, one spelling per value):
 *  - Whatever decodes is canonical: encoding the result gives back the
 *    input byte for byte ("=" aside, which stands for empty data).
 *  - The output buffer is exactly as large as needed (ASan sees any
 *    overrun): the decoder writes no more than it returns, a buffer of
 *    exactly that many bytes suffices and one byte less is refused.
 *  - decode(encode(x)) == x for any bytes x. */
#include "fuzz.h"

#include <string.h>
#include <sys/types.h>

#include "xmpp/base64.h"

static void check_decode(const char *in, size_t len)
{
	/* base64.h: cap at least len*3/4. malloc(0) may be NULL; ask for 1. */
	size_t cap = len * 3 / 4;
	unsigned char *out = malloc(cap ? cap : 1);
	FUZZ_CHECK(out != NULL);

	ssize_t n = base64_decode(in, len, out, cap);
	if (n < 0)
		goto out;
	FUZZ_CHECK((size_t)n <= cap);
	if (len == 1 && in[0] == '=') {
		FUZZ_CHECK(n == 0);
		goto out;
	}
	char *enc = malloc(base64_encoded_len((size_t)n) + 1);
	FUZZ_CHECK(enc != NULL);
	base64_encode(out, (size_t)n, enc);
	if (strlen(enc) != len || (len && memcmp(enc, in, len) != 0)) {
		fprintf(stderr, "decoded a non-canonical spelling: '%.*s' re-encodes as '%s'\n",
			(int)len, in, enc);
		abort();
	}
	free(enc);

	if (n > 0) {
		unsigned char *exact = malloc((size_t)n);
		FUZZ_CHECK(exact != NULL);
		FUZZ_CHECK(base64_decode(in, len, exact, (size_t)n) == n);
		FUZZ_CHECK(memcmp(exact, out, (size_t)n) == 0);
		FUZZ_CHECK(base64_decode(in, len, exact, (size_t)n - 1) == -1);
		free(exact);
	}
out:
	free(out);
}

static void check_encode(const unsigned char *data, size_t size)
{
	size_t elen = base64_encoded_len(size);
	char *enc = malloc(elen + 1);
	unsigned char *dec = malloc(size ? size : 1);
	FUZZ_CHECK(enc != NULL && dec != NULL);

	base64_encode(data, size, enc);
	FUZZ_CHECK(strlen(enc) == elen);
	FUZZ_CHECK(base64_decode(enc, elen, dec, size) == (ssize_t)size);
	FUZZ_CHECK(size == 0 || memcmp(dec, data, size) == 0);
	free(enc);
	free(dec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	check_decode((const char *)data, size);
	check_encode(data, size);
	return 0;
}
