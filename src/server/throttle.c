#include "server/throttle.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "core/log.h"

#define PROBES	     8
#define GAUGE_SLOTS  16384 /* above the descriptors one process can hold here */
#define WINDOW_SLOTS 8192

struct slot {
	uint64_t hash; /* 0: empty */
	uint64_t window_start;
	unsigned count;
};

struct table {
	pthread_mutex_t lock;
	uint64_t window; /* ms */
	struct slot slots[WINDOW_SLOTS];
};

static struct table tables[THR_KINDS] = {
    [THR_AUTH] = {PTHREAD_MUTEX_INITIALIZER, 60u * 1000u, {{0}}},
    [THR_PASSWD] = {PTHREAD_MUTEX_INITIALIZER, 60u * 1000u, {{0}}},
    [THR_REGISTER] = {PTHREAD_MUTEX_INITIALIZER, 3600u * 1000u, {{0}}},
    [THR_CONNECT] = {PTHREAD_MUTEX_INITIALIZER, THROTTLE_CONNECT_WINDOW_S * 1000u, {{0}}},
};

struct gauge {
	uint64_t hash; /* 0: empty */
	unsigned count;
};

static struct gauge gauges[GAUGE_SLOTS];
static pthread_mutex_t gauge_lock = PTHREAD_MUTEX_INITIALIZER;

static pthread_once_t seed_once = PTHREAD_ONCE_INIT;
static uint64_t seed;

static void make_seed(void)
{
	if (RAND_bytes((unsigned char *)&seed, sizeof(seed)) != 1)
		die("RAND_bytes failed");
}

/* FNV-1a over a random per-process seed: keys are attacker-chosen (IPs,
 * user names), so which keys share a neighbourhood must not be
 * predictable. A collision only merges two counters, which errs on the
 * side of throttling. */
static uint64_t key_hash(const char *k)
{
	pthread_once(&seed_once, make_seed);
	uint64_t h = 0xcbf29ce484222325ull ^ seed;
	for (; *k; k++) {
		h ^= (unsigned char)*k;
		h *= 0x100000001b3ull;
	}
	return h ? h : 1;
}

/* With the table's lock held. */
static struct slot *find(struct table *t, uint64_t h, uint64_t now, int create)
{
	size_t base = h % WINDOW_SLOTS;
	struct slot *victim = NULL;
	for (size_t i = 0; i < PROBES; i++) {
		struct slot *s = &t->slots[(base + i) % WINDOW_SLOTS];
		if (s->hash == h) {
			if (now - s->window_start >= t->window) {
				s->window_start = now;
				s->count = 0;
			}
			return s;
		}
		bool expired = !s->hash || now - s->window_start >= t->window;
		if (expired && !victim)
			victim = s;
	}
	if (!create)
		return NULL;
	if (!victim) {
		/* Full neighbourhood: reuse the oldest window. */
		victim = &t->slots[base];
		for (size_t i = 1; i < PROBES; i++) {
			struct slot *s = &t->slots[(base + i) % WINDOW_SLOTS];
			if (s->window_start < victim->window_start)
				victim = s;
		}
	}
	victim->hash = h;
	victim->window_start = now;
	victim->count = 0;
	return victim;
}

unsigned throttle_count(enum throttle_kind k, const char *key, uint64_t now_ms)
{
	struct table *t = &tables[k];
	uint64_t h = key_hash(key);
	pthread_mutex_lock(&t->lock);
	struct slot *s = find(t, h, now_ms, 0);
	unsigned n = s ? s->count : 0;
	pthread_mutex_unlock(&t->lock);
	return n;
}

unsigned throttle_add(enum throttle_kind k, const char *key, uint64_t now_ms)
{
	struct table *t = &tables[k];
	uint64_t h = key_hash(key);
	pthread_mutex_lock(&t->lock);
	struct slot *s = find(t, h, now_ms, 1);
	unsigned n = ++s->count;
	pthread_mutex_unlock(&t->lock);
	return n;
}

void throttle_ip_key(const struct sockaddr_storage *ss, char out[THROTTLE_IP_KEY])
{
	if (ss->ss_family == AF_INET) {
		inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, out,
			  THROTTLE_IP_KEY);
		return;
	}
	if (ss->ss_family != AF_INET6) {
		snprintf(out, THROTTLE_IP_KEY, "local");
		return;
	}
	const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;
	if (IN6_IS_ADDR_V4MAPPED(a)) {
		inet_ntop(AF_INET, a->s6_addr + 12, out, THROTTLE_IP_KEY);
		return;
	}
	/* RFC 6177: an IPv6 subscriber gets at least a /64, so one address
	 * per connection would be free for them. */
	struct in6_addr net = *a;
	memset(net.s6_addr + 8, 0, 8);
	char text[INET6_ADDRSTRLEN];
	inet_ntop(AF_INET6, &net, text, sizeof(text));
	snprintf(out, THROTTLE_IP_KEY, "%s/64", text);
}

enum gauge_rc throttle_gauge_inc(const char *key, unsigned max, uint64_t *handle)
{
	uint64_t h = key_hash(key);
	size_t base = h % GAUGE_SLOTS;
	enum gauge_rc rc = GAUGE_UNTRACKED;
	pthread_mutex_lock(&gauge_lock);
	struct gauge *free_slot = NULL, *g = NULL;
	for (size_t i = 0; i < PROBES; i++) {
		struct gauge *s = &gauges[(base + i) % GAUGE_SLOTS];
		if (s->hash == h) {
			g = s;
			break;
		}
		if (!s->hash && !free_slot)
			free_slot = s;
	}
	if (!g && free_slot) {
		g = free_slot;
		g->hash = h;
		g->count = 0;
	}
	if (g) {
		if (g->count >= max) {
			rc = GAUGE_FULL;
		} else {
			g->count++;
			*handle = h;
			rc = GAUGE_OK;
		}
	}
	pthread_mutex_unlock(&gauge_lock);
	return rc;
}

void throttle_gauge_dec(uint64_t h)
{
	size_t base = h % GAUGE_SLOTS;
	pthread_mutex_lock(&gauge_lock);
	for (size_t i = 0; i < PROBES; i++) {
		struct gauge *s = &gauges[(base + i) % GAUGE_SLOTS];
		if (s->hash == h) {
			ASSERT(s->count > 0);
			if (--s->count == 0)
				s->hash = 0;
			break;
		}
	}
	pthread_mutex_unlock(&gauge_lock);
}
