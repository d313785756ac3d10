#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "core/arena.h"
#include "core/buf.h"
#include "xml/xml.h"
#include "xml/xmlstream.h"

#define ROOT                                                                                       \
	"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "    \
	"to='example.com' version='1.0' xml:lang='en'>"
#define HDR "<?xml version='1.0'?>" ROOT
#define HDR_LOG                                                                                    \
	"open {http://etherx.jabber.org/streams}stream to=example.com version=1.0 "                \
	"{http://www.w3.org/XML/1998/namespace}lang=en default=jabber:client\n"

/* Records every event as one line, so two runs compare as strings. */
struct rec {
	struct xmlstream *xs;
	struct buf log;
	int opens, elements, closes;
	const char *pause_on; /* element name that pauses the stream */
	bool paused;
};

/* A dump that shows everything the tree holds, text node boundaries too. */
static void dump(struct buf *b, const struct xml_el *e)
{
	if (xml_is_text(e)) {
		buf_addc(b, '"');
		buf_add(b, e->text, e->text_len);
		buf_addc(b, '"');
		return;
	}
	buf_printf(b, "<{%s}%s", e->ns, e->name);
	for (const struct xml_attr *a = e->attrs; a; a = a->next) {
		if (a->ns[0])
			buf_printf(b, " {%s}%s=%s", a->ns, a->name, a->value);
		else
			buf_printf(b, " %s=%s", a->name, a->value);
	}
	buf_addc(b, '>');
	for (const struct xml_el *c = e->first; c; c = c->next) {
		assert_ptr_equal(c->parent, e);
		dump(b, c);
	}
	buf_adds(b, "</>");
}

static void on_open(void *ud, const struct xml_el *hdr, const char *default_ns)
{
	struct rec *r = ud;
	r->opens++;
	buf_printf(&r->log, "open {%s}%s", hdr->ns, hdr->name);
	assert_null(hdr->first);
	for (const struct xml_attr *a = hdr->attrs; a; a = a->next) {
		if (a->ns[0])
			buf_printf(&r->log, " {%s}%s=%s", a->ns, a->name, a->value);
		else
			buf_printf(&r->log, " %s=%s", a->name, a->value);
	}
	buf_printf(&r->log, " default=%s\n", default_ns);
}

static void on_element(void *ud, struct xml_el *el, struct arena *a)
{
	struct rec *r = ud;
	r->elements++;
	assert_null(el->parent);
	dump(&r->log, el);
	buf_addc(&r->log, '\n');
	if (r->pause_on && strcmp(el->name, r->pause_on) == 0) {
		xmlstream_pause(r->xs);
		r->paused = true;
	}
	arena_free(a);
}

static void on_close(void *ud)
{
	struct rec *r = ud;
	r->closes++;
	buf_adds(&r->log, "close\n");
}

static const struct xs_callbacks cbs = {on_open, on_element, on_close};

static const struct xs_limits big = {
    .max_stanza_bytes = 1 << 20,
    .max_depth = 100,
    .max_attrs = 100,
    .max_attr_len = 1 << 20,
    .max_text_len = 1 << 20,
    .max_children = 1000,
    .max_header_bytes = 1 << 20,
};

static void rec_init(struct rec *r, const struct xs_limits *l)
{
	memset(r, 0, sizeof(*r));
	r->xs = xmlstream_new(&cbs, r, l);
}

static void rec_done(struct rec *r)
{
	xmlstream_free(r->xs);
	buf_free(&r->log);
}

/* When set, the driver parks the stream after every feed (the second run
 * of the suite): whatever the input, the events must be the same. */
static bool park_between;

/* Feeds data in chunks of `chunk` bytes, as a transport would. After a
 * pause it resets and feeds the rest to the new stream, as c2s does after
 * SASL success. Returns 0, or -1 on a stream error. */
static int drive(struct rec *r, const char *data, size_t len, size_t chunk)
{
	size_t off = 0;
	while (off < len) {
		size_t n = len - off < chunk ? len - off : chunk;
		ssize_t k = xmlstream_feed(r->xs, data + off, n);
		if (k < 0)
			return -1;
		assert_true((size_t)k <= n);
		off += (size_t)k;
		if (r->paused) {
			buf_adds(&r->log, "reset\n");
			xmlstream_reset(r->xs);
			r->paused = false;
		} else {
			assert_int_equal(k, n);
		}
		if (park_between)
			xmlstream_park(r->xs);
	}
	return 0;
}

/* Expected result of feeding `data` whole, as a string; NULL on error. */
static enum xs_error run(const char *data, size_t len, size_t chunk, const struct xs_limits *l,
			 struct rec *out)
{
	rec_init(out, l);
	int rc = drive(out, data, len, chunk);
	enum xs_error e = xmlstream_error(out->xs);
	assert_int_equal(rc == 0, e == XS_OK);
	return e;
}

