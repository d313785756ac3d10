/* Asynchronous, validating DNS through libunbound's pluggable event API.
 *
 * libunbound offers three ways to run asynchronously: ub_ctx_async(ctx, 1)
 * starts a thread per context, ub_ctx_async(ctx, 0) forks a process, and
 * ub_ctx_create_ub_event() (unbound-event.h) runs unbound's state machines
 * on an event base the application provides. Only the last keeps all work on
 * the worker's own thread, so the loop of that worker is the event base here:
 * every socket libunbound opens (one per outgoing UDP query or TCP stream) is
 * a struct io on the loop, every timeout a struct timer, and unbound's code
 * runs when the loop reports one of them. ub_fd/ub_process are not used
 * (with this API there is no result pipe to read).
 *
 * libunbound may answer inside ub_resolve_event (local zones, its cache), and
 * it calls us from deep in its state machines, so its answers are parsed at
 * once and the caller's callback is run later from a zero-delay timer, where
 * the caller may start, cancel or free anything. */
#include "net/dns.h"

#include "core/log.h"
#include "core/loop.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/time.h>
#include <unistd.h>

#include <unbound-event.h>
#include <unbound.h>

#define DEFAULT_ANCHOR "/usr/share/dns/root.key"

#define RR_A	  1
#define RR_CNAME  5
#define RR_AAAA	  28
#define RR_SRV	  33
#define RR_TLSA	  52
#define RR_DNSKEY 48
#define CLASS_IN  1

#define RCODE_NXDOMAIN 3

#define MAX_CNAME_HOPS 16 /* unbound itself stops at 11 */
#define MAX_ANSWER_RRS 512
#define MAX_QNAME      300 /* "_65535._tcp." + 253, checked again before use */

/* --- the event base libunbound runs on ------------------------------------ */

struct ub_ev {
	struct ub_event super; /* first: libunbound holds a pointer to it */
	struct dns *d;
	struct io io;
	struct timer timer;
	int fd;
	short bits; /* UB_EV_READ | UB_EV_WRITE | UB_EV_PERSIST ... */
	void (*cb)(int fd, short what, void *arg);
	void *arg;
	bool added;   /* active: watched and/or timed */
	bool in_loop; /* io registered with the loop */
	bool timed;   /* a timeout came with the last add */
	bool dead;    /* freed by libunbound, memory kept until the loop batch ends */
	uint64_t timeout_ms;
	struct ub_ev *next_dead;
};

enum q_kind { Q_SRV, Q_ADDR, Q_TLSA };
enum q_state { Q_PENDING, Q_DONE, Q_DELIVERING };

struct subq {
	struct dns_query *q; /* back pointer: the subq is libunbound's mydata */
	uint16_t qtype;
	bool running;	    /* inside libunbound, async_id valid */
	struct ub_ctx *ctx; /* the context it runs in */
	int ub_id;
	int rc;
	bool secure;
	size_t seen; /* records of qtype in the answer, used or not */
};

struct dns_query {
	struct dns *d;
	struct dns_query *prev, *next; /* in d->pending or d->done */
	enum q_kind kind;
	enum q_state state;
	union {
		dns_srv_cb *srv;
		dns_addr_cb *addr;
		dns_tlsa_cb *tlsa;
	} cb;
	void *ud;
	uint16_t port;
	char name[MAX_QNAME];
	struct subq sub[2];
	int n_sub, n_running;
	/* Results: owned, DNS_MAX_RECORDS entries each when allocated. */
	struct dns_srv *srv;
	struct dns_tlsa *tlsa;
	struct sockaddr_storage *a4, *a6;
	size_t n, n4, n6, n_dot;
	int rc;
	bool secure;
};

struct qlist {
	struct dns_query *head, *tail;
};

struct dns {
	struct ub_event_base base; /* first: libunbound holds a pointer to it */
	struct loop *loop;
	struct ub_ctx *ctx;
	/* The resolver in /etc/resolv.conf (or dns_servers) may strip DNSSEC
	 * records, so that everything validates as bogus and no peer can be
	 * found. A probe for the DNSKEY of the trust anchor's name tells; if
	 * it is bogus, lookups go to plain, a context without validation
	 * (nothing is secure then, so DANE does not apply). */
	struct ub_ctx *plain;
	char probe_name[256]; /* "" without validation */
	bool broken;	      /* plain in use */
	bool validated;	      /* a secure answer was seen: never downgrade */
	bool allow_fallback;  /* dns_conf.dnssec_fallback */
	bool probing;
	uint64_t probe_at;    /* loop ms of the last probe */
	struct qlist pending; /* inside libunbound */
	struct qlist done;    /* answered, callback not yet run */
	struct timer deliver; /* runs the callbacks of d->done */
	struct timer reap;    /* frees dead events after the loop batch */
	struct ub_ev *dead;
	bool delivering, freeing;
};

static void ql_push(struct qlist *l, struct dns_query *q)
{
	q->next = NULL;
	q->prev = l->tail;
	if (l->tail)
		l->tail->next = q;
	else
		l->head = q;
	l->tail = q;
}

static void ql_unlink(struct qlist *l, struct dns_query *q)
{
	if (q->prev)
		q->prev->next = q->next;
	else
		l->head = q->next;
	if (q->next)
		q->next->prev = q->prev;
	else
		l->tail = q->prev;
	q->prev = q->next = NULL;
}

static struct ub_ev *as_ev(struct ub_event *ue)
{
	return (struct ub_ev *)(void *)ue;
}

static struct dns *as_dns(struct ub_event_base *b)
{
	return (struct dns *)(void *)b;
}

static void ev_deactivate(struct ub_ev *e)
{
	if (e->in_loop) {
		loop_io_del(e->d->loop, &e->io);
		e->in_loop = false;
	}
	loop_timer_cancel(e->d->loop, &e->timer);
	e->added = false;
}

