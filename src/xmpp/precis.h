/* PRECIS (RFC 8264): the IdentifierClass and FreeformClass string classes,
 * and the two RFC 8265 profiles XMPP addresses are built on (RFC 7622 §3.3,
 * §3.4). Character data comes from ICU, so the Unicode version is ICU's.
 * Strings are UTF-8 in and out; ill-formed UTF-8 is rejected. */
#ifndef PARLEY_PRECIS_H
#define PARLEY_PRECIS_H

#include <stddef.h>
#include <stdint.h>

/* Longest input accepted, in bytes. XMPP parts are at most 1023 bytes
 * (RFC 7622 §3.1), so anything longer is refused before any work. */
#define PRECIS_IN_MAX 1023

/* Derived property values, RFC 8264 §8. PRECIS_FREE_PVAL is the value the
 * RFC writes "ID_DIS or FREE_PVAL": disallowed in IdentifierClass, valid in
 * FreeformClass. */
enum precis_prop {
	PRECIS_PVALID,
	PRECIS_FREE_PVAL,
	PRECIS_CONTEXTJ,
	PRECIS_CONTEXTO,
	PRECIS_DISALLOWED,
	PRECIS_UNASSIGNED,
};

/* The derived property of one code point, context not considered. */
enum precis_prop precis_property(uint32_t cp);

/* RFC 8265 §3.3 UsernameCaseMapped: width mapping, toLowerCase, NFC, the
 * Bidi Rule (RFC 5893), IdentifierClass, non-empty.
 * RFC 8265 §4.2 OpaqueString: non-ASCII spaces to U+0020, NFC,
 * FreeformClass, non-empty.
 * Both write a NUL-terminated result into out (cap bytes) and return its
 * length, or -1 if the input is refused or the result does not fit. */
int precis_username_casemapped(const char *in, size_t len, char *out, size_t cap);
int precis_opaque_string(const char *in, size_t len, char *out, size_t cap);

#endif
