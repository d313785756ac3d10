/* The modules compiled in, in registration order. */
#include "server/module.h"

extern const struct module mod_disco, mod_ping, mod_version;

const struct module *const parley_modules[] = {
    &mod_disco,
    &mod_ping,
    &mod_version,
    NULL,
};
