#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "core/loop.h"

static int order[64];
static int n_order;

static void record(struct timer *t)
{
	order[n_order++] = (int)(intptr_t)t->ud;
}

static void stop_loop(struct timer *t)
{
	loop_stop(t->loop);
}

/* Timers fire in deadline order, cancelled ones never, re-armed ones at
 * their new time. */
static void test_timer_order(void **state)
{
	(void)state;
	struct loop *l = loop_new();
	struct timer t[10], stop;
	int delays[10] = {50, 10, 30, 20, 40, 5, 45, 15, 35, 25};
	n_order = 0;
	for (int i = 0; i < 10; i++) {
		timer_init(&t[i], record, (void *)(intptr_t)delays[i]);
		loop_timer_set(l, &t[i], (uint64_t)delays[i]);
	}
	loop_timer_cancel(l, &t[2]); /* 30 never fires */
	loop_timer_cancel(l, &t[2]); /* twice is harmless */
	loop_timer_set(l, &t[0], 1); /* 50 re-armed to fire first */
	assert_false(timer_armed(&t[2]));
	assert_true(timer_armed(&t[0]));
	timer_init(&stop, stop_loop, NULL);
	loop_timer_set(l, &stop, 80);
	loop_run(l);
	int want[] = {50, 5, 10, 15, 20, 25, 35, 40, 45};
	assert_int_equal(n_order, 9);
	for (int i = 0; i < 9; i++)
		assert_int_equal(order[i], want[i]);
	loop_free(l);
}

/* Many timers in random order come out sorted (heap property). */
static void test_timer_heap(void **state)
{
	(void)state;
	struct loop *l = loop_new();
	enum { N = 2000 };
	struct timer *t = calloc(N, sizeof(*t));
	static int seen[N];
	srand(7);
	for (int i = 0; i < N; i++) {
		timer_init(&t[i], record, NULL);
		loop_timer_set(l, &t[i], (uint64_t)(rand() % 5000) + 100000);
	}
	for (int i = 0; i < N; i += 3)
		loop_timer_cancel(l, &t[i]);
	/* Pop them by walking the deadlines: the earliest armed timer must
	 * always be no later than any other. */
	uint64_t last = 0;
	int armed = 0;
	for (int i = 0; i < N; i++)
		if (timer_armed(&t[i]))
			armed++;
	for (int k = 0; k < armed; k++) {
		int best = -1;
		for (int i = 0; i < N; i++)
			if (timer_armed(&t[i]) && (best < 0 || t[i].when < t[best].when))
				best = i;
		assert_true(t[best].when >= last);
		last = t[best].when;
		seen[best] = 1;
		loop_timer_cancel(l, &t[best]);
	}
	for (int i = 0; i < N; i++)
		assert_int_equal(seen[i], i % 3 != 0);
	free(t);
	loop_free(l);
}

struct post_ctx {
	struct loop *l;
	int count;
};

static struct post_ctx pctx;
static int values[3][1000];

static void count_post(void *arg)
{
	int *v = arg;
	pctx.count++;
	if (pctx.count == 3000)
		loop_stop(pctx.l);
	(void)v;
}

static void *producer(void *arg)
{
	int *vals = arg;
	for (int i = 0; i < 1000; i++)
		loop_post(pctx.l, count_post, &vals[i]);
	return NULL;
}

/* Three threads post 1000 closures each; all run on the loop's thread. */
static void test_post_threads(void **state)
{
	(void)state;
	pctx.l = loop_new();
	pctx.count = 0;
	pthread_t th[3];
	for (int i = 0; i < 3; i++)
		assert_int_equal(pthread_create(&th[i], NULL, producer, values[i]), 0);
	struct timer guard;
	timer_init(&guard, stop_loop, NULL);
	loop_timer_set(pctx.l, &guard, 10000); /* never hang the suite */
	loop_run(pctx.l);
	for (int i = 0; i < 3; i++)
		pthread_join(th[i], NULL);
	assert_int_equal(pctx.count, 3000);
	loop_free(pctx.l);
}

static int fifo[100], n_fifo;

static void fifo_post(void *arg)
{
	fifo[n_fifo++] = (int)(intptr_t)arg;
	if (n_fifo == 100)
		loop_stop(pctx.l);
}

/* Posts from one thread run in the order they were posted. */
static void test_post_fifo(void **state)
{
	(void)state;
	pctx.l = loop_new();
	n_fifo = 0;
	for (int i = 0; i < 100; i++)
		loop_post(pctx.l, fifo_post, (void *)(intptr_t)i);
	loop_run(pctx.l);
	for (int i = 0; i < 100; i++)
		assert_int_equal(fifo[i], i);
	loop_free(pctx.l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_timer_order),
	    cmocka_unit_test(test_timer_heap),
	    cmocka_unit_test(test_post_threads),
	    cmocka_unit_test(test_post_fifo),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
