/* libFuzzer target: the XML stream front end (src/xml/xmlstream.c).
 *
 * Input: byte 0 holds flags, byte 1 the chunking plan, the rest is the
 * stream a peer sends.
 *   flags bit 0: prepend a client stream header, so that most inputs get
 *                past the root and reach the stanza code;
 *   flags bit 1: tight limits (a few bytes, attributes, levels), so that
 *                every limit is hit with small inputs;
 *   flags bit 2: the chunked run parks the stream (xmlstream_park()) after
 *                every chunk, as c2s does to idle sessions: a new parser
 *                then takes over between stanzas.
 *   plan: bit 7 clear: chunks of (plan & 0x7f) + 1 bytes; set: chunks of
 *         pseudo-random sizes 1..(plan & 0x7f) + 1 drawn from the input.
 *
 * Oracles:
 *  - A peer chooses where its reads end, so the events (the header, each
 *    element as xml_serialize() writes it, the stream close, restarts, and
 *    the final error code) must be the same when the input is fed whole
 *    and when it is fed in chunks.
 *  - The memory expat holds never exceeds the cap the stream derives from
 *    its limits.
 *  - What we emit is what we meant (issue 5, "stanzas are rebuilt"): each
 *    element, serialized and parsed again as a stanza of a new stream,
 *    serializes to the same bytes.
 *  - A peer's parser reads it as we do: libxml2 (when built with it, as
 *    meson does when it finds libxml-2.0) parses the same stream, and sees
 *    exactly one element with the same tree as expat: the namespace and
 *    local name of each element, each attribute (namespace, local name,
 *    value) and the text, in order.
 * An element named "success" or "proceed" pauses the stream, which is then
 * reset and fed the rest, as c2s does for SASL success and STARTTLS; after
 * "success" the stream has the roomy limits, as after authentication. */
#include "fuzz.h"

#include <limits.h>
#include <stdbool.h>
#include <string.h>
#include <sys/types.h>

#include "core/arena.h"
#include "core/buf.h"
#include "xml/xml.h"
#include "xml/xmlstream.h"

#ifdef FUZZ_LIBXML2
#include <libxml/parser.h>
#include <libxml/tree.h>
#endif

#define HEADER                                                                                     \
	"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "                               \
	"xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0' "          \
	"xml:lang='en'>"

#define NS_STREAMS "http://etherx.jabber.org/streams"

/* Larger than anything libFuzzer is given (-max_len in scripts/fuzz.sh),
 * so with these only the structure limits below the defaults apply. */
static const struct xs_limits roomy = {
    .max_stanza_bytes = 1 << 20,
    .max_depth = 64,
    .max_attrs = 64,
    .max_attr_len = 1 << 16,
    .max_text_len = 1 << 20,
    .max_children = 10000,
    .max_header_bytes = 1 << 16,
};

static const struct xs_limits tight = {
    .max_stanza_bytes = 200,
    .max_depth = 4,
    .max_attrs = 4,
    .max_attr_len = 24,
    .max_text_len = 40,
    .max_children = 6,
    .max_header_bytes = 300,
};

/* For the round trip: what the serializer may add (namespace
 * declarations, escapes) must never be what stops the re-parse. */
static const struct xs_limits huge = {
    .max_stanza_bytes = 64u << 20,
    .max_depth = 100000,
    .max_attrs = 100000,
    .max_attr_len = 64u << 20,
    .max_text_len = 64u << 20,
    .max_children = 1000000,
    .max_header_bytes = 1 << 20,
};

/* Records every event as text, so that two runs compare as strings. */
struct rec {
	struct xmlstream *xs;
	struct buf log;
	struct buf default_ns; /* of the current stream, NUL-terminated */
	bool paused;
	bool authenticated; /* saw <success/>: the restarted stream gets roomy limits */
	/* Round trip material: for each element, the default namespace and
	 * its serialization, each NUL-terminated. NULL: not collected. */
	struct buf *elements;
	unsigned n_elements;
	/* Each element's tree as dump_el() writes it. NULL: not collected. */
	struct buf *dump;
};

