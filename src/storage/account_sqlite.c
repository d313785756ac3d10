/* placeholder: being written */
#include "storage/schema.h"

const char store_schema_account[] = "SELECT 1;";
