#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "net/dns.h"

/* A tiny DNS message builder. */
struct pkt {
	unsigned char b[4096];
	size_t n;
};

static void put8(struct pkt *p, unsigned v)
{
	assert_true(p->n < sizeof(p->b));
	p->b[p->n++] = (unsigned char)v;
}

static void put16(struct pkt *p, unsigned v)
{
	put8(p, (v >> 8) & 0xff);
	put8(p, v & 0xff);
}

static void put32(struct pkt *p, uint32_t v)
{
	put16(p, v >> 16);
	put16(p, v & 0xffff);
}

static void putbytes(struct pkt *p, const void *d, size_t n)
{
	assert_true(p->n + n <= sizeof(p->b));
	memcpy(p->b + p->n, d, n);
	p->n += n;
}

/* "a.b.c" to labels, with the root label. */
static void putname(struct pkt *p, const char *name)
{
	while (*name) {
		const char *dot = strchr(name, '.');
		size_t l = dot ? (size_t)(dot - name) : strlen(name);
		put8(p, (unsigned)l);
		putbytes(p, name, l);
		name += l;
		if (*name == '.')
			name++;
	}
	put8(p, 0);
}

static void putptr(struct pkt *p, size_t off)
{
	put16(p, 0xC000u | (unsigned)off);
}

static void header(struct pkt *p, unsigned flags, unsigned qd, unsigned an)
{
	p->n = 0;
	put16(p, 0x1234);
	put16(p, flags);
	put16(p, qd);
	put16(p, an);
	put16(p, 0);
	put16(p, 0);
}

static void question(struct pkt *p, const char *name, unsigned type)
{
	putname(p, name);
	put16(p, type);
	put16(p, 1);
}

/* Owner as a pointer to the question name (offset 12). */
static void rr_head(struct pkt *p, unsigned type, unsigned rdlen)
{
	putptr(p, 12);
	put16(p, type);
	put16(p, 1);
	put32(p, 60);
	put16(p, rdlen);
}

static void srv_rr(struct pkt *p, unsigned prio, unsigned weight, unsigned port, const char *t)
{
	struct pkt tmp = {.n = 0};
	putname(&tmp, t);
	rr_head(p, 33, 6 + (unsigned)tmp.n);
	put16(p, prio);
	put16(p, weight);
	put16(p, port);
	putbytes(p, tmp.b, tmp.n);
}

struct seen {
	int n;
	size_t off[128], len[128];
};

static void collect(void *ud, const unsigned char *pkt, size_t len, size_t off, size_t rdlen)
{
	struct seen *s = ud;
	assert_true(off + rdlen <= len);
	if (s->n < 128) {
		s->off[s->n] = off;
		s->len[s->n] = rdlen;
	}
	s->n++;
}

static void test_name_check(void **state)
{
	char out[254];
	assert_int_equal(dns_name_check("example.org", out), 0);
	assert_string_equal(out, "example.org");
	assert_int_equal(dns_name_check("_xmpp-server._tcp.example.org.", out), 0);
	assert_string_equal(out, "_xmpp-server._tcp.example.org");
	assert_int_equal(dns_name_check("", out), -1);
	assert_int_equal(dns_name_check(".", out), -1);
	assert_int_equal(dns_name_check("a..b", out), -1);
	assert_int_equal(dns_name_check(".a", out), -1);
	assert_int_equal(dns_name_check("a.b..", out), -1);
	assert_int_equal(dns_name_check("a b", out), -1);
	assert_int_equal(dns_name_check("a\\.b", out), -1);
	assert_int_equal(dns_name_check("caf\xc3\xa9.example", out), -1);
	char l64[80];
	memset(l64, 'a', 64);
	l64[64] = '\0';
	assert_int_equal(dns_name_check(l64, out), -1);
	l64[63] = '\0';
	assert_int_equal(dns_name_check(l64, out), 0);
	/* 253 octets pass, 254 do not (with or without a final dot) */
	char big[300];
	size_t n = 0;
	while (n < 253) {
		size_t l = 253 - n >= 50 ? 49 : 253 - n;
		memset(big + n, 'x', l);
		n += l;
		if (n < 253)
			big[n++] = '.';
	}
	big[253] = '\0';
	assert_int_equal(strlen(big), 253);
	assert_int_equal(dns_name_check(big, out), 0);
	big[253] = '.';
	big[254] = '\0';
	assert_int_equal(dns_name_check(big, out), 0);
	big[253] = 'y';
	assert_int_equal(dns_name_check(big, out), -1);
	/* no unbounded read on a long string */
	char huge[2000];
	memset(huge, 'a', sizeof(huge) - 1);
	huge[sizeof(huge) - 1] = '\0';
	assert_int_equal(dns_name_check(huge, out), -1);
}

