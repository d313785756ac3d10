/* PRECIS framework (RFC 8264) and the UsernameCaseMapped and OpaqueString
 * profiles (RFC 8265), on ICU character data.
 *
 * Work happens in UTF-16 because that is what ICU's case mapping and
 * normalization take. Every buffer is on the stack and bounded: input is at
 * most PRECIS_IN_MAX bytes, which is at most as many UTF-16 units, and
 * WORK_MAX leaves room for the growth of case mapping and normalization. A
 * result that outgrows WORK_MAX units would be longer than WORK_MAX bytes
 * of UTF-8 too, so refusing it refuses nothing a caller could have used. */
#include "xmpp/precis.h"

#include <stdbool.h>
#include <string.h>

#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/uscript.h>
#include <unicode/ustring.h>
#include <unicode/utf16.h>

#define WORK_MAX (4 * PRECIS_IN_MAX)

/* Strict UTF-8 (RFC 3629 §4): no overlong forms, no surrogates, nothing
 * above U+10FFFF. Returns the number of UTF-16 units written, or -1. */
static int utf8_decode(const char *in, size_t len, UChar *out, int cap)
{
	const unsigned char *s = (const unsigned char *)in;
	size_t i = 0;
	int n = 0;

	while (i < len) {
		unsigned char c = s[i];
		uint32_t cp, min;
		size_t more;

		if (c < 0x80) {
			cp = c;
			more = 0;
			min = 0;
		} else if (c >= 0xc2 && c <= 0xdf) {
			cp = c & 0x1f;
			more = 1;
			min = 0x80;
		} else if ((c & 0xf0) == 0xe0) {
			cp = c & 0x0f;
			more = 2;
			min = 0x800;
		} else if (c >= 0xf0 && c <= 0xf4) {
			cp = c & 0x07;
			more = 3;
			min = 0x10000;
		} else {
			return -1;
		}
		if (len - i - 1 < more)
			return -1;
		for (size_t k = 1; k <= more; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return -1;
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return -1;
		i += more + 1;
		if (n + U16_LENGTH(cp) > cap)
			return -1;
		U16_APPEND_UNSAFE(out, n, cp);
	}
	return n;
}

static int utf8_encode(const UChar *s, int n, char *out, size_t cap)
{
	UErrorCode err = U_ZERO_ERROR;
	int32_t olen = 0;

	if (cap == 0)
		return -1;
	if (cap > INT32_MAX)
		cap = INT32_MAX;
	u_strToUTF8(out, (int32_t)cap, &olen, s, n, &err);
	if (U_FAILURE(err) || err == U_STRING_NOT_TERMINATED_WARNING)
		return -1;
	return olen;
}

/* HasCompat, RFC 8264 §9.17: toNFKC(cp) != cp. */
static bool has_compat(UChar32 cp)
{
	UErrorCode err = U_ZERO_ERROR;
	const UNormalizer2 *nfkc = unorm2_getNFKCInstance(&err);
	UChar buf[2];
	int32_t n = 0;

	if (U_FAILURE(err))
		return true;
	U16_APPEND_UNSAFE(buf, n, cp);
	UBool same = unorm2_isNormalized(nfkc, buf, n, &err);
	return U_FAILURE(err) || !same;
}

enum precis_prop precis_property(uint32_t ucp)
{
	UChar32 cp = (UChar32)ucp;

	if (ucp > 0x10ffff || (ucp >= 0xd800 && ucp <= 0xdfff))
		return PRECIS_DISALLOWED;

	/* Exceptions, RFC 8264 §9.6, which takes RFC 5892 §2.6 as is. */
	switch (cp) {
	case 0x00df:
	case 0x03c2:
	case 0x06fd:
	case 0x06fe:
	case 0x0f0b:
	case 0x3007:
		return PRECIS_PVALID;
	case 0x00b7:
	case 0x0375:
	case 0x05f3:
	case 0x05f4:
	case 0x30fb:
		return PRECIS_CONTEXTO;
	case 0x0640:
	case 0x07fa:
	case 0x302e:
	case 0x302f:
	case 0x3031:
	case 0x3032:
	case 0x3033:
	case 0x3034:
	case 0x3035:
	case 0x303b:
		return PRECIS_DISALLOWED;
	default:
		break;
	}
	if ((cp >= 0x0660 && cp <= 0x0669) || (cp >= 0x06f0 && cp <= 0x06f9))
		return PRECIS_CONTEXTO;

	/* BackwardCompatible, §9.7, is empty. */

	int8_t gc = u_charType(cp);
	bool nonchar = u_hasBinaryProperty(cp, UCHAR_NONCHARACTER_CODE_POINT);

	/* Unassigned, §9.10: Cn less the noncharacters, which
	 * PrecisIgnorableProperties disallows below. */
	if (gc == U_UNASSIGNED && !nonchar)
		return PRECIS_UNASSIGNED;
	/* ASCII7, §9.11: printable ASCII, space excluded. */
	if (cp >= 0x21 && cp <= 0x7e)
		return PRECIS_PVALID;
	/* JoinControl, §9.8. */
	if (u_hasBinaryProperty(cp, UCHAR_JOIN_CONTROL))
		return PRECIS_CONTEXTJ;
	/* OldHangulJamo, §9.9: conjoining jamo; a syllable has one
	 * spelling, the precomposed one. */
	switch (u_getIntPropertyValue(cp, UCHAR_HANGUL_SYLLABLE_TYPE)) {
	case U_HST_LEADING_JAMO:
	case U_HST_VOWEL_JAMO:
	case U_HST_TRAILING_JAMO:
		return PRECIS_DISALLOWED;
	default:
		break;
	}
	/* PrecisIgnorableProperties, §9.13. */
	if (nonchar || u_hasBinaryProperty(cp, UCHAR_DEFAULT_IGNORABLE_CODE_POINT))
		return PRECIS_DISALLOWED;
	/* Controls, §9.12. */
	if (gc == U_CONTROL_CHAR)
		return PRECIS_DISALLOWED;
	if (has_compat(cp))
		return PRECIS_FREE_PVAL;

	switch (gc) {
	/* LetterDigits, §9.1. */
	case U_LOWERCASE_LETTER:
	case U_UPPERCASE_LETTER:
	case U_OTHER_LETTER:
	case U_DECIMAL_DIGIT_NUMBER:
	case U_MODIFIER_LETTER:
	case U_NON_SPACING_MARK:
	case U_COMBINING_SPACING_MARK:
		return PRECIS_PVALID;
	/* OtherLetterDigits §9.18, Spaces §9.14, Symbols §9.15,
	 * Punctuation §9.16. */
	case U_TITLECASE_LETTER:
	case U_LETTER_NUMBER:
	case U_OTHER_NUMBER:
	case U_ENCLOSING_MARK:
	case U_SPACE_SEPARATOR:
	case U_MATH_SYMBOL:
	case U_CURRENCY_SYMBOL:
	case U_MODIFIER_SYMBOL:
	case U_OTHER_SYMBOL:
	case U_CONNECTOR_PUNCTUATION:
	case U_DASH_PUNCTUATION:
	case U_START_PUNCTUATION:
	case U_END_PUNCTUATION:
	case U_INITIAL_PUNCTUATION:
	case U_FINAL_PUNCTUATION:
	case U_OTHER_PUNCTUATION:
		return PRECIS_FREE_PVAL;
	default:
		return PRECIS_DISALLOWED;
	}
}

static UChar32 cp_before(const UChar *s, int start)
{
	UChar32 c;

	if (start == 0)
		return -1;
	U16_PREV_UNSAFE(s, start, c);
	return c;
}

static UChar32 cp_after(const UChar *s, int n, int end)
{
	UChar32 c;

	if (end >= n)
		return -1;
	U16_NEXT_UNSAFE(s, end, c);
	return c;
}

static int script_of(UChar32 c)
{
	UErrorCode err = U_ZERO_ERROR;
	UScriptCode sc = uscript_getScript(c, &err);

	return U_FAILURE(err) ? USCRIPT_INVALID_CODE : (int)sc;
}

/* RFC 5892 Appendix A.1 and A.2, ZERO WIDTH NON-JOINER and JOINER. s[start,
 * end) is the joiner. */
static bool contextj_ok(const UChar *s, int n, int start, int end, UChar32 cp)
{
	UChar32 prev = cp_before(s, start);

	/* A joiner after a virama asks for a half-form or the like. */
	if (prev >= 0 && u_getCombiningClass(prev) == 9)
		return true;
	if (cp != 0x200c)
		return false;

	/* ZWNJ between joining letters breaks the join:
	 * (Joining_Type:{L,D})(Joining_Type:T)*\u200C(Joining_Type:T)*(Joining_Type:{R,D}) */
	int i = start, jt;
	UChar32 c;

	do {
		if (i == 0)
			return false;
		U16_PREV_UNSAFE(s, i, c);
		jt = u_getIntPropertyValue(c, UCHAR_JOINING_TYPE);
	} while (jt == U_JT_TRANSPARENT);
	if (jt != U_JT_LEFT_JOINING && jt != U_JT_DUAL_JOINING)
		return false;

	i = end;
	do {
		if (i >= n)
			return false;
		U16_NEXT_UNSAFE(s, i, c);
		jt = u_getIntPropertyValue(c, UCHAR_JOINING_TYPE);
	} while (jt == U_JT_TRANSPARENT);
	return jt == U_JT_RIGHT_JOINING || jt == U_JT_DUAL_JOINING;
}

/* Facts about the whole string that the CONTEXTO rules of RFC 5892 A.7-A.9
 * ask for. */
struct ctx_whole {
	bool kana_han;	       /* a Hiragana, Katakana or Han code point */
	bool arabic_indic;     /* U+0660..U+0669 */
	bool ext_arabic_indic; /* U+06F0..U+06F9 */
};

static void ctx_scan(const UChar *s, int n, struct ctx_whole *w)
{
	memset(w, 0, sizeof(*w));
	for (int i = 0; i < n;) {
		UChar32 c;
		U16_NEXT_UNSAFE(s, i, c);
		if (c >= 0x0660 && c <= 0x0669) {
			w->arabic_indic = true;
		} else if (c >= 0x06f0 && c <= 0x06f9) {
			w->ext_arabic_indic = true;
		} else if (c != 0x30fb) {
			int sc = script_of(c);
			if (sc == USCRIPT_HIRAGANA || sc == USCRIPT_KATAKANA || sc == USCRIPT_HAN)
				w->kana_han = true;
		}
	}
}

/* RFC 5892 Appendix A.3-A.9. */
static bool contexto_ok(const UChar *s, int n, int start, int end, UChar32 cp,
			const struct ctx_whole *w)
{
	switch (cp) {
	case 0x00b7: /* A.3 MIDDLE DOT: only in Catalan l·l */
		return cp_before(s, start) == 'l' && cp_after(s, n, end) == 'l';
	case 0x0375: /* A.4 GREEK LOWER NUMERAL SIGN (KERAIA) */
		return cp_after(s, n, end) >= 0 && script_of(cp_after(s, n, end)) == USCRIPT_GREEK;
	case 0x05f3: /* A.5, A.6 HEBREW PUNCTUATION GERESH, GERSHAYIM */
	case 0x05f4:
		return cp_before(s, start) >= 0 && script_of(cp_before(s, start)) == USCRIPT_HEBREW;
	case 0x30fb: /* A.7 KATAKANA MIDDLE DOT */
		return w->kana_han;
	default:
		break;
	}
	/* A.8, A.9: the two sets of Arabic digits are look-alikes; never mix. */
	if (cp >= 0x0660 && cp <= 0x0669)
		return !w->ext_arabic_indic;
	if (cp >= 0x06f0 && cp <= 0x06f9)
		return !w->arabic_indic;
	return false;
}

/* RFC 8264 §4.2 (IdentifierClass), §4.3 (FreeformClass): every code point
 * valid for the class; CONTEXTJ and CONTEXTO only where their rule holds. */
static bool class_ok(const UChar *s, int n, bool freeform)
{
	struct ctx_whole w;
	bool scanned = false;

	for (int i = 0; i < n;) {
		int start = i;
		UChar32 c;
		U16_NEXT_UNSAFE(s, i, c);

		switch (precis_property((uint32_t)c)) {
		case PRECIS_PVALID:
			break;
		case PRECIS_FREE_PVAL:
			if (!freeform)
				return false;
			break;
		case PRECIS_CONTEXTJ:
			if (!contextj_ok(s, n, start, i, c))
				return false;
			break;
		case PRECIS_CONTEXTO:
			if (!scanned) {
				ctx_scan(s, n, &w);
				scanned = true;
			}
			if (!contexto_ok(s, n, start, i, c, &w))
				return false;
			break;
		default:
			return false;
		}
	}
	return true;
}

/* The Bidi Rule, RFC 5893 §2. RFC 8265 §3.3.2 applies it to strings that
 * hold right-to-left characters; a purely left-to-right string passes. */
static bool bidi_ok(const UChar *s, int n)
{
	bool rtl_seen = false;

	for (int i = 0; i < n;) {
		UChar32 c;
		U16_NEXT_UNSAFE(s, i, c);
		UCharDirection d = u_charDirection(c);
		if (d == U_RIGHT_TO_LEFT || d == U_RIGHT_TO_LEFT_ARABIC || d == U_ARABIC_NUMBER)
			rtl_seen = true;
	}
	if (!rtl_seen || n == 0)
		return true;

	int i = 0;
	UChar32 c;
	U16_NEXT_UNSAFE(s, i, c);
	UCharDirection first = u_charDirection(c);
	bool rtl;

	/* 1. The first character is L, R or AL. */
	if (first == U_LEFT_TO_RIGHT)
		rtl = false;
	else if (first == U_RIGHT_TO_LEFT || first == U_RIGHT_TO_LEFT_ARABIC)
		rtl = true;
	else
		return false;

	bool en = false, an = false;
	UCharDirection last = first; /* last character that is not NSM */

	for (i = 0; i < n;) {
		U16_NEXT_UNSAFE(s, i, c);
		UCharDirection d = u_charDirection(c);
		switch (d) {
		case U_EUROPEAN_NUMBER:
			en = true;
			break;
		case U_ARABIC_NUMBER:
			/* 5. AN is not allowed in a left-to-right string. */
			if (!rtl)
				return false;
			an = true;
			break;
		case U_RIGHT_TO_LEFT:
		case U_RIGHT_TO_LEFT_ARABIC:
			if (!rtl)
				return false;
			break;
		case U_LEFT_TO_RIGHT:
			/* 2. L is not allowed in a right-to-left string. */
			if (rtl)
				return false;
			break;
		case U_EUROPEAN_NUMBER_SEPARATOR:
		case U_COMMON_NUMBER_SEPARATOR:
		case U_EUROPEAN_NUMBER_TERMINATOR:
		case U_OTHER_NEUTRAL:
		case U_BOUNDARY_NEUTRAL:
		case U_DIR_NON_SPACING_MARK:
			break;
		default:
			/* 2., 5.: B, S, WS, LRE and the other explicit
			 * formatting classes are never allowed. */
			return false;
		}
		if (d != U_DIR_NON_SPACING_MARK)
			last = d;
	}

	if (rtl) {
		/* 4. Not both kinds of digits. */
		if (en && an)
			return false;
		/* 3. End with R, AL, EN or AN, then any NSM. */
		return last == U_RIGHT_TO_LEFT || last == U_RIGHT_TO_LEFT_ARABIC ||
		       last == U_EUROPEAN_NUMBER || last == U_ARABIC_NUMBER;
	}
	/* 6. End with L or EN, then any NSM. */
	return last == U_LEFT_TO_RIGHT || last == U_EUROPEAN_NUMBER;
}

/* Width Mapping Rule, RFC 8264 §5.2.1 and RFC 8265 §3.3.2 step 1:
 * fullwidth and halfwidth code points (decomposition type <wide> or
 * <narrow>) become their decomposition mapping. */
static int map_width(const UChar *s, int n, UChar *d, int cap)
{
	UErrorCode err = U_ZERO_ERROR;
	const UNormalizer2 *nfkc = unorm2_getNFKCInstance(&err);
	int o = 0;

	if (U_FAILURE(err))
		return -1;
	for (int i = 0; i < n;) {
		UChar32 c;
		U16_NEXT_UNSAFE(s, i, c);
		int dt = u_getIntPropertyValue(c, UCHAR_DECOMPOSITION_TYPE);
		if (dt == U_DT_WIDE || dt == U_DT_NARROW) {
			UChar m[8];
			int32_t k = unorm2_getRawDecomposition(nfkc, c, m, 8, &err);
			if (U_FAILURE(err) || k <= 0 || o + k > cap)
				return -1;
			memcpy(d + o, m, (size_t)k * sizeof(UChar));
			o += k;
		} else {
			if (o + U16_LENGTH(c) > cap)
				return -1;
			U16_APPEND_UNSAFE(d, o, c);
		}
	}
	return o;
}

static int nfc(const UChar *s, int n, UChar *d, int cap)
{
	UErrorCode err = U_ZERO_ERROR;
	const UNormalizer2 *norm = unorm2_getNFCInstance(&err);

	if (U_FAILURE(err))
		return -1;
	int32_t k = unorm2_normalize(norm, s, n, d, cap, &err);
	if (U_FAILURE(err))
		return -1;
	return k;
}

static bool all_ascii(const char *in, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)in[i] >= 0x80)
			return false;
	return true;
}