static const char stream1[] =
    HDR "\n  <message to='juliet@example.com' type='chat' id='m1'>"
	"<body>a &amp; b &lt;c&gt; &quot;q&apos; &#x263A; &#233; \xc3\xa9 \xe2\x98\xba "
	"\xf0\x9f\x98\x80 x<![CDATA[<raw>&]]>y line1\r\nline2</body>"
	"<x xmlns='urn:x' xmlns:p='urn:p' p:attr='v&amp;w' plain=\"d&quot;q\"><y><z xmlns=''>t</z>"
	"</y></x></message>\r\n \t"
	"<iq type='get' id='1'><query xmlns='jabber:iq:roster'/></iq>\n</stream:stream>\n";

static const char stream1_log[] =
    HDR_LOG "<{jabber:client}message to=juliet@example.com type=chat id=m1>"
	    "<{jabber:client}body>\"a & b <c> \"q' \xe2\x98\xba \xc3\xa9 \xc3\xa9 \xe2\x98\xba "
	    "\xf0\x9f\x98\x80 x<raw>&y line1\nline2\"</>"
	    "<{urn:x}x {urn:p}attr=v&w plain=d\"q><{urn:x}y><{}z>\"t\"</></></></>\n"
	    "<{jabber:client}iq type=get id=1><{jabber:iq:roster}query></></>\n"
	    "close\n";

static void check_log(struct rec *r, const char *want)
{
	buf_addc(&r->log, '\0');
	assert_string_equal(buf_head(&r->log), want);
}

static void test_whole_stream(void **state)
{
	(void)state;
	struct rec r;
	assert_int_equal(run(stream1, sizeof(stream1) - 1, SIZE_MAX, &big, &r), XS_OK);
	assert_int_equal(r.opens, 1);
	assert_int_equal(r.elements, 2);
	assert_int_equal(r.closes, 1);
	check_log(&r, stream1_log);
	rec_done(&r);
}

/* Feeds `data` in every 1- and 2-byte chunking and at every single split
 * point; every run must give the same events. */
static void check_all_splits(const char *data, size_t len, const char *want)
{
	struct rec r;
	for (size_t chunk = 1; chunk <= 2; chunk++) {
		assert_int_equal(run(data, len, chunk, &big, &r), XS_OK);
		check_log(&r, want);
		rec_done(&r);
	}
	for (size_t split = 0; split <= len; split++) {
		rec_init(&r, &big);
		assert_int_equal(drive(&r, data, split, SIZE_MAX), 0);
		assert_int_equal(drive(&r, data + split, len - split, SIZE_MAX), 0);
		check_log(&r, want);
		rec_done(&r);
	}
}

static void test_splits(void **state)
{
	(void)state;
	check_all_splits(stream1, sizeof(stream1) - 1, stream1_log);
}

/* RFC 6120 §6.4.6: after SASL success the client opens a new stream, maybe
 * in the same read as its last element. */
static const char sasl[] =
    HDR "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGp1bGlldAB4</auth>"
	"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
	"xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>"
	"<iq type='set' id='b'/>";

static void test_restart_sasl(void **state)
{
	(void)state;
	struct rec r;
	rec_init(&r, &big);
	r.pause_on = "auth";
	const char *end = strstr(sasl, "</auth>") + strlen("</auth>");
	ssize_t k = xmlstream_feed(r.xs, sasl, sizeof(sasl) - 1);
	assert_int_equal(k, end - sasl);
	assert_true(r.paused);
	assert_int_equal(r.elements, 1);
	xmlstream_reset(r.xs);
	r.paused = false;
	k = xmlstream_feed(r.xs, end, strlen(end));
	assert_int_equal(k, strlen(end));
	assert_int_equal(r.opens, 2);
	assert_int_equal(r.elements, 2);
	assert_int_equal(xmlstream_error(r.xs), XS_OK);
	rec_done(&r);

	/* The same at every split point, through the driver's reset. */
	const char *want =
	    HDR_LOG "<{urn:ietf:params:xml:ns:xmpp-sasl}auth mechanism=PLAIN>\"AGp1bGlldAB4\"</>\n"
		    "reset\n"
		    "open {http://etherx.jabber.org/streams}stream to=example.com "
		    "version=1.0 default=jabber:client\n"
		    "<{jabber:client}iq type=set id=b></>\n";
	for (size_t split = 0; split <= sizeof(sasl) - 1; split++) {
		rec_init(&r, &big);
		r.pause_on = "auth";
		assert_int_equal(drive(&r, sasl, split, SIZE_MAX), 0);
		assert_int_equal(drive(&r, sasl + split, sizeof(sasl) - 1 - split, SIZE_MAX), 0);
		check_log(&r, want);
		rec_done(&r);
	}

	/* Without the reset, a second XML declaration is not well-formed. */
	assert_int_equal(run(sasl, sizeof(sasl) - 1, SIZE_MAX, &big, &r), XS_ERR_BAD_FORMAT);
	rec_done(&r);
}

