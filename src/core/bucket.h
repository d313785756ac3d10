/* A token bucket for rate limits: rate tokens per second, holding at most
 * cap, counted in thousandths of a token so that slow rates refill
 * smoothly (1 token/s gains 1 milli-token per millisecond). The level may
 * go negative: whoever spent past zero waits bucket_wait_ms(). */
#ifndef PARLEY_BUCKET_H
#define PARLEY_BUCKET_H

#include <stdint.h>

#define BUCKET_MAX_GAP_MS (3600u * 1000u) /* caps dt * rate against overflow */

struct bucket {
	int64_t milli; /* tokens * 1000 */
	uint64_t at;   /* loop ms of the last refill */
};

static inline void bucket_fill(struct bucket *b, uint64_t now, uint64_t cap)
{
	b->milli = (int64_t)cap * 1000;
	b->at = now;
}

static inline void bucket_refill(struct bucket *b, uint64_t now, uint64_t rate, uint64_t cap)
{
	uint64_t dt = now - b->at;
	if (dt > BUCKET_MAX_GAP_MS)
		dt = BUCKET_MAX_GAP_MS;
	b->at = now;
	b->milli += (int64_t)(dt * rate);
	if (b->milli > (int64_t)cap * 1000)
		b->milli = (int64_t)cap * 1000;
}

static inline void bucket_take(struct bucket *b, uint64_t tokens)
{
	b->milli -= (int64_t)tokens * 1000;
}

/* Milliseconds until the level is positive again at rate; 0 if it is. */
static inline uint64_t bucket_wait_ms(const struct bucket *b, uint64_t rate)
{
	if (b->milli >= 0 || !rate)
		return 0;
	return (uint64_t)(-b->milli) / rate + 1;
}

#endif
