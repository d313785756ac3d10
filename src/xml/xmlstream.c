/* The XML stream front end shared by every transport: expat in namespace
 * mode on a counting allocator, restricted XML (RFC 6120 §11.1), byte and
 * structure limits enforced while bytes arrive, and one arena per
 * top-level element. */
#include "xml/xmlstream.h"

#include "core/arena.h"
#include "core/buf.h"
#include "core/log.h"
#include "xml/xml.h"

#include <expat.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define NS_STREAMS "http://etherx.jabber.org/streams"

/* Expat joins namespace and local name with this character. U+0001 is not
 * a Char in XML 1.0 (§2.2), not even as a character reference, so it can
 * appear in neither a name nor a namespace URI and the split is never
 * ambiguous. */
#define NS_SEP '\x01'

/* Defaults for limits given as 0 (or no limits at all). */
#define DEF_STANZA_BYTES (256u * 1024)
#define DEF_DEPTH	 64
#define DEF_ATTRS	 64
#define DEF_ATTR_LEN	 (8u * 1024)
#define DEF_CHILDREN	 10000
#define DEF_HEADER_BYTES (4u * 1024)

/* Expat's own structures (parser, hash tables, pools, its 1 KiB context
 * buffer) on top of what the input needs. */
#define MEM_SLACK (64u * 1024)

/* XML_Parse takes an int length. */
#define MAX_PIECE (1u << 30)

/* Expat keeps back at most a partial character, reference or "]]" at the
 * end of a piece; this is comfortably more. */
#define TAIL_BYTES 32

enum xs_root { ROOT_NONE, ROOT_OPEN, ROOT_CLOSED };

/* One open element inside the current top-level element. */
struct xs_frame {
	struct xml_el *el;
	size_t text_len;   /* text bytes seen in this element so far */
	unsigned children; /* child nodes so far, text runs included */
};

/* Precedes every block handed to expat, so free and realloc know its size
 * and whose budget it counts against. */
union mem_hdr {
	struct {
		struct xmlstream *owner;
		size_t size;
	} h;
	max_align_t align;
};

struct xmlstream {
	XML_Parser p;
	const struct xs_callbacks *cb; /* borrowed */
	void *ud;
	struct xs_limits lim;

	size_t mem_used, mem_peak, mem_cap; /* counting allocator */

	enum xs_error err;
	const char *err_text; /* static string */

	/* Positions are byte indexes since the last reset, as expat counts
	 * them (XML_GetCurrentByteIndex). */
	size_t fed;	     /* bytes handed to expat */
	size_t feed_base;    /* index of the first byte of the current feed call */
	size_t mark;	     /* end of the last event outside a top-level element */
	size_t stanza_start; /* '<' of the open top-level element */
	size_t seen;	     /* end of the last event expat reported */
	/* The last bytes handed to expat before the current piece, which a
	 * syntax error's text may begin in (text_before_error()). */
	unsigned char tail[TAIL_BYTES];
	size_t tail_len, tail_end; /* tail holds the bytes before tail_end */
	unsigned char lead[2];	   /* first bytes of the stream, for check_lead() */
	bool held;		   /* a stream's lone first byte, held until the second comes */
	unsigned char held_byte;

	enum xs_root root;
	unsigned level;		/* open elements, root included */
	unsigned ns_decls;	/* namespace declarations on the element being opened */
	const char *default_ns; /* root's default namespace, in hdr_arena */
	struct arena *hdr_arena;

	/* The top-level element being built. */
	struct arena *arena; /* owned until handed to cb->element */
	struct xs_frame *frames;
	unsigned nframes, frames_cap;
	struct buf text; /* text not yet added to the tree: expat splits it */
	struct buf hold; /* input kept back from expat (feed_or_hold()) */

	/* Parking (xmlstream_park()): the root's namespace declarations as
	 * a start tag to replay into a new parser, and the shift from a
	 * replayed parser's byte index to ours. */
	struct buf root_decls; /* " xmlns:p='uri'" for each, escaped */
	char *root_prefix;     /* a prefix of the streams namespace on the root, or NULL */
	char *replay;	       /* the root's start tag with those declarations */
	size_t idx_shift;      /* ours = expat's + idx_shift (mod 2^64) */
	bool parked;	       /* p is NULL until input comes */
	bool in_cdata;	       /* inside a CDATA section: expat's state is more than mark */
	bool replaying;	       /* the replayed root start tag is being parsed */

	bool in_cb;	 /* inside a user callback */
	bool pause_req;	 /* xmlstream_pause() called from a callback */
	bool suspended;	 /* expat is suspended after a pause */
	size_t consumed; /* bytes of the current feed call through the paused event */
	size_t retained; /* bytes handed to expat after the pause point */
};

/* Expat's memory suite gets no user pointer. A parser is used by one
 * thread at a time, so the stream about to call into expat is named in a
 * thread-local for malloc; free and realloc find it in the block header. */
static _Thread_local struct xmlstream *mem_owner;

static bool mem_charge(struct xmlstream *xs, size_t old, size_t n)
{
	if (n > old) {
		size_t more = n - old;
		if (more > xs->mem_cap || xs->mem_used > xs->mem_cap - more)
			return false;
	}
	xs->mem_used = xs->mem_used - old + n;
	if (xs->mem_used > xs->mem_peak)
		xs->mem_peak = xs->mem_used;
	return true;
}