/* A client may put whitespace after </auth> (RFC 6120 §11.7): it is not
 * part of the restarted stream, whose XML declaration then still counts
 * as its first byte. Checked at every split point. */
static const char sasl_ws[] =
    HDR "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGp1bGlldAB4</auth>"
	"\r\n \t\n<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
	"xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>"
	"<iq type='set' id='b'/>";

static void test_restart_whitespace(void **state)
{
	(void)state;
	struct rec r;
	const char *want =
	    HDR_LOG "<{urn:ietf:params:xml:ns:xmpp-sasl}auth mechanism=PLAIN>\"AGp1bGlldAB4\"</>\n"
		    "reset\n"
		    "open {http://etherx.jabber.org/streams}stream to=example.com "
		    "version=1.0 default=jabber:client\n"
		    "<{jabber:client}iq type=set id=b></>\n";
	for (size_t split = 0; split <= sizeof(sasl_ws) - 1; split++) {
		rec_init(&r, &big);
		r.pause_on = "auth";
		assert_int_equal(drive(&r, sasl_ws, split, SIZE_MAX), 0);
		assert_int_equal(drive(&r, sasl_ws + split, sizeof(sasl_ws) - 1 - split, SIZE_MAX),
				 0);
		check_log(&r, want);
		rec_done(&r);
	}
}

/* RFC 6120 §5.4.3.3: after <starttls/> the next bytes are TLS, not XML. */
static void test_pause_starttls(void **state)
{
	(void)state;
	static const char in[] = HDR "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
				     "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03<&";
	struct rec r;
	rec_init(&r, &big);
	r.pause_on = "starttls";
	ssize_t k = xmlstream_feed(r.xs, in, sizeof(in) - 1);
	assert_int_equal(k, strlen(HDR) +
				strlen("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"));
	assert_int_equal(xmlstream_error(r.xs), XS_OK);
	assert_int_equal(r.elements, 1);
	/* The TLS handshake happens; then a new stream over TLS. */
	xmlstream_reset(r.xs);
	r.paused = false;
	assert_int_equal(xmlstream_feed(r.xs, HDR, strlen(HDR)), strlen(HDR));
	assert_int_equal(r.opens, 2);
	assert_int_equal(xmlstream_error(r.xs), XS_OK);
	rec_done(&r);
}

/* A pause without a reset: the caller feeds the unconsumed bytes again and
 * the stream goes on where it stopped, nothing seen twice. */
static void test_pause_resume(void **state)
{
	(void)state;
	static const char in[] = HDR "<a/><b/><c/>";
	struct rec r;
	rec_init(&r, &big);
	r.pause_on = "a";
	ssize_t k = xmlstream_feed(r.xs, in, sizeof(in) - 1);
	assert_int_equal(k, strlen(HDR) + 4);
	r.pause_on = "b";
	k = xmlstream_feed(r.xs, in + k, sizeof(in) - 1 - (size_t)k);
	assert_int_equal(k, 4);
	r.pause_on = NULL;
	k = xmlstream_feed(r.xs, in + strlen(HDR) + 8, 4);
	assert_int_equal(k, 4);
	check_log(&r,
		  HDR_LOG "<{jabber:client}a></>\n<{jabber:client}b></>\n<{jabber:client}c></>\n");
	rec_done(&r);
}

static void expect_error(const char *in, enum xs_error want, const struct xs_limits *l)
{
	struct rec r;
	/* Whole, and byte by byte: the verdict must not depend on reads. */
	for (size_t chunk = 1; chunk <= 2; chunk++) {
		enum xs_error got = run(in, strlen(in), chunk == 1 ? 1 : SIZE_MAX, l, &r);
		if (got != want)
			fail_msg("%s: got %d want %d (%s)", in, got, want,
				 xmlstream_error_text(r.xs));
		if (want == XS_OK) {
			rec_done(&r);
			continue;
		}
		assert_true(xmlstream_error_text(r.xs)[0] != '\0');
		/* Sticky: nothing is parsed after an error. */
		assert_int_equal(xmlstream_feed(r.xs, " ", 1), -1);
		assert_int_equal(xmlstream_feed(r.xs, HDR, strlen(HDR)), -1);
		assert_int_equal(xmlstream_error(r.xs), want);
		rec_done(&r);
	}
}

static void expect_ok(const char *in, const struct xs_limits *l)
{
	expect_error(in, XS_OK, l);
}