static int ev_activate(struct ub_ev *e)
{
	if (e->fd >= 0 && (e->bits & (UB_EV_READ | UB_EV_WRITE))) {
		uint32_t want = ((e->bits & UB_EV_READ) ? IO_READ : 0) |
				((e->bits & UB_EV_WRITE) ? IO_WRITE : 0);
		e->io.fd = e->fd;
		int r = loop_io_add(e->d->loop, &e->io, want);
		if (r < 0) {
			LOG(LOG_WARN, "dns: cannot watch fd %d: %s", e->fd, strerror(-r));
			return -1;
		}
		e->in_loop = true;
	}
	if (e->timed)
		loop_timer_set(e->d->loop, &e->timer, e->timeout_ms);
	e->added = true;
	return 0;
}

/* libevent semantics: a non-persistent event is removed before its callback
 * runs; a persistent one with a timeout has the timeout restarted. */
static void ev_fire(struct ub_ev *e, short what)
{
	if (!(e->bits & UB_EV_PERSIST))
		ev_deactivate(e);
	else if (e->timed)
		loop_timer_set(e->d->loop, &e->timer, e->timeout_ms);
	e->cb(e->fd, what, e->arg);
}

static void ev_io_cb(struct io *io, uint32_t events)
{
	struct ub_ev *e = io->ud;
	/* The loop may hold an event for an io that was removed earlier in
	 * the same batch: the memory is still there (see ev_free), the flags
	 * say to ignore it. */
	if (e->dead || !e->added || !e->in_loop)
		return;
	short what = 0;
	if ((events & (EPOLLIN | EPOLLERR | EPOLLHUP)) && (e->bits & UB_EV_READ))
		what |= UB_EV_READ;
	if ((events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) && (e->bits & UB_EV_WRITE))
		what |= UB_EV_WRITE;
	if (what)
		ev_fire(e, what);
}

static void ev_timer_cb(struct timer *t)
{
	struct ub_ev *e = t->ud;
	if (e->dead || !e->added)
		return;
	ev_fire(e, UB_EV_TIMEOUT);
}

static void ev_reactivate(struct ub_ev *e, void (*change)(struct ub_ev *e, int v), int v)
{
	bool was = e->added;
	if (was)
		ev_deactivate(e);
	change(e, v);
	if (was)
		(void)ev_activate(e);
}

static void set_bits_or(struct ub_ev *e, int v)
{
	e->bits = (short)(e->bits | v);
}

static void set_bits_andnot(struct ub_ev *e, int v)
{
	e->bits = (short)(e->bits & ~v);
}

static void set_fd(struct ub_ev *e, int v)
{
	e->fd = v;
}

/* libunbound says the event is deactivated before these three are called;
 * they cope anyway. */
static void ev_add_bits(struct ub_event *ue, short bits)
{
	ev_reactivate(as_ev(ue), set_bits_or, bits);
}

static void ev_del_bits(struct ub_event *ue, short bits)
{
	ev_reactivate(as_ev(ue), set_bits_andnot, bits);
}

static void ev_set_fd(struct ub_event *ue, int fd)
{
	ev_reactivate(as_ev(ue), set_fd, fd);
}

static void reap_cb(struct timer *t)
{
	struct dns *d = t->ud;
	while (d->dead) {
		struct ub_ev *e = d->dead;
		d->dead = e->next_dead;
		free(e);
	}
}

/* The loop may still hold epoll events pointing at this io in the batch
 * being run, so the memory lives until the batch is over: timers run after
 * all fd callbacks of an iteration. */
static void ev_free(struct ub_event *ue)
{
	struct ub_ev *e = as_ev(ue);
	ev_deactivate(e);
	e->dead = true;
	e->next_dead = e->d->dead;
	e->d->dead = e;
	if (!timer_armed(&e->d->reap))
		loop_timer_set(e->d->loop, &e->d->reap, 0);
}

static int ev_add(struct ub_event *ue, struct timeval *tv)
{
	struct ub_ev *e = as_ev(ue);
	if (e->added)
		ev_deactivate(e);
	if (e->dead)
		return -1;
	/* As libevent: a timeout iff tv is given, whatever UB_EV_TIMEOUT says. */
	e->timed = tv != NULL;
	if (tv) {
		if (tv->tv_sec < 0 || tv->tv_usec < 0)
			e->timeout_ms = 0;
		else
			e->timeout_ms =
			    (uint64_t)tv->tv_sec * 1000u + ((uint64_t)tv->tv_usec + 999u) / 1000u;
	}
	return ev_activate(e);
}

static int ev_del(struct ub_event *ue)
{
	struct ub_ev *e = as_ev(ue);
	if (e->added)
		ev_deactivate(e);
	return 0;
}

static int ev_add_timer(struct ub_event *ue, struct ub_event_base *b,
			void (*cb)(int, short, void *), void *arg, struct timeval *tv)
{
	struct ub_ev *e = as_ev(ue);
	if (!tv || !cb || as_dns(b) != e->d)
		return -1;
	if (e->added)
		ev_deactivate(e);
	/* evtimer_set(): no fd, no bits */
	e->fd = -1;
	e->bits = 0;
	e->cb = cb;
	e->arg = arg;
	return ev_add(ue, tv);
}

static int ev_signal_add(struct ub_event *ue, struct timeval *tv)
{
	return -1; /* only unbound's daemon uses signals */
}

static int ev_signal_del(struct ub_event *ue)
{
	return -1;
}

static void ev_wsa_unregister(struct ub_event *ue)
{
}

static void ev_tcp_wouldblock(struct ub_event *ue, int bits)
{
}

static struct ub_event_vmt ev_vmt = {
    .add_bits = ev_add_bits,
    .del_bits = ev_del_bits,
    .set_fd = ev_set_fd,
    .free = ev_free,
    .add = ev_add,
    .del = ev_del,
    .add_timer = ev_add_timer,
    .del_timer = ev_del,
    .add_signal = ev_signal_add,
    .del_signal = ev_signal_del,
    .winsock_unregister_wsaevent = ev_wsa_unregister,
    .winsock_tcp_wouldblock = ev_tcp_wouldblock,
};