static void *xs_malloc(size_t n)
{
	struct xmlstream *xs = mem_owner;
	ASSERT(xs);
	if (n > SIZE_MAX - sizeof(union mem_hdr) || !mem_charge(xs, 0, n + sizeof(union mem_hdr)))
		return NULL;
	union mem_hdr *h = malloc(sizeof(*h) + n);
	if (!h) {
		xs->mem_used -= n + sizeof(*h);
		return NULL;
	}
	h->h.owner = xs;
	h->h.size = n;
	return h + 1;
}

static void xs_free(void *p)
{
	if (!p)
		return;
	union mem_hdr *h = (union mem_hdr *)p - 1;
	h->h.owner->mem_used -= h->h.size + sizeof(*h);
	free(h);
}

static void *xs_realloc(void *p, size_t n)
{
	if (!p)
		return xs_malloc(n);
	union mem_hdr *h = (union mem_hdr *)p - 1;
	struct xmlstream *xs = h->h.owner;
	size_t old = h->h.size;
	if (n > SIZE_MAX - sizeof(*h) || !mem_charge(xs, old, n))
		return NULL;
	union mem_hdr *nh = realloc(h, sizeof(*nh) + n);
	if (!nh) {
		xs->mem_used = xs->mem_used - n + old;
		return NULL;
	}
	nh->h.size = n;
	return nh + 1;
}

static const XML_Memory_Handling_Suite mem_suite = {xs_malloc, xs_realloc, xs_free};

static void fail(struct xmlstream *xs, enum xs_error err, const char *text)
{
	if (xs->err)
		return;
	xs->err = err;
	xs->err_text = text;
	/* Handlers run for the rest of the current token; they check xs->err. */
	XML_StopParser(xs->p, XML_FALSE);
}

/* Expat's byte index of the current event, in our count (see parking). */
static size_t cur_index(struct xmlstream *xs)
{
	return (size_t)XML_GetCurrentByteIndex(xs->p) + xs->idx_shift;
}

static size_t ev_end(struct xmlstream *xs)
{
	return cur_index(xs) + (size_t)XML_GetCurrentByteCount(xs->p);
}

/* After a user callback: honour xmlstream_pause(). The pause point is the
 * end of the event that triggered the callback. */
static void after_cb(struct xmlstream *xs)
{
	if (!xs->pause_req || xs->err)
		return;
	xs->pause_req = false;
	xs->consumed = ev_end(xs) - xs->feed_base;
	XML_StopParser(xs->p, XML_TRUE);
}

/* Splits expat's "ns<SEP>local" (or "local" when in no namespace). */
static const char *split_name(const char *qname, const char **ns, size_t *ns_len)
{
	const char *sep = strchr(qname, NS_SEP);
	if (!sep) {
		*ns = "";
		*ns_len = 0;
		return qname;
	}
	*ns = qname;
	*ns_len = (size_t)(sep - qname);
	return sep + 1;
}

static bool is_xml_space(const char *s, int len)
{
	for (int i = 0; i < len; i++)
		if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n')
			return false;
	return true;
}

/* Counts a new child node of the innermost open element. */
static bool add_child_count(struct xmlstream *xs)
{
	if (xs->nframes == 0)
		return true;
	struct xs_frame *f = &xs->frames[xs->nframes - 1];
	if (++f->children > xs->lim.max_children) {
		fail(xs, XS_ERR_POLICY, "max_children");
		return false;
	}
	return true;
}

/* Adds buffered text as one node: expat delivers text in pieces, and the
 * tree keeps one node per run so it does not depend on read boundaries. */
static bool flush_text(struct xmlstream *xs)
{
	if (buf_pending(&xs->text) == 0 || xs->nframes == 0)
		return true;
	if (!add_child_count(xs))
		return false;
	xml_add_text(xs->arena, xs->frames[xs->nframes - 1].el, buf_head(&xs->text),
		     buf_pending(&xs->text));
	buf_reset(&xs->text);
	return true;
}

static struct xml_el *make_el(struct xmlstream *xs, struct arena *a, const char *qname,
			      const struct xml_el *parent)
{
	const char *ns;
	size_t ns_len;
	const char *local = split_name(qname, &ns, &ns_len);
	struct xml_el *e = arena_zalloc(a, sizeof(*e));
	e->name = arena_strdup(a, local);
	/* Children nearly always share their parent's namespace: share the
	 * string too. */
	if (parent && strlen(parent->ns) == ns_len && memcmp(parent->ns, ns, ns_len) == 0)
		e->ns = parent->ns;
	else
		e->ns = arena_strndup(a, ns, ns_len);
	return e;
}

static void add_attrs(struct arena *a, struct xml_el *e, const XML_Char **atts)
{
	struct xml_attr **tail = &e->attrs;
	for (size_t i = 0; atts[i]; i += 2) {
		const char *ns;
		size_t ns_len;
		const char *local = split_name(atts[i], &ns, &ns_len);
		struct xml_attr *at = arena_alloc(a, sizeof(*at));
		at->next = NULL;
		at->ns = ns_len ? arena_strndup(a, ns, ns_len) : "";
		at->name = arena_strdup(a, local);
		at->value = arena_strdup(a, atts[i + 1]);
		*tail = at;
		tail = &at->next;
	}
}

/* The root's start tag as a parser made when unparking is given it: the
 * root's namespace declarations are all that its content depends on
 * (attributes and xml:lang were reported when it opened). */
static void make_replay(struct xmlstream *xs)
{
	struct buf b = BUF_INIT;
	buf_adds(&b, "<");
	if (xs->root_prefix) {
		buf_adds(&b, xs->root_prefix);
		buf_adds(&b, ":");
	}
	buf_adds(&b, "stream");
	buf_add(&b, buf_head(&xs->root_decls), buf_pending(&xs->root_decls));
	buf_add(&b, ">", 2); /* with its NUL */
	free(xs->replay);
	xs->replay = strdup(buf_head(&b));
	if (!xs->replay)
		die_oom();
	buf_free(&b);
	buf_free(&xs->root_decls);
	free(xs->root_prefix);
	xs->root_prefix = NULL;
}

