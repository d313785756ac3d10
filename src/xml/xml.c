/* Element tree operations and the serializer. The tree is built by the
 * stream parser from input that expat has already checked, but modules build
 * trees too, so the serializer trusts nothing: it validates names, escapes
 * every value and replaces what XML 1.0 cannot carry. */
#include "xml/xml.h"

#include "core/arena.h"
#include "core/buf.h"
#include "core/log.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define XML_NS_XMLNS "http://www.w3.org/2000/xmlns/"

/* What the serializer writes in place of a character XML 1.0 cannot
 * contain (a control character, U+FFFE/U+FFFF, a lone surrogate) or of a
 * byte that is not part of valid UTF-8: U+FFFD, so the damage stays
 * visible instead of silently joining the neighbouring characters. */
#define XML_REPLACEMENT "\xef\xbf\xbd"

struct xml_el *xml_el_new(struct arena *a, const char *ns, const char *name)
{
	struct xml_el *e = arena_zalloc(a, sizeof(*e));
	e->ns = arena_strdup(a, ns ? ns : "");
	e->name = arena_strdup(a, name);
	return e;
}

void xml_append(struct xml_el *parent, struct xml_el *child)
{
	ASSERT(child->parent == NULL && child->next == NULL);
	child->parent = parent;
	if (parent->last)
		parent->last->next = child;
	else
		parent->first = child;
	parent->last = child;
}

struct xml_el *xml_add_child(struct arena *a, struct xml_el *parent, const char *ns,
			     const char *name)
{
	struct xml_el *e = xml_el_new(a, ns, name);
	xml_append(parent, e);
	return e;
}

void xml_remove(struct xml_el *child)
{
	struct xml_el *p = child->parent;
	if (!p)
		return;
	struct xml_el *prev = NULL;
	for (struct xml_el *c = p->first; c && c != child; c = c->next)
		prev = c;
	if (prev)
		prev->next = child->next;
	else
		p->first = child->next;
	if (p->last == child)
		p->last = prev;
	child->parent = NULL;
	child->next = NULL;
}

/* Adjacent text is merged into one node, so a tree built piecewise
 * compares equal to the same tree after a serialize/parse round trip. */
void xml_add_text(struct arena *a, struct xml_el *parent, const char *text, size_t len)
{
	if (len == 0)
		return;
	struct xml_el *last = parent->last;
	if (last && xml_is_text(last)) {
		char *s = arena_alloc(a, last->text_len + len + 1);
		memcpy(s, last->text, last->text_len);
		memcpy(s + last->text_len, text, len);
		s[last->text_len + len] = '\0';
		last->text = s;
		last->text_len += len;
		return;
	}
	struct xml_el *t = arena_zalloc(a, sizeof(*t));
	char *s = arena_alloc(a, len + 1);
	memcpy(s, text, len);
	s[len] = '\0';
	t->text = s;
	t->text_len = len;
	xml_append(parent, t);
}

void xml_set_attr_ns(struct arena *a, struct xml_el *e, const char *ns, const char *name,
		     const char *value)
{
	if (!ns)
		ns = "";
	struct xml_attr **pp = &e->attrs;
	for (; *pp; pp = &(*pp)->next) {
		struct xml_attr *at = *pp;
		if (strcmp(at->name, name) != 0 || strcmp(at->ns, ns) != 0)
			continue;
		if (value)
			at->value = arena_strdup(a, value);
		else
			*pp = at->next;
		return;
	}
	if (!value)
		return;
	/* Appended, not prepended: attribute order survives a round trip. */
	struct xml_attr *at = arena_alloc(a, sizeof(*at));
	at->next = NULL;
	at->ns = arena_strdup(a, ns);
	at->name = arena_strdup(a, name);
	at->value = arena_strdup(a, value);
	*pp = at;
}

void xml_set_attr(struct arena *a, struct xml_el *e, const char *name, const char *value)
{
	xml_set_attr_ns(a, e, "", name, value);
}

const char *xml_attr_ns(const struct xml_el *e, const char *ns, const char *name)
{
	if (!ns)
		ns = "";
	for (const struct xml_attr *at = e->attrs; at; at = at->next)
		if (strcmp(at->name, name) == 0 && strcmp(at->ns, ns) == 0)
			return at->value;
	return NULL;
}