static struct ub_event *base_new_event(struct ub_event_base *b, int fd, short bits,
				       void (*cb)(int, short, void *), void *arg)
{
	struct ub_ev *e = calloc(1, sizeof(*e));
	if (!e)
		return NULL; /* libunbound copes: the query fails */
	e->super.magic = UB_EVENT_MAGIC;
	e->super.vmt = &ev_vmt;
	e->d = as_dns(b);
	e->fd = fd;
	e->bits = bits;
	e->cb = cb;
	e->arg = arg;
	e->io = (struct io){.fd = fd, .cb = ev_io_cb, .ud = e};
	timer_init(&e->timer, ev_timer_cb, e);
	return &e->super;
}

static void base_free(struct ub_event_base *b)
{
}

static int base_dispatch(struct ub_event_base *b)
{
	return -1; /* the worker runs its loop itself */
}

static int base_loopexit(struct ub_event_base *b, struct timeval *tv)
{
	return 0;
}

static struct ub_event *base_new_signal(struct ub_event_base *b, int fd,
					void (*cb)(int, short, void *), void *arg)
{
	return NULL;
}

static struct ub_event *base_wsa_register(struct ub_event_base *b, void *wsaevent,
					  void (*cb)(int, short, void *), void *arg)
{
	return NULL;
}

static struct ub_event_base_vmt base_vmt = {
    .free = base_free,
    .dispatch = base_dispatch,
    .loopexit = base_loopexit,
    .new_event = base_new_event,
    .new_signal = base_new_signal,
    .winsock_register_wsaevent = base_wsa_register,
};

/* --- parsing ---------------------------------------------------------------- */

static uint16_t get16(const unsigned char *p)
{
	return (uint16_t)((p[0] << 8) | p[1]);
}

/* Reads the (possibly compressed) name at *off into out (uncompressed wire
 * form, at most 255 octets) and moves *off past its encoding in place.
 * Pointers must go strictly backwards, which also bounds the work. */
static int name_read(const unsigned char *pkt, size_t len, size_t *off, unsigned char out[255],
		     size_t *outlen)
{
	size_t pos = *off, o = 0, end = 0, limit = *off;
	bool jumped = false;
	for (;;) {
		if (pos >= len)
			return -1;
		unsigned c = pkt[pos];
		if ((c & 0xC0) == 0xC0) {
			if (pos + 1 >= len)
				return -1;
			size_t ptr = ((size_t)(c & 0x3F) << 8) | pkt[pos + 1];
			if (ptr >= limit)
				return -1;
			if (!jumped) {
				end = pos + 2;
				jumped = true;
			}
			limit = ptr;
			pos = ptr;
			continue;
		}
		if (c & 0xC0)
			return -1; /* 0x40, 0x80: obsolete or unknown label types */
		if (pos + 1 + c > len || o + 1 + c > 255)
			return -1;
		memcpy(out + o, pkt + pos, 1 + c);
		o += 1 + c;
		pos += 1 + c;
		if (c == 0)
			break;
	}
	*off = jumped ? end : pos;
	*outlen = o;
	return 0;
}

static bool name_eq(const unsigned char *a, size_t alen, const unsigned char *b, size_t blen)
{
	if (alen != blen)
		return false;
	for (size_t i = 0; i < alen; i++) {
		unsigned char x = a[i], y = b[i];
		if (x >= 'A' && x <= 'Z')
			x = (unsigned char)(x + 32);
		if (y >= 'A' && y <= 'Z')
			y = (unsigned char)(y + 32);
		if (x != y)
			return false;
	}
	return true;
}

static bool host_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_';
}

int dns_name_check(const char *name, char out[254])
{
	size_t n = strnlen(name, 256);
	if (n > 0 && name[n - 1] == '.')
		n--;
	if (n == 0 || n > 253)
		return -1;
	size_t label = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)name[i];
		if (c == '.') {
			if (label == 0)
				return -1;
			label = 0;
		} else if (host_char(c)) {
			if (++label > 63)
				return -1;
		} else {
			return -1;
		}
	}
	if (label == 0)
		return -1;
	memcpy(out, name, n);
	out[n] = '\0';
	return 0;
}

/* A checked text name to wire form. */
static size_t name_to_wire(const char *name, unsigned char out[255])
{
	size_t o = 0;
	const char *p = name;
	while (*p) {
		const char *dot = strchr(p, '.');
		size_t l = dot ? (size_t)(dot - p) : strlen(p);
		out[o++] = (unsigned char)l;
		memcpy(out + o, p, l);
		o += l;
		p += l;
		if (*p == '.')
			p++;
	}
	out[o++] = 0;
	return o;
}

/* Wire name to text host name (no final dot; "." for the root). -1 if a
 * label holds anything but host-name characters. */
static int wire_to_host(const unsigned char *w, size_t wlen, char out[256])
{
	if (wlen == 1) {
		out[0] = '.';
		out[1] = '\0';
		return 0;
	}
	size_t i = 0, o = 0;
	while (i < wlen && w[i]) {
		size_t l = w[i++];
		if (o)
			out[o++] = '.';
		for (size_t k = 0; k < l; k++) {
			if (!host_char(w[i + k]))
				return -1;
			out[o++] = (char)w[i + k];
		}
		i += l;
	}
	out[o] = '\0';
	return o > 253 ? -1 : 0;
}

struct rr {
	size_t owner; /* offset of the owner name */
	uint16_t type, class;
	size_t rdoff, rdlen;
};