static void test_answer_srv(void **state)
{
	struct pkt p;
	const char *q = "_xmpp-server._tcp.a.example";
	header(&p, 0x8180, 1, 2);
	question(&p, q, 33);
	srv_rr(&p, 10, 5, 5269, "x.a.example");
	srv_rr(&p, 0, 0, 5270, "y.a.example");
	struct seen s = {0};
	assert_int_equal(dns_parse_answer(p.b, p.n, q, 33, collect, &s), 0);
	assert_int_equal(s.n, 2);
	struct dns_srv r;
	assert_int_equal(dns_parse_srv(p.b, p.n, s.off[0], s.len[0], &r), 0);
	assert_string_equal(r.target, "x.a.example");
	assert_int_equal(r.priority, 10);
	assert_int_equal(r.weight, 5);
	assert_int_equal(r.port, 5269);
	assert_int_equal(dns_parse_srv(p.b, p.n, s.off[1], s.len[1], &r), 0);
	assert_string_equal(r.target, "y.a.example");
	/* The question matches case-insensitively and with a final dot. */
	s.n = 0;
	assert_int_equal(
	    dns_parse_answer(p.b, p.n, "_XMPP-server._tcp.A.example.", 33, collect, &s), 0);
	assert_int_equal(s.n, 2);
	/* Another name or type is not our answer. */
	s.n = 0;
	assert_int_equal(dns_parse_answer(p.b, p.n, "_xmpp-client._tcp.a.example", 33, collect, &s),
			 -1);
	assert_int_equal(dns_parse_answer(p.b, p.n, q, 1, collect, &s), -1);
	assert_int_equal(s.n, 0);
	/* Records of other types are skipped. */
	s.n = 0;
	assert_int_equal(dns_parse_answer(p.b, p.n, q, 33, collect, &s), 0);
	assert_int_equal(s.n, 2);
}

static void test_answer_rcode(void **state)
{
	struct pkt p;
	header(&p, 0x8183, 1, 0); /* NXDOMAIN */
	question(&p, "nope.example", 1);
	struct seen s = {0};
	assert_int_equal(dns_parse_answer(p.b, p.n, "nope.example", 1, collect, &s), 3);
	assert_int_equal(s.n, 0);
	header(&p, 0x8182, 1, 0); /* SERVFAIL */
	question(&p, "nope.example", 1);
	assert_int_equal(dns_parse_answer(p.b, p.n, "nope.example", 1, collect, &s), 2);
}

