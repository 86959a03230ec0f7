// tapfd: runs a command with an open tap descriptor, as an orchestrator
// passes one to `vfio-vmm remote add-net fd=N` (busybox sh cannot open a tap).
// Usage: tapfd NAME FD COMMAND [ARG...]
// Opens /dev/net/tun as tap NAME (created if missing) with IFF_TAP |
// IFF_NO_PI | IFF_VNET_HDR, moves it to descriptor FD and execs COMMAND.
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: tapfd NAME FD COMMAND [ARG...]\n");
        return 2;
    }
    int fd = open("/dev/net/tun", O_RDWR);
    if (fd < 0) {
        perror("tapfd: /dev/net/tun");
        return 1;
    }
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    strncpy(ifr.ifr_name, argv[1], IFNAMSIZ - 1);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
        perror("tapfd: TUNSETIFF");
        return 1;
    }
    int want = atoi(argv[2]);
    if (fd != want && (dup2(fd, want) < 0 || close(fd) < 0)) {
        perror("tapfd: dup2");
        return 1;
    }
    execvp(argv[3], argv + 3);
    perror("tapfd: exec");
    return 127;
}
