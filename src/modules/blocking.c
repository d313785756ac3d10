/* XEP-0191: Blocking Command (1.3). A user blocks JIDs; the server then
 * delivers nothing between the user and them, both ways, and pushes every
 * change to the user's resources that asked for the list.
 *
 * Every blocklist lives in memory (loaded from the store at start, written
 * through on every change), because the check runs on every routed stanza,
 * including those for a user who is offline (a blocked contact's message
 * must not land in offline storage). The table is sharded with a
 * read-write lock per shard; while no account blocks anyone, the check is
 * one atomic load.
 *
 * Rules (§3.3 and the XEP-0016 rules it defers to):
 * - JID matching, XEP-0016 §2.1 (XEP-0191 §3.3 defers to it): an item
 *   matches an address if it equals the full JID, the bare JID, the
 *   domain/resource or the domain of that address.
 * - Inbound from a blocked entity: presence (all types, subscriptions and
 *   probes included) is dropped without an answer; a message or an IQ get
 *   or set is answered with service-unavailable, the answer an account
 *   with no session gives; other IQs and errors are dropped.
 * - Outbound to a blocked entity: what the user's client sends is refused
 *   with not-acceptable and <blocked xmlns='urn:xmpp:blocking:errors'/>
 *   (§3.3), except errors and IQ results, which are dropped; what the
 *   server emits for the user (presence broadcast, probes, answers) is
 *   dropped silently.
 * - Blocking a contact subscribed to the user's presence sends it
 *   unavailable presence from each available resource; unblocking sends
 *   current presence again and probes the contact if the user is
 *   subscribed to it (§3.3, §3.4), so both sides see each other again
 *   without waiting for the next change.
 *
 * Known gap: contacts that only had directed presence (RFC 6121 §4.6) are
 * not sent unavailable on a block; mod_roster tells them at logout, which
 * the filter then drops. */
#include "server/module.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "server/config.h"
#include "storage/blocklist_store.h"
#include "storage/roster_store.h"
#include "xml/xml.h"

#define NS_BLOCKING	   "urn:xmpp:blocking"
#define NS_BLOCKING_ERRORS "urn:xmpp:blocking:errors"

/* Most JIDs one account may block (limits.blocklist_items); a request
 * that would exceed it is refused whole with resource-constraint. */
static size_t blocklist_max = 1000;
#define FANOUT_MAX 64

#define SHARDS	64
#define BUCKETS 256 /* per shard */

/* --- the in-memory table --- */

struct blist {
	struct blist *next;
	char *acct;  /* "user@host" */
	char **jids; /* sorted by strcmp, unique */
	size_t n;
};

static struct shard {
	pthread_rwlock_t lock;
	struct blist *b[BUCKETS];
} shards[SHARDS];

static atomic_size_t n_lists; /* accounts with a non-empty list */

static size_t hash_str(const char *s, size_t len)
{
	size_t h = 14695981039346656037ULL;
	for (size_t i = 0; i < len; i++)
		h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
	return h;
}

static struct blist **find_slot(struct shard *sh, size_t h, const char *acct, size_t len)
{
	struct blist **p = &sh->b[(h / SHARDS) % BUCKETS];
	for (; *p; p = &(*p)->next)
		if (!strncmp((*p)->acct, acct, len) && !(*p)->acct[len])
			return p;
	return p;
}

/* key[0..len) compared with the NUL-terminated s, as strcmp would. */
static int cmp_key(const char *key, size_t len, const char *s)
{
	int c = strncmp(key, s, len);
	if (c)
		return c;
	return s[len] ? -1 : 0;
}

static bool has_key(const struct blist *l, const char *key, size_t len)
{
	size_t lo = 0, hi = l->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = cmp_key(key, len, l->jids[mid]);
		if (!c)
			return true;
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return false;
}

