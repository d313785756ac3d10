#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "core/arena.h"
#include "core/buf.h"

static void test_arena_alloc(void **state)
{
	(void)state;
	struct arena *a = arena_new(0);
	char *p[2000];
	for (int i = 0; i < 2000; i++) {
		p[i] = arena_alloc(a, (size_t)(i % 97) + 1);
		assert_int_equal((uintptr_t)p[i] % 16, 0);
		memset(p[i], i & 0xff, (size_t)(i % 97) + 1);
	}
	for (int i = 0; i < 2000; i++)
		assert_int_equal((unsigned char)p[i][0], i & 0xff);
	char *s = arena_strndup(a, "hello world", 5);
	assert_string_equal(s, "hello");
	char *big = arena_alloc(a, 3u << 20);
	big[(3u << 20) - 1] = 1;
	assert_true(arena_used(a) > (3u << 20));
	arena_free(a);
	arena_free(NULL);
}

static void test_buf(void **state)
{
	(void)state;
	struct buf b = BUF_INIT;
	buf_adds(&b, "abc");
	buf_printf(&b, "%d-%s", 42, "x");
	assert_int_equal(buf_pending(&b), 7);
	assert_memory_equal(buf_head(&b), "abc42-x", 7);
	buf_consume(&b, 2);
	assert_memory_equal(buf_head(&b), "c42-x", 5);
	buf_consume(&b, 5);
	assert_int_equal(buf_pending(&b), 0);
	buf_reset(&b);
	for (int i = 0; i < 10000; i++)
		buf_addc(&b, 'x');
	assert_int_equal(buf_pending(&b), 10000);
	buf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_arena_alloc),
	    cmocka_unit_test(test_buf),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
