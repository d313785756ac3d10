/* Growable byte buffer with a consumed-prefix offset, used for output queues
 * and serialization. */
#ifndef PARLEY_BUF_H
#define PARLEY_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
	char *data; /* owned */
	size_t off; /* bytes already consumed from the front */
	size_t len; /* end of valid data (data[off..len) is pending) */
	size_t cap;
};

#define BUF_INIT                                                                                   \
	{                                                                                          \
		0                                                                                  \
	}

void buf_free(struct buf *b);
void buf_reserve(struct buf *b, size_t extra); /* aborts on OOM */
void buf_add(struct buf *b, const void *p, size_t n);
void buf_adds(struct buf *b, const char *s);
void buf_addc(struct buf *b, char c);
void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_consume(struct buf *b, size_t n); /* drop n bytes from the front */
void buf_reset(struct buf *b);		   /* empty, keep memory */
void buf_shrink(struct buf *b);		   /* release memory if empty */

static inline size_t buf_pending(const struct buf *b)
{
	return b->len - b->off;
}
static inline const char *buf_head(const struct buf *b)
{
	return b->data + b->off;
}

#endif
