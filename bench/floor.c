// The kernel's floor for delivering chat frames on this machine: the CPU a
// sender spends on nothing but one write(2) per delivery over loopback TCP,
// paced like a chat server's fanout (GROUP sockets written per message,
// messages spread evenly in time), with a reader process on the other end
// that sleeps in epoll as a real client does. Any server that writes each
// delivery to its own socket pays at least this per delivery, before any
// parsing, storage or Redis work. See docs/benchmarks.md.
//
//   floor CONNS WRITES_PER_SEC GROUP SECONDS FRAME_BYTES
//
// Prints one JSON line: the sender's and the reader's CPU per write.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double cpu_seconds(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + u.ru_stime.tv_sec +
         u.ru_stime.tv_usec / 1e6;
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static void die(const char *what) {
  perror(what);
  exit(1);
}

// The client side: connects, then reads and discards until every socket is
// closed; reports its CPU from the first byte to the last through `report`.
static void reader(int port, int conns, int report) {
  int ep = epoll_create1(0);
  if (ep < 0) die("epoll_create1");
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  for (int i = 0; i < conns; i++) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) die("socket");
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS)
      die("connect");
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
  }
  static char buf[65536];
  struct epoll_event evs[256];
  int open = conns;
  double first = -1;
  while (open > 0) {
    int n = epoll_wait(ep, evs, 256, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) die("epoll_wait");
    for (int i = 0; i < n; i++) {
      ssize_t r = read(evs[i].data.fd, buf, sizeof buf);
      if (r > 0 && first < 0) first = cpu_seconds();
      if (r == 0 || (r < 0 && errno != EAGAIN)) {
        close(evs[i].data.fd);
        open--;
      }
    }
  }
  double used = first < 0 ? 0 : cpu_seconds() - first;
  if (write(report, &used, sizeof used) != sizeof used) die("report");
  exit(0);
}

int main(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: floor CONNS WRITES_PER_SEC GROUP SECONDS FRAME_BYTES\n");
    return 2;
  }
  int conns = atoi(argv[1]), group = atoi(argv[3]), bytes = atoi(argv[5]);
  double rate = atof(argv[2]), seconds = atof(argv[4]);
  if (conns < 1 || rate <= 0 || group < 1 || seconds <= 0 || bytes < 4 || bytes > 65535 ||
      seconds * rate < group) {
    fprintf(stderr,
            "floor: every argument must be positive, FRAME_BYTES 4 to 65535, and SECONDS long "
            "enough for one GROUP at WRITES_PER_SEC\n");
    return 2;
  }
  // A reader that dies must end the run with an error, not kill it silently.
  signal(SIGPIPE, SIG_IGN);
  int l = socket(AF_INET, SOCK_STREAM, 0);
  if (l < 0) die("socket");
  struct sockaddr_in a = {.sin_family = AF_INET};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t al = sizeof a;
  if (bind(l, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
  if (listen(l, 4096) < 0) die("listen");
  if (getsockname(l, (struct sockaddr *)&a, &al) < 0) die("getsockname");
  int pipefd[2];
  if (pipe(pipefd) < 0) die("pipe");
  pid_t child = fork();
  if (child < 0) die("fork");
  if (child == 0) {
    close(pipefd[0]);
    close(l);
    reader(ntohs(a.sin_port), conns, pipefd[1]);
  }
  close(pipefd[1]);
  int *fds = calloc(conns, sizeof *fds);
  if (!fds) die("calloc");
  for (int i = 0; i < conns; i++) {
    // A reader that died while connecting must not leave us in accept().
    struct pollfd p = {.fd = l, .events = POLLIN};
    if (poll(&p, 1, 10000) != 1) {
      fprintf(stderr, "floor: only %d of %d connections arrived\n", i, conns);
      kill(child, SIGKILL);
      return 1;
    }
    fds[i] = accept(l, NULL, NULL);
    if (fds[i] < 0) die("accept");
    int one = 1;
    setsockopt(fds[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  close(l);
  // A server-to-client WebSocket text frame of FRAME_BYTES in all: header
  // (with the 16-bit length form from 126 bytes of payload), then filler.
  char *frame = malloc(bytes);
  if (!frame) die("malloc");
  memset(frame, 'x', bytes);
  frame[0] = (char)0x81;
  if (bytes - 2 < 126) {
    frame[1] = (char)(bytes - 2);
  } else {
    frame[1] = 126;
    frame[2] = (char)(((bytes - 4) >> 8) & 0xff);
    frame[3] = (char)((bytes - 4) & 0xff);
  }
  double every = group / rate;  // seconds between messages
  long groups = (long)(seconds * rate / group), writes = 0, short_writes = 0;
  int next = 0, failed = 0;
  double c0 = cpu_seconds(), t0 = now();
  struct timespec start;
  clock_gettime(CLOCK_MONOTONIC, &start);
  for (long g = 0; g < groups; g++) {
    double at = g * every;
    struct timespec due = start;
    due.tv_sec += (time_t)at;
    due.tv_nsec += (long)((at - (time_t)at) * 1e9);
    if (due.tv_nsec >= 1000000000L) {
      due.tv_sec++;
      due.tv_nsec -= 1000000000L;
    }
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &due, NULL) == EINTR) {
    }
    for (int j = 0; j < group; j++) {
      ssize_t w = write(fds[next], frame, bytes);
      if (w < 0 && errno == EPIPE) failed = 1;
      if (w != bytes) short_writes++;
      writes++;
      next = (next + 1) % conns;
    }
  }
  double cpu = cpu_seconds() - c0, wall = now() - t0;
  for (int i = 0; i < conns; i++) close(fds[i]);
  double reader_cpu = 0;
  if (read(pipefd[0], &reader_cpu, sizeof reader_cpu) != sizeof reader_cpu) reader_cpu = -1;
  waitpid(child, NULL, 0);
  if (failed) {
    fprintf(stderr, "floor: the reader went away during the run\n");
    return 1;
  }
  printf("{\"conns\":%d,\"group\":%d,\"frame_bytes\":%d,\"writes\":%ld,\"short_writes\":%ld,"
         "\"writes_per_sec\":%.0f,\"sender_cpu_pct_of_core\":%.1f,\"sender_us_per_write\":%.2f,"
         "\"reader_us_per_write\":%.2f}\n",
         conns, group, bytes, writes, short_writes, writes / wall, 100 * cpu / wall,
         1e6 * cpu / writes, reader_cpu < 0 ? -1 : 1e6 * reader_cpu / writes);
  return 0;
}