/* XEP-0016 §2.1: full JID, bare JID, domain/resource, domain. */
static bool list_matches(const struct blist *l, const struct jid *x)
{
	const char *dom = x->s + x->dom_off;
	if (has_key(l, dom, x->dom_len))
		return true;
	if (x->local_len && has_key(l, x->s, jid_bare_len(x)))
		return true;
	if (x->res_len) {
		if (has_key(l, dom, x->len - x->dom_off))
			return true;
		if (x->local_len && has_key(l, x->s, x->len))
			return true;
	}
	return false;
}

/* Does the account acct[0..len) block x? */
static bool blocks(const char *acct, size_t len, const struct jid *x)
{
	if (!atomic_load_explicit(&n_lists, memory_order_relaxed) || !x->len)
		return false;
	size_t h = hash_str(acct, len);
	struct shard *sh = &shards[h % SHARDS];
	pthread_rwlock_rdlock(&sh->lock);
	struct blist *l = *find_slot(sh, h, acct, len);
	bool r = l && list_matches(l, x);
	pthread_rwlock_unlock(&sh->lock);
	return r;
}

bool blocking_blocks(const struct jid *owner, const struct jid *other)
{
	return blocks(owner->s, jid_bare_len(owner), other);
}

static int cmp_strp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void blist_free(struct blist *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->jids[i]);
	free(l->jids);
	free(l->acct);
	free(l);
}

enum { OP_ADD, OP_REMOVE, OP_CLEAR };

/* Changes acct's list under the shard's write lock. */
static void table_change(const char *acct, int op, const char *const *jids, size_t n)
{
	size_t len = strlen(acct), h = hash_str(acct, len);
	struct shard *sh = &shards[h % SHARDS];
	pthread_rwlock_wrlock(&sh->lock);
	struct blist **slot = find_slot(sh, h, acct, len), *l = *slot;
	if (!l && op == OP_ADD && n) {
		l = calloc(1, sizeof(*l));
		if (!l || !(l->acct = strdup(acct)))
			die_oom();
		*slot = l;
		atomic_fetch_add(&n_lists, 1);
	}
	if (l && op == OP_ADD) {
		char **v = realloc(l->jids, (l->n + n) * sizeof(*v));
		if (!v)
			die_oom();
		l->jids = v;
		/* Appended behind the sorted part (which has_key searches), then
		 * sorted once. Callers pass no duplicates among jids. */
		size_t sorted = l->n;
		struct blist old = {.jids = v, .n = sorted};
		for (size_t i = 0; i < n; i++)
			if (!has_key(&old, jids[i], strlen(jids[i])))
				if (!(v[l->n++] = strdup(jids[i])))
					die_oom();
		if (l->n > sorted)
			qsort(v, l->n, sizeof(*v), cmp_strp);
	} else if (l && op == OP_REMOVE) {
		for (size_t i = 0; i < n; i++)
			for (size_t k = 0; k < l->n; k++)
				if (!strcmp(l->jids[k], jids[i])) {
					free(l->jids[k]);
					memmove(&l->jids[k], &l->jids[k + 1],
						(l->n - k - 1) * sizeof(*l->jids));
					l->n--;
					break;
				}
	}
	if (l && (op == OP_CLEAR || !l->n)) {
		*slot = l->next;
		blist_free(l);
		atomic_fetch_sub(&n_lists, 1);
	}
	pthread_rwlock_unlock(&sh->lock);
}

/* Adds an <item jid=.../> to el for each JID acct blocks. */
static void table_items(const char *acct, struct arena *a, struct xml_el *el)
{
	size_t len = strlen(acct), h = hash_str(acct, len);
	struct shard *sh = &shards[h % SHARDS];
	pthread_rwlock_rdlock(&sh->lock);
	const struct blist *l = *find_slot(sh, h, acct, len);
	for (size_t i = 0; l && i < l->n; i++)
		xml_set_attr(a, xml_add_child(a, el, NS_BLOCKING, "item"), "jid", l->jids[i]);
	pthread_rwlock_unlock(&sh->lock);
}

