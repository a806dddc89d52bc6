/*
 * namei.c - mkdir on a tiny in-memory directory: a table of 16 names.
 */
#include "types.h"
#include "irqflags.h"
#include "kernel.h"
#include "syscalls.h"

#define NR_DENTRIES	16
#define DNAME_LEN	32

static char dentry_names[NR_DENTRIES][DNAME_LEN];
static int nr_dentries;

long sys_mkdir(const char *pathname)
{
	unsigned long flags;
	size_t len;
	long err;
	int i;

	if (!pathname || !pathname[0])
		return -ENOENT;
	len = strnlen(pathname, DNAME_LEN);
	if (len == DNAME_LEN)
		return -ENAMETOOLONG;

	local_irq_save(flags);		/* the table is shared by every task */
	for (i = 0; i < nr_dentries; i++) {
		if (!strcmp(dentry_names[i], pathname)) {
			err = -EEXIST;
			goto out;
		}
	}
	if (nr_dentries == NR_DENTRIES) {
		err = -ENOSPC;
		goto out;
	}
	strlcpy(dentry_names[nr_dentries++], pathname, DNAME_LEN);
	err = 0;
out:
	local_irq_restore(flags);
	return err;
}