const char *xml_attr(const struct xml_el *e, const char *name)
{
	return xml_attr_ns(e, "", name);
}

/* name NULL matches any element name, as ns NULL matches any namespace. */
struct xml_el *xml_child(const struct xml_el *e, const char *ns, const char *name)
{
	for (struct xml_el *c = e->first; c; c = c->next) {
		if (xml_is_text(c))
			continue;
		if (ns && strcmp(c->ns, ns) != 0)
			continue;
		if (name && strcmp(c->name, name) != 0)
			continue;
		return c;
	}
	return NULL;
}

struct xml_el *xml_next_el(const struct xml_el *e)
{
	for (struct xml_el *c = e->next; c; c = c->next)
		if (!xml_is_text(c))
			return c;
	return NULL;
}

struct xml_el *xml_first_el(const struct xml_el *e)
{
	struct xml_el *c = e->first;
	if (c && xml_is_text(c))
		c = xml_next_el(c);
	return c;
}

const char *xml_text(struct arena *a, const struct xml_el *e)
{
	size_t n = 0;
	for (const struct xml_el *c = e->first; c; c = c->next)
		if (xml_is_text(c))
			n += c->text_len;
	char *s = arena_alloc(a, n + 1);
	size_t off = 0;
	for (const struct xml_el *c = e->first; c; c = c->next) {
		if (xml_is_text(c)) {
			memcpy(s + off, c->text, c->text_len);
			off += c->text_len;
		}
	}
	s[off] = '\0';
	return s;
}

struct xml_el *xml_copy(struct arena *a, const struct xml_el *e)
{
	struct xml_el *n = arena_zalloc(a, sizeof(*n));
	if (xml_is_text(e)) {
		char *s = arena_alloc(a, e->text_len + 1);
		memcpy(s, e->text, e->text_len);
		s[e->text_len] = '\0';
		n->text = s;
		n->text_len = e->text_len;
		return n;
	}
	n->ns = arena_strdup(a, e->ns);
	n->name = arena_strdup(a, e->name);
	struct xml_attr **tail = &n->attrs;
	for (const struct xml_attr *at = e->attrs; at; at = at->next) {
		struct xml_attr *c = arena_alloc(a, sizeof(*c));
		c->next = NULL;
		c->ns = arena_strdup(a, at->ns);
		c->name = arena_strdup(a, at->name);
		c->value = arena_strdup(a, at->value);
		*tail = c;
		tail = &c->next;
	}
	for (const struct xml_el *c = e->first; c; c = c->next)
		xml_append(n, xml_copy(a, c));
	return n;
}

/* Counts all child nodes, text nodes included (see struct xml_el). */
size_t xml_count_children(const struct xml_el *e)
{
	size_t n = 0;
	for (const struct xml_el *c = e->first; c; c = c->next)
		n++;
	return n;
}

/* Decodes one UTF-8 sequence at s (n bytes available). Returns its length
 * and stores the code point, or returns 0 if the bytes are not shortest-form
 * UTF-8 of a Unicode scalar value (overlong, surrogate, beyond U+10FFFF,
 * truncated). */
static size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
	uint32_t c = s[0];
	size_t len;
	uint32_t min;
	if (c < 0x80) {
		*cp = c;
		return 1;
	} else if (c >= 0xc2 && c <= 0xdf) {
		len = 2;
		c &= 0x1f;
		min = 0x80;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		c &= 0x0f;
		min = 0x800;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		c &= 0x07;
		min = 0x10000;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		c = (c << 6) | (s[i] & 0x3f);
	}
	if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
		return 0;
	*cp = c;
	return len;
}

/* XML 1.0 §2.2 Char */
static bool xml_char_ok(uint32_t c)
{
	if (c < 0x20)
		return c == 0x9 || c == 0xa || c == 0xd;
	return c <= 0xd7ff || (c >= 0xe000 && c <= 0xfffd) || (c >= 0x10000 && c <= 0x10ffff);
}

/* XML 1.0 (5th edition) §2.3 NameStartChar, without ':' (Namespaces in
 * XML §3 NCName). */