static void open_root(struct xmlstream *xs, const XML_Char *qname, const XML_Char **atts)
{
	const char *ns;
	size_t ns_len;
	const char *local = split_name(qname, &ns, &ns_len);
	if (ns_len != strlen(NS_STREAMS) || memcmp(ns, NS_STREAMS, ns_len) != 0 ||
	    strcmp(local, "stream") != 0) {
		fail(xs, XS_ERR_INVALID_NS, "root element is not {" NS_STREAMS "}stream");
		return;
	}
	xs->root = ROOT_OPEN;
	xs->level = 1;
	xs->mark = ev_end(xs);
	make_replay(xs);
	if (!xs->hdr_arena)
		xs->hdr_arena = arena_new(0);
	struct xml_el *hdr = make_el(xs, xs->hdr_arena, qname, NULL);
	add_attrs(xs->hdr_arena, hdr, atts);
	const char *dns = xs->default_ns ? xs->default_ns : "";
	if (xs->cb->open) {
		xs->in_cb = true;
		xs->cb->open(xs->ud, hdr, dns);
		xs->in_cb = false;
	}
	/* hdr lives only for the call. */
	arena_free(xs->hdr_arena);
	xs->hdr_arena = NULL;
	xs->default_ns = NULL;
	after_cb(xs);
}

static void XMLCALL on_start(void *ud, const XML_Char *qname, const XML_Char **atts)
{
	struct xmlstream *xs = ud;
	if (xs->err)
		return;
	unsigned ns_decls = xs->ns_decls;
	xs->ns_decls = 0;
	if (xs->replaying) {
		xs->replaying = false; /* the root again, after parking: nothing to report */
		return;
	}
	if (xs->root == ROOT_NONE) {
		open_root(xs, qname, atts);
		return;
	}
	/* The stanza itself is depth 1 (xs_limits.max_depth). */
	unsigned depth = xs->level;
	if (depth > xs->lim.max_depth) {
		fail(xs, XS_ERR_POLICY, "max_depth");
		return;
	}
	/* Namespace declarations count as attributes: each costs expat memory
	 * like one. */
	size_t nattrs = ns_decls;
	for (size_t i = 0; atts[i]; i += 2) {
		nattrs++;
		if (strlen(atts[i + 1]) > xs->lim.max_attr_len) {
			fail(xs, XS_ERR_POLICY, "max_attr_len");
			return;
		}
	}
	if (nattrs > xs->lim.max_attrs) {
		fail(xs, XS_ERR_POLICY, "max_attrs");
		return;
	}
	struct xml_el *parent = NULL;
	if (depth == 1) {
		xs->stanza_start = cur_index(xs);
		xs->arena = arena_new(2048);
	} else {
		if (!flush_text(xs) || !add_child_count(xs))
			return;
		parent = xs->frames[xs->nframes - 1].el;
	}
	struct xml_el *e = make_el(xs, xs->arena, qname, parent);
	add_attrs(xs->arena, e, atts);
	if (parent)
		xml_append(parent, e);
	if (xs->nframes == xs->frames_cap) {
		unsigned cap = xs->frames_cap ? xs->frames_cap * 2 : 16;
		struct xs_frame *f = realloc(xs->frames, cap * sizeof(*f));
		if (!f)
			die_oom();
		xs->frames = f;
		xs->frames_cap = cap;
	}
	xs->frames[xs->nframes++] = (struct xs_frame){.el = e};
	xs->level++;
	xs->seen = ev_end(xs);
}

static void XMLCALL on_end(void *ud, const XML_Char *qname)
{
	struct xmlstream *xs = ud;
	if (xs->err)
		return;
	if (xs->level == 1) {
		/* </stream:stream> */
		xs->level = 0;
		xs->root = ROOT_CLOSED;
		xs->mark = ev_end(xs);
		if (xs->cb->close) {
			xs->in_cb = true;
			xs->cb->close(xs->ud);
			xs->in_cb = false;
		}
		after_cb(xs);
		return;
	}
	xs->seen = ev_end(xs);
	if (!flush_text(xs))
		return;
	xs->nframes--;
	xs->level--;
	if (xs->level > 1)
		return;
	struct xml_el *el = xs->frames[0].el;
	struct arena *a = xs->arena;
	xs->arena = NULL;
	xs->mark = ev_end(xs);
	/* A big text run leaves a big buffer behind; idle streams should be
	 * cheap. */
	if (xs->text.cap > 64 * 1024)
		buf_free(&xs->text);
	if (xs->cb->element) {
		xs->in_cb = true;
		xs->cb->element(xs->ud, el, a);
		xs->in_cb = false;
	} else {
		arena_free(a);
	}
	after_cb(xs);
}

static void XMLCALL on_text(void *ud, const XML_Char *s, int len)
{
	struct xmlstream *xs = ud;
	if (xs->err)
		return;
	if (xs->level == 1) {
		/* Between top-level elements only whitespace may appear: it is
		 * the keepalive of RFC 6120 §4.6.1. */
		if (!is_xml_space(s, len)) {
			fail(xs, XS_ERR_BAD_FORMAT, "text between top-level elements");
			return;
		}
		xs->mark = ev_end(xs);
		return;
	}
	if (xs->nframes == 0)
		return;
	xs->seen = ev_end(xs);
	struct xs_frame *f = &xs->frames[xs->nframes - 1];
	f->text_len += (size_t)len;
	if (f->text_len > xs->lim.max_text_len) {
		fail(xs, XS_ERR_POLICY, "max_text_len");
		return;
	}
	buf_add(&xs->text, s, (size_t)len);
}

