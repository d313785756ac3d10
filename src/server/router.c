/* The router (DESIGN §4): classifies where a stanza goes (host, bare,
 * full, self), gives modules their turn through hooks and IQ handlers,
 * and delivers what is left by the rules of RFC 6121 §8.5. Delivery to a
 * session on another worker posts the stanza to that worker: ownership
 * moves with it. route() consumes the stanza on every path. */
#include "server/server.h"

#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "xml/xml.h"

#define MAX_TARGETS 64

static void route_bare(struct stanza *st, struct session *origin, struct host *h,
		       const struct jid *bare);

/* --- error replies --- */

static void bounce(struct stanza *st, enum st_err e, const char *text)
{
	if (!stanza_make_error(st, e, text) || !st->to.len) {
		stanza_free(st);
		return;
	}
	/* The error goes back to the sender; it never bounces again. */
	route(st, NULL);
}

/* --- delivery --- */

struct posted {
	struct reg_target t;
	struct stanza *st;
	const char *kick, *kick_text; /* static strings */
	bool sole;
};

static void route_full(struct stanza *st, struct session *origin, struct host *h);

/* The chosen session went away (or is closing) before the stanza reached
 * it: route it again by the rules for an address with no session
 * (RFC 6121 §8.5.3.2 for a full JID, §8.5.2 for a bare one). The registry
 * no longer lists that session, so this cannot pick it again. */
static void reroute(struct stanza *st)
{
	struct host *h = st->to.len ? host_find(st->to.s + st->to.dom_off, st->to.dom_len) : NULL;
	if (!h) {
		stanza_free(st);
		return;
	}
	if (!jid_is_bare(&st->to))
		route_full(st, NULL, h);
	else if (st->kind == ST_IQ)
		bounce(st, SE_SERVICE_UNAVAILABLE, NULL);
	else
		route_bare(st, NULL, h, &st->to);
}

/* sole: this is the only copy. A copy of a fan-out (several resources of
 * a bare JID) whose session vanished is dropped: the others have theirs,
 * and routing it again would hand them a second one. */
static void deliver_here(struct session *s, struct stanza *st, bool sole)
{
	if (s && s->conn && (s->flags & SF_BOUND) && !(s->flags & (SF_CLOSING | SF_UNBOUND)))
		session_send(s, st);
	else if (sole || !jid_is_bare(&st->to))
		reroute(st);
	else
		stanza_free(st);
}

static void deliver_posted(void *arg)
{
	struct posted *p = arg;
	struct worker *w = p->t.w;
	struct session *s = worker_session(w, p->t.sess_id);
	if (p->kick) {
		if (s)
			session_close(s, p->kick, p->kick_text);
		free(p);
		return;
	}
	deliver_here(s, p->st, p->sole);
	free(p);
}

static void deliver_copy(const struct reg_target *t, struct stanza *st, bool sole)
{
	struct worker *cur = worker_current();
	if (t->w == cur) {
		/* Same thread: the registry entry exists only while the session
		 * does, so the pointer is good. */
		deliver_here(t->sess, st, sole);
		return;
	}
	struct posted *p = malloc(sizeof(*p));
	if (!p)
		die_oom();
	*p = (struct posted){.t = *t, .st = st, .sole = sole};
	loop_post(t->w->loop, deliver_posted, p);
}

void deliver_to(const struct reg_target *t, struct stanza *st)
{
	deliver_copy(t, st, true);
}

void kick_session(const struct reg_target *t, const char *cond, const char *text)
{
	struct posted *p = malloc(sizeof(*p));
	if (!p)
		die_oom();
	*p = (struct posted){.t = *t, .kick = cond, .kick_text = text};
	/* Always posted, even to our own worker: the caller is in the middle
	 * of binding and must not see a session vanish under it. */
	loop_post(t->w->loop, deliver_posted, p);
}

