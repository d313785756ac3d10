/* Base64 (RFC 4648 §4), strict. SASL data is compared and hashed as
 * bytes, so decoding accepts exactly one spelling of each value: no
 * whitespace, no missing or extra padding, and the unused bits of the
 * last character must be zero (RFC 4648 §3.5). */
#include "xmpp/base64.h"

#include <stdbool.h>
#include <stdint.h>

static const char b64_alphabet[64] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Value of each character, or 0xff for characters outside the alphabet
 * ('=' included: padding is handled by position, not by lookup). */
static const uint8_t b64_value[256] = {
    ['A'] = 0,	['B'] = 1,  ['C'] = 2,	['D'] = 3,  ['E'] = 4,	['F'] = 5,  ['G'] = 6,	['H'] = 7,
    ['I'] = 8,	['J'] = 9,  ['K'] = 10, ['L'] = 11, ['M'] = 12, ['N'] = 13, ['O'] = 14, ['P'] = 15,
    ['Q'] = 16, ['R'] = 17, ['S'] = 18, ['T'] = 19, ['U'] = 20, ['V'] = 21, ['W'] = 22, ['X'] = 23,
    ['Y'] = 24, ['Z'] = 25, ['a'] = 26, ['b'] = 27, ['c'] = 28, ['d'] = 29, ['e'] = 30, ['f'] = 31,
    ['g'] = 32, ['h'] = 33, ['i'] = 34, ['j'] = 35, ['k'] = 36, ['l'] = 37, ['m'] = 38, ['n'] = 39,
    ['o'] = 40, ['p'] = 41, ['q'] = 42, ['r'] = 43, ['s'] = 44, ['t'] = 45, ['u'] = 46, ['v'] = 47,
    ['w'] = 48, ['x'] = 49, ['y'] = 50, ['z'] = 51, ['0'] = 52, ['1'] = 53, ['2'] = 54, ['3'] = 55,
    ['4'] = 56, ['5'] = 57, ['6'] = 58, ['7'] = 59, ['8'] = 60, ['9'] = 61, ['+'] = 62, ['/'] = 63,
};

/* The designated initializers above leave every other entry 0, which is
 * a valid value ('A'); this bitmap says which bytes are really in the
 * alphabet, so both tables stay constant and need no runtime setup. */
static const uint32_t b64_valid[8] = {
    0x00000000, 0x03ff8800, /* '+' (43), '/' (47), '0'..'9' (48..57) */
    0x07fffffe,		    /* 'A'..'Z' (65..90) */
    0x07fffffe,		    /* 'a'..'z' (97..122) */
    0,		0,	    0, 0,
};

static int b64_lookup(unsigned char c)
{
	if (!(b64_valid[c >> 5] & (UINT32_C(1) << (c & 31))))
		return -1;
	return b64_value[c];
}

void base64_encode(const unsigned char *in, size_t n, char *out)
{
	size_t i = 0;
	char *o = out;

	for (; n - i >= 3; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		*o++ = b64_alphabet[v >> 18];
		*o++ = b64_alphabet[(v >> 12) & 63];
		*o++ = b64_alphabet[(v >> 6) & 63];
		*o++ = b64_alphabet[v & 63];
	}
	if (n - i == 1) {
		uint32_t v = (uint32_t)in[i] << 16;
		*o++ = b64_alphabet[v >> 18];
		*o++ = b64_alphabet[(v >> 12) & 63];
		*o++ = '=';
		*o++ = '=';
	} else if (n - i == 2) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
		*o++ = b64_alphabet[v >> 18];
		*o++ = b64_alphabet[(v >> 12) & 63];
		*o++ = b64_alphabet[(v >> 6) & 63];
		*o++ = '=';
	}
	*o = '\0';
}

ssize_t base64_decode(const char *in, size_t len, unsigned char *out, size_t cap)
{
	const unsigned char *p = (const unsigned char *)in;
	size_t o = 0;

	/* RFC 6120 §6.4.2: a lone "=" stands for empty data (an empty
	 * <response/> would mean "no data" instead). */
	if (len == 1 && p[0] == '=')
		return 0;
	if (len % 4 != 0)
		return -1;
	for (size_t i = 0; i < len; i += 4) {
		bool last = i + 4 == len;
		int a = b64_lookup(p[i]), b = b64_lookup(p[i + 1]);
		int c = b64_lookup(p[i + 2]), d = b64_lookup(p[i + 3]);
		size_t nout = 3;

		if (a < 0 || b < 0)
			return -1;
		if (last && p[i + 2] == '=' && p[i + 3] == '=') {
			/* RFC 4648 §3.5: the bits past the data must be zero,
			 * or "QQ==" and "QR==" would both decode to "A". */
			if (b & 0x0f)
				return -1;
			nout = 1;
			c = d = 0;
		} else if (last && c >= 0 && p[i + 3] == '=') {
			if (c & 0x03)
				return -1;
			nout = 2;
			d = 0;
		} else if (c < 0 || d < 0) {
			return -1;
		}
		if (cap - o < nout)
			return -1;
		uint32_t v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | (uint32_t)d;
		out[o++] = (unsigned char)(v >> 16);
		if (nout > 1)
			out[o++] = (unsigned char)(v >> 8);
		if (nout > 2)
			out[o++] = (unsigned char)v;
	}
	return (ssize_t)o;
}
