/* Configuration: a YAML file read through libyaml's document API, checked
 * against one const table of options. The table is the single source of
 * truth: loading, defaults, bounds, the reload check, the sample written by
 * `parleyctl init` and docs/CONFIG.md are all driven by it, so an option
 * cannot exist in one of them and be missing from another. */
#include "server/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "xmpp/jid.h"

enum opt_type {
	OPT_BOOL,   /* bool */
	OPT_UINT,   /* unsigned */
	OPT_SIZE,   /* size_t: bytes, optional k/m/g suffix (powers of 1024) */
	OPT_SECS,   /* unsigned seconds, optional s/m/h suffix */
	OPT_STRING, /* char *, malloc'd */
	OPT_PATH,   /* char *, malloc'd, absolute (relative to the config file's directory) */
	OPT_ENUM,   /* an enum stored as int, index into names[] */
	OPT_LIST,   /* char ** with a size_t count at off_n */
	OPT_HOSTS,  /* struct host_conf * with a size_t count at off_n */
};

struct opt {
	const char *name; /* dotted: "limits.xml_depth" is xml_depth under limits: */
	enum opt_type type;
	size_t off;		/* into struct config (or struct host_conf for host keys) */
	size_t off_n;		/* OPT_LIST, OPT_HOSTS: the count */
	unsigned long long def; /* BOOL, UINT, SIZE, SECS, ENUM */
	const char *def_str;	/* STRING, PATH, LIST (a one-element list); NULL: derived */
	unsigned long long min, max;
	const char *const *names; /* OPT_ENUM, NULL-terminated, indexed by value */
	bool reloadable;
	bool required;
	/* Returns NULL or the problem; may replace *s with a normalized copy.
	 * Applies to OPT_STRING values and to each OPT_LIST element. */
	const char *(*check)(char **s);
	const char *doc;
	const char *def_doc; /* shown instead of the default when it is derived */
	const char *sample;  /* value written (commented) in the sample when derived */
};

static const char *check_address(char **s);
static const char *check_uri(char **s);

const char *const contact_fields[CONTACT_KINDS] = {
    "abuse-addresses",	  "admin-addresses",  "feedback-addresses", "sales-addresses",
    "security-addresses", "status-addresses", "support-addresses",
};
static const char *check_domain(char **s);

static const char *const log_names[] = {"error", "warn", "info", "debug", NULL};
static const char *const conflict_names[] = {"kick_old", "refuse_new", NULL};
static const char *const registration_names[] = {"off", "invite", "open", NULL};

/* The stores below go through int and the names[] index the enum values. */
_Static_assert(sizeof(enum log_level) == sizeof(int), "enum stored as int");
_Static_assert(sizeof(enum conflict_policy) == sizeof(int), "enum stored as int");
_Static_assert(LOG_ERROR == 0 && LOG_WARN == 1 && LOG_INFO == 2 && LOG_DEBUG == 3,
	       "log_names order");
_Static_assert(CONFLICT_KICK_OLD == 0 && CONFLICT_REFUSE_NEW == 1, "conflict_names order");
_Static_assert(REGISTRATION_OFF == 0 && REGISTRATION_INVITE == 1 && REGISTRATION_OPEN == 2,
	       "registration_names order");

#define KIB    1024ull
#define MIB    (1024ull * 1024)
#define OFF(f) offsetof(struct config, f)

/* Order is the order of the docs and of the sample. hosts comes first
 * because it is the one thing every file must say. */
