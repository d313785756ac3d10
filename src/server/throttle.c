#include "server/throttle.h"

#include <openssl/rand.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>

#define THROTTLE_SLOTS 8192
#define PROBES	       8

struct slot {
	uint64_t hash; /* 0: empty */
	uint64_t window_start;
	uint64_t window; /* ms */
	unsigned count;
};

static struct slot slots[THROTTLE_SLOTS];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t seed; /* random, set once under the lock */

/* FNV-1a over a random per-process seed: keys are attacker-chosen (IPs,
 * user names), so which keys share a neighbourhood must not be
 * predictable. A collision only merges two counters, which errs on the
 * side of throttling. Called with the lock held. */
static uint64_t key_hash(const char *k)
{
	while (!seed)
		if (RAND_bytes((unsigned char *)&seed, sizeof(seed)) != 1)
			seed = 0; /* keep trying: OpenSSL's RNG does not fail once seeded */
	uint64_t h = 0xcbf29ce484222325ull ^ seed;
	for (; *k; k++) {
		h ^= (unsigned char)*k;
		h *= 0x100000001b3ull;
	}
	return h ? h : 1;
}

static struct slot *find(uint64_t h, uint64_t now, uint64_t window, int create)
{
	size_t base = h % THROTTLE_SLOTS;
	struct slot *victim = NULL;
	for (size_t i = 0; i < PROBES; i++) {
		struct slot *s = &slots[(base + i) % THROTTLE_SLOTS];
		if (s->hash == h) {
			if (now - s->window_start >= s->window) {
				s->window_start = now;
				s->count = 0;
			}
			return s;
		}
		bool expired = !s->hash || now - s->window_start >= s->window;
		if (expired && !victim)
			victim = s;
	}
	if (!create)
		return NULL;
	if (!victim) {
		/* Full neighbourhood: reuse the oldest window. */
		victim = &slots[base];
		for (size_t i = 1; i < PROBES; i++) {
			struct slot *s = &slots[(base + i) % THROTTLE_SLOTS];
			if (s->window_start < victim->window_start)
				victim = s;
		}
	}
	victim->hash = h;
	victim->window_start = now;
	victim->window = window;
	victim->count = 0;
	return victim;
}

unsigned throttle_count_in(const char *key, uint64_t now_ms, uint64_t window_ms)
{
	pthread_mutex_lock(&lock);
	uint64_t h = key_hash(key);
	struct slot *s = find(h, now_ms, window_ms, 0);
	unsigned n = s ? s->count : 0;
	pthread_mutex_unlock(&lock);
	return n;
}

unsigned throttle_add(const char *key, uint64_t now_ms, uint64_t window_ms)
{
	pthread_mutex_lock(&lock);
	uint64_t h = key_hash(key);
	struct slot *s = find(h, now_ms, window_ms, 1);
	unsigned n = ++s->count;
	pthread_mutex_unlock(&lock);
	return n;
}

unsigned throttle_count(const char *key, uint64_t now_ms)
{
	return throttle_count_in(key, now_ms, THROTTLE_WINDOW_MS);
}

unsigned throttle_fail(const char *key, uint64_t now_ms)
{
	return throttle_add(key, now_ms, THROTTLE_WINDOW_MS);
}
