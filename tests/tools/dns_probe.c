/* dns_probe: runs one lookup of src/net/dns.c on a real loop and prints it,
 * for tests/integration/test_dns.py.
 *
 *   dns_probe SERVER ANCHOR srv|addr|tlsa NAME [PORT] [--repeat=N] [--cancel] [--free-pending]
 *             [--deadline=MS]
 *
 * SERVER is a forwarder ("127.0.0.1@5353") or "-" for /etc/resolv.conf;
 * ANCHOR a trust anchor file or "-" for the default. Prints one line per
 * record, then "secure=0/1 rc=N"; with --repeat the lookup runs N times in
 * a row, each started from the previous one's callback. --cancel starts
 * lookups and cancels them (at once, and after one loop turn) before
 * running a last one normally; --free-pending frees the resolver with a
 * lookup outstanding. The probe gives up after --deadline (10000 ms). Exit 0 when done, 1 on a
 * setup error, 2 on timeout, 3 when the API broke a promise (a callback inside the starting call, a
 * cancelled callback run). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/loop.h"
#include "net/dns.h"

enum kind { K_SRV, K_ADDR, K_TLSA };

static struct loop *loop;
static struct dns *dns;
static enum kind kind;
static const char *name;
static uint16_t port;
static int repeat = 1, runs;
static bool in_call;
static int cancelled_called;

static void fail(const char *what)
{
	printf("ERROR: %s\n", what);
	fflush(stdout);
	exit(3);
}

static void start(void);

static void finish(int rc, bool secure)
{
	printf("secure=%d rc=%d\n", secure ? 1 : 0, rc);
	fflush(stdout);
	if (++runs < repeat)
		start();
	else
		loop_stop(loop);
}

static void on_srv(void *ud, int rc, bool secure, const struct dns_srv *r, size_t n)
{
	if (in_call)
		fail("callback inside the starting call");
	if (ud)
		cancelled_called++;
	for (size_t i = 0; i < n; i++)
		printf("SRV %u %u %u %s\n", r[i].priority, r[i].weight, r[i].port, r[i].target);
	if (!ud)
		finish(rc, secure);
}

static void on_addr(void *ud, int rc, bool secure, const struct sockaddr_storage *a, size_t n)
{
	if (in_call)
		fail("callback inside the starting call");
	if (ud)
		cancelled_called++;
	for (size_t i = 0; i < n; i++) {
		char ip[INET6_ADDRSTRLEN];
		unsigned p;
		if (a[i].ss_family == AF_INET6) {
			const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)&a[i];
			inet_ntop(AF_INET6, &s->sin6_addr, ip, sizeof(ip));
			p = ntohs(s->sin6_port);
		} else {
			const struct sockaddr_in *s = (const struct sockaddr_in *)&a[i];
			inet_ntop(AF_INET, &s->sin_addr, ip, sizeof(ip));
			p = ntohs(s->sin_port);
		}
		printf("ADDR %s %u\n", ip, p);
	}
	if (!ud)
		finish(rc, secure);
}

static void on_tlsa(void *ud, int rc, bool secure, const struct dns_tlsa *r, size_t n)
{
	if (in_call)
		fail("callback inside the starting call");
	if (ud)
		cancelled_called++;
	for (size_t i = 0; i < n; i++) {
		printf("TLSA %u %u %u ", r[i].usage, r[i].selector, r[i].mtype);
		for (size_t k = 0; k < r[i].len; k++)
			printf("%02x", r[i].data[k]);
		printf("\n");
	}
	if (!ud)
		finish(rc, secure);
}

/* ud != NULL marks a lookup that is to be cancelled. */
static struct dns_query *lookup(void *ud)
{
	struct dns_query *q = NULL;
	in_call = true;
	switch (kind) {
	case K_SRV:
		q = dns_srv(dns, name, on_srv, ud);
		break;
	case K_ADDR:
		q = dns_addr(dns, name, port, on_addr, ud);
		break;
	case K_TLSA:
		q = dns_tlsa(dns, name, port, on_tlsa, ud);
		break;
	}
	in_call = false;
	if (!q)
		fail("no query returned");
	return q;
}

static void start(void)
{
	(void)lookup(NULL);
}

static void on_timeout(struct timer *t)
{
	printf("timeout\n");
	fflush(stdout);
	exit(2);
}

static struct dns_query *later_cancel;

static void start_timer_cb(struct timer *t)
{
	start();
}

static void cancel_turn(struct timer *t)
{
	dns_cancel(later_cancel);
	static struct timer go;
	timer_init(&go, start_timer_cb, NULL);
	loop_timer_set(loop, &go, 300);
}

static void free_pending(struct timer *t)
{
	dns_free(dns);
	dns = NULL;
	printf("freed with a lookup outstanding\n");
	fflush(stdout);
	loop_stop(loop);
}

int main(int argc, char **argv)
{
	if (argc < 5) {
		fprintf(stderr, "usage: dns_probe SERVER ANCHOR srv|addr|tlsa NAME [PORT] "
				"[--repeat=N] [--cancel] [--free-pending] [--deadline=MS]\n");
		return 1;
	}
	const char *server = argv[1], *anchor = argv[2];
	if (strcmp(argv[3], "srv") == 0)
		kind = K_SRV;
	else if (strcmp(argv[3], "addr") == 0)
		kind = K_ADDR;
	else if (strcmp(argv[3], "tlsa") == 0)
		kind = K_TLSA;
	else {
		fprintf(stderr, "dns_probe: unknown lookup %s\n", argv[3]);
		return 1;
	}
	name = argv[4];
	bool do_cancel = false, do_free = false;
	uint64_t deadline_ms = 10000;
	for (int i = 5; i < argc; i++) {
		if (strncmp(argv[i], "--repeat=", 9) == 0)
			repeat = atoi(argv[i] + 9);
		else if (strcmp(argv[i], "--cancel") == 0)
			do_cancel = true;
		else if (strncmp(argv[i], "--deadline=", 11) == 0)
			deadline_ms = (uint64_t)atoll(argv[i] + 11);
		else if (strcmp(argv[i], "--free-pending") == 0)
			do_free = true;
		else
			port = (uint16_t)atoi(argv[i]);
	}
	loop = loop_new();
	const char *servers[1] = {server};
	struct dns_conf conf = {
	    .servers = servers,
	    .n_servers = strcmp(server, "-") == 0 ? 0 : 1,
	    .trust_anchor_file = strcmp(anchor, "-") == 0 ? NULL : anchor,
	};
	char err[256];
	dns = dns_new(loop, &conf, err, sizeof(err));
	if (!dns) {
		fprintf(stderr, "dns_probe: %s\n", err);
		loop_free(loop);
		return 1;
	}
	struct timer deadline, turn;
	timer_init(&deadline, on_timeout, NULL);
	loop_timer_set(loop, &deadline, deadline_ms);
	if (do_cancel) {
		/* Cancelled before the loop ever ran, and after one turn (the
		 * query then sits in libunbound, waiting for the server). */
		dns_cancel(lookup((void *)1));
		later_cancel = lookup((void *)1);
		timer_init(&turn, cancel_turn, NULL);
		loop_timer_set(loop, &turn, 0);
	} else if (do_free) {
		start();
		timer_init(&turn, free_pending, NULL);
		loop_timer_set(loop, &turn, 0);
	} else {
		start();
	}
	loop_run(loop);
	loop_timer_cancel(loop, &deadline);
	if (do_cancel)
		printf("cancelled callbacks run: %d\n", cancelled_called);
	dns_free(dns);
	loop_free(loop);
	return cancelled_called ? 3 : 0;
}
