/* parleyctl: the admin tool. Accounts, certificates, a new server
 * directory, and a check of the configuration.
 *
 * Its commands and output are an interface: scripts and the integration
 * tests drive Parley through them. Success exits 0; a failure prints one
 * line on stderr and exits 1, a usage error exits 2. The account commands
 * work on the store directly, so they are meant for when parleyd is
 * stopped or for a store that tolerates a second writer (SQLite does). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/bio.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "net/certs.h"
#include "server/config.h"
#include "storage/store.h"
#include "xmpp/jid.h"
#include "xmpp/sasl/sasl.h"

#define EXIT_USAGE 2

/* RFC 8265 §4.2 bounds nothing, but PRECIS input is capped at 1023 bytes
 * (precis.h) and a longer password is more likely a pasted file. */
#define PASSWORD_MAX  1023
#define DEFAULT_DAYS  365
#define SYSTEM_CONFIG "/etc/parley/parley.conf"
#define PORT_UNSET    ULONG_MAX

static const char usage_text[] =
    "usage: parleyctl [--config FILE] COMMAND [ARGS]\n"
    "\n"
    "Accounts (the password is read from standard input: prompted twice\n"
    "without echo on a terminal, otherwise one line):\n"
    "  adduser JID             create the account JID (user@domain)\n"
    "  passwd JID              set a new password for JID\n"
    "  deluser JID             delete JID and everything stored for it\n"
    "  list [DOMAIN]           list the accounts, one JID a line\n"
    "  invite DOMAIN [--days N]\n"
    "                          print a one-time invitation to register an account\n"
    "                          on DOMAIN (XEP-0445; the server needs\n"
    "                          registration: invite or open), valid N days\n"
    "                          (default 7)\n"
    "\n"
    "Checks:\n"
    "  check config            validate the configuration and each host's\n"
    "                          certificate and key\n"
    "  cert check DOMAIN [--cert FILE]\n"
    "                          show the names, dates, issuer and trust of the\n"
    "                          certificate of DOMAIN (the configured one, or\n"
    "                          FILE) and whether clients (c2s) and servers (s2s)\n"
    "                          that verify certificates accept it\n"
    "\n"
    "Set-up (no configuration needed):\n"
    "  cert generate DOMAIN [--dir DIR] [--rsa] [--days N] [--force]\n"
    "                          write DIR/DOMAIN.key and DIR/DOMAIN.crt, a new key\n"
    "                          (EC P-256, or RSA-2048) and a self-signed\n"
    "                          certificate for XMPP (default DIR ., N 365)\n"
    "  cert request DOMAIN [--dir DIR] [--rsa]\n"
    "                          write DIR/DOMAIN.csr, a signing request for a CA\n"
    "                          with the names of cert generate, signed with\n"
    "                          DIR/DOMAIN.key (created if missing, else reused)\n"
    "  init DOMAIN --dir DIR [--c2s-port N] [--c2s-tls-port N] [--s2s-port N]\n"
    "                        [--http-port N] [--interface ADDR] [--rsa]\n"
    "                          create a server directory: DIR/parley.conf, a\n"
    "                          certificate, and an empty store in DIR/data\n"
    "\n"
    "Options:\n"
    "  --config FILE           configuration file (default: $PARLEY_CONFIG,\n"
    "                          else ./parley.conf, else " SYSTEM_CONFIG ")\n"
    "  -h, --help              show this help\n"
    "  -V, --version           show the version\n"
    "\n"
    "Exit status: 0 on success, 1 on failure, 2 on a usage error.\n";

