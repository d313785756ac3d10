/* XMPP addresses (RFC 7622) and the PRECIS profiles under them (RFC 8264,
 * RFC 8265). Every valid sample is also checked to be a fixed point:
 * preparing a prepared JID must not change it. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "core/arena.h"
#include "xmpp/jid.h"
#include "xmpp/precis.h"

/* Parses in (both with malloc and in an arena), expects the normalized
 * form want, and expects want to parse to itself. */
static void expect_jid_n(const char *in, size_t len, const char *want)
{
	struct jid j, again, ja;
	struct arena *a = arena_new(0);

	if (jid_parse(&j, in, len, NULL) != 0)
		fail_msg("rejected valid JID \"%.*s\"", (int)len, in);
	assert_string_equal(j.s, want);
	assert_int_equal(j.len, strlen(want));

	assert_int_equal(jid_parse(&again, j.s, j.len, NULL), 0);
	assert_string_equal(again.s, j.s);
	assert_true(jid_eq(&j, &again));

	assert_int_equal(jid_parse(&ja, in, len, a), 0);
	assert_true(jid_eq(&j, &ja));

	jid_free(&again);
	jid_free(&j);
	arena_free(a);
}

static void expect_jid(const char *in, const char *want)
{
	expect_jid_n(in, strlen(in), want);
}

static void expect_bad_n(const char *in, size_t len)
{
	struct jid j = {.s = "untouched"};

	if (jid_parse(&j, in, len, NULL) == 0)
		fail_msg("accepted invalid JID \"%.*s\" as \"%s\"", (int)len, in, j.s);
	/* jid.h: on error *out is untouched. */
	assert_string_equal(j.s, "untouched");
}

static void expect_bad(const char *in)
{
	expect_bad_n(in, strlen(in));
}

/* RFC 7622 §3.5.1, with each example's normalized form. */
static void test_rfc7622_valid(void **state)
{
	(void)state;
	expect_jid("juliet@example.com", "juliet@example.com");
	expect_jid("juliet@example.com/foo", "juliet@example.com/foo");
	expect_jid("juliet@example.com/foo bar", "juliet@example.com/foo bar");
	expect_jid("juliet@example.com/foo@bar", "juliet@example.com/foo@bar");
	expect_jid("foo\\20bar@example.com", "foo\\20bar@example.com");
	expect_jid("fussball@example.com", "fussball@example.com");
	expect_jid("fußball@example.com", "fußball@example.com");
	expect_jid("π@example.com", "π@example.com");
	expect_jid("Σ@example.com/foo", "σ@example.com/foo");
	expect_jid("σ@example.com/foo", "σ@example.com/foo");
	/* toLowerCase (RFC 8265) leaves final sigma alone, where the case
	 * folding of RFC 7613 turned it into σ. */
	expect_jid("ς@example.com/foo", "ς@example.com/foo");
	expect_jid("king@example.com/♚", "king@example.com/♚");
	expect_jid("example.com", "example.com");
	expect_jid("example.com/foobar", "example.com/foobar");
	expect_jid("a.example.com/b@example.net", "a.example.com/b@example.net");
	/* Example 18 lists this as invalid, but no rule of RFC 7622 or of
	 * OpaqueString (RFC 8265 §4.2) forbids a leading space; we follow the
	 * rules. */
	expect_jid("juliet@example.com/ foo", "juliet@example.com/ foo");
}

/* RFC 7622 §3.5.2. */
static void test_rfc7622_invalid(void **state)
{
	(void)state;
	expect_bad("\"juliet\"@example.com");
	expect_bad("foo bar@example.com");
	expect_bad("@example.com/");
	expect_bad("henryⅣ@example.com");
	expect_bad("♚@example.com");
	expect_bad("juliet@");
	expect_bad("/foobar");
	/* And the other empty parts. */
	expect_bad("");
	expect_bad("@example.com");
	expect_bad("example.com/");
	expect_bad("juliet@example.com/");
	expect_bad("@");
	expect_bad("/");
	/* RFC 7622 §3.3.1: more than UsernameCaseMapped forbids. */
	expect_bad("a&b@example.com");
	expect_bad("a'b@example.com");
	expect_bad("a:b@example.com");
	expect_bad("a<b@example.com");
	expect_bad("a>b@example.com");
	/* The second '@' lands in the domainpart. */
	expect_bad("a@b@example.com");
}