static void XMLCALL on_ns_decl(void *ud, const XML_Char *prefix, const XML_Char *uri)
{
	struct xmlstream *xs = ud;
	if (xs->err)
		return;
	xs->ns_decls++;
	if (xs->root != ROOT_NONE || xs->replaying)
		return;
	if (!prefix) {
		if (!xs->hdr_arena)
			xs->hdr_arena = arena_new(0);
		xs->default_ns = arena_strdup(xs->hdr_arena, uri ? uri : "");
	}
	/* Kept for parking. The header's byte limit bounds them. */
	buf_adds(&xs->root_decls, " xmlns");
	if (prefix) {
		buf_adds(&xs->root_decls, ":");
		buf_adds(&xs->root_decls, prefix);
	}
	buf_adds(&xs->root_decls, "='");
	if (uri)
		xml_escape(&xs->root_decls, uri, strlen(uri), true);
	buf_adds(&xs->root_decls, "'");
	/* The root can be named, when replayed, with any prefix bound to the
	 * streams namespace; with none, it was in the default namespace. */
	if (prefix && !xs->root_prefix && uri && strcmp(uri, NS_STREAMS) == 0) {
		xs->root_prefix = strdup(prefix);
		if (!xs->root_prefix)
			die_oom();
	}
}

/* RFC 6120 §11.1: restricted XML. */
static void XMLCALL on_doctype(void *ud, const XML_Char *name, const XML_Char *sysid,
			       const XML_Char *pubid, int has_internal_subset)
{
	fail(ud, XS_ERR_RESTRICTED_XML, "DOCTYPE");
}

static void XMLCALL on_comment(void *ud, const XML_Char *data)
{
	fail(ud, XS_ERR_RESTRICTED_XML, "comment");
}

static void XMLCALL on_pi(void *ud, const XML_Char *target, const XML_Char *data)
{
	fail(ud, XS_ERR_RESTRICTED_XML, "processing instruction");
}

static void XMLCALL on_entity_decl(void *ud, const XML_Char *name, int is_pe, const XML_Char *value,
				   int value_len, const XML_Char *base, const XML_Char *sysid,
				   const XML_Char *pubid, const XML_Char *notation)
{
	fail(ud, XS_ERR_RESTRICTED_XML, "entity declaration");
}

static void XMLCALL on_skipped_entity(void *ud, const XML_Char *name, int is_pe)
{
	fail(ud, XS_ERR_RESTRICTED_XML, "entity reference");
}

/* The declaration may name an encoding; the parser was created for UTF-8
 * and would ignore it, so refuse anything else here. RFC 6120 §11.6. */
static void XMLCALL on_xml_decl(void *ud, const XML_Char *version, const XML_Char *encoding,
				int standalone)
{
	if (encoding && strcasecmp(encoding, "UTF-8") != 0)
		fail(ud, XS_ERR_ENCODING, "encoding other than UTF-8");
}

/* A CDATA section between stanzas spans events: no parking inside one. */
static void XMLCALL on_cdata_start(void *ud)
{
	struct xmlstream *xs = ud;
	xs->in_cdata = true;
}

static void XMLCALL on_cdata_end(void *ud)
{
	struct xmlstream *xs = ud;
	xs->in_cdata = false;
	if (xs->level == 1 && !xs->err)
		xs->mark = ev_end(xs); /* "]]>" is an event outside any element too */
}

static void install(struct xmlstream *xs)
{
	XML_Parser p = xs->p;
	XML_SetUserData(p, xs);
	XML_SetElementHandler(p, on_start, on_end);
	XML_SetCharacterDataHandler(p, on_text);
	XML_SetStartNamespaceDeclHandler(p, on_ns_decl);
	XML_SetStartDoctypeDeclHandler(p, on_doctype);
	XML_SetCommentHandler(p, on_comment);
	XML_SetProcessingInstructionHandler(p, on_pi);
	XML_SetEntityDeclHandler(p, on_entity_decl);
	XML_SetSkippedEntityHandler(p, on_skipped_entity);
	XML_SetXmlDeclHandler(p, on_xml_decl);
	XML_SetCdataSectionHandler(p, on_cdata_start, on_cdata_end);
	XML_SetParamEntityParsing(p, XML_PARAM_ENTITY_PARSING_NEVER);
#if XML_MAJOR_VERSION > 2 || (XML_MAJOR_VERSION == 2 && XML_MINOR_VERSION >= 6)
	/* With deferral on, the end of a stanza split across two reads can wait
	 * for bytes that never come. */
	XML_SetReparseDeferralEnabled(p, XML_FALSE);
#endif
}

