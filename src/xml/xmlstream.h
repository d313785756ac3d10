/* Sans-I/O XML stream parser for XMPP (RFC 6120 §4, §11): takes bytes,
 * emits the stream header, complete top-level elements (stanzas and
 * nonzas) as trees in their own arena, and the stream close. Built on
 * expat with namespace processing. Enforces restricted XML (RFC 6120
 * §11.1: no DTD, comments, processing instructions, entity declarations or
 * references other than the five predefined ones) and the limits below, so
 * every transport (TCP, TLS, WebSocket, BOSH, s2s, components) shares one
 * front end. Memory is bounded: expat runs on a counting allocator and the
 * bytes of an incomplete top-level element are counted as they are fed. */
#ifndef PARLEY_XMLSTREAM_H
#define PARLEY_XMLSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct arena;
struct xml_el;

enum xs_error {
	XS_OK = 0,
	XS_ERR_BAD_FORMAT,     /* not well-formed XML -> <bad-format/> */
	XS_ERR_RESTRICTED_XML, /* DTD, comment, PI, entity -> <restricted-xml/> */
	XS_ERR_POLICY,	       /* a limit was exceeded -> <policy-violation/> */
	XS_ERR_ENCODING,   /* encoding declaration other than UTF-8 -> <unsupported-encoding/> */
	XS_ERR_INVALID_NS, /* root is not {http://etherx.jabber.org/streams}stream ->
			      <invalid-namespace/> */
	XS_ERR_MEMORY,	   /* allocator cap reached -> <resource-constraint/> */
};

struct xs_limits {
	size_t max_stanza_bytes; /* raw bytes of one top-level element, including children */
	unsigned max_depth;	 /* element depth inside a stanza (stanza itself is depth 1) */
	unsigned max_attrs;	 /* attributes per element */
	size_t max_attr_len;	 /* bytes of one attribute value */
	size_t max_text_len;	 /* bytes of text in one element */
	unsigned max_children;	 /* child nodes per element */
	size_t max_header_bytes; /* bytes of the stream header (root start tag) */
};

struct xs_callbacks {
	/* Root element opened. hdr is an element with the root's attributes and
	 * no children (attribute values unescaped; xml:lang has ns XML_NS_XML).
	 * default_ns is the default namespace declared on the root ("" if none).
	 * hdr is valid only during the call. */
	void (*open)(void *ud, const struct xml_el *hdr, const char *default_ns);
	/* A complete top-level element. Ownership of arena (which holds el)
	 * passes to the callee. */
	void (*element)(void *ud, struct xml_el *el, struct arena *arena);
	/* </stream:stream> received. */
	void (*close)(void *ud);
};

struct xmlstream;

struct xmlstream *xmlstream_new(const struct xs_callbacks *cb, void *ud,
				const struct xs_limits *limits);
void xmlstream_free(struct xmlstream *xs); /* NULL is a no-op */
/* Limits may change between stanzas (e.g. larger after authentication). */
void xmlstream_set_limits(struct xmlstream *xs, const struct xs_limits *limits);
/* Feeds bytes. Returns the number of bytes consumed (== len unless a
 * callback called xmlstream_pause()), or -1 on error: then
 * xmlstream_error() tells which, and the stream must be closed. After an
 * error every further feed returns -1. */
ssize_t xmlstream_feed(struct xmlstream *xs, const char *data, size_t len);
/* From inside a callback: stop after the current element; feed returns the
 * bytes consumed up to and including its end. Used for stream restarts
 * (STARTTLS: the caller discards the rest; SASL success: the caller resets
 * and feeds the rest to the new stream). */
void xmlstream_pause(struct xmlstream *xs);
/* Starts a new stream (RFC 6120 §4.3.3 restart): forgets the old root and
 * any partial input. */
void xmlstream_reset(struct xmlstream *xs);
/* Frees expat's parser (about 12 KiB) of an idle stream: between
 * top-level elements with no partial input only. The next feed makes a
 * new one, given the root's start tag again, so nothing the peer sees
 * changes. Returns whether the stream is parked (false: try later). */
bool xmlstream_park(struct xmlstream *xs);
bool xmlstream_parked(const struct xmlstream *xs);
enum xs_error xmlstream_error(const struct xmlstream *xs);
/* The RFC 6120 §4.9.3 stream error condition for an error, for every
 * transport that closes a stream on it. */
const char *xmlstream_condition(enum xs_error e);
const char *xmlstream_error_text(const struct xmlstream *xs); /* detail for logs */
/* Bytes expat holds now, the most it ever held, and the cap (derived from
 * the limits); for metrics and tests. Any pointer may be NULL. */
void xmlstream_mem_stats(const struct xmlstream *xs, size_t *used, size_t *peak, size_t *cap);

#endif
