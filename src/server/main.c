/* parleyd: the XMPP server. */
#include <errno.h>
#include <getopt.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "net/certs.h"
#include "server/config.h"
#include "server/server.h"

static void usage(FILE *f)
{
	fputs("usage: parleyd --config FILE [--check]\n"
	      "       parleyd --version\n"
	      "\n"
	      "  -c, --config FILE  configuration file (default: $PARLEY_CONFIG, else "
	      "./parley.conf)\n"
	      "      --check        validate the configuration and certificates, then exit\n"
	      "  -V, --version      print the version\n"
	      "      --compliance   print docs/COMPLIANCE.md (generated from the module tables)\n"
	      "\n"
	      "Signals: SIGHUP reloads certificates and reloadable options; SIGTERM closes\n"
	      "every stream (system-shutdown) and exits.\n",
	      f);
}

/* A host whose certificate or key is missing gets a self-signed one on
 * first start, so that one command gives a working server. */
static int ensure_certs(const struct config *cfg)
{
	for (size_t i = 0; i < cfg->n_hosts; i++) {
		const struct host_conf *h = &cfg->hosts[i];
		bool have_cert = access(h->cert_file, F_OK) == 0;
		bool have_key = access(h->key_file, F_OK) == 0;
		if (have_cert && have_key)
			continue;
		if (have_cert != have_key) {
			fprintf(stderr, "parleyd: %s: %s is missing\n", h->domain,
				have_cert ? h->key_file : h->cert_file);
			return -1;
		}
		char err[256];
		if (cert_generate(h->domain, CERT_EC_P256, 365, h->key_file, h->cert_file, err,
				  sizeof(err)) < 0) {
			fprintf(stderr, "parleyd: %s: cannot generate a certificate: %s\n",
				h->domain, err);
			return -1;
		}
		LOG(LOG_INFO, "generated a self-signed certificate for %s: %s", h->domain,
		    h->cert_file);
	}
	return 0;
}

int main(int argc, char **argv)
{
	const char *config = getenv("PARLEY_CONFIG");
	bool check = false;
	static const struct option opts[] = {
	    {"config", required_argument, NULL, 'c'}, {"check", no_argument, NULL, 'k'},
	    {"version", no_argument, NULL, 'V'},      {"compliance", no_argument, NULL, 'C'},
	    {"help", no_argument, NULL, 'h'},	      {0},
	};
	int o;
	while ((o = getopt_long(argc, argv, "c:Vh", opts, NULL)) != -1) {
		switch (o) {
		case 'c':
			config = optarg;
			break;
		case 'k':
			check = true;
			break;
		case 'V':
			printf("parleyd %s\n", PARLEY_VERSION);
			return 0;
		case 'C':
			compliance_write(stdout);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "parleyd: unexpected argument '%s'\n", argv[optind]);
		return 2;
	}
	if (!config)
		config = "parley.conf";
	char err[1024];
	struct config cfg;
	if (config_load(config, &cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "parleyd: %s\n", err);
		return 1;
	}
	if (check) {
		for (size_t i = 0; i < cfg.n_hosts; i++) {
			SSL_CTX *ctx = tls_ctx_new(&cfg.hosts[i], err, sizeof(err));
			if (!ctx) {
				fprintf(stderr, "parleyd: %s: %s\n", cfg.hosts[i].domain, err);
				config_free(&cfg);
				return 1;
			}
			tls_ctx_free(ctx);
		}
		printf("%s: configuration OK (%zu host%s)\n", cfg.path, cfg.n_hosts,
		       cfg.n_hosts == 1 ? "" : "s");
		config_free(&cfg);
		return 0;
	}
	if (ensure_certs(&cfg) < 0) {
		config_free(&cfg);
		return 1;
	}
	config_free(&cfg);

	/* Signals are taken by the main thread with sigwait; workers never see
	 * them. SIGPIPE is ignored: writes use MSG_NOSIGNAL or fail with EPIPE. */
	signal(SIGPIPE, SIG_IGN);
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);

	if (server_start(config, err, sizeof(err)) < 0) {
		fprintf(stderr, "parleyd: %s\n", err);
		return 1;
	}
	LOG(LOG_INFO, "parleyd %s started: %u worker%s, config %s, store %s", PARLEY_VERSION,
	    srv->n_workers, srv->n_workers == 1 ? "" : "s", srv->cfg.path, srv->cfg.store_path);
	for (size_t i = 0; i < srv->n_hosts; i++)
		LOG(LOG_INFO, "serving %s (c2s %u, direct TLS %u)", srv->hosts[i].domain,
		    srv->cfg.c2s_port, srv->cfg.c2s_tls_port);
	server_run();
	return 0;
}
