#include "core/arena.h"
#include "core/log.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct chunk {
	struct chunk *next;
	size_t size, used;
	_Alignas(16) unsigned char data[];
};

struct arena {
	struct chunk *head;
	size_t total;
	struct chunk first; /* must be last: its data[] runs into the allocation */
};

#define ARENA_DEFAULT 1024

struct arena *arena_new(size_t first_chunk)
{
	if (first_chunk < ARENA_DEFAULT)
		first_chunk = ARENA_DEFAULT;
	struct arena *a = malloc(sizeof(*a) + first_chunk);
	if (!a)
		die_oom();
	a->first.next = NULL;
	a->first.size = first_chunk;
	a->first.used = 0;
	a->head = &a->first;
	a->total = sizeof(*a) + first_chunk;
	return a;
}

void arena_free(struct arena *a)
{
	if (!a)
		return;
	struct chunk *c = a->head;
	while (c != &a->first) {
		struct chunk *n = c->next;
		free(c);
		c = n;
	}
	free(a);
}

void *arena_alloc(struct arena *a, size_t n)
{
	n = (n + 15) & ~(size_t)15;
	struct chunk *c = a->head;
	if (c->size - c->used < n) {
		size_t sz = c->size * 2;
		if (sz < n)
			sz = n;
		if (sz > 1u << 20 && n < 1u << 20)
			sz = 1u << 20;
		c = malloc(sizeof(*c) + sz);
		if (!c)
			die_oom();
		c->size = sz;
		c->used = 0;
		c->next = a->head;
		a->head = c;
		a->total += sizeof(*c) + sz;
	}
	void *p = c->data + c->used;
	c->used += n;
	return p;
}

void *arena_zalloc(struct arena *a, size_t n)
{
	void *p = arena_alloc(a, n);
	memset(p, 0, n);
	return p;
}

char *arena_strndup(struct arena *a, const char *s, size_t n)
{
	char *p = arena_alloc(a, n + 1);
	memcpy(p, s, n);
	p[n] = 0;
	return p;
}

char *arena_strdup(struct arena *a, const char *s)
{
	return arena_strndup(a, s, strlen(s));
}

size_t arena_used(const struct arena *a)
{
	return a->total;
}