/* Delivers copies to several targets; consumes st. */
static void deliver_many(struct stanza *st, const struct reg_target *t, size_t n)
{
	for (size_t i = 0; i + 1 < n; i++)
		deliver_copy(&t[i], stanza_dup(st), false);
	if (n)
		deliver_copy(&t[n - 1], st, n == 1);
	else
		stanza_free(st);
}

/* RFC 6121 §8.5.2: message or presence to a local bare JID. */
static void route_bare(struct stanza *st, struct session *origin, struct host *h,
		       const struct jid *bare)
{
	struct reg_target all[MAX_TARGETS], pick[MAX_TARGETS];
	size_t n = registry_find_bare(bare, all, MAX_TARGETS);
	if (n > MAX_TARGETS)
		n = MAX_TARGETS;
	size_t np = 0;
	int best = -129;
	for (size_t i = 0; i < n; i++)
		if (all[i].available && all[i].priority >= 0 && all[i].priority > best)
			best = all[i].priority;
	for (size_t i = 0; i < n; i++) {
		if (!all[i].available || all[i].priority < 0)
			continue; /* RFC 6121 §4.7.2.3: negative priority gets no bare traffic */
		if (st->kind == ST_MESSAGE && st->type == ST_NORMAL && all[i].priority != best)
			continue;
		pick[np++] = all[i];
	}
	(void)origin;
	(void)h;
	if (st->kind == ST_PRESENCE) {
		/* Directed presence to a bare JID goes to every available
		 * resource (RFC 6121 §4.6.3); subscription stanzas and probes
		 * were taken by mod_roster's HP_PRESENCE hook before this. */
		deliver_many(st, pick, np);
		return;
	}
	switch (st->type) {
	case ST_GROUPCHAT:
		bounce(st, SE_SERVICE_UNAVAILABLE, NULL); /* §8.5.2.1.1 */
		return;
	case ST_ERROR:
		stanza_free(st);
		return;
	case ST_HEADLINE:
		deliver_many(st, pick, np); /* all non-negative; none: discard */
		return;
	default:
		/* normal: highest priority; chat: every non-negative resource. */
		if (np) {
			deliver_many(st, pick, np);
			return;
		}
		/* §8.5.2.2.1: no available resource: offline storage, if a
		 * module takes it; otherwise the sender learns it was not
		 * delivered. */
		{
			struct hook_ev ev = {
			    .st = st, .origin = origin, .host = h, .dest = DEST_BARE};
			if (hooks_run(h, HP_MESSAGE_OFFLINE, &ev) == HOOK_DONE)
				return;
		}
		bounce(st, SE_SERVICE_UNAVAILABLE, NULL);
		return;
	}
}

static void route_full(struct stanza *st, struct session *origin, struct host *h)
{
	struct reg_target t;
	if (registry_find_full(&st->to, &t)) {
		deliver_to(&t, st);
		return;
	}
	/* RFC 6121 §8.5.3.2: no such resource. */
	switch (st->kind) {
	case ST_MESSAGE:
		if (st->type == ST_GROUPCHAT) {
			bounce(st, SE_SERVICE_UNAVAILABLE, NULL);
		} else if (st->type == ST_HEADLINE || st->type == ST_ERROR) {
			stanza_free(st);
		} else {
			struct jid bare;
			jid_bare(&bare, &st->to, st->arena);
			route_bare(st, origin, h, &bare);
		}
		return;
	case ST_IQ:
		if (st->type == ST_GET || st->type == ST_SET)
			bounce(st, SE_SERVICE_UNAVAILABLE, NULL);
		else
			stanza_free(st);
		return;
	default:
		stanza_free(st);
		return;
	}
}

/* Presence with no 'to' from a local session: its availability
 * (RFC 6121 §4.2, §4.5). Broadcast to contacts arrives with rosters; the
 * user's own available resources get it now (§4.2.2). */