static void test_split(void **state)
{
	(void)state;
	struct jid j;

	/* RFC 7622 §3.1: '/' first, so '@' and '/' after it are resource. */
	assert_int_equal(jid_parse(&j, "a.example.com/b@example.net/c", 29, NULL), 0);
	assert_false(jid_has_local(&j));
	assert_int_equal(j.dom_off, 0);
	assert_int_equal(j.dom_len, 13);
	assert_int_equal(j.res_len, 15);
	assert_memory_equal(j.s + j.res_off, "b@example.net/c", 15);
	jid_free(&j);

	assert_int_equal(jid_parse(&j, "Juliet@Example.COM/Balcony", 26, NULL), 0);
	assert_string_equal(j.s, "juliet@example.com/Balcony");
	assert_int_equal(j.local_len, 6);
	assert_int_equal(j.dom_off, 7);
	assert_int_equal(j.dom_len, 11);
	assert_int_equal(j.res_off, 19);
	assert_int_equal(j.res_len, 7);
	assert_int_equal(jid_bare_len(&j), 18);
	assert_false(jid_is_bare(&j));
	assert_true(jid_has_local(&j));
	jid_free(&j);
	jid_free(&j); /* twice is harmless: the first cleared it */
	jid_free(NULL);
}

static char *repeat(const char *unit, size_t times)
{
	size_t n = strlen(unit);
	char *s = malloc(n * times + 1);

	assert_non_null(s);
	for (size_t i = 0; i < times; i++)
		memcpy(s + i * n, unit, n);
	s[n * times] = '\0';
	return s;
}

/* Sixteen labels of 63 octets joined by dots: 1023 octets. */
static char *long_domain(void)
{
	char *s = malloc(1100);
	size_t o = 0;

	assert_non_null(s);
	for (int l = 0; l < 16; l++) {
		if (l)
			s[o++] = '.';
		memset(s + o, 'a' + l, 63);
		o += 63;
	}
	s[o] = '\0';
	return s;
}

