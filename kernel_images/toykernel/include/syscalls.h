/*
 * syscalls.h - system call numbers, the sys_* functions, and the int $0x80
 * wrappers tasks use to call them "from outside".
 *
 * Numbers are Linux x86_64's where a call of the same kind exists (sys_sleep
 * sits in nanosleep's slot, sys_wait in wait4's).  Every sys_* is also an
 * ordinary C function with the SysV ABI: the host calls them directly too.
 */
#ifndef _TOY_SYSCALLS_H
#define _TOY_SYSCALLS_H

#include "types.h"

#define __NR_write	1
#define __NR_sleep	35
#define __NR_getpid	39
#define __NR_execve	59
#define __NR_exit	60
#define __NR_wait	61
#define __NR_mkdir	83
#define NR_syscalls	84

#ifndef __ASSEMBLY__

typedef long (*sys_call_ptr_t)(unsigned long, unsigned long, unsigned long);
extern const sys_call_ptr_t sys_call_table[NR_syscalls];

long sys_ni_syscall(void);
long sys_write(unsigned int fd, const char *buf, size_t count);
long sys_sleep(unsigned long ticks);
long sys_getpid(void);
long sys_execve(const char *filename);
long __noreturn sys_exit(long code);
long sys_wait(void);
long sys_mkdir(const char *pathname);

/* fs */
struct task_struct;
long do_execve(const char *filename);
int flush_old_exec(struct task_struct *tsk, const char *filename);

/*
 * The way in from a task: int $0x80 with the number in %rax and arguments in
 * %rdi, %rsi, %rdx; system_call saves and restores every other register.
 */
static inline long _syscall3(long nr, unsigned long a0, unsigned long a1, unsigned long a2)
{
	long ret;

	asm volatile("int $0x80"
		     : "=a" (ret)
		     : "0" (nr), "D" (a0), "S" (a1), "d" (a2)
		     : "memory", "cc");
	return ret;
}

static inline long getpid(void)
{
	return _syscall3(__NR_getpid, 0, 0, 0);
}

static inline long write(unsigned int fd, const char *buf, size_t count)
{
	return _syscall3(__NR_write, fd, (unsigned long)buf, count);
}

static inline long mkdir(const char *pathname)
{
	return _syscall3(__NR_mkdir, (unsigned long)pathname, 0, 0);
}

static inline long execve(const char *filename)
{
	return _syscall3(__NR_execve, (unsigned long)filename, 0, 0);
}

static inline void __noreturn _exit(long code)
{
	_syscall3(__NR_exit, code, 0, 0);
	__builtin_unreachable();
}

static inline long sleep(unsigned long ticks)
{
	return _syscall3(__NR_sleep, ticks, 0, 0);
}

static inline long wait(void)
{
	return _syscall3(__NR_wait, 0, 0, 0);
}

#endif /* __ASSEMBLY__ */
#endif /* _TOY_SYSCALLS_H */
