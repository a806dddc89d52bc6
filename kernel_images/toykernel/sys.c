/*
 * sys.c - the small system calls and the system call table.
 */
#include "types.h"
#include "kernel.h"
#include "sched.h"
#include "syscalls.h"

long sys_ni_syscall(void)
{
	return -ENOSYS;
}

long sys_getpid(void)
{
	return current->pid;
}

long sys_write(unsigned int fd, const char *buf, size_t count)
{
	if (fd != 1 && fd != 2)
		return -EBADF;
	console_write(buf, count);
	return count;
}

/* system_call (entry.S) calls through this table: sys_call_table[%rax]. */
#define SYSCALL(nr, fn)	[nr] = (sys_call_ptr_t)(fn)

const sys_call_ptr_t sys_call_table[NR_syscalls] = {
	[0 ... NR_syscalls - 1] = (sys_call_ptr_t)sys_ni_syscall,
	SYSCALL(__NR_write, sys_write),
	SYSCALL(__NR_sleep, sys_sleep),
	SYSCALL(__NR_getpid, sys_getpid),
	SYSCALL(__NR_execve, sys_execve),
	SYSCALL(__NR_exit, sys_exit),
	SYSCALL(__NR_wait, sys_wait),
	SYSCALL(__NR_mkdir, sys_mkdir),
};