static void test_answer_cname(void **state)
{
	struct pkt p;
	header(&p, 0x8180, 1, 4);
	question(&p, "www.a.example", 1);
	/* www CNAME host.a.example (pointer to "a.example" in the question) */
	rr_head(&p, 5, 7);
	size_t host_off = p.n;
	put8(&p, 4);
	putbytes(&p, "host", 4);
	putptr(&p, 12 + 4);
	/* host A 192.0.2.1, owner compressed */
	putptr(&p, host_off);
	put16(&p, 1);
	put16(&p, 1);
	put32(&p, 60);
	put16(&p, 4);
	putbytes(&p, "\xc0\x00\x02\x01", 4);
	/* www A 192.0.2.9: not at the end of the chain, ignored */
	rr_head(&p, 1, 4);
	putbytes(&p, "\xc0\x00\x02\x09", 4);
	/* other.example A: ignored */
	putname(&p, "other.example");
	put16(&p, 1);
	put16(&p, 1);
	put32(&p, 60);
	put16(&p, 4);
	putbytes(&p, "\xc0\x00\x02\x07", 4);
	struct seen s = {0};
	assert_int_equal(dns_parse_answer(p.b, p.n, "www.a.example", 1, collect, &s), 0);
	assert_int_equal(s.n, 1);
	assert_int_equal(s.len[0], 4);
	assert_memory_equal(p.b + s.off[0], "\xc0\x00\x02\x01", 4);
}

static void test_answer_cname_loop(void **state)
{
	struct pkt p;
	header(&p, 0x8180, 1, 2);
	question(&p, "a.example", 1);
	size_t a_off = 12;
	rr_head(&p, 5, 4); /* a CNAME b.example */
	size_t b_off = p.n;
	put8(&p, 1);
	put8(&p, 'b');
	putptr(&p, 14); /* "example" inside the question */
	putptr(&p, b_off);
	put16(&p, 5);
	put16(&p, 1);
	put32(&p, 60);
	put16(&p, 2);
	putptr(&p, a_off); /* b CNAME a */
	struct seen s = {0};
	assert_int_equal(dns_parse_answer(p.b, p.n, "a.example", 1, collect, &s), 0);
	assert_int_equal(s.n, 0);
}

static void test_answer_malformed(void **state)
{
	struct pkt p;
	struct seen s = {0};
	const char *q = "a.example";
	/* too short for a header */
	header(&p, 0x8180, 1, 0);
	assert_int_equal(dns_parse_answer(p.b, 11, q, 1, collect, &s), -1);
	/* not a response */
	header(&p, 0x0100, 1, 0);
	question(&p, q, 1);
	assert_int_equal(dns_parse_answer(p.b, p.n, q, 1, collect, &s), -1);
	/* two questions */
	header(&p, 0x8180, 2, 0);
	question(&p, q, 1);
	question(&p, q, 1);
	assert_int_equal(dns_parse_answer(p.b, p.n, q, 1, collect, &s), -1);
	/* question truncated */
	header(&p, 0x8180, 1, 0);
	question(&p, q, 1);
	assert_int_equal(dns_parse_answer(p.b, p.n - 1, q, 1, collect, &s), -1);
	/* more answers announced than present: nothing is used */
	header(&p, 0x8180, 1, 2);
	question(&p, q, 1);
	rr_head(&p, 1, 4);
	putbytes(&p, "\x01\x02\x03\x04", 4);
	assert_int_equal(dns_parse_answer(p.b, p.n, q, 1, collect, &s), -1);
	/* rdlength past the end */
	header(&p, 0x8180, 1, 1);
	question(&p, q, 1);
	rr_head(&p, 1, 40);
	putbytes(&p, "\x01\x02\x03\x04", 4);
	assert_int_equal(dns_parse_answer(p.b, p.n, q, 1, collect, &s), -1);
	/* a pointer to itself, a pointer forwards, a pointer past the end */
	unsigned ptrs[] = {0, 1, 0x3fff};
	for (int i = 0; i < 3; i++) {
		header(&p, 0x8180, 1, 1);
		question(&p, q, 1);
		size_t here = p.n;
		putptr(&p, i == 0 ? here : i == 1 ? here + 2 : ptrs[i]);
		put16(&p, 1);
		put16(&p, 1);
		put32(&p, 60);
		put16(&p, 4);
		putbytes(&p, "\x01\x02\x03\x04", 4);
		assert_int_equal(dns_parse_answer(p.b, p.n, q, 1, collect, &s), -1);
	}
	/* pointers chained backwards and forwards between two names */
	header(&p, 0x8180, 1, 1);
	question(&p, q, 1);
	size_t x = p.n;
	putptr(&p, x + 2);
	putptr(&p, x);
	assert_int_equal(dns_parse_answer(p.b, p.n, q, 1, collect, &s), -1);
	/* label types 0x40 and 0x80 */
	for (unsigned t = 0x40; t <= 0x80; t += 0x40) {
		header(&p, 0x8180, 1, 0);
		put8(&p, t | 1);
		put8(&p, 'a');
		put8(&p, 0);
		put16(&p, 1);
		put16(&p, 1);
		assert_int_equal(dns_parse_answer(p.b, p.n, q, 1, collect, &s), -1);
	}
	/* a name longer than 255 octets, built from pointers to long labels
	 * kept in the rdata of a first record */
	header(&p, 0x8180, 1, 2);
	question(&p, q, 1);
	rr_head(&p, 99, 62 + 4 * 63);
	size_t prev = 0, offs[5];
	for (int i = 0; i < 5; i++) {
		size_t here = p.n;
		offs[i] = here;
		put8(&p, 60);
		for (int k = 0; k < 60; k++)
			put8(&p, 'a');
		if (i)
			putptr(&p, prev);
		else
			put8(&p, 0);
		prev = here;
	}
	size_t owner = p.n;
	putptr(&p, prev); /* owner: 5 x 61 octets */
	put16(&p, 1);
	put16(&p, 1);
	put32(&p, 60);
	put16(&p, 4);
	putbytes(&p, "\x01\x02\x03\x04", 4);
	assert_int_equal(dns_parse_answer(p.b, p.n, q, 1, collect, &s), -1);
	/* the same chain cut to 4 labels (245 octets) parses */
	p.b[owner + 1] = (unsigned char)offs[3];
	p.b[owner] = (unsigned char)(0xC0 | (offs[3] >> 8));
	assert_int_equal(dns_parse_answer(p.b, p.n, q, 1, collect, &s), 0);
	/* an invalid question name from the caller */
	header(&p, 0x8180, 1, 0);
	question(&p, q, 1);
	assert_int_equal(dns_parse_answer(p.b, p.n, "a..example", 1, collect, &s), -1);
	assert_int_equal(s.n, 0);
}

