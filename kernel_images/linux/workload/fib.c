/* Recursion: fib(n) the slow way, and the number of calls it took. */
#include <stdlib.h>

#include "workload.h"

static long calls;

static long fib(int n)
{
	calls++;
	return n < 2 ? n : fib(n - 1) + fib(n - 2);
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 20;
	long value = fib(n);

	printf("fib: fib(%d) = %ld in %ld calls\n", n, value, calls);
	check("fib", "fib(20) = 6765", n != 20 || value == 6765);
	return failures;
}
