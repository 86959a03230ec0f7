// mktap: makes a persistent tap owned by a user, which that user may then
// attach to without CAP_NET_ADMIN: what `ip tuntap add dev NAME mode tap user
// UID` does (TUNSETIFF, TUNSETOWNER, TUNSETPERSIST). L1 has no iproute2, and
// its busybox tunctl is built without -u.
// Usage: mktap NAME UID   (as root; the tap stays down: `ip link set NAME up`)
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: mktap NAME UID\n");
        return 2;
    }
    int fd = open("/dev/net/tun", O_RDWR);
    if (fd < 0) {
        perror("mktap: /dev/net/tun");
        return 1;
    }
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
    strncpy(ifr.ifr_name, argv[1], IFNAMSIZ - 1);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
        perror("mktap: TUNSETIFF");
        return 1;
    }
    if (ioctl(fd, TUNSETOWNER, (unsigned long)atol(argv[2])) < 0) {
        perror("mktap: TUNSETOWNER");
        return 1;
    }
    if (ioctl(fd, TUNSETPERSIST, 1UL) < 0) {
        perror("mktap: TUNSETPERSIST");
        return 1;
    }
    return 0;
}