static void test_answer_limit(void **state)
{
	struct pkt p;
	header(&p, 0x8180, 1, 100);
	question(&p, "many.example", 1);
	for (int i = 0; i < 100; i++) {
		rr_head(&p, 1, 4);
		put32(&p, 0xc0000200u + (unsigned)i);
	}
	struct seen s = {0};
	assert_int_equal(dns_parse_answer(p.b, p.n, "many.example", 1, collect, &s), 0);
	assert_int_equal(s.n, DNS_MAX_RECORDS);
}

static void test_srv_rdata(void **state)
{
	struct dns_srv r;
	unsigned char ok[] = {0,   1,	0,   2,	  0x14, 0x95, 1,   'x', 7,
			      'e', 'x', 'a', 'm', 'p',	'l',  'e', 0};
	assert_int_equal(dns_parse_srv(ok, sizeof(ok), 0, sizeof(ok), &r), 0);
	assert_string_equal(r.target, "x.example");
	assert_int_equal(r.priority, 1);
	assert_int_equal(r.weight, 2);
	assert_int_equal(r.port, 5269);
	/* "." */
	unsigned char dot[] = {0, 0, 0, 0, 0, 0, 0};
	assert_int_equal(dns_parse_srv(dot, sizeof(dot), 0, sizeof(dot), &r), 0);
	assert_string_equal(r.target, ".");
	/* too short, name running past the rdata, trailing octets */
	assert_int_equal(dns_parse_srv(dot, sizeof(dot), 0, 6, &r), -1);
	assert_int_equal(dns_parse_srv(ok, sizeof(ok), 0, sizeof(ok) - 1, &r), -1);
	unsigned char trail[sizeof(ok) + 1];
	memcpy(trail, ok, sizeof(ok));
	trail[sizeof(ok)] = 0;
	assert_int_equal(dns_parse_srv(trail, sizeof(trail), 0, sizeof(trail), &r), -1);
	/* rdata claimed past the packet */
	assert_int_equal(dns_parse_srv(ok, sizeof(ok), 1, sizeof(ok), &r), -1);
	/* label with a dot, a space, a NUL, a high octet in it */
	const char bad[] = {'.', ' ', '\0', (char)0xe9};
	for (int i = 0; i < 4; i++) {
		unsigned char b[sizeof(ok)];
		memcpy(b, ok, sizeof(ok));
		b[7] = (unsigned char)bad[i];
		assert_int_equal(dns_parse_srv(b, sizeof(b), 0, sizeof(b), &r), -1);
	}
	/* a label length running over the end */
	unsigned char over[] = {0, 0, 0, 0, 0, 0, 5, 'a', 'b', 0};
	assert_int_equal(dns_parse_srv(over, sizeof(over), 0, sizeof(over), &r), -1);
	/* compressed target (RFC 2782 forbids it; a backward pointer is read) */
	unsigned char msg[64];
	size_t n = 0;
	const unsigned char nm[] = {7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 0};
	memcpy(msg, nm, sizeof(nm));
	n = sizeof(nm);
	size_t rd = n;
	const unsigned char rdata[] = {0, 5, 0, 0, 0, 80, 1, 'h', 0xC0, 0};
	memcpy(msg + n, rdata, sizeof(rdata));
	n += sizeof(rdata);
	assert_int_equal(dns_parse_srv(msg, n, rd, sizeof(rdata), &r), 0);
	assert_string_equal(r.target, "h.example");
	/* ... but not one into or past the rdata itself */
	msg[rd + 9] = (unsigned char)(rd + 6);
	assert_int_equal(dns_parse_srv(msg, n, rd, sizeof(rdata), &r), -1);
	msg[rd + 9] = 60;
	assert_int_equal(dns_parse_srv(msg, n, rd, sizeof(rdata), &r), -1);
	/* a target longer than 253 characters as text */
	unsigned char longn[6 + 255];
	memset(longn, 0, 6);
	size_t o = 6;
	for (int i = 0; i < 4; i++) {
		longn[o++] = 62;
		memset(longn + o, 'a', 62);
		o += 62;
	}
	longn[o++] = 0; /* 4 * 63 + 1 = 253 octets of wire name: 251 characters */
	assert_int_equal(dns_parse_srv(longn, o, 0, o, &r), 0);
	assert_int_equal(strlen(r.target), 251);
}

