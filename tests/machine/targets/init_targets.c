/*
 * init_targets: a module with all that insmod and rmmod run -- two constructors (one with a
 * priority, which runs first), init_module() and cleanup_module().  Each leaves its letter
 * in init_trace, and init and cleanup print a line, so a test sees what ran and in which
 * order.
 */
extern int printk(const char *fmt, ...);

char init_trace[16];
static int ntrace;

static void mark(char c)
{
	if (ntrace < (int)sizeof(init_trace) - 1)
		init_trace[ntrace++] = c;
}

__attribute__((constructor)) static void ctor_default(void)
{
	mark('c');
}

__attribute__((constructor(101))) static void ctor_first(void)
{
	mark('a');
}

__attribute__((noinline)) int init_helper(int ret)
{
	mark('h');
	return ret;
}

int init_module(void)
{
	mark('i');
	printk("init_targets: init\n");
	return init_helper(0);
}

void cleanup_module(void)
{
	mark('x');
	printk("init_targets: cleanup\n");
}
