/* RFC 6121: the roster (§2), presence subscriptions (§3) and presence
 * (§4) for local accounts.
 *
 * Shape. The roster and the subscription state live in the store
 * (storage/roster_store.h); every change is one asynchronous job whose
 * transition function (the tables of RFC 6121 Appendix A) runs inside the
 * write, so two stanzas about one contact can never interleave. The
 * effects (roster pushes, routing, presence) happen on the worker when the
 * job completes.
 *
 * Subscription stanzas are handled in two halves, as the RFC describes
 * them: the outbound half runs on the sender's server (HP_PRESENCE with
 * ev->origin set: a local client sent it) and routes the stanza on with
 * route(st, NULL); the inbound half runs on the recipient's server
 * (HP_PRESENCE with ev->origin NULL). Between two local users the stanza
 * simply passes through both; a server-to-server stream will feed remote
 * stanzas to the inbound half through the same hook.
 *
 * Per-session state: SLOT_ROSTER holds a struct rsess (interested flag,
 * directed presence targets); SLOT_PRESENCE holds the last broadcast
 * available presence (a struct stanza), which answers probes. */
#include "server/module.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "server/config.h"
#include "storage/roster_store.h"

#define NS_ROSTER      "jabber:iq:roster"
#define NS_ROSTERVER   "urn:xmpp:features:rosterver"
#define NS_PREAPPROVAL "urn:xmpp:features:pre-approval"

/* Limits of a roster item (RFC 6121 §2.3.3: "a server-configured limit"). */
#define ROSTER_NAME_MAX	  1023 /* bytes of the 'name' attribute */
#define ROSTER_GROUP_MAX  1023 /* bytes of one group name */
#define ROSTER_GROUPS_MAX 64   /* groups per item */
/* Directed presence targets remembered per session (RFC 6121 §4.6). */
#define DIRECTED_MAX 256
/* Resources of one account considered for a fan-out (the registry's own
 * bound on resources per account is lower). */
#define FANOUT_MAX 64

/* At shutdown the core runs what is still posted on the main thread
 * standing in for each worker; once the store is closed, worker_origin()
 * is NULL and nothing may be stored or routed any more. Hooks and
 * completions check this before they start work. */
static bool can_work(void)
{
	return worker_origin() != NULL;
}

/* --- per-session state --- */

struct rsess {
	struct session *s; /* borrowed; NULL once the session is freed */
	unsigned refs;	   /* 1 for the session + 1 per job that needs it */
	bool interested;   /* requested the roster (RFC 6121 §2.2) */
	char **directed;   /* owned: JIDs we sent directed available presence to */
	size_t n_directed;
};

static struct rsess *rsess_of(struct session *s)
{
	struct rsess **slot = (struct rsess **)session_slot(s, SLOT_ROSTER);
	if (!*slot) {
		struct rsess *r = calloc(1, sizeof(*r));
		if (!r)
			die_oom();
		r->s = s;
		r->refs = 1;
		*slot = r;
	}
	return *slot;
}