static void on_open(void *ud, const struct xml_el *hdr, const char *default_ns)
{
	struct rec *r = ud;

	FUZZ_CHECK(hdr->first == NULL && hdr->parent == NULL);
	FUZZ_CHECK(strcmp(hdr->ns, NS_STREAMS) == 0 && strcmp(hdr->name, "stream") == 0);
	buf_printf(&r->log, "open default=%s", default_ns);
	for (const struct xml_attr *a = hdr->attrs; a; a = a->next)
		buf_printf(&r->log, " {%s}%s=%s", a->ns, a->name, a->value);
	buf_addc(&r->log, '\n');
	buf_reset(&r->default_ns);
	buf_adds(&r->default_ns, default_ns);
	buf_addc(&r->default_ns, '\0');
}

static bool pauses(const struct xml_el *el)
{
	return strcmp(el->name, "success") == 0 || strcmp(el->name, "proceed") == 0;
}

/* A tree as text that two parsers' trees compare by: one line per element
 * ("E"), attribute ("A"), run of adjacent text ("T") and element end ("/"),
 * every string with its length, so that no value can pass for markup. */
static void dump_str(struct buf *out, const char *s, size_t n)
{
	char num[24];
	size_t i = sizeof num, k = n;

	/* buf_printf() would cost more than the rest of the dump. */
	num[--i] = ':';
	do
		num[--i] = (char)('0' + k % 10);
	while ((k /= 10) != 0);
	num[--i] = ' ';
	buf_add(out, num + i, sizeof num - i);
	buf_add(out, s, n);
}

static void dump_start(struct buf *out, const char *ns, const char *name)
{
	buf_adds(out, "E");
	dump_str(out, ns, strlen(ns));
	dump_str(out, name, strlen(name));
	buf_addc(out, '\n');
}

static void dump_attr(struct buf *out, const char *ns, const char *name, const char *value,
		      size_t value_len)
{
	buf_adds(out, "A");
	dump_str(out, ns, strlen(ns));
	dump_str(out, name, strlen(name));
	dump_str(out, value, value_len);
	buf_addc(out, '\n');
}

/* text (a run of text, len bytes so far) is written before the next
 * element, or the end of its parent. */
static void dump_text(struct buf *out, struct buf *text)
{
	if (text->len == 0)
		return;
	buf_adds(out, "T");
	dump_str(out, text->data, text->len);
	buf_addc(out, '\n');
	buf_reset(text);
}

/* text is scratch space, empty between calls. */
static void dump_el(const struct xml_el *e, struct buf *out, struct buf *text)
{
	dump_start(out, e->ns, e->name);
	for (const struct xml_attr *at = e->attrs; at; at = at->next)
		dump_attr(out, at->ns, at->name, at->value, strlen(at->value));
	for (const struct xml_el *c = e->first; c; c = c->next) {
		if (xml_is_text(c)) {
			buf_add(text, c->text, c->text_len);
			continue;
		}
		dump_text(out, text);
		dump_el(c, out, text);
	}
	dump_text(out, text);
	buf_adds(out, "/\n");
}

static void on_element(void *ud, struct xml_el *el, struct arena *a)
{
	struct rec *r = ud;
	const char *dns = buf_head(&r->default_ns);
	size_t start = r->log.len;

	FUZZ_CHECK(el->parent == NULL && !xml_is_text(el));
	FUZZ_CHECK(r->default_ns.len > 0);
	xml_serialize(el, dns, &r->log);
	if (r->elements) {
		buf_adds(r->elements, dns);
		buf_addc(r->elements, '\0');
		buf_add(r->elements, r->log.data + start, r->log.len - start);
		buf_addc(r->elements, '\0');
		r->n_elements++;
	}
	if (r->dump) {
		struct buf text = BUF_INIT;
		dump_el(el, r->dump, &text);
		buf_free(&text);
	}
	buf_addc(&r->log, '\n');
	if (pauses(el)) {
		xmlstream_pause(r->xs);
		r->paused = true;
		if (strcmp(el->name, "success") == 0)
			r->authenticated = true;
	}
	arena_free(a);
}

static void on_close(void *ud)
{
	struct rec *r = ud;
	buf_adds(&r->log, "close\n");
}

static const struct xs_callbacks cbs = {on_open, on_element, on_close};

/* Chunk sizes: a constant, or a sequence from a small LCG seeded by the
 * plan byte and the input length, so a crash replays exactly. */