/* A failure: one line on stderr. */
static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void fail(const char *fmt, ...)
{
	va_list ap;

	fputs("parleyctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs("parleyctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs(" (see parleyctl --help)\n", stderr);
	return EXIT_USAGE;
}

/* Command line: options may come before or after the command words. */
struct args {
	const char *config;
	const char *dir;
	const char *cert; /* cert check --cert FILE */
	const char *interface;
	bool rsa, force;
	bool have_days;
	unsigned long days;
	/* PORT_UNSET unless given (then 1..65535). */
	unsigned long c2s_port, c2s_tls_port, s2s_port, http_port;
	const char *words[4]; /* the command and its positional arguments */
	int n_words;
};

static int parse_ulong(const char *opt, const char *s, unsigned long max, unsigned long *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	if (!s || !*s || *s == '-' || *s == '+')
		return usage_error("%s: expected a number", opt);
	v = strtoul(s, &end, 10);
	if (errno || *end || v > max)
		return usage_error("%s: %s is not a number in 0..%lu", opt, s, max);
	*out = v;
	return 0;
}

/* Matches "--name VALUE" and "--name=VALUE"; advances *i past a
 * separate value. Returns 1 on a match, 0 if not this option, or the
 * usage exit code when the value is missing (as -EXIT_USAGE). */
static int opt_value(int argc, char **argv, int *i, const char *name, const char **val)
{
	const char *a = argv[*i];
	size_t n = strlen(name);

	if (strncmp(a, name, n))
		return 0;
	if (a[n] == '=') {
		*val = a + n + 1;
		return 1;
	}
	if (a[n])
		return 0;
	if (*i + 1 >= argc) {
		usage_error("%s needs a value", name);
		return -EXIT_USAGE;
	}
	*val = argv[++*i];
	return 1;
}

static int parse_args(int argc, char **argv, struct args *a)
{
	static const char *const port_opts[] = {"--c2s-port", "--c2s-tls-port", "--s2s-port",
						"--http-port"};
	unsigned long *port_dst[] = {&a->c2s_port, &a->c2s_tls_port, &a->s2s_port, &a->http_port};
	bool words_only = false;

	for (int i = 1; i < argc; i++) {
		const char *v = NULL;
		int r;

		if (words_only || argv[i][0] != '-' || !argv[i][1]) {
			if (a->n_words == (int)(sizeof(a->words) / sizeof(a->words[0])))
				return usage_error("unexpected argument: %s", argv[i]);
			a->words[a->n_words++] = argv[i];
			continue;
		}
		if (!strcmp(argv[i], "--")) {
			words_only = true;
			continue;
		}
		if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			fputs(usage_text, stdout);
			exit(0);
		}
		if (!strcmp(argv[i], "-V") || !strcmp(argv[i], "--version")) {
			printf("parleyctl %s\n", PARLEY_VERSION);
			exit(0);
		}
		if (!strcmp(argv[i], "--rsa")) {
			a->rsa = true;
			continue;
		}
		if (!strcmp(argv[i], "--force")) {
			a->force = true;
			continue;
		}
		if ((r = opt_value(argc, argv, &i, "--config", &a->config)) != 0) {
			if (r < 0)
				return -r;
			continue;
		}
		if ((r = opt_value(argc, argv, &i, "--cert", &a->cert)) != 0) {
			if (r < 0)
				return -r;
			continue;
		}
		if ((r = opt_value(argc, argv, &i, "--dir", &a->dir)) != 0) {
			if (r < 0)
				return -r;
			continue;
		}
		if ((r = opt_value(argc, argv, &i, "--interface", &a->interface)) != 0) {
			if (r < 0)
				return -r;
			continue;
		}
		if ((r = opt_value(argc, argv, &i, "--days", &v)) != 0) {
			if (r < 0)
				return -r;
			if (parse_ulong("--days", v, CERT_DAYS_MAX, &a->days))
				return EXIT_USAGE;
			if (a->days < 1)
				return usage_error("--days: at least 1");
			a->have_days = true;
			continue;
		}
		r = 0;
		for (size_t p = 0; p < sizeof(port_opts) / sizeof(port_opts[0]) && !r; p++) {
			r = opt_value(argc, argv, &i, port_opts[p], &v);
			if (r > 0 && parse_ulong(port_opts[p], v, 65535, port_dst[p]))
				return EXIT_USAGE;
			/* init_opts reads 0 as "the default", so 0 cannot mean
			 * "disabled" here: say so rather than surprise. */
			if (r > 0 && *port_dst[p] == 0)
				return usage_error("%s: 1..65535 (a listener is disabled by "
						   "setting its port to 0 in the file)",
						   port_opts[p]);
		}
		if (r < 0)
			return -r;
		if (r > 0)
			continue;
		return usage_error("unknown option: %s", argv[i]);
	}
	return 0;
}

/* Configuration ---------------------------------------------------------- */

static const char *config_path(const struct args *a)
{
	const char *env = getenv("PARLEY_CONFIG");

	if (a->config)
		return a->config;
	if (env && *env)
		return env;
	if (access("parley.conf", F_OK) == 0)
		return "parley.conf";
	return SYSTEM_CONFIG;
}

static int load_config(const struct args *a, struct config *cfg)
{
	char err[1024];

	memset(cfg, 0, sizeof(*cfg));
	if (config_load(config_path(a), cfg, err, sizeof(err)) < 0) {
		/* Already "FILE:LINE: KEY: problem": editors jump to it. */
		fprintf(stderr, "%s\n", err);
		return -1;
	}
	return 0;
}

/* Accounts ---------------------------------------------------------------- */

/* The account a JID argument names: prepared localpart and domain. */
struct account {
	char *user;
	char *host;
	char *jid; /* normalized bare JID, for messages */
};

static void account_free(struct account *acc)
{
	free(acc->user);
	free(acc->host);
	free(acc->jid);
}

static int account_parse(const char *arg, struct account *acc)
{
	struct jid j;

	memset(acc, 0, sizeof(*acc));
	if (jid_parse(&j, arg, strlen(arg), NULL) < 0) {
		fail("invalid JID: %s", arg);
		return -1;
	}
	if (!jid_has_local(&j) || !jid_is_bare(&j)) {
		fail("%s: an account is a bare JID, user@domain", arg);
		jid_free(&j);
		return -1;
	}
	acc->user = strndup(j.s, j.local_len);
	acc->host = strndup(j.s + j.dom_off, j.dom_len);
	acc->jid = strndup(j.s, jid_bare_len(&j));
	jid_free(&j);
	if (!acc->user || !acc->host || !acc->jid)
		die_oom();
	return 0;
}

static struct termios saved_tty;
static volatile sig_atomic_t tty_altered;

/* An interrupted prompt must not leave the terminal without echo. */
static void restore_tty_and_die(int sig)
{
	if (tty_altered)
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved_tty);
	signal(sig, SIG_DFL);
	raise(sig);
}

/* Reads one line into buf (cap > PASSWORD_MAX + 1) without the newline.
 * Returns its length, -1 at end of input, -2 if it is too long. */