int dns_parse_answer(const unsigned char *pkt, size_t len, const char *qname, uint16_t qtype,
		     dns_rdata_fn *fn, void *ud)
{
	char checked[254];
	unsigned char want[255], nm[255];
	size_t wantlen, nmlen;
	if (dns_name_check(qname, checked) < 0 || len < 12)
		return -1;
	wantlen = name_to_wire(checked, want);
	uint16_t flags = get16(pkt + 2), qd = get16(pkt + 4), an = get16(pkt + 6);
	if (!(flags & 0x8000) || qd != 1)
		return -1;
	int rcode = flags & 0x0F;
	size_t off = 12;
	if (name_read(pkt, len, &off, nm, &nmlen) < 0 || off + 4 > len)
		return -1;
	if (!name_eq(nm, nmlen, want, wantlen) || get16(pkt + off) != qtype ||
	    get16(pkt + off + 2) != CLASS_IN)
		return -1;
	off += 4;

	/* Walk the whole answer section first: a malformed one is rejected
	 * before any record is used. */
	static_assert(MAX_ANSWER_RRS * sizeof(struct rr) <= 32768, "rr table on the stack");
	struct rr rrs[MAX_ANSWER_RRS];
	size_t n = 0;
	for (unsigned i = 0; i < an; i++) {
		size_t owner = off;
		if (name_read(pkt, len, &off, nm, &nmlen) < 0 || off + 10 > len)
			return -1;
		uint16_t type = get16(pkt + off), class = get16(pkt + off + 2);
		size_t rdlen = get16(pkt + off + 8);
		off += 10;
		if (off + rdlen > len)
			return -1;
		if (n < MAX_ANSWER_RRS)
			rrs[n++] = (struct rr){owner, type, class, off, rdlen};
		off += rdlen;
	}

	/* Follow the CNAME chain from qname (RFC 1034 §3.6.2). */
	if (qtype != RR_CNAME) {
		for (int hops = 0; hops < MAX_CNAME_HOPS; hops++) {
			bool moved = false;
			for (size_t i = 0; i < n && !moved; i++) {
				if (rrs[i].type != RR_CNAME || rrs[i].class != CLASS_IN)
					continue;
				size_t o = rrs[i].owner;
				if (name_read(pkt, len, &o, nm, &nmlen) < 0 ||
				    !name_eq(nm, nmlen, want, wantlen))
					continue;
				size_t t = rrs[i].rdoff;
				if (name_read(pkt, len, &t, nm, &nmlen) < 0 ||
				    t != rrs[i].rdoff + rrs[i].rdlen)
					return -1;
				memcpy(want, nm, nmlen);
				wantlen = nmlen;
				moved = true;
			}
			if (!moved)
				break;
		}
	}

	size_t used = 0;
	for (size_t i = 0; i < n && used < DNS_MAX_RECORDS; i++) {
		if (rrs[i].type != qtype || rrs[i].class != CLASS_IN)
			continue;
		size_t o = rrs[i].owner;
		if (name_read(pkt, len, &o, nm, &nmlen) < 0 || !name_eq(nm, nmlen, want, wantlen))
			continue;
		fn(ud, pkt, len, rrs[i].rdoff, rrs[i].rdlen);
		used++;
	}
	return rcode;
}

int dns_parse_srv(const unsigned char *pkt, size_t len, size_t off, size_t rdlen,
		  struct dns_srv *out)
{
	unsigned char nm[255];
	size_t nmlen;
	/* RFC 2782: priority, weight, port, then the target, not compressed;
	 * a pointer is followed anyway, but the rdata must end with the name. */
	if (rdlen < 7 || off + rdlen > len)
		return -1;
	const unsigned char *p = pkt + off;
	size_t t = off + 6;
	if (name_read(pkt, off + rdlen, &t, nm, &nmlen) < 0 || t != off + rdlen)
		return -1;
	if (wire_to_host(nm, nmlen, out->target) < 0)
		return -1;
	out->priority = get16(p);
	out->weight = get16(p + 2);
	out->port = get16(p + 4);
	return 0;
}

int dns_parse_tlsa(const unsigned char *rdata, size_t rdlen, struct dns_tlsa *out)
{
	/* RFC 6698 §2.1: usage, selector, matching type, association data. */
	if (rdlen < 4 || rdlen - 3 > sizeof(out->data))
		return -1;
	size_t dlen = rdlen - 3;
	/* RFC 6698 §2.1.3: the digest lengths of SHA2-256 and SHA2-512. */
	if ((rdata[2] == 1 && dlen != 32) || (rdata[2] == 2 && dlen != 64))
		return -1;
	out->usage = rdata[0];
	out->selector = rdata[1];
	out->mtype = rdata[2];
	out->len = (uint16_t)dlen;
	memcpy(out->data, rdata + 3, dlen);
	return 0;
}

void dns_srv_order(struct dns_srv *r, size_t n, uint32_t (*rnd)(void *ud, uint32_t bound), void *ud)
{
	/* Priority ascending; insertion sort is stable and n is small. */
	for (size_t i = 1; i < n; i++) {
		struct dns_srv x = r[i];
		size_t j = i;
		while (j > 0 && r[j - 1].priority > x.priority) {
			r[j] = r[j - 1];
			j--;
		}
		r[j] = x;
	}
	/* RFC 2782, "Usage rules": within one priority, zero weights first,
	 * then pick by running sum against a random number in [0, sum]. */
	for (size_t a = 0; a < n;) {
		size_t b = a;
		while (b < n && r[b].priority == r[a].priority)
			b++;
		for (size_t s = a; s + 1 < b; s++) {
			size_t z = s;
			for (size_t i = s; i < b; i++) {
				if (r[i].weight == 0) {
					struct dns_srv x = r[i];
					memmove(&r[z + 1], &r[z], (i - z) * sizeof(*r));
					r[z++] = x;
				}
			}
			uint32_t sum = 0;
			for (size_t i = s; i < b; i++)
				sum += r[i].weight;
			uint32_t pick = rnd(ud, sum), run = 0;
			size_t c = b - 1;
			for (size_t i = s; i < b; i++) {
				run += r[i].weight;
				if (run >= pick) {
					c = i;
					break;
				}
			}
			struct dns_srv x = r[c];
			memmove(&r[s + 1], &r[s], (c - s) * sizeof(*r));
			r[s] = x;
		}
		a = b;
	}
}

static uint32_t rnd_uniform(void *ud, uint32_t bound)
{
	return bound == UINT32_MAX ? arc4random() : arc4random_uniform(bound + 1);
}

/* --- queries ---------------------------------------------------------------- */

static void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n, size);
	if (!p)
		die_oom();
	return p;
}

static void query_free(struct dns_query *q)
{
	free(q->srv);
	free(q->tlsa);
	free(q->a4);
	free(q->a6);
	free(q);
}

