/* Namespace-resolved XML element tree, allocated in an arena, and its
 * serializer. Text nodes are elements whose name is NULL. Names and
 * namespaces are never NULL on elements (ns "" means no namespace). */
#ifndef PARLEY_XML_H
#define PARLEY_XML_H

#include <stdbool.h>
#include <stddef.h>

struct arena;
struct buf;

#define XML_NS_XML "http://www.w3.org/XML/1998/namespace"

struct xml_attr {
	struct xml_attr *next;
	const char *ns;	   /* "" for unqualified attributes (the usual case) */
	const char *name;  /* local name */
	const char *value; /* NUL-terminated, unescaped */
};

struct xml_el {
	struct xml_el *parent;	     /* borrowed */
	struct xml_el *next;	     /* next sibling */
	struct xml_el *first, *last; /* children: elements and text nodes, in order */
	const char *ns;		     /* element namespace; NULL for a text node */
	const char *name;	     /* local name; NULL for a text node */
	struct xml_attr *attrs;
	const char *text; /* text nodes only: unescaped, NUL-terminated */
	size_t text_len;
};

static inline bool xml_is_text(const struct xml_el *e)
{
	return e->name == NULL;
}

struct xml_el *xml_el_new(struct arena *a, const char *ns, const char *name);
/* Appends a new child element and returns it. */
struct xml_el *xml_add_child(struct arena *a, struct xml_el *parent, const char *ns,
			     const char *name);
void xml_append(struct xml_el *parent, struct xml_el *child); /* child must be detached */
void xml_remove(struct xml_el *child);			      /* detach from its parent */
void xml_add_text(struct arena *a, struct xml_el *parent, const char *text, size_t len);
/* Sets (replaces) an unqualified attribute; value NULL removes it. Copies strings. */
void xml_set_attr(struct arena *a, struct xml_el *e, const char *name, const char *value);
void xml_set_attr_ns(struct arena *a, struct xml_el *e, const char *ns, const char *name,
		     const char *value);
const char *xml_attr(const struct xml_el *e, const char *name); /* unqualified */
const char *xml_attr_ns(const struct xml_el *e, const char *ns, const char *name);
/* First child element with this ns and name; ns NULL matches any namespace. */
struct xml_el *xml_child(const struct xml_el *e, const char *ns, const char *name);
struct xml_el *xml_first_el(const struct xml_el *e); /* first child element, skipping text */
struct xml_el *xml_next_el(const struct xml_el *e);  /* next sibling element */
/* Concatenated text of the direct text children (arena copy; "" if none). */
const char *xml_text(struct arena *a, const struct xml_el *e);
/* Deep copy into another arena. */
struct xml_el *xml_copy(struct arena *a, const struct xml_el *e);
size_t xml_count_children(const struct xml_el *e);

/* Appends s escaped for XML text (attr false) or an attribute value (attr
 * true); what XML 1.0 cannot carry becomes U+FFFD. */
void xml_escape(struct buf *out, const char *s, size_t n, bool attr);

/* Serializes e. parent_ns is the default namespace in scope where e is
 * written (e.g. "jabber:client" inside a client stream): an xmlns
 * declaration is emitted only where an element's namespace differs from
 * its parent's. Attributes in XML_NS_XML are written with the xml: prefix;
 * other qualified attributes get a generated prefix declared on the
 * element. Output is always well-formed, escaped UTF-8. */
void xml_serialize(const struct xml_el *e, const char *parent_ns, struct buf *out);

#endif