static void load_row(void *ud, const char *host, const char *user, const char *jid)
{
	(void)ud;
	char acct[2 * JID_PART_MAX + 2];
	snprintf(acct, sizeof(acct), "%s@%s", user, host);
	table_change(acct, OP_ADD, &jid, 1);
}

static int blocking_start(struct store *st, const struct config *cfg)
{
	blocklist_max = cfg->limits.blocklist_items;
	for (size_t i = 0; i < SHARDS; i++)
		pthread_rwlock_init(&shards[i].lock, NULL);
	if (store_blocklist_load_sync(st, load_row, NULL) != STORE_OK) {
		LOG(LOG_ERROR, "blocking: cannot load the blocklists");
		return -1;
	}
	size_t n = atomic_load(&n_lists);
	if (n)
		LOG(LOG_INFO, "blocking: %zu accounts have a blocklist", n);
	return 0;
}

static void blocking_stop(void)
{
	for (size_t i = 0; i < SHARDS; i++) {
		for (size_t k = 0; k < BUCKETS; k++) {
			struct blist *l = shards[i].b[k];
			while (l) {
				struct blist *next = l->next;
				blist_free(l);
				l = next;
			}
			shards[i].b[k] = NULL;
		}
		pthread_rwlock_destroy(&shards[i].lock);
	}
	atomic_store(&n_lists, 0);
}

/* --- the routing filter (HP_FILTER) --- */

static enum hook_rc drop(struct hook_ev *ev)
{
	stanza_free(ev->st);
	ev->st = NULL;
	return HOOK_DONE;
}

/* From a blocked entity to the user. */
static enum hook_rc inbound_blocked(struct hook_ev *ev)
{
	struct stanza *st = ev->st;
	bool answer = (st->kind == ST_MESSAGE && st->type != ST_ERROR) ||
		      (st->kind == ST_IQ && (st->type == ST_GET || st->type == ST_SET));
	if (!answer)
		return drop(ev);
	ev->st = NULL;
	if (!stanza_make_error(st, SE_SERVICE_UNAVAILABLE, NULL)) {
		stanza_free(st);
		return HOOK_DONE;
	}
	st->unfiltered = true; /* from the user to the blocked entity */
	route(st, NULL);
	return HOOK_DONE;
}

/* From the user to a blocked entity. */
static enum hook_rc outbound_blocked(struct hook_ev *ev)
{
	struct stanza *st = ev->st;
	if (!ev->origin || st->type == ST_ERROR || (st->kind == ST_IQ && st->type == ST_RESULT))
		return drop(ev); /* emitted by the server, or an answer */
	ev->st = NULL;
	if (!stanza_make_error(st, SE_NOT_ACCEPTABLE, NULL)) {
		stanza_free(st);
		return HOOK_DONE;
	}
	struct xml_el *err = xml_child(st->el, st->el->ns, "error");
	if (err)
		xml_add_child(st->arena, err, NS_BLOCKING_ERRORS, "blocked");
	/* Straight to the session: routed, it would come from the blocked
	 * entity and be filtered again. */
	session_deliver(ev->origin, st);
	return HOOK_DONE;
}

static enum hook_rc on_filter(struct hook_ev *ev)
{
	const struct stanza *st = ev->st;
	if (!atomic_load_explicit(&n_lists, memory_order_relaxed) || ev->dest == DEST_SELF ||
	    !st->from.len)
		return HOOK_PASS;
	if (jid_has_local(&st->to) && blocks(st->to.s, jid_bare_len(&st->to), &st->from))
		return inbound_blocked(ev);
	if (jid_has_local(&st->from) && blocks(st->from.s, jid_bare_len(&st->from), &st->to))
		return outbound_blocked(ev);
	return HOOK_PASS;
}

/* --- pushes to interested resources (§3.3, §3.4, §3.5) --- */

#define INTERESTED ((void *)1)

