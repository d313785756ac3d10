/* One event loop per worker thread (epoll), in the spirit of Redis's ae.c:
 * fd watchers, timers in a min-heap, a lock-free inbox for work posted from
 * other threads (MPSC stack + eventfd), and before-sleep hooks where
 * batched writes and deferred frees happen. Everything registered on a
 * loop is touched only by the loop's own thread, except loop_post(). */
#ifndef PARLEY_LOOP_H
#define PARLEY_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct loop;
struct io;
struct timer;

typedef void io_cb(struct io *io, uint32_t events);
typedef void timer_cb(struct timer *t);
typedef void post_fn(void *arg);

#define IO_READ	 0x001u /* EPOLLIN */
#define IO_WRITE 0x004u /* EPOLLOUT */

struct io {
	int fd;
	uint32_t events; /* currently watched */
	io_cb *cb;
	void *ud;
};

struct timer {
	uint64_t when; /* ms, loop clock */
	size_t idx;    /* position in the heap, or SIZE_MAX when not armed */
	timer_cb *cb;
	void *ud;
	struct loop *loop;
};

struct loop *loop_new(void);
void loop_free(struct loop *l);
/* Runs what is posted to l until nothing is left, on the calling thread
 * (the loop's own, or one that has taken its place after it stopped).
 * Returns whether anything ran. */
bool loop_drain(struct loop *l);
void loop_run(struct loop *l);	/* until loop_stop() */
void loop_stop(struct loop *l); /* from the loop's own thread */

int loop_io_add(struct loop *l, struct io *io, uint32_t events);
int loop_io_mod(struct loop *l, struct io *io, uint32_t events);
void loop_io_del(struct loop *l, struct io *io);

void timer_init(struct timer *t, timer_cb *cb, void *ud);
void loop_timer_set(struct loop *l, struct timer *t, uint64_t ms_from_now);
void loop_timer_cancel(struct loop *l, struct timer *t);
static inline bool timer_armed(const struct timer *t)
{
	return t->idx != SIZE_MAX;
}

uint64_t loop_now(struct loop *l); /* ms, monotonic, cached per iteration */
uint64_t clock_ms(void);	   /* uncached monotonic ms */

/* Thread-safe: runs fn(arg) on l's thread soon. Never fails (aborts on OOM). */
void loop_post(struct loop *l, post_fn *fn, void *arg);

/* Called once per iteration before the loop sleeps. */
void loop_on_before_sleep(struct loop *l, void (*fn)(struct loop *l, void *ud), void *ud);
/* Makes the next epoll_wait return at once (work left to do, e.g. TLS
 * records already decrypted by OpenSSL that epoll cannot see). */
void loop_no_sleep(struct loop *l);

void *loop_userdata(struct loop *l);
void loop_set_userdata(struct loop *l, void *ud);

#endif
