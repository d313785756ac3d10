/* XEP-0092: Software Version. */
#include "server/module.h"

#include <string.h>
#include <sys/utsname.h>

#include "core/arena.h"

static void add_text_child(struct stanza *st, struct xml_el *q, const char *name, const char *v)
{
	struct xml_el *e = xml_add_child(st->arena, q, q->ns, name);
	xml_add_text(st->arena, e, v, strlen(v));
}

static enum hook_rc version(struct hook_ev *ev)
{
	struct stanza *st = ev_result(ev);
	struct xml_el *q = xml_add_child(st->arena, st->el, NS_VERSION, "query");
	add_text_child(st, q, "name", "Parley");
	add_text_child(st, q, "version", PARLEY_VERSION);
	struct utsname u;
	if (uname(&u) == 0)
		add_text_child(st, q, "os", u.sysname);
	ev_send(ev);
	return HOOK_DONE;
}

static const struct iq_reg version_iqs[] = {
    {NS_VERSION, "query", IQ_GET, DEST_HOST, version},
    {0},
};

const struct module mod_version = {
    .name = "version",
    .features = (const char *const[]){NS_VERSION, NULL},
    .iqs = version_iqs,
    .xeps = (const struct xep_ref[]){{92, "1.1", "complete"}, {0}},
};
