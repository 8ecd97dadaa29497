/* host-gaps: how often, and for how long, this CPU is taken away from a program that never
 * sleeps. It reads the monotonic clock in a loop for SECS seconds and counts the gaps between
 * two reads. Run one per CPU at the same time; on a virtual machine, gaps with no involuntary
 * context switch of this process (/proc/PID/status) are the host's.
 *
 *   cc -O2 -o /tmp/host-gaps scripts/host-gaps.c
 *   taskset -c 0 /tmp/host-gaps 5 & taskset -c 1 /tmp/host-gaps 5; wait
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static long long now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(int argc, char **argv) {
  double secs = argc > 1 ? atof(argv[1]) : 5;
  long long end = now_ns() + (long long)(secs * 1e9), prev = now_ns(), max = 0, lost = 0;
  /* gaps over 100 us, 250 us, 500 us, 1 ms, 2 ms, 5 ms, 10 ms (each counted once) */
  static const long long edge[] = {250000, 500000, 1000000, 2000000, 5000000, 10000000};
  long long count[7] = {0};
  for (;;) {
    long long n = now_ns(), gap = n - prev;
    prev = n;
    if (n > end) break;
    if (gap > 100000) {
      int b = 0;
      while (b < 6 && gap >= edge[b]) b++;
      count[b]++;
      lost += gap;
    }
    if (gap > max) max = gap;
  }
  printf(">100us:%lld >250us:%lld >500us:%lld >1ms:%lld >2ms:%lld >5ms:%lld >10ms:%lld "
         "max=%.2fms lost=%.2fms\n",
         count[0], count[1], count[2], count[3], count[4], count[5], count[6], max / 1e6,
         lost / 1e6);
  return 0;
}
