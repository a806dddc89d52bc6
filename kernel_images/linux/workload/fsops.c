/* Files: mkdir, create and write a file, read it back, and read /proc. */
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "workload.h"

int main(void)
{
	static const char text[] = "written by fsops\n";
	char buf[256];
	struct stat st;
	ssize_t n;
	int fd;

	check("fsops", "mkdir /tmp/work", mkdir("/tmp/work", 0755) == 0);
	check("fsops", "stat /tmp/work is a directory",
	      stat("/tmp/work", &st) == 0 && S_ISDIR(st.st_mode));
	fd = open("/tmp/work/note.txt", O_WRONLY | O_CREAT | O_TRUNC, 0644);
	check("fsops", "create /tmp/work/note.txt", fd >= 0);
	n = write(fd, text, sizeof(text) - 1);
	check("fsops", "write 17 bytes", n == (ssize_t)sizeof(text) - 1);
	close(fd);
	fd = open("/tmp/work/note.txt", O_RDONLY);
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	check("fsops", "read the same 17 bytes back",
	      n == (ssize_t)sizeof(text) - 1 && memcmp(buf, text, n) == 0);
	fd = open("/proc/self/stat", O_RDONLY);
	n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
	close(fd);
	if (n > 0) {
		buf[n] = 0;
		*strchr(buf, ')') = 0;		/* "pid (comm" */
		printf("fsops: /proc/self/stat begins \"%s)\"\n", buf);
	}
	check("fsops", "read /proc/self/stat", n > 0);
	return failures;
}