static void push_deliver(struct session *s, void *arg)
{
	struct stanza *st = arg;
	if (!s || *session_slot(s, SLOT_BLOCKING) != INTERESTED) {
		stanza_free(st);
		return;
	}
	stanza_set_to(st, session_jid(s));
	session_deliver(s, st);
}

static void push_to_user(const struct jid *bare, const char *what, const char *const *jids,
			 size_t n)
{
	static _Atomic unsigned long long seq;
	struct resource_ref refs[FANOUT_MAX];
	size_t nr = resources_of(bare, refs, FANOUT_MAX);
	if (nr > FANOUT_MAX)
		nr = FANOUT_MAX;
	if (!nr)
		return;
	char id[32];
	snprintf(id, sizeof(id), "block%llu", ++seq);
	struct stanza *st = stanza_new(ST_IQ, "set");
	xml_set_attr(st->arena, st->el, "id", id);
	st->id = xml_attr(st->el, "id");
	stanza_set_from(st, bare);
	struct xml_el *el = xml_add_child(st->arena, st->el, NS_BLOCKING, what);
	for (size_t i = 0; i < n; i++)
		xml_set_attr(st->arena, xml_add_child(st->arena, el, NS_BLOCKING, "item"), "jid",
			     jids[i]);
	for (size_t i = 0; i + 1 < nr; i++)
		session_call(&refs[i], push_deliver, stanza_dup(st));
	session_call(&refs[nr - 1], push_deliver, st);
}

/* --- presence effects of a change --- */

struct pres_msg {
	bool unavailable;
	char to[];
};

/* On the resource's worker: its presence (or unavailable) to one contact. */
static void presence_deliver(struct session *s, void *arg)
{
	struct pres_msg *m = arg;
	struct stanza **last = s ? (struct stanza **)session_slot(s, SLOT_PRESENCE) : NULL;
	if (last && *last && worker_origin()) {
		struct stanza *st =
		    m->unavailable ? stanza_new(ST_PRESENCE, "unavailable") : stanza_dup(*last);
		struct jid to;
		if (jid_parse(&to, m->to, strlen(m->to), st->arena) == 0) {
			stanza_set_from(st, session_jid(s));
			stanza_set_to(st, &to);
			st->unfiltered = m->unavailable; /* the contact is blocked already */
			route(st, NULL);
		} else {
			stanza_free(st);
		}
	}
	free(m);
}

static void presence_to(const struct jid *bare, const char *to, bool unavailable)
{
	struct resource_ref refs[FANOUT_MAX];
	size_t n = resources_of(bare, refs, FANOUT_MAX);
	for (size_t i = 0; i < n && i < FANOUT_MAX; i++) {
		if (!refs[i].available)
			continue;
		size_t len = strlen(to) + 1;
		struct pres_msg *m = malloc(sizeof(*m) + len);
		if (!m)
			die_oom();
		m->unavailable = unavailable;
		memcpy(m->to, to, len);
		session_call(&refs[i], presence_deliver, m);
	}
}

struct effect {
	struct blist changed; /* the JIDs blocked or unblocked (acct unused) */
	bool block;
	struct jid user; /* bare, malloc */
};

static void effect_free(struct effect *e)
{
	for (size_t i = 0; i < e->changed.n; i++)
		free(e->changed.jids[i]);
	free(e->changed.jids);
	jid_free(&e->user);
	free(e);
}

static void effect_roster(void *ud, int rc, const struct roster_view *v)
{
	struct effect *e = ud;
	if (rc != STORE_OK || !worker_origin()) {
		effect_free(e);
		return;
	}
	for (size_t i = 0; i < v->n_items; i++) {
		const struct roster_item *it = &v->items[i];
		struct jid c;
		if (!(it->sub & (ROSTER_SUB_FROM | ROSTER_SUB_TO)) ||
		    jid_parse(&c, it->jid, strlen(it->jid), NULL) < 0)
			continue;
		bool hit = list_matches(&e->changed, &c);
		/* On unblock, a contact another entry still blocks stays cut off. */
		if (hit && !e->block && blocks(e->user.s, e->user.len, &c))
			hit = false;
		if (hit && (it->sub & ROSTER_SUB_FROM))
			presence_to(&e->user, it->jid, e->block); /* §3.3, §3.4 */
		if (hit && !e->block && (it->sub & ROSTER_SUB_TO)) {
			/* RFC 6121 §4.3: learn the contact's presence again. */
			struct stanza *st = stanza_new(ST_PRESENCE, "probe");
			stanza_set_from(st, &e->user);
			stanza_set_to(st, &c);
			route(st, NULL);
		}
		jid_free(&c);
	}
	effect_free(e);
}