struct plan {
	bool whole;
	bool random;
	size_t max;
	uint32_t state;
};

static size_t plan_next(struct plan *p)
{
	if (p->whole)
		return SIZE_MAX;
	if (!p->random)
		return p->max;
	p->state = p->state * 1103515245u + 12345u;
	return 1 + (p->state >> 16) % p->max;
}

static void check_mem(const struct xmlstream *xs)
{
	size_t used, peak, cap;

	xmlstream_mem_stats(xs, &used, &peak, &cap);
	FUZZ_CHECK(used <= peak && peak <= cap);
}

/* Feeds data as a transport would, in the chunks of the plan. */
static void run(struct rec *r, const char *data, size_t len, const struct xs_limits *lim,
		struct plan *plan, bool park)
{
	size_t off = 0;

	r->xs = xmlstream_new(&cbs, r, lim);
	while (off < len) {
		size_t n = plan_next(plan);
		if (n > len - off)
			n = len - off;
		ssize_t k = xmlstream_feed(r->xs, data + off, n);
		check_mem(r->xs);
		if (k < 0) {
			FUZZ_CHECK(xmlstream_error(r->xs) != XS_OK);
			FUZZ_CHECK(xmlstream_feed(r->xs, "<", 1) == -1);
			break;
		}
		FUZZ_CHECK(xmlstream_error(r->xs) == XS_OK);
		FUZZ_CHECK((size_t)k <= n);
		off += (size_t)k;
		if (r->paused) {
			/* The pause point is the end of an element that ended in
			 * this chunk, so something was consumed. */
			FUZZ_CHECK(k > 0);
			buf_adds(&r->log, "reset\n");
			xmlstream_reset(r->xs);
			/* As c2s does: larger limits once authenticated. */
			if (r->authenticated)
				xmlstream_set_limits(r->xs, &roomy);
			r->paused = false;
		} else {
			FUZZ_CHECK((size_t)k == n);
		}
		if (park && xmlstream_park(r->xs)) {
			check_mem(r->xs);
			FUZZ_CHECK(xmlstream_parked(r->xs));
		}
	}
	buf_printf(&r->log, "end %d\n", (int)xmlstream_error(r->xs));
	xmlstream_free(r->xs);
	r->xs = NULL;
}

static void rec_free(struct rec *r)
{
	buf_free(&r->log);
	buf_free(&r->default_ns);
}

static void report(const char *what, const struct buf *a, const struct buf *b)
{
	fprintf(stderr, "%s differ:\n--- whole\n%.*s\n--- chunked\n%.*s\n", what,
		(int)(a->len > 4096 ? 4096 : a->len), a->data ? a->data : "",
		(int)(b->len > 4096 ? 4096 : b->len), b->data ? b->data : "");
}

/* Writes s with every "<name ...></name>" as "<name .../>". The serializer
 * writes the long form for an element whose children it all dropped (one
 * it cannot write, see xml_serialize()), and the parser cannot tell the
 * two apart; the difference is one of spelling, not of content. In
 * serializer output '<' and '>' are always markup: text and attribute
 * values have them escaped. */
static void collapse_empty(const char *s, size_t n, struct buf *out)
{
	size_t tag = SIZE_MAX; /* '<' of the last start tag */

	for (size_t i = 0; i < n; i++) {
		if (s[i] == '<')
			tag = i + 1 < n && s[i + 1] != '/' ? i : SIZE_MAX;
		if (s[i] == '>' && tag != SIZE_MAX && s[i - 1] != '/' && n - i > 2 &&
		    s[i + 1] == '<' && s[i + 2] == '/') {
			size_t ns = tag + 1, ne = ns, cs = i + 3, ce = cs;
			while (ne < i && s[ne] != ' ')
				ne++;
			while (ce < n && s[ce] != '>')
				ce++;
			if (ce < n && ce - cs == ne - ns && memcmp(s + ns, s + cs, ne - ns) == 0) {
				buf_adds(out, "/>");
				i = ce;
				tag = SIZE_MAX;
				continue;
			}
		}
		buf_addc(out, s[i]);
	}
}

