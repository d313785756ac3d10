/* libFuzzer target: JID parsing and PRECIS preparation (src/xmpp/jid.c,
 * src/xmpp/precis.c). The input is one JID as a peer would send it.
 *
 * Oracles:
 *  - A parsed JID is consistent: s is NUL-terminated with len bytes, and
 *    the offsets cut it into "local@domain/resource" exactly.
 *  - Preparation is idempotent (RFC 7622 §3, RFC 8264 §7):
 *    prep(prep(x)) == prep(x), for the whole JID and for each part
 *    function on the raw input. A JID we stored in normalized form must
 *    parse to itself, or two spellings of one account could exist.
 *  - Parsing into an arena and with malloc gives the same result. */
#include "fuzz.h"

#include <string.h>

#include "core/arena.h"
#include "xmpp/jid.h"

static void check_shape(const struct jid *j)
{
	FUZZ_CHECK(j->s != NULL);
	FUZZ_CHECK(strlen(j->s) == j->len);
	FUZZ_CHECK(j->dom_len > 0);
	if (j->local_len) {
		FUZZ_CHECK(j->s[j->local_len] == '@');
		FUZZ_CHECK(j->dom_off == j->local_len + 1);
	} else {
		FUZZ_CHECK(j->dom_off == 0);
	}
	size_t dom_end = (size_t)j->dom_off + j->dom_len;
	if (j->res_len) {
		FUZZ_CHECK(j->s[dom_end] == '/');
		FUZZ_CHECK(j->res_off == dom_end + 1);
		FUZZ_CHECK((size_t)j->res_off + j->res_len == j->len);
	} else {
		FUZZ_CHECK(dom_end == j->len);
	}
	FUZZ_CHECK(j->local_len <= JID_PART_MAX && j->dom_len <= JID_PART_MAX &&
		   j->res_len <= JID_PART_MAX);
}

static bool same_jid(const struct jid *a, const struct jid *b)
{
	return a->len == b->len && memcmp(a->s, b->s, a->len) == 0 &&
	       a->local_len == b->local_len && a->dom_off == b->dom_off &&
	       a->dom_len == b->dom_len && a->res_off == b->res_off && a->res_len == b->res_len;
}

/* A part of a normalized JID is already prepared: prep must keep it. */
static void check_part_fixed(int (*prep)(const char *, size_t, char *, size_t), const char *p,
			     size_t len)
{
	char out[JID_PART_MAX + 1];

	if (len == 0)
		return;
	int n = prep(p, len, out, sizeof out);
	FUZZ_CHECK(n >= 0 && (size_t)n == len && memcmp(out, p, len) == 0);
}

static void check_prep(int (*prep)(const char *, size_t, char *, size_t), const char *in,
		       size_t len)
{
	char once[JID_PART_MAX + 1], twice[JID_PART_MAX + 1];

	int n = prep(in, len, once, sizeof once);
	if (n < 0)
		return;
	FUZZ_CHECK(n > 0 && n <= JID_PART_MAX);
	FUZZ_CHECK(once[n] == '\0' && memchr(once, '\0', (size_t)n) == NULL);
	int m = prep(once, (size_t)n, twice, sizeof twice);
	if (m != n || memcmp(once, twice, (size_t)n) != 0) {
		fprintf(stderr, "not idempotent:\n once (%d): %.*s\n twice (%d): %.*s\n", n, n,
			once, m, m < 0 ? 0 : m, twice);
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *in = (const char *)data;
	struct jid j, again, in_arena, bare;
	struct arena *a = arena_new(0);

	int rc = jid_parse(&j, in, size, NULL);
	int rc_arena = jid_parse(&in_arena, in, size, a);
	FUZZ_CHECK(rc == rc_arena);
	if (rc == 0) {
		check_shape(&j);
		FUZZ_CHECK(same_jid(&j, &in_arena));
		FUZZ_CHECK(jid_eq(&j, &in_arena) && jid_bare_eq(&j, &in_arena));

		if (jid_parse(&again, j.s, j.len, NULL) != 0) {
			fprintf(stderr, "normalized JID does not parse: %s\n", j.s);
			abort();
		}
		if (!same_jid(&j, &again)) {
			fprintf(stderr, "not idempotent:\n once: %s\n twice: %s\n", j.s, again.s);
			abort();
		}
		FUZZ_CHECK(jid_eq(&j, &again));
		jid_free(&again);

		check_part_fixed(jid_prep_local, j.s, j.local_len);
		check_part_fixed(jid_prep_domain, j.s + j.dom_off, j.dom_len);
		check_part_fixed(jid_prep_resource, j.s + j.res_off, j.res_len);

		FUZZ_CHECK(jid_bare(&bare, &j, a) == 0);
		check_shape(&bare);
		FUZZ_CHECK(jid_is_bare(&bare) && bare.len == jid_bare_len(&j));
		FUZZ_CHECK(memcmp(bare.s, j.s, bare.len) == 0 && jid_bare_eq(&bare, &j));
		FUZZ_CHECK(jid_eq(&bare, &j) == jid_is_bare(&j));
		jid_free(&j);
	}
	arena_free(a);

	check_prep(jid_prep_local, in, size);
	check_prep(jid_prep_domain, in, size);
	check_prep(jid_prep_resource, in, size);
	return 0;
}
