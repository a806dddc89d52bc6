/*
 * What the workload's programs share: one line of output per step, and a
 * check that counts failures.  Every program prints only what is the same on
 * every run (no addresses, no times), so two boots print the same bytes.
 */
#ifndef WORKLOAD_H
#define WORKLOAD_H

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int failures;

/* Print "<prog>: <what>: ok" or "...: FAILED (errno text)" and count it. */
static void check(const char *prog, const char *what, int ok)
{
	if (ok)
		printf("%s: %s: ok\n", prog, what);
	else {
		printf("%s: %s: FAILED (%s)\n", prog, what, strerror(errno));
		failures++;
	}
	fflush(stdout);
}

#endif