static void presence_broadcast(struct stanza *st, struct session *origin)
{
	if (!origin || (st->type != ST_AVAILABLE && st->type != ST_UNAVAILABLE)) {
		stanza_free(st);
		return;
	}
	{
		struct hook_ev out = {
		    .st = st, .origin = origin, .host = origin->host, .dest = DEST_SELF};
		hooks_run(origin->host, HP_PRESENCE_OUT, &out);
		ASSERT(out.st == st); /* changes in place only */
	}
	int prio = 0;
	struct xml_el *p = xml_child(st->el, st->el->ns, "priority");
	if (p) {
		long v = strtol(xml_text(st->arena, p), NULL, 10);
		prio = v < -128 ? -128 : v > 127 ? 127 : (int)v; /* RFC 6121 §4.7.2.3 */
	}
	bool avail = st->type == ST_AVAILABLE;
	origin->priority = prio;
	if (avail)
		origin->flags |= SF_AVAILABLE;
	else
		origin->flags &= ~SF_AVAILABLE;
	registry_set_presence(&origin->jid, origin->id, avail, prio);
	struct reg_target all[MAX_TARGETS], pick[MAX_TARGETS];
	size_t n = registry_find_bare(&origin->jid, all, MAX_TARGETS), np = 0;
	if (n > MAX_TARGETS)
		n = MAX_TARGETS;
	for (size_t i = 0; i < n; i++)
		if (all[i].available || all[i].sess_id == origin->id)
			pick[np++] = all[i];
	struct hook_ev ev = {.st = st, .origin = origin, .host = origin->host, .dest = DEST_SELF};
	hooks_run(origin->host, HP_PRESENCE_BROADCAST, &ev);
	ASSERT(ev.st == st); /* observe-only hook */
	struct jid bare;
	jid_bare(&bare, &origin->jid, st->arena);
	stanza_set_to(st, &bare);
	deliver_many(st, pick, np);
}

static void handle_iq_local(struct stanza *st, struct session *origin, struct host *h,
			    unsigned dest)
{
	if (st->type == ST_RESULT || st->type == ST_ERROR) {
		stanza_free(st); /* answers to the server itself: nobody waits yet */
		return;
	}
	struct xml_el *p = stanza_payload(st);
	struct hook_ev ev = {.st = st, .origin = origin, .host = h, .dest = dest};
	hook_fn *fn = p ? iq_handler(h, p->ns, p->name, st->type, dest) : NULL;
	if (fn && fn(&ev) == HOOK_DONE)
		return;
	if (hooks_run(h, HP_IQ, &ev) == HOOK_DONE)
		return;
	/* RFC 6120 §8.4: nobody handles it. */
	bounce(ev.st, SE_SERVICE_UNAVAILABLE, NULL);
}