static void test_tlsa_rdata(void **state)
{
	struct dns_tlsa t;
	unsigned char r[3 + 600];
	memset(r, 0xab, sizeof(r));
	r[0] = 3;
	r[1] = 1;
	r[2] = 1;
	assert_int_equal(dns_parse_tlsa(r, 3 + 32, &t), 0);
	assert_int_equal(t.usage, 3);
	assert_int_equal(t.selector, 1);
	assert_int_equal(t.mtype, 1);
	assert_int_equal(t.len, 32);
	assert_int_equal(t.data[31], 0xab);
	assert_int_equal(dns_parse_tlsa(r, 3 + 31, &t), -1);
	assert_int_equal(dns_parse_tlsa(r, 3 + 33, &t), -1);
	r[2] = 2;
	assert_int_equal(dns_parse_tlsa(r, 3 + 64, &t), 0);
	assert_int_equal(dns_parse_tlsa(r, 3 + 32, &t), -1);
	r[2] = 0; /* full data: any length up to 512 */
	assert_int_equal(dns_parse_tlsa(r, 3 + 512, &t), 0);
	assert_int_equal(t.len, 512);
	assert_int_equal(dns_parse_tlsa(r, 3 + 513, &t), -1);
	assert_int_equal(dns_parse_tlsa(r, 3, &t), -1);
	assert_int_equal(dns_parse_tlsa(r, 2, &t), -1);
	assert_int_equal(dns_parse_tlsa(r, 0, &t), -1);
	r[2] = 255; /* unknown matching type: kept, the caller decides */
	assert_int_equal(dns_parse_tlsa(r, 3 + 10, &t), 0);
}

