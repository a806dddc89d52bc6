/* Recursion: fib(n) the slow way (long enough for timer ticks to land in user code),
 * checked against the iterative value, and the number of calls it took. */
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
	long value = fib(n), a = 0, b = 1;

	for (int i = 0; i < n; i++) {
		long t = a + b;

		a = b;
		b = t;
	}
	printf("fib: fib(%d) = %ld in %ld calls\n", n, value, calls);
	check("fib", "the recursive value is the iterative one", value == a);
	return failures;
}