static bool strip(const char **p, size_t *n, const char *prefix, const char *suffix)
{
	size_t pl = strlen(prefix), sl = strlen(suffix);
	if (*n < pl + sl || memcmp(*p, prefix, pl) != 0 || memcmp(*p + *n - sl, suffix, sl) != 0)
		return false;
	*p += pl;
	*n -= pl + sl;
	return true;
}

#ifdef FUZZ_LIBXML2
/* One parser context for every run: creating one costs more than the
 * parse. Its dictionary keeps every name it has seen, so past this many
 * the context is replaced, or a long run would grow without bound. */
#define LX_DICT_MAX 50000

static xmlParserCtxtPtr lx_ctxt;

/* As a careful peer would parse a stream: no network, no entity
 * substitution, no DTD loaded or checked. Nothing here relaxes the default
 * limits. Errors are not printed but collected by lx_on_error(). */
#define LX_OPTIONS (XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING)

/* The errors of the current parse that count, one a line. */
static struct buf lx_errors;

#if LIBXML_VERSION >= 21200
typedef const xmlError *lx_error_t;
#else
typedef xmlErrorPtr lx_error_t;
#endif

/* libxml2 reports a namespace name that is not an RFC 3986 URI (one with a
 * space, say) as a namespace error, XML_WAR_NS_URI, but parses on and
 * builds the same tree; Namespaces in XML leaves such names to the
 * application, expat takes them, and so does a peer using libxml2 unless
 * it insists on nsWellFormed. The tree comparison still covers them; only
 * that complaint, and warnings, are not failures. */
static void lx_on_error(void *ud, lx_error_t e)
{
	if (e->level == XML_ERR_WARNING ||
	    (e->domain == XML_FROM_NAMESPACE &&
	     (e->code == XML_WAR_NS_URI || e->code == XML_WAR_NS_URI_RELATIVE)))
		return;
	buf_printf(&lx_errors, "error %d (domain %d, level %d) at line %d column %d: %s", e->code,
		   e->domain, (int)e->level, e->line, e->int2,
		   e->message ? e->message : "(no message)\n");
}

/* libxml2 2.9.14 (Debian 12), parsing without XML_PARSE_NOENT, keeps each
 * '&' of a namespace declaration as the five characters "&#38;" in the
 * namespace name, however it was escaped (&amp;, &#38;, &#x26;): its way
 * of keeping '&' in attribute values for entity handling (GNOME bug
 * 316487, which SAX users see in every attribute value) leaks into
 * namespace names. The tree's attribute values and text are right. We
 * cannot write a namespace name with '&' that it reads right, so the
 * oracle looks past this: lx_probe() tells whether this libxml2 does it,
 * and lx_ns() undoes it. The mapping is one to one: no two names we write
 * become the same name for such a peer. */
static bool lx_amp_bug;

static const char *lx_ns(const xmlNs *ns, struct buf *scratch)
{
	const char *href = ns && ns->href ? (const char *)ns->href : "";

	if (!lx_amp_bug || !strchr(href, '&'))
		return href;
	buf_reset(scratch);
	for (const char *p = href; *p; p++) {
		buf_addc(scratch, *p);
		if (strncmp(p, "&#38;", 5) == 0)
			p += 4;
	}
	buf_addc(scratch, '\0');
	return scratch->data;
}

static const char *lx_str(const xmlChar *s)
{
	return s ? (const char *)s : "";
}

/* Writes n as dump_el() writes our tree. What our tree cannot hold (an
 * entity reference, a comment, a processing instruction, a child of an
 * attribute that is not text) is written as a line of its own, so it
 * differs. text and ns are scratch space, text empty between calls. */
static void lx_dump_el(const xmlNode *n, struct buf *out, struct buf *text, struct buf *ns)
{
	dump_start(out, lx_ns(n->ns, ns), lx_str(n->name));
	for (const xmlAttr *at = n->properties; at; at = at->next) {
		for (const xmlNode *c = at->children; c; c = c->next) {
			if (c->type == XML_TEXT_NODE)
				buf_adds(text, lx_str(c->content));
			else
				buf_printf(out, "? attribute child of type %d\n", (int)c->type);
		}
		dump_attr(out, lx_ns(at->ns, ns), lx_str(at->name), text->data ? text->data : "",
			  text->len);
		buf_reset(text);
	}
	for (const xmlNode *c = n->children; c; c = c->next) {
		if (c->type == XML_TEXT_NODE || c->type == XML_CDATA_SECTION_NODE) {
			buf_adds(text, lx_str(c->content));
			continue;
		}
		dump_text(out, text);
		if (c->type == XML_ELEMENT_NODE)
			lx_dump_el(c, out, text, ns);
		else
			buf_printf(out, "? node of type %d\n", (int)c->type);
	}
	dump_text(out, text);
	buf_adds(out, "/\n");
}

