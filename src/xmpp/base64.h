/* Base64 (RFC 4648 §4) as SASL needs it (RFC 6120 §6.4.2): strict
 * decoding, no whitespace, padding required, "=" alone means empty. */
#ifndef PARLEY_BASE64_H
#define PARLEY_BASE64_H

#include <stddef.h>
#include <sys/types.h>

static inline size_t base64_encoded_len(size_t n)
{
	return ((n + 2) / 3) * 4;
}
/* Writes base64_encoded_len(n) chars plus NUL into out. */
void base64_encode(const unsigned char *in, size_t n, char *out);
/* Decodes into out (cap bytes, at least len*3/4). Returns bytes written or
 * -1 if the input is not canonical base64. */
ssize_t base64_decode(const char *in, size_t len, unsigned char *out, size_t cap);

#endif
