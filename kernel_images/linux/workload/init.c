/*
 * /init of kpemu's Linux guest: mounts /proc, /sys and a tmpfs on /tmp, runs
 * each program of the workload in turn (fork + execve + waitpid), and ends the
 * machine with the number of programs that failed, written to isa-debug-exit
 * (port 0xf4, reached through ioperm) -- kpemu exits with that code, QEMU with
 * (code << 1) | 1.  A PC without the device powers off through reboot(2).
 */
#include <stdlib.h>
#include <sys/io.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "workload.h"

#define DEBUG_EXIT_PORT 0xf4

static const char *const programs[][3] = {
	{"/bin/fsops", NULL},
	{"/bin/forkexec", NULL},
	{"/bin/pipes", NULL},
	{"/bin/fib", "27", NULL},
	{"/bin/sleeper", "20", NULL},
};

static int run(const char *const argv[])
{
	int status;
	pid_t pid = fork();

	if (pid < 0)
		return -1;
	if (pid == 0) {
		execve(argv[0], (char *const *)argv, (char *const[]){"PATH=/bin", NULL});
		_exit(127);
	}
	if (waitpid(pid, &status, 0) != pid)
		return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int main(void)
{
	unsigned int i;
	int code;

	printf("init: pid %d, kpemu workload starting\n", (int)getpid());
	check("init", "mount proc on /proc", mount("proc", "/proc", "proc", 0, NULL) == 0);
	check("init", "mount sysfs on /sys", mount("sysfs", "/sys", "sysfs", 0, NULL) == 0);
	check("init", "mount tmpfs on /tmp", mount("tmpfs", "/tmp", "tmpfs", 0, "size=1m") == 0);
	for (i = 0; i < sizeof(programs) / sizeof(programs[0]); i++) {
		code = run(programs[i]);
		printf("init: %s exited with %d\n", programs[i][0], code);
		if (code != 0)
			failures++;
	}
	printf("init: workload done, %d failed; powering off with code %d\n", failures, failures);
	fflush(stdout);
	if (ioperm(DEBUG_EXIT_PORT, 1, 1) == 0)
		outb(failures, DEBUG_EXIT_PORT);
	sync();
	reboot(RB_POWER_OFF);
	return failures;
}
