/*
 * init_fails: a module whose init fails after its constructor has run: init_module()
 * returns INIT_RET (-ENODEV unless built with -DINIT_RET=...), or faults when built with
 * -DINIT_FAULT.
 */
extern int printk(const char *fmt, ...);

#ifndef INIT_RET
#define INIT_RET (-19)		/* -ENODEV */
#endif

__attribute__((constructor)) static void fails_ctor(void)
{
	printk("init_fails: ctor\n");
}

int init_module(void)
{
	printk("init_fails: init\n");
#ifdef INIT_FAULT
	__builtin_trap();
#endif
	return INIT_RET;
}

void cleanup_module(void)
{
	printk("init_fails: cleanup\n");
}
