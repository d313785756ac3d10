/* Stanzas (RFC 6120 §8): an element tree in its own arena with the routing
 * attributes parsed once. A stanza has one owner; functions that pass it
 * on (route, session_send, reply helpers) consume it on every path. */
#ifndef PARLEY_STANZA_H
#define PARLEY_STANZA_H

#include <stdbool.h>

#include "xml/xml.h"
#include "xmpp/jid.h"

struct arena;

enum st_kind { ST_MESSAGE, ST_PRESENCE, ST_IQ, ST_OTHER };

enum st_type {
	/* message (RFC 6121 §5.2.2) */
	ST_NORMAL,
	ST_CHAT,
	ST_GROUPCHAT,
	ST_HEADLINE,
	/* presence (RFC 6121 §4.7.1) */
	ST_AVAILABLE,
	ST_UNAVAILABLE,
	ST_SUBSCRIBE,
	ST_SUBSCRIBED,
	ST_UNSUBSCRIBE,
	ST_UNSUBSCRIBED,
	ST_PROBE,
	/* iq (RFC 6120 §8.2.3) */
	ST_GET,
	ST_SET,
	ST_RESULT,
	/* all kinds */
	ST_ERROR,
	ST_INVALID,
};

struct stanza {
	struct arena *arena; /* owned: holds el, strings and jids */
	struct xml_el *el;
	enum st_kind kind;
	enum st_type type;
	struct jid from, to; /* len 0: absent */
	const char *id;	     /* NULL: absent */
	/* Set by a module on a stanza it emits that must pass the router's
	 * HP_FILTER hooks (e.g. the unavailable presence a block itself
	 * sends to the blocked contact). Not copied by stanza_dup. */
	bool unfiltered;
};

/* Stanza error conditions (RFC 6120 §8.3.3) with their default types. */
enum st_err {
	SE_BAD_REQUEST,
	SE_CONFLICT,
	SE_FEATURE_NOT_IMPLEMENTED,
	SE_FORBIDDEN,
	SE_GONE,
	SE_INTERNAL_SERVER_ERROR,
	SE_ITEM_NOT_FOUND,
	SE_JID_MALFORMED,
	SE_NOT_ACCEPTABLE,
	SE_NOT_ALLOWED,
	SE_NOT_AUTHORIZED,
	SE_POLICY_VIOLATION,
	SE_RECIPIENT_UNAVAILABLE,
	SE_REDIRECT,
	SE_REGISTRATION_REQUIRED,
	SE_REMOTE_SERVER_NOT_FOUND,
	SE_REMOTE_SERVER_TIMEOUT,
	SE_RESOURCE_CONSTRAINT,
	SE_SERVICE_UNAVAILABLE,
	SE_SUBSCRIPTION_REQUIRED,
	SE_UNDEFINED_CONDITION,
	SE_UNEXPECTED_REQUEST,
};

#define SE_NONE (-1)

/* Wraps a parsed top-level element; takes ownership of arena, and the
 * stanza itself lives in it. Classifies kind and type, parses from/to.
 * *err is SE_NONE, or the stanza error to answer (SE_JID_MALFORMED for a
 * bad to/from, SE_BAD_REQUEST for a bad type, an IQ without id or a get/set
 * without exactly one child). On error the stanza is still filled in as
 * far as possible so the caller can reply. */
struct stanza *stanza_wrap(struct xml_el *el, struct arena *arena, int *err);
void stanza_free(struct stanza *st); /* frees the arena; NULL-safe */
/* A new stanza with an empty element of this kind. */
struct stanza *stanza_new(enum st_kind kind, const char *type);
struct stanza *stanza_dup(const struct stanza *st);
/* Sets from/to (NULL removes), updating both the jid fields and the tree. */
void stanza_set_from(struct stanza *st, const struct jid *j);
void stanza_set_to(struct stanza *st, const struct jid *j);
/* The IQ's one payload element, or NULL. */
struct xml_el *stanza_payload(const struct stanza *st);

/* Turns st (in place) into its error reply: swaps from/to, type="error",
 * keeps the payload for IQs' context, appends the <error/>. Returns false
 * (and leaves st alone) if st must not be answered (it is an error, or an
 * IQ result). text may be NULL. */
bool stanza_make_error(struct stanza *st, enum st_err cond, const char *text);
/* Turns an IQ get/set into its empty result, in place. */
void stanza_make_result(struct stanza *st);
const char *st_err_name(enum st_err e);
const char *st_kind_name(enum st_kind k);

#endif