static void deliver_cb(struct timer *t);

static void query_done(struct dns_query *q)
{
	struct dns *d = q->d;
	ql_unlink(&d->pending, q);
	ql_push(&d->done, q);
	q->state = Q_DONE;
	if (!timer_armed(&d->deliver))
		loop_timer_set(d->loop, &d->deliver, 0);
}

static void on_srv_rdata(void *ud, const unsigned char *pkt, size_t len, size_t off, size_t rdlen)
{
	struct subq *s = ud;
	struct dns_query *q = s->q;
	struct dns_srv r;
	s->seen++;
	if (dns_parse_srv(pkt, len, off, rdlen, &r) < 0)
		return;
	if (strcmp(r.target, ".") == 0) {
		q->n_dot++;
		return;
	}
	if (!q->srv)
		q->srv = xcalloc(DNS_MAX_RECORDS, sizeof(*q->srv));
	if (q->n < DNS_MAX_RECORDS)
		q->srv[q->n++] = r;
}

static void on_tlsa_rdata(void *ud, const unsigned char *pkt, size_t len, size_t off, size_t rdlen)
{
	struct subq *s = ud;
	struct dns_query *q = s->q;
	s->seen++;
	if (!q->tlsa)
		q->tlsa = xcalloc(DNS_MAX_RECORDS, sizeof(*q->tlsa));
	if (q->n < DNS_MAX_RECORDS && dns_parse_tlsa(pkt + off, rdlen, &q->tlsa[q->n]) == 0)
		q->n++;
}

static void on_addr_rdata(void *ud, const unsigned char *pkt, size_t len, size_t off, size_t rdlen)
{
	struct subq *s = ud;
	struct dns_query *q = s->q;
	s->seen++;
	if (s->qtype == RR_AAAA && rdlen == 16) {
		if (!q->a6)
			q->a6 = xcalloc(DNS_MAX_RECORDS, sizeof(*q->a6));
		if (q->n6 >= DNS_MAX_RECORDS)
			return;
		struct sockaddr_in6 *sa = (struct sockaddr_in6 *)&q->a6[q->n6++];
		sa->sin6_family = AF_INET6;
		sa->sin6_port = htons(q->port);
		memcpy(&sa->sin6_addr, pkt + off, 16);
	} else if (s->qtype == RR_A && rdlen == 4) {
		if (!q->a4)
			q->a4 = xcalloc(DNS_MAX_RECORDS, sizeof(*q->a4));
		if (q->n4 >= DNS_MAX_RECORDS)
			return;
		struct sockaddr_in *sa = (struct sockaddr_in *)&q->a4[q->n4++];
		sa->sin_family = AF_INET;
		sa->sin_port = htons(q->port);
		memcpy(&sa->sin_addr, pkt + off, 4);
	}
}

static void probe_start(struct dns *d);

#define PROBE_AGAIN_MS	60000  /* after a bogus answer, at most this often */
#define PROBE_BROKEN_MS 300000 /* while validation is off: is it back? */

/* The same question without validation: if the resolvers answer it with
 * records, they are there and strip what DNSSEC needs (or something on the
 * way does). If they do not answer at all (no network yet), validation
 * could not have worked either, and stays on; a later probe asks again. */
static void on_confirm(void *mydata, int rcode, void *packet, int packet_len, int sec,
		       char *why_bogus, int was_ratelimited)
{
	struct dns *d = mydata;
	d->probing = false;
	const unsigned char *p = packet;
	if (rcode != 0 || !p || packet_len < 12 || (p[6] << 8 | p[7]) == 0)
		return; /* no records in the answer section */
	if (d->validated)
		return; /* an answer validated before: this is tampering, not the resolver */
	if (!d->allow_fallback) {
		LOG(LOG_ERROR,
		    "dns: the DNS resolvers answer, but the DNSKEY records of \"%s\" (the trust "
		    "anchor) do not validate: they strip DNSSEC data, and every lookup will fail "
		    "(dns_dnssec_fallback is off); set dns_servers to a validating resolver",
		    d->probe_name);
		return;
	}
	d->broken = true;
	/* An error each time: an attacker between us and the resolvers could
	 * cause this too (it turns DANE off). */
	LOG(LOG_ERROR,
	    "dns: the DNS resolvers answer, but the DNSKEY records of \"%s\" (the trust "
	    "anchor) do not validate: they strip DNSSEC data. Validation is off (and with it "
	    "DANE) until they pass it; set dns_servers to a validating resolver (e.g. a local "
	    "unbound), or dns_dnssec_fallback: false to never go on without",
	    d->probe_name);
}

/* The answer to the probe: secure latches validation on (and brings it
 * back); bogus may mean resolvers that drop what DNSSEC needs, or no
 * answer at all, which on_confirm tells apart. */
static void on_probe(void *mydata, int rcode, void *packet, int packet_len, int sec,
		     char *why_bogus, int was_ratelimited)
{
	struct dns *d = mydata;
	if (sec == 2) {
		d->validated = true;
		if (d->broken)
			LOG(LOG_WARN,
			    "dns: the DNSKEY records of \"%s\" validate again: DNSSEC "
			    "validation is back on",
			    d->probe_name);
		d->broken = false;
	}
	if (sec != 1 || d->broken) {
		d->probing = false;
		return;
	}
	LOG(LOG_DEBUG, "dns: probe of %s DNSKEY is bogus: %s", d->probe_name,
	    why_bogus ? why_bogus : "?");
	int id;
	if (ub_resolve_event(d->plain, d->probe_name, RR_DNSKEY, CLASS_IN, d, on_confirm, &id) != 0)
		d->probing = false;
}

/* At start, after a bogus answer (unless validation has worked before:
 * then it is not the resolver), and every few minutes while it is off. */
static void probe_start(struct dns *d)
{
	uint64_t now = loop_now(d->loop);
	if (!d->plain || d->probing || (d->validated && !d->broken))
		return;
	if (d->probe_at && now - d->probe_at < (d->broken ? PROBE_BROKEN_MS : PROBE_AGAIN_MS))
		return;
	d->probe_at = now;
	d->probing = true;
	int id;
	if (ub_resolve_event(d->ctx, d->probe_name, RR_DNSKEY, CLASS_IN, d, on_probe, &id) != 0)
		d->probing = false;
}

