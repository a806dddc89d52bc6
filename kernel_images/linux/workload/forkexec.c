/* Processes: fork, execve in the child, waitpid for its exit status. */
#include <stdlib.h>
#include <sys/wait.h>

#include "workload.h"

int main(int argc, char **argv)
{
	int status = -1;
	pid_t child;

	if (argc > 1) {			/* the exec'd child */
		printf("forkexec: child pid %d exec'd with \"%s\", exiting with 42\n",
		       (int)getpid(), argv[1]);
		fflush(stdout);
		return 42;
	}
	child = fork();
	if (child == 0) {
		execl("/bin/forkexec", "forkexec", "as-child", (char *)NULL);
		_exit(127);
	}
	check("forkexec", "fork", child > 0);
	check("forkexec", "waitpid", waitpid(child, &status, 0) == child);
	printf("forkexec: parent pid %d saw child pid %d exit with %d\n", (int)getpid(),
	       (int)child, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	check("forkexec", "child's exit status is 42", WIFEXITED(status) &&
	      WEXITSTATUS(status) == 42);
	return failures;
}
