#include "xmpp/stanza.h"
#include "core/arena.h"
#include "xmpp/ns.h"

#include <string.h>

static const char *const err_names[] = {
    [SE_BAD_REQUEST] = "bad-request",
    [SE_CONFLICT] = "conflict",
    [SE_FEATURE_NOT_IMPLEMENTED] = "feature-not-implemented",
    [SE_FORBIDDEN] = "forbidden",
    [SE_GONE] = "gone",
    [SE_INTERNAL_SERVER_ERROR] = "internal-server-error",
    [SE_ITEM_NOT_FOUND] = "item-not-found",
    [SE_JID_MALFORMED] = "jid-malformed",
    [SE_NOT_ACCEPTABLE] = "not-acceptable",
    [SE_NOT_ALLOWED] = "not-allowed",
    [SE_NOT_AUTHORIZED] = "not-authorized",
    [SE_POLICY_VIOLATION] = "policy-violation",
    [SE_RECIPIENT_UNAVAILABLE] = "recipient-unavailable",
    [SE_REDIRECT] = "redirect",
    [SE_REGISTRATION_REQUIRED] = "registration-required",
    [SE_REMOTE_SERVER_NOT_FOUND] = "remote-server-not-found",
    [SE_REMOTE_SERVER_TIMEOUT] = "remote-server-timeout",
    [SE_RESOURCE_CONSTRAINT] = "resource-constraint",
    [SE_SERVICE_UNAVAILABLE] = "service-unavailable",
    [SE_SUBSCRIPTION_REQUIRED] = "subscription-required",
    [SE_UNDEFINED_CONDITION] = "undefined-condition",
    [SE_UNEXPECTED_REQUEST] = "unexpected-request",
};

/* RFC 6120 §8.3.3: the error type each condition usually carries. */
static const char *const err_types[] = {
    [SE_BAD_REQUEST] = "modify",
    [SE_CONFLICT] = "cancel",
    [SE_FEATURE_NOT_IMPLEMENTED] = "cancel",
    [SE_FORBIDDEN] = "auth",
    [SE_GONE] = "cancel",
    [SE_INTERNAL_SERVER_ERROR] = "cancel",
    [SE_ITEM_NOT_FOUND] = "cancel",
    [SE_JID_MALFORMED] = "modify",
    [SE_NOT_ACCEPTABLE] = "modify",
    [SE_NOT_ALLOWED] = "cancel",
    [SE_NOT_AUTHORIZED] = "auth",
    [SE_POLICY_VIOLATION] = "modify",
    [SE_RECIPIENT_UNAVAILABLE] = "wait",
    [SE_REDIRECT] = "modify",
    [SE_REGISTRATION_REQUIRED] = "auth",
    [SE_REMOTE_SERVER_NOT_FOUND] = "cancel",
    [SE_REMOTE_SERVER_TIMEOUT] = "wait",
    [SE_RESOURCE_CONSTRAINT] = "wait",
    [SE_SERVICE_UNAVAILABLE] = "cancel",
    [SE_SUBSCRIPTION_REQUIRED] = "auth",
    [SE_UNDEFINED_CONDITION] = "cancel",
    [SE_UNEXPECTED_REQUEST] = "wait",
};

const char *st_err_name(enum st_err e)
{
	return err_names[e];
}

const char *st_kind_name(enum st_kind k)
{
	switch (k) {
	case ST_MESSAGE:
		return "message";
	case ST_PRESENCE:
		return "presence";
	case ST_IQ:
		return "iq";
	default:
		return "other";
	}
}

static enum st_type parse_type(enum st_kind kind, const char *t)
{
	switch (kind) {
	case ST_MESSAGE:
		/* RFC 6121 §5.2.2: absent or unknown is "normal". */
		if (!t || !strcmp(t, "normal"))
			return ST_NORMAL;
		if (!strcmp(t, "chat"))
			return ST_CHAT;
		if (!strcmp(t, "groupchat"))
			return ST_GROUPCHAT;
		if (!strcmp(t, "headline"))
			return ST_HEADLINE;
		if (!strcmp(t, "error"))
			return ST_ERROR;
		return ST_NORMAL;
	case ST_PRESENCE:
		if (!t)
			return ST_AVAILABLE;
		if (!strcmp(t, "unavailable"))
			return ST_UNAVAILABLE;
		if (!strcmp(t, "subscribe"))
			return ST_SUBSCRIBE;
		if (!strcmp(t, "subscribed"))
			return ST_SUBSCRIBED;
		if (!strcmp(t, "unsubscribe"))
			return ST_UNSUBSCRIBE;
		if (!strcmp(t, "unsubscribed"))
			return ST_UNSUBSCRIBED;
		if (!strcmp(t, "probe"))
			return ST_PROBE;
		if (!strcmp(t, "error"))
			return ST_ERROR;
		return ST_INVALID;
	case ST_IQ:
		if (!t)
			return ST_INVALID;
		if (!strcmp(t, "get"))
			return ST_GET;
		if (!strcmp(t, "set"))
			return ST_SET;
		if (!strcmp(t, "result"))
			return ST_RESULT;
		if (!strcmp(t, "error"))
			return ST_ERROR;
		return ST_INVALID;
	default:
		return ST_INVALID;
	}
}