static void apply_limits(struct xmlstream *xs, const struct xs_limits *l)
{
	static const struct xs_limits none;
	if (!l)
		l = &none;
	xs->lim.max_stanza_bytes = l->max_stanza_bytes ? l->max_stanza_bytes : DEF_STANZA_BYTES;
	xs->lim.max_depth = l->max_depth ? l->max_depth : DEF_DEPTH;
	xs->lim.max_attrs = l->max_attrs ? l->max_attrs : DEF_ATTRS;
	xs->lim.max_attr_len = l->max_attr_len ? l->max_attr_len : DEF_ATTR_LEN;
	xs->lim.max_text_len = l->max_text_len ? l->max_text_len : xs->lim.max_stanza_bytes;
	xs->lim.max_children = l->max_children ? l->max_children : DEF_CHILDREN;
	xs->lim.max_header_bytes = l->max_header_bytes ? l->max_header_bytes : DEF_HEADER_BYTES;
	/* Expat holds at most the unparsed tail of one top-level element (our
	 * byte limits bound it) in a buffer that grows by doubling, briefly
	 * next to its old copy while growing, plus a copy of the attributes of
	 * one start tag: four times the window is enough for any input the
	 * limits admit. */
	size_t window = xs->lim.max_stanza_bytes > xs->lim.max_header_bytes
			    ? xs->lim.max_stanza_bytes
			    : xs->lim.max_header_bytes;
	xs->mem_cap = window > (SIZE_MAX - MEM_SLACK) / 4 ? SIZE_MAX : 4 * window + MEM_SLACK;
}

static void map_expat_error(struct xmlstream *xs);

/* With mem_owner set to xs. */
static bool new_parser(struct xmlstream *xs)
{
	/* Forcing UTF-8 makes expat reject other input as malformed instead of
	 * guessing from a byte order mark (RFC 6120 §11.6). */
	xs->p = XML_ParserCreate_MM("UTF-8", &mem_suite, (XML_Char[]){NS_SEP, '\0'});
	if (!xs->p)
		return false;
	install(xs);
	return true;
}

struct xmlstream *xmlstream_new(const struct xs_callbacks *cb, void *ud,
				const struct xs_limits *limits)
{
	struct xmlstream *xs = calloc(1, sizeof(*xs));
	if (!xs)
		die_oom();
	xs->cb = cb;
	xs->ud = ud;
	apply_limits(xs, limits);
	mem_owner = xs;
	bool ok = new_parser(xs);
	mem_owner = NULL;
	if (!ok)
		die_oom();
	return xs;
}

static void drop_partial(struct xmlstream *xs)
{
	arena_free(xs->arena);
	xs->arena = NULL;
	arena_free(xs->hdr_arena);
	xs->hdr_arena = NULL;
	xs->default_ns = NULL;
	xs->nframes = 0;
	buf_reset(&xs->text);
}

void xmlstream_free(struct xmlstream *xs)
{
	if (!xs)
		return;
	ASSERT(!xs->in_cb);
	mem_owner = xs;
	if (xs->p)
		XML_ParserFree(xs->p);
	mem_owner = NULL;
	drop_partial(xs);
	buf_free(&xs->text);
	buf_free(&xs->hold);
	buf_free(&xs->root_decls);
	free(xs->root_prefix);
	free(xs->replay);
	free(xs->frames);
	free(xs);
}

void xmlstream_set_limits(struct xmlstream *xs, const struct xs_limits *limits)
{
	apply_limits(xs, limits);
}

void xmlstream_pause(struct xmlstream *xs)
{
	ASSERT(xs->in_cb);
	xs->pause_req = true;
}

void xmlstream_reset(struct xmlstream *xs)
{
	ASSERT(!xs->in_cb);
	mem_owner = xs;
	bool ok;
	if (xs->parked) {
		ok = new_parser(xs);
		xs->parked = false;
	} else {
		/* XML_ParserReset keeps the memory suite and namespace mode,
		 * drops the handlers, user data and any buffered input. */
		ok = XML_ParserReset(xs->p, "UTF-8");
		if (ok)
			install(xs);
	}
	mem_owner = NULL;
	if (!ok)
		die_oom();
	drop_partial(xs);
	buf_free(&xs->root_decls);
	free(xs->root_prefix);
	xs->root_prefix = NULL;
	free(xs->replay);
	xs->replay = NULL;
	xs->idx_shift = 0;
	xs->replaying = false;
	xs->in_cdata = false;
	buf_free(&xs->hold);
	xs->fed = 0;
	xs->feed_base = 0;
	xs->mark = 0;
	xs->stanza_start = 0;
	xs->seen = 0;
	xs->tail_len = 0;
	xs->tail_end = 0;
	xs->root = ROOT_NONE;
	xs->level = 0;
	xs->ns_decls = 0;
	xs->pause_req = false;
	xs->suspended = false;
	xs->retained = 0;
	xs->held = false;
}

bool xmlstream_park(struct xmlstream *xs)
{
	if (xs->parked)
		return true;
	/* Only between top-level elements with nothing half-read: expat holds
	 * no input past the last event (mark), and no element is open. */
	if (xs->in_cb || xs->err || xs->root != ROOT_OPEN || xs->level != 1 || xs->suspended ||
	    xs->replaying || xs->in_cdata || !xs->replay || xs->nframes || xs->arena || xs->held ||
	    buf_pending(&xs->hold) || xs->mark != xs->fed)
		return false;
	mem_owner = xs;
	XML_ParserFree(xs->p);
	mem_owner = NULL;
	xs->p = NULL;
	xs->parked = true;
	buf_free(&xs->text);
	buf_free(&xs->hold);
	free(xs->frames);
	xs->frames = NULL;
	xs->frames_cap = 0;
	return true;
}

bool xmlstream_parked(const struct xmlstream *xs)
{
	return xs->parked;
}

/* A new parser for a parked stream, taken inside the root by replaying
 * its start tag; byte indexes go on from where they were. With mem_owner
 * set to xs. */