int precis_username_casemapped(const char *in, size_t len, char *out, size_t cap)
{
	UChar a[WORK_MAX], b[WORK_MAX];
	int n;

	if (len == 0 || len > PRECIS_IN_MAX)
		return -1;

	/* Most addresses are ASCII. There width mapping and NFC change nothing,
	 * no character is right-to-left, and IdentifierClass is ASCII7. */
	if (all_ascii(in, len)) {
		if (cap <= len)
			return -1;
		for (size_t i = 0; i < len; i++) {
			unsigned char c = (unsigned char)in[i];
			if (c < 0x21 || c > 0x7e)
				return -1;
			out[i] = (char)(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
		}
		out[len] = '\0';
		return (int)len;
	}

	/* RFC 8265 §3.3.2, in its order. */
	n = utf8_decode(in, len, a, WORK_MAX);
	if (n < 0)
		return -1;
	n = map_width(a, n, b, WORK_MAX);
	if (n < 0)
		return -1;

	/* Case Mapping Rule: toLowerCase in the root locale, so the result
	 * does not depend on where the server runs. */
	UErrorCode err = U_ZERO_ERROR;
	n = u_strToLower(a, WORK_MAX, b, n, "", &err);
	if (U_FAILURE(err))
		return -1;

	n = nfc(a, n, b, WORK_MAX);
	if (n <= 0)
		return -1;
	if (!bidi_ok(b, n) || !class_ok(b, n, false))
		return -1;
	return utf8_encode(b, n, out, cap);
}

int precis_opaque_string(const char *in, size_t len, char *out, size_t cap)
{
	UChar a[WORK_MAX], b[WORK_MAX];
	int n;

	if (len == 0 || len > PRECIS_IN_MAX)
		return -1;

	/* ASCII: no mapping applies, and FreeformClass allows all of
	 * U+0020..U+007E (space is a FREE_PVAL Spaces character). */
	if (all_ascii(in, len)) {
		if (cap <= len)
			return -1;
		for (size_t i = 0; i < len; i++) {
			unsigned char c = (unsigned char)in[i];
			if (c < 0x20 || c > 0x7e)
				return -1;
		}
		memcpy(out, in, len);
		out[len] = '\0';
		return (int)len;
	}

	n = utf8_decode(in, len, a, WORK_MAX);
	if (n < 0)
		return -1;
	/* RFC 8265 §4.2.2 Additional Mapping Rule: every non-ASCII space
	 * (Zs) becomes U+0020. All of Zs is in the BMP, so this is done per
	 * UTF-16 unit and in place. */
	for (int i = 0; i < n; i++)
		if (!U16_IS_SURROGATE(a[i]) && a[i] != 0x20 &&
		    u_charType(a[i]) == U_SPACE_SEPARATOR)
			a[i] = 0x20;
	n = nfc(a, n, b, WORK_MAX);
	if (n <= 0)
		return -1;
	if (!class_ok(b, n, true))
		return -1;
	return utf8_encode(b, n, out, cap);
}
