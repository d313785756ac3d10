/* What the fuzz targets in this folder share: the libFuzzer entry point
 * (declared here for -Wmissing-prototypes and for replay_main.c, which
 * calls it on every corpus file in the gcc build) and the check that
 * turns a broken oracle into a crash libFuzzer reports. */
#ifndef PARLEY_FUZZ_H
#define PARLEY_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Unlike ASSERT() in core/log.h this is for the oracle, on input: a
 * failure is the finding, so it aborts with the line that says which. */
#define FUZZ_CHECK(c)                                                                              \
	do {                                                                                       \
		if (!(c)) {                                                                        \
			fprintf(stderr, "fuzz oracle failed: %s (%s:%d)\n", #c, __FILE__,          \
				__LINE__);                                                         \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

#endif