bool dns_validating(const struct dns *d)
{
	return d && d->probe_name[0] && !d->broken;
}

/* libunbound's answer to one subquery; may run inside ub_resolve_event. */
static void on_ub(void *mydata, int rcode, void *packet, int packet_len, int sec, char *why_bogus,
		  int was_ratelimited)
{
	struct subq *s = mydata;
	struct dns_query *q = s->q;
	struct dns *d = q->d;
	s->running = false;
	s->secure = false;
	if (sec == 1 && d->plain && s->ctx != d->plain) {
		if (d->broken) {
			/* Asked before the probe answered: once more, unvalidated.
			 * (May answer inside the call, which then completes s.) */
			s->ctx = d->plain;
			s->running = true;
			int id = 0;
			if (ub_resolve_event(d->plain, q->name, s->qtype, CLASS_IN, s, on_ub,
					     &id) == 0) {
				if (s->running)
					s->ub_id = id;
				return;
			}
			s->running = false;
		} else {
			probe_start(d); /* a bogus answer: is it the resolver? */
		}
	}
	if (sec == 2 && s->ctx == d->ctx)
		d->validated = true;
	if (rcode != 0) {
		/* Resolution failed; the packet is not to be read. */
		s->rc = rcode == RCODE_NXDOMAIN ? DNS_NONE : DNS_ERROR;
	} else if (sec == 1) {
		LOG(LOG_DEBUG, "dns: %s type %u is bogus: %s", q->name, s->qtype,
		    why_bogus ? why_bogus : "no reason given");
		s->rc = DNS_BOGUS;
	} else if (!packet || packet_len <= 0) {
		s->rc = DNS_ERROR;
	} else {
		dns_rdata_fn *fn = q->kind == Q_SRV    ? on_srv_rdata
				   : q->kind == Q_TLSA ? on_tlsa_rdata
						       : on_addr_rdata;
		int r = dns_parse_answer(packet, (size_t)packet_len, q->name, s->qtype, fn, s);
		if (r < 0) {
			LOG(LOG_WARN, "dns: malformed answer for %s type %u", q->name, s->qtype);
			s->rc = DNS_ERROR;
		} else if (r == RCODE_NXDOMAIN || (r == 0 && s->seen == 0)) {
			s->rc = DNS_NONE;
		} else if (r != 0) {
			s->rc = DNS_ERROR;
		} else {
			s->rc = DNS_OK;
		}
		s->secure = s->rc != DNS_ERROR && sec == 2;
	}
	if (--q->n_running == 0)
		query_done(q);
}

static struct dns_query *query_new(struct dns *d, enum q_kind kind, void *ud)
{
	struct dns_query *q = xcalloc(1, sizeof(*q));
	q->d = d;
	q->kind = kind;
	q->ud = ud;
	q->state = Q_PENDING;
	q->rc = DNS_ERROR;
	ql_push(&d->pending, q);
	return q;
}

/* Starts the subqueries; a failure to start one counts as its answer. */
static void query_start(struct dns_query *q, const uint16_t *types, int n)
{
	q->n_sub = n;
	q->n_running = n;
	for (int i = 0; i < n; i++) {
		struct subq *s = &q->sub[i];
		s->q = q;
		s->qtype = types[i];
		s->rc = DNS_ERROR;
		s->running = true;
		if (q->d->broken)
			probe_start(q->d); /* is validation back? (rate-limited) */
		s->ctx = q->d->broken ? q->d->plain : q->d->ctx;
		int id = 0;
		int r = ub_resolve_event(s->ctx, q->name, types[i], CLASS_IN, s, on_ub, &id);
		if (r != 0) {
			LOG(LOG_WARN, "dns: cannot resolve %s: %s", q->name, ub_strerror(r));
			s->running = false;
			if (--q->n_running == 0)
				query_done(q);
		} else if (s->running) {
			s->ub_id = id;
		}
	}
}

/* Invalid input: answered DNS_ERROR on the next loop turn. */
static void query_fail(struct dns_query *q)
{
	q->n_sub = 0;
	query_done(q);
}

static void finish_srv(struct dns_query *q)
{
	struct subq *s = &q->sub[0];
	q->secure = s->secure;
	q->rc = s->rc;
	if (s->rc != DNS_OK)
		return;
	if (q->n == 0) {
		/* RFC 2782: a lone "." target: decidedly not available. */
		q->rc = (q->n_dot == 1 && s->seen == 1) ? DNS_NOSERVICE : DNS_ERROR;
		return;
	}
	dns_srv_order(q->srv, q->n, rnd_uniform, NULL);
}

static void finish_addr(struct dns_query *q)
{
	struct subq *s6 = &q->sub[0], *s4 = &q->sub[1];
	q->secure = s6->secure && s4->secure;
	size_t total = q->n6 + q->n4;
	if (total) {
		/* IPv6 first, then alternate (RFC 8305 §4). */
		struct sockaddr_storage *a = xcalloc(total, sizeof(*a));
		size_t i6 = 0, i4 = 0, n = 0;
		while (n < total && n < DNS_MAX_RECORDS) {
			if (i6 < q->n6)
				a[n++] = q->a6[i6++];
			if (i4 < q->n4 && n < DNS_MAX_RECORDS)
				a[n++] = q->a4[i4++];
		}
		free(q->a6);
		q->a6 = a;
		q->n = n;
		q->rc = DNS_OK;
	} else if (s6->rc == DNS_BOGUS || s4->rc == DNS_BOGUS) {
		q->rc = DNS_BOGUS;
	} else if (s6->rc == DNS_NONE && s4->rc == DNS_NONE) {
		q->rc = DNS_NONE;
	} else {
		q->rc = DNS_ERROR;
	}
	if (q->rc == DNS_BOGUS || q->rc == DNS_ERROR)
		q->secure = false;
}