static bool unpark(struct xmlstream *xs)
{
	if (!new_parser(xs)) {
		xs->err = XS_ERR_MEMORY;
		xs->err_text = "out of memory";
		return false;
	}
	xs->parked = false;
	xs->replaying = true;
	size_t n = strlen(xs->replay);
	enum XML_Status st = XML_Parse(xs->p, xs->replay, (int)n, XML_FALSE);
	if (st != XML_STATUS_OK || xs->replaying || xs->err) {
		/* Only a memory cap could do this: the tag was parsed before. */
		map_expat_error(xs);
		if (xs->replaying) {
			xs->err = XS_ERR_MEMORY;
			xs->err_text = "stream could not be resumed";
		}
		return false;
	}
	xs->idx_shift = xs->fed - n;
	return true;
}

enum xs_error xmlstream_error(const struct xmlstream *xs)
{
	return xs->err;
}

const char *xmlstream_condition(enum xs_error e)
{
	switch (e) {
	case XS_ERR_RESTRICTED_XML:
		return "restricted-xml";
	case XS_ERR_POLICY:
		return "policy-violation";
	case XS_ERR_ENCODING:
		return "unsupported-encoding";
	case XS_ERR_INVALID_NS:
		return "invalid-namespace";
	case XS_ERR_MEMORY:
		return "resource-constraint";
	default:
		return "bad-format";
	}
}

const char *xmlstream_error_text(const struct xmlstream *xs)
{
	return xs->err ? xs->err_text : "";
}

void xmlstream_mem_stats(const struct xmlstream *xs, size_t *used, size_t *peak, size_t *cap)
{
	if (used)
		*used = xs->mem_used;
	if (peak)
		*peak = xs->mem_peak;
	if (cap)
		*cap = xs->mem_cap;
}

static void map_expat_error(struct xmlstream *xs)
{
	if (xs->err)
		return; /* a handler stopped the parser and said why */
	enum XML_Error code = XML_GetErrorCode(xs->p);
	enum xs_error err;
	switch (code) {
	case XML_ERROR_NO_MEMORY:
		err = XS_ERR_MEMORY;
		break;
	/* Without a DTD no entity but the five predefined ones exists, so any
	 * other reference lands here. RFC 6120 §11.1. */
	case XML_ERROR_UNDEFINED_ENTITY:
	case XML_ERROR_RECURSIVE_ENTITY_REF:
	case XML_ERROR_BINARY_ENTITY_REF:
	case XML_ERROR_ATTRIBUTE_EXTERNAL_ENTITY_REF:
	case XML_ERROR_EXTERNAL_ENTITY_HANDLING:
	case XML_ERROR_NOT_STANDALONE:
	case XML_ERROR_ENTITY_DECLARED_IN_PE:
	case XML_ERROR_PARAM_ENTITY_REF:
		err = XS_ERR_RESTRICTED_XML;
		break;
	case XML_ERROR_UNKNOWN_ENCODING:
	case XML_ERROR_INCORRECT_ENCODING:
		err = XS_ERR_ENCODING;
		break;
	default:
		err = XS_ERR_BAD_FORMAT;
		break;
	}
	xs->err = err;
	xs->err_text = XML_ErrorString(code);
	if (!xs->err_text)
		xs->err_text = "XML error";
}

/* Bytes of text a run of character data stands for, as expat would
 * report them: references decoded, line ends normalized (XML 1.0 §2.11),
 * CDATA sections unwrapped. The run is well-formed up to its end (expat
 * found the error there), so a reference always has its ';'. */
static size_t text_len_of(const unsigned char *p, size_t n)
{
	static const char cdata_open[] = "<![CDATA[";
	size_t out = 0, i = 0;
	bool cdata = false;
	while (i < n) {
		unsigned char c = p[i];
		if (cdata) {
			if (c == ']' && n - i >= 3 && p[i + 1] == ']' && p[i + 2] == '>') {
				cdata = false;
				i += 3;
				continue;
			}
		} else if (c == '<') {
			size_t k = sizeof(cdata_open) - 1;
			if (n - i < k || memcmp(p + i, cdata_open, k) != 0)
				break; /* markup: the text ends here */
			cdata = true;
			i += k;
			continue;
		} else if (c == '&') {
			const unsigned char *semi = memchr(p + i, ';', n - i);
			if (!semi)
				break;
			size_t len = 1;
			if (i + 1 < n && p[i + 1] == '#') {
				bool hex = i + 2 < n && p[i + 2] == 'x';
				unsigned long cp =
				    strtoul((const char *)p + i + 2 + hex, NULL, hex ? 16 : 10);
				len = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
			}
			out += len;
			i = (size_t)(semi - p) + 1;
			continue;
		}
		if (c == '\r' && i + 1 < n && p[i + 1] == '\n')
			i++;
		out++;
		i++;
	}
	return out;
}

/* Expat checks a run of character data before reporting any of it, so a
 * syntax error inside a long run would hide a text limit that the same
 * bytes cross when they arrive in small reads (each read's text is
 * reported as it comes). For the same verdict whatever the reads, the
 * text between the last reported event and the error is counted here as
 * if it had been reported (found by fuzz/fuzz_xmlstream.c). piece is what
 * the failing expat call was given; it ends at xs->fed. */