static int read_line(char *buf, size_t cap)
{
	size_t n;

	if (!fgets(buf, (int)cap, stdin))
		return -1;
	n = strlen(buf);
	if (n && buf[n - 1] == '\n') {
		buf[--n] = '\0';
		/* COMPAT: files written on Windows end lines with CR LF. */
		if (n && buf[n - 1] == '\r')
			buf[--n] = '\0';
	} else if (!feof(stdin)) {
		return -2;
	}
	if (n > PASSWORD_MAX)
		return -2;
	return (int)n;
}

static int prompt_no_echo(const char *prompt, char *buf, size_t cap)
{
	struct termios t = saved_tty;
	int n;

	/* Echo goes off before the prompt appears: whatever is typed after
	 * the prompt must neither be shown nor flushed away. */
	t.c_lflag &= ~(tcflag_t)ECHO;
	t.c_lflag |= ECHONL;
	tty_altered = 1;
	tcsetattr(STDIN_FILENO, TCSAFLUSH, &t);
	fputs(prompt, stderr);
	fflush(stderr);
	n = read_line(buf, cap);
	tcsetattr(STDIN_FILENO, TCSANOW, &saved_tty);
	tty_altered = 0;
	return n;
}

/* The new password, prepared with the OpaqueString profile (RFC 8265
 * §4.2, as RFC 6120 §6.4.3 asks of SASL passwords), into out. */
static int read_password(char *out, size_t cap)
{
	char pw[PASSWORD_MAX + 2], again[PASSWORD_MAX + 2];
	int n, rc = -1;

	if (isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved_tty) == 0) {
		signal(SIGINT, restore_tty_and_die);
		signal(SIGTERM, restore_tty_and_die);
		signal(SIGHUP, restore_tty_and_die);
		n = prompt_no_echo("Password: ", pw, sizeof(pw));
		if (n >= 0) {
			int m = prompt_no_echo("Again: ", again, sizeof(again));
			if (m < 0 || strcmp(pw, again)) {
				fail("the passwords do not match");
				goto out;
			}
		}
	} else {
		n = read_line(pw, sizeof(pw));
	}
	if (n == -1) {
		fail("no password on standard input");
		goto out;
	}
	if (n == -2) {
		fail("password longer than %d bytes", PASSWORD_MAX);
		goto out;
	}
	if (n == 0) {
		fail("empty password refused");
		goto out;
	}
	if (sasl_prep_password(pw, (size_t)n, out, cap) < 0) {
		fail("password refused: it must be UTF-8 without control characters "
		     "(RFC 8265 OpaqueString)");
		goto out;
	}
	rc = 0;
out:
	explicit_bzero(pw, sizeof(pw));
	explicit_bzero(again, sizeof(again));
	return rc;
}

static int make_creds(const struct config *cfg, struct scram_creds *creds)
{
	char prepped[4 * (PASSWORD_MAX + 1)];
	int rc = 0;

	if (read_password(prepped, sizeof(prepped)) < 0)
		return -1;
	if (scram_make_creds(prepped, (int)cfg->scram_iterations, creds) < 0) {
		fail("cannot derive the SCRAM keys");
		rc = -1;
	}
	explicit_bzero(prepped, sizeof(prepped));
	return rc;
}

static struct store *open_store(const struct config *cfg)
{
	struct store *s = store_open(cfg->store_path, NULL);

	if (!s)
		fail("cannot open the store %s", cfg->store_path);
	return s;
}

enum account_op { ACC_ADD, ACC_PASSWD, ACC_DEL };

static int cmd_account(const struct args *a, enum account_op op)
{
	struct config cfg;
	struct account acc;
	struct scram_creds creds;
	struct store *s = NULL;
	int rc, ret = 1;

	if (a->n_words != 2)
		return usage_error("%s takes one JID", a->words[0]);
	if (account_parse(a->words[1], &acc) < 0)
		return 1;
	if (load_config(a, &cfg) < 0)
		goto out_acc;
	if (!config_host(&cfg, acc.host)) {
		fail("%s: domain %s is not served here (%s)", acc.jid, acc.host, cfg.path);
		goto out_cfg;
	}
	s = open_store(&cfg);
	if (!s)
		goto out_cfg;

	/* Look first so that nobody types a password for nothing; the write
	 * below still reports a concurrent change. */
	rc = store_user_get_creds_sync(s, acc.host, acc.user, &creds);
	if (rc == STORE_ERROR) {
		fail("%s: store error", acc.jid);
		goto out_store;
	}
	if (op == ACC_ADD && rc == STORE_OK) {
		fail("user exists: %s", acc.jid);
		goto out_store;
	}
	if (op != ACC_ADD && rc == STORE_NOT_FOUND) {
		fail("no such user: %s", acc.jid);
		goto out_store;
	}

	if (op == ACC_DEL) {
		rc = store_user_delete_sync(s, acc.host, acc.user);
	} else {
		if (make_creds(&cfg, &creds) < 0)
			goto out_store;
		if (op == ACC_ADD)
			rc = store_user_create_sync(s, acc.host, acc.user, &creds);
		else
			rc = store_user_set_creds_sync(s, acc.host, acc.user, &creds);
	}
	if (rc == STORE_EXISTS) {
		fail("user exists: %s", acc.jid);
	} else if (rc == STORE_NOT_FOUND) {
		fail("no such user: %s", acc.jid);
	} else if (rc != STORE_OK) {
		fail("%s: store error", acc.jid);
	} else {
		static const char *const done[] = {"added", "password changed", "deleted"};
		printf("%s: %s\n", acc.jid, done[op]);
		ret = 0;
	}
out_store:
	explicit_bzero(&creds, sizeof(creds));
	store_close(s);
out_cfg:
	config_free(&cfg);
out_acc:
	account_free(&acc);
	return ret;
}

