/* XEP-0199: XMPP Ping. */
#include "server/module.h"

static enum hook_rc ping(struct hook_ev *ev)
{
	ev_reply_result(ev);
	return HOOK_DONE;
}

static const struct iq_reg ping_iqs[] = {
    {NS_PING, "ping", IQ_GET, DEST_HOST, ping},
    {0},
};

const struct module mod_ping = {
    .name = "ping",
    .features = (const char *const[]){NS_PING, NULL},
    .iqs = ping_iqs,
    .xeps = (const struct xep_ref[]){{199, "2.0.1", "complete"}, {0}},
};