static const struct opt opts[] = {
    {.name = "hosts",
     .type = OPT_HOSTS,
     .off = OFF(hosts),
     .off_n = OFF(n_hosts),
     .required = true,
     .doc = "The domains this server serves, each with its certificate and key "
	    "(see Hosts below). At least one is required."},
    {.name = "log_level",
     .type = OPT_ENUM,
     .off = OFF(log_level),
     .def = LOG_INFO,
     .names = log_names,
     .reloadable = true,
     .doc = "Least severe level written to the log; debug logs every stanza's "
	    "routing and is meant for troubleshooting."},
    {.name = "workers",
     .type = OPT_UINT,
     .off = OFF(workers),
     .def = 0,
     .min = 0,
     .max = 256,
     .doc = "Worker threads, each running its own event loop; 0 starts one per CPU core."},
    {.name = "data_dir",
     .type = OPT_PATH,
     .off = OFF(data_dir),
     .def_str = "data",
     .doc = "Directory for the server's state; relative to the configuration file's "
	    "directory, so a whole installation can be moved as one folder."},
    {.name = "store_path",
     .type = OPT_PATH,
     .off = OFF(store_path),
     .def_doc = "<data_dir>/parley.db",
     .sample = "data/parley.db",
     .doc = "The SQLite database holding accounts, rosters and archives."},
    {.name = "interfaces",
     .type = OPT_LIST,
     .off = OFF(interfaces),
     .off_n = OFF(n_interfaces),
     .def_str = "*",
     .check = check_address,
     .doc = "IP addresses to listen on; \"*\" listens on all addresses, IPv4 and IPv6."},
    {.name = "c2s_port",
     .type = OPT_UINT,
     .off = OFF(c2s_port),
     .def = 5222,
     .max = 65535,
     .doc = "Port for client connections using STARTTLS (RFC 6120); 0 disables it."},
    {.name = "c2s_tls_port",
     .type = OPT_UINT,
     .off = OFF(c2s_tls_port),
     .def = 5223,
     .max = 65535,
     .doc = "Port for client connections with TLS from the first byte (XEP-0368); "
	    "0 disables it."},
    {.name = "s2s_port",
     .type = OPT_UINT,
     .off = OFF(s2s_port),
     .def = 5269,
     .max = 65535,
     .doc = "Port for connections from other servers (federation); 0 disables it."},
    {.name = "s2s_tls_port",
     .type = OPT_UINT,
     .off = OFF(s2s_tls_port),
     .def = 5270,
     .max = 65535,
     .doc = "Port for connections from other servers with TLS from the first byte (XEP-0368; "
	    "announce it with an _xmpps-server._tcp SRV record); 0 disables it."},
    {.name = "s2s_dialback",
     .type = OPT_BOOL,
     .off = OFF(s2s_dialback),
     .def = true,
     .doc = "Authenticate a peer server by dialback (XEP-0220) when its certificate does not "
	    "(self-signed, or not naming it), and only ever over TLS. Off: every peer needs a "
	    "certificate that validates for its domain, or DANE."},
    {.name = "s2s_secure_domains",
     .type = OPT_LIST,
     .off = OFF(s2s_secure_domains),
     .off_n = OFF(n_s2s_secure_domains),
     .check = check_domain,
     .doc = "Peer domains that must prove who they are with a certificate valid for them "
	    "(or DANE): dialback is never accepted from them, and DNS "
	    "alone is never trusted to reach them."},
    {.name = "s2s_insecure_domains",
     .type = OPT_LIST,
     .off = OFF(s2s_insecure_domains),
     .off_n = OFF(n_s2s_insecure_domains),
     .check = check_domain,
     .doc = "Peer domains allowed to connect, and be connected to, without TLS. Every other "
	    "peer must use TLS; one that cannot is refused, with a log line saying so."},
    {.name = "s2s_ca_file",
     .type = OPT_PATH,
     .off = OFF(s2s_ca_file),
     .def_doc = "(none)",
     .sample = "ca.pem",
     .doc = "CA certificates (PEM) trusted for peer servers' certificates in addition to the "
	    "system's trust store (Debian's ca-certificates)."},
    {.name = "dns_servers",
     .type = OPT_LIST,
     .off = OFF(dns_servers),
     .off_n = OFF(n_dns_servers),
     .doc = "DNS resolvers for finding peer servers (IP or IP@port); empty: those of "
	    "/etc/resolv.conf. Lookups are asynchronous and DNSSEC-validated (libunbound); "
	    "resolvers found to strip DNSSEC data are used without validation, with a "
	    "warning (no DANE then)."},
    {.name = "dns_trust_anchor",
     .type = OPT_PATH,
     .off = OFF(dns_trust_anchor),
     .def_doc = "/usr/share/dns/root.key",
     .sample = "/usr/share/dns/root.key",
     .doc = "DNSSEC trust anchors (DS or DNSKEY records, one per line) for validating DANE "
	    "(TLSA) and SRV records; Debian's dns-root-data package provides the root's."},
    {.name = "dns_dnssec_fallback",
     .type = OPT_BOOL,
     .off = OFF(dns_dnssec_fallback),
     .def = true,
     .doc = "When the DNS resolvers answer but strip DNSSEC data (so that everything would "
	    "validate as bogus), resolve without validation, with an error in the log, rather "
	    "than find no peer at all. Never once an answer has validated, and validation "
	    "returns when they pass DNSSEC again. Off: validation stays on whatever happens "
	    "(an attacker between us and the resolvers can then only block federation, not "
	    "turn DANE off at start-up)."},
    {.name = "http_port",
     .type = OPT_UINT,
     .off = OFF(http_port),
     .def = 5280,
     .max = 65535,
     .doc = "Port for HTTP services (WebSocket, BOSH, uploads); 0 disables it."},
    {.name = "c2s_require_encryption",
     .type = OPT_BOOL,
     .off = OFF(c2s_require_encryption),
     .def = true,
     .reloadable = true,
     .doc = "Refuse to authenticate clients before TLS; turn off only for local tests."},
    {.name = "sasl_plain",
     .type = OPT_BOOL,
     .off = OFF(sasl_plain),
     .def = true,
     .reloadable = true,
     .doc = "Offer SASL PLAIN (only ever on encrypted streams) for clients without SCRAM."},
    {.name = "scram_iterations",
     .type = OPT_UINT,
     .off = OFF(scram_iterations),
     .def = 10000,
     .min = 4096,
     .max = 1000000,
     .reloadable = true,
     .doc = "PBKDF2 iterations for newly stored SCRAM passwords (RFC 7677 asks for at "
	    "least 4096); existing passwords keep theirs."},
    {.name = "resource_conflict",
     .type = OPT_ENUM,
     .off = OFF(resource_conflict),
     .def = CONFLICT_KICK_OLD,
     .names = conflict_names,
     .reloadable = true,
     .doc = "What happens when a client binds a resource already in use (RFC 6120 "
	    "§7.7.2.2): kick_old disconnects the old session, refuse_new refuses the new one."},
    {.name = "registration",
     .type = OPT_ENUM,
     .off = OFF(registration),
     .def = REGISTRATION_OFF,
     .names = registration_names,
     .reloadable = true,
     .doc = "In-band registration of new accounts by clients (XEP-0077): off; invite "
	    "accepts only clients holding a token from `parleyctl invite` (XEP-0445); open "
	    "lets anyone register, limited per IP address by limits.registrations_per_ip."},
    {.name = "contact.abuse",
     .type = OPT_LIST,
     .off = OFF(contact[0]),
     .off_n = OFF(n_contact[0]),
     .check = check_uri,
     .doc = "Where to report abuse (spam, harassment) by this server's users. A list of URIs "
	    "(mailto:, xmpp:, https:), published to clients in "
	    "service discovery (XEP-0157)."},
    {.name = "contact.admin",
     .type = OPT_LIST,
     .off = OFF(contact[1]),
     .off_n = OFF(n_contact[1]),
     .check = check_uri,
     .doc = "The server's administrators. A list of URIs (mailto:, xmpp:, https:), published to "
	    "clients in "
	    "service discovery (XEP-0157)."},
    {.name = "contact.feedback",
     .type = OPT_LIST,
     .off = OFF(contact[2]),
     .off_n = OFF(n_contact[2]),
     .check = check_uri,
     .doc = "Where users send feedback about the service. A list of URIs (mailto:, xmpp:, https:), "
	    "published to clients in "
	    "service discovery (XEP-0157)."},
    {.name = "contact.sales",
     .type = OPT_LIST,
     .off = OFF(contact[3]),
     .off_n = OFF(n_contact[3]),
     .check = check_uri,
     .doc = "Sales enquiries. A list of URIs (mailto:, xmpp:, https:), published to clients in "
	    "service discovery (XEP-0157)."},
    {.name = "contact.security",
     .type = OPT_LIST,
     .off = OFF(contact[4]),
     .off_n = OFF(n_contact[4]),
     .check = check_uri,
     .doc = "Where to report security problems of this server. A list of URIs (mailto:, xmpp:, "
	    "https:), published to clients in "
	    "service discovery (XEP-0157)."},
    {.name = "contact.status",
     .type = OPT_LIST,
     .off = OFF(contact[5]),
     .off_n = OFF(n_contact[5]),
     .check = check_uri,
     .doc = "Where the service's status is published (a web page or an XMPP service). A list of "
	    "URIs (mailto:, xmpp:, https:), published to clients in "
	    "service discovery (XEP-0157)."},
    {.name = "contact.support",
     .type = OPT_LIST,
     .off = OFF(contact[6]),
     .off_n = OFF(n_contact[6]),
     .check = check_uri,
     .doc =
	 "Where users get help. A list of URIs (mailto:, xmpp:, https:), published to clients in "
	 "service discovery (XEP-0157)."},
    {.name = "limits.stanza_bytes",
     .type = OPT_SIZE,
     .off = OFF(limits.stanza_bytes),
     .def = 256 * KIB,
     .min = 10000,
     .max = 16 * MIB,
     .reloadable = true,
     .doc = "Largest stanza accepted from an authenticated peer; RFC 6120 §13.12 "
	    "requires at least 10000."},
    {.name = "limits.stanza_bytes_preauth",
     .type = OPT_SIZE,
     .off = OFF(limits.stanza_bytes_preauth),
     .def = 16 * KIB,
     .min = 4096,
     .max = 16 * MIB,
     .reloadable = true,
     .doc = "Largest stanza accepted before authentication, kept small so anonymous "
	    "peers cannot make the server buffer much; at most limits.stanza_bytes."},
    {.name = "limits.xml_depth",
     .type = OPT_UINT,
     .off = OFF(limits.xml_depth),
     .def = 64,
     .min = 16,
     .max = 1024,
     .reloadable = true,
     .doc = "Deepest element nesting in a stream; real payloads (forwarded, archived "
	    "pubsub items) stay well under 20."},
    {.name = "limits.xml_attrs",
     .type = OPT_UINT,
     .off = OFF(limits.xml_attrs),
     .def = 64,
     .min = 8,
     .max = 1024,
     .reloadable = true,
     .doc = "Most attributes (namespace declarations included) on one element."},
    {.name = "limits.xml_attr_len",
     .type = OPT_SIZE,
     .off = OFF(limits.xml_attr_len),
     .def = 16 * KIB,
     .min = 1024,
     .max = 16 * MIB,
     .reloadable = true,
     .doc = "Longest attribute value; the longest standard one, a full JID, is at "
	    "most 3071 bytes. At most limits.stanza_bytes."},
    {.name = "limits.xml_text_len",
     .type = OPT_SIZE,
     .off = OFF(limits.xml_text_len),
     .def = 0,
     .min = 0,
     .max = 16 * MIB,
     .reloadable = true,
     .def_doc = "0 (= limits.stanza_bytes)",
     .doc = "Longest text node; 0 means limits.stanza_bytes, since avatars and other "
	    "base64 payloads legitimately fill a whole stanza."},
    {.name = "limits.xml_children",
     .type = OPT_UINT,
     .off = OFF(limits.xml_children),
     .def = 10000,
     .min = 16,
     .max = 1000000,
     .reloadable = true,
     .doc = "Most child elements of one element, which bounds per-stanza parsing work."},
    {.name = "limits.handshake_timeout",
     .type = OPT_SECS,
     .off = OFF(limits.handshake_timeout),
     .def = 30,
     .min = 5,
     .max = 600,
     .reloadable = true,
     .doc = "Time from accepting a connection to its authentication; a peer that "
	    "takes longer is disconnected, so idle unauthenticated sockets cannot pile up."},
    {.name = "limits.idle_timeout",
     .type = OPT_SECS,
     .off = OFF(limits.idle_timeout),
     .def = 840,
     .min = 60,
     .max = 86400,
     .reloadable = true,
     .doc = "Time without a single byte from a peer before its connection is "
	    "considered dead; the default outlasts two missed keepalives of mobile "
	    "clients that ping every 5 minutes."},
    {.name = "limits.out_queue_bytes",
     .type = OPT_SIZE,
     .off = OFF(limits.out_queue_bytes),
     .def = 4 * MIB,
     .min = 64 * KIB,
     .max = 1024 * MIB,
     .reloadable = true,
     .doc = "Output queued for one slow reader before its session is closed, so one "
	    "stalled peer cannot hold unbounded memory; at least limits.stanza_bytes."},
    {.name = "limits.auth_failures_per_ip",
     .type = OPT_UINT,
     .off = OFF(limits.auth_failures_per_ip),
     .def = 10,
     .min = 0,
     .max = 10000,
     .reloadable = true,
     .doc = "Failed authentications allowed per IP address per minute before that "
	    "address must wait; 0 removes the limit (test setups only)."},
    {.name = "limits.auth_failures_per_account",
     .type = OPT_UINT,
     .off = OFF(limits.auth_failures_per_account),
     .def = 5,
     .min = 0,
     .max = 10000,
     .reloadable = true,
     .doc = "Failed authentications per account per minute (from anywhere) after which "
	    "each further failure for it is answered only after a delay; the account is "
	    "never locked, so its owner can still log in. 0 removes the limit."},
    {.name = "limits.registrations_per_ip",
     .type = OPT_UINT,
     .off = OFF(limits.registrations_per_ip),
     .def = 3,
     .min = 0,
     .max = 10000,
     .reloadable = true,
     .doc = "In-band registration attempts one IP address may make per hour, with or "
	    "without an invitation; a refused attempt counts too, so parallel connections "
	    "cannot pass the limit together. 0 removes the limit (test setups only)."},
    {.name = "limits.connections_per_ip",
     .type = OPT_UINT,
     .off = OFF(limits.connections_per_ip),
     .def = 16,
     .min = 0,
     .max = 100000,
     .reloadable = true,
     .doc = "Connections one IP address (for IPv6, one /64 network) may hold open "
	    "before they authenticate; a new one past it is closed at once with "
	    "policy-violation. Authenticated sessions do not count, so users behind one "
	    "NAT are not limited, only parallel handshakes. 0 removes the limit."},
    {.name = "limits.connections_per_second_per_ip",
     .type = OPT_UINT,
     .off = OFF(limits.connections_per_second_per_ip),
     .def = 5,
     .min = 0,
     .max = 100000,
     .reloadable = true,
     .doc = "New connections accepted per second from one IP address (for IPv6, one /64), "
	    "averaged over 10 seconds, so a burst of 10 times this passes; past it new "
	    "connections are closed at once. 0 removes the limit (load tests)."},
    {.name = "limits.stanzas_per_second",
     .type = OPT_UINT,
     .off = OFF(limits.stanzas_per_second),
     .def = 50,
     .min = 0,
     .max = 1000000,
     .reloadable = true,
     .doc = "Stanzas (and other top-level elements) one session may send per second, "
	    "as a token bucket holding 5 seconds' worth: a client's burst at login passes, "
	    "a flood is slowed by not reading from it (TCP pushes back), never by "
	    "dropping. 0 removes the limit (load tests)."},
    {.name = "limits.bytes_per_second",
     .type = OPT_SIZE,
     .off = OFF(limits.bytes_per_second),
     .def = 64 * KIB,
     .min = 0,
     .max = 1024 * MIB,
     .reloadable = true,
     .doc = "Bytes one session may send per second, as a token bucket holding 5 seconds' "
	    "worth (at least one limits.stanza_bytes); past it reading pauses until the "
	    "bucket refills. 0 removes the limit (load tests)."},
    {.name = "limits.s2s_bytes_per_second",
     .type = OPT_SIZE,
     .off = OFF(limits.s2s_bytes_per_second),
     .def = 256 * KIB,
     .min = 0,
     .max = 1024 * MIB,
     .reloadable = true,
     .doc = "Bytes one server-to-server stream may bring per second (it carries many "
	    "users' traffic), as a token bucket holding 5 seconds' worth (at least one "
	    "limits.stanza_bytes); past it reading pauses until the bucket refills, so TCP "
	    "pushes back on the peer. 0 removes the limit."},
    {.name = "limits.roster_items",
     .type = OPT_UINT,
     .off = OFF(limits.roster_items),
     .def = 1000,
     .min = 10,
     .max = 100000,
     .doc = "Most items in one roster (RFC 6121 §2.3.3); a roster set or subscription past "
	    "it is refused with not-allowed or resource-constraint. Every login reads the "
	    "whole roster, so this bounds that work too."},
    {.name = "limits.offline_messages",
     .type = OPT_UINT,
     .off = OFF(limits.offline_messages),
     .def = 1000,
     .min = 1,
     .max = 100000,
     .doc = "Messages kept for one account while it is offline (XEP-0160); past it, "
	    "senders get resource-constraint. Stored bytes are capped at 2 MiB per account "
	    "as well."},
    {.name = "limits.vcard_bytes",
     .type = OPT_SIZE,
     .off = OFF(limits.vcard_bytes),
     .def = 64 * KIB,
     .min = 4 * KIB,
     .max = 64 * KIB,
     .doc = "Largest vCard (XEP-0054) an account may store, serialized; avatars are "
	    "embedded in it, so this caps their size too."},
    {.name = "limits.blocklist_items",
     .type = OPT_UINT,
     .off = OFF(limits.blocklist_items),
     .def = 1000,
     .min = 10,
     .max = 100000,
     .doc = "Most JIDs one account may block (XEP-0191); a block past it is refused "
	    "whole with resource-constraint."},
};
#define N_OPTS (sizeof(opts) / sizeof(opts[0]))

