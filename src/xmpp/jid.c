/* XMPP addresses, RFC 7622. A JID is split on its separators before any
 * part is transformed (§3.1, since a mapping could make a new '@' or '/'),
 * then each part is prepared on its own and the normalized parts are joined
 * into one string. */
#include "xmpp/jid.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <idn2.h>

#include "core/arena.h"
#include "xmpp/precis.h"

/* RFC 1035 §2.3.4, which RFC 7622 §3.2 keeps for the A-label form. */
#define JID_LABEL_MAX 63

/* RFC 7622 §3.3.1: characters a localpart may not hold beyond what
 * UsernameCaseMapped forbids, kept out for the sake of other address
 * formats (mail, URIs) a localpart is often mapped to. */
static bool local_forbidden(char c)
{
	switch (c) {
	case '"':
	case '&':
	case '\'':
	case '/':
	case ':':
	case '<':
	case '>':
	case '@':
		return true;
	default:
		return false;
	}
}

int jid_prep_local(const char *in, size_t len, char *out, size_t cap)
{
	if (len == 0 || len > JID_PART_MAX)
		return -1;
	int n = precis_username_casemapped(in, len, out, cap);
	if (n <= 0 || n > JID_PART_MAX)
		return -1;
	for (int i = 0; i < n; i++)
		if (local_forbidden(out[i]))
			return -1;
	return n;
}

int jid_prep_resource(const char *in, size_t len, char *out, size_t cap)
{
	if (len == 0 || len > JID_PART_MAX)
		return -1;
	int n = precis_opaque_string(in, len, out, cap);
	if (n <= 0 || n > JID_PART_MAX)
		return -1;
	return n;
}

/* RFC 7622 §3.2: an IP literal is an IPv4 address in dotted-quad form or
 * an IPv6 address in brackets (RFC 3986 IP-literal, without IPvFuture).
 * Returns the length written, -1 if it is an IP literal gone wrong, or 0 if
 * it is not an IP literal and should be read as a domain name. A name of
 * digits and dots only is taken as an attempted IPv4 address: no top-level
 * domain is numeric, and "01.2.3.4" must not reach DNS as a name. */
static int prep_ip(const char *in, size_t len, char *out, size_t cap)
{
	char tmp[INET6_ADDRSTRLEN + 2];
	unsigned char addr[16];

	if (len >= 2 && in[0] == '[' && in[len - 1] == ']') {
		if (len - 2 >= sizeof(tmp))
			return -1;
		memcpy(tmp, in + 1, len - 2);
		tmp[len - 2] = '\0';
		if (inet_pton(AF_INET6, tmp, addr) != 1)
			return -1;
		/* inet_ntop gives the RFC 5952 form: lowercase, zeros
		 * compressed, so equal addresses compare equal. */
		if (!inet_ntop(AF_INET6, addr, tmp, sizeof(tmp)))
			return -1;
		size_t n = strlen(tmp);
		if (n + 3 > cap)
			return -1;
		out[0] = '[';
		memcpy(out + 1, tmp, n);
		out[n + 1] = ']';
		out[n + 2] = '\0';
		return (int)n + 2;
	}

	for (size_t i = 0; i < len; i++)
		if (!(in[i] == '.' || (in[i] >= '0' && in[i] <= '9')))
			return 0;
	if (len >= sizeof(tmp))
		return -1;
	memcpy(tmp, in, len);
	tmp[len] = '\0';
	/* glibc's inet_pton takes exactly four decimal parts, no leading
	 * zeros, so the text is already the canonical form. */
	if (inet_pton(AF_INET, tmp, addr) != 1 || !inet_ntop(AF_INET, addr, tmp, sizeof(tmp)))
		return -1;
	size_t n = strlen(tmp);
	if (n + 1 > cap)
		return -1;
	memcpy(out, tmp, n + 1);
	return (int)n;
}

/* An NR-LDH label (RFC 5890 §2.3.1), or an A-label once libidn2 has made
 * one: letters, digits, hyphens; no hyphen at either end; "--" in the third
 * and fourth place only for "xn--". The label is already lowercase. */
static bool ldh_ok(const char *l, size_t n)
{
	if (n == 0 || n > JID_LABEL_MAX || l[0] == '-' || l[n - 1] == '-')
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = l[i];
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
			return false;
	}
	if (n >= 4 && l[2] == '-' && l[3] == '-' && !(l[0] == 'x' && l[1] == 'n'))
		return false;
	return true;
}

static bool is_xn(const char *l, size_t n)
{
	return n >= 4 && (l[0] == 'x' || l[0] == 'X') && (l[1] == 'n' || l[1] == 'N') &&
	       l[2] == '-' && l[3] == '-';
}