static uint32_t rnd_zero(void *ud, uint32_t bound)
{
	return 0;
}

static uint32_t rnd_max(void *ud, uint32_t bound)
{
	return bound;
}

static uint32_t rnd_lcg(void *ud, uint32_t bound)
{
	uint64_t *s = ud;
	*s = *s * 6364136223846793005ull + 1442695040888963407ull;
	return (uint32_t)((*s >> 33) % ((uint64_t)bound + 1));
}

static void set(struct dns_srv *r, unsigned prio, unsigned w, const char *t)
{
	memset(r, 0, sizeof(*r));
	r->priority = (uint16_t)prio;
	r->weight = (uint16_t)w;
	snprintf(r->target, sizeof(r->target), "%s", t);
}

static void test_srv_order(void **state)
{
	struct dns_srv r[5];
	set(&r[0], 20, 1, "c");
	set(&r[1], 10, 5, "a1");
	set(&r[2], 10, 0, "a0");
	set(&r[3], 5, 3, "first");
	set(&r[4], 10, 5, "a2");
	/* random 0: zero weights first, then the earliest */
	dns_srv_order(r, 5, rnd_zero, NULL);
	assert_string_equal(r[0].target, "first");
	assert_string_equal(r[1].target, "a0");
	assert_string_equal(r[2].target, "a1");
	assert_string_equal(r[3].target, "a2");
	assert_string_equal(r[4].target, "c");
	/* random = sum: the last one with a weight each time */
	set(&r[0], 20, 1, "c");
	set(&r[1], 10, 5, "a1");
	set(&r[2], 10, 0, "a0");
	set(&r[3], 5, 3, "first");
	set(&r[4], 10, 5, "a2");
	dns_srv_order(r, 5, rnd_max, NULL);
	assert_string_equal(r[0].target, "first");
	assert_string_equal(r[1].target, "a2");
	assert_string_equal(r[2].target, "a1");
	assert_string_equal(r[3].target, "a0");
	assert_string_equal(r[4].target, "c");
	/* RFC 2782 draws in [0, sum] inclusive: with weights 1 and 3 the
	 * heavier comes first 3 times in 5 (values 2, 3, 4); a weight of 0
	 * next to a weight of 100 comes first once in 101 (value 0). */
	uint64_t seed = 42;
	int heavy = 0, zero = 0;
	for (int i = 0; i < 20000; i++) {
		set(&r[0], 1, 1, "light");
		set(&r[1], 1, 3, "heavy");
		dns_srv_order(r, 2, rnd_lcg, &seed);
		heavy += strcmp(r[0].target, "heavy") == 0;
		set(&r[0], 1, 100, "w100");
		set(&r[1], 1, 0, "w0");
		dns_srv_order(r, 2, rnd_lcg, &seed);
		zero += strcmp(r[0].target, "w0") == 0;
	}
	assert_in_range(heavy, 11500, 12500);
	assert_in_range(zero, 100, 300);
	/* n = 0 and 1 are harmless */
	dns_srv_order(r, 0, rnd_zero, NULL);
	dns_srv_order(r, 1, rnd_zero, NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_name_check),	      cmocka_unit_test(test_answer_srv),
	    cmocka_unit_test(test_answer_rcode),      cmocka_unit_test(test_answer_cname),
	    cmocka_unit_test(test_answer_cname_loop), cmocka_unit_test(test_answer_malformed),
	    cmocka_unit_test(test_answer_limit),      cmocka_unit_test(test_srv_rdata),
	    cmocka_unit_test(test_tlsa_rdata),	      cmocka_unit_test(test_srv_order),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
