/*
 * types.h - the few C types and compiler helpers a freestanding kernel needs.
 *
 * Built with -nostdinc: nothing here comes from a libc or from gcc's own headers,
 * so the image depends only on the compiler, not on what happens to be installed.
 */
#ifndef _TOY_TYPES_H
#define _TOY_TYPES_H

typedef unsigned char		u8;
typedef unsigned short		u16;
typedef unsigned int		u32;
typedef unsigned long		u64;
typedef signed char		s8;
typedef short			s16;
typedef int			s32;
typedef long			s64;

typedef unsigned long		size_t;
typedef long			ssize_t;
typedef _Bool			bool;

#define true	1
#define false	0
#define NULL	((void *)0)

/* Variable arguments straight from the compiler (no <stdarg.h> under -nostdinc). */
typedef __builtin_va_list	va_list;
#define va_start(ap, last)	__builtin_va_start(ap, last)
#define va_arg(ap, type)	__builtin_va_arg(ap, type)
#define va_end(ap)		__builtin_va_end(ap)

#define offsetof(type, member)	__builtin_offsetof(type, member)
#define ARRAY_SIZE(a)		(sizeof(a) / sizeof((a)[0]))

/*
 * noinline: every function the host may probe by name must exist as a real
 * function with a real call to it, or a kprobe on it would never fire.
 */
#define noinline		__attribute__((__noinline__))
#define __noreturn		__attribute__((__noreturn__))
#define __aligned(x)		__attribute__((__aligned__(x)))
#define __section(s)		__attribute__((__section__(s)))
#define __used			__attribute__((__used__))
#define __printf(a, b)		__attribute__((__format__(__printf__, a, b)))

/*
 * __kprobes: the kprobes blacklist, as in Linux.  Code that runs while a kprobe
 * trap is being handled (trap entry, the int3/debug handlers, the hypercall that
 * tells the host a task is going away) must never itself be probed.
 */
#define __kprobes		__section(".kprobes.text")

#define barrier()		asm volatile("" : : : "memory")
#define likely(x)		__builtin_expect(!!(x), 1)
#define unlikely(x)		__builtin_expect(!!(x), 0)

#endif /* _TOY_TYPES_H */