static void presence_effects(const struct jid *user, bool block, const char *const *jids, size_t n)
{
	if (!n)
		return;
	struct effect *e = calloc(1, sizeof(*e));
	if (!e || !(e->changed.jids = calloc(n, sizeof(char *))))
		die_oom();
	for (size_t i = 0; i < n; i++)
		if (!(e->changed.jids[i] = strdup(jids[i])))
			die_oom();
	e->changed.n = n;
	qsort(e->changed.jids, n, sizeof(char *), cmp_strp);
	e->block = block;
	if (jid_parse(&e->user, user->s, user->len, NULL) < 0) {
		effect_free(e);
		return;
	}
	struct jid_names names;
	jid_names(user, &names);
	roster_read(server_store(), worker_origin(), names.host, names.user, NULL, 0, effect_roster,
		    e);
}

/* --- the IQs --- */

struct change_req {
	struct stanza *st;		 /* owned: the request, answered in place */
	char acct[2 * JID_PART_MAX + 2]; /* the list's owner, bare */
	const char *what;		 /* "block" or "unblock" */
	int op;
	const char **jids; /* into st's arena */
	size_t n;
};

/* On the storage thread, right after the commit: changes reach the memory
 * copy in the order the store made them, whichever workers asked. */
static void change_apply(void *ud, int rc, const char *const *changed, size_t n)
{
	struct change_req *q = ud;
	(void)rc;
	table_change(q->acct, q->op, q->op == OP_CLEAR ? NULL : changed, q->op == OP_CLEAR ? 0 : n);
}

static void change_done(void *ud, int rc, const char *const *changed, size_t n)
{
	struct change_req *q = ud;
	struct stanza *st = q->st;
	if (rc == BLOCKLIST_LIMIT) {
		char text[80];
		snprintf(text, sizeof(text), "A blocklist holds at most %zu JIDs", blocklist_max);
		route_error(st, SE_RESOURCE_CONSTRAINT, text);
	} else if (rc == STORE_NOT_FOUND) {
		route_error(st, SE_ITEM_NOT_FOUND, "The account no longer exists");
	} else if (rc != STORE_OK) {
		route_error(st, SE_INTERNAL_SERVER_ERROR, NULL);
	} else {
		/* The memory copy changed already, in commit order (change_apply). */
		struct jid user;
		jid_bare(&user, &st->from, st->arena);
		if (q->op != OP_ADD) /* §3.4: they see us again, unblocked first */
			presence_effects(&user, false, changed, n);
		push_to_user(&user, q->what, q->jids, q->n);
		if (q->op == OP_ADD) /* sent unfiltered: they are blocked already */
			presence_effects(&user, true, changed, n);
		stanza_make_result(st);
		route(st, NULL);
	}
	free(q->jids);
	free(q);
}