static void print_user(void *ud, const char *host, const char *user)
{
	printf("%s@%s\n", user, host);
}

static int cmd_list(const struct args *a)
{
	struct config cfg;
	struct store *s;
	char host[JID_PART_MAX + 1];
	const char *h = NULL;
	int ret = 1;

	if (a->n_words > 2)
		return usage_error("list takes at most one DOMAIN");
	if (a->n_words == 2) {
		const char *d = a->words[1];
		if (jid_prep_domain(d, strlen(d), host, sizeof(host)) < 0) {
			fail("invalid domain: %s", d);
			return 1;
		}
		h = host;
	}
	if (load_config(a, &cfg) < 0)
		return 1;
	if (h && !config_host(&cfg, h)) {
		fail("domain %s is not served here (%s)", h, cfg.path);
		goto out;
	}
	s = open_store(&cfg);
	if (!s)
		goto out;
	if (store_user_list_sync(s, h, print_user, NULL) != STORE_OK)
		fail("store error while listing");
	else
		ret = 0;
	store_close(s);
out:
	config_free(&cfg);
	return ret;
}

/* Invitations (XEP-0401 URI, XEP-0445 token) ---------------------------------- */

static int cmd_invite(const struct args *a)
{
	struct config cfg;
	char host[JID_PART_MAX + 1];
	unsigned char raw[16], hash[STORE_INVITE_HASH];
	char token[2 * sizeof(raw) + 1];
	int ret = 1;

	if (a->n_words != 2)
		return usage_error("invite takes one DOMAIN");
	unsigned long days = a->have_days ? a->days : 7;
	if (days < 1 || days > 3650)
		return usage_error("--days: 1 to 3650");
	if (jid_prep_domain(a->words[1], strlen(a->words[1]), host, sizeof(host)) < 0) {
		fail("invalid domain: %s", a->words[1]);
		return 1;
	}
	if (load_config(a, &cfg) < 0)
		return 1;
	if (!config_host(&cfg, host)) {
		fail("domain %s is not served here (%s)", host, cfg.path);
		goto out;
	}
	if (cfg.registration == REGISTRATION_OFF)
		fprintf(stderr,
			"parleyctl: note: registration is off in %s; set "
			"\"registration: invite\" for this invitation to work\n",
			cfg.path);
	if (RAND_bytes(raw, sizeof(raw)) != 1) {
		fail("no random bytes");
		goto out;
	}
	for (size_t i = 0; i < sizeof(raw); i++)
		snprintf(token + 2 * i, 3, "%02x", raw[i]);
	/* Only the hash is stored: the database does not hold usable tokens. */
	SHA256((const unsigned char *)token, strlen(token), hash);
	struct store *s = open_store(&cfg);
	if (!s)
		goto out;
	if (store_invite_create_sync(s, host, hash,
				     (long long)time(NULL) + (long long)days * 86400) != STORE_OK) {
		fail("store error while saving the invitation");
	} else {
		printf("xmpp:%s?register;preauth=%s\n", host, token);
		ret = 0;
	}
	store_close(s);
out:
	config_free(&cfg);
	return ret;
}

/* Certificates ------------------------------------------------------------ */

static bool exists(const char *path)
{
	struct stat st;

	return lstat(path, &st) == 0;
}

static char *path_join(const char *dir, const char *name, const char *ext)
{
	char *p;

	if (asprintf(&p, "%s/%s%s", dir, name, ext) < 0)
		die_oom();
	return p;
}

/* The domain as the server will know it (jid.h normalization), so that
 * the file names match what the config and the certificate say. */
static int prep_domain(const char *in, char *out, size_t cap)
{
	if (jid_prep_domain(in, strlen(in), out, cap) < 0) {
		fail("invalid domain: %s", in);
		return -1;
	}
	return 0;
}

static int cert_generate_cmd(const struct args *a, const char *domain)
{
	const char *dir = a->dir ? a->dir : ".";
	char *key = path_join(dir, domain, ".key"), *crt = path_join(dir, domain, ".crt");
	char err[512];
	int ret = 1;

	if (!a->force && (exists(key) || exists(crt))) {
		fail("%s exists; use --force to replace it", exists(key) ? key : crt);
		goto out;
	}
	if (cert_generate(domain, a->rsa ? CERT_RSA_2048 : CERT_EC_P256,
			  a->have_days ? (int)a->days : DEFAULT_DAYS, key, crt, err,
			  sizeof(err)) < 0) {
		fail("%s", err);
		goto out;
	}
	printf("wrote %s and %s (%s, self-signed, %lu days)\n", key, crt,
	       a->rsa ? "RSA-2048" : "EC P-256", a->have_days ? a->days : DEFAULT_DAYS);
	ret = 0;
out:
	free(key);
	free(crt);
	return ret;
}