void route(struct stanza *st, struct session *origin)
{
	/* Fast path: an answer to the session that asked. */
	if (origin && st->to.len && origin->jid.s && jid_eq(&st->to, &origin->jid) &&
	    st->kind == ST_IQ && (st->type == ST_RESULT || st->type == ST_ERROR)) {
		session_send(origin, st);
		return;
	}
	struct host *h;
	unsigned dest;
	if (!st->to.len) {
		if (!origin) {
			stanza_free(st);
			return;
		}
		h = origin->host;
		if (st->kind == ST_PRESENCE) {
			presence_broadcast(st, origin);
			return;
		}
		/* RFC 6120 §10.3: no 'to' means the sender's own account. */
		struct jid bare;
		jid_bare(&bare, &origin->jid, st->arena);
		stanza_set_to(st, &bare);
		dest = DEST_SELF;
	} else {
		h = host_find(st->to.s + st->to.dom_off, st->to.dom_len);
		if (!h)
			dest = 0; /* remote */
		else if (!jid_has_local(&st->to))
			dest = DEST_HOST;
		else if (!jid_is_bare(&st->to))
			dest = DEST_FULL;
		else if (origin && origin->jid.s && jid_bare_eq(&st->to, &origin->jid))
			dest = DEST_SELF;
		else
			dest = DEST_BARE;
	}
	if (!st->unfiltered) {
		struct host *fh = h ? h : origin ? origin->host : NULL;
		if (!fh && st->from.len)
			fh = host_find(st->from.s + st->from.dom_off, st->from.dom_len);
		struct hook_ev fev = {.st = st, .origin = origin, .host = fh, .dest = dest};
		if (fh && hooks_run(fh, HP_FILTER, &fev) == HOOK_DONE)
			return;
	}
	if (!h) {
		if (origin && st->kind == ST_PRESENCE) {
			/* The outbound half (RFC 6121 §3.1.2: stamped with the bare
			 * JID, roster updated) runs here, on the sender's host. */
			struct hook_ev ev = {
			    .st = st, .origin = origin, .host = origin->host, .dest = DEST_REMOTE};
			if (hooks_run(origin->host, HP_PRESENCE, &ev) == HOOK_DONE)
				return;
		}
		s2s_route(st);
		return;
	}
	struct hook_ev ev = {.st = st, .origin = origin, .host = h, .dest = dest};
	if (st->kind == ST_MESSAGE && hooks_run(h, HP_MESSAGE, &ev) == HOOK_DONE)
		return;
	if (st->kind == ST_PRESENCE && hooks_run(h, HP_PRESENCE, &ev) == HOOK_DONE)
		return;
	switch (dest) {
	case DEST_HOST:
		if (st->kind == ST_IQ)
			handle_iq_local(st, origin, h, dest);
		else
			stanza_free(
			    st); /* RFC 6120 §10.4: the server handles it itself; nothing to do */
		return;
	case DEST_FULL:
		route_full(st, origin, h);
		return;
	default:
		if (st->kind == ST_IQ) {
			handle_iq_local(st, origin, h, dest);
			return;
		}
		route_bare(st, origin, h, &st->to);
		return;
	}
}

/* --- the module API --- */

size_t resources_of(const struct jid *bare, struct resource_ref *out, size_t cap)
{
	struct reg_target t[MAX_TARGETS];
	size_t n = registry_find_bare(bare, t, MAX_TARGETS);
	for (size_t i = 0; i < n && i < cap && i < MAX_TARGETS; i++)
		out[i] = (struct resource_ref){.sess_id = t[i].sess_id,
					       .priv = {t[i].w, t[i].sess},
					       .priority = t[i].priority,
					       .available = t[i].available};
	return n;
}

struct call {
	struct worker *w;
	uint64_t sess_id;
	void (*fn)(struct session *s, void *arg);
	void *arg;
};

static void call_posted(void *p)
{
	struct call *c = p;
	struct session *s = worker_session(c->w, c->sess_id);
	if (s && (!s->conn || (s->flags & (SF_CLOSING | SF_UNBOUND))))
		s = NULL;
	c->fn(s, c->arg);
	free(c);
}

void session_call(const struct resource_ref *r, void (*fn)(struct session *s, void *arg), void *arg)
{
	struct call *c = malloc(sizeof(*c));
	if (!c)
		die_oom();
	*c = (struct call){.w = r->priv[0], .sess_id = r->sess_id, .fn = fn, .arg = arg};
	if (c->w == worker_current())
		call_posted(c);
	else
		loop_post(c->w->loop, call_posted, c);
}

struct stanza *ev_result(struct hook_ev *ev)
{
	stanza_make_result(ev->st);
	return ev->st;
}

void ev_send(struct hook_ev *ev)
{
	struct stanza *st = ev->st;
	ev->st = NULL;
	route(st, ev->origin);
}

void ev_error(struct hook_ev *ev, enum st_err cond, const char *text)
{
	struct stanza *st = ev->st;
	ev->st = NULL;
	if (!stanza_make_error(st, cond, text)) {
		stanza_free(st);
		return;
	}
	route(st, ev->origin);
}

void route_error(struct stanza *st, enum st_err cond, const char *text)
{
	if (!stanza_make_error(st, cond, text)) {
		stanza_free(st);
		return;
	}
	route(st, NULL);
}

void ev_reply_result(struct hook_ev *ev)
{
	ev_result(ev);
	ev_send(ev);
}