__attribute__((noreturn)) static void lx_report(const char *what, const char *doc,
						const struct buf *ours, const struct buf *theirs)
{
	fprintf(stderr,
		"libxml2 differs from expat: %s\n--- parsed by both\n%s\n--- expat (ours)\n%.*s"
		"--- libxml2\n%.*s",
		what, doc, (int)ours->len, ours->data ? ours->data : "", (int)theirs->len,
		theirs->data ? theirs->data : "");
	abort();
}

/* Whether this libxml2 has the '&' quirk of lx_ns(). */
static void lx_probe(void)
{
	static const char doc[] = "<r xmlns='a&amp;b'/>";

	xmlDocPtr d =
	    xmlCtxtReadMemory(lx_ctxt, doc, (int)sizeof doc - 1, NULL, "UTF-8", LX_OPTIONS);
	const xmlNode *r = xmlDocGetRootElement(d);
	FUZZ_CHECK(r != NULL && r->ns != NULL && r->ns->href != NULL);
	lx_amp_bug = strcmp((const char *)r->ns->href, "a&#38;b") == 0;
	FUZZ_CHECK(lx_amp_bug || strcmp((const char *)r->ns->href, "a&b") == 0);
	xmlFreeDoc(d);
}

/* Parses doc, a stream root holding one serialized element, with libxml2
 * and checks that it holds one element whose tree dumps as ours. */
static void lx_check(const char *doc, size_t len, const struct buf *ours)
{
	struct buf theirs = BUF_INIT;

	if (lx_ctxt && xmlDictSize(lx_ctxt->dict) > LX_DICT_MAX) {
		xmlFreeParserCtxt(lx_ctxt);
		lx_ctxt = NULL;
	}
	if (!lx_ctxt) {
		xmlInitParser();
		lx_ctxt = xmlNewParserCtxt();
		FUZZ_CHECK(lx_ctxt != NULL && lx_ctxt->sax != NULL);
		lx_ctxt->sax->serror = lx_on_error;
		lx_probe();
	}
	buf_reset(&lx_errors);
	FUZZ_CHECK(len <= INT_MAX);
	xmlDocPtr d = xmlCtxtReadMemory(lx_ctxt, doc, (int)len, NULL, "UTF-8", LX_OPTIONS);
	/* A namespace error (an undeclared prefix, a bad declaration) leaves
	 * a document but clears nsWellFormed: what counts is lx_errors. */
	if (!d || !lx_ctxt->wellFormed || lx_errors.len > 0) {
		if (lx_errors.len > 0)
			buf_add(&theirs, lx_errors.data, lx_errors.len);
		else
			buf_adds(&theirs, "no document, and no error reported\n");
		xmlFreeDoc(d);
		lx_report("libxml2 rejects our output", doc, ours, &theirs);
	}
	const xmlNode *root = xmlDocGetRootElement(d);
	if (!root || root->prev || root->next || d->children != root || !root->ns ||
	    strcmp(lx_str(root->ns->href), NS_STREAMS) != 0 ||
	    strcmp(lx_str(root->name), "stream") != 0) {
		xmlFreeDoc(d);
		lx_report("the document is not one stream root", doc, ours, &theirs);
	}
	const xmlNode *el = root->children;
	if (!el || el->next || el->type != XML_ELEMENT_NODE) {
		for (const xmlNode *c = root->children; c; c = c->next)
			buf_printf(&theirs, "node of type %d\n", (int)c->type);
		xmlFreeDoc(d);
		lx_report("the stream does not hold exactly one element", doc, ours, &theirs);
	}
	struct buf text = BUF_INIT, ns = BUF_INIT;
	lx_dump_el(el, &theirs, &text, &ns);
	buf_free(&text);
	buf_free(&ns);
	xmlFreeDoc(d);
	if (theirs.len != ours->len || memcmp(theirs.data, ours->data, ours->len) != 0)
		lx_report("the trees differ", doc, ours, &theirs);
	buf_free(&theirs);
}
#endif

