/* libFuzzer target: the configuration loader (src/server/config.c, on
 * libyaml). The input is the whole file.
 *
 * Oracles: no crash, no leak; on failure one error line and a zeroed
 * config (config.h); on success every host is found by its own domain and
 * a config may always be "reloaded" onto itself. */
#include "fuzz.h"

#include <fcntl.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "server/config.h"

/* config_load() takes a path and resolves it (realpath), so the input
 * goes into one real file, made once per process. */
static char path[4096];

static void remove_file(void)
{
	unlink(path);
}

static void init(void)
{
	if (path[0])
		return;
	const char *tmp = getenv("TMPDIR");
	snprintf(path, sizeof path, "%s/parley-fuzz-config-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
	int fd = mkstemp(path);
	FUZZ_CHECK(fd >= 0);
	close(fd);
	atexit(remove_file);
	/* Errors are the expected outcome; do not log them by the million. */
	log_set_level(LOG_ERROR);
}

static void write_input(const uint8_t *data, size_t size)
{
	int fd = open(path, O_WRONLY | O_TRUNC);
	FUZZ_CHECK(fd >= 0);
	while (size > 0) {
		ssize_t n = write(fd, data, size);
		FUZZ_CHECK(n > 0);
		data += n;
		size -= (size_t)n;
	}
	close(fd);
}

static bool all_zero(const void *p, size_t n)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < n; i++)
		if (b[i])
			return false;
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config c;
	char err[512];

	init();
	write_input(data, size);
	memset(&c, 0xa5, sizeof c);
	if (config_load(path, &c, err, sizeof err) != 0) {
		FUZZ_CHECK(err[0] != '\0' && strchr(err, '\n') == NULL);
		FUZZ_CHECK(all_zero(&c, sizeof c));
		config_free(&c);
		return 0;
	}
	FUZZ_CHECK(c.path != NULL && c.dir != NULL && c.store_path != NULL);
	for (size_t i = 0; i < c.n_hosts; i++) {
		const struct host_conf *h = config_host(&c, c.hosts[i].domain);
		FUZZ_CHECK(h != NULL && strcmp(h->domain, c.hosts[i].domain) == 0);
	}
	FUZZ_CHECK(config_check_reload(&c, &c, err, sizeof err) == 0);
	config_free(&c);
	return 0;
}