#define HOFF(f) offsetof(struct host_conf, f)

static const struct opt host_opts[] = {
    {.name = "domain",
     .type = OPT_STRING,
     .off = HOFF(domain),
     .required = true,
     .check = check_domain,
     .doc = "The domain (IDNA2008, stored lowercase); each may appear once."},
    {.name = "certificate",
     .type = OPT_PATH,
     .off = HOFF(cert_file),
     .reloadable = true,
     .def_doc = "<domain>.crt",
     .doc = "PEM certificate chain covering the domain, leaf first (then its issuer). "
	    "OCSP stapling: if the file <certificate>.ocsp exists (a DER response, as "
	    "`openssl ocsp -respout` writes it), it is stapled while it is valid; refresh "
	    "it before its nextUpdate and send SIGHUP."},
    {.name = "key",
     .type = OPT_PATH,
     .off = HOFF(key_file),
     .reloadable = true,
     .def_doc = "<domain>.key",
     .doc = "PEM private key of the certificate."},
};
#define N_HOST_OPTS (sizeof(host_opts) / sizeof(host_opts[0]))

/* ---- small helpers ---- */

static char *xstrdup(const char *s)
{
	char *d = strdup(s);
	if (!d)
		die_oom();
	return d;
}

static void *xcalloc(size_t n, size_t sz)
{
	void *p = calloc(n ? n : 1, sz);
	if (!p)
		die_oom();
	return p;
}

static char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s;
	va_start(ap, fmt);
	int n = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (n < 0)
		die_oom();
	return s;
}

/* Relative paths are taken against the config file's directory, never the
 * working directory, so `parleyd -c /etc/parley/parley.yaml` behaves the
 * same whoever starts it from wherever. */
static char *path_resolve(const char *dir, const char *p)
{
	char *r;
	while (p[0] == '.' && p[1] == '/')
		p += 2;
	if (p[0] == '/')
		r = xstrdup(p);
	else if (!strcmp(p, "."))
		r = xstrdup(dir);
	else
		r = xasprintf("%s%s%s", dir, dir[strlen(dir) - 1] == '/' ? "" : "/", p);
	size_t n = strlen(r);
	while (n > 1 && r[n - 1] == '/')
		r[--n] = '\0';
	return r;
}

