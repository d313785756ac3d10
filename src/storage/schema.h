/* The schema steps of each feature, defined next to that feature's SQLite
 * queries and applied in this order by sqlite.c's migrations. A step that
 * has shipped is never edited: a change is a new step. */
#ifndef PARLEY_SCHEMA_H
#define PARLEY_SCHEMA_H

extern const char store_schema_roster[];
extern const char store_schema_offline[];
extern const char store_schema_account[];
extern const char store_schema_blocklist[];

#endif