static enum hook_rc change_iq(struct hook_ev *ev)
{
	struct stanza *st = ev->st;
	struct xml_el *el = stanza_payload(st);
	bool block = !strcmp(el->name, "block");
	size_t n = 0;
	for (struct xml_el *c = xml_first_el(el); c; c = xml_next_el(c))
		n++;
	if (block && !n) {
		ev_error(ev, SE_BAD_REQUEST, "No item to block"); /* §3.3 */
		return HOOK_DONE;
	}
	if (n > blocklist_max) {
		ev_error(ev, SE_RESOURCE_CONSTRAINT, "Too many items");
		return HOOK_DONE;
	}
	const char **jids = calloc(n + 1, sizeof(*jids));
	if (!jids)
		die_oom();
	size_t k = 0;
	for (struct xml_el *c = xml_first_el(el); c; c = xml_next_el(c)) {
		const char *v = c->ns && !strcmp(c->ns, NS_BLOCKING) && !strcmp(c->name, "item")
				    ? xml_attr(c, "jid")
				    : NULL;
		struct jid j;
		if (!v) {
			free(jids);
			ev_error(ev, SE_BAD_REQUEST, "Each item needs a jid");
			return HOOK_DONE;
		}
		if (jid_parse(&j, v, strlen(v), st->arena) < 0) {
			free(jids);
			ev_error(ev, SE_JID_MALFORMED, NULL); /* §3.3 */
			return HOOK_DONE;
		}
		bool dup = false;
		for (size_t i = 0; i < k && !dup; i++)
			dup = !strcmp(jids[i], j.s);
		if (!dup)
			jids[k++] = j.s;
	}
	struct change_req *q = calloc(1, sizeof(*q));
	if (!q)
		die_oom();
	q->st = st;
	q->what = block ? "block" : "unblock";
	q->op = block ? OP_ADD : k ? OP_REMOVE : OP_CLEAR; /* §3.5: <unblock/> is all */
	q->jids = jids;
	q->n = k;
	ev->st = NULL;
	struct jid_names names;
	jid_names(&st->from, &names);
	enum blocklist_op op = BLOCKLIST_ADD;
	if (!block)
		op = k ? BLOCKLIST_REMOVE : BLOCKLIST_REMOVE_ALL;
	snprintf(q->acct, sizeof(q->acct), "%.*s", (int)jid_bare_len(&st->from), st->from.s);
	store_blocklist_change(server_store(), worker_origin(), host_domain(ev->host), names.user,
			       op, jids, k, blocklist_max, change_apply, change_done, q);
	return HOOK_DONE;
}

static enum hook_rc list_iq(struct hook_ev *ev)
{
	/* §3.2: asking makes this resource one that gets pushes. */
	if (ev->origin)
		*session_slot(ev->origin, SLOT_BLOCKING) = INTERESTED;
	struct stanza *st = ev->st;
	char acct[2 * JID_PART_MAX + 2];
	snprintf(acct, sizeof(acct), "%.*s", (int)jid_bare_len(&st->from), st->from.s);
	ev_result(ev);
	table_items(acct, st->arena, xml_add_child(st->arena, st->el, NS_BLOCKING, "blocklist"));
	ev_send(ev);
	return HOOK_DONE;
}

static const struct iq_reg blocking_iqs[] = {
    {NS_BLOCKING, "blocklist", IQ_GET, DEST_SELF, list_iq},
    {NS_BLOCKING, "block", IQ_SET, DEST_SELF, change_iq},
    {NS_BLOCKING, "unblock", IQ_SET, DEST_SELF, change_iq},
    {0},
};

static enum hook_rc on_account_removed(struct hook_ev *ev)
{
	char acct[2 * JID_PART_MAX + 2];
	snprintf(acct, sizeof(acct), "%.*s", (int)jid_bare_len(&ev->st->from), ev->st->from.s);
	table_change(acct, OP_CLEAR, NULL, 0);
	return HOOK_PASS;
}

static const struct hook_reg blocking_hooks[] = {
    {HP_FILTER, 0, on_filter},
    {HP_ACCOUNT_REMOVED, 0, on_account_removed},
    {.fn = NULL},
};

const struct module mod_blocking = {
    .name = "blocking",
    .features = (const char *const[]){NS_BLOCKING, NULL},
    .iqs = blocking_iqs,
    .hooks = blocking_hooks,
    .xeps = (const struct xep_ref[]){{191, "1.3", "complete"}, {0}},
    .start = blocking_start,
    .stop = blocking_stop,
};
