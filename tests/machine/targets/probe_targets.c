/*
 * probe_targets: a module for kpemu's tests, built with the kernel's flags and loaded
 * with m.load_module() like insmod.  Each function exists to exercise one thing:
 * calls into the kernel, data, strings, and every kind of guest fault.
 */
extern int printk(const char *fmt, ...);
extern long fib(long n);

long mod_counter;
static const char greeting[] = "hello from probe_targets";

long mod_fib_plus(long n, long k)
{
	return fib(n) + k;
}

long mod_strlen(const char *s)
{
	long n = 0;

	while (s[n])
		n++;
	return n;
}

long mod_bump(void)
{
	return ++mod_counter;
}

long mod_greet(void)
{
	return printk("%s\n", greeting);
}

long mod_read(const volatile long *p)
{
	return *p;
}

long mod_div(long a, long b)
{
	return a / b;
}

void mod_ud2(void)
{
	__builtin_trap();
}

long mod_spin(void)
{
	for (;;)
		__asm__ volatile("" ::: "memory");
}

unsigned long mod_rdtsc(void)
{
	unsigned int lo, hi;

	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((unsigned long)hi << 32) | lo;
}
