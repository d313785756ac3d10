#include "core/loop.h"
#include "core/log.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define MAX_EVENTS	256
#define MAX_SLEEP_HOOKS 8

struct post_node {
	struct post_node *next;
	post_fn *fn;
	void *arg;
};

struct loop {
	int epfd;
	bool stop, no_sleep;
	uint64_t now;
	struct timer **heap;
	size_t heap_len, heap_cap;
	/* Inbox: producers push onto a Treiber stack; the owner takes the
	 * whole stack at once and runs it in FIFO order. The eventfd is
	 * written only on the empty -> non-empty transition. */
	_Atomic(struct post_node *) inbox;
	struct io wake;
	struct {
		void (*fn)(struct loop *l, void *ud);
		void *ud;
	} sleep_hooks[MAX_SLEEP_HOOKS];
	int n_sleep_hooks;
	void *ud;
};

uint64_t clock_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void inbox_drain(struct io *io, uint32_t events)
{
	struct loop *l = io->ud;
	uint64_t v;
	ssize_t r = read(l->wake.fd, &v, sizeof(v));
	(void)r;
	(void)events;
	struct post_node *n = atomic_exchange_explicit(&l->inbox, NULL, memory_order_acquire);
	struct post_node *rev = NULL;
	while (n) {
		struct post_node *next = n->next;
		n->next = rev;
		rev = n;
		n = next;
	}
	while (rev) {
		struct post_node *next = rev->next;
		rev->fn(rev->arg);
		free(rev);
		rev = next;
	}
}

struct loop *loop_new(void)
{
	struct loop *l = calloc(1, sizeof(*l));
	if (!l)
		die_oom();
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (l->epfd < 0)
		die("epoll_create1: %s", strerror(errno));
	int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (efd < 0)
		die("eventfd: %s", strerror(errno));
	atomic_init(&l->inbox, NULL);
	l->wake = (struct io){.fd = efd, .cb = inbox_drain, .ud = l};
	if (loop_io_add(l, &l->wake, IO_READ) < 0)
		die("epoll_ctl: %s", strerror(errno));
	l->now = clock_ms();
	return l;
}

bool loop_drain(struct loop *l)
{
	bool ran = false;
	while (atomic_load_explicit(&l->inbox, memory_order_acquire)) {
		inbox_drain(&l->wake, 0);
		ran = true;
	}
	return ran;
}

void loop_free(struct loop *l)
{
	if (!l)
		return;
	inbox_drain(&l->wake, 0);
	close(l->wake.fd);
	close(l->epfd);
	free(l->heap);
	free(l);
}

void loop_stop(struct loop *l)
{
	l->stop = true;
}

void *loop_userdata(struct loop *l)
{
	return l->ud;
}

void loop_set_userdata(struct loop *l, void *ud)
{
	l->ud = ud;
}

uint64_t loop_now(struct loop *l)
{
	return l->now;
}

int loop_io_add(struct loop *l, struct io *io, uint32_t events)
{
	struct epoll_event ev = {.events = events, .data.ptr = io};
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, io->fd, &ev) < 0)
		return -errno;
	io->events = events;
	return 0;
}

int loop_io_mod(struct loop *l, struct io *io, uint32_t events)
{
	if (io->events == events)
		return 0;
	struct epoll_event ev = {.events = events, .data.ptr = io};
	if (epoll_ctl(l->epfd, EPOLL_CTL_MOD, io->fd, &ev) < 0)
		return -errno;
	io->events = events;
	return 0;
}

void loop_io_del(struct loop *l, struct io *io)
{
	epoll_ctl(l->epfd, EPOLL_CTL_DEL, io->fd, NULL);
	io->events = 0;
}

/* Timers: binary min-heap on `when`. */
void timer_init(struct timer *t, timer_cb *cb, void *ud)
{
	t->when = 0;
	t->idx = SIZE_MAX;
	t->cb = cb;
	t->ud = ud;
	t->loop = NULL;
}

static void heap_swap(struct loop *l, size_t a, size_t b)
{
	struct timer *t = l->heap[a];
	l->heap[a] = l->heap[b];
	l->heap[b] = t;
	l->heap[a]->idx = a;
	l->heap[b]->idx = b;
}

