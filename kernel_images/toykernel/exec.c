/*
 * exec.c - execve, as far as a kernel without user space can take it: the
 * program "runs" in the same kernel thread, which takes the program's name.
 */
#include "types.h"
#include "kernel.h"
#include "sched.h"
#include "syscalls.h"

#define PATH_MAX	64

/* The old image goes: thread state first (flush_thread), then the name. */
int flush_old_exec(struct task_struct *tsk, const char *filename)
{
	const char *name = filename, *p;
	int i;

	flush_thread();

	for (p = filename; *p; p++)
		if (*p == '/')
			name = p + 1;
	for (i = 0; i < TASK_COMM_LEN - 1 && name[i]; i++)
		tsk->comm[i] = name[i];
	tsk->comm[i] = '\0';
	return 0;
}

long do_execve(const char *filename)
{
	size_t len;

	if (!filename || filename[0] != '/')
		return -ENOENT;
	len = strnlen(filename, PATH_MAX);
	if (len == PATH_MAX)
		return -ENAMETOOLONG;
	return flush_old_exec(current, filename);
}

long sys_execve(const char *filename)
{
	return do_execve(filename);
}
