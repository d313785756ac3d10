/* XMPP addresses (RFC 7622): parsing and PRECIS normalization.
 * localpart: UsernameCaseMapped profile (RFC 8265 §3.3); domainpart: IDNA2008
 * via libidn2 (RFC 7622 §3.2, U-labels, lowercase, trailing dot removed, IP
 * literals allowed); resourcepart: OpaqueString profile (RFC 8265 §4.2).
 * Each part is 1..1023 bytes after preparation. */
#ifndef PARLEY_JID_H
#define PARLEY_JID_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct arena;

#define JID_PART_MAX 1023

/* A normalized JID as one string "local@domain/resource" with offsets.
 * A part that is absent has length 0 (and then no '@' or '/' for it). */
struct jid {
	const char *s;	    /* NUL-terminated normalized form; owned by the arena or malloc */
	uint16_t len;	    /* strlen(s) */
	uint16_t local_len; /* local part is s[0..local_len) */
	uint16_t dom_off, dom_len;
	uint16_t res_off, res_len; /* res_len 0: bare JID */
};

/* Parses and normalizes in[0..len). a: where the string lives (NULL:
 * malloc, release with jid_free). Returns 0, or -1 if the JID is invalid
 * (the caller answers jid-malformed). On error *out is untouched. */
int jid_parse(struct jid *out, const char *in, size_t len, struct arena *a);
void jid_free(struct jid *j); /* only for jids parsed with a == NULL */
/* Builds a JID from already-normalized parts (resource may be NULL). */
int jid_make(struct jid *out, const char *local, const char *domain, const char *resource,
	     struct arena *a);

/* Part preparation, each writing a NUL-terminated result into out (cap
 * bytes, at least JID_PART_MAX+1). Return the result length or -1. */
int jid_prep_local(const char *in, size_t len, char *out, size_t cap);
int jid_prep_domain(const char *in, size_t len, char *out, size_t cap);
int jid_prep_resource(const char *in, size_t len, char *out, size_t cap);

static inline bool jid_is_bare(const struct jid *j)
{
	return j->res_len == 0;
}
static inline bool jid_has_local(const struct jid *j)
{
	return j->local_len != 0;
}
/* Length of the bare part "local@domain" (a prefix of s). */
static inline size_t jid_bare_len(const struct jid *j)
{
	return (size_t)j->dom_off + j->dom_len;
}
bool jid_eq(const struct jid *a, const struct jid *b); /* full comparison */
bool jid_bare_eq(const struct jid *a, const struct jid *b);
/* Copies the bare JID (new string in a, or malloc when a == NULL). */
int jid_bare(struct jid *out, const struct jid *in, struct arena *a);

/* An account's names as the store takes them: the localpart and the
 * domainpart of j, each NUL-terminated. */
struct jid_names {
	char user[JID_PART_MAX + 1];
	char host[JID_PART_MAX + 1];
};
void jid_names(const struct jid *j, struct jid_names *out);

#endif