static void test_lengths(void **state)
{
	(void)state;
	char buf[4096], want[4096];
	char *l1023 = repeat("a", 1023), *l1024 = repeat("a", 1024);
	char *dom = long_domain();
	struct jid j;

	assert_int_equal(strlen(dom), 1023);

	snprintf(buf, sizeof(buf), "%s@example.com", l1023);
	expect_jid(buf, buf);
	snprintf(buf, sizeof(buf), "%s@example.com", l1024);
	expect_bad(buf);
	snprintf(buf, sizeof(buf), "x@example.com/%s", l1023);
	expect_jid(buf, buf);
	snprintf(buf, sizeof(buf), "x@example.com/%s", l1024);
	expect_bad(buf);

	/* All three parts at their limit. */
	snprintf(buf, sizeof(buf), "%s@%s/%s", l1023, dom, l1023);
	expect_jid(buf, buf);
	expect_jid(dom, dom);
	/* The final dot is stripped before the length counts. */
	snprintf(buf, sizeof(buf), "%s.", dom);
	expect_jid(buf, dom);
	/* 1024 octets of valid labels. */
	snprintf(buf, sizeof(buf), "x.%s", dom + 1);
	assert_int_equal(strlen(buf), 1024);
	expect_bad(buf);
	snprintf(buf, sizeof(buf), "x.%s.", dom + 1);
	expect_bad(buf);

	/* RFC 7622 §3.2: a label is at most 63 octets, counted as A-label. */
	char *lab63 = repeat("b", 63), *lab64 = repeat("b", 64);
	snprintf(buf, sizeof(buf), "%s.example", lab63);
	expect_jid(buf, buf);
	snprintf(buf, sizeof(buf), "%s.example", lab64);
	expect_bad(buf);
	/* Twenty Han characters are 60 octets as a U-label but 65 as an
	 * A-label; the first nineteen make 62. */
	static const char han[] = "\u557f\u76d2\u6ec1\u79e2\u8664\u5737\u83ad\u8a3d"
				  "\u5056\u722d\u5ee0\u692a\u6144\u62c5\u7e16\u564d"
				  "\u873e\u71bc\u5887\u8d6d";
	snprintf(buf, sizeof(buf), "%s.example", han);
	expect_bad(buf);
	snprintf(buf, sizeof(buf), "%.57s.example", han);
	expect_jid(buf, buf);

	/* Lengths are in octets, not characters: 511 é are 1022 octets, 512
	 * are 1024. */
	char *e511 = repeat("é", 511), *e512 = repeat("é", 512);
	snprintf(buf, sizeof(buf), "%s@example.com/%s", e511, e511);
	expect_jid(buf, buf);
	snprintf(buf, sizeof(buf), "%s@example.com", e512);
	expect_bad(buf);
	snprintf(buf, sizeof(buf), "x@example.com/%s", e512);
	expect_bad(buf);

	/* The limit holds for the prepared part, which can be longer than
	 * the input: İ (2 octets) lowercases to i + U+0307 (3 octets), and
	 * U+0958 (3 octets) is excluded from composition, so NFC leaves it as
	 * two code points (6 octets). */
	char *dotted = repeat("İ", 511), *qa = repeat("\u0958", 341);
	snprintf(buf, sizeof(buf), "%sa@example.com", dotted);
	expect_bad(buf);
	snprintf(buf, sizeof(buf), "x@example.com/%s", qa);
	expect_bad(buf);
	/* Also when the caller's buffer would hold the longer result. */
	assert_int_equal(jid_prep_local(dotted, strlen(dotted), want, sizeof(want)), -1);
	assert_int_equal(jid_prep_resource(qa, strlen(qa), want, sizeof(want)), -1);
	snprintf(buf, sizeof(buf), "x@example.com/%.30s", qa);
	assert_int_equal(jid_parse(&j, buf, strlen(buf), NULL), 0);
	assert_int_equal(j.res_len, 60);
	jid_free(&j);
	/* Likewise an A-label: this one is 26 octets, and 60 as a U-label.
	 * Sixteen of them make 975 octets, seventeen 1036. */
	size_t off = 0;
	for (int i = 0; i < 17; i++)
		off += (size_t)snprintf(buf + off, sizeof(buf) - off, "%s",
					i ? ".xn--fiqaaaaaaaaaaaaaaaaaaa" : "xn--fiqaaaaaaaaaaaaaaaaaaa");
	expect_bad(buf);
	buf[16 * 27 - 1] = '\0';
	assert_int_equal(jid_parse(&j, buf, strlen(buf), NULL), 0);
	assert_int_equal(j.len, 975);
	assert_memory_equal(j.s, "中中", 6);
	jid_free(&j);

	/* A fullwidth localpart shrinks to a third: 341 fullwidth letters
	 * are 1023 octets and become 341. */
	char *fw = repeat("Ａ", 341), *lower = repeat("a", 341);
	snprintf(buf, sizeof(buf), "%s@example.com", fw);
	snprintf(want, sizeof(want), "%s@example.com", lower);
	expect_jid(buf, want);

	free(l1023);
	free(l1024);
	free(dom);
	free(lab63);
	free(lab64);
	free(e511);
	free(e512);
	free(fw);
	free(dotted);
	free(qa);
	free(lower);
}

static void test_case_mapping(void **state)
{
	(void)state;
	expect_jid("Juliet@Example.COM", "juliet@example.com");
	expect_jid("JULIET@EXAMPLE.COM/Balcony", "juliet@example.com/Balcony");
	expect_jid("ÇA@example.com", "ça@example.com");
	expect_jid("ΣΑΣ@example.com", "σας@example.com");
	/* U+212A KELVIN SIGN lowercases to an ASCII k. */
	expect_jid("\u212a@example.com", "k@example.com");
	/* The resourcepart keeps its case (RFC 8265 §4.2.2: no case
	 * mapping). */
	expect_jid("x@example.com/Foo BAR", "x@example.com/Foo BAR");
	expect_jid("x@example.com/ÇA", "x@example.com/ÇA");

	struct jid a, b;
	assert_int_equal(jid_parse(&a, "Romeo@Example.net/Orchard", 25, NULL), 0);
	assert_int_equal(jid_parse(&b, "romeo@example.NET/orchard", 25, NULL), 0);
	assert_false(jid_eq(&a, &b));
	assert_true(jid_bare_eq(&a, &b));
	jid_free(&a);
	jid_free(&b);
}

