/* The modules compiled in, in registration order. */
#include "server/module.h"

extern const struct module mod_disco, mod_ping, mod_version, mod_roster, mod_offline, mod_vcard,
    mod_private, mod_time, mod_last, mod_blocking, mod_register;

const struct module *const parley_modules[] = {
    &mod_disco,	  &mod_ping, &mod_version, &mod_roster,	  &mod_offline,	 &mod_vcard,
    &mod_private, &mod_time, &mod_last,	   &mod_blocking, &mod_register, NULL,
};