static int cert_request_cmd(const struct args *a, const char *domain)
{
	const char *dir = a->dir ? a->dir : ".";
	char *key = path_join(dir, domain, ".key"), *csr = path_join(dir, domain, ".csr"),
	     *crt = path_join(dir, domain, ".crt");
	char err[512];
	bool created = false;
	int ret = 1;

	if (cert_request(domain, a->rsa ? CERT_RSA_2048 : CERT_EC_P256, key, csr, &created, err,
			 sizeof(err)) < 0) {
		fail("%s", err);
		goto out;
	}
	printf("wrote %s, a certificate signing request for %s\n"
	       "  names: DNS %s, XmppAddr, SRV _xmpp-client and _xmpp-server\n",
	       csr, domain, domain);
	if (created)
		printf("  key:   %s (new, %s; keep it private)\n", key,
		       a->rsa ? "RSA-2048" : "EC P-256");
	else
		printf("  key:   %s (the existing key%s)\n", key,
		       a->rsa ? "; --rsa applies only to a new key" : "");
	printf("Next steps:\n"
	       "  1. Give %s to your certificate authority (inspect it with\n"
	       "     openssl req -in %s -noout -text). Many CAs certify only the DNS\n"
	       "     name: clients and servers accept that (DNS-ID).\n"
	       "  2. Save the certificate it returns, followed by its intermediates,\n"
	       "     as %s (the cert_file of %s in the configuration).\n"
	       "  3. Check it: parleyctl cert check %s\n"
	       "  4. Reload:   send SIGHUP to parleyd\n",
	       csr, csr, crt, domain, domain);
	ret = 0;
out:
	free(key);
	free(csr);
	free(crt);
	return ret;
}

static void fmt_time(const ASN1_TIME *t, char *out, size_t cap)
{
	struct tm tm;

	if (ASN1_TIME_to_tm(t, &tm) != 1 || !strftime(out, cap, "%Y-%m-%d %H:%M:%S UTC", &tm))
		snprintf(out, cap, "(unreadable)");
}

/* "C=US, O=Example CA, CN=R1": UTF-8 as is, control characters escaped. */
static void fmt_name(const X509_NAME *n, char *out, size_t cap)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *data = NULL;
	long len;

	snprintf(out, cap, "(unreadable)");
	if (!b)
		return;
	if (X509_NAME_print_ex(b, n, 0,
			       XN_FLAG_ONELINE & ~XN_FLAG_SPC_EQ & ~ASN1_STRFLGS_ESC_MSB) >= 0) {
		len = BIO_get_mem_data(b, &data);
		snprintf(out, cap, "%.*s", (int)len, data ? data : "");
	}
	BIO_free(b);
}

/* The kinds of identifier in set, strongest first, for people. */
static void fmt_ids(unsigned set, const char *service, char *out, size_t cap)
{
	size_t len = 0;

	out[0] = '\0';
	for (enum cert_id id = CERT_ID_SRV; id <= CERT_ID_CN; id++) {
		if (!(set & CERT_ID_BIT(id)) || len >= cap)
			continue;
		len += (size_t)snprintf(out + len, cap - len, "%s%s%s%s%s", len ? ", " : "",
					cert_id_name(id), id == CERT_ID_SRV ? " (" : "",
					id == CERT_ID_SRV ? service : "",
					id == CERT_ID_SRV ? ")" : "");
	}
}

/* One use of the certificate: which identities cover the domain, and
 * the verdict. Returns NULL if all is well, else the reason. */
struct use_report {
	enum cert_use use;
	const char *name;    /* "c2s" */
	const char *service; /* "_xmpp-client" */
	const char *who;     /* "clients", "servers" */
	unsigned ids;
	char why[512];	     /* the identity mismatch */
	char trust_why[512]; /* the chain error */
	bool trusted;
};

