/* placeholder: being written */
#include "storage/schema.h"

const char store_schema_roster[] = "SELECT 1;";
