/* A pipe between two processes: the child writes lines, the parent counts them. */
#include <stdlib.h>
#include <sys/wait.h>

#include "workload.h"

#define LINES 5

int main(void)
{
	char buf[512];
	int fds[2], status = -1, lines = 0;
	ssize_t n, total = 0;
	pid_t child;

	check("pipes", "pipe", pipe(fds) == 0);
	child = fork();
	if (child == 0) {
		close(fds[0]);
		for (int i = 0; i < LINES; i++) {
			int len = snprintf(buf, sizeof(buf), "line %d from pid %d\n", i,
					   (int)getpid());
			if (write(fds[1], buf, len) != len)
				_exit(1);
		}
		_exit(0);
	}
	close(fds[1]);
	while ((n = read(fds[0], buf, sizeof(buf))) > 0) {
		total += n;
		for (ssize_t i = 0; i < n; i++)
			lines += buf[i] == '\n';
	}
	waitpid(child, &status, 0);
	printf("pipes: parent read %d lines, %d bytes from child pid %d\n", lines, (int)total,
	       (int)child);
	check("pipes", "5 lines through the pipe", lines == LINES);
	check("pipes", "writer exited 0", WIFEXITED(status) && WEXITSTATUS(status) == 0);
	return failures;
}