static void heap_up(struct loop *l, size_t i)
{
	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (l->heap[p]->when <= l->heap[i]->when)
			break;
		heap_swap(l, p, i);
		i = p;
	}
}

static void heap_down(struct loop *l, size_t i)
{
	for (;;) {
		size_t c = 2 * i + 1, m = i;
		if (c < l->heap_len && l->heap[c]->when < l->heap[m]->when)
			m = c;
		if (c + 1 < l->heap_len && l->heap[c + 1]->when < l->heap[m]->when)
			m = c + 1;
		if (m == i)
			break;
		heap_swap(l, i, m);
		i = m;
	}
}

void loop_timer_cancel(struct loop *l, struct timer *t)
{
	if (t->idx == SIZE_MAX)
		return;
	size_t i = t->idx;
	l->heap_len--;
	if (i != l->heap_len) {
		l->heap[i] = l->heap[l->heap_len];
		l->heap[i]->idx = i;
		heap_down(l, i);
		heap_up(l, i);
	}
	t->idx = SIZE_MAX;
}

void loop_timer_set(struct loop *l, struct timer *t, uint64_t ms_from_now)
{
	loop_timer_cancel(l, t);
	if (l->heap_len == l->heap_cap) {
		size_t cap = l->heap_cap ? l->heap_cap * 2 : 64;
		struct timer **h = realloc(l->heap, cap * sizeof(*h));
		if (!h)
			die_oom();
		l->heap = h;
		l->heap_cap = cap;
	}
	t->loop = l;
	t->when = l->now + ms_from_now;
	t->idx = l->heap_len;
	l->heap[l->heap_len++] = t;
	heap_up(l, t->idx);
}

static void run_timers(struct loop *l)
{
	while (l->heap_len && l->heap[0]->when <= l->now) {
		struct timer *t = l->heap[0];
		loop_timer_cancel(l, t);
		t->cb(t);
	}
}

void loop_post(struct loop *l, post_fn *fn, void *arg)
{
	struct post_node *n = malloc(sizeof(*n));
	if (!n)
		die_oom();
	n->fn = fn;
	n->arg = arg;
	struct post_node *head = atomic_load_explicit(&l->inbox, memory_order_relaxed);
	do
		n->next = head;
	while (!atomic_compare_exchange_weak_explicit(&l->inbox, &head, n, memory_order_release,
						      memory_order_relaxed));
	if (!head) {
		uint64_t one = 1;
		ssize_t w = write(l->wake.fd, &one, sizeof(one));
		(void)w;
	}
}

void loop_on_before_sleep(struct loop *l, void (*fn)(struct loop *l, void *ud), void *ud)
{
	ASSERT(l->n_sleep_hooks < MAX_SLEEP_HOOKS);
	l->sleep_hooks[l->n_sleep_hooks].fn = fn;
	l->sleep_hooks[l->n_sleep_hooks].ud = ud;
	l->n_sleep_hooks++;
}

void loop_no_sleep(struct loop *l)
{
	l->no_sleep = true;
}

void loop_run(struct loop *l)
{
	struct epoll_event evs[MAX_EVENTS];
	l->stop = false;
	while (!l->stop) {
		for (int i = 0; i < l->n_sleep_hooks; i++)
			l->sleep_hooks[i].fn(l, l->sleep_hooks[i].ud);
		if (l->stop)
			break;
		int timeout = -1;
		if (l->no_sleep) {
			timeout = 0;
			l->no_sleep = false;
		} else if (l->heap_len) {
			uint64_t now = clock_ms();
			uint64_t when = l->heap[0]->when;
			timeout = when <= now ? 0 : (int)(when - now > 60000 ? 60000 : when - now);
		}
		int n = epoll_wait(l->epfd, evs, MAX_EVENTS, timeout);
		if (n < 0 && errno != EINTR)
			die("epoll_wait: %s", strerror(errno));
		l->now = clock_ms();
		for (int i = 0; i < n; i++) {
			struct io *io = evs[i].data.ptr;
			io->cb(io, evs[i].events);
		}
		run_timers(l);
	}
}
