/* Configuration: one YAML file (libyaml), options declared in one table
 * (name, type, default, bounds, reloadable, doc) from which parsing,
 * validation, `--check`, the sample written by `parleyctl init` and
 * docs/CONFIG.md all come. Relative paths are resolved against the
 * directory of the config file. */
#ifndef PARLEY_CONFIG_H
#define PARLEY_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "core/log.h"

struct host_conf {
	char *domain;	 /* normalized (IDNA2008, lowercase) */
	char *cert_file; /* absolute path */
	char *key_file;	 /* absolute path */
};

enum conflict_policy { CONFLICT_KICK_OLD, CONFLICT_REFUSE_NEW };
enum registration_mode { REGISTRATION_OFF, REGISTRATION_INVITE, REGISTRATION_OPEN };

struct limits_conf {
	size_t stanza_bytes;	     /* after authentication */
	size_t stanza_bytes_preauth; /* before authentication */
	unsigned xml_depth;
	unsigned xml_attrs;
	size_t xml_attr_len;
	size_t xml_text_len;
	unsigned xml_children;
	unsigned handshake_timeout;		/* seconds: TCP accept to authenticated */
	unsigned idle_timeout;			/* seconds without any byte from the peer */
	size_t out_queue_bytes;			/* queued output per session before it is closed */
	unsigned auth_failures_per_ip;		/* per minute, then wait */
	unsigned auth_failures_per_account;	/* per minute, then failures are delayed */
	unsigned registrations_per_ip;		/* in-band registrations per hour */
	unsigned connections_per_ip;		/* open unauthenticated connections per IP */
	unsigned connections_per_second_per_ip; /* new connections, averaged over 10 s */
	unsigned stanzas_per_second;		/* per session: token bucket rate */
	size_t bytes_per_second;		/* per session: token bucket rate */
	size_t s2s_bytes_per_second;		/* per server-to-server stream */
	unsigned roster_items;			/* items per roster */
	unsigned offline_messages;		/* stored messages per account */
	size_t vcard_bytes;			/* serialized vCard */
	unsigned blocklist_items;		/* blocked JIDs per account */
};

/* XEP-0157 contact addresses, in the order of the serverinfo form's
 * fields (config.c's contact_fields). */
enum contact_kind {
	CONTACT_ABUSE,
	CONTACT_ADMIN,
	CONTACT_FEEDBACK,
	CONTACT_SALES,
	CONTACT_SECURITY,
	CONTACT_STATUS,
	CONTACT_SUPPORT,
	CONTACT_KINDS
};
/* The form field of each kind ("abuse-addresses", ...). */
extern const char *const contact_fields[CONTACT_KINDS];

struct config {
	char *path;	  /* absolute path of the file */
	char *dir;	  /* its directory */
	char *data_dir;	  /* absolute */
	char *store_path; /* absolute: the SQLite database */
	enum log_level log_level;
	unsigned workers;  /* 0: one per core */
	char **interfaces; /* addresses to listen on; "*" means all (IPv4 and IPv6) */
	size_t n_interfaces;
	unsigned c2s_port;     /* 0 disables */
	unsigned c2s_tls_port; /* direct TLS, XEP-0368; 0 disables */
	unsigned s2s_port;
	unsigned s2s_tls_port; /* direct TLS for servers, XEP-0368 */
	unsigned http_port;
	bool s2s_dialback;
	char **s2s_secure_domains; /* normalized: certificate or DANE required */
	size_t n_s2s_secure_domains;
	char **s2s_insecure_domains; /* normalized: TLS not required */
	size_t n_s2s_insecure_domains;
	char *s2s_ca_file;  /* NULL: system store only */
	char **dns_servers; /* forwarders; none: /etc/resolv.conf */
	size_t n_dns_servers;
	char *dns_trust_anchor; /* NULL: the default */
	bool dns_dnssec_fallback;
	bool c2s_require_encryption;
	bool sasl_plain; /* offer PLAIN (only ever on encrypted streams) */
	unsigned scram_iterations;
	enum conflict_policy resource_conflict;
	enum registration_mode registration;
	struct limits_conf limits;
	char **contact[CONTACT_KINDS]; /* URIs (mailto:, xmpp:, https:), XEP-0157 */
	size_t n_contact[CONTACT_KINDS];
	struct host_conf *hosts;
	size_t n_hosts;
};

/* Loads and validates. On error returns -1, leaves *out zeroed and writes
 * one line "FILE:LINE: KEY: problem" into err (FILE as given in path;
 * "FILE: cannot open: reason" when it cannot be read). */
int config_load(const char *path, struct config *out, char *err, size_t errlen);
void config_free(struct config *c); /* NULL or a zeroed config: no-op */
/* domain: normalized, as in host_conf. NULL if not served. */
const struct host_conf *config_host(const struct config *c, const char *domain);
/* For a reload: 0 if every option that differs between old and new is
 * reloadable (hosts may change certificate and key, not come or go);
 * otherwise -1 and "FILE: KEY: changed, which needs a restart" in err. */
int config_check_reload(const struct config *old, const struct config *new, char *err,
			size_t errlen);

/* docs/CONFIG.md, generated from the option table. */
void config_write_doc(FILE *f);

struct init_opts {
	const char *domain;
	const char *cert_file, *key_file; /* as written into the file (may be relative) */
	unsigned c2s_port, c2s_tls_port, s2s_port, http_port; /* 0: the default */
	unsigned s2s_tls_port;
	const char *interface; /* NULL: "*" */
};
/* A complete, commented config that works as is (parleyctl init): every
 * option appears, those at their default commented out as "#key: value". */
void config_write_sample(FILE *f, const struct init_opts *o);

#endif
