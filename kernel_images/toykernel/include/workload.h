/*
 * workload.h - the default workload init runs after HC_BOOT_DONE.
 */
#ifndef _TOY_WORKLOAD_H
#define _TOY_WORKLOAD_H

int workload_start(void);
int workload_check(void);

long fib(int n);
unsigned long busy_sum(unsigned long n);

#endif /* _TOY_WORKLOAD_H */