/* The largest unit that divides the value exactly, so that defaults read
 * as an admin would write them (256k, 14m) and parse back unchanged. */
static void fmt_size(char *b, size_t cap, unsigned long long v)
{
	static const char units[] = "kmg";
	int u = -1;
	while (u < 2 && v >= 1024 && v % 1024 == 0) {
		v /= 1024;
		u++;
	}
	if (u < 0)
		snprintf(b, cap, "%llu", v);
	else
		snprintf(b, cap, "%llu%c", v, units[u]);
}

static void fmt_secs(char *b, size_t cap, unsigned long long v)
{
	if (v && v % 3600 == 0)
		snprintf(b, cap, "%lluh", v / 3600);
	else if (v && v % 60 == 0)
		snprintf(b, cap, "%llum", v / 60);
	else
		snprintf(b, cap, "%llus", v);
}

/* Digits with an optional one-letter unit. Overflow saturates, so that a
 * huge number is reported as out of bounds rather than as garbage.
 * Returns 0, or -1 if s is not of that shape. */
static int parse_num(const char *s, const char *units, const unsigned long long *mult,
		     unsigned long long *out)
{
	unsigned long long v = 0;
	if (*s < '0' || *s > '9')
		return -1;
	for (; *s >= '0' && *s <= '9'; s++) {
		unsigned d = (unsigned)(*s - '0');
		v = v > (ULLONG_MAX - d) / 10 ? ULLONG_MAX : v * 10 + d;
	}
	if (*s && units) {
		const char *u = strchr(units, *s | 0x20);
		if (!u || !*u)
			return -1;
		unsigned long long m = mult[u - units];
		v = v > ULLONG_MAX / m ? ULLONG_MAX : v * m;
		s++;
	}
	if (*s)
		return -1;
	*out = v;
	return 0;
}

static const unsigned long long size_mult[] = {KIB, MIB, 1024 * MIB};
static const unsigned long long secs_mult[] = {1, 60, 3600};

static const char *check_address(char **s)
{
	unsigned char a[16];
	if (!strcmp(*s, "*") || inet_pton(AF_INET, *s, a) == 1 || inet_pton(AF_INET6, *s, a) == 1)
		return NULL;
	return "not an IP address or \"*\"";
}

/* XEP-0157 §2: each address is a URI. */
static const char *check_uri(char **s)
{
	const char *p = *s;
	if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')))
		return "not a URI (mailto:..., xmpp:..., https://...)";
	while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
	       *p == '+' || *p == '-' || *p == '.')
		p++;
	if (*p != ':' || !p[1])
		return "not a URI (mailto:..., xmpp:..., https://...)";
	for (p = *s; *p; p++)
		if ((unsigned char)*p <= ' ')
			return "a URI has no spaces or control characters";
	return NULL;
}

static const char *check_domain(char **s)
{
	char buf[JID_PART_MAX + 1];
	int n = jid_prep_domain(*s, strlen(*s), buf, sizeof(buf));
	if (n <= 0)
		return "not a valid domain name";
	free(*s);
	*s = xstrdup(buf);
	return NULL;
}

/* ---- loading ---- */

/* Keys are built from the file's text; a key too long for the buffer is
 * unknown anyway, so truncating it only shortens the message. */