/* Parses ser as the only stanza of a stream whose default namespace is dns
 * and checks that it serializes to ser again, and that libxml2 reads the
 * same tree as expat from it. */
static void round_trip(const char *dns, const char *ser)
{
	struct buf in = BUF_INIT, hdr = BUF_INIT, a = BUF_INIT, b = BUF_INIT, dump = BUF_INIT;
	struct rec r;
	struct plan whole = {.whole = true};

	/* The serializer drops an element it cannot write. */
	if (!ser[0])
		return;
	buf_adds(&in, "<stream:stream xmlns:stream='" NS_STREAMS "'");
	if (dns[0]) {
		buf_adds(&in, " xmlns='");
		xml_escape(&in, dns, strlen(dns), true);
		buf_addc(&in, '\'');
	}
	buf_addc(&in, '>');
	buf_adds(&in, ser);

	memset(&r, 0, sizeof r);
	r.dump = &dump;
	run(&r, buf_head(&in), buf_pending(&in), &huge, &whole, false);

	/* The header, the element, the restart if it pauses, a clean end.
	 * An element ends in '>', so the longer tail is tried first. */
	buf_printf(&hdr, "open default=%s\n", dns);
	buf_addc(&hdr, '\0');
	const char *el = r.log.data;
	size_t len = r.log.len;
	bool same = strip(&el, &len, buf_head(&hdr), "\nreset\nend 0\n") ||
		    strip(&el, &len, buf_head(&hdr), "\nend 0\n");
	if (same) {
		collapse_empty(ser, strlen(ser), &a);
		collapse_empty(el, len, &b);
		same = a.len == b.len && memcmp(a.data, b.data, a.len) == 0;
	}
	if (!same) {
		fprintf(stderr, "round trip differs:\n--- serialized\n%s\n--- reparsed\n%.*s\n",
			ser, (int)r.log.len, r.log.data ? r.log.data : "");
		abort();
	}
#ifdef FUZZ_LIBXML2
	buf_adds(&in, "</stream:stream>");
	buf_addc(&in, '\0');
	lx_check(buf_head(&in), buf_pending(&in) - 1, &dump);
#endif
	buf_free(&a);
	buf_free(&b);
	buf_free(&dump);
	buf_free(&hdr);
	buf_free(&in);
	rec_free(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct buf input = BUF_INIT, elements = BUF_INIT;
	struct rec whole, chunked;
	struct plan pw = {.whole = true}, pc = {0};

	if (size < 2)
		return 0;
	uint8_t flags = data[0], plan = data[1];
	const struct xs_limits *lim = flags & 2 ? &tight : &roomy;
	if (flags & 1)
		buf_adds(&input, HEADER);
	buf_add(&input, data + 2, size - 2);
	/* buf_head() of an empty buf is NULL + 0, which UBSan rejects. */
	if (buf_pending(&input) == 0)
		return 0;
	pc.random = plan & 0x80;
	pc.max = (size_t)(plan & 0x7f) + 1;
	pc.state = (uint32_t)plan * 2654435761u ^ (uint32_t)size;

	memset(&whole, 0, sizeof whole);
	memset(&chunked, 0, sizeof chunked);
	whole.elements = &elements;
	run(&whole, buf_head(&input), buf_pending(&input), lim, &pw, false);
	run(&chunked, buf_head(&input), buf_pending(&input), lim, &pc, flags & 4);
	if ((whole.log.len != chunked.log.len ||
	     memcmp(whole.log.data, chunked.log.data, whole.log.len) != 0)) {
		report("events", &whole.log, &chunked.log);
		abort();
	}

	const char *p = elements.data;
	for (unsigned i = 0; i < whole.n_elements; i++) {
		const char *dns = p;
		const char *ser = dns + strlen(dns) + 1;
		round_trip(dns, ser);
		p = ser + strlen(ser) + 1;
	}

	rec_free(&whole);
	rec_free(&chunked);
	buf_free(&elements);
	buf_free(&input);
	return 0;
}
