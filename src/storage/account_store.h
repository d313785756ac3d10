/* Per-account data of the small account modules: vCards (XEP-0054),
 * private XML (XEP-0049) and last activity (XEP-0012). Typed and
 * asynchronous like store.h: every completion runs on origin's thread
 * (give worker_origin()), after a write is durable. Everything stored
 * belongs to an account (users), so deleting the account deletes it.
 *
 * XML is stored serialized. It is never handed back as bytes: a read
 * parses the stored value again with our own stream parser
 * (xml/xmlstream.h) under fixed limits, on the origin's thread, and a value
 * that is not exactly one well-formed element within ACCOUNT_XML_MAX bytes
 * reads as STORE_ERROR. So a damaged or hand-edited database can make a
 * request fail, never make us relay bytes we did not check. */
#ifndef PARLEY_ACCOUNT_STORE_H
#define PARLEY_ACCOUNT_STORE_H

#include <stddef.h>

#include "storage/store.h"

struct arena;
struct xml_el;

/* Largest serialized element stored for one key (a vCard, one private
 * XML fragment). Callers refuse bigger ones before storing. */
#define ACCOUNT_XML_MAX (64 * 1024)
/* Longest status text kept with the last activity, in bytes. */
#define ACCOUNT_STATUS_MAX 1024

/* Completion of a read of stored XML. el is the stored element, parsed
 * into the arena the caller named; NULL unless rc is STORE_OK.
 * STORE_NOT_FOUND: nothing stored under that key. */
typedef void store_xml_cb(void *ud, int rc, struct xml_el *el);

/* vCards: one per account. xml is the serialized <vCard xmlns='vcard-temp'/>
 * (at most ACCOUNT_XML_MAX bytes; copied), replacing any stored one.
 * A set for an account that does not exist ends with STORE_NOT_FOUND. */
void store_vcard_get(struct store *s, void *origin, const char *host, const char *user,
		     struct arena *into, store_xml_cb *cb, void *ud);
void store_vcard_set(struct store *s, void *origin, const char *host, const char *user,
		     const char *xml, size_t len, store_done_cb *cb, void *ud);

/* Private XML: one element per account and namespace (the namespace of
 * the stored element, XEP-0049 §2.3). */
void store_private_get(struct store *s, void *origin, const char *host, const char *user,
		       const char *ns, struct arena *into, store_xml_cb *cb, void *ud);
void store_private_set(struct store *s, void *origin, const char *host, const char *user,
		       const char *ns, const char *xml, size_t len, store_done_cb *cb, void *ud);

/* Last activity: when the account was last left (unix time) and the
 * status text of its last unavailable presence ("" if none). status is
 * valid during the call only. */
typedef void store_last_cb(void *ud, int rc, long long when, const char *status);
void store_last_get(struct store *s, void *origin, const char *host, const char *user,
		    store_last_cb *cb, void *ud);
/* status NULL keeps the stored text (a logout without an unavailable
 * presence of its own); it is cut to ACCOUNT_STATUS_MAX bytes. cb may be
 * NULL. The write is lazy (store_job_submit_lazy()): it may wait a few
 * milliseconds to share a transaction; store_last_get() sees it anyway. */
void store_last_set(struct store *s, void *origin, const char *host, const char *user,
		    long long when, const char *status, store_done_cb *cb, void *ud);

#endif