static void test_width_mapping(void **state)
{
	(void)state;
	/* Fullwidth Latin to ASCII, then lowercased. */
	expect_jid("ＪＵＬＩＥＴ@example.com", "juliet@example.com");
	/* Halfwidth katakana KA (U+FF76) to KATAKANA LETTER KA. */
	expect_jid("\uff76@example.com", "\u30ab@example.com");
	/* A fullwidth '@' becomes '@' after the split: forbidden then. */
	expect_bad("a＠b@example.com");
	/* OpaqueString does no width mapping, and FreeformClass allows the
	 * fullwidth forms as they are. */
	expect_jid("x@example.com/ＡＢ", "x@example.com/ＡＢ");
	/* Other compatibility characters are not mapped: refused. */
	expect_bad("ﬁ@example.com");
}

static void test_bidi(void **state)
{
	(void)state;
	expect_jid("שלום@example.com", "שלום@example.com");
	expect_jid("א1@example.com", "א1@example.com");
	expect_jid("بيت@example.com", "بيت@example.com");
	/* RFC 5893 rule 2: L in a right-to-left string. */
	expect_bad("אa@example.com");
	/* Rule 5: R in a left-to-right string. */
	expect_bad("aא@example.com");
	/* Rule 1: starts with EN. */
	expect_bad("1א@example.com");
	/* Rule 3: a right-to-left string may not end in L or ON. */
	expect_bad("א!@example.com");
	/* Rule 4: EN and AN together. */
	expect_bad("ب1\u0662@example.com");
	expect_jid("ب\u0662@example.com", "ب\u0662@example.com");
	/* The resourcepart has no directionality rule. */
	expect_jid("x@example.com/אa", "x@example.com/אa");
}

static void test_resource_spaces(void **state)
{
	(void)state;
	/* RFC 8265 §4.2.2: non-ASCII spaces map to U+0020. */
	expect_jid("x@example.com/a\u00a0b", "x@example.com/a b");
	expect_jid("x@example.com/a\u3000b\u2003c", "x@example.com/a b c");
	expect_jid("x@example.com/ ", "x@example.com/ ");
	expect_jid("x@example.com/a  b ", "x@example.com/a  b ");
	/* NFC. */
	expect_jid("x@example.com/e\u0301", "x@example.com/\u00e9");
	expect_jid("e\u0301@example.com", "\u00e9@example.com");
	/* Spaces stay forbidden in the localpart, mapped or not. */
	expect_bad("a\u00a0b@example.com");
}

static void test_idn(void **state)
{
	(void)state;
	/* An A-label ends as a U-label (RFC 7622 §3.2). */
	expect_jid("juliet@xn--bcher-kva.example", "juliet@bücher.example");
	expect_jid("XN--BCHER-KVA.Example/r", "bücher.example/r");
	expect_jid("BÜCHER.example", "bücher.example");
	expect_jid("fußball.example", "fußball.example");
	/* Width mapping and full stops of other scripts. */
	expect_jid("ｅｘａｍｐｌｅ.com", "example.com");
	expect_jid("example\u3002com", "example.com");
	expect_jid("e\u0301xample.com", "\u00e9xample.com");
	/* A bad A-label, bad Punycode, and what IDNA2008 forbids. */
	expect_bad("xn--bcher-kvb.example");
	expect_bad("xn--zz.example");
	expect_bad("♚.example");
	/* A-labels whose U-label does not look up to them (RFC 5891 §5.4):
	 * fullwidth solidus and commercial at, a no-break space. They would
	 * put '/', '@' or a space into the domain (found by fuzzing). */
	expect_bad("u@xn--6g7c");
	expect_bad("u@xn--oh7c");
	expect_bad("u@xn--6a.example");
	/* NR-LDH only for ASCII labels. */
	expect_bad("a_b.example");
	expect_bad("a b.example");
	expect_bad("-ab.example");
	expect_bad("ab-.example");
	expect_bad("ab--cd.example");
	expect_bad("[example].com");
	/* Empty labels. */
	expect_bad("a..example");
	expect_bad(".example");
	expect_bad("x@.example");
}