static void finish_tlsa(struct dns_query *q)
{
	q->secure = q->sub[0].secure;
	q->rc = q->sub[0].rc;
}

static void deliver_one(struct dns_query *q)
{
	switch (q->kind) {
	case Q_SRV:
		if (q->n_sub)
			finish_srv(q);
		if (q->rc != DNS_OK)
			q->n = 0;
		q->cb.srv(q->ud, q->rc, q->secure, q->n ? q->srv : NULL, q->n);
		break;
	case Q_ADDR:
		if (q->n_sub)
			finish_addr(q);
		q->cb.addr(q->ud, q->rc, q->secure, q->n ? q->a6 : NULL, q->n);
		break;
	case Q_TLSA:
		if (q->n_sub)
			finish_tlsa(q);
		if (q->rc != DNS_OK)
			q->n = 0;
		q->cb.tlsa(q->ud, q->rc, q->secure, q->n ? q->tlsa : NULL, q->n);
		break;
	}
}

static void dns_release(struct dns *d);

static void deliver_cb(struct timer *t)
{
	struct dns *d = t->ud;
	/* Only what was answered before this turn: a callback that starts a
	 * query answered from the cache does not keep us here forever. */
	struct dns_query *last = d->done.tail;
	d->delivering = true;
	while (d->done.head && !d->freeing) {
		struct dns_query *q = d->done.head;
		bool was_last = q == last;
		ql_unlink(&d->done, q);
		q->state = Q_DELIVERING;
		deliver_one(q);
		query_free(q);
		if (was_last)
			break;
	}
	d->delivering = false;
	if (d->freeing) {
		dns_release(d);
		return;
	}
	if (d->done.head && !timer_armed(&d->deliver))
		loop_timer_set(d->loop, &d->deliver, 0);
}

struct dns_query *dns_srv(struct dns *d, const char *name, dns_srv_cb *cb, void *ud)
{
	struct dns_query *q = query_new(d, Q_SRV, ud);
	q->cb.srv = cb;
	if (dns_name_check(name, q->name) < 0) {
		query_fail(q);
		return q;
	}
	static const uint16_t types[] = {RR_SRV};
	query_start(q, types, 1);
	return q;
}