static int cert_check_cmd(const struct args *a, const char *domain)
{
	struct config cfg;
	bool have_cfg = false;
	const char *crt = a->cert, *key = NULL;
	STACK_OF(X509) *chain = NULL;
	X509_STORE *store = NULL;
	EVP_PKEY *k = NULL;
	X509 *x = NULL;
	char err[512], buf[1024], from[64], until[64], first[1600] = "";
	int day = 0, sec = 0, ret = 1;
	bool bad[2] = {false, false};
	bool expired, early, key_ok = true;
	struct use_report uses[2] = {
	    {.use = CERT_USE_C2S, .name = "c2s", .service = "_xmpp-client", .who = "clients"},
	    {.use = CERT_USE_S2S, .name = "s2s", .service = "_xmpp-server", .who = "servers"},
	};

	if (!crt) {
		const struct host_conf *h;
		if (load_config(a, &cfg) < 0)
			return 1;
		have_cfg = true;
		h = config_host(&cfg, domain);
		if (!h) {
			fail("domain %s is not served here (%s)", domain, cfg.path);
			goto out;
		}
		crt = h->cert_file;
		key = h->key_file;
	}
	x = cert_load(crt, &chain, err, sizeof(err));
	if (!x) {
		fail("%s", err);
		goto out;
	}

	printf("certificate  %s", crt);
	if (sk_X509_num(chain) > 0)
		printf(" (and %d more in the chain)", sk_X509_num(chain));
	fmt_name(X509_get_subject_name(x), buf, sizeof(buf));
	printf("\nsubject      %s\n", buf);
	fmt_name(X509_get_issuer_name(x), buf, sizeof(buf));
	printf("issuer       %s%s\n", buf,
	       X509_NAME_cmp(X509_get_subject_name(x), X509_get_issuer_name(x)) ? ""
										: " (self-signed)");
	fmt_time(X509_get0_notBefore(x), from, sizeof(from));
	fmt_time(X509_get0_notAfter(x), until, sizeof(until));
	early = X509_cmp_current_time(X509_get0_notBefore(x)) > 0;
	expired = X509_cmp_current_time(X509_get0_notAfter(x)) < 0;
	printf("valid        %s to %s", from, until);
	if (early)
		printf(" (NOT YET VALID)\n");
	else if (expired)
		printf(" (EXPIRED)\n");
	else if (ASN1_TIME_diff(&day, &sec, NULL, X509_get0_notAfter(x)) == 1)
		printf(" (%d day%s left)\n", day, day == 1 ? "" : "s");
	else
		printf("\n");
	cert_names(x, buf, sizeof(buf));
	printf("names        %s\n", buf[0] ? buf : "(none)");

	if (key) {
		k = cert_load_key(key, err, sizeof(err));
		key_ok = k && X509_check_private_key(x, k) == 1;
		if (!k)
			printf("key          %s\n", err);
		else
			printf("key          %s %s\n", key,
			       key_ok ? "matches" : "DOES NOT MATCH the certificate");
	}

	/* What a client or a peer that verifies would find: the system's
	 * trust anchors ($SSL_CERT_FILE / $SSL_CERT_DIR when set). */
	store = cert_trust_store(NULL, err, sizeof(err));
	for (int i = 0; i < 2; i++) {
		struct use_report *u = &uses[i];
		if (!store)
			snprintf(u->trust_why, sizeof(u->trust_why), "%s", err);
		else
			u->trusted = cert_verify_chain(store, x, chain, u->use, u->trust_why,
						       sizeof(u->trust_why)) == 0;
		u->ids = cert_match(x, domain, u->use, u->why, sizeof(u->why));
	}
	if (uses[0].trusted && uses[1].trusted)
		printf("trust        chains to the system trust store\n");
	else if (!uses[1].trusted)
		printf("trust        does not chain to the system trust store: %s\n",
		       uses[1].trust_why);
	else
		printf("trust        chains to the system trust store, but not as a TLS server "
		       "certificate: %s\n",
		       uses[0].trust_why);

	for (int i = 0; i < 2; i++) {
		struct use_report *u = &uses[i];
		fmt_ids(u->ids, u->service, buf, sizeof(buf));
		if (u->ids)
			printf("%-12s covers %s: %s\n", u->name, domain, buf);
		else
			printf("%-12s does not cover %s: %s\n", u->name, domain, u->why);
	}

	for (int i = 0; i < 2; i++) {
		struct use_report *u = &uses[i];
		char reason[1600];

		if (!u->ids)
			snprintf(reason, sizeof(reason), "it does not name %s", domain);
		else if (expired)
			snprintf(reason, sizeof(reason), "expired on %s", until);
		else if (early)
			snprintf(reason, sizeof(reason), "not valid before %s", from);
		else if (!key_ok)
			snprintf(reason, sizeof(reason), "the key does not match it");
		else if (!u->trusted)
			snprintf(reason, sizeof(reason), "not trusted (%s)", u->trust_why);
		else
			reason[0] = '\0';
		if (!reason[0]) {
			printf("%s verdict  OK: %s that verify certificates accept it for %s\n",
			       u->name, u->who, domain);
			continue;
		}
		bad[i] = true;
		if (!first[0])
			snprintf(first, sizeof(first), "%s", reason);
		/* Clients can be told to trust one certificate; servers that
		 * authenticate their peers by certificate check every one. */
		if (u->use == CERT_USE_C2S)
			printf("c2s verdict  NOT OK: %s; clients that verify certificates refuse "
			       "it%s\n",
			       reason,
			       u->ids && !expired && !early && key_ok
				   ? " unless told to trust this certificate"
				   : "");
		else
			printf("s2s verdict  NOT OK: %s; servers that authenticate peers by "
			       "certificate (XEP-0178) refuse it\n",
			       reason);
	}
	/* This server presents the same certificate when it connects to a
	 * peer, as a TLS client. */
	if ((X509_get_extension_flags(x) & EXFLAG_XKUSAGE) &&
	    !(X509_get_extended_key_usage(x) & XKU_SSL_CLIENT))
		printf("s2s note     no clientAuth in its extended key usage: peers that check it "
		       "refuse this server's outgoing connections\n");
	if (!expired && !early && day < 14 && (day > 0 || sec > 0))
		printf("note         expires in less than 14 days\n");
	if (bad[0] || bad[1])
		fail("%s: not OK for %s: %s", domain,
		     bad[0] && bad[1] ? "c2s and s2s"
		     : bad[0]	      ? "c2s"
				      : "s2s",
		     first);
	else
		ret = 0;
out:
	X509_STORE_free(store);
	EVP_PKEY_free(k);
	X509_free(x);
	sk_X509_pop_free(chain, X509_free);
	if (have_cfg)
		config_free(&cfg);
	return ret;
}

