/* The session registry (DESIGN §3): bare JID -> bound resources, shared by
 * all workers. Sharded: each shard is a small chained hash table with its
 * own mutex, so workers rarely contend, and a lookup copies out what the
 * caller needs (never a pointer into the table). */
#include "server/server.h"

#include <stdlib.h>
#include <string.h>

#define N_SHARDS      64
#define MAX_RESOURCES 64 /* per account; more gets resource-constraint */

struct reg_res {
	struct reg_res *next;
	struct reg_target t;
	char *resource; /* owned */
};

struct reg_user {
	struct reg_user *next;
	struct reg_res *res;
	unsigned n_res;
	uint64_t hash;
	char bare[]; /* "local@domain" */
};

struct shard {
	pthread_mutex_t lock;
	struct reg_user **buckets;
	size_t n_buckets, n_users;
};

static struct shard shards[N_SHARDS];

/* FNV-1a, 64 bit: the keys are normalized JIDs, not attacker-chosen
 * collisions at scale (only authenticated users are in here). */
static uint64_t hash_bytes(const char *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ull;
	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)p[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

void registry_init(void)
{
	for (int i = 0; i < N_SHARDS; i++) {
		pthread_mutex_init(&shards[i].lock, NULL);
		shards[i].n_buckets = 64;
		shards[i].buckets = calloc(64, sizeof(*shards[i].buckets));
		if (!shards[i].buckets)
			die_oom();
	}
}

static struct shard *shard_of(uint64_t h)
{
	return &shards[h % N_SHARDS];
}

static struct reg_user **find_user(struct shard *sh, uint64_t h, const char *bare, size_t len)
{
	struct reg_user **pp = &sh->buckets[(h / N_SHARDS) % sh->n_buckets];
	for (; *pp; pp = &(*pp)->next)
		if ((*pp)->hash == h && !strncmp((*pp)->bare, bare, len) && !(*pp)->bare[len])
			return pp;
	return pp;
}

static void grow(struct shard *sh)
{
	size_t nb = sh->n_buckets * 2;
	struct reg_user **b = calloc(nb, sizeof(*b));
	if (!b)
		die_oom();
	for (size_t i = 0; i < sh->n_buckets; i++) {
		struct reg_user *u = sh->buckets[i];
		while (u) {
			struct reg_user *next = u->next;
			size_t k = (u->hash / N_SHARDS) % nb;
			u->next = b[k];
			b[k] = u;
			u = next;
		}
	}
	free(sh->buckets);
	sh->buckets = b;
	sh->n_buckets = nb;
}

static const char *res_of(const struct jid *full)
{
	return full->s + full->res_off;
}

int registry_bind(const struct jid *full, struct session *s, bool kick_old, struct reg_target *old)
{
	size_t bl = jid_bare_len(full);
	uint64_t h = hash_bytes(full->s, bl);
	struct shard *sh = shard_of(h);
	int rc = 0;
	pthread_mutex_lock(&sh->lock);
	struct reg_user **pp = find_user(sh, h, full->s, bl);
	struct reg_user *u = *pp;
	if (!u) {
		if (sh->n_users >= sh->n_buckets)
			grow(sh);
		u = calloc(1, sizeof(*u) + bl + 1);
		if (!u)
			die_oom();
		memcpy(u->bare, full->s, bl);
		u->hash = h;
		pp = find_user(sh, h, full->s, bl);
		*pp = u;
		sh->n_users++;
	}
	struct reg_res *r;
	for (r = u->res; r; r = r->next)
		if (!strcmp(r->resource, res_of(full)))
			break;
	if (r) {
		if (!kick_old) {
			rc = -1;
			goto out;
		}
		*old = r->t; /* replaced in place: the old session is told to go */
		rc = 1;
	} else {
		if (u->n_res >= MAX_RESOURCES) {
			rc = -2;
			goto out;
		}
		r = calloc(1, sizeof(*r));
		if (!r)
			die_oom();
		r->resource = strdup(res_of(full));
		if (!r->resource)
			die_oom();
		r->next = u->res;
		u->res = r;
		u->n_res++;
	}
	r->t = (struct reg_target){.sess_id = s->id, .w = s->w, .sess = s, .priority = 0};
out:
	pthread_mutex_unlock(&sh->lock);
	return rc;
}

void registry_unbind(const struct jid *full, uint64_t sess_id)
{
	size_t bl = jid_bare_len(full);
	uint64_t h = hash_bytes(full->s, bl);
	struct shard *sh = shard_of(h);
	pthread_mutex_lock(&sh->lock);
	struct reg_user **pp = find_user(sh, h, full->s, bl);
	struct reg_user *u = *pp;
	if (u) {
		for (struct reg_res **rp = &u->res; *rp; rp = &(*rp)->next) {
			struct reg_res *r = *rp;
			/* Only our own entry: a newer session may have taken the name. */
			if (r->t.sess_id == sess_id && !strcmp(r->resource, res_of(full))) {
				*rp = r->next;
				free(r->resource);
				free(r);
				u->n_res--;
				break;
			}
		}
		if (!u->res) {
			*pp = u->next;
			free(u);
			sh->n_users--;
		}
	}
	pthread_mutex_unlock(&sh->lock);
}

void registry_set_presence(const struct jid *full, uint64_t sess_id, bool available, int prio)
{
	size_t bl = jid_bare_len(full);
	uint64_t h = hash_bytes(full->s, bl);
	struct shard *sh = shard_of(h);
	pthread_mutex_lock(&sh->lock);
	struct reg_user *u = *find_user(sh, h, full->s, bl);
	for (struct reg_res *r = u ? u->res : NULL; r; r = r->next)
		if (r->t.sess_id == sess_id) {
			r->t.available = available;
			r->t.priority = prio;
			break;
		}
	pthread_mutex_unlock(&sh->lock);
}

bool registry_find_full(const struct jid *full, struct reg_target *out)
{
	if (jid_is_bare(full))
		return false;
	size_t bl = jid_bare_len(full);
	uint64_t h = hash_bytes(full->s, bl);
	struct shard *sh = shard_of(h);
	bool found = false;
	pthread_mutex_lock(&sh->lock);
	struct reg_user *u = *find_user(sh, h, full->s, bl);
	for (struct reg_res *r = u ? u->res : NULL; r; r = r->next)
		if (!strcmp(r->resource, res_of(full))) {
			*out = r->t;
			found = true;
			break;
		}
	pthread_mutex_unlock(&sh->lock);
	return found;
}

size_t registry_find_bare(const struct jid *j, struct reg_target *out, size_t cap)
{
	size_t bl = jid_bare_len(j);
	uint64_t h = hash_bytes(j->s, bl);
	struct shard *sh = shard_of(h);
	size_t n = 0;
	pthread_mutex_lock(&sh->lock);
	struct reg_user *u = *find_user(sh, h, j->s, bl);
	for (struct reg_res *r = u ? u->res : NULL; r; r = r->next) {
		if (n < cap)
			out[n] = r->t;
		n++;
	}
	pthread_mutex_unlock(&sh->lock);
	return n;
}