static void test_ip_literals(void **state)
{
	(void)state;
	expect_jid("juliet@192.168.0.1/r", "juliet@192.168.0.1/r");
	expect_jid("[::1]", "[::1]");
	expect_jid("x@[2001:DB8:0:0:0:0:0:1]/r", "x@[2001:db8::1]/r");
	expect_jid("[::ffff:192.0.2.1]", "[::ffff:192.0.2.1]");
	expect_jid("192.168.0.1.", "192.168.0.1");
	expect_bad("256.1.1.1");
	expect_bad("1.2.3");
	expect_bad("1.2.3.4.5");
	expect_bad("01.2.3.4");
	expect_bad("[::1");
	expect_bad("[zz::1]");
	expect_bad("[1.2.3.4]");
	expect_bad("[fe80::1%eth0]");
	expect_bad("::1");
	expect_bad("[]");
	/* Digits by way of the IDNA mapping are no IP address either. */
	expect_bad("9\u30020");
	expect_bad("\uff11.2.3.4");
}

static void test_trailing_dot(void **state)
{
	(void)state;
	expect_jid("juliet@example.com.", "juliet@example.com");
	expect_jid("example.com./r", "example.com/r");
	expect_jid("Example.COM.", "example.com");
	expect_bad("example.com..");
	expect_bad(".");
	expect_bad("juliet@.");
	expect_bad("juliet@./r");

	struct jid a, b;
	assert_int_equal(jid_parse(&a, "a@example.com.", 14, NULL), 0);
	assert_int_equal(jid_parse(&b, "a@example.com", 13, NULL), 0);
	assert_true(jid_eq(&a, &b));
	jid_free(&a);
	jid_free(&b);
}

static void test_invalid_utf8(void **state)
{
	(void)state;
	static const char *const bad[] = {
	    "\xc3(",		/* broken sequence */
	    "\xc0\xaf",		/* overlong '/' */
	    "\xe0\x80\xaf",	/* overlong '/', three bytes */
	    "\xed\xa0\x80",	/* a surrogate */
	    "\xf4\x90\x80\x80", /* above U+10FFFF */
	    "\xe2\x82",		/* cut short */
	    "\x80",		/* lone continuation byte */
	    "\xff",
	};
	char buf[64];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(buf, sizeof(buf), "a%s@example.com", bad[i]);
		expect_bad(buf);
		snprintf(buf, sizeof(buf), "x@example.com/a%s", bad[i]);
		expect_bad(buf);
		snprintf(buf, sizeof(buf), "x@a%s.example", bad[i]);
		expect_bad(buf);
	}
	/* A NUL inside the given length is not an end of string. */
	expect_bad_n("a\0b@example.com", 15);
	expect_bad_n("x@exa\0mple.com", 14);
	expect_bad_n("x@example.com/a\0", 16);
}

static void test_controls(void **state)
{
	(void)state;
	expect_bad("a\x01@example.com");
	expect_bad("x@example.com/a\tb");
	expect_bad("x@example.com/a\nb");
	expect_bad("x@example.com/a\x7f");
	expect_bad("x@example.com/a\xc2\x85");	 /* NEL, Cc */
	expect_bad("x@example.com/a\u200bb");	 /* ZERO WIDTH SPACE, ignorable */
	expect_bad("x@example.com/a\u00adb");	 /* SOFT HYPHEN, ignorable */
	expect_bad("x@example.com/a\u2028b");	 /* LINE SEPARATOR */
	expect_bad("x@example.com/a\ue000");	 /* private use */
	expect_bad("x@example.com/a\U0010ffff"); /* noncharacter */
	expect_bad("x@example.com/a\u0378");	 /* unassigned */
	expect_bad("a\u0378@example.com");
	/* Conjoining jamo are refused, unless NFC makes a syllable of them
	 * first (RFC 8265 §3.3.2 normalizes before the class is checked). */
	expect_bad("\u1100@example.com");
	expect_bad("x@example.com/\u11a8");
	expect_jid("\u1100\u1161@example.com", "\uac00@example.com");
}

