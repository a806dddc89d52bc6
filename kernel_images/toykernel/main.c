/*
 * main.c - start_kernel: bring the PC up, start init, become the idle task.
 */
#include "types.h"
#include "io.h"
#include "irqflags.h"
#include "kernel.h"
#include "kpemu.h"
#include "page.h"
#include "sched.h"
#include "syscalls.h"
#include "workload.h"

/* The PVH boot information (QEMU builds it; kpemu builds the same at PA 0x7000). */
struct hvm_start_info {
	u32	magic;
	u32	version;
	u32	flags;
	u32	nr_modules;
	u64	modlist_paddr;
	u64	cmdline_paddr;
	u64	rsdp_paddr;
	u64	memmap_paddr;
	u32	memmap_entries;
	u32	reserved;
};
#define XEN_HVM_START_MAGIC_VALUE	0x336ec578

#define COMMAND_LINE_SIZE	256
#define KERNEL_MAP_SIZE		0x40000000UL	/* what the page tables map: 1 GiB */

unsigned long boot_tsc;			/* rdtsc at startup_64 (head.S) */
static char boot_command_line[COMMAND_LINE_SIZE];

void __noreturn machine_power_off(int status)
{
	local_irq_disable();
	outb(status, DEBUG_EXIT_PORT);	/* QEMU exits with (status << 1) | 1 */
	for (;;)
		asm volatile("hlt");
}

/* Copy the command line out of the boot information (physical addresses). */
static void setup_command_line(unsigned long bootinfo_pa)
{
	const struct hvm_start_info *si;

	if (!bootinfo_pa || bootinfo_pa >= KERNEL_MAP_SIZE) {
		printk("boot: no boot information\n");
		return;
	}
	si = __va(bootinfo_pa);
	if (si->magic != XEN_HVM_START_MAGIC_VALUE) {
		printk("boot: bad boot information magic %x\n", si->magic);
		return;
	}
	if (si->cmdline_paddr && si->cmdline_paddr < KERNEL_MAP_SIZE)
		strlcpy(boot_command_line, __va(si->cmdline_paddr), COMMAND_LINE_SIZE);
}

/* Words separated by spaces; hz=N is the only one we know. */
static void parse_args(void)
{
	const char *p = boot_command_line;
	char word[COMMAND_LINE_SIZE];

	while (*p) {
		const char *end;
		unsigned long hz;
		size_t len;

		while (*p == ' ')
			p++;
		if (!*p)
			break;
		for (len = 0; p[len] && p[len] != ' '; len++)
			word[len] = p[len];
		word[len] = '\0';
		p += len;

		if (!strncmp(word, "hz=", 3)) {
			hz = simple_strtoul(word + 3, &end, 10);
			if (*end || !hz || hz > 0xffffffffUL)
				printk("Invalid %s: ignored\n", word);
			else
				timer_hz = hz;
		} else {
			printk("Unknown boot option '%s': ignored\n", word);
		}
	}
}

/* pid 1: start the workload, wait for it, check it, power off. */
static int init(void *unused)
{
	struct task_struct *me = current;
	long exited;
	int failed;
	u64 tsc;

	printk("init[%d]: starting the workload\n", me->pid);
	kpemu_hypercall(HC_BOOT_DONE, 0, 0);	/* kpemu's m.boot() stops here */

	workload_start();
	exited = wait();
	failed = workload_check();

	tsc = rdtsc() - boot_tsc;
	printk("init: %ld tasks exited, %d failed, jiffies %lu, context switches %lu, "
	       "idle halts %lu, tsc delta %lu\n",
	       exited, failed, jiffies, nr_context_switches, idle_halts, tsc);
	machine_power_off(failed ? 1 : 0);
}

static noinline void __noreturn rest_init(void)
{
	kernel_thread(init, NULL, "init");
	cpu_idle();			/* the boot task becomes the idle task */
}

void __noreturn start_kernel(unsigned long bootinfo_pa)
{
	serial_init();
	printk("toykernel: x86_64 PC kernel for kpemu, preemptive, one CPU\n");
	setup_command_line(bootinfo_pa);
	printk("Command line: %s\n", boot_command_line);
	parse_args();

	trap_init();
	init_IRQ();
	time_init();
	rest_init();
}
