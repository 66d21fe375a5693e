/*
 * load: the initramfs's module loader for the e2e run (built static on the controller).
 *
 *   load <case> <file> <name> [compressed]
 *
 * Calls finit_module(2) on <file>, with MODULE_INIT_COMPRESSED_FILE when asked (the kernel itself
 * decompresses, as kmod does on 6.1+ kernels with CONFIG_MODULE_DECOMPRESS), then, on success,
 * delete_module(2) of <name> ("-": keep it) so that the next case may load a module of the same name. Prints one line:
 *   E2E <case> loaded
 *   E2E <case> rejected errno=<n> <strerror>
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef MODULE_INIT_COMPRESSED_FILE
#define MODULE_INIT_COMPRESSED_FILE 4
#endif

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: load <case> <file> <name> [compressed]\n");
		return 2;
	}
	int flags = (argc > 4 && strcmp(argv[4], "compressed") == 0) ? MODULE_INIT_COMPRESSED_FILE : 0;
	int fd = open(argv[2], O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		printf("E2E %s error open %s: %s\n", argv[1], argv[2], strerror(errno));
		return 1;
	}
	if (syscall(SYS_finit_module, fd, "", flags) != 0) {
		int err = errno;
		printf("E2E %s rejected errno=%d %s\n", argv[1], err, strerror(err));
		fflush(stdout);
		return 1;
	}
	printf("E2E %s loaded\n", argv[1]);
	fflush(stdout);
	if (strcmp(argv[3], "-") != 0 && syscall(SYS_delete_module, argv[3], O_NONBLOCK) != 0)
		printf("E2E %s note: could not unload %s: %s\n", argv[1], argv[3], strerror(errno));
	return 0;
}
