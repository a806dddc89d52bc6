/*
 * /init of kpemu's Linux guest: mounts /proc, /sys and a tmpfs on /tmp, runs
 * each program of the workload in turn (fork + execve + waitpid), and ends the
 * machine with the number of programs that failed, written to isa-debug-exit
 * (port 0xf4, reached through ioperm) -- kpemu exits with that code, QEMU with
 * (code << 1) | 1.  A PC without the device powers off through reboot(2).
 *
 * With `kpemu_tracefs=1` on the kernel command line (Linux hands init each word
 * name=value it does not know as an environment variable, and reading the
 * environment takes no system call: without the word init makes the same calls as
 * before) init also traces the workload with the kernel's own kprobe_events: it
 * mounts tracefs, writes the definitions of /etc/kprobe_events into kprobe_events,
 * sets the "counter" trace clock (the order of the events, the same on every
 * machine), enables the events, runs the workload, disables them and prints the
 * `trace` file, every line prefixed "trace: ", before it powers off.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <sys/io.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "workload.h"

#define DEBUG_EXIT_PORT 0xf4
#define TRACEFS "/sys/kernel/tracing"
#define TRACEFS_SWITCH "kpemu_tracefs"
#define EVENT_DEFINITIONS "/etc/kprobe_events"
#define TRACE_PREFIX "trace: "

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

/* Read up to size - 1 bytes of a file, NUL-terminated; -1 if it cannot be read. */
static ssize_t read_file(const char *path, char *buf, size_t size)
{
	ssize_t n, total = 0;
	int fd = open(path, O_RDONLY);

	if (fd < 0)
		return -1;
	while (total < (ssize_t)size - 1 && (n = read(fd, buf + total, size - 1 - total)) > 0)
		total += n;
	close(fd);
	buf[total] = 0;
	return total;
}

/* Write text to a tracefs file in one write(2), as `echo TEXT > FILE` does. */
static int write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_TRUNC);
	ssize_t n = fd >= 0 ? write(fd, text, strlen(text)) : -1;

	if (fd >= 0)
		close(fd);
	return n == (ssize_t)strlen(text);
}

static void trace_start(void)
{
	static char definitions[4096];

	check("init", "mount tracefs on " TRACEFS,
	      mount("tracefs", TRACEFS, "tracefs", 0, NULL) == 0);
	check("init", "read " EVENT_DEFINITIONS,
	      read_file(EVENT_DEFINITIONS, definitions, sizeof(definitions)) > 0);
	check("init", "write them to kprobe_events",
	      write_file(TRACEFS "/kprobe_events", definitions));
	check("init", "trace clock counter", write_file(TRACEFS "/trace_clock", "counter"));
	check("init", "enable the kprobe events",
	      write_file(TRACEFS "/events/kprobes/enable", "1"));
}

/* Stop tracing first: printing the trace must not add to it. */
static void trace_print(void)
{
	char buf[512];
	size_t used = 0, lines = 0;
	ssize_t n;
	char *line, *end;
	int fd;

	check("init", "disable the kprobe events",
	      write_file(TRACEFS "/events/kprobes/enable", "0"));
	fd = open(TRACEFS "/trace", O_RDONLY);
	check("init", "open the trace", fd >= 0);
	while (fd >= 0 && (n = read(fd, buf + used, sizeof(buf) - 1 - used)) > 0) {
		used += n;
		buf[used] = 0;
		for (line = buf; (end = strchr(line, '\n')) != NULL; line = end + 1) {
			*end = 0;
			printf(TRACE_PREFIX "%s\n", line);
			lines++;
		}
		used = strlen(line);
		memmove(buf, line, used + 1);
		if (used == sizeof(buf) - 1) {		/* a line longer than buf: print a part */
			printf(TRACE_PREFIX "%s\n", buf);
			used = 0;
		}
	}
	if (fd >= 0)
		close(fd);
	printf("init: %zu lines of trace\n", lines);
	fflush(stdout);
}

int main(void)
{
	unsigned int i;
	int code, tracing;

	printf("init: pid %d, kpemu workload starting\n", (int)getpid());
	check("init", "mount proc on /proc", mount("proc", "/proc", "proc", 0, NULL) == 0);
	check("init", "mount sysfs on /sys", mount("sysfs", "/sys", "sysfs", 0, NULL) == 0);
	check("init", "mount tmpfs on /tmp", mount("tmpfs", "/tmp", "tmpfs", 0, "size=1m") == 0);
	tracing = getenv(TRACEFS_SWITCH) != NULL && strcmp(getenv(TRACEFS_SWITCH), "1") == 0;
	if (tracing)
		trace_start();
	for (i = 0; i < sizeof(programs) / sizeof(programs[0]); i++) {
		code = run(programs[i]);
		printf("init: %s exited with %d\n", programs[i][0], code);
		if (code != 0)
			failures++;
	}
	if (tracing)
		trace_print();
	printf("init: workload done, %d failed; powering off with code %d\n", failures, failures);
	fflush(stdout);
	if (ioperm(DEBUG_EXIT_PORT, 1, 1) == 0)
		outb(failures, DEBUG_EXIT_PORT);
	sync();
	reboot(RB_POWER_OFF);
	return failures;
}
