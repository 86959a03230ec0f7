// edu-probe: drives QEMU's edu test device (1234:11e8) from inside a guest
// that received it by passthrough, through sysfs and /dev/uioN only.
// Checks, each printing one "edu-probe: ..." line:
//   id       identification register reads 0x??0000ed
//   mmio     liveness register (reads back the inverse) through BAR0 mmap
//   fact     the factorial unit computes 10! = 3628800
//   dma      a RAM -> device -> RAM round trip of 2048 bytes matches
//   intx     N interrupts raised by the device arrive through uio (INTx)
// Usage: edu-probe BDF UIO_DEV [N_IRQS]   (device bound to uio_pci_generic)
// Exit status 0 only if every check passed. QEMU 7.2's edu rejects DMA that
// ends exactly at its buffer's end, so transfers stay at 2048 bytes.
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

enum {
	EDU_ID = 0x00, EDU_LIVE = 0x04, EDU_FACT = 0x08, EDU_STATUS = 0x20,
	EDU_IRQ_STATUS = 0x24, EDU_IRQ_RAISE = 0x60, EDU_IRQ_ACK = 0x64,
	EDU_DMA_SRC = 0x80, EDU_DMA_DST = 0x88, EDU_DMA_LEN = 0x90, EDU_DMA_CMD = 0x98,
	EDU_BUF = 0x40000, DMA_LEN = 2048, BAR_SIZE = 1 << 20,
};

static volatile uint8_t *bar;

static void die(const char *what) {
	printf("edu-probe: FAIL %s (%s)\n", what, errno ? strerror(errno) : "check failed");
	exit(1);
}
static uint32_t get32(unsigned off) { return *(volatile uint32_t *)(bar + off); }
static void put32(unsigned off, uint32_t v) { *(volatile uint32_t *)(bar + off) = v; }
static void put64(unsigned off, uint64_t v) { *(volatile uint64_t *)(bar + off) = v; }

static int wait_clear(unsigned off, uint32_t bit) {
	for (int i = 0; i < 200000; i++) {
		if (!(get32(off) & bit)) return 1;
		usleep(50);
	}
	return 0;
}

// Guest-physical address of a locked page, from /proc/self/pagemap.
static uint64_t guest_phys(void *p) {
	uint64_t entry = 0;
	int fd = open("/proc/self/pagemap", O_RDONLY);
	off_t at = (off_t)((uintptr_t)p / 4096) * 8;
	if (fd < 0 || pread(fd, &entry, sizeof entry, at) != sizeof entry) die("pagemap");
	close(fd);
	uint64_t pfn = entry & ((1ULL << 55) - 1);
	if (!(entry >> 63) || !pfn) die("pagemap: page absent or PFN hidden");
	return pfn * 4096 + ((uintptr_t)p & 4095);
}

static void dma(uint64_t src, uint64_t dst, int to_ram) {
	put64(EDU_DMA_SRC, src);
	put64(EDU_DMA_DST, dst);
	put64(EDU_DMA_LEN, DMA_LEN);
	put64(EDU_DMA_CMD, 1 | (to_ram ? 2 : 0));
	if (!wait_clear(EDU_DMA_CMD, 1)) die("dma: transfer never completed");
}

static void check_dma(void) {
	uint8_t *src = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_LOCKED, -1, 0);
	uint8_t *dst = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_LOCKED, -1, 0);
	if (src == MAP_FAILED || dst == MAP_FAILED) die("dma: buffers");
	for (int i = 0; i < 4096; i++) {
		src[i] = (uint8_t)(i * 7 + 3);
		dst[i] = 0;
	}
	uint64_t ps = guest_phys(src), pd = guest_phys(dst);
	dma(ps, EDU_BUF, 0);
	dma(EDU_BUF, pd, 1);
	for (int i = 0; i < DMA_LEN; i++) {
		if (src[i] != dst[i]) {
			printf("edu-probe: dma: byte %d is %#x, sent %#x (RAM %#llx -> RAM %#llx)\n", i, dst[i], src[i],
			       (unsigned long long)ps, (unsigned long long)pd);
			die("dma: data came back different");
		}
	}
	printf("edu-probe: dma ok (%d bytes, RAM %#llx -> device -> RAM %#llx)\n", DMA_LEN,
	       (unsigned long long)ps, (unsigned long long)pd);
}

// uio_pci_generic masks INTx in its handler (command register bit 10);
// userspace unmasks by clearing that bit again.
static void intx_unmask(int cfg) {
	uint16_t cmd;
	if (pread(cfg, &cmd, 2, 4) != 2) die("intx: config read");
	cmd &= ~0x400;
	if (pwrite(cfg, &cmd, 2, 4) != 2) die("intx: config write");
}

static void check_intx(int cfg, const char *uio, int n) {
	int fd = open(uio, O_RDWR);
	if (fd < 0) die("intx: open uio");
	for (int i = 0; i < n; i++) {
		uint32_t count;
		intx_unmask(cfg);
		put32(EDU_IRQ_RAISE, 1);
		struct pollfd p = { .fd = fd, .events = POLLIN };
		if (poll(&p, 1, 5000) != 1) die("intx: interrupt did not arrive within 5 s");
		if (read(fd, &count, 4) != 4) die("intx: uio read");
		put32(EDU_IRQ_ACK, get32(EDU_IRQ_STATUS));
	}
	close(fd);
	printf("edu-probe: intx ok (%d interrupts)\n", n);
}

int main(int argc, char **argv) {
	if (argc < 3) {
		fprintf(stderr, "usage: edu-probe BDF UIO_DEV [N_IRQS]\n");
		return 2;
	}
	char path[256];
	snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/config", argv[1]);
	int cfg = open(path, O_RDWR);
	uint16_t cmd;
	if (cfg < 0 || pread(cfg, &cmd, 2, 4) != 2) die("config read");
	cmd |= 0x6; // memory space, bus master
	if (pwrite(cfg, &cmd, 2, 4) != 2) die("config write");
	snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/resource0", argv[1]);
	int r0 = open(path, O_RDWR | O_SYNC);
	if (r0 < 0) die("open resource0");
	bar = mmap(0, BAR_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, r0, 0);
	if (bar == MAP_FAILED) die("mmap resource0");

	uint32_t id = get32(EDU_ID);
	if ((id & 0xffff) != 0xed) die("id: not an edu device");
	printf("edu-probe: id ok (%#010x)\n", id);
	put32(EDU_LIVE, 0x5a5aa5a5);
	if (get32(EDU_LIVE) != ~0x5a5aa5a5u) die("mmio: liveness register");
	printf("edu-probe: mmio ok\n");
	put32(EDU_FACT, 10);
	if (!wait_clear(EDU_STATUS, 1) || get32(EDU_FACT) != 3628800) die("fact: 10! != 3628800");
	printf("edu-probe: fact ok\n");
	// DMA first: closing the uio device makes uio_pci_generic clear Bus Master.
	check_dma();
	check_intx(cfg, argv[2], argc > 3 ? atoi(argv[3]) : 10);
	printf("edu-probe: all checks passed\n");
	return 0;
}
