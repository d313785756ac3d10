/* XEP-0202: Entity Time (2.0). The server tells its own time: <utc/> in
 * the XEP-0082 DateTime profile (UTC, 'Z', milliseconds) and <tzo/>, the
 * offset of the server's local time zone as [+-]hh:mm (§3). Queries to an
 * account's JIDs are for its clients, not for us. */
#include "server/module.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/arena.h"

#define NS_TIME "urn:xmpp:time"

static void add_text_child(struct stanza *st, struct xml_el *parent, const char *name,
			   const char *v)
{
	struct xml_el *e = xml_add_child(st->arena, parent, NS_TIME, name);
	xml_add_text(st->arena, e, v, strlen(v));
}

static enum hook_rc entity_time(struct hook_ev *ev)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm utc, local;
	gmtime_r(&ts.tv_sec, &utc);
	localtime_r(&ts.tv_sec, &local);

	char tzo[16];
	long off = local.tm_gmtoff; /* seconds east of UTC */
	char sign = off < 0 ? '-' : '+';
	if (off < 0)
		off = -off;
	snprintf(tzo, sizeof(tzo), "%c%02ld:%02ld", sign, off / 3600 % 100, off / 60 % 60);

	char utc_s[40];
	size_t n = strftime(utc_s, sizeof(utc_s), "%Y-%m-%dT%H:%M:%S", &utc);
	snprintf(utc_s + n, sizeof(utc_s) - n, ".%03ldZ", ts.tv_nsec / 1000000);

	struct stanza *st = ev_result(ev);
	struct xml_el *t = xml_add_child(st->arena, st->el, NS_TIME, "time");
	add_text_child(st, t, "tzo", tzo);
	add_text_child(st, t, "utc", utc_s);
	ev_send(ev);
	return HOOK_DONE;
}

static const struct iq_reg time_iqs[] = {
    {NS_TIME, "time", IQ_GET, DEST_HOST, entity_time},
    {0},
};

const struct module mod_time = {
    .name = "time",
    .features = (const char *const[]){NS_TIME, NULL}, /* §4 */
    .iqs = time_iqs,
    .xeps = (const struct xep_ref[]){{202, "2.0", "complete"}, {0}},
};