/* Appends the U-label form of one A-label or NR-LDH label at out[*o]. */
static int put_label(const char *ace, size_t n, char *out, size_t cap, size_t *o)
{
	char lab[JID_LABEL_MAX + 1];
	char *u = NULL;

	if (!ldh_ok(ace, n))
		return -1;
	memcpy(lab, ace, n);
	lab[n] = '\0';
	const char *src = lab;
	if (is_xn(lab, n)) {
		if (idn2_to_unicode_8z8z(lab, &u, 0) != IDN2_OK)
			return -1;
		/* RFC 5891 §5.4: an A-label must be what its U-label looks up
		 * to. libidn2 decodes labels such as xn--6g7c (a fullwidth
		 * solidus) that the lookup would map or refuse, and such a
		 * label would smuggle '/', '@' or spaces into the domain
		 * (found by fuzz/fuzz_jid.c). */
		uint8_t *back = NULL;
		bool same = idn2_lookup_u8((const uint8_t *)u, &back,
					   IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL) == IDN2_OK &&
			    strcasecmp((const char *)back, lab) == 0;
		free(back);
		if (!same) {
			free(u);
			return -1;
		}
		src = u;
	}
	size_t k = strlen(src);
	/* Room for the label, a dot before it, and the final NUL. */
	if (*o + (*o ? 1 : 0) + k + 1 > cap || *o + (*o ? 1 : 0) + k > JID_PART_MAX) {
		free(u);
		return -1;
	}
	if (*o)
		out[(*o)++] = '.';
	for (size_t i = 0; i < k; i++) {
		char c = src[i];
		out[(*o)++] = (char)(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
	}
	out[*o] = '\0';
	free(u);
	return 0;
}

/* One label of the input as written. Checked label by label because
 * libidn2 holds a whole name to the DNS limit of 255 octets, and RFC 7622 allows
 * 1023. */
static int prep_label(const char *l, size_t n, char *out, size_t cap, size_t *o)
{
	char in[JID_PART_MAX + 1];
	bool plain = true;

	if (n == 0)
		return -1;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)l[i];
		if (c >= 0x80 || !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
				   (c >= '0' && c <= '9') || c == '-'))
			plain = false;
	}
	/* The usual case, an ASCII name, needs no Unicode work. */
	if (plain && !is_xn(l, n)) {
		char low[JID_LABEL_MAX];
		if (n > JID_LABEL_MAX)
			return -1;
		for (size_t i = 0; i < n; i++)
			low[i] = (char)(l[i] >= 'A' && l[i] <= 'Z' ? l[i] + ('a' - 'A') : l[i]);
		return put_label(low, n, out, cap, o);
	}

	/* IDNA2008 lookup (RFC 5891 §5) with the UTS #46 mapping, which does
	 * the case, width and normalization mapping RFC 7622 §3.2.2 asks for;
	 * it also checks an A-label given to it. Not the STD3 flag: libidn2
	 * then silently drops characters such as '_' and '@' where they must
	 * be refused; ldh_ok() does that job on the result instead. */
	uint8_t *ace = NULL;
	memcpy(in, l, n);
	in[n] = '\0';
	if (idn2_lookup_u8((const uint8_t *)in, &ace, IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL) !=
	    IDN2_OK)
		return -1;
	/* The mapping may turn a full stop such as U+3002 into '.', so the
	 * result can hold more than one label. */
	const char *p = (const char *)ace;
	int rc = 0;
	for (;;) {
		const char *dot = strchr(p, '.');
		size_t k = dot ? (size_t)(dot - p) : strlen(p);
		if (put_label(p, k, out, cap, o) < 0) {
			rc = -1;
			break;
		}
		if (!dot)
			break;
		p = dot + 1;
	}
	free(ace);
	return rc;
}

int jid_prep_domain(const char *in, size_t len, char *out, size_t cap)
{
	if (len == 0 || len > JID_PART_MAX + 1 || cap == 0 || memchr(in, '\0', len))
		return -1;
	/* RFC 7622 §3.2: a final dot goes before anything else is done. */
	if (in[len - 1] == '.')
		len--;
	if (len == 0 || len > JID_PART_MAX)
		return -1;

	int n = prep_ip(in, len, out, cap);
	if (n != 0)
		return n;

	size_t o = 0;
	const char *p = in, *end = in + len;
	while (p <= end) {
		const char *dot = memchr(p, '.', (size_t)(end - p));
		size_t k = dot ? (size_t)(dot - p) : (size_t)(end - p);
		if (prep_label(p, k, out, cap, &o) < 0)
			return -1;
		if (!dot)
			break;
		p = dot + 1;
	}
	if (o == 0 || o > JID_PART_MAX)
		return -1;
	/* The mapping can make digits of other characters ("９。０" gives
	 * "9.0"). Such a result would be read as an IP address next time, so
	 * it is refused here as prep_ip() would refuse it then. */
	if (strspn(out, "0123456789.") == o)
		return -1;
	return (int)o;
}