static void text_before_error(struct xmlstream *xs, const char *piece, size_t piece_len)
{
	if (xs->err || xs->nframes == 0 || xs->level < 2)
		return;
	if (XML_GetCurrentByteIndex(xs->p) < 0)
		return;
	size_t at = cur_index(xs);
	if (at <= xs->seen || at > xs->fed)
		return;
	size_t from = xs->seen, to = at;
	size_t piece_start = xs->fed - piece_len;
	const unsigned char *run;
	unsigned char *copy = NULL;
	if (from >= piece_start) {
		run = (const unsigned char *)piece + (from - piece_start);
	} else {
		/* The run began in an earlier piece: join its start, kept in
		 * tail, to the rest. */
		size_t tail_start = xs->tail_end - xs->tail_len;
		if (from < tail_start || xs->tail_end < piece_start)
			return; /* expat reports text at the end of every piece: not reached */
		copy = malloc(to - from);
		if (!copy)
			die_oom();
		size_t head = (to < xs->tail_end ? to : xs->tail_end) - from;
		memcpy(copy, xs->tail + (from - tail_start), head);
		if (to > xs->tail_end)
			memcpy(copy + head, piece + (xs->tail_end - piece_start),
			       to - xs->tail_end);
		run = copy;
	}
	size_t n = to - from;
	/* "]]>" is reported at its '>': the "]]" before it is never text. */
	if (n >= 2 && run[n - 1] == ']' && run[n - 2] == ']')
		n -= 2;
	size_t len = text_len_of(run, n);
	free(copy);
	if (xs->frames[xs->nframes - 1].text_len + len > xs->lim.max_text_len) {
		xs->err = XS_ERR_POLICY;
		xs->err_text = "max_text_len";
	}
}

/* Keeps the last bytes of a piece expat has taken, for text_before_error(). */
static void keep_tail(struct xmlstream *xs, const char *piece, size_t n)
{
	if (xs->tail_end == xs->fed)
		return; /* resumed: these bytes were kept when first parsed */
	if (n >= TAIL_BYTES) {
		memcpy(xs->tail, piece + n - TAIL_BYTES, TAIL_BYTES);
		xs->tail_len = TAIL_BYTES;
		xs->tail_end = xs->fed;
		return;
	}
	size_t keep = xs->tail_len + n > TAIL_BYTES ? TAIL_BYTES - n : xs->tail_len;
	memmove(xs->tail, xs->tail + xs->tail_len - keep, keep);
	memcpy(xs->tail + keep, piece, n);
	xs->tail_len = keep + n;
	xs->tail_end = xs->fed;
}

/* Runs one expat call on piece (which ends at xs->fed). Returns 1 to go
 * on, 0 when paused, -1 on error. */
static int parse_result(struct xmlstream *xs, enum XML_Status st, const char *piece, size_t n)
{
	if (st == XML_STATUS_ERROR || xs->err) {
		if (st == XML_STATUS_ERROR)
			text_before_error(xs, piece, n);
		map_expat_error(xs);
		return -1;
	}
	if (st == XML_STATUS_SUSPENDED) {
		xs->suspended = true;
		xs->retained = xs->fed - xs->feed_base - xs->consumed;
		keep_tail(xs, piece, n);
		return 0;
	}
	keep_tail(xs, piece, n);
	return 1;
}

/* Expat honours a UTF-16 byte order mark, and guesses UTF-16 from a NUL
 * byte next to '<', even when created for UTF-8 only. RFC 6120 §11.6 allows
 * UTF-8 alone, so look at the first two bytes of each stream before expat
 * does. A NUL is never XML, so refusing it as an encoding loses nothing. */
static bool check_lead(struct xmlstream *xs, const char *p, size_t n)
{
	for (size_t i = 0; i < n && xs->fed + i < 2; i++)
		xs->lead[xs->fed + i] = (unsigned char)p[i];
	if (xs->fed + n < 2)
		return true;
	unsigned char b0 = xs->lead[0], b1 = xs->lead[1];
	if (b0 == 0 || b1 == 0 || (b0 == 0xfe && b1 == 0xff) || (b0 == 0xff && b1 == 0xfe)) {
		xs->err = XS_ERR_ENCODING;
		xs->err_text = "UTF-16 or UTF-32 input";
		return false;
	}
	return true;
}

static ssize_t feed_bytes(struct xmlstream *xs, const char *data, size_t len);

/* After </stream:stream> only whitespace may follow. Expat may keep a
 * trailing partial token (a name, "f:") without complaint until more
 * comes, so whether junk there was an error depended on how the bytes
 * were split (found by fuzz/fuzz_xmlstream.c): we look at the bytes after
 * the close ourselves. piece ends at xs->fed. */
static bool after_close_ok(struct xmlstream *xs, const char *piece, size_t n)
{
	size_t start = xs->fed - n;
	size_t from = xs->mark > start ? xs->mark - start : 0;
	for (size_t i = from; i < n; i++)
		if (piece[i] != ' ' && piece[i] != '\t' && piece[i] != '\r' && piece[i] != '\n') {
			xs->err = XS_ERR_BAD_FORMAT;
			xs->err_text = "data after the end of the stream";
			return false;
		}
	return true;
}

/* Expat 2.5 starts an unfinished token (a start tag with long attribute
 * values, say) from its beginning again on every call, so a peer that
 * sends a big tag a byte at a time makes it scan n^2/2 bytes
 * (CVE-2023-52425; found by tests/integration/test_hostile_xml.py: 64 KiB
 * took seconds of CPU). Expat 2.6's own cure, reparse deferral, can leave
 * a complete stanza waiting for bytes that never come, so we defer
 * ourselves, where no such wait is possible: no token but text ends
 * without a '>', so input without one is held back while the unfinished
 * part is long and the held bytes are fewer than it. Text runs are
 * reported as they come and never count as unfinished. Held input is fed,
 * in order, before the next piece that has a '>' or once it has grown to
 * the unfinished part's size: each byte is then scanned a bounded number
 * of times. Nothing can pause inside held input (pauses follow element
 * ends, which need a '>'), so callers still see all of it consumed. */
#define HOLD_MIN 4096