static void test_precis_property(void **state)
{
	(void)state;
	assert_int_equal(precis_property('a'), PRECIS_PVALID);
	assert_int_equal(precis_property('~'), PRECIS_PVALID);
	assert_int_equal(precis_property(' '), PRECIS_FREE_PVAL);
	assert_int_equal(precis_property(0x00), PRECIS_DISALLOWED);
	assert_int_equal(precis_property(0x00c0), PRECIS_PVALID);
	assert_int_equal(precis_property(0x00df), PRECIS_PVALID);
	assert_int_equal(precis_property(0x03c2), PRECIS_PVALID);
	assert_int_equal(precis_property(0x2163), PRECIS_FREE_PVAL); /* HasCompat */
	assert_int_equal(precis_property(0x265a), PRECIS_FREE_PVAL); /* Symbols */
	assert_int_equal(precis_property(0x00bf), PRECIS_FREE_PVAL); /* Punctuation */
	assert_int_equal(precis_property(0x0488), PRECIS_FREE_PVAL); /* Me */
	assert_int_equal(precis_property(0x16ee), PRECIS_FREE_PVAL); /* Nl */
	assert_int_equal(precis_property(0x0378), PRECIS_UNASSIGNED);
	assert_int_equal(precis_property(0xfdd0), PRECIS_DISALLOWED);
	assert_int_equal(precis_property(0x1100), PRECIS_DISALLOWED);
	assert_int_equal(precis_property(0x200c), PRECIS_CONTEXTJ);
	assert_int_equal(precis_property(0x200d), PRECIS_CONTEXTJ);
	assert_int_equal(precis_property(0x00b7), PRECIS_CONTEXTO);
	assert_int_equal(precis_property(0x0663), PRECIS_CONTEXTO);
	assert_int_equal(precis_property(0x06f3), PRECIS_CONTEXTO);
	assert_int_equal(precis_property(0x0640), PRECIS_DISALLOWED);
	assert_int_equal(precis_property(0x3033), PRECIS_DISALLOWED);
	assert_int_equal(precis_property(0xe000), PRECIS_DISALLOWED);
	assert_int_equal(precis_property(0xd800), PRECIS_DISALLOWED);
	assert_int_equal(precis_property(0x110000), PRECIS_DISALLOWED);
}

static void test_context_rules(void **state)
{
	(void)state;
	/* RFC 5892 A.3: MIDDLE DOT only between two l. */
	expect_jid("col·la@example.com", "col·la@example.com");
	expect_bad("co·lla@example.com");
	expect_bad("·l@example.com");
	expect_bad("x@example.com/a·b");
	/* A.4: KERAIA before Greek. */
	expect_jid("\u0375α@example.com", "\u0375α@example.com");
	expect_bad("\u0375a@example.com");
	/* A.5: GERESH after Hebrew. */
	expect_jid("x@example.com/א\u05f3", "x@example.com/א\u05f3");
	expect_bad("x@example.com/a\u05f3");
	/* A.7: KATAKANA MIDDLE DOT with kana or Han about. */
	expect_jid("カ・カ@example.com", "カ・カ@example.com");
	expect_bad("a・b@example.com");
	/* A.8, A.9: one set of Arabic digits at a time. */
	expect_jid("x@example.com/\u0661\u0662", "x@example.com/\u0661\u0662");
	expect_jid("x@example.com/\u06f1\u06f2", "x@example.com/\u06f1\u06f2");
	expect_bad("x@example.com/\u0661\u06f2");
	/* A.1: ZWNJ between joining Arabic letters (Persian "mi-khaham"). */
	expect_jid("\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645@example.com",
		   "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645@example.com");
	expect_bad("x@example.com/a\u200cb");
	expect_bad("\u200c\u0628@example.com");
	expect_bad("x@example.com/\u0628\u200c");
	expect_bad("x@example.com/\u0628\u200c!");
	expect_jid("x@example.com/\u0628\u200c\u0627", "x@example.com/\u0628\u200c\u0627");
	/* A.1, A.2: a joiner after a virama. */
	expect_jid("\u0915\u094d\u200d\u0937@example.com", "\u0915\u094d\u200d\u0937@example.com");
	expect_jid("\u0915\u094d\u200c\u0937@example.com", "\u0915\u094d\u200c\u0937@example.com");
	expect_bad("a\u200db@example.com");
	expect_bad("x@example.com/\u0915\u200d\u0937");
}