static bool ip_literal(struct dns_query *q, const char *host)
{
	char buf[INET6_ADDRSTRLEN + 2];
	size_t n = strnlen(host, sizeof(buf));
	if (n >= sizeof(buf))
		return false;
	if (host[0] == '[') {
		if (n < 3 || host[n - 1] != ']')
			return false;
		memcpy(buf, host + 1, n - 2);
		buf[n - 2] = '\0';
	} else {
		memcpy(buf, host, n + 1);
	}
	struct sockaddr_storage ss = {0};
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
	struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
	if (inet_pton(AF_INET6, buf, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(q->port);
	} else if (host[0] != '[' && inet_pton(AF_INET, buf, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons(q->port);
	} else {
		return false;
	}
	q->a6 = xcalloc(1, sizeof(*q->a6));
	q->a6[0] = ss;
	q->n = 1;
	q->rc = DNS_OK;
	return true;
}

struct dns_query *dns_addr(struct dns *d, const char *host, uint16_t port, dns_addr_cb *cb,
			   void *ud)
{
	struct dns_query *q = query_new(d, Q_ADDR, ud);
	q->cb.addr = cb;
	q->port = port;
	if (ip_literal(q, host)) {
		q->n_sub = 0;
		query_done(q);
		return q;
	}
	if (dns_name_check(host, q->name) < 0) {
		query_fail(q);
		return q;
	}
	static const uint16_t types[] = {RR_AAAA, RR_A}; /* sub[0] is AAAA, see finish_addr */
	query_start(q, types, 2);
	return q;
}

struct dns_query *dns_tlsa(struct dns *d, const char *host, uint16_t port, dns_tlsa_cb *cb,
			   void *ud)
{
	struct dns_query *q = query_new(d, Q_TLSA, ud);
	q->cb.tlsa = cb;
	q->port = port;
	char h[254], full[MAX_QNAME];
	if (dns_name_check(host, h) < 0) {
		query_fail(q);
		return q;
	}
	/* RFC 6698 §3: _<port>._tcp.<base domain> */
	snprintf(full, sizeof(full), "_%u._tcp.%s", (unsigned)port, h);
	if (dns_name_check(full, q->name) < 0) {
		query_fail(q);
		return q;
	}
	static const uint16_t types[] = {RR_TLSA};
	query_start(q, types, 1);
	return q;
}

void dns_cancel(struct dns_query *q)
{
	if (!q)
		return;
	struct dns *d = q->d;
	switch (q->state) {
	case Q_PENDING:
		for (int i = 0; i < q->n_sub; i++) {
			/* In event mode ub_cancel only marks the query: unbound
			 * finishes it and drops the answer, never calling us. */
			if (q->sub[i].running)
				(void)ub_cancel(q->sub[i].ctx, q->sub[i].ub_id);
		}
		ql_unlink(&d->pending, q);
		break;
	case Q_DONE:
		ql_unlink(&d->done, q);
		break;
	case Q_DELIVERING:
		return; /* its own callback is running; freed when it returns */
	}
	query_free(q);
}

/* --- setup ------------------------------------------------------------------ */

static void warmup_cb(void *mydata, int rcode, void *packet, int packet_len, int sec,
		      char *why_bogus, int was_ratelimited)
{
	*(bool *)mydata = true;
}

/* libunbound keeps process-wide state that its contexts set up and tear
 * down without locking: each ub_ctx_create*() runs log_init(), which
 * initialises a global mutex on first use and then locks it; the first
 * query of each context runs listen_setup_locks() and ub_ctx_delete() runs
 * listen_desetup_locks() on globals too. Workers start and stop together,
 * so two of them doing this at once once re-initialised log_init()'s mutex
 * while the other held it (glibc aborted: "mutex->__data.__owner == 0").
 * Creation up to the first query, and deletion, take this lock. */
static pthread_mutex_t ub_global = PTHREAD_MUTEX_INITIALIZER;

static void ctx_delete(struct ub_ctx *ctx)
{
	pthread_mutex_lock(&ub_global);
	ub_ctx_delete(ctx);
	pthread_mutex_unlock(&ub_global);
}

static struct dns *dns_create(struct loop *l, const struct dns_conf *c, char *err, size_t errlen);

/* The owner name of the first record in a trust anchor file (zone-file
 * syntax: "example. IN DS ...", ". IN DNSKEY ..."), for the probe. */
static int anchor_name(const char *path, char *out, size_t cap)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	char line[1024];
	int rc = -1;
	while (fgets(line, sizeof(line), f)) {
		char *p = line + strspn(line, " \t");
		if (*p == ';' || *p == '#' || *p == '$' || *p == '\n' || !*p)
			continue;
		size_t n = strcspn(p, " \t\r\n");
		if (n && n < cap && p[n - 1] == '.') {
			memcpy(out, p, n);
			out[n] = 0;
			rc = 0;
		}
		break;
	}
	fclose(f);
	return rc;
}

struct dns *dns_new(struct loop *l, const struct dns_conf *c, char *err, size_t errlen)
{
	pthread_mutex_lock(&ub_global);
	struct dns *d = dns_create(l, c, err, errlen);
	pthread_mutex_unlock(&ub_global);
	return d;
}

static struct dns *dns_create(struct loop *l, const struct dns_conf *c, char *err, size_t errlen)
{
	struct dns *d = xcalloc(1, sizeof(*d));
	d->loop = l;
	d->allow_fallback = c->dnssec_fallback;
	d->base.magic = UB_EVENT_MAGIC;
	d->base.vmt = &base_vmt;
	timer_init(&d->deliver, deliver_cb, d);
	timer_init(&d->reap, reap_cb, d);
	d->ctx = ub_ctx_create_ub_event(&d->base);
	if (!d->ctx) {
		snprintf(err, errlen, "libunbound: cannot create a context");
		free(d);
		return NULL;
	}
	int r;
	for (size_t i = 0; i < c->n_servers; i++) {
		if ((r = ub_ctx_set_fwd(d->ctx, c->servers[i])) != 0) {
			snprintf(err, errlen, "DNS server \"%s\": %s", c->servers[i],
				 ub_strerror(r));
			goto fail;
		}
	}
	if (c->n_servers == 0 && (r = ub_ctx_resolvconf(d->ctx, NULL)) != 0) {
		snprintf(err, errlen, "/etc/resolv.conf: %s", ub_strerror(r));
		goto fail;
	}
	const char *anchor = c->trust_anchor_file;
	if (!anchor && access(DEFAULT_ANCHOR, R_OK) == 0)
		anchor = DEFAULT_ANCHOR;
	if (anchor) {
		if (access(anchor, R_OK) < 0) {
			snprintf(err, errlen, "trust anchor file %s: %s", anchor, strerror(errno));
			goto fail;
		}
		if ((r = ub_ctx_add_ta_file(d->ctx, anchor)) != 0) {
			snprintf(err, errlen, "trust anchor file %s: %s", anchor, ub_strerror(r));
			goto fail;
		}
	}
	/* libunbound reads its configuration (and the anchors) at the first
	 * query; make that happen now, with a name its built-in localhost zone
	 * answers at once, so a bad anchor file is reported here. */
	bool answered = false;
	r = ub_resolve_event(d->ctx, "localhost.", RR_A, CLASS_IN, &answered, warmup_cb, NULL);
	if (r != 0 || !answered) {
		snprintf(err, errlen, "libunbound: %s%s",
			 r ? ub_strerror(r) : "no answer for localhost",
			 anchor ? " (check the trust anchor file)" : "");
		goto fail;
	}
	if (anchor && anchor_name(anchor, d->probe_name, sizeof(d->probe_name)) == 0) {
		/* The same resolvers without validation, ready in case they turn
		 * out to strip DNSSEC (probe_start). */
		d->plain = ub_ctx_create_ub_event(&d->base);
		if (!d->plain) {
			snprintf(err, errlen, "libunbound: cannot create a context");
			goto fail;
		}
		for (size_t i = 0; i < c->n_servers; i++)
			ub_ctx_set_fwd(d->plain, c->servers[i]);
		if (c->n_servers == 0)
			ub_ctx_resolvconf(d->plain, NULL);
		answered = false;
		r = ub_resolve_event(d->plain, "localhost.", RR_A, CLASS_IN, &answered, warmup_cb,
				     NULL);
		if (r != 0 || !answered) {
			snprintf(err, errlen, "libunbound: %s",
				 r ? ub_strerror(r) : "no answer for localhost");
			goto fail;
		}
		probe_start(d);
	}
	return d;
fail:
	if (d->plain)
		ub_ctx_delete(d->plain);
	ub_ctx_delete(d->ctx); /* ub_global is held */
	reap_cb(&d->reap);
	loop_timer_cancel(l, &d->reap);
	free(d);
	return NULL;
}

/* Everything but d itself, the one query being delivered aside. */
static void dns_teardown(struct dns *d)
{
	/* Kills what is outstanding without calling back; the events it
	 * frees land on d->dead. */
	ctx_delete(d->ctx);
	d->ctx = NULL;
	if (d->plain)
		ctx_delete(d->plain);
	d->plain = NULL;
	while (d->pending.head) {
		struct dns_query *q = d->pending.head;
		ql_unlink(&d->pending, q);
		query_free(q);
	}
	while (d->done.head) {
		struct dns_query *q = d->done.head;
		ql_unlink(&d->done, q);
		query_free(q);
	}
	loop_timer_cancel(d->loop, &d->deliver);
	loop_timer_cancel(d->loop, &d->reap);
	reap_cb(&d->reap);
}

static void dns_release(struct dns *d)
{
	free(d);
}

void dns_free(struct dns *d)
{
	if (!d || d->freeing)
		return;
	dns_teardown(d);
	if (d->delivering) {
		d->freeing = true; /* deliver_cb frees d when the callback returns */
		return;
	}
	dns_release(d);
}
