/* getpid and sleep: nanosleep for N ms and check the monotonic clock moved by that much. */
#include <stdlib.h>
#include <time.h>

#include "workload.h"

int main(int argc, char **argv)
{
	int ms = argc > 1 ? atoi(argv[1]) : 20;
	struct timespec req = {ms / 1000, (ms % 1000) * 1000000L}, t0, t1;
	long elapsed_ms;

	printf("sleeper: pid %d, ppid %d, sleeping %d ms\n", (int)getpid(), (int)getppid(), ms);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	check("sleeper", "nanosleep", nanosleep(&req, NULL) == 0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	elapsed_ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
	check("sleeper", "slept at least that long", elapsed_ms >= ms);
	return failures;
}
