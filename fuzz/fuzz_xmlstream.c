/* libFuzzer target: the XML stream front end (src/xml/xmlstream.c).
 *
 * Input: byte 0 holds flags, byte 1 the chunking plan, the rest is the
 * stream a peer sends.
 *   flags bit 0: prepend a client stream header, so that most inputs get
 *                past the root and reach the stanza code;
 *   flags bit 1: tight limits (a few bytes, attributes, levels), so that
 *                every limit is hit with small inputs.
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
 * An element named "success" or "proceed" pauses the stream, which is then
 * reset and fed the rest, as c2s does for SASL success and STARTTLS; after
 * "success" the stream has the roomy limits, as after authentication. */
#include "fuzz.h"

#include <stdbool.h>
#include <string.h>
#include <sys/types.h>

#include "core/arena.h"
#include "core/buf.h"
#include "xml/xml.h"
#include "xml/xmlstream.h"

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
		struct plan *plan)
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

/* Parses ser as the only stanza of a stream whose default namespace is dns
 * and checks that it serializes to ser again. */
static void round_trip(const char *dns, const char *ser)
{
	struct buf in = BUF_INIT, hdr = BUF_INIT, a = BUF_INIT, b = BUF_INIT;
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
	run(&r, buf_head(&in), buf_pending(&in), &huge, &whole);

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
	buf_free(&a);
	buf_free(&b);
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
	run(&whole, buf_head(&input), buf_pending(&input), lim, &pw);
	run(&chunked, buf_head(&input), buf_pending(&input), lim, &pc);
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