static bool should_hold(const struct xmlstream *xs, const char *data, size_t len)
{
	if (xs->root != ROOT_OPEN || xs->suspended || xs->err)
		return false;
	size_t last = xs->seen > xs->mark ? xs->seen : xs->mark;
	size_t tail = xs->fed - last + buf_pending(&xs->hold);
	return tail >= HOLD_MIN && buf_pending(&xs->hold) + len < tail - buf_pending(&xs->hold) &&
	       !memchr(data, '>', len);
}

ssize_t xmlstream_feed(struct xmlstream *xs, const char *data, size_t len)
{
	if (should_hold(xs, data, len)) {
		buf_add(&xs->hold, data, len);
		return (ssize_t)len;
	}
	if (buf_pending(&xs->hold)) {
		struct buf h = xs->hold;
		xs->hold = (struct buf)BUF_INIT;
		ssize_t r = feed_bytes(xs, buf_head(&h), buf_pending(&h));
		ASSERT(r < 0 || (size_t)r == buf_pending(&h) || xs->err);
		buf_free(&h);
		if (r < 0)
			return -1;
	}
	/* Whitespace before a stream's first byte (between elements, RFC 6120
	 * §11.7 allows it) is not part of the new document: clients write a
	 * newline after </auth> or </response> and then restart the stream
	 * with an XML declaration, which expat accepts only at the very
	 * start. Skipped here, counted as consumed. */
	size_t skipped = 0;
	if (!xs->err && xs->root == ROOT_NONE && xs->fed == 0 && !xs->suspended) {
		if (!xs->held)
			while (skipped < len && (data[skipped] == ' ' || data[skipped] == '\t' ||
						 data[skipped] == '\r' || data[skipped] == '\n'))
				skipped++;
		/* check_lead() must see the first two bytes together, or the
		 * error a peer gets would depend on how its reads were split
		 * (found by fuzz/fuzz_xmlstream.c): a lone first byte waits for
		 * the second. */
		if (xs->held && skipped < len) {
			char two[2] = {(char)xs->held_byte, data[skipped]};
			xs->held = false;
			ssize_t r = feed_bytes(xs, two, 2);
			if (r < 0)
				return -1;
			ASSERT(r == 2); /* nothing can pause within a stream's first two bytes */
			skipped++;
		} else if (!xs->held && len - skipped == 1) {
			xs->held = true;
			xs->held_byte = (unsigned char)data[skipped];
			return (ssize_t)len;
		}
	}
	if (skipped == len)
		return xs->err ? -1 : (ssize_t)len;
	ssize_t r = feed_bytes(xs, data + skipped, len - skipped);
	return r < 0 ? r : r + (ssize_t)skipped;
}

static ssize_t feed_bytes(struct xmlstream *xs, const char *data, size_t len)
{
	if (xs->err)
		return -1;
	ASSERT(!xs->in_cb && len <= SSIZE_MAX);
	size_t done = 0;
	int rc;
	mem_owner = xs;
	if (xs->parked && !unpark(xs)) {
		rc = -1;
		goto out;
	}
	if (xs->suspended) {
		/* Paused and not reset: expat still holds the bytes after the
		 * pause point, which the caller, told they were not consumed,
		 * feeds again. Let expat continue on its copy and skip ours. */
		ASSERT(len >= xs->retained);
		xs->feed_base = xs->fed - xs->retained;
		done = xs->retained;
		xs->suspended = false;
		xs->retained = 0;
		rc = parse_result(xs, XML_ResumeParser(xs->p), data, done);
		if (rc <= 0)
			goto out;
	}
	xs->feed_base = xs->fed - done;
	while (done < len) {
		/* The limits are checked before bytes reach expat, so a single
		 * huge read is cut exactly at the limit: expat never buffers
		 * more than one window. Outside a top-level element the window
		 * starts after the last event, so whitespace keepalives never
		 * add up, but anything expat has not reported yet (a comment in
		 * progress, a start tag) counts. */
		size_t start, limit;
		const char *what;
		if (xs->root == ROOT_NONE) {
			start = 0;
			limit = xs->lim.max_header_bytes;
			what = "max_header_bytes";
		} else {
			start = xs->level >= 2 ? xs->stanza_start : xs->mark;
			limit = xs->lim.max_stanza_bytes;
			what = "max_stanza_bytes";
		}
		size_t used = xs->fed - start;
		if (used >= limit) {
			xs->err = XS_ERR_POLICY;
			xs->err_text = what;
			rc = -1;
			goto out;
		}
		size_t n = len - done;
		if (n > limit - used)
			n = limit - used;
		/* Whatever follows the header in this piece belongs to the
		 * window of a top-level element, which starts inside it. */
		if (xs->root == ROOT_NONE && n > xs->lim.max_stanza_bytes)
			n = xs->lim.max_stanza_bytes;
		if (xs->fed < 2 && !check_lead(xs, data + done, n)) {
			rc = -1;
			goto out;
		}
		if (n > MAX_PIECE)
			n = MAX_PIECE;
		xs->fed += n;
		rc = parse_result(xs, XML_Parse(xs->p, data + done, (int)n, XML_FALSE), data + done,
				  n);
		if (rc <= 0)
			goto out;
		if (xs->root == ROOT_CLOSED && !after_close_ok(xs, data + done, n)) {
			rc = -1;
			goto out;
		}
		done += n;
	}
	rc = 1;
out:
	mem_owner = NULL;
	if (rc < 0)
		return -1;
	if (rc == 0)
		return (ssize_t)xs->consumed;
	return (ssize_t)len;
}
