/*
 * kernel.h - printk, strings, errno, and the odds and ends everything uses.
 */
#ifndef _TOY_KERNEL_H
#define _TOY_KERNEL_H

#include "types.h"

struct pt_regs;

/* errno values (Linux's numbers); system calls return them negated */
#define ENOENT		2
#define EBADF		9
#define ECHILD		10
#define EAGAIN		11
#define EEXIST		17
#define EINVAL		22
#define ENOSPC		28
#define ENAMETOOLONG	36
#define ENOSYS		38

/* printk.c */
void serial_init(void);
void console_write(const char *s, size_t len);
int printk(const char *fmt, ...) __printf(1, 2);

/* vsprintf.c */
int vsnprintf(char *buf, size_t size, const char *fmt, va_list args);
int snprintf(char *buf, size_t size, const char *fmt, ...) __printf(3, 4);
unsigned long simple_strtoul(const char *cp, const char **endp, unsigned int base);

/* string.c */
void *memset(void *s, int c, size_t n);
void *memcpy(void *dest, const void *src, size_t n);
void *memmove(void *dest, const void *src, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
size_t strnlen(const char *s, size_t max);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);
size_t strlcpy(char *dest, const char *src, size_t size);

/* traps.c */
void trap_init(void);
void __noreturn die(const char *str, struct pt_regs *regs, long vector);

/* irq.c, time.c */
void init_IRQ(void);
void time_init(void);
extern volatile unsigned long jiffies;
extern unsigned int timer_hz;
extern unsigned long boot_tsc;

/* main.c */
void __noreturn machine_power_off(int status);

#define time_after_eq(a, b)	((long)((a) - (b)) >= 0)
#define time_before(a, b)	((long)((a) - (b)) < 0)

#endif /* _TOY_KERNEL_H */