static int cmd_cert(const struct args *a)
{
	static const char *const usage[] = {
	    "usage: cert generate DOMAIN [--dir DIR] [--rsa] [--days N] [--force]",
	    "usage: cert request DOMAIN [--dir DIR] [--rsa]",
	    "usage: [--config FILE] cert check DOMAIN [--cert FILE]",
	};
	static const char *const subs[] = {"generate", "request", "check"};
	char domain[JID_PART_MAX + 1];
	int sub = -1;

	for (int i = 0; a->n_words >= 2 && i < 3; i++)
		if (!strcmp(a->words[1], subs[i]))
			sub = i;
	if (sub < 0)
		return usage_error("usage: cert generate|request|check DOMAIN [options]");
	if (a->n_words != 3)
		return usage_error("%s", usage[sub]);
	if (a->cert && sub != 2)
		return usage_error("--cert is an option of cert check");
	if (prep_domain(a->words[2], domain, sizeof(domain)) < 0)
		return 1;
	if (sub == 0)
		return cert_generate_cmd(a, domain);
	if (sub == 1)
		return cert_request_cmd(a, domain);
	return cert_check_cmd(a, domain);
}

/* init -------------------------------------------------------------------- */

/* mkdir -p; mode applies to the directories it creates. */
static int make_dirs(const char *path, mode_t mode)
{
	char *p = strdup(path);
	struct stat st;
	int rc = -1;

	if (!p)
		die_oom();
	for (char *s = p + 1;; s++) {
		if (*s != '/' && *s)
			continue;
		char c = *s;
		*s = '\0';
		if (mkdir(p, mode) < 0 && errno != EEXIST) {
			fail("%s: %s", p, strerror(errno));
			goto out;
		}
		*s = c;
		if (!c)
			break;
	}
	if (stat(path, &st) < 0 || !S_ISDIR(st.st_mode)) {
		fail("%s: not a directory", path);
		goto out;
	}
	rc = 0;
out:
	free(p);
	return rc;
}

static int write_sample(const char *path, const struct init_opts *o)
{
	/* O_EXCL: never replace an admin's configuration, even in a race.
	 * 0640: it names key files and may grow secrets. */
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
	FILE *f;

	if (fd < 0) {
		fail("%s: %s", path, strerror(errno));
		return -1;
	}
	f = fdopen(fd, "w");
	if (!f) {
		fail("%s: %s", path, strerror(errno));
		close(fd);
		unlink(path);
		return -1;
	}
	config_write_sample(f, o);
	if (ferror(f) | fflush(f) | fsync(fileno(f))) {
		fail("%s: %s", path, strerror(errno));
		fclose(f);
		unlink(path);
		return -1;
	}
	if (fclose(f)) {
		fail("%s: %s", path, strerror(errno));
		unlink(path);
		return -1;
	}
	return 0;
}

static int init_cert(const char *domain, const char *key, const char *crt, bool rsa)
{
	char err[512];
	bool have_key = exists(key), have_crt = exists(crt);

	/* A pair already in place (say, from a real CA) is kept; a lone half
	 * is more likely a mistake than something to overwrite. */
	if (have_key && have_crt) {
		if (cert_check(domain, crt, key, err, sizeof(err)) < 0) {
			fail("%s", err);
			return -1;
		}
		printf("keeping the existing %s and %s\n", crt, key);
		return 0;
	}
	if (have_key || have_crt) {
		fail("%s exists without its %s", have_key ? key : crt,
		     have_key ? "certificate" : "key");
		return -1;
	}
	if (cert_generate(domain, rsa ? CERT_RSA_2048 : CERT_EC_P256, DEFAULT_DAYS, key, crt, err,
			  sizeof(err)) < 0) {
		fail("%s", err);
		return -1;
	}
	return 0;
}

static unsigned port_or(unsigned long given, unsigned dflt)
{
	return given == PORT_UNSET ? dflt : (unsigned)given;
}

