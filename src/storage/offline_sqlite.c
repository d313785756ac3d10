/* placeholder: being written */
#include "storage/schema.h"

const char store_schema_offline[] = "SELECT 1;";
