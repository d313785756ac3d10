/* placeholder: being written */
#include "server/module.h"

const struct module mod_roster = {
	.name = "roster",
};
