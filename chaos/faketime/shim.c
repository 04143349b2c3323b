/*
 * shim.c: an LD_PRELOAD library that offsets and scales a process's wall
 * clock (CLOCK_REALTIME through clock_gettime, gettimeofday and time) while
 * it runs, for the chaos suite's clock faults on redis-server. The monotonic
 * clocks are untouched: Redis expires keys by the wall clock, which is the
 * clock under test.
 *
 * libfaketime makes Debian's redis-server hang at start (it clashes with the
 * statically linked jemalloc), so this shim does the least possible: no
 * allocation, no locks, no file reads per call. The control block is a
 * 32-byte file named by FAKETIME_SHIM_CTL, mapped read-only and written by
 * the test (internal/faketime) with a sequence counter:
 *
 *   int64  anchor_real_ns   real wall time at the last change
 *   int64  anchor_fake_ns   fake wall time at the last change
 *   double rate             fake seconds per real second; 0 means "no fault"
 *   uint64 seq              odd while the test is writing
 *
 * fake(now) = anchor_fake + (now - anchor_real) * rate.
 *
 * Build: gcc -shared -fPIC -O2 -o shim.so shim.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

struct ctl {
	volatile int64_t anchor_real_ns;
	volatile int64_t anchor_fake_ns;
	volatile double rate;
	volatile uint64_t seq;
};

static const struct ctl *ctl;
static int (*real_clock_gettime)(clockid_t, struct timespec *);

static void shim_init(void) __attribute__((constructor));
static void shim_init(void)
{
	real_clock_gettime = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT, "clock_gettime");
	const char *path = getenv("FAKETIME_SHIM_CTL");
	if (path == NULL)
		return;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	void *m = mmap(NULL, sizeof(struct ctl), PROT_READ, MAP_SHARED, fd, 0);
	close(fd);
	if (m != MAP_FAILED)
		ctl = (const struct ctl *)m;
}

/* real_now reads a clock without the shim (before the constructor ran too). */
static int real_now(clockid_t clk, struct timespec *ts)
{
	if (real_clock_gettime != NULL)
		return real_clock_gettime(clk, ts);
	return (int)syscall(SYS_clock_gettime, clk, ts);
}

/* fake_ns maps a real wall time to the fake one. */
static int64_t fake_ns(int64_t real)
{
	if (ctl == NULL)
		return real;
	for (;;) {
		uint64_t s1 = ctl->seq;
		__sync_synchronize();
		int64_t ar = ctl->anchor_real_ns, af = ctl->anchor_fake_ns;
		double rate = ctl->rate;
		__sync_synchronize();
		if (s1 != ctl->seq || (s1 & 1))
			continue; /* the test is writing */
		if (rate == 0)
			return real;
		return af + (int64_t)((double)(real - ar) * rate);
	}
}

static int is_realtime(clockid_t clk)
{
	return clk == CLOCK_REALTIME || clk == CLOCK_REALTIME_COARSE;
}

int clock_gettime(clockid_t clk, struct timespec *ts)
{
	int r = real_now(clk, ts);
	if (r != 0 || !is_realtime(clk))
		return r;
	int64_t ns = fake_ns((int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec);
	ts->tv_sec = ns / 1000000000;
	ts->tv_nsec = ns % 1000000000;
	return 0;
}

int gettimeofday(struct timeval *tv, void *tz)
{
	(void)tz;
	struct timespec ts;
	int r = clock_gettime(CLOCK_REALTIME, &ts);
	void *p = tv; /* glibc declares tv nonnull; callers may still pass NULL */
	if (r != 0 || p == NULL)
		return r;
	tv->tv_sec = ts.tv_sec;
	tv->tv_usec = ts.tv_nsec / 1000;
	return 0;
}

time_t time(time_t *t)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	if (t != NULL)
		*t = ts.tv_sec;
	return ts.tv_sec;
}