static char *jid_alloc(size_t n, struct arena *a)
{
	return a ? arena_alloc(a, n) : malloc(n);
}

/* Joins prepared parts; local and res may be NULL (absent). */
static int jid_join(struct jid *out, const char *local, size_t ll, const char *dom, size_t dl,
		    const char *res, size_t rl, struct arena *a)
{
	size_t len = (ll ? ll + 1 : 0) + dl + (rl ? rl + 1 : 0);
	char *s = jid_alloc(len + 1, a);
	size_t o = 0;

	if (!s)
		return -1;
	if (ll) {
		memcpy(s, local, ll);
		s[ll] = '@';
		o = ll + 1;
	}
	memcpy(s + o, dom, dl);
	o += dl;
	if (rl) {
		s[o++] = '/';
		memcpy(s + o, res, rl);
		o += rl;
	}
	s[o] = '\0';

	out->s = s;
	out->len = (uint16_t)len;
	out->local_len = (uint16_t)ll;
	out->dom_off = (uint16_t)(ll ? ll + 1 : 0);
	out->dom_len = (uint16_t)dl;
	out->res_off = (uint16_t)(rl ? out->dom_off + dl + 1 : 0);
	out->res_len = (uint16_t)rl;
	return 0;
}

int jid_parse(struct jid *out, const char *in, size_t len, struct arena *a)
{
	char local[JID_PART_MAX + 1], dom[JID_PART_MAX + 2], res[JID_PART_MAX + 1];
	int ll = 0, dl, rl = 0;

	if (!in || len == 0)
		return -1;

	/* RFC 7622 §3.1: the resourcepart runs from the first '/' to the
	 * end; of what is left, the localpart runs to the first '@'. */
	const char *slash = memchr(in, '/', len);
	size_t head = slash ? (size_t)(slash - in) : len;
	const char *at = memchr(in, '@', head);
	const char *d = at ? at + 1 : in;
	size_t dlen = head - (size_t)(d - in);

	if (at) {
		ll = jid_prep_local(in, (size_t)(at - in), local, sizeof(local));
		if (ll <= 0)
			return -1;
	}
	dl = jid_prep_domain(d, dlen, dom, sizeof(dom));
	if (dl <= 0)
		return -1;
	if (slash) {
		rl = jid_prep_resource(slash + 1, len - head - 1, res, sizeof(res));
		if (rl <= 0)
			return -1;
	}
	return jid_join(out, local, (size_t)ll, dom, (size_t)dl, res, (size_t)rl, a);
}

/* The parts are trusted to be prepared already; only what the layout of
 * struct jid relies on is checked, so that the string splits back into the
 * same parts and jid_eq() can compare strings. */
int jid_make(struct jid *out, const char *local, const char *domain, const char *resource,
	     struct arena *a)
{
	size_t ll = local ? strlen(local) : 0;
	size_t dl = domain ? strlen(domain) : 0;
	size_t rl = resource ? strlen(resource) : 0;

	if (dl == 0 || dl > JID_PART_MAX || ll > JID_PART_MAX || rl > JID_PART_MAX)
		return -1;
	if (ll && (memchr(local, '@', ll) || memchr(local, '/', ll)))
		return -1;
	if (memchr(domain, '@', dl) || memchr(domain, '/', dl))
		return -1;
	return jid_join(out, local, ll, domain, dl, resource, rl, a);
}

void jid_free(struct jid *j)
{
	if (!j)
		return;
	/* Owned: jid_parse() gave it out from malloc. */
	free((void *)(uintptr_t)j->s);
	memset(j, 0, sizeof(*j));
}

/* Both are normalized, and a normalized string splits only one way, so
 * comparing strings compares parts. */
bool jid_eq(const struct jid *a, const struct jid *b)
{
	return a->len == b->len && memcmp(a->s, b->s, a->len) == 0;
}

bool jid_bare_eq(const struct jid *a, const struct jid *b)
{
	size_t n = jid_bare_len(a);

	return n == jid_bare_len(b) && memcmp(a->s, b->s, n) == 0;
}

int jid_bare(struct jid *out, const struct jid *in, struct arena *a)
{
	size_t n = jid_bare_len(in);
	char *s = jid_alloc(n + 1, a);

	if (!s)
		return -1;
	memcpy(s, in->s, n);
	s[n] = '\0';
	out->s = s;
	out->len = (uint16_t)n;
	out->local_len = in->local_len;
	out->dom_off = in->dom_off;
	out->dom_len = in->dom_len;
	out->res_off = 0;
	out->res_len = 0;
	return 0;
}

void jid_names(const struct jid *j, struct jid_names *out)
{
	memcpy(out->user, j->s, j->local_len);
	out->user[j->local_len] = '\0';
	memcpy(out->host, j->s + j->dom_off, j->dom_len);
	out->host[j->dom_len] = '\0';
}