static bool name_start_ok(uint32_t c)
{
	if (c < 0x80)
		return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
	return (c >= 0xc0 && c <= 0xd6) || (c >= 0xd8 && c <= 0xf6) || (c >= 0xf8 && c <= 0x2ff) ||
	       (c >= 0x370 && c <= 0x37d) || (c >= 0x37f && c <= 0x1fff) ||
	       (c >= 0x200c && c <= 0x200d) || (c >= 0x2070 && c <= 0x218f) ||
	       (c >= 0x2c00 && c <= 0x2fef) || (c >= 0x3001 && c <= 0xd7ff) ||
	       (c >= 0xf900 && c <= 0xfdcf) || (c >= 0xfdf0 && c <= 0xfffd) ||
	       (c >= 0x10000 && c <= 0xeffff);
}

static bool name_char_ok(uint32_t c)
{
	return name_start_ok(c) || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == 0xb7 ||
	       (c >= 0x300 && c <= 0x36f) || (c >= 0x203f && c <= 0x2040);
}

static bool ncname_ok(const char *name)
{
	const unsigned char *s = (const unsigned char *)name;
	size_t n = strlen(name);
	if (n == 0)
		return false;
	for (size_t i = 0; i < n;) {
		uint32_t c;
		size_t l = utf8_decode(s + i, n - i, &c);
		if (l == 0 || !(i == 0 ? name_start_ok(c) : name_char_ok(c)))
			return false;
		i += l;
	}
	return true;
}

/* Bytes xml_escape() must look at: bit 0 in text, bit 1 in attribute
 * values. Everything else (most of any stanza) is copied in runs. */
#define ESC_TEXT 1u
#define ESC_ATTR 2u
/* Ranges first, then the exceptions within them. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Woverride-init"
static const unsigned char esc_class[256] = {
    /* C0 controls: \t and \n are plain in text; \r never is */
    [0 ... 0x1f] = ESC_TEXT | ESC_ATTR,
    ['\t'] = ESC_ATTR,
    ['\n'] = ESC_ATTR,
    ['&'] = ESC_TEXT | ESC_ATTR,
    ['<'] = ESC_TEXT | ESC_ATTR,
    ['>'] = ESC_TEXT | ESC_ATTR,
    ['"'] = ESC_ATTR,
    ['\''] = ESC_ATTR,
    [0x80 ... 0xff] = ESC_TEXT | ESC_ATTR, /* checked as UTF-8 */
};
#pragma GCC diagnostic pop

/* Escapes s for text (attr false) or for a single- or double-quoted
 * attribute value (attr true), replacing what XML 1.0 cannot carry with
 * U+FFFD. CR is written as a character reference so a parser's line-end
 * normalization (XML 1.0 §2.11) does not turn it into LF; in attribute
 * values TAB and LF are too, or attribute-value normalization (§3.3.3)
 * would turn them into spaces. */
void xml_escape(struct buf *out, const char *str, size_t n, bool attr)
{
	const unsigned char *s = (const unsigned char *)str;
	const unsigned char mask = attr ? ESC_ATTR : ESC_TEXT;
	size_t start = 0, i = 0;
	buf_reserve(out, n);
	while (i < n) {
		/* The common case: a run of bytes that need nothing. */
		while (i < n && !(esc_class[s[i]] & mask))
			i++;
		if (i == n)
			break;
		const char *rep = NULL;
		size_t len = 1;
		unsigned char ch = s[i];
		if (ch >= 0x80) {
			uint32_t c;
			len = utf8_decode(s + i, n - i, &c);
			if (len == 0) {
				len = 1;
				rep = XML_REPLACEMENT;
			} else if (!xml_char_ok(c)) {
				rep = XML_REPLACEMENT;
			}
		} else {
			switch (ch) {
			case '&':
				rep = "&amp;";
				break;
			case '<':
				rep = "&lt;";
				break;
			case '>':
				rep = "&gt;";
				break;
			case '"':
				rep = "&quot;";
				break;
			case '\'':
				rep = "&apos;";
				break;
			case '\r':
				rep = "&#13;";
				break;
			case '\n':
				rep = "&#10;";
				break;
			case '\t':
				rep = "&#9;";
				break;
			default: /* other C0 controls are not XML characters */
				rep = XML_REPLACEMENT;
				break;
			}
		}
		if (rep) {
			buf_add(out, s + start, i - start);
			buf_adds(out, rep);
			start = i + len;
		}
		i += len;
	}
	buf_add(out, s + start, n - start);
}