static void test_restricted(void **state)
{
	(void)state;
	static const char *const bad[] = {
	    "<!DOCTYPE stream>" HDR,
	    "<?xml version='1.0'?><!DOCTYPE stream:stream SYSTEM 'http://example.com/x.dtd'>" HDR,
	    /* Billion laughs. */
	    "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>"
	    "<!ENTITY lol1 '&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;'>"
	    "<!ENTITY lol2 '&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;'>]>" HDR
	    "<message><body>&lol2;</body></message>",
	    /* Internal and external entities. */
	    "<!DOCTYPE s [<!ENTITY e 'x'>]>" HDR "<message><body>&e;</body></message>",
	    "<!DOCTYPE s [<!ENTITY e SYSTEM 'file:///etc/passwd'>]>" HDR
	    "<message><body>&e;</body></message>",
	    "<!DOCTYPE s [<!ENTITY % p SYSTEM 'http://example.com/p'> %p;]>" HDR,
	    /* Comments and processing instructions, before the root and in
	     * content. */
	    "<!-- hi -->" HDR,
	    HDR "<!-- hi -->",
	    HDR "<message><!-- hi --></message>",
	    "<?xml version='1.0'?><?php echo 1; ?>" HDR,
	    HDR "<message><?pi data?></message>",
	    HDR "<?pi?>",
	    /* No DTD, so no entity but the five predefined ones. */
	    HDR "<message><body>&nbsp;</body></message>",
	    HDR "<message to='&foo;'/>",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		expect_error(bad[i], XS_ERR_RESTRICTED_XML, &big);
	/* The five predefined entities and character references are fine. */
	expect_ok(HDR "<message a='&lt;&gt;&amp;&quot;&apos;&#65;'>&lt;&#x42;</message>", &big);
}

static void test_encoding(void **state)
{
	(void)state;
	expect_error("<?xml version='1.0' encoding='ISO-8859-1'?>" ROOT, XS_ERR_ENCODING, &big);
	expect_error("<?xml version='1.0' encoding=\"iso-8859-1\"?>" ROOT "<a>\xe9</a>",
		     XS_ERR_ENCODING, &big);
	expect_error("<?xml version='1.0' encoding='UTF-16'?><stream:stream "
		     "xmlns:stream='http://etherx.jabber.org/streams'>",
		     XS_ERR_ENCODING, &big);
	expect_ok("<?xml version='1.0' encoding='utf-8'?><stream:stream "
		  "xmlns:stream='http://etherx.jabber.org/streams'>",
		  &big);
	/* A UTF-8 byte order mark is allowed; UTF-16 input is not XML here. */
	expect_ok("\xef\xbb\xbf" HDR, &big);
	static const char *const u16[] = {
	    "\xff\xfe<\0s\0", "\xfe\xff\0<\0s", "<\0s\0", "\0<\0s", "\0\0\xfe\xff\0<",
	};
	for (size_t i = 0; i < sizeof(u16) / sizeof(u16[0]); i++) {
		for (size_t chunk = 1; chunk <= 6; chunk += 5) {
			struct rec r;
			assert_int_equal(run(u16[i], 6, chunk, &big, &r), XS_ERR_ENCODING);
			rec_done(&r);
		}
	}
}

static void test_invalid_ns(void **state)
{
	(void)state;
	expect_error("<stream:stream xmlns:stream='http://etherx.jabber.org/streamz'>",
		     XS_ERR_INVALID_NS, &big);
	expect_error("<stream xmlns='jabber:client'>", XS_ERR_INVALID_NS, &big);
	expect_error("<stream:features xmlns:stream='http://etherx.jabber.org/streams'>",
		     XS_ERR_INVALID_NS, &big);
	expect_error("<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>"
		     "<x:y/>",
		     XS_ERR_BAD_FORMAT, &big);
}

/* header + ws + exactly `size` bytes of stanza + ws + stanza + close */
static char *make_sized(size_t size, const char *ws)
{
	static const char pre[] = "<message><body>", post[] = "</body></message>";
	size_t fill = size - strlen(pre) - strlen(post);
	struct buf b = BUF_INIT;
	buf_adds(&b, HDR);
	for (int i = 0; i < 2; i++) {
		buf_adds(&b, ws);
		buf_adds(&b, pre);
		for (size_t j = 0; j < fill; j++)
			buf_addc(&b, (char)('a' + j % 26));
		buf_adds(&b, post);
	}
	buf_adds(&b, "</stream:stream>");
	buf_addc(&b, '\0');
	return b.data;
}

static void test_stanza_limit(void **state)
{
	(void)state;
	const size_t limit = 5000;
	struct xs_limits l = big;
	l.max_stanza_bytes = limit;
	static const size_t chunks[] = {1, 7, 4096, 65536};
	static const char *const spaces[] = {"", "\n  \r\n\t"};
	for (size_t s = 0; s < 2; s++) {
		char *ok = make_sized(limit, spaces[s]);
		char *over = make_sized(limit + 1, spaces[s]);
		for (size_t i = 0; i < 4; i++) {
			struct rec r;
			assert_int_equal(run(ok, strlen(ok), chunks[i], &l, &r), XS_OK);
			assert_int_equal(r.elements, 2);
			assert_int_equal(r.closes, 1);
			rec_done(&r);
			assert_int_equal(run(over, strlen(over), chunks[i], &l, &r), XS_ERR_POLICY);
			assert_string_equal(xmlstream_error_text(r.xs), "max_stanza_bytes");
			assert_int_equal(r.elements, 0);
			rec_done(&r);
		}
		free(ok);
		free(over);
	}
}

static void test_header_limit(void **state)
{
	(void)state;
	struct xs_limits l = big;
	l.max_header_bytes = 300;
	for (size_t extra = 0; extra <= 1; extra++) {
		struct buf b = BUF_INIT;
		buf_adds(&b, "<?xml version='1.0'?><stream:stream "
			     "xmlns:stream='http://etherx.jabber.org/streams' to='");
		while (b.len < l.max_header_bytes - 2 + extra)
			buf_addc(&b, 'x');
		buf_adds(&b, "'>");
		buf_addc(&b, '\0');
		assert_int_equal(strlen(b.data), l.max_header_bytes + extra);
		expect_error(b.data, extra ? XS_ERR_POLICY : XS_OK, &l);
		buf_free(&b);
	}
}

static void test_structure_limits(void **state)
{
	(void)state;
	struct xs_limits l = big;

	l.max_depth = 4;
	expect_ok(HDR "<a><b><c><d/></c></b></a>", &l);
	expect_error(HDR "<a><b><c><d><e/></d></c></b></a>", XS_ERR_POLICY, &l);
	l.max_depth = 1;
	expect_ok(HDR "<a/>", &l);
	expect_error(HDR "<a><b/></a>", XS_ERR_POLICY, &l);
	l = big;

	l.max_attrs = 3;
	expect_ok(HDR "<a x='1' y='2' z='3'/>", &l);
	expect_error(HDR "<a x='1' y='2' z='3' w='4'/>", XS_ERR_POLICY, &l);
	expect_error(HDR "<a><b x='1' y='2' xmlns:p='u' p:z='3'/></a>", XS_ERR_POLICY, &l);
	l = big;

	/* Value length after unescaping. */
	l.max_attr_len = 10;
	expect_ok(HDR "<a x='0123456789'/>", &l);
	expect_ok(HDR "<a x='&amp;&amp;&amp;&amp;&amp;&amp;&amp;&amp;&amp;&amp;'/>", &l);
	expect_error(HDR "<a x='0123456789a'/>", XS_ERR_POLICY, &l);
	expect_error(HDR "<a><b><c x='&lt;123456789a'/></b></a>", XS_ERR_POLICY, &l);
	l = big;

	/* All the text of one element, however split. */
	l.max_text_len = 10;
	expect_ok(HDR "<a>0123456789</a>", &l);
	expect_ok(HDR "<a>01234<b>0123456789</b>56789</a>", &l);
	expect_error(HDR "<a>0123456789a</a>", XS_ERR_POLICY, &l);
	expect_error(HDR "<a>01234<b/>56789a</a>", XS_ERR_POLICY, &l);
	expect_error(HDR "<a><b>&lt;<![CDATA[123456789]]>&amp;</b></a>", XS_ERR_POLICY, &l);
	/* A syntax error after the text: expat reports none of a run before
	 * checking all of it, yet the verdict must be the same as when the
	 * text arrives byte by byte (fuzz/crashes/README.md). */
	expect_error(HDR "<a>0123456789a]]></a>", XS_ERR_POLICY, &l);
	expect_error(HDR "<a>0123456789]]></a>", XS_ERR_BAD_FORMAT, &l);
	expect_error(HDR "<a>0123456789a\xff</a>", XS_ERR_POLICY, &l);
	expect_error(HDR "<a>0123456789\xff</a>", XS_ERR_BAD_FORMAT, &l);
	expect_error(HDR "<a>&amp;&#x263A;&lt;\r\n<![CDATA[12\r\n]]>3\x01</a>", XS_ERR_BAD_FORMAT,
		     &l);
	expect_error(HDR "<a>&amp;&#x263A;&lt;\r\n<![CDATA[12\r\n]]>34\x01</a>", XS_ERR_POLICY, &l);
	l = big;

	/* Child nodes, text runs included. */
	l.max_children = 3;
	expect_ok(HDR "<a><b/><c/><d/></a>", &l);
	expect_ok(HDR "<a><b/>text<d/></a>", &l);
	expect_error(HDR "<a><b/><c/><d/><e/></a>", XS_ERR_POLICY, &l);
	expect_error(HDR "<a> <b/> <c/></a>", XS_ERR_POLICY, &l);
	expect_error(HDR "<a><b><c/><c/><c/><c/></b></a>", XS_ERR_POLICY, &l);
}

/* A long start tag fed a byte at a time is held back from expat until a
 * '>' comes or the held part has grown (should_hold()): same events, same
 * verdicts, and the tag's end is never left waiting. */
static void test_long_tag_held(void **state)
{
	(void)state;
	struct buf in = BUF_INIT;
	buf_adds(&in, HDR "<a x='");
	for (int i = 0; i < 20000; i++)
		buf_addc(&in, 'y');
	buf_adds(&in, "' z='1'>text</a>");
	buf_addc(&in, '\0');
	expect_ok(buf_head(&in), &big);
	struct xs_limits l = big;
	l.max_attr_len = 10000;
	expect_error(buf_head(&in), XS_ERR_POLICY, &l);
	l = big;
	l.max_stanza_bytes = 8192;
	expect_error(buf_head(&in), XS_ERR_POLICY, &l);
	/* The final '>' alone, in its own read, completes the element. */
	struct rec r;
	size_t n = strlen(buf_head(&in));
	rec_init(&r, &big);
	assert_int_equal(drive(&r, buf_head(&in), n - 8, 1), 0);
	assert_null(strstr(buf_head(&r.log) ? buf_head(&r.log) : "", "<{jabber:client}a"));
	assert_int_equal(drive(&r, buf_head(&in) + n - 8, 8, 8), 0);
	buf_addc(&r.log, '\0');
	assert_non_null(strstr(buf_head(&r.log), "<{jabber:client}a"));
	rec_done(&r);
	buf_free(&in);
}

static void test_bad_utf8(void **state)
{
	(void)state;
	static const char *const bad[] = {
	    HDR "<a>\xc0\xaf</a>",	   /* overlong '/' */
	    HDR "<a>\xe0\x80\xaf</a>",	   /* overlong, 3 bytes */
	    HDR "<a>\xf0\x80\x80\xaf</a>", /* overlong, 4 bytes */
	    HDR "<a>\xed\xa0\x80</a>",	   /* surrogate U+D800 */
	    HDR "<a x='\xed\xbf\xbf'/>",   /* surrogate in an attribute */
	    HDR "<a>\xe2\x82</a>",	   /* truncated */
	    HDR "<a>\xe2\x82x",		   /* truncated, more text follows */
	    HDR "<a>\xf4\x90\x80\x80</a>", /* beyond U+10FFFF */
	    HDR "<a>\xff</a>",
	    HDR "<a>\x01</a>", /* not an XML Char */
	    HDR "<a>&#1;</a>",
	    HDR "<a>\xef\xbf\xbe</a>", /* U+FFFE */
	    "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' to='\xc0\xaf'>",
	    HDR "<a\xc0\xaf/>",
	    HDR "text", /* text between stanzas */
	    HDR "<a/>&amp;",
	    HDR "<a></b>",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		expect_error(bad[i], XS_ERR_BAD_FORMAT, &big);
	}
	/* Whitespace keepalives between stanzas are fine. */
	expect_ok(HDR " \n\t\r\n<a/>  \n <b/>\n", &big);
}

/* Text and an open start tag of 10 MB fed in 64 KiB reads with a 64 KiB
 * limit: refused at the limit, and expat never holds more than its cap. */
static void test_memory_bounded(void **state)
{
	(void)state;
	struct xs_limits l = big;
	l.max_stanza_bytes = 64 * 1024;
	l.max_text_len = 10u << 20;
	l.max_attr_len = 10u << 20;
	l.max_header_bytes = 4096;
	static const char *const pre[] = {"<message><body>", "<message to='", "<!--"};
	char *chunk = malloc(64 * 1024);
	memset(chunk, 'x', 64 * 1024);
	for (size_t t = 0; t < 3; t++) {
		struct rec r;
		rec_init(&r, &l);
		assert_int_equal(xmlstream_feed(r.xs, HDR, strlen(HDR)), strlen(HDR));
		assert_int_equal(xmlstream_feed(r.xs, pre[t], strlen(pre[t])), strlen(pre[t]));
		size_t fed = 0, ok_chunks = 0;
		while (fed < (10u << 20) && xmlstream_feed(r.xs, chunk, 64 * 1024) >= 0) {
			fed += 64 * 1024;
			ok_chunks++;
		}
		/* The first chunk already crosses the limit. */
		assert_int_equal(ok_chunks, 0);
		assert_int_equal(xmlstream_error(r.xs), XS_ERR_POLICY);
		assert_string_equal(xmlstream_error_text(r.xs), "max_stanza_bytes");
		size_t used, peak, cap;
		xmlstream_mem_stats(r.xs, &used, &peak, &cap);
		assert_true(peak <= cap);
		assert_true(cap <= 4 * l.max_stanza_bytes + 64 * 1024);
		/* An open start tag is buffered whole: the cap did matter. */
		if (t == 1)
			assert_true(peak > l.max_stanza_bytes);
		rec_done(&r);
	}

	/* Whitespace keepalives do not add up to a stanza. */
	struct rec r;
	rec_init(&r, &l);
	memset(chunk, ' ', 64 * 1024);
	assert_int_equal(xmlstream_feed(r.xs, HDR, strlen(HDR)), strlen(HDR));
	for (int i = 0; i < 160; i++)
		assert_int_equal(xmlstream_feed(r.xs, chunk, 64 * 1024), 64 * 1024);
	assert_int_equal(xmlstream_feed(r.xs, "<a/>", 4), 4);
	assert_int_equal(r.elements, 1);
	size_t peak, cap;
	xmlstream_mem_stats(r.xs, NULL, &peak, &cap);
	assert_true(peak <= cap);
	rec_done(&r);
	free(chunk);
}

/* Expat keeps every distinct attribute name for the life of the parser:
 * stanzas within every limit can still grow its memory, and the cap ends
 * the stream with a resource error instead. */
static void test_memory_cap(void **state)
{
	(void)state;
	struct xs_limits l = big;
	l.max_stanza_bytes = 64 * 1024;
	l.max_header_bytes = 4096;
	l.max_attrs = 100000;
	struct rec r;
	rec_init(&r, &l);
	assert_int_equal(xmlstream_feed(r.xs, HDR, strlen(HDR)), strlen(HDR));
	struct buf b = BUF_INIT;
	unsigned name = 0;
	int stanzas = 0;
	for (; stanzas < 100; stanzas++) {
		buf_reset(&b);
		buf_adds(&b, "<a");
		while (b.len < 8000)
			buf_printf(&b, " n%u=''", name++);
		buf_adds(&b, "/>");
		if (xmlstream_feed(r.xs, b.data, b.len) < 0)
			break;
	}
	assert_true(stanzas > 0 && stanzas < 100);
	assert_int_equal(r.elements, stanzas);
	assert_int_equal(xmlstream_error(r.xs), XS_ERR_MEMORY);
	size_t peak, cap;
	xmlstream_mem_stats(r.xs, NULL, &peak, &cap);
	assert_true(peak <= cap);
	assert_true(peak > cap - 64 * 1024);
	buf_free(&b);
	rec_done(&r);
}

/* Limits may grow after authentication, between stanzas. */
static void test_set_limits(void **state)
{
	(void)state;
	struct xs_limits l = big;
	l.max_stanza_bytes = 100;
	struct rec r;
	rec_init(&r, &l);
	char *in = make_sized(200, "");
	const char *first = strstr(in, "<message>");
	assert_int_equal(xmlstream_feed(r.xs, in, (size_t)(first - in)), first - in);
	l.max_stanza_bytes = 200;
	xmlstream_set_limits(r.xs, &l);
	assert_int_equal(xmlstream_feed(r.xs, first, strlen(first)), strlen(first));
	assert_int_equal(r.elements, 2);
	rec_done(&r);
	free(in);
}

/* Parking frees expat between stanzas; the next input goes to a new
 * parser that has seen the root's start tag again. */
static void expect_parked_stream(const char *root, const char *stanzas, const char *want)
{
	struct rec r;
	rec_init(&r, &big);
	assert_false(xmlstream_park(r.xs)); /* no root yet */
	assert_int_equal(xmlstream_feed(r.xs, root, strlen(root)), strlen(root));
	assert_int_equal(r.opens, 1);
	buf_reset(&r.log);
	assert_true(xmlstream_park(r.xs));
	assert_true(xmlstream_parked(r.xs));
	size_t used;
	xmlstream_mem_stats(r.xs, &used, NULL, NULL);
	assert_int_equal(used, 0);
	assert_int_equal(xmlstream_feed(r.xs, stanzas, strlen(stanzas)), strlen(stanzas));
	assert_false(xmlstream_parked(r.xs));
	assert_int_equal(r.opens, 1);
	check_log(&r, want);
	rec_done(&r);
}

static void test_park(void **state)
{
	(void)state;
	expect_parked_stream(HDR, "<message><body>hi</body></message>\n<a/></stream:stream>",
			     "<{jabber:client}message><{jabber:client}body>\"hi\"</></>\n"
			     "<{jabber:client}a></>\nclose\n");
	/* The root in the default namespace. */
	expect_parked_stream(
	    "<stream xmlns='http://etherx.jabber.org/streams'>",
	    "<message xmlns='jabber:client'/><x/></stream>",
	    "<{jabber:client}message></>\n<{http://etherx.jabber.org/streams}x></>\n"
	    "close\n");
	/* Another prefix, and a server stream's dialback prefix. */
	expect_parked_stream("<s:stream xmlns:s='http://etherx.jabber.org/streams' "
			     "xmlns='jabber:server' xmlns:db='jabber:server:dialback'>",
			     "<db:result from='a' to='b'>k</db:result><s:features/>",
			     "<{jabber:server:dialback}result from=a to=b>\"k\"</>\n"
			     "<{http://etherx.jabber.org/streams}features></>\n");
	/* Namespace names that need escaping when the root is replayed. */
	expect_parked_stream("<stream:stream xmlns:stream='http://etherx.jabber.org/streams' "
			     "xmlns=\"urn:a'b\" xmlns:x='urn:&amp;&lt;&apos;&quot;'>",
			     "<m/><x:y/>", "<{urn:a'b}m></>\n<{urn:&<'\"}y></>\n");

	/* Not with part of a stanza read, nor after an error. */
	struct rec r;
	rec_init(&r, &big);
	const char *in = HDR "<message><bo";
	assert_int_equal(xmlstream_feed(r.xs, in, strlen(in)), strlen(in));
	assert_false(xmlstream_park(r.xs));
	assert_int_equal(xmlstream_feed(r.xs, "dy/></message> ", 15), 15);
	assert_true(xmlstream_park(r.xs));
	assert_true(xmlstream_park(r.xs)); /* twice is fine */
	/* Expat's state inside a CDATA section is more than its last event. */
	assert_int_equal(xmlstream_feed(r.xs, "<![CDATA[ ", 10), 10);
	assert_false(xmlstream_park(r.xs));
	assert_int_equal(xmlstream_feed(r.xs, "]]>", 3), 3);
	assert_true(xmlstream_park(r.xs));
	/* Errors and limits apply after parking as before. */
	assert_int_equal(xmlstream_feed(r.xs, "<a></b>", 7), -1);
	assert_int_equal(xmlstream_error(r.xs), XS_ERR_BAD_FORMAT);
	assert_false(xmlstream_park(r.xs));
	rec_done(&r);

	struct xs_limits l = big;
	l.max_stanza_bytes = 20;
	rec_init(&r, &l);
	assert_int_equal(xmlstream_feed(r.xs, HDR "<a/>", strlen(HDR) + 4), strlen(HDR) + 4);
	assert_true(xmlstream_park(r.xs));
	const char *big_el = "<message>0123456789abc</message>";
	assert_int_equal(xmlstream_feed(r.xs, big_el, strlen(big_el)), -1);
	assert_int_equal(xmlstream_error(r.xs), XS_ERR_POLICY);
	rec_done(&r);

	/* A restart while parked (SASL success arrives as a whole stanza, so
	 * only a reset by the owner can meet a parked stream). */
	rec_init(&r, &big);
	assert_int_equal(xmlstream_feed(r.xs, HDR, strlen(HDR)), strlen(HDR));
	assert_true(xmlstream_park(r.xs));
	xmlstream_reset(r.xs);
	assert_false(xmlstream_parked(r.xs));
	assert_int_equal(xmlstream_feed(r.xs, HDR "<b/>", strlen(HDR) + 4), strlen(HDR) + 4);
	assert_int_equal(r.opens, 2);
	assert_int_equal(r.elements, 1);
	rec_done(&r);
}

static int parking_on(void **state)
{
	(void)state;
	park_between = true;
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_whole_stream),   cmocka_unit_test(test_splits),
	    cmocka_unit_test(test_restart_sasl),   cmocka_unit_test(test_restart_whitespace),
	    cmocka_unit_test(test_pause_starttls), cmocka_unit_test(test_pause_resume),
	    cmocka_unit_test(test_restricted),	   cmocka_unit_test(test_encoding),
	    cmocka_unit_test(test_invalid_ns),	   cmocka_unit_test(test_stanza_limit),
	    cmocka_unit_test(test_header_limit),   cmocka_unit_test(test_structure_limits),
	    cmocka_unit_test(test_bad_utf8),	   cmocka_unit_test(test_long_tag_held),
	    cmocka_unit_test(test_memory_bounded), cmocka_unit_test(test_memory_cap),
	    cmocka_unit_test(test_set_limits),	   cmocka_unit_test(test_park),
	};
	int failed = cmocka_run_group_tests_name("xmlstream", tests, NULL, NULL);
	/* Again, with the stream parked after every read. */
	return failed + cmocka_run_group_tests_name("xmlstream, parked between reads", tests,
						    parking_on, NULL);
}