static void directed_free(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

static void rsess_unref(struct rsess *r)
{
	if (r && --r->refs == 0) {
		directed_free(r->directed, r->n_directed);
		free(r);
	}
}

/* --- small helpers --- */

static char *bare_dup(const struct jid *j)
{
	char *s = strndup(j->s, jid_bare_len(j));
	if (!s)
		die_oom();
	return s;
}

static bool jid_in(struct jid *out, const char *s, struct arena *a)
{
	return jid_parse(out, s, strlen(s), a) == 0;
}

/* A presence stanza of the given type (NULL: available) from/to
 * normalized JID strings; NULL if one does not parse. */
static struct stanza *presence_new(const char *type, const char *from, const char *to)
{
	struct stanza *st = stanza_new(ST_PRESENCE, type);
	struct jid f, t;
	if (!jid_in(&f, from, st->arena) || !jid_in(&t, to, st->arena)) {
		stanza_free(st);
		return NULL;
	}
	stanza_set_from(st, &f);
	stanza_set_to(st, &t);
	return st;
}

static void send_presence(const char *type, const char *from, const char *to)
{
	struct stanza *st = presence_new(type, from, to);
	if (st)
		route(st, NULL);
}

/* The available resources of a bare JID, as the registry knows them. */
static size_t available_of(const char *bare, struct resource_ref *out)
{
	struct jid j;
	if (jid_parse(&j, bare, strlen(bare), NULL) < 0)
		return 0;
	struct resource_ref all[FANOUT_MAX];
	size_t n = resources_of(&j, all, FANOUT_MAX), k = 0;
	jid_free(&j);
	if (n > FANOUT_MAX)
		n = FANOUT_MAX;
	for (size_t i = 0; i < n; i++)
		if (all[i].available)
			out[k++] = all[i];
	return k;
}

/* --- roster pushes (RFC 6121 §2.1.6) --- */

static void item_to_xml(struct stanza *st, struct xml_el *q, const struct roster_item *it)
{
	struct arena *a = st->arena;
	struct xml_el *e = xml_add_child(a, q, NS_ROSTER, "item");
	xml_set_attr(a, e, "jid", it->jid);
	if (it->removed) {
		xml_set_attr(a, e, "subscription", "remove");
		return;
	}
	static const char *const subs[4] = {"none", "to", "from", "both"};
	if (it->name)
		xml_set_attr(a, e, "name", it->name);
	xml_set_attr(a, e, "subscription", subs[it->sub & 3]);
	if (it->ask)
		xml_set_attr(a, e, "ask", "subscribe"); /* §2.1.2.2 */
	if (it->approved)
		xml_set_attr(a, e, "approved", "true"); /* §2.1.2.1 */
	for (size_t i = 0; i < it->n_groups; i++) {
		struct xml_el *g = xml_add_child(a, e, NS_ROSTER, "group");
		xml_add_text(a, g, it->groups[i], strlen(it->groups[i]));
	}
}

static struct stanza *push_new(const struct roster_item *it, const char *ver)
{
	static _Atomic unsigned long long push_seq;
	char id[32];
	snprintf(id, sizeof(id), "push%llu", ++push_seq);
	struct stanza *st = stanza_new(ST_IQ, "set");
	xml_set_attr(st->arena, st->el, "id", id);
	st->id = xml_attr(st->el, "id");
	struct xml_el *q = xml_add_child(st->arena, st->el, NS_ROSTER, "query");
	if (ver)
		xml_set_attr(st->arena, q, "ver", ver);
	item_to_xml(st, q, it);
	return st;
}

static void push_deliver(struct session *s, void *arg)
{
	struct stanza *st = arg;
	struct rsess *r = s ? *(struct rsess **)session_slot(s, SLOT_ROSTER) : NULL;
	if (!r || !r->interested) {
		stanza_free(st);
		return;
	}
	stanza_set_to(st, session_jid(s));
	session_deliver(s, st);
}

/* Pushes an item to every interested resource of user (RFC 6121 §2.1.6),
 * whichever worker it lives on. */
static void push_to_user(const char *user_bare, const struct roster_item *it, const char *ver)
{
	struct jid j;
	if (jid_parse(&j, user_bare, strlen(user_bare), NULL) < 0)
		return;
	struct resource_ref refs[FANOUT_MAX];
	size_t n = resources_of(&j, refs, FANOUT_MAX);
	jid_free(&j);
	if (n > FANOUT_MAX)
		n = FANOUT_MAX;
	if (!n)
		return;
	struct stanza *st = push_new(it, ver);
	for (size_t i = 0; i + 1 < n; i++)
		session_call(&refs[i], push_deliver, stanza_dup(st));
	session_call(&refs[n - 1], push_deliver, st);
}

/* --- presence of a user's resources, sent to someone --- */

struct pres_call {
	bool unavailable; /* send unavailable instead of the last presence */
	char to[];
};

/* On the session's worker: sends its last presence (or an unavailable
 * one) from its full JID to the target. */
static void presence_from_session(struct session *s, void *arg)
{
	struct pres_call *p = arg;
	struct stanza **last = s ? (struct stanza **)session_slot(s, SLOT_PRESENCE) : NULL;
	if (s && can_work() && last && *last) {
		struct stanza *st =
		    p->unavailable ? stanza_new(ST_PRESENCE, "unavailable") : stanza_dup(*last);
		struct jid to;
		if (jid_in(&to, p->to, st->arena)) {
			stanza_set_from(st, session_jid(s));
			stanza_set_to(st, &to);
			route(st, NULL);
		} else {
			stanza_free(st);
		}
	}
	free(p);
}

/* For each available resource of user_bare (except skip, if not 0),
 * sends its presence to 'to'; returns how many resources there were. */
static size_t presence_of_user(const char *user_bare, const char *to, bool unavailable,
			       unsigned long long skip)
{
	struct resource_ref refs[FANOUT_MAX];
	size_t n = available_of(user_bare, refs), k = 0;
	for (size_t i = 0; i < n; i++) {
		if (refs[i].sess_id == skip)
			continue;
		size_t len = strlen(to) + 1;
		struct pres_call *p = malloc(sizeof(*p) + len);
		if (!p)
			die_oom();
		p->unavailable = unavailable;
		memcpy(p->to, to, len);
		session_call(&refs[i], presence_from_session, p);
		k++;
	}
	return k;
}

/* Sending presence must follow the subscription stanza it belongs to,
 * whose inbound half is itself a job: a barrier keeps the order. */
struct pres_later {
	bool unavailable;
	char *user; /* owned: whose resources */
	char *to;   /* owned */
};

static void presence_later_run(void *ud)
{
	struct pres_later *p = ud;
	if (can_work())
		presence_of_user(p->user, p->to, p->unavailable, 0);
	free(p->user);
	free(p->to);
	free(p);
}

static void presence_later(const char *user, const char *to, bool unavailable)
{
	struct pres_later *p = malloc(sizeof(*p));
	if (!p)
		die_oom();
	p->unavailable = unavailable;
	p->user = strdup(user);
	p->to = strdup(to);
	if (!p->user || !p->to)
		die_oom();
	roster_barrier(server_store(), worker_origin(), presence_later_run, p);
}

/* --- subscription state machines (RFC 6121 §3, Appendix A) ---
 * Pure functions of one contact's state, run inside the store's write.
 * They return what the completion must do. */

#define F_ROUTE		   0x01u  /* outbound: route the stanza to the contact */
#define F_DELIVER	   0x02u  /* inbound: deliver it to the user's available resources */
#define F_AUTO_SUBSCRIBED  0x04u  /* inbound: answer 'subscribed' for the user */
#define F_UNSUBSCRIBED	   0x08u  /* answer 'unsubscribed' (no such user / not subscribed) */
#define F_SEND_AVAILABLE   0x10u  /* the contact may now see the user: send presence */
#define F_SEND_UNAVAILABLE 0x20u  /* the contact may no longer: send unavailable */
#define F_NOT_FOUND	   0x40u  /* roster remove of an item that is not there */
#define F_SEND_UNSUBSCRIBE 0x80u  /* roster remove: cancel our subscription */
#define F_SUBSCRIBED	   0x100u /* probe: the prober may see the user's presence */

/* §3.1.2, A.2.1: the user asks for the contact's presence. The request is
 * always routed: the contact's server answers duplicates itself (§3.1.3),
 * and a retry is how a client recovers a lost request. */
static unsigned out_subscribe(struct roster_state *s, const void *arg)
{
	if (!s->in_roster) {
		s->in_roster = true; /* §3.1.2: the item is created, with ask */
		s->sub = 0;
	}
	if (!(s->sub & ROSTER_SUB_TO))
		s->ask = true;
	return F_ROUTE;
}

/* §3.3.2, A.2.3: the user gives up the contact's presence. Routed even
 * without a local change, so that the contact's side can fix its state. */
static unsigned out_unsubscribe(struct roster_state *s, const void *arg)
{
	if (s->in_roster) {
		s->sub &= ~ROSTER_SUB_TO;
		s->ask = false;
	}
	return F_ROUTE;
}

/* §3.1.5, A.2.2: the user approves the contact's request; with no request
 * pending it is a pre-approval (§3.4). */
static unsigned out_subscribed(struct roster_state *s, const void *arg)
{
	if (s->sub & ROSTER_SUB_FROM) {
		s->pending_in = false;
		return 0; /* nothing changes and nothing is routed */
	}
	if (s->pending_in) {
		s->pending_in = false;
		s->in_roster = true; /* §3.1.5: the contact's item gains 'from' */
		s->sub |= ROSTER_SUB_FROM;
		s->approved = false;
		return F_ROUTE | F_SEND_AVAILABLE;
	}
	/* §3.4.2: not routed; the item (created if need be) is marked. */
	s->in_roster = true;
	s->approved = true;
	return 0;
}

/* §3.2.2, A.2.4: the user denies a request or cancels the contact's
 * subscription; it also cancels a pre-approval (§3.4). */
static unsigned out_unsubscribed(struct roster_state *s, const void *arg)
{
	bool had_from = s->sub & ROSTER_SUB_FROM;
	bool route = had_from || s->pending_in;
	s->pending_in = false;
	s->approved = false;
	s->sub &= ~ROSTER_SUB_FROM;
	return (route ? F_ROUTE : 0) | (had_from ? F_SEND_UNAVAILABLE : 0);
}

/* §3.1.3, A.3.1: someone asks for the user's presence. */
static unsigned in_subscribe(struct roster_state *s, const void *arg)
{
	if (!s->user_exists)
		return F_UNSUBSCRIBED; /* §3.1.3: no such user */
	if (s->sub & ROSTER_SUB_FROM)
		return F_AUTO_SUBSCRIBED; /* already approved: answer for the user */
	if (s->in_roster && s->approved) {
		/* §3.4.1: pre-approved: approved without asking the user. */
		s->sub |= ROSTER_SUB_FROM;
		s->approved = false;
		s->pending_in = false;
		return F_AUTO_SUBSCRIBED | F_SEND_AVAILABLE;
	}
	if (s->pending_in)
		return 0; /* a duplicate: the user already has it (or gets it at login) */
	s->pending_in = true;
	s->pending_status = arg;
	return F_DELIVER;
}

/* §3.1.6, A.3.2: the contact approved the user's request. */
static unsigned in_subscribed(struct roster_state *s, const void *arg)
{
	if (!s->in_roster || !s->ask || (s->sub & ROSTER_SUB_TO))
		return 0; /* not asked for, or already had: ignored */
	s->ask = false;
	s->sub |= ROSTER_SUB_TO;
	return F_DELIVER;
}

/* §3.3.3, A.3.3: the contact gives up the user's presence. */
static unsigned in_unsubscribe(struct roster_state *s, const void *arg)
{
	bool had_from = s->sub & ROSTER_SUB_FROM;
	if (!had_from && !s->pending_in)
		return 0;
	s->pending_in = false;
	s->sub &= ~ROSTER_SUB_FROM;
	return F_DELIVER | (had_from ? F_SEND_UNAVAILABLE : 0);
}

/* §3.2.3, A.3.4: the contact denied or cancelled the user's subscription. */
static unsigned in_unsubscribed(struct roster_state *s, const void *arg)
{
	if (!(s->sub & ROSTER_SUB_TO) && !s->ask)
		return 0;
	s->sub &= ~ROSTER_SUB_TO;
	s->ask = false;
	return F_DELIVER;
}

/* §4.3.2: may the prober see the user's presence? Changes nothing. */
static unsigned probe_check(struct roster_state *s, const void *arg)
{
	if (!s->user_exists || !(s->sub & ROSTER_SUB_FROM))
		return F_UNSUBSCRIBED;
	return F_SUBSCRIBED;
}

/* §2.5.2: roster remove. What the item was decides what the contact is
 * told; a pending request goes with the item. */
static unsigned roster_remove(struct roster_state *s, const void *arg)
{
	if (!s->in_roster)
		return F_NOT_FOUND;
	unsigned f = 0;
	if ((s->sub & ROSTER_SUB_TO) || s->ask)
		f |= F_SEND_UNSUBSCRIBE;
	if ((s->sub & ROSTER_SUB_FROM) || s->pending_in)
		f |= F_UNSUBSCRIBED;
	if (s->sub & ROSTER_SUB_FROM)
		f |= F_SEND_UNAVAILABLE;
	s->in_roster = false;
	s->pending_in = false;
	s->sub = 0;
	s->ask = s->approved = false;
	return f;
}

/* §2.3: roster set: the item exists afterwards; name and groups come with
 * the edit. */
static unsigned roster_add(struct roster_state *s, const void *arg)
{
	s->in_roster = true;
	return 0;
}

/* --- the subscription halves --- */

struct sub_req {
	struct stanza *st; /* owned: the subscription stanza */
	char *user_bare;   /* owned: whose roster changes */
	char *contact;	   /* owned: the other party's bare JID */
	char *status;	   /* owned: <status/> of a subscribe, or NULL */
};

static void sub_req_free(struct sub_req *r)
{
	stanza_free(r->st);
	free(r->user_bare);
	free(r->contact);
	free(r->status);
	free(r);
}

static void push_changed(const char *user_bare, const char *contact,
			 const struct roster_item *after, const char *ver)
{
	if (after) {
		push_to_user(user_bare, after, ver);
	} else {
		struct roster_item gone = {.jid = contact, .removed = true};
		push_to_user(user_bare, &gone, ver);
	}
}

static void out_done(void *ud, int rc, unsigned flags, const struct roster_item *after,
		     bool changed, const char *ver)
{
	struct sub_req *r = ud;
	if (!can_work())
		goto out;
	if (rc == ROSTER_LIMIT) {
		/* The item would not fit: the request fails for the sender. */
		struct stanza *st = r->st;
		r->st = NULL;
		if (stanza_make_error(st, SE_RESOURCE_CONSTRAINT, "Roster is full"))
			route(st, NULL);
		else
			stanza_free(st);
		goto out;
	}
	if (rc) {
		LOG(LOG_WARN, "roster: %s: subscription update failed", r->user_bare);
		goto out;
	}
	if (changed)
		push_changed(r->user_bare, r->contact, after, ver);
	if (flags & F_ROUTE) {
		struct stanza *st = r->st;
		r->st = NULL;
		route(st, NULL); /* to the inbound half, here or (later) remote */
	}
	if (flags & (F_SEND_AVAILABLE | F_SEND_UNAVAILABLE))
		presence_later(r->user_bare, r->contact, flags & F_SEND_UNAVAILABLE);
out:
	sub_req_free(r);
}

static roster_transition_fn *const out_fn[] = {
    [ST_SUBSCRIBE] = out_subscribe,
    [ST_SUBSCRIBED] = out_subscribed,
    [ST_UNSUBSCRIBE] = out_unsubscribe,
    [ST_UNSUBSCRIBED] = out_unsubscribed,
};
static roster_transition_fn *const in_fn[] = {
    [ST_SUBSCRIBE] = in_subscribe,
    [ST_SUBSCRIBED] = in_subscribed,
    [ST_UNSUBSCRIBE] = in_unsubscribe,
    [ST_UNSUBSCRIBED] = in_unsubscribed,
};

static struct sub_req *sub_req_new(struct stanza *st, const struct jid *user,
				   const struct jid *contact)
{
	struct sub_req *r = calloc(1, sizeof(*r));
	if (!r)
		die_oom();
	r->st = st;
	r->user_bare = bare_dup(user);
	r->contact = bare_dup(contact);
	return r;
}

/* The outbound half (§3.1.2, §3.2.2, §3.3.2, §3.4): a local user sent a
 * subscription stanza. It is stamped with the user's bare JID, addressed
 * to the contact's bare JID (§3.1.1), the user's roster changes, and the
 * stanza goes on to the contact's server. */
static void sub_outbound(struct hook_ev *ev)
{
	struct stanza *st = ev->st;
	ev->st = NULL;
	struct jid bare_from, bare_to;
	jid_bare(&bare_from, session_jid(ev->origin), st->arena);
	jid_bare(&bare_to, &st->to, st->arena);
	stanza_set_from(st, &bare_from);
	stanza_set_to(st, &bare_to);
	struct sub_req *r = sub_req_new(st, &bare_from, &bare_to);
	struct jid_names n;
	jid_names(&bare_from, &n);
	roster_update(server_store(), worker_origin(), n.host, n.user, r->contact, out_fn[st->type],
		      NULL, NULL, out_done, r);
}

static void deliver_if_available(struct session *s, void *arg)
{
	struct stanza *st = arg;
	if (s && can_work() && session_available(s))
		session_deliver(s, st);
	else
		stanza_free(st);
}

/* Delivers a subscription stanza to every available resource of the user
 * (RFC 6121 §3.1.3: subscription requests go to available resources);
 * returns whether there was one. Delivered directly: routing it would run
 * the inbound half again. */
static bool deliver_to_available(const char *user_bare, struct stanza *st)
{
	struct resource_ref refs[FANOUT_MAX];
	size_t n = available_of(user_bare, refs);
	for (size_t i = 0; i < n; i++)
		session_call(&refs[i], deliver_if_available, i + 1 < n ? stanza_dup(st) : st);
	if (!n)
		stanza_free(st);
	return n > 0;
}

static void in_done(void *ud, int rc, unsigned flags, const struct roster_item *after, bool changed,
		    const char *ver)
{
	struct sub_req *r = ud;
	if (!can_work())
		goto out;
	if (rc) {
		LOG(LOG_WARN, "roster: %s: inbound subscription update failed", r->user_bare);
		goto out;
	}
	if (changed)
		push_changed(r->user_bare, r->contact, after, ver);
	if (flags & F_DELIVER) {
		struct stanza *st = r->st;
		r->st = NULL;
		deliver_to_available(r->user_bare, st);
	}
	/* Answers on the user's behalf go out as the user's server would
	 * send them: from the bare JID, through the contact's inbound half. */
	if (flags & F_AUTO_SUBSCRIBED)
		send_presence("subscribed", r->user_bare, r->contact);
	if (flags & F_UNSUBSCRIBED)
		send_presence("unsubscribed", r->user_bare, r->contact);
	if (flags & (F_SEND_AVAILABLE | F_SEND_UNAVAILABLE))
		presence_later(r->user_bare, r->contact, flags & F_SEND_UNAVAILABLE);
out:
	sub_req_free(r);
}

/* The inbound half (§3.1.3, §3.1.6, §3.2.3, §3.3.3): a subscription stanza
 * from r->contact for a local account. */
static void sub_inbound(struct hook_ev *ev)
{
	struct stanza *st = ev->st;
	ev->st = NULL;
	struct jid bare_from, bare_to;
	if (!st->from.len || ev->dest == DEST_HOST) {
		stanza_free(st); /* nobody to answer, or no account addressed */
		return;
	}
	jid_bare(&bare_from, &st->from, st->arena);
	jid_bare(&bare_to, &st->to, st->arena);
	stanza_set_from(st, &bare_from);
	stanza_set_to(st, &bare_to);
	struct sub_req *r = sub_req_new(st, &bare_to, &bare_from);
	const void *arg = NULL;
	if (st->type == ST_SUBSCRIBE) {
		struct xml_el *status = xml_child(st->el, st->el->ns, "status");
		if (status) {
			r->status = strdup(xml_text(st->arena, status));
			if (!r->status)
				die_oom();
		}
		arg = r->status;
	}
	struct jid_names n;
	jid_names(&bare_to, &n);
	roster_update(server_store(), worker_origin(), n.host, n.user, r->contact, in_fn[st->type],
		      arg, NULL, in_done, r);
}

/* --- probes (RFC 6121 §4.3) --- */

struct probe_req {
	char *user_bare; /* owned: who is probed */
	char *prober;	 /* owned: the probe's 'from' (full or bare) */
};

static void probe_req_free(struct probe_req *p)
{
	free(p->user_bare);
	free(p->prober);
	free(p);
}

static void probe_answer(const char *user_bare, const char *prober)
{
	/* §4.3.2: the last presence of each available resource; with none,
	 * unavailable from the bare JID. */
	if (!presence_of_user(user_bare, prober, false, 0))
		send_presence("unavailable", user_bare, prober);
}

static void probe_done(void *ud, int rc, unsigned flags, const struct roster_item *after,
		       bool changed, const char *ver)
{
	struct probe_req *p = ud;
	if (!can_work() || rc)
		goto out;
	if (flags & F_SUBSCRIBED) {
		probe_answer(p->user_bare, p->prober);
	} else {
		/* §4.3.2: no subscription: nothing about presence is revealed,
		 * and the prober's server learns it is not subscribed. */
		struct jid pj;
		if (jid_parse(&pj, p->prober, strlen(p->prober), NULL) == 0) {
			char *bare = bare_dup(&pj);
			send_presence("unsubscribed", p->user_bare, bare);
			free(bare);
			jid_free(&pj);
		}
	}
out:
	probe_req_free(p);
}

static void probe_inbound(struct hook_ev *ev)
{
	struct stanza *st = ev->st;
	ev->st = NULL;
	if (!st->from.len || ev->dest == DEST_HOST || !jid_has_local(&st->to)) {
		stanza_free(st);
		return;
	}
	struct jid user, prober_bare;
	jid_bare(&user, &st->to, st->arena);
	jid_bare(&prober_bare, &st->from, st->arena);
	struct probe_req *p = malloc(sizeof(*p));
	if (!p)
		die_oom();
	p->user_bare = bare_dup(&user);
	p->prober = strdup(st->from.s);
	if (!p->prober)
		die_oom();
	if (jid_bare_eq(&user, &st->from)) {
		/* One's own resources may always see each other (§4.2.2). */
		probe_answer(p->user_bare, p->prober);
		probe_req_free(p);
		stanza_free(st);
		return;
	}
	char *prober = bare_dup(&prober_bare);
	struct jid_names n;
	jid_names(&user, &n);
	roster_update(server_store(), worker_origin(), n.host, n.user, prober, probe_check, NULL,
		      NULL, probe_done, p);
	free(prober);
	stanza_free(st);
}

/* --- HP_PRESENCE: everything with a 'to' --- */

static void directed_track(struct session *s, const struct stanza *st)
{
	struct rsess *r = rsess_of(s);
	size_t i;
	for (i = 0; i < r->n_directed; i++)
		if (!strcmp(r->directed[i], st->to.s))
			break;
	if (st->type == ST_UNAVAILABLE) {
		/* §4.6.3: directed unavailable: that entity knows already. */
		if (i < r->n_directed) {
			free(r->directed[i]);
			r->directed[i] = r->directed[--r->n_directed];
		}
		return;
	}
	if (i < r->n_directed || r->n_directed >= DIRECTED_MAX)
		return;
	char **v = realloc(r->directed, (r->n_directed + 1) * sizeof(*v));
	if (!v)
		die_oom();
	r->directed = v;
	v[r->n_directed] = strdup(st->to.s);
	if (!v[r->n_directed])
		die_oom();
	r->n_directed++;
}

static enum hook_rc on_presence(struct hook_ev *ev)
{
	struct stanza *st = ev->st;
	if (!can_work()) {
		/* Shutdown, on the main thread: the store takes no more work. */
		if (st->type >= ST_SUBSCRIBE && st->type <= ST_PROBE) {
			stanza_free(st);
			ev->st = NULL;
			return HOOK_DONE;
		}
		return HOOK_PASS;
	}
	switch (st->type) {
	case ST_SUBSCRIBE:
	case ST_SUBSCRIBED:
	case ST_UNSUBSCRIBE:
	case ST_UNSUBSCRIBED:
		if (ev->dest == DEST_HOST && ev->origin) {
			/* A subscription to a server itself: it has no roster. */
			stanza_free(st);
			ev->st = NULL;
			return HOOK_DONE;
		}
		if (ev->origin)
			sub_outbound(ev);
		else
			sub_inbound(ev);
		return HOOK_DONE;
	case ST_PROBE:
		/* §4.3: probes are the server's business, never delivered. A
		 * client's own probe is answered by the same rules; one for
		 * another server goes there. */
		if (ev->dest == DEST_REMOTE && ev->origin)
			return HOOK_PASS;
		probe_inbound(ev);
		return HOOK_DONE;
	case ST_AVAILABLE:
	case ST_UNAVAILABLE:
		/* §4.6: directed presence, remembered so that the target
		 * learns when the session ends. */
		if (ev->origin)
			directed_track(ev->origin, st);
		return HOOK_PASS;
	default:
		return HOOK_PASS;
	}
}

/* --- HP_PRESENCE_BROADCAST: availability (RFC 6121 §4.2, §4.4, §4.5) --- */

struct bcast_req {
	struct rsess *r;     /* reference, for an initial presence; else NULL */
	struct stanza *pres; /* owned: what to broadcast (from = the full JID) */
	char *user_bare;     /* owned */
	char *full;	     /* owned */
	unsigned long long self_id;
	bool initial;
	char **directed; /* owned: targets of directed presence, for unavailable */
	size_t n_directed;
};

static void bcast_free(struct bcast_req *b)
{
	rsess_unref(b->r);
	stanza_free(b->pres);
	free(b->user_bare);
	free(b->full);
	directed_free(b->directed, b->n_directed);
	free(b);
}

/* §3.1.3: a request that waited for the user is delivered when the user
 * next becomes available. */
static void pending_deliver(struct bcast_req *b, const struct roster_pending *p)
{
	struct session *s = b->r ? b->r->s : NULL;
	if (!s)
		return;
	struct stanza *st = presence_new("subscribe", p->jid, b->user_bare);
	if (!st)
		return;
	if (blocking_blocks(&st->to, &st->from)) {
		/* Asked before the user blocked them (XEP-0191 §3.3). */
		stanza_free(st);
		return;
	}
	if (p->status && *p->status) {
		struct xml_el *e = xml_add_child(st->arena, st->el, NS_CLIENT, "status");
		xml_add_text(st->arena, e, p->status, strlen(p->status));
	}
	session_deliver(s, st);
}

static void bcast_done(void *ud, int rc, const struct roster_view *v)
{
	struct bcast_req *b = ud;
	if (!can_work())
		goto out;
	if (rc) {
		LOG(LOG_WARN, "roster: %s: cannot read roster for presence", b->user_bare);
		goto out;
	}
	for (size_t i = 0; i < v->n_items; i++) {
		const struct roster_item *it = &v->items[i];
		/* §4.2.2, §4.4.2, §4.5.2: to every contact subscribed to us. */
		if (it->sub & ROSTER_SUB_FROM) {
			struct stanza *st = stanza_dup(b->pres);
			struct jid to;
			if (jid_in(&to, it->jid, st->arena)) {
				stanza_set_to(st, &to);
				route(st, NULL);
			} else {
				stanza_free(st);
			}
		}
		/* §4.2.2: initial presence: probe those we are subscribed to. */
		if (b->initial && (it->sub & ROSTER_SUB_TO))
			send_presence("probe", b->full, it->jid);
	}
	/* §4.6.3: those that got directed presence learn we left. */
	for (size_t i = 0; i < b->n_directed; i++) {
		bool covered = false;
		for (size_t k = 0; k < v->n_items && !covered; k++)
			covered = (v->items[k].sub & ROSTER_SUB_FROM) &&
				  !strcmp(v->items[k].jid, b->directed[i]);
		if (!covered)
			send_presence("unavailable", b->full, b->directed[i]);
	}
	if (b->initial) {
		/* §4.2.2: the new resource also learns about the account's
		 * other available resources. */
		presence_of_user(b->user_bare, b->full, false, b->self_id);
		for (size_t i = 0; i < v->n_pending; i++)
			pending_deliver(b, &v->pending[i]);
	}
out:
	bcast_free(b);
}

/* This session's id as the registry knows it (0 if it is not there). */
static unsigned long long session_id_of(struct session *s)
{
	struct resource_ref refs[FANOUT_MAX];
	struct jid bare;
	if (jid_bare(&bare, session_jid(s), NULL) < 0)
		return 0;
	size_t n = resources_of(&bare, refs, FANOUT_MAX);
	jid_free(&bare);
	for (size_t i = 0; i < n && i < FANOUT_MAX; i++)
		if (refs[i].priv[1] == (void *)s)
			return refs[i].sess_id;
	return 0;
}

static enum hook_rc on_broadcast(struct hook_ev *ev)
{
	struct session *s = ev->origin;
	if (!s || !can_work())
		return HOOK_PASS;
	struct stanza **last = (struct stanza **)session_slot(s, SLOT_PRESENCE);
	struct rsess *r = rsess_of(s);
	bool avail = ev->st->type == ST_AVAILABLE;
	bool was = *last != NULL;
	if (!avail && !was && !r->n_directed)
		return HOOK_PASS; /* never available: nobody to tell */
	struct bcast_req *b = calloc(1, sizeof(*b));
	if (!b)
		die_oom();
	b->pres = stanza_dup(ev->st);
	stanza_set_from(b->pres, session_jid(s));
	b->full = strdup(session_jid(s)->s);
	b->user_bare = bare_dup(session_jid(s));
	if (!b->full || !b->user_bare)
		die_oom();
	stanza_free(*last);
	*last = NULL;
	if (avail) {
		*last = stanza_dup(b->pres);
		b->initial = !was;
	} else {
		/* §4.5.2: the directed targets are told too, and forgotten. */
		b->directed = r->directed;
		b->n_directed = r->n_directed;
		r->directed = NULL;
		r->n_directed = 0;
		if (!was) {
			/* Never broadcast available: only directed targets. */
			for (size_t i = 0; i < b->n_directed; i++)
				send_presence("unavailable", b->full, b->directed[i]);
			bcast_free(b);
			return HOOK_PASS;
		}
	}
	if (b->initial) {
		b->r = r;
		r->refs++;
		b->self_id = session_id_of(s);
	}
	struct jid_names n;
	struct jid bare;
	jid_bare(&bare, session_jid(s), b->pres->arena);
	jid_names(&bare, &n);
	roster_read(server_store(), worker_origin(), n.host, n.user, NULL,
		    b->initial ? ROSTER_READ_PENDING : 0, bcast_done, b);
	return HOOK_PASS;
}

/* --- the roster IQs (RFC 6121 §2) --- */

struct iq_req {
	struct stanza *st; /* owned: the request, answered in place */
	char *user_bare;   /* owned */
	char *contact;	   /* owned: roster set */
	bool remove;	   /* roster set: a removal */
	bool versioned;	   /* roster get: the client does versioning (sent 'ver') */
};

static void iq_req_free(struct iq_req *q)
{
	stanza_free(q->st);
	free(q->user_bare);
	free(q->contact);
	free(q);
}

static void iq_answer_error(struct iq_req *q, enum st_err e, const char *text)
{
	struct stanza *st = q->st;
	q->st = NULL;
	if (stanza_make_error(st, e, text))
		route(st, NULL);
	else
		stanza_free(st);
}

static void get_done(void *ud, int rc, const struct roster_view *v)
{
	struct iq_req *q = ud;
	if (!can_work())
		goto out;
	if (rc) {
		iq_answer_error(q, SE_INTERNAL_SERVER_ERROR, NULL);
		goto out;
	}
	struct stanza *st = q->st;
	q->st = NULL;
	stanza_make_result(st);
	if (v->delta) {
		/* §2.6.3: an empty result, then the changes as pushes, each
		 * with its version, so the client's version ends current. */
		char *tos = strdup(st->to.s);
		if (!tos)
			die_oom();
		route(st, NULL);
		for (size_t i = 0; i < v->n_items; i++) {
			struct stanza *p = push_new(&v->items[i], v->items[i].ver);
			struct jid pj;
			if (jid_in(&pj, tos, p->arena)) {
				stanza_set_to(p, &pj);
				route(p, NULL);
			} else {
				stanza_free(p);
			}
		}
		free(tos);
		goto out;
	}
	struct xml_el *qe = xml_add_child(st->arena, st->el, NS_ROSTER, "query");
	/* §2.6.3: 'ver' only for a client that does versioning. */
	if (q->versioned)
		xml_set_attr(st->arena, qe, "ver", v->ver);
	for (size_t i = 0; i < v->n_items; i++)
		item_to_xml(st, qe, &v->items[i]);
	route(st, NULL);
out:
	iq_req_free(q);
}

static void set_done(void *ud, int rc, unsigned flags, const struct roster_item *after,
		     bool changed, const char *ver)
{
	struct iq_req *q = ud;
	if (!can_work())
		goto out;
	if (rc == ROSTER_LIMIT) {
		/* §2.3.3: the roster holds as many items as it may. */
		iq_answer_error(q, SE_NOT_ALLOWED, "Roster is full");
		goto out;
	}
	if (rc) {
		iq_answer_error(q, SE_INTERNAL_SERVER_ERROR, NULL);
		goto out;
	}
	if (flags & F_NOT_FOUND) {
		iq_answer_error(q, SE_ITEM_NOT_FOUND, NULL); /* §2.5.3 */
		goto out;
	}
	/* §2.3.2, §2.5.2: the pushes, then the result. */
	if (changed)
		push_changed(q->user_bare, q->contact, after, ver);
	struct stanza *st = q->st;
	q->st = NULL;
	stanza_make_result(st);
	route(st, NULL);
	if (q->remove) {
		/* §2.5.2: the contact is told the subscriptions are gone. */
		if (flags & F_SEND_UNSUBSCRIBE)
			send_presence("unsubscribe", q->user_bare, q->contact);
		if (flags & F_UNSUBSCRIBED)
			send_presence("unsubscribed", q->user_bare, q->contact);
		if (flags & F_SEND_UNAVAILABLE)
			presence_later(q->user_bare, q->contact, true);
	}
out:
	iq_req_free(q);
}

/* The one <item/> of a roster set, checked as §2.3.3 requires. */
static int item_check(const struct xml_el *q, struct arena *a, const struct xml_el **out,
		      const char **why)
{
	const struct xml_el *item = NULL;
	for (const struct xml_el *e = xml_first_el(q); e; e = xml_next_el(e)) {
		if (strcmp(e->ns, NS_ROSTER) || strcmp(e->name, "item"))
			continue;
		if (item) {
			*why = "Exactly one item per roster set";
			return SE_BAD_REQUEST;
		}
		item = e;
	}
	if (!item) {
		*why = "No item";
		return SE_BAD_REQUEST;
	}
	*out = item;
	const char *name = xml_attr(item, "name");
	if (name && strlen(name) > ROSTER_NAME_MAX) {
		*why = "Name too long";
		return SE_NOT_ACCEPTABLE;
	}
	size_t ng = 0;
	for (const struct xml_el *g = xml_first_el(item); g; g = xml_next_el(g)) {
		if (strcmp(g->ns, NS_ROSTER) || strcmp(g->name, "group"))
			continue;
		const char *t = xml_text(a, g);
		if (!*t || strlen(t) > ROSTER_GROUP_MAX) {
			*why = *t ? "Group name too long" : "Empty group name";
			return SE_NOT_ACCEPTABLE;
		}
		if (++ng > ROSTER_GROUPS_MAX) {
			*why = "Too many groups";
			return SE_NOT_ACCEPTABLE;
		}
		for (const struct xml_el *h = xml_first_el(item); h != g; h = xml_next_el(h))
			if (!strcmp(h->ns, NS_ROSTER) && !strcmp(h->name, "group") &&
			    !strcmp(xml_text(a, h), t)) {
				*why = "Duplicate group";
				return SE_BAD_REQUEST;
			}
	}
	return SE_NONE;
}

static enum hook_rc roster_iq(struct hook_ev *ev)
{
	struct stanza *st = ev->st;
	if (!can_work()) {
		ev_error(ev, SE_INTERNAL_SERVER_ERROR, NULL);
		return HOOK_DONE;
	}
	/* §2.1.5 (and §2.3.3 for a set): only the account itself may read or
	 * change its roster. */
	if (ev->dest != DEST_SELF || !ev->origin) {
		ev_error(ev, SE_FORBIDDEN, NULL);
		return HOOK_DONE;
	}
	struct session *s = ev->origin;
	struct xml_el *query = stanza_payload(st);
	struct iq_req *q = calloc(1, sizeof(*q));
	if (!q)
		die_oom();
	struct jid_names n;
	struct jid bare;
	jid_bare(&bare, session_jid(s), st->arena);
	jid_names(&bare, &n);
	q->user_bare = bare_dup(&bare);
	if (st->type == ST_GET) {
		/* §2.2: this resource is interested from now on. */
		rsess_of(s)->interested = true;
		const char *since = xml_attr(query, "ver");
		q->versioned = since != NULL;
		q->st = st;
		ev->st = NULL;
		roster_read(server_store(), worker_origin(), n.host, n.user, since, 0, get_done, q);
		return HOOK_DONE;
	}
	const struct xml_el *item;
	const char *why = NULL;
	int err = item_check(query, st->arena, &item, &why);
	struct jid contact;
	const char *jid_s = err == SE_NONE ? xml_attr(item, "jid") : NULL;
	if (err == SE_NONE &&
	    (!jid_s || jid_parse(&contact, jid_s, strlen(jid_s), st->arena) < 0)) {
		err = SE_BAD_REQUEST; /* §2.3.3 */
		why = "Invalid or missing jid";
	}
	if (err != SE_NONE) {
		iq_req_free(q);
		ev_error(ev, (enum st_err)err, why);
		return HOOK_DONE;
	}
	q->contact = strdup(contact.s);
	if (!q->contact)
		die_oom();
	/* §2.1.2.5: 'subscription' in a set means nothing but "remove"; the
	 * other values, 'ask' and 'approved' are the server's and ignored. */
	const char *sub = xml_attr(item, "subscription");
	q->remove = sub && !strcmp(sub, "remove");
	struct roster_edit edit = {0};
	const char *groups[ROSTER_GROUPS_MAX];
	if (!q->remove) {
		edit.set = true;
		edit.name = xml_attr(item, "name");
		for (const struct xml_el *g = xml_first_el(item); g; g = xml_next_el(g))
			if (!strcmp(g->ns, NS_ROSTER) && !strcmp(g->name, "group"))
				groups[edit.n_groups++] = xml_text(st->arena, g);
		edit.groups = groups;
	}
	q->st = st;
	ev->st = NULL;
	roster_update(server_store(), worker_origin(), n.host, n.user, q->contact,
		      q->remove ? roster_remove : roster_add, NULL, q->remove ? NULL : &edit,
		      set_done, q);
	return HOOK_DONE;
}

/* --- session lifecycle --- */

static enum hook_rc on_free(struct hook_ev *ev)
{
	struct session *s = ev->origin;
	struct stanza **last = (struct stanza **)session_slot(s, SLOT_PRESENCE);
	stanza_free(*last);
	*last = NULL;
	struct rsess **slot = (struct rsess **)session_slot(s, SLOT_ROSTER);
	struct rsess *r = *slot;
	if (!r)
		return HOOK_PASS;
	*slot = NULL;
	/* §4.6.3: directed presence sent while never broadcast available (the
	 * broadcast unavailable handles the rest). */
	if (can_work())
		for (size_t i = 0; i < r->n_directed; i++)
			send_presence("unavailable", session_jid(s)->s, r->directed[i]);
	r->s = NULL;
	rsess_unref(r);
	return HOOK_PASS;
}

static const struct iq_reg roster_iqs[] = {
    {NS_ROSTER, "query", IQ_GET | IQ_SET, DEST_SELF | DEST_BARE, roster_iq},
    {0},
};

static const struct hook_reg roster_hooks[] = {
    {HP_PRESENCE, 0, on_presence},
    {HP_PRESENCE_BROADCAST, 0, on_broadcast},
    {HP_SESSION_FREE, 0, on_free},
    {.fn = NULL},
};

static int roster_start(struct store *st, const struct config *cfg)
{
	(void)st;
	roster_set_max_items(cfg->limits.roster_items);
	return 0;
}

const struct module mod_roster = {
    .name = "roster",
    .start = roster_start,
    .features = (const char *const[]){NS_ROSTER, NULL},
    .iqs = roster_iqs,
    .hooks = roster_hooks,
    .xeps = (const struct xep_ref[]){{0}},
    /* RFC 6121 §2.6.1 and §3.4: versioning and pre-approval. */
    .stream_features = (const char *const[]){"<ver xmlns='" NS_ROSTERVER "'/>",
					     "<sub xmlns='" NS_PREAPPROVAL "'/>", NULL},
};