static void put_attr(struct buf *out, const char *prefix, const char *name, const char *value)
{
	buf_addc(out, ' ');
	if (prefix) {
		buf_adds(out, prefix);
		buf_addc(out, ':');
	}
	buf_adds(out, name);
	buf_adds(out, "='");
	xml_escape(out, value, strlen(value), true);
	buf_addc(out, '\'');
}

/* Attributes the serializer cannot write as they are: a name that is not
 * an NCName, a binding of the reserved xmlns namespace, or an unqualified
 * "xmlns" that would clash with the namespace declarations we write. Such
 * an attribute can only come from a module's bug; it is dropped. */
static bool attr_writable(const struct xml_attr *at)
{
	if (!ncname_ok(at->name) || (at->ns[0] && strcmp(at->ns, XML_NS_XMLNS) == 0))
		return false;
	return at->ns[0] != '\0' || strcmp(at->name, "xmlns") != 0;
}

static bool attr_prefixed(const struct xml_attr *at)
{
	return at->ns[0] != '\0' && strcmp(at->ns, XML_NS_XML) != 0;
}

/* The first writable attribute of e in at's namespace: the one whose
 * prefix is declared. */
static const struct xml_attr *attr_first_of_ns(const struct xml_el *e, const struct xml_attr *at)
{
	for (const struct xml_attr *p = e->attrs; p != at; p = p->next)
		if (attr_writable(p) && strcmp(p->ns, at->ns) == 0)
			return p;
	return at;
}

/* Generated prefixes are ns0, ns1, ... in order of first use on e. */
static unsigned attr_prefix_index(const struct xml_el *e, const struct xml_attr *at)
{
	const struct xml_attr *first = attr_first_of_ns(e, at);
	unsigned idx = 0;
	for (const struct xml_attr *p = e->attrs; p != first; p = p->next)
		if (attr_writable(p) && attr_prefixed(p) && attr_first_of_ns(e, p) == p)
			idx++;
	return idx;
}

static void serialize_el(const struct xml_el *e, const char *parent_ns, struct buf *out)
{
	if (xml_is_text(e)) {
		xml_escape(out, e->text, e->text_len, false);
		return;
	}
	/* An element that cannot be written (a name that is not an NCName, or
	 * a namespace that Namespaces in XML §3 forbids as a default) is
	 * dropped with its subtree: it can only come from a module's bug. */
	if (!ncname_ok(e->name) || (e->ns != parent_ns && (strcmp(e->ns, XML_NS_XML) == 0 ||
							   strcmp(e->ns, XML_NS_XMLNS) == 0)))
		return;
	buf_addc(out, '<');
	buf_adds(out, e->name);
	if (e->ns != parent_ns && strcmp(e->ns, parent_ns) != 0)
		put_attr(out, NULL, "xmlns", e->ns);
	/* Namespaces in XML §3: a qualified attribute needs a prefix; the
	 * default namespace does not apply to attributes. Each element declares
	 * the prefixes of its own attributes, so they never depend on context. */
	char prefix[16];
	for (const struct xml_attr *at = e->attrs; at; at = at->next) {
		if (!attr_writable(at) || !attr_prefixed(at))
			continue;
		if (attr_first_of_ns(e, at) != at)
			continue;
		snprintf(prefix, sizeof(prefix), "ns%u", attr_prefix_index(e, at));
		put_attr(out, "xmlns", prefix, at->ns);
	}
	for (const struct xml_attr *at = e->attrs; at; at = at->next) {
		if (!attr_writable(at))
			continue;
		if (!at->ns[0]) {
			put_attr(out, NULL, at->name, at->value);
		} else if (!attr_prefixed(at)) {
			put_attr(out, "xml", at->name, at->value);
		} else {
			snprintf(prefix, sizeof(prefix), "ns%u", attr_prefix_index(e, at));
			put_attr(out, prefix, at->name, at->value);
		}
	}
	if (!e->first) {
		buf_adds(out, "/>");
		return;
	}
	buf_addc(out, '>');
	for (const struct xml_el *c = e->first; c; c = c->next)
		serialize_el(c, e->ns, out);
	buf_adds(out, "</");
	buf_adds(out, e->name);
	buf_addc(out, '>');
}

void xml_serialize(const struct xml_el *e, const char *parent_ns, struct buf *out)
{
	serialize_el(e, parent_ns ? parent_ns : "", out);
}