static int cmd_init(const struct args *a)
{
	char domain[JID_PART_MAX + 1], err[1024];
	char *conf = NULL, *data = NULL, *key = NULL, *crt = NULL, *keyname = NULL, *crtname = NULL,
	     *absdir = NULL;
	struct init_opts o = {0};
	struct config cfg;
	struct store *s;
	int ret = 1;

	if (a->n_words != 2)
		return usage_error("usage: init DOMAIN --dir DIR [options]");
	if (!a->dir)
		return usage_error("init needs --dir DIR");
	if (prep_domain(a->words[1], domain, sizeof(domain)) < 0)
		return 1;

	conf = path_join(a->dir, "parley.conf", "");
	if (exists(conf)) {
		fail("%s exists: not overwriting an existing server directory", conf);
		goto out;
	}
	data = path_join(a->dir, "data", "");
	if (make_dirs(a->dir, 0755) < 0 || make_dirs(data, 0700) < 0)
		goto out;

	key = path_join(a->dir, domain, ".key");
	crt = path_join(a->dir, domain, ".crt");
	if (init_cert(domain, key, crt, a->rsa) < 0)
		goto out;

	/* Relative names: the config resolves them against its own
	 * directory, so the whole directory can be moved. */
	if (asprintf(&keyname, "%s.key", domain) < 0 || asprintf(&crtname, "%s.crt", domain) < 0)
		die_oom();
	o.domain = domain;
	o.key_file = keyname;
	o.cert_file = crtname;
	/* RFC 6120 §14.7 (5222, 5269), XEP-0368 (5223), and the customary
	 * HTTP port of XMPP servers. */
	o.c2s_port = port_or(a->c2s_port, 5222);
	o.c2s_tls_port = port_or(a->c2s_tls_port, 5223);
	o.s2s_port = port_or(a->s2s_port, 5269);
	o.http_port = port_or(a->http_port, 5280);
	o.interface = a->interface;
	if (write_sample(conf, &o) < 0)
		goto out;

	/* Load what was written: the sample must be valid as it stands, and
	 * the loader is what knows where the store lives. */
	memset(&cfg, 0, sizeof(cfg));
	if (config_load(conf, &cfg, err, sizeof(err)) < 0) {
		fail("the written configuration does not load: %s", err);
		unlink(conf);
		goto out;
	}
	if (make_dirs(cfg.data_dir, 0700) < 0) {
		unlink(conf);
		goto out_cfg;
	}
	s = open_store(&cfg);
	if (!s) {
		unlink(conf);
		goto out_cfg;
	}
	store_close(s);

	absdir = realpath(a->dir, NULL);
	printf("Parley is set up for %s in %s.\n"
	       "  configuration: %s\n"
	       "  certificate:   %s (self-signed; replace it with one from a CA for\n"
	       "                 server-to-server federation)\n"
	       "  store:         %s\n"
	       "Next steps:\n"
	       "  1. Add an account:  parleyctl --config %s adduser admin@%s\n"
	       "  2. Check:           parleyctl --config %s check config\n"
	       "  3. Start:           parleyd --config %s\n",
	       domain, absdir ? absdir : a->dir, cfg.path, cfg.hosts[0].cert_file, cfg.store_path,
	       cfg.path, domain, cfg.path, cfg.path);
	ret = 0;
out_cfg:
	config_free(&cfg);
out:
	free(absdir);
	free(keyname);
	free(crtname);
	free(conf);
	free(data);
	free(key);
	free(crt);
	return ret;
}

/* check ------------------------------------------------------------------- */

static void port_desc(char *out, size_t cap, const char *name, unsigned port)
{
	if (port)
		snprintf(out, cap, "%s %u", name, port);
	else
		snprintf(out, cap, "%s off", name);
}

static int cmd_check(const struct args *a)
{
	struct config cfg;
	char err[1024], p[4][32];
	int bad = 0;

	if (a->n_words != 2 || strcmp(a->words[1], "config"))
		return usage_error("usage: check config");
	if (load_config(a, &cfg) < 0)
		return 1;
	for (size_t i = 0; i < cfg.n_hosts; i++) {
		const struct host_conf *h = &cfg.hosts[i];
		if (cert_check(h->domain, h->cert_file, h->key_file, err, sizeof(err)) < 0) {
			fprintf(stderr, "%s: host %s: %s\n", cfg.path, h->domain, err);
			bad++;
		}
	}
	if (bad) {
		config_free(&cfg);
		return 1;
	}
	port_desc(p[0], sizeof(p[0]), "c2s", cfg.c2s_port);
	port_desc(p[1], sizeof(p[1]), "c2s-tls", cfg.c2s_tls_port);
	port_desc(p[2], sizeof(p[2]), "s2s", cfg.s2s_port);
	port_desc(p[3], sizeof(p[3]), "http", cfg.http_port);
	printf("config OK: %zu host%s (", cfg.n_hosts, cfg.n_hosts == 1 ? "" : "s");
	for (size_t i = 0; i < cfg.n_hosts; i++)
		printf("%s%s", i ? ", " : "", cfg.hosts[i].domain);
	printf("), %s, %s, %s, %s, store %s\n", p[0], p[1], p[2], p[3], cfg.store_path);
	config_free(&cfg);
	return 0;
}

int main(int argc, char **argv)
{
	struct args a = {
	    .c2s_port = PORT_UNSET,
	    .c2s_tls_port = PORT_UNSET,
	    .s2s_port = PORT_UNSET,
	    .http_port = PORT_UNSET,
	};
	const char *cmd;
	int rc;

	/* Warnings from the libraries are worth showing an admin; their
	 * progress messages are not. */
	log_set_level(LOG_WARN);
	rc = parse_args(argc, argv, &a);
	if (rc)
		return rc;
	if (a.n_words == 0)
		return usage_error("no command given");
	cmd = a.words[0];
	if (!strcmp(cmd, "adduser"))
		rc = cmd_account(&a, ACC_ADD);
	else if (!strcmp(cmd, "passwd"))
		rc = cmd_account(&a, ACC_PASSWD);
	else if (!strcmp(cmd, "deluser"))
		rc = cmd_account(&a, ACC_DEL);
	else if (!strcmp(cmd, "list"))
		rc = cmd_list(&a);
	else if (!strcmp(cmd, "invite"))
		rc = cmd_invite(&a);
	else if (!strcmp(cmd, "check"))
		rc = cmd_check(&a);
	else if (!strcmp(cmd, "cert"))
		rc = cmd_cert(&a);
	else if (!strcmp(cmd, "init"))
		rc = cmd_init(&a);
	else
		return usage_error("unknown command: %s", cmd);
	if (fflush(stdout) != 0 && rc == 0) {
		fail("writing the output: %s", strerror(errno));
		rc = 1;
	}
	return rc;
}