#define KEY_MAX 320
static void key_fmt(char *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void key_fmt(char *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(b, KEY_MAX, fmt, ap);
	va_end(ap);
}

struct loader {
	const char *file; /* as the caller named it: errors should name what the admin typed */
	const char *dir;  /* borrowed from the config */
	yaml_document_t *doc;
	char *err;
	size_t errlen;
};

/* The part of the table a mapping is checked against, and where values go. */
struct scope {
	const struct opt *tab;
	size_t n;
	void *base;
	unsigned *seen;	     /* per option: line where it was set, 0 if not */
	const char *dprefix; /* prepended to keys in messages: "hosts[1]." */
};

static unsigned node_line(const yaml_node_t *n)
{
	return n ? (unsigned)n->start_mark.line + 1 : 1;
}

static int fail_at(struct loader *l, unsigned line, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail_at(struct loader *l, unsigned line, const char *key, const char *fmt, ...)
{
	if (!l->errlen)
		return -1;
	int n = snprintf(l->err, l->errlen, "%s:%u: %s: ", l->file, line, key);
	if (n >= 0 && (size_t)n < l->errlen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(l->err + n, l->errlen - (size_t)n, fmt, ap);
		va_end(ap);
	}
	/* Keys and values come from the file; keep the message on one line. */
	for (char *p = l->err; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	return -1;
}

static const char *type_name(const struct opt *o)
{
	switch (o->type) {
	case OPT_BOOL:
		return "true or false";
	case OPT_UINT:
		return "a whole number";
	case OPT_SIZE:
		return "a size (bytes, or with a k, m or g suffix)";
	case OPT_SECS:
		return "a duration (seconds, or with an s, m or h suffix)";
	case OPT_STRING:
		return "a string";
	case OPT_PATH:
		return "a path";
	case OPT_ENUM:
		return "one of its names";
	case OPT_LIST:
		return "a list of strings";
	case OPT_HOSTS:
		return "a list of hosts";
	}
	return "?";
}

static const char *node_kind(const yaml_node_t *n)
{
	switch (n->type) {
	case YAML_MAPPING_NODE:
		return "a mapping";
	case YAML_SEQUENCE_NODE:
		return "a list";
	default:
		return "a scalar";
	}
}

/* A scalar's text, or NULL (with the error written) if it is not a usable
 * one. libyaml keeps "\0" escapes, which C strings cannot carry. */
static const char *scalar(struct loader *l, const yaml_node_t *n, const char *key, const char *want)
{
	if (n->type != YAML_SCALAR_NODE) {
		fail_at(l, node_line(n), key, "expected %s, got %s", want, node_kind(n));
		return NULL;
	}
	const char *s = (const char *)n->data.scalar.value;
	if (strlen(s) != n->data.scalar.length) {
		fail_at(l, node_line(n), key, "contains a NUL byte");
		return NULL;
	}
	bool plain = n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
	if (!*s || (plain && (!strcmp(s, "~") || !strcmp(s, "null")))) {
		fail_at(l, node_line(n), key, "missing value (expected %s)", want);
		return NULL;
	}
	return s;
}

static int bounds_fail(struct loader *l, const yaml_node_t *n, const char *key, const struct opt *o)
{
	char lo[32], hi[32];
	if (o->type == OPT_SIZE) {
		fmt_size(lo, sizeof(lo), o->min);
		fmt_size(hi, sizeof(hi), o->max);
	} else if (o->type == OPT_SECS) {
		fmt_secs(lo, sizeof(lo), o->min);
		fmt_secs(hi, sizeof(hi), o->max);
	} else {
		snprintf(lo, sizeof(lo), "%llu", o->min);
		snprintf(hi, sizeof(hi), "%llu", o->max);
	}
	return fail_at(l, node_line(n), key, "must be between %s and %s", lo, hi);
}

static int load_string(struct loader *l, const yaml_node_t *n, const char *key, const struct opt *o,
		       char **dst)
{
	/* A list is checked element by element: each one is a string. */
	const char *s = scalar(l, n, key, o->type == OPT_LIST ? "a string" : type_name(o));
	if (!s)
		return -1;
	char *v = xstrdup(s);
	const char *problem = o->check ? o->check(&v) : NULL;
	if (problem) {
		fail_at(l, node_line(n), key, "%s: %s", s, problem);
		free(v);
		return -1;
	}
	*dst = v;
	return 0;
}

static int load_list(struct loader *l, yaml_node_t *n, const char *key, const struct opt *o,
		     void *base)
{
	if (n->type != YAML_SEQUENCE_NODE)
		return fail_at(l, node_line(n), key, "expected %s, got %s", type_name(o),
			       node_kind(n));
	yaml_node_item_t *it = n->data.sequence.items.start;
	size_t cnt = (size_t)(n->data.sequence.items.top - it);
	if (!cnt && o->def_str)
		return fail_at(l, node_line(n), key, "must not be empty");
	if (!cnt)
		return 0; /* an optional list (no default): empty */
	char **v = xcalloc(cnt, sizeof(*v));
	/* Stored before it is filled so that config_free releases a partial list. */
	*(char ***)((char *)base + o->off) = v;
	*(size_t *)((char *)base + o->off_n) = cnt;
	for (size_t i = 0; i < cnt; i++) {
		char ikey[KEY_MAX];
		key_fmt(ikey, "%s[%zu]", key, i);
		yaml_node_t *e = yaml_document_get_node(l->doc, it[i]);
		if (load_string(l, e, ikey, o, &v[i]))
			return -1;
	}
	return 0;
}

static int load_hosts(struct loader *l, yaml_node_t *n, const char *key, const struct opt *o,
		      void *base);

/* Parses one value into its field. */
static int load_value(struct loader *l, yaml_node_t *n, const char *key, const struct opt *o,
		      void *base)
{
	void *p = (char *)base + o->off;
	const char *s;
	unsigned long long v;

	switch (o->type) {
	case OPT_BOOL:
		if (!(s = scalar(l, n, key, type_name(o))))
			return -1;
		/* Only YAML 1.2's spelling: yes/no/on/off are read differently by
		 * different YAML libraries, and a config must mean one thing. */
		if (!strcmp(s, "true"))
			*(bool *)p = true;
		else if (!strcmp(s, "false"))
			*(bool *)p = false;
		else
			return fail_at(l, node_line(n), key, "expected true or false, got %s", s);
		return 0;
	case OPT_UINT:
	case OPT_SIZE:
	case OPT_SECS:
		if (!(s = scalar(l, n, key, type_name(o))))
			return -1;
		if (parse_num(s,
			      o->type == OPT_SIZE   ? "kmg"
			      : o->type == OPT_SECS ? "smh"
						    : NULL,
			      o->type == OPT_SIZE ? size_mult : secs_mult, &v))
			return fail_at(l, node_line(n), key, "expected %s, got %s", type_name(o),
				       s);
		if (v < o->min || v > o->max)
			return bounds_fail(l, n, key, o);
		if (o->type == OPT_SIZE)
			*(size_t *)p = (size_t)v;
		else
			*(unsigned *)p = (unsigned)v;
		return 0;
	case OPT_ENUM: {
		char want[200] = "one of ";
		for (int i = 0; o->names[i]; i++) {
			size_t u = strlen(want);
			snprintf(want + u, sizeof(want) - u, "%s%s", i ? ", " : "", o->names[i]);
		}
		if (!(s = scalar(l, n, key, want)))
			return -1;
		for (int i = 0; o->names[i]; i++)
			if (!strcmp(s, o->names[i])) {
				*(int *)p = i;
				return 0;
			}
		return fail_at(l, node_line(n), key, "expected %s, got %s", want, s);
	}
	case OPT_STRING:
		return load_string(l, n, key, o, (char **)p);
	case OPT_PATH:
		if (!(s = scalar(l, n, key, type_name(o))))
			return -1;
		*(char **)p = path_resolve(l->dir, s);
		return 0;
	case OPT_LIST:
		return load_list(l, n, key, o, base);
	case OPT_HOSTS:
		return load_hosts(l, n, key, o, base);
	}
	return -1;
}

/* Keys of a mapping are option names relative to mprefix ("" or
 * "limits."); a key that is the start of some dotted names is a section
 * and holds a mapping of its own. Dotted keys at the top work as well:
 * "limits.xml_depth: 32" is the same option as xml_depth under limits:. */
static int load_map(struct loader *l, const struct scope *sc, yaml_node_t *map, const char *mprefix)
{
	yaml_node_pair_t *pairs = map->data.mapping.pairs.start;
	size_t np = (size_t)(map->data.mapping.pairs.top - pairs);

	for (size_t i = 0; i < np; i++) {
		yaml_node_t *k = yaml_document_get_node(l->doc, pairs[i].key);
		yaml_node_t *v = yaml_document_get_node(l->doc, pairs[i].value);
		char name[KEY_MAX], key[KEY_MAX];

		if (k->type != YAML_SCALAR_NODE)
			return fail_at(l, node_line(k), sc->dprefix[0] ? sc->dprefix : "(top)",
				       "keys must be plain names, got %s", node_kind(k));
		key_fmt(name, "%s%s", mprefix, (const char *)k->data.scalar.value);
		key_fmt(key, "%s%s", sc->dprefix, name);

		/* YAML forbids duplicate keys, and libyaml does not check. */
		for (size_t j = 0; j < i; j++) {
			yaml_node_t *kj = yaml_document_get_node(l->doc, pairs[j].key);
			if (kj->type == YAML_SCALAR_NODE &&
			    !strcmp((const char *)kj->data.scalar.value,
				    (const char *)k->data.scalar.value))
				return fail_at(l, node_line(k), key,
					       "duplicate key (first at line %u)", node_line(kj));
		}

		const struct opt *o = NULL;
		bool section = false;
		size_t nl = strlen(name);
		for (size_t j = 0; j < sc->n; j++) {
			if (!strcmp(sc->tab[j].name, name)) {
				o = &sc->tab[j];
				break;
			}
			if (!strncmp(sc->tab[j].name, name, nl) && sc->tab[j].name[nl] == '.')
				section = true;
		}
		if (o) {
			size_t idx = (size_t)(o - sc->tab);
			if (sc->seen[idx])
				return fail_at(l, node_line(k), key,
					       "duplicate key (first at line %u)", sc->seen[idx]);
			sc->seen[idx] = node_line(k);
			if (load_value(l, v, key, o, sc->base))
				return -1;
		} else if (section) {
			/* "limits:" with every option under it commented out. */
			if (v->type == YAML_SCALAR_NODE && !v->data.scalar.length &&
			    v->data.scalar.style == YAML_PLAIN_SCALAR_STYLE)
				continue;
			if (v->type != YAML_MAPPING_NODE)
				return fail_at(l, node_line(v), key, "expected a mapping, got %s",
					       node_kind(v));
			char sub[KEY_MAX];
			key_fmt(sub, "%s.", name);
			if (load_map(l, sc, v, sub))
				return -1;
		} else {
			return fail_at(l, node_line(k), key, "unknown key");
		}
	}
	return 0;
}

static int load_hosts(struct loader *l, yaml_node_t *n, const char *key, const struct opt *o,
		      void *base)
{
	if (n->type != YAML_SEQUENCE_NODE)
		return fail_at(l, node_line(n), key, "expected %s, got %s", type_name(o),
			       node_kind(n));
	yaml_node_item_t *it = n->data.sequence.items.start;
	size_t cnt = (size_t)(n->data.sequence.items.top - it);
	if (!cnt)
		return fail_at(l, node_line(n), key, "must not be empty");
	struct host_conf *h = xcalloc(cnt, sizeof(*h));
	*(struct host_conf **)((char *)base + o->off) = h;
	*(size_t *)((char *)base + o->off_n) = cnt;

	for (size_t i = 0; i < cnt; i++) {
		yaml_node_t *e = yaml_document_get_node(l->doc, it[i]);
		char pfx[KEY_MAX], dkey[KEY_MAX];
		unsigned seen[N_HOST_OPTS] = {0};
		key_fmt(pfx, "%s[%zu].", key, i);
		key_fmt(dkey, "%sdomain", pfx);

		if (e->type == YAML_MAPPING_NODE) {
			struct scope sc = {host_opts, N_HOST_OPTS, &h[i], seen, pfx};
			if (load_map(l, &sc, e, ""))
				return -1;
			if (!h[i].domain)
				return fail_at(l, node_line(e), dkey, "missing required key");
		} else if (e->type == YAML_SCALAR_NODE) {
			/* "- example.org" is short for "- domain: example.org". */
			if (load_string(l, e, dkey, &host_opts[0], &h[i].domain))
				return -1;
		} else {
			return fail_at(l, node_line(e), dkey,
				       "expected a mapping or a domain, got a list");
		}
		if (!h[i].cert_file) {
			char *f = xasprintf("%s.crt", h[i].domain);
			h[i].cert_file = path_resolve(l->dir, f);
			free(f);
		}
		if (!h[i].key_file) {
			char *f = xasprintf("%s.key", h[i].domain);
			h[i].key_file = path_resolve(l->dir, f);
			free(f);
		}
		/* Compared after normalization: Example.ORG and example.org are one host. */
		for (size_t j = 0; j < i; j++)
			if (!strcmp(h[j].domain, h[i].domain)) {
				yaml_node_t *ej = yaml_document_get_node(l->doc, it[j]);
				return fail_at(l, node_line(e), dkey,
					       "duplicate host %s (first at line %u)", h[i].domain,
					       node_line(ej));
			}
	}
	return 0;
}

/* For names this file spells out itself: a miss is our bug. */
static const struct opt *opt_get(const char *name)
{
	for (size_t i = 0; i < N_OPTS; i++)
		if (!strcmp(opts[i].name, name))
			return &opts[i];
	die("config: no option %s", name);
}

static size_t *size_field(struct config *c, const char *name)
{
	const struct opt *o = opt_get(name);
	ASSERT(o->type == OPT_SIZE);
	return (size_t *)((char *)c + o->off);
}

static unsigned seen_line(const unsigned *seen, const char *name)
{
	return seen[opt_get(name) - opts];
}

/* Limits that must not exceed limits.stanza_bytes. A default above it is
 * lowered to it (a small stanza limit implies small parts); a value the
 * admin wrote above it is an error, since one of the two is a mistake. */
static int check_cross(struct loader *l, struct config *c, const unsigned *seen)
{
	static const char *const under_stanza[] = {
	    "limits.stanza_bytes_preauth",
	    "limits.xml_attr_len",
	    "limits.xml_text_len",
	};
	size_t st = c->limits.stanza_bytes;
	if (!c->limits.xml_text_len)
		c->limits.xml_text_len = st;
	for (size_t i = 0; i < sizeof(under_stanza) / sizeof(under_stanza[0]); i++) {
		size_t *v = size_field(c, under_stanza[i]);
		if (*v <= st)
			continue;
		unsigned line = seen_line(seen, under_stanza[i]);
		if (!line) {
			*v = st;
			continue;
		}
		char b[32];
		fmt_size(b, sizeof(b), st);
		return fail_at(l, line, under_stanza[i], "must not exceed limits.stanza_bytes (%s)",
			       b);
	}

	/* One stanza must fit in a reader's queue, or a healthy peer is closed
	 * on the first large stanza it is sent. */
	if (c->limits.out_queue_bytes < st) {
		unsigned line = seen_line(seen, "limits.out_queue_bytes");
		if (!line) {
			c->limits.out_queue_bytes = st;
		} else {
			char b[32];
			fmt_size(b, sizeof(b), st);
			return fail_at(l, line, "limits.out_queue_bytes",
				       "must be at least limits.stanza_bytes (%s)", b);
		}
	}

	/* Two listeners on one port would fail at bind(2) with a less helpful message. */
	static const char *const ports[] = {"c2s_port", "c2s_tls_port", "s2s_port", "s2s_tls_port",
					    "http_port"};
	for (size_t i = 0; i < 5; i++)
		for (size_t j = 0; j < i; j++) {
			const struct opt *a = opt_get(ports[i]), *b = opt_get(ports[j]);
			unsigned pa = *(unsigned *)((char *)c + a->off);
			unsigned pb = *(unsigned *)((char *)c + b->off);
			if (pa && pa == pb) {
				unsigned line = seen[a - opts] ? seen[a - opts] : seen[b - opts];
				return fail_at(l, line ? line : 1, ports[i], "port %u is also %s",
					       pa, ports[j]);
			}
		}
	return 0;
}

static void set_defaults(struct config *c)
{
	for (size_t i = 0; i < N_OPTS; i++) {
		const struct opt *o = &opts[i];
		void *p = (char *)c + o->off;
		switch (o->type) {
		case OPT_BOOL:
			*(bool *)p = o->def != 0;
			break;
		case OPT_UINT:
		case OPT_SECS:
			*(unsigned *)p = (unsigned)o->def;
			break;
		case OPT_SIZE:
			*(size_t *)p = (size_t)o->def;
			break;
		case OPT_ENUM:
			*(int *)p = (int)o->def;
			break;
		default:
			break; /* allocated ones are filled after parsing, if still unset */
		}
	}
}

/* Defaults that allocate, or depend on other options, once the file is read. */
static void set_late_defaults(struct config *c)
{
	for (size_t i = 0; i < N_OPTS; i++) {
		const struct opt *o = &opts[i];
		void *p = (char *)c + o->off;
		if (o->type == OPT_PATH && !*(char **)p && o->def_str)
			*(char **)p = path_resolve(c->dir, o->def_str);
		if (o->type == OPT_LIST && !*(char ***)p && o->def_str) {
			char **v = xcalloc(1, sizeof(*v));
			v[0] = xstrdup(o->def_str);
			*(char ***)p = v;
			*(size_t *)((char *)c + o->off_n) = 1;
		}
	}
	if (!c->store_path)
		c->store_path = path_resolve(c->data_dir, "parley.db");
}

static int load_doc(struct loader *l, struct config *c)
{
	unsigned seen[N_OPTS] = {0};
	yaml_node_t *root = yaml_document_get_root_node(l->doc);

	if (root && !(root->type == YAML_SCALAR_NODE && !root->data.scalar.length)) {
		if (root->type != YAML_MAPPING_NODE)
			return fail_at(l, node_line(root), "(top)", "expected a mapping, got %s",
				       node_kind(root));
		struct scope sc = {opts, N_OPTS, c, seen, ""};
		if (load_map(l, &sc, root, ""))
			return -1;
	}
	for (size_t i = 0; i < N_OPTS; i++)
		if (opts[i].required && !seen[i])
			return fail_at(l, node_line(root), opts[i].name, "missing required key");
	set_late_defaults(c);
	return check_cross(l, c, seen);
}

static int yaml_fail(struct loader *l, yaml_parser_t *p)
{
	if (p->error == YAML_MEMORY_ERROR)
		die_oom();
	if (p->context)
		return fail_at(l, (unsigned)p->problem_mark.line + 1, "yaml", "%s %s",
			       p->problem ? p->problem : "syntax error", p->context);
	return fail_at(l, (unsigned)p->problem_mark.line + 1, "yaml", "%s",
		       p->problem ? p->problem : "syntax error");
}

int config_load(const char *path, struct config *out, char *err, size_t errlen)
{
	struct loader l = {.file = path, .err = err, .errlen = errlen};
	yaml_parser_t parser;
	yaml_document_t doc, extra;
	int rc = -1;

	memset(out, 0, sizeof(*out));
	if (errlen)
		err[0] = '\0';
	set_defaults(out);

	FILE *f = fopen(path, "rb");
	char *abs = f ? realpath(path, NULL) : NULL;
	if (!abs) {
		snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
		if (f)
			fclose(f);
		return -1;
	}
	out->path = abs;
	char *slash = strrchr(abs, '/');
	out->dir = slash == abs ? xstrdup("/") : strndup(abs, (size_t)(slash - abs));
	if (!out->dir)
		die_oom();
	l.dir = out->dir;

	if (!yaml_parser_initialize(&parser))
		die_oom();
	yaml_parser_set_input_file(&parser, f);
	if (!yaml_parser_load(&parser, &doc)) {
		yaml_fail(&l, &parser);
		goto out_parser;
	}
	/* A second document would be silently ignored otherwise. */
	if (!yaml_parser_load(&parser, &extra)) {
		yaml_fail(&l, &parser);
		goto out_doc;
	}
	yaml_node_t *xroot = yaml_document_get_root_node(&extra);
	if (xroot) {
		fail_at(&l, node_line(xroot), "yaml", "only one document is allowed");
		yaml_document_delete(&extra);
		goto out_doc;
	}
	yaml_document_delete(&extra);

	l.doc = &doc;
	rc = load_doc(&l, out);
out_doc:
	yaml_document_delete(&doc);
out_parser:
	yaml_parser_delete(&parser);
	fclose(f);
	if (rc)
		config_free(out);
	return rc;
}

void config_free(struct config *c)
{
	if (!c)
		return;
	free(c->path);
	free(c->dir);
	free(c->data_dir);
	free(c->store_path);
	for (size_t i = 0; i < c->n_interfaces; i++)
		free(c->interfaces[i]);
	free(c->interfaces);
	for (int k = 0; k < CONTACT_KINDS; k++) {
		for (size_t i = 0; i < c->n_contact[k]; i++)
			free(c->contact[k][i]);
		free(c->contact[k]);
	}
	struct {
		char **v;
		size_t n;
	} lists[] = {{c->s2s_secure_domains, c->n_s2s_secure_domains},
		     {c->s2s_insecure_domains, c->n_s2s_insecure_domains},
		     {c->dns_servers, c->n_dns_servers}};
	for (size_t k = 0; k < sizeof(lists) / sizeof(lists[0]); k++) {
		for (size_t i = 0; i < lists[k].n; i++)
			free(lists[k].v[i]);
		free(lists[k].v);
	}
	free(c->s2s_ca_file);
	free(c->dns_trust_anchor);
	for (size_t i = 0; i < c->n_hosts; i++) {
		free(c->hosts[i].domain);
		free(c->hosts[i].cert_file);
		free(c->hosts[i].key_file);
	}
	free(c->hosts);
	memset(c, 0, sizeof(*c));
}

const struct host_conf *config_host(const struct config *c, const char *domain)
{
	for (size_t i = 0; i < c->n_hosts; i++)
		if (!strcmp(c->hosts[i].domain, domain))
			return &c->hosts[i];
	return NULL;
}

static bool opt_equal(const struct opt *o, const void *a, const void *b)
{
	const char *pa = (const char *)a + o->off, *pb = (const char *)b + o->off;
	switch (o->type) {
	case OPT_BOOL:
		return *(const bool *)pa == *(const bool *)pb;
	case OPT_UINT:
	case OPT_SECS:
		return *(const unsigned *)pa == *(const unsigned *)pb;
	case OPT_SIZE:
		return *(const size_t *)pa == *(const size_t *)pb;
	case OPT_ENUM:
		return *(const int *)pa == *(const int *)pb;
	case OPT_STRING:
	case OPT_PATH: {
		const char *sa = *(char *const *)pa, *sb = *(char *const *)pb;
		return sa == sb || (sa && sb && !strcmp(sa, sb));
	}
	case OPT_LIST: {
		size_t na = *(const size_t *)((const char *)a + o->off_n);
		size_t nb = *(const size_t *)((const char *)b + o->off_n);
		char *const *la = *(char **const *)pa, *const *lb = *(char **const *)pb;
		if (na != nb)
			return false;
		for (size_t i = 0; i < na; i++)
			if (strcmp(la[i], lb[i]))
				return false;
		return true;
	}
	case OPT_HOSTS:
		return true; /* compared host by host by the caller */
	}
	return false;
}

int config_check_reload(const struct config *old, const struct config *new, char *err,
			size_t errlen)
{
	for (size_t i = 0; i < N_OPTS; i++)
		if (!opts[i].reloadable && !opt_equal(&opts[i], old, new)) {
			snprintf(err, errlen, "%s: %s: changed, which needs a restart", new->path,
				 opts[i].name);
			return -1;
		}
	/* Hosts can neither come nor go at runtime; their certificates can. */
	bool same = old->n_hosts == new->n_hosts;
	for (size_t i = 0; same && i < new->n_hosts; i++)
		same = config_host(old, new->hosts[i].domain) != NULL;
	if (!same) {
		snprintf(err, errlen, "%s: hosts: domains changed, which needs a restart",
			 new->path);
		return -1;
	}
	return 0;
}

/* ---- docs and sample ---- */

/* The default as it would be written in the file. */
static void fmt_default(char *b, size_t cap, const struct opt *o)
{
	switch (o->type) {
	case OPT_BOOL:
		snprintf(b, cap, "%s", o->def ? "true" : "false");
		break;
	case OPT_UINT:
		snprintf(b, cap, "%llu", o->def);
		break;
	case OPT_SIZE:
		fmt_size(b, cap, o->def);
		break;
	case OPT_SECS:
		fmt_secs(b, cap, o->def);
		break;
	case OPT_ENUM:
		snprintf(b, cap, "%s", o->names[o->def]);
		break;
	case OPT_STRING:
	case OPT_PATH:
		snprintf(b, cap, "\"%s\"", o->def_str ? o->def_str : o->sample ? o->sample : "");
		break;
	case OPT_LIST:
		if (o->def_str)
			snprintf(b, cap, "[\"%s\"]", o->def_str);
		else
			snprintf(b, cap, "[]");
		break;
	case OPT_HOSTS:
		snprintf(b, cap, "(required)");
		break;
	}
}

static void fmt_bounds(char *b, size_t cap, const struct opt *o)
{
	char lo[32], hi[32];
	size_t u;
	switch (o->type) {
	case OPT_UINT:
		snprintf(b, cap, "%llu to %llu", o->min, o->max);
		break;
	case OPT_SIZE:
		fmt_size(lo, sizeof(lo), o->min);
		fmt_size(hi, sizeof(hi), o->max);
		snprintf(b, cap, "%s to %s", lo, hi);
		break;
	case OPT_SECS:
		fmt_secs(lo, sizeof(lo), o->min);
		fmt_secs(hi, sizeof(hi), o->max);
		snprintf(b, cap, "%s to %s", lo, hi);
		break;
	case OPT_ENUM:
		b[0] = '\0';
		for (int i = 0; o->names[i]; i++) {
			u = strlen(b);
			snprintf(b + u, cap - u, "%s`%s`", i ? ", " : "", o->names[i]);
		}
		break;
	case OPT_LIST:
	case OPT_HOSTS:
		snprintf(b, cap, o->type == OPT_LIST && !o->def_str ? "-" : "not empty");
		break;
	default:
		snprintf(b, cap, "-");
		break;
	}
}

static const char *doc_type(const struct opt *o)
{
	static const char *const t[] = {
	    [OPT_BOOL] = "bool",     [OPT_UINT] = "integer",  [OPT_SIZE] = "size",
	    [OPT_SECS] = "duration", [OPT_STRING] = "string", [OPT_PATH] = "path",
	    [OPT_ENUM] = "enum",     [OPT_LIST] = "list",     [OPT_HOSTS] = "list of hosts",
	};
	return t[o->type];
}

static void doc_row(FILE *f, const char *prefix, const struct opt *o)
{
	char def[64], bounds[128];
	if (o->def_doc)
		snprintf(def, sizeof(def), "%s", o->def_doc);
	else if (o->type == OPT_STRING && o->required)
		snprintf(def, sizeof(def), "(required)");
	else
		fmt_default(def, sizeof(def), o);
	fmt_bounds(bounds, sizeof(bounds), o);
	fprintf(f, "| `%s%s` | %s | `%s` | %s | %s | %s |\n", prefix, o->name, doc_type(o), def,
		bounds, o->reloadable ? "yes" : "no", o->doc);
}

void config_write_doc(FILE *f)
{
	fputs("# Configuration\n"
	      "\n"
	      "<!-- Generated from the option table in src/server/config.c by\n"
	      "     config_write_doc(); do not edit by hand. After changing the table, run\n"
	      "     `<builddir>/tests/test_config --write-doc docs/CONFIG.md` from the source\n"
	      "     root (the `config` unit test fails while this file is stale). -->\n"
	      "\n"
	      "Parley reads one YAML file, by default `parley.yaml`; `parleyctl init` writes a\n"
	      "commented one that works as is, and `parleyd --check` validates a file without\n"
	      "starting. Only `hosts` is required: every other option has a safe default.\n"
	      "\n"
	      "## File format\n"
	      "\n"
	      "- A single YAML document whose top level is a mapping. Unknown keys, duplicate\n"
	      "  keys, values of the wrong type and values out of bounds are errors, reported\n"
	      "  as one line `FILE:LINE: KEY: problem`.\n"
	      "- A dotted key names an option inside a section: `limits.xml_depth` is\n"
	      "  `xml_depth` under `limits:`, and may be written either way.\n"
	      "- bool: `true` or `false` (not yes/no/on/off, which YAML libraries read\n"
	      "  differently).\n"
	      "- size: bytes, or a number with the suffix `k`, `m` or `g` (powers of 1024):\n"
	      "  `262144` and `256k` are the same.\n"
	      "- duration: seconds, or a number with the suffix `s`, `m` or `h`: `840` and\n"
	      "  `14m` are the same.\n"
	      "- path: a relative path is resolved against the directory of the\n"
	      "  configuration file, never the working directory.\n"
	      "- Reload `yes`: a changed value takes effect when the configuration is\n"
	      "  reloaded (limits apply to sessions opened afterwards); `no` needs a restart.\n"
	      "\n"
	      "## Options\n"
	      "\n"
	      "| Key | Type | Default | Bounds | Reload | Description |\n"
	      "|---|---|---|---|---|---|\n",
	      f);
	for (size_t i = 0; i < N_OPTS; i++)
		doc_row(f, "", &opts[i]);
	fputs("\n"
	      "## Hosts\n"
	      "\n"
	      "`hosts` is a list; each entry is a mapping with these keys, or just a domain\n"
	      "(`- example.org`), which is short for `- domain: example.org`. Domains are\n"
	      "normalized (IDNA2008, lowercase, trailing dot removed) before duplicates are\n"
	      "looked for. The certificate and key default to files named after the domain\n"
	      "in the configuration file's directory, where `parleyctl init` creates them.\n"
	      "\n"
	      "| Key | Type | Default | Bounds | Reload | Description |\n"
	      "|---|---|---|---|---|---|\n",
	      f);
	for (size_t i = 0; i < N_HOST_OPTS; i++)
		doc_row(f, "hosts[].", &host_opts[i]);
	fputs("\n"
	      "## Example\n"
	      "\n"
	      "```yaml\n"
	      "hosts:\n"
	      "  - domain: example.org\n"
	      "    certificate: /etc/letsencrypt/live/example.org/fullchain.pem\n"
	      "    key: /etc/letsencrypt/live/example.org/privkey.pem\n"
	      "  - chat.example.net     # certificate chat.example.net.crt, key "
	      "chat.example.net.key\n"
	      "interfaces: [\"192.0.2.10\", \"2001:db8::10\"]\n"
	      "http_port: 0\n"
	      "limits:\n"
	      "  stanza_bytes: 512k\n"
	      "  idle_timeout: 30m\n"
	      "```\n",
	      f);
}

/* A double-quoted YAML scalar, so that any domain or path reads back as written. */
static void put_quoted(FILE *f, const char *s)
{
	fputc('"', f);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(f, "\\%c", *p);
		else if (*p < 0x20 || *p == 0x7f)
			fprintf(f, "\\x%02x", *p);
		else
			fputc(*p, f);
	}
	fputc('"', f);
}

/* The doc sentence as comment lines of at most ~80 columns. */
static void put_comment(FILE *f, const char *indent, const char *text)
{
	const size_t width = 76 - strlen(indent);
	while (*text) {
		size_t n = strlen(text);
		if (n > width) {
			n = width;
			while (n > 0 && text[n] != ' ')
				n--;
			if (!n)
				n = strcspn(text, " ");
		}
		fprintf(f, "%s# %.*s\n", indent, (int)n, text);
		text += n;
		while (*text == ' ')
			text++;
	}
}

static void sample_note(FILE *f, const char *indent, const struct opt *o)
{
	char def[64], bounds[128], line[300];
	if (o->def_doc)
		snprintf(def, sizeof(def), "%s", o->def_doc);
	else
		fmt_default(def, sizeof(def), o);
	fmt_bounds(bounds, sizeof(bounds), o);
	for (char *p = bounds; *p; p++)
		if (*p == '`')
			memmove(p, p + 1, strlen(p));
	if (o->type == OPT_BOOL || o->type == OPT_PATH)
		snprintf(line, sizeof(line), "Default %s.%s", def,
			 o->reloadable ? " Reloadable." : "");
	else if (o->type == OPT_ENUM)
		snprintf(line, sizeof(line), "Default %s; one of %s.%s", def, bounds,
			 o->reloadable ? " Reloadable." : "");
	else
		snprintf(line, sizeof(line), "Default %s; %s.%s", def, bounds,
			 o->reloadable ? " Reloadable." : "");
	put_comment(f, indent, line);
}

void config_write_sample(FILE *f, const struct init_opts *io)
{
	const char *domain = io && io->domain ? io->domain : "localhost";
	const char *section = "";
	size_t section_len = 0;
	/* The default file names are made from the normalized domain. */
	char norm[JID_PART_MAX + 1];
	if (jid_prep_domain(domain, strlen(domain), norm, sizeof(norm)) > 0)
		domain = norm;

	fputs("# Parley configuration (YAML). Every option is listed with its default;\n"
	      "# a line \"#key: value\" is commented out and shows the default, remove the\n"
	      "# \"#\" to change it. Relative paths are taken from this file's directory.\n"
	      "# Reference: docs/CONFIG.md.\n",
	      f);

	for (size_t i = 0; i < N_OPTS; i++) {
		const struct opt *o = &opts[i];
		const char *dot = strchr(o->name, '.');
		size_t slen = dot ? (size_t)(dot - o->name) : 0;
		const char *key = dot ? dot + 1 : o->name;
		const char *indent = dot ? "  " : "";

		if (section_len != slen || strncmp(section, o->name, slen)) {
			/* init never sets options inside a section, so a section header
			 * is commented out with its options. */
			if (dot)
				fprintf(f, "\n#%.*s:\n", (int)slen, o->name);
			section = o->name;
			section_len = slen;
		}
		fputc('\n', f);

		if (o->type == OPT_HOSTS) {
			put_comment(f, "", o->doc);
			fputs("hosts:\n  - domain: ", f);
			put_quoted(f, domain);
			fputc('\n', f);
			put_comment(f, "    ", host_opts[1].doc);
			put_comment(f, "    ", "Default <domain>.crt in this directory.");
			fputs(io && io->cert_file ? "    certificate: " : "    #certificate: ", f);
			if (io && io->cert_file) {
				put_quoted(f, io->cert_file);
			} else {
				char *d = xasprintf("%s.crt", domain);
				put_quoted(f, d);
				free(d);
			}
			fputc('\n', f);
			put_comment(f, "    ", host_opts[2].doc);
			put_comment(f, "    ", "Default <domain>.key in this directory.");
			fputs(io && io->key_file ? "    key: " : "    #key: ", f);
			if (io && io->key_file) {
				put_quoted(f, io->key_file);
			} else {
				char *d = xasprintf("%s.key", domain);
				put_quoted(f, d);
				free(d);
			}
			fputc('\n', f);
			continue;
		}

		put_comment(f, indent, o->doc);
		sample_note(f, indent, o);

		char val[300];
		bool set = false;
		unsigned port = 0;
		if (io && o->off == OFF(c2s_port))
			port = io->c2s_port;
		else if (io && o->off == OFF(c2s_tls_port))
			port = io->c2s_tls_port;
		else if (io && o->off == OFF(s2s_port))
			port = io->s2s_port;
		else if (io && o->off == OFF(s2s_tls_port))
			port = io->s2s_tls_port;
		else if (io && o->off == OFF(http_port))
			port = io->http_port;
		/* init_opts uses 0 for "the default": a port is disabled by editing the file. */
		if (port && port != o->def) {
			snprintf(val, sizeof(val), "%u", port);
			set = true;
		}
		if (io && o->off == OFF(interfaces) && io->interface &&
		    strcmp(io->interface, o->def_str)) {
			fprintf(f, "%s: [", key);
			put_quoted(f, io->interface);
			fputs("]\n", f);
			continue;
		}
		if (!set)
			fmt_default(val, sizeof(val), o);
		fprintf(f, "%s%s%s: %s\n", indent, set ? "" : "#", key, val);
	}
}