static void test_precis_api(void **state)
{
	(void)state;
	char out[JID_PART_MAX + 1];

	assert_int_equal(precis_username_casemapped("AbC", 3, out, sizeof(out)), 3);
	assert_string_equal(out, "abc");
	/* The NUL needs room too. */
	assert_int_equal(precis_username_casemapped("AbC", 3, out, 3), -1);
	assert_int_equal(precis_username_casemapped("ÀÉ", 4, out, 4), -1);
	assert_int_equal(precis_username_casemapped("ÀÉ", 4, out, 5), 4);
	assert_string_equal(out, "àé");
	assert_int_equal(precis_username_casemapped("", 0, out, sizeof(out)), -1);
	assert_int_equal(precis_username_casemapped("a b", 3, out, sizeof(out)), -1);
	assert_int_equal(precis_opaque_string("a b", 3, out, sizeof(out)), 3);
	assert_string_equal(out, "a b");
	assert_int_equal(precis_opaque_string("", 0, out, sizeof(out)), -1);
	assert_int_equal(precis_opaque_string("\xc3", 1, out, sizeof(out)), -1);
	/* Input over PRECIS_IN_MAX is refused before any work. */
	char big[PRECIS_IN_MAX + 2];
	memset(big, 'a', sizeof(big));
	assert_int_equal(precis_opaque_string(big, PRECIS_IN_MAX, out, sizeof(out)), PRECIS_IN_MAX);
	assert_int_equal(precis_opaque_string(big, PRECIS_IN_MAX + 1, out, sizeof(big)), -1);
	assert_int_equal(precis_username_casemapped(big, PRECIS_IN_MAX + 1, out, sizeof(big)), -1);

	assert_int_equal(jid_prep_local("Ａb", 4, out, sizeof(out)), 2);
	assert_string_equal(out, "ab");
	assert_int_equal(jid_prep_local("a@b", 3, out, sizeof(out)), -1);
	assert_int_equal(jid_prep_domain("Example.COM.", 12, out, sizeof(out)), 11);
	assert_string_equal(out, "example.com");
	assert_int_equal(jid_prep_domain("[::1]", 5, out, sizeof(out)), 5);
	assert_int_equal(jid_prep_domain("a.example", 9, out, 9), -1);
	assert_int_equal(jid_prep_resource("R\u00a0s", 4, out, sizeof(out)), 3);
	assert_string_equal(out, "R s");
}

static void test_make_bare(void **state)
{
	(void)state;
	struct arena *a = arena_new(0);
	struct jid p, m, bare, dom, b2;

	assert_int_equal(jid_parse(&p, "Juliet@EXAMPLE.com/balcony", 26, a), 0);
	assert_int_equal(jid_make(&m, "juliet", "example.com", "balcony", a), 0);
	assert_string_equal(m.s, "juliet@example.com/balcony");
	assert_true(jid_eq(&p, &m));
	assert_int_equal(m.local_len, p.local_len);
	assert_int_equal(m.dom_off, p.dom_off);
	assert_int_equal(m.res_off, p.res_off);
	assert_int_equal(m.res_len, p.res_len);

	assert_int_equal(jid_bare(&bare, &p, a), 0);
	assert_string_equal(bare.s, "juliet@example.com");
	assert_true(jid_is_bare(&bare));
	assert_false(jid_eq(&bare, &p));
	assert_true(jid_bare_eq(&bare, &p));

	assert_int_equal(jid_make(&dom, NULL, "example.com", NULL, a), 0);
	assert_string_equal(dom.s, "example.com");
	assert_false(jid_has_local(&dom));
	assert_false(jid_bare_eq(&dom, &p));
	/* A bare JID that is a prefix of another is not equal to it. */
	struct jid co;
	assert_int_equal(jid_make(&co, NULL, "example.co", NULL, a), 0);
	assert_false(jid_bare_eq(&co, &dom));
	assert_false(jid_eq(&co, &dom));
	assert_int_equal(jid_make(&b2, "", "example.com", "", a), 0);
	assert_true(jid_eq(&dom, &b2));

	/* A domain or localpart that would split another way. */
	assert_int_equal(jid_make(&m, "a@b", "example.com", NULL, a), -1);
	assert_int_equal(jid_make(&m, "a", "example.com/x", NULL, a), -1);
	assert_int_equal(jid_make(&m, "a", NULL, NULL, a), -1);
	assert_int_equal(jid_make(&m, "a", "", NULL, a), -1);

	/* jid_bare with malloc. */
	struct jid hb;
	assert_int_equal(jid_bare(&hb, &p, NULL), 0);
	assert_string_equal(hb.s, "juliet@example.com");
	jid_free(&hb);
	arena_free(a);
}