struct xml_el *stanza_payload(const struct stanza *st)
{
	for (struct xml_el *c = xml_first_el(st->el); c; c = xml_next_el(c))
		if (strcmp(c->name, "error") || st->type != ST_ERROR)
			return c;
	return NULL;
}

struct stanza *stanza_wrap(struct xml_el *el, struct arena *a, int *err)
{
	struct stanza *st = arena_zalloc(a, sizeof(*st));
	st->arena = a;
	st->el = el;
	*err = SE_NONE;
	if (!strcmp(el->name, "message"))
		st->kind = ST_MESSAGE;
	else if (!strcmp(el->name, "presence"))
		st->kind = ST_PRESENCE;
	else if (!strcmp(el->name, "iq"))
		st->kind = ST_IQ;
	else
		st->kind = ST_OTHER;
	st->type = parse_type(st->kind, xml_attr(el, "type"));
	st->id = xml_attr(el, "id");
	const char *to = xml_attr(el, "to"), *from = xml_attr(el, "from");
	if (to && jid_parse(&st->to, to, strlen(to), a) < 0) {
		*err = SE_JID_MALFORMED;
		memset(&st->to, 0, sizeof(st->to));
		xml_set_attr(a, el, "to", NULL);
	}
	if (from && jid_parse(&st->from, from, strlen(from), a) < 0) {
		*err = SE_JID_MALFORMED;
		memset(&st->from, 0, sizeof(st->from));
		xml_set_attr(a, el, "from", NULL);
	}
	/* Keep the tree and the parsed form identical: write back normalized. */
	if (st->to.len)
		xml_set_attr(a, el, "to", st->to.s);
	if (st->from.len)
		xml_set_attr(a, el, "from", st->from.s);
	if (*err != SE_NONE)
		return st;
	if (st->type == ST_INVALID) {
		*err = SE_BAD_REQUEST;
		return st;
	}
	if (st->kind == ST_IQ) {
		/* RFC 6120 §8.2.3: id is required; get/set have exactly one child,
		 * a result zero or one. */
		size_t n = 0;
		for (struct xml_el *c = xml_first_el(el); c; c = xml_next_el(c))
			n++;
		if (!st->id || ((st->type == ST_GET || st->type == ST_SET) && n != 1) ||
		    (st->type == ST_RESULT && n > 1))
			*err = SE_BAD_REQUEST;
	}
	return st;
}

void stanza_free(struct stanza *st)
{
	if (st)
		arena_free(st->arena);
}

struct stanza *stanza_new(enum st_kind kind, const char *type)
{
	struct arena *a = arena_new(0);
	struct xml_el *el = xml_el_new(a, NS_CLIENT, st_kind_name(kind));
	if (type)
		xml_set_attr(a, el, "type", type);
	int err;
	struct stanza *st = stanza_wrap(el, a, &err);
	return st;
}

struct stanza *stanza_dup(const struct stanza *src)
{
	struct arena *a = arena_new(0);
	struct xml_el *el = xml_copy(a, src->el);
	int err;
	return stanza_wrap(el, a, &err);
}

void stanza_set_from(struct stanza *st, const struct jid *j)
{
	if (j && j->len) {
		st->from = *j;
		st->from.s = arena_strdup(st->arena, j->s);
		xml_set_attr(st->arena, st->el, "from", st->from.s);
	} else {
		memset(&st->from, 0, sizeof(st->from));
		xml_set_attr(st->arena, st->el, "from", NULL);
	}
}

void stanza_set_to(struct stanza *st, const struct jid *j)
{
	if (j && j->len) {
		st->to = *j;
		st->to.s = arena_strdup(st->arena, j->s);
		xml_set_attr(st->arena, st->el, "to", st->to.s);
	} else {
		memset(&st->to, 0, sizeof(st->to));
		xml_set_attr(st->arena, st->el, "to", NULL);
	}
}

static void swap_addresses(struct stanza *st)
{
	struct jid from = st->from, to = st->to;
	st->from = to;
	st->to = from;
	xml_set_attr(st->arena, st->el, "from", st->from.len ? st->from.s : NULL);
	xml_set_attr(st->arena, st->el, "to", st->to.len ? st->to.s : NULL);
}

bool stanza_make_error(struct stanza *st, enum st_err cond, const char *text)
{
	/* RFC 6120 §8.3.1: never answer an error with an error; an IQ result
	 * has nobody waiting for an answer either. */
	if (st->type == ST_ERROR || (st->kind == ST_IQ && st->type == ST_RESULT))
		return false;
	swap_addresses(st);
	xml_set_attr(st->arena, st->el, "type", "error");
	st->type = ST_ERROR;
	struct xml_el *e = xml_add_child(st->arena, st->el, st->el->ns, "error");
	xml_set_attr(st->arena, e, "type", err_types[cond]);
	xml_add_child(st->arena, e, NS_STANZA_ERRORS, err_names[cond]);
	if (text) {
		struct xml_el *t = xml_add_child(st->arena, e, NS_STANZA_ERRORS, "text");
		xml_add_text(st->arena, t, text, strlen(text));
	}
	return true;
}

void stanza_make_result(struct stanza *st)
{
	swap_addresses(st);
	xml_set_attr(st->arena, st->el, "type", "result");
	st->type = ST_RESULT;
	while (st->el->first)
		xml_remove(st->el->first);
}
