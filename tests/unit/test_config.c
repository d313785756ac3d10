/* Tests for src/server/config.c. Each test writes its files into its own
 * mkdtemp directory. Run with --write-doc [FILE] to regenerate
 * docs/CONFIG.md (default: $PARLEY_SRC/docs/CONFIG.md). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "server/config.h"

static const char *prog = "test_config"; /* argv[0], for the regeneration hint */

struct tdir {
	char dir[PATH_MAX];	  /* realpath of the temp directory */
	char file[PATH_MAX + 32]; /* dir/parley.yaml */
	char err[512];
};

static int setup(void **state)
{
	struct tdir *t = calloc(1, sizeof(*t));
	char tmpl[] = "/tmp/parley-config-XXXXXX";
	if (!t || !mkdtemp(tmpl) || !realpath(tmpl, t->dir))
		return -1;
	snprintf(t->file, sizeof(t->file), "%s/parley.yaml", t->dir);
	*state = t;
	return 0;
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(p);
}

static int teardown(void **state)
{
	struct tdir *t = *state;
	nftw(t->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(t);
	return 0;
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	assert_int_equal(fclose(f), 0);
}

static void load_ok(struct tdir *t, const char *yaml, struct config *c)
{
	write_file(t->file, yaml);
	int rc = config_load(t->file, c, t->err, sizeof(t->err));
	if (rc)
		print_error("unexpected error: %s\n", t->err);
	assert_int_equal(rc, 0);
}

/* want: the message after "FILE:". */
static void load_err(struct tdir *t, const char *yaml, const char *want)
{
	char full[PATH_MAX + 1024];
	struct config c;
	write_file(t->file, yaml);
	memset(&c, 0x5a, sizeof(c));
	int rc = config_load(t->file, &c, t->err, sizeof(t->err));
	snprintf(full, sizeof(full), "%s:%s", t->file, want);
	if (rc == 0)
		print_error("accepted:\n%s\n", yaml);
	assert_int_equal(rc, -1);
	assert_string_equal(t->err, full);
	/* A failed load leaves nothing to free. */
	assert_null(c.hosts);
	assert_null(c.path);
	assert_int_equal(c.n_interfaces, 0);
	config_free(&c);
}

static char *join(const struct tdir *t, const char *rel)
{
	static char b[2][PATH_MAX + 64];
	static int i;
	i ^= 1;
	snprintf(b[i], sizeof(b[i]), "%s/%s", t->dir, rel);
	return b[i];
}

static void assert_defaults(const struct tdir *t, const struct config *c)
{
	assert_string_equal(c->path, t->file);
	assert_string_equal(c->dir, t->dir);
	assert_int_equal(c->log_level, LOG_INFO);
	assert_int_equal(c->workers, 0);
	assert_string_equal(c->data_dir, join(t, "data"));
	assert_string_equal(c->store_path, join(t, "data/parley.db"));
	assert_int_equal(c->n_interfaces, 1);
	assert_string_equal(c->interfaces[0], "*");
	assert_int_equal(c->c2s_port, 5222);
	assert_int_equal(c->c2s_tls_port, 5223);
	assert_int_equal(c->s2s_port, 5269);
	assert_int_equal(c->http_port, 5280);
	assert_true(c->c2s_require_encryption);
	assert_true(c->sasl_plain);
	assert_int_equal(c->scram_iterations, 10000);
	assert_int_equal(c->resource_conflict, CONFLICT_KICK_OLD);
	assert_int_equal(c->limits.stanza_bytes, 262144);
	assert_int_equal(c->limits.stanza_bytes_preauth, 16384);
	assert_int_equal(c->limits.xml_depth, 64);
	assert_int_equal(c->limits.xml_attrs, 64);
	assert_int_equal(c->limits.xml_attr_len, 16384);
	assert_int_equal(c->limits.xml_text_len, 262144);
	assert_int_equal(c->limits.xml_children, 10000);
	assert_int_equal(c->limits.handshake_timeout, 30);
	assert_int_equal(c->limits.idle_timeout, 840);
	assert_int_equal(c->limits.out_queue_bytes, 4 << 20);
	assert_int_equal(c->limits.auth_failures_per_ip, 10);
}

static void test_minimal(void **state)
{
	struct tdir *t = *state;
	struct config c;
	load_ok(t, "hosts:\n  - domain: example.org\n", &c);
	assert_defaults(t, &c);
	assert_int_equal(c.n_hosts, 1);
	assert_string_equal(c.hosts[0].domain, "example.org");
	assert_string_equal(c.hosts[0].cert_file, join(t, "example.org.crt"));
	assert_string_equal(c.hosts[0].key_file, join(t, "example.org.key"));
	assert_ptr_equal(config_host(&c, "example.org"), &c.hosts[0]);
	assert_null(config_host(&c, "example.net"));
	config_free(&c);
	assert_null(c.hosts);
	config_free(&c); /* twice is harmless: the first one zeroed it */
	config_free(NULL);
}

static void test_all_types(void **state)
{
	struct tdir *t = *state;
	struct config c;
	load_ok(t,
		"# every option, none at its default\n"
		"log_level: debug\n"
		"workers: 4\n"
		"data_dir: /var/lib/parley/\n"
		"store_path: db/main.sqlite\n"
		"interfaces: [\"127.0.0.1\", \"::1\"]\n"
		"c2s_port: 15222\n"
		"c2s_tls_port: 0\n"
		"s2s_port: 15269\n"
		"http_port: 15280\n"
		"c2s_require_encryption: false\n"
		"sasl_plain: false\n"
		"scram_iterations: 20000\n"
		"resource_conflict: refuse_new\n"
		"limits:\n"
		"  stanza_bytes: 1m\n"
		"  stanza_bytes_preauth: 8K\n"
		"  xml_depth: 32\n"
		"  xml_attrs: 16\n"
		"  xml_attr_len: 4096\n"
		"  xml_text_len: 512k\n"
		"  xml_children: 500\n"
		"  handshake_timeout: 1m\n"
		"  idle_timeout: 2h\n"
		"limits.out_queue_bytes: 1g\n"
		"limits.auth_failures_per_ip: 0\n"
		"hosts:\n"
		"  - domain: Example.ORG\n"
		"    certificate: /etc/ssl/example.pem\n"
		"    key: keys/example.key\n"
		"  - chat.example.net.\n",
		&c);
	assert_int_equal(c.log_level, LOG_DEBUG);
	assert_int_equal(c.workers, 4);
	assert_string_equal(c.data_dir, "/var/lib/parley");
	assert_string_equal(c.store_path, join(t, "db/main.sqlite"));
	assert_int_equal(c.n_interfaces, 2);
	assert_string_equal(c.interfaces[0], "127.0.0.1");
	assert_string_equal(c.interfaces[1], "::1");
	assert_int_equal(c.c2s_port, 15222);
	assert_int_equal(c.c2s_tls_port, 0);
	assert_int_equal(c.s2s_port, 15269);
	assert_int_equal(c.http_port, 15280);
	assert_false(c.c2s_require_encryption);
	assert_false(c.sasl_plain);
	assert_int_equal(c.scram_iterations, 20000);
	assert_int_equal(c.resource_conflict, CONFLICT_REFUSE_NEW);
	assert_int_equal(c.limits.stanza_bytes, 1 << 20);
	assert_int_equal(c.limits.stanza_bytes_preauth, 8192);
	assert_int_equal(c.limits.xml_depth, 32);
	assert_int_equal(c.limits.xml_attrs, 16);
	assert_int_equal(c.limits.xml_attr_len, 4096);
	assert_int_equal(c.limits.xml_text_len, 512 << 10);
	assert_int_equal(c.limits.xml_children, 500);
	assert_int_equal(c.limits.handshake_timeout, 60);
	assert_int_equal(c.limits.idle_timeout, 7200);
	assert_int_equal(c.limits.out_queue_bytes, 1ull << 30);
	assert_int_equal(c.limits.auth_failures_per_ip, 0);
	assert_int_equal(c.n_hosts, 2);
	assert_string_equal(c.hosts[0].domain, "example.org");
	assert_string_equal(c.hosts[0].cert_file, "/etc/ssl/example.pem");
	assert_string_equal(c.hosts[0].key_file, join(t, "keys/example.key"));
	assert_string_equal(c.hosts[1].domain, "chat.example.net");
	assert_string_equal(c.hosts[1].cert_file, join(t, "chat.example.net.crt"));
	assert_non_null(config_host(&c, "chat.example.net"));
	config_free(&c);
}

struct err_case {
	const char *yaml;
	const char *want; /* after "FILE:" */
};

static void run_errors(struct tdir *t, const struct err_case *e, size_t n)
{
	for (size_t i = 0; i < n; i++)
		load_err(t, e[i].yaml, e[i].want);
}

#define H "hosts: [example.org]\n"

static void test_errors(void **state)
{
	static const struct err_case cases[] = {
	    /* unknown keys, at the top, in a section, in a host */
	    {H "fooo: 1\n", "2: fooo: unknown key"},
	    {H "limits:\n  xml_dept: 3\n", "3: limits.xml_dept: unknown key"},
	    {H "limits.nope: 3\n", "2: limits.nope: unknown key"},
	    {"hosts:\n  - domain: a.org\n    cert: x\n", "3: hosts[0].cert: unknown key"},
	    /* wrong types */
	    {H "workers: many\n", "2: workers: expected a whole number, got many"},
	    {H "workers: -1\n", "2: workers: expected a whole number, got -1"},
	    {H "c2s_port: {a: 1}\n", "2: c2s_port: expected a whole number, got a mapping"},
	    {H "sasl_plain: yes\n", "2: sasl_plain: expected true or false, got yes"},
	    {H "interfaces: \"*\"\n", "2: interfaces: expected a list of strings, got a scalar"},
	    {H "interfaces: [[a]]\n", "2: interfaces[0]: expected a string, got a list"},
	    {H "log_level: loud\n",
	     "2: log_level: expected one of error, warn, info, debug, got loud"},
	    {H "resource_conflict: [kick_old]\n",
	     "2: resource_conflict: expected one of kick_old, refuse_new, got a list"},
	    {H "limits.stanza_bytes: 10x\n",
	     "2: limits.stanza_bytes: expected a size (bytes, or with a k, m or g suffix), got "
	     "10x"},
	    {H "limits.idle_timeout: 5d\n",
	     "2: limits.idle_timeout: expected a duration (seconds, or with an s, m or h "
	     "suffix), got 5d"},
	    {H "limits: 5\n", "2: limits: expected a mapping, got a scalar"},
	    {"hosts: example.org\n", "1: hosts: expected a list of hosts, got a scalar"},
	    {"hosts: [[a.org]]\n",
	     "1: hosts[0].domain: expected a mapping or a domain, got a list"},
	    {H "data_dir: [a]\n", "2: data_dir: expected a path, got a list"},
	    {"- a\n- b\n", "1: (top): expected a mapping, got a list"},
	    {H "[a]: 1\n", "2: (top): keys must be plain names, got a list"},
	    /* missing values and keys */
	    {H "workers:\n", "2: workers: missing value (expected a whole number)"},
	    {H "data_dir: \"\"\n", "2: data_dir: missing value (expected a path)"},
	    {H "workers: \"1\\0\"\n", "2: workers: contains a NUL byte"},
	    {H "log_level: \n",
	     "2: log_level: missing value (expected one of error, warn, info, debug)"},
	    {H "interfaces: [~]\n", "2: interfaces[0]: missing value (expected a string)"},
	    {"workers: 2\n", "1: hosts: missing required key"},
	    {"", "1: hosts: missing required key"},
	    {"# nothing but a comment\n", "1: hosts: missing required key"},
	    {"hosts:\n  - certificate: x.pem\n", "2: hosts[0].domain: missing required key"},
	    {"hosts: []\n", "1: hosts: must not be empty"},
	    {H "interfaces: []\n", "2: interfaces: must not be empty"},
	    {H "contact.admin: [\"just text\"]\n",
	     "2: contact.admin[0]: just text: not a URI (mailto:..., xmpp:..., https://...)"},
	    {H "contact:\n  abuse: [\"mailto: spaced@x\"]\n",
	     "3: contact.abuse[0]: mailto: spaced@x: a URI has no spaces or control characters"},
	    {H "registration: maybe\n",
	     "2: registration: expected one of off, invite, open, got maybe"},
	    /* duplicates */
	    {H "workers: 1\nworkers: 2\n", "3: workers: duplicate key (first at line 2)"},
	    {H "limits:\n  xml_depth: 20\nlimits.xml_depth: 30\n",
	     "4: limits.xml_depth: duplicate key (first at line 3)"},
	    {H "limits:\n  xml_depth: 20\nlimits:\n  xml_attrs: 20\n",
	     "4: limits: duplicate key (first at line 2)"},
	    {"hosts:\n  - domain: a.org\n    domain: b.org\n",
	     "3: hosts[0].domain: duplicate key (first at line 2)"},
	    /* values that are checked beyond their type */
	    {H "interfaces: [\"*\", localhost]\n",
	     "2: interfaces[1]: localhost: not an IP address or \"*\""},
	    {"hosts: [\"a..b\"]\n", "1: hosts[0].domain: a..b: not a valid domain name"},
	    {H "limits:\n  stanza_bytes: 10000\n  stanza_bytes_preauth: 16k\n",
	     "4: limits.stanza_bytes_preauth: must not exceed limits.stanza_bytes (10000)"},
	    {H "limits:\n  stanza_bytes: 64k\n  xml_text_len: 65537\n",
	     "4: limits.xml_text_len: must not exceed limits.stanza_bytes (64k)"},
	    {H "s2s_port: 5222\n", "2: s2s_port: port 5222 is also c2s_port"},
	    {H "c2s_port: 5280\n", "2: http_port: port 5280 is also c2s_port"},
	    /* YAML syntax, with libyaml's own words */
	    {H "workers: [1\n",
	     "3: yaml: did not find expected ',' or ']' while parsing a flow sequence"},
	    {H "\tworkers: 1\n",
	     "2: yaml: found character that cannot start any token while scanning for the "
	     "next token"},
	    {H "---\nworkers: 1\n", "3: yaml: only one document is allowed"},
	};
	run_errors(*state, cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_cannot_open(void **state)
{
	struct tdir *t = *state;
	struct config c;
	char want[2 * PATH_MAX];
	const char *p = join(t, "missing.yaml");
	assert_int_equal(config_load(p, &c, t->err, sizeof(t->err)), -1);
	snprintf(want, sizeof(want), "%s: cannot open: No such file or directory", p);
	assert_string_equal(t->err, want);
	assert_null(c.path);
}

static void test_bounds(void **state)
{
	struct tdir *t = *state;
	struct config c;
	/* The edges are accepted... */
	load_ok(t,
		H "workers: 256\nscram_iterations: 4096\nc2s_port: 65535\n"
		  "limits:\n  stanza_bytes: 16m\n  idle_timeout: 60\n  handshake_timeout: 10m\n",
		&c);
	assert_int_equal(c.workers, 256);
	assert_int_equal(c.scram_iterations, 4096);
	assert_int_equal(c.c2s_port, 65535);
	assert_int_equal(c.limits.stanza_bytes, 16 << 20);
	assert_int_equal(c.limits.idle_timeout, 60);
	assert_int_equal(c.limits.handshake_timeout, 600);
	config_free(&c);
	load_ok(t,
		H "scram_iterations: 1000000\nlimits.stanza_bytes: 10000\n"
		  "limits.idle_timeout: 24h\n",
		&c);
	assert_int_equal(c.scram_iterations, 1000000);
	assert_int_equal(c.limits.idle_timeout, 86400);
	/* ...and a default above a smaller stanza limit is lowered to it. */
	assert_int_equal(c.limits.stanza_bytes_preauth, 10000);
	assert_int_equal(c.limits.xml_attr_len, 10000);
	assert_int_equal(c.limits.xml_text_len, 10000);
	config_free(&c);

	/* ...one step beyond them is not. */
	static const struct err_case cases[] = {
	    {H "workers: 257\n", "2: workers: must be between 0 and 256"},
	    {H "scram_iterations: 4095\n", "2: scram_iterations: must be between 4096 and 1000000"},
	    {H "scram_iterations: 1000001\n",
	     "2: scram_iterations: must be between 4096 and 1000000"},
	    {H "c2s_port: 65536\n", "2: c2s_port: must be between 0 and 65535"},
	    {H "c2s_port: 99999999999999999999999\n", "2: c2s_port: must be between 0 and 65535"},
	    {H "limits.stanza_bytes: 9999\n",
	     "2: limits.stanza_bytes: must be between 10000 and 16m"},
	    {H "limits.stanza_bytes: 16777217\n",
	     "2: limits.stanza_bytes: must be between 10000 and 16m"},
	    {H "limits.stanza_bytes: 99999999999g\n",
	     "2: limits.stanza_bytes: must be between 10000 and 16m"},
	    {H "limits.idle_timeout: 59\n", "2: limits.idle_timeout: must be between 1m and 24h"},
	    {H "limits.idle_timeout: 86401s\n",
	     "2: limits.idle_timeout: must be between 1m and 24h"},
	    {H "limits.xml_depth: 15\n", "2: limits.xml_depth: must be between 16 and 1024"},
	};
	run_errors(t, cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_duplicate_host(void **state)
{
	static const struct err_case cases[] = {
	    {"hosts:\n  - a.org\n  - domain: b.org\n  - domain: a.org\n",
	     "4: hosts[2].domain: duplicate host a.org (first at line 2)"},
	    /* the same host once normalized */
	    {"hosts: [example.org, EXAMPLE.org.]\n",
	     "1: hosts[1].domain: duplicate host example.org (first at line 1)"},
	};
	run_errors(*state, cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_paths(void **state)
{
	struct tdir *t = *state;
	struct config c;
	char sub[PATH_MAX + 8], cwd[PATH_MAX];

	/* Relative to the file, not to data_dir or the working directory. */
	load_ok(t, H "data_dir: ./state/\nstore_path: ../db/p.db\n", &c);
	assert_string_equal(c.data_dir, join(t, "state"));
	assert_string_equal(c.store_path, join(t, "../db/p.db"));
	config_free(&c);
	load_ok(t,
		"data_dir: state\nhosts:\n  - domain: x.org\n    certificate: ./tls/x.crt\n"
		"    key: .\n",
		&c);
	assert_string_equal(c.data_dir, join(t, "state"));
	/* store_path follows data_dir when it is not given */
	assert_string_equal(c.store_path, join(t, "state/parley.db"));
	assert_string_equal(c.hosts[0].cert_file, join(t, "tls/x.crt"));
	assert_string_equal(c.hosts[0].key_file, t->dir);
	config_free(&c);

	/* A config named by a relative path from elsewhere still resolves
	 * against its own directory, and path is absolute. */
	snprintf(sub, sizeof(sub), "%s/etc", t->dir);
	assert_int_equal(mkdir(sub, 0700), 0);
	write_file(join(t, "etc/p.yaml"), H "data_dir: d\n");
	assert_non_null(getcwd(cwd, sizeof(cwd)));
	assert_int_equal(chdir(t->dir), 0);
	int rc = config_load("etc/p.yaml", &c, t->err, sizeof(t->err));
	assert_int_equal(chdir(cwd), 0);
	assert_int_equal(rc, 0);
	assert_string_equal(c.path, join(t, "etc/p.yaml"));
	assert_string_equal(c.dir, sub);
	assert_string_equal(c.data_dir, join(t, "etc/d"));
	assert_string_equal(c.hosts[0].cert_file, join(t, "etc/example.org.crt"));
	config_free(&c);
}

static char *sample(const struct init_opts *o)
{
	char *s = NULL;
	size_t n = 0;
	FILE *f = open_memstream(&s, &n);
	assert_non_null(f);
	config_write_sample(f, o);
	assert_int_equal(fclose(f), 0);
	return s;
}

static void test_sample_roundtrip(void **state)
{
	struct tdir *t = *state;
	struct config c;
	struct init_opts o = {
	    .domain = "Chat.Example.ORG",
	    .cert_file = "tls/chat.crt",
	    .key_file = "/etc/parley/chat.key",
	    .c2s_port = 15222,
	    .c2s_tls_port = 15223,
	    .s2s_port = 15269,
	    .http_port = 15280,
	    .interface = "::1",
	};
	char *s = sample(&o);
	load_ok(t, s, &c);
	assert_int_equal(c.c2s_port, 15222);
	assert_int_equal(c.c2s_tls_port, 15223);
	assert_int_equal(c.s2s_port, 15269);
	assert_int_equal(c.http_port, 15280);
	assert_int_equal(c.n_interfaces, 1);
	assert_string_equal(c.interfaces[0], "::1");
	assert_int_equal(c.n_hosts, 1);
	assert_string_equal(c.hosts[0].domain, "chat.example.org");
	assert_string_equal(c.hosts[0].cert_file, join(t, "tls/chat.crt"));
	assert_string_equal(c.hosts[0].key_file, "/etc/parley/chat.key");
	config_free(&c);
	free(s);

	/* With only a domain, the sample is the defaults. */
	struct init_opts d = {.domain = "example.org"};
	s = sample(&d);
	load_ok(t, s, &c);
	assert_defaults(t, &c);
	assert_string_equal(c.hosts[0].cert_file, join(t, "example.org.crt"));
	config_free(&c);

	/* Every commented "#key: value" line, uncommented, is accepted and is
	 * the default: the sample documents the true defaults. */
	size_t n = 0;
	for (char *p = s; (p = strchr(p, '#')); p++)
		if (p[1] >= 'a' && p[1] <= 'z') {
			memmove(p, p + 1, strlen(p));
			n++;
		}
	assert_true(n >= 20);
	load_ok(t, s, &c);
	assert_defaults(t, &c);
	assert_string_equal(c.hosts[0].cert_file, join(t, "example.org.crt"));
	assert_string_equal(c.hosts[0].key_file, join(t, "example.org.key"));
	config_free(&c);
	free(s);
}

static char *doc(void)
{
	char *s = NULL;
	size_t n = 0;
	FILE *f = open_memstream(&s, &n);
	assert_non_null(f);
	config_write_doc(f);
	assert_int_equal(fclose(f), 0);
	return s;
}

/* Every key in the doc's tables appears in the sample as "key:". */
static void test_sample_complete(void **state)
{
	struct init_opts o = {.domain = "example.org"};
	char *d = doc(), *s = sample(&o);
	size_t keys = 0;
	for (char *p = d; (p = strstr(p, "\n| `")); p++) {
		char key[128], want[140];
		const char *k = p + 4;
		size_t n = strcspn(k, "`");
		assert_true(n < sizeof(key));
		memcpy(key, k, n);
		key[n] = '\0';
		/* hosts[].domain and limits.xml_depth are written nested */
		const char *last = strrchr(key, '.');
		snprintf(want, sizeof(want), "%s:", last ? last + 1 : key);
		if (!strstr(s, want))
			print_error("%s is not in the sample\n", key);
		assert_non_null(strstr(s, want));
		keys++;
	}
	assert_true(keys >= 27);
	free(d);
	free(s);
}

/* The example in the doc is a file config_load accepts. */
static void test_doc_example(void **state)
{
	struct tdir *t = *state;
	struct config c;
	char *d = doc();
	char *y = strstr(d, "```yaml\n");
	assert_non_null(y);
	y += 8;
	char *end = strstr(y, "```");
	assert_non_null(end);
	*end = '\0';
	load_ok(t, y, &c);
	assert_int_equal(c.n_hosts, 2);
	assert_string_equal(c.hosts[1].key_file, join(t, "chat.example.net.key"));
	assert_int_equal(c.http_port, 0);
	assert_int_equal(c.limits.idle_timeout, 1800);
	config_free(&c);
	free(d);
}

static char *read_all(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	char *s = NULL;
	size_t n = 0, cap = 0, r;
	do {
		if (cap - n < 4096) {
			cap = cap * 2 + 8192;
			s = realloc(s, cap);
			assert_non_null(s);
		}
		r = fread(s + n, 1, cap - n - 1, f);
		n += r;
	} while (r);
	s[n] = '\0';
	fclose(f);
	return s;
}

static void test_doc_current(void **state)
{
	(void)state;
	const char *src = getenv("PARLEY_SRC");
	char path[PATH_MAX];
	if (!src)
		fail_msg("PARLEY_SRC is not set (tests/meson.build sets it)");
	snprintf(path, sizeof(path), "%s/docs/CONFIG.md", src);
	char *want = doc(), *have = read_all(path);
	if (!have || strcmp(want, have)) {
		size_t line = 1;
		for (size_t i = 0; have && want[i] && want[i] == have[i]; i++)
			line += want[i] == '\n';
		print_error("%s is stale (first difference at line %zu). Regenerate it with:\n"
			    "  %s --write-doc %s\n",
			    path, line, prog, path);
	}
	assert_non_null(have);
	assert_string_equal(want, have);
	free(want);
	free(have);
}

static void test_reload(void **state)
{
	struct tdir *t = *state;
	struct config a, b;
	char other[2 * PATH_MAX];
	load_ok(t, "hosts: [a.org, b.org]\nworkers: 2\n", &a);

	snprintf(other, sizeof(other), "%s", join(t, "b.yaml"));
	write_file(other, "hosts:\n  - b.org\n  - domain: a.org\n    certificate: new.crt\n"
			  "workers: 2\nlog_level: debug\nlimits.xml_depth: 20\n");
	assert_int_equal(config_load(other, &b, t->err, sizeof(t->err)), 0);
	assert_int_equal(config_check_reload(&a, &b, t->err, sizeof(t->err)), 0);
	config_free(&b);

	write_file(other, "hosts: [a.org, b.org]\nworkers: 3\n");
	assert_int_equal(config_load(other, &b, t->err, sizeof(t->err)), 0);
	assert_int_equal(config_check_reload(&a, &b, t->err, sizeof(t->err)), -1);
	char want[3 * PATH_MAX];
	snprintf(want, sizeof(want), "%s: workers: changed, which needs a restart", other);
	assert_string_equal(t->err, want);
	config_free(&b);

	write_file(other, "hosts: [a.org, c.org]\nworkers: 2\n");
	assert_int_equal(config_load(other, &b, t->err, sizeof(t->err)), 0);
	assert_int_equal(config_check_reload(&a, &b, t->err, sizeof(t->err)), -1);
	snprintf(want, sizeof(want), "%s: hosts: domains changed, which needs a restart", other);
	assert_string_equal(t->err, want);
	config_free(&b);

	write_file(other, "hosts: [a.org, b.org]\nworkers: 2\ninterfaces: [\"::\"]\n");
	assert_int_equal(config_load(other, &b, t->err, sizeof(t->err)), 0);
	assert_int_equal(config_check_reload(&a, &b, t->err, sizeof(t->err)), -1);
	config_free(&b);
	config_free(&a);
}

static int write_doc(const char *path)
{
	char def[PATH_MAX];
	if (!path) {
		const char *src = getenv("PARLEY_SRC");
		if (!src) {
			fprintf(stderr,
				"usage: test_config --write-doc FILE (or set PARLEY_SRC)\n");
			return 2;
		}
		snprintf(def, sizeof(def), "%s/docs/CONFIG.md", src);
		path = def;
	}
	FILE *f = fopen(path, "w");
	if (!f) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return 1;
	}
	config_write_doc(f);
	if (fclose(f)) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc > 0)
		prog = argv[0];
	if (argc > 1 && !strcmp(argv[1], "--write-doc"))
		return write_doc(argc > 2 ? argv[2] : NULL);

	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_minimal, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_all_types, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cannot_open, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bounds, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_duplicate_host, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_paths, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_sample_roundtrip, setup, teardown),
	    cmocka_unit_test(test_sample_complete),
	    cmocka_unit_test_setup_teardown(test_doc_example, setup, teardown),
	    cmocka_unit_test(test_doc_current),
	    cmocka_unit_test_setup_teardown(test_reload, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