/* prep(prep(x)) == prep(x) for each part preparation, over samples that
 * exercise every mapping. */
static void test_idempotence(void **state)
{
	(void)state;
	static const char *const locals[] = {
	    "juliet",
	    "Juliet",
	    "ＪＵＬＩＥＴ",
	    "fußball",
	    "ΣΑΣ",
	    "ς",
	    "\u212a",
	    "e\u0301",
	    "\uff76",
	    "col·la",
	    "שלום",
	    "א1",
	    "\u0375α",
	    "\u0915\u094d\u200d\u0937",
	    "\u0645\u06cc\u200c\u062e",
	    "İstanbul",
	    "ǅ",
	    "foo\\20bar",
	};
	static const char *const domains[] = {
	    "example.com",    "Example.COM.",	    "xn--bcher-kva.example",
	    "BÜCHER.example", "ｅｘａｍｐｌｅ.com", "example\u3002com",
	    "[2001:DB8::1]",  "192.0.2.1",	    "fußball.example",
	};
	static const char *const resources[] = {
	    "Balcony", "foo bar", " foo",	  "a\u00a0b",	     "a\u3000b", "ＡＢ",
	    "♚",       "e\u0301", "\u0661\u0662", "b@example.net/c", "ǅ",	 "\u2163",
	};
	char o1[JID_PART_MAX + 1], o2[JID_PART_MAX + 1];
	int n1, n2;

	for (size_t i = 0; i < sizeof(locals) / sizeof(locals[0]); i++) {
		n1 = jid_prep_local(locals[i], strlen(locals[i]), o1, sizeof(o1));
		if (n1 < 0) {
			/* ǅ (titlecase) lowercases to ǆ, which has a
			 * compatibility decomposition: refused. */
			assert_string_equal(locals[i], "ǅ");
			continue;
		}
		n2 = jid_prep_local(o1, (size_t)n1, o2, sizeof(o2));
		assert_int_equal(n1, n2);
		assert_string_equal(o1, o2);
	}
	for (size_t i = 0; i < sizeof(domains) / sizeof(domains[0]); i++) {
		n1 = jid_prep_domain(domains[i], strlen(domains[i]), o1, sizeof(o1));
		if (n1 < 0)
			fail_msg("domain %s refused", domains[i]);
		n2 = jid_prep_domain(o1, (size_t)n1, o2, sizeof(o2));
		assert_int_equal(n1, n2);
		assert_string_equal(o1, o2);
	}
	for (size_t i = 0; i < sizeof(resources) / sizeof(resources[0]); i++) {
		n1 = jid_prep_resource(resources[i], strlen(resources[i]), o1, sizeof(o1));
		if (n1 < 0)
			fail_msg("resource %s refused", resources[i]);
		n2 = jid_prep_resource(o1, (size_t)n1, o2, sizeof(o2));
		assert_int_equal(n1, n2);
		assert_string_equal(o1, o2);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_rfc7622_valid), cmocka_unit_test(test_rfc7622_invalid),
	    cmocka_unit_test(test_split),	  cmocka_unit_test(test_lengths),
	    cmocka_unit_test(test_case_mapping),  cmocka_unit_test(test_width_mapping),
	    cmocka_unit_test(test_bidi),	  cmocka_unit_test(test_resource_spaces),
	    cmocka_unit_test(test_idn),		  cmocka_unit_test(test_ip_literals),
	    cmocka_unit_test(test_trailing_dot),  cmocka_unit_test(test_invalid_utf8),
	    cmocka_unit_test(test_controls),	  cmocka_unit_test(test_precis_property),
	    cmocka_unit_test(test_context_rules), cmocka_unit_test(test_precis_api),
	    cmocka_unit_test(test_make_bare),	  cmocka_unit_test(test_idempotence),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
