/* One side of scripts/two_hosts.sh, through the C ABI (built there against
 * an install made with --with-sw-flagcx, pkg-config mooncake_flagcx):
 *
 *   two_hosts target BYTES SECONDS
 *     creates a transport, registers BYTES filled with pattern 1, prints
 *     "ready endpoint=EP addr=0xADDR len=BYTES pid=PID", sleeps SECONDS and
 *     exits 0 (the script kills it before that in the kill case).
 *   two_hosts data EP ADDR LEN
 *     reads the target's LEN bytes in ops of 4 KiB..1 MiB and checks pattern
 *     1, writes pattern 2 over them, reads them back and checks; exit 0 when
 *     every op succeeded and every byte matched.
 *   two_hosts traffic EP ADDR LEN
 *     the kill case: keeps 16 writes of 64 KiB in flight, prints
 *     "traffic ok" after 200 successes (every op before it must succeed),
 *     then waits for the line "killed" on stdin (the script killed the
 *     target and reaped it). Each of the 64 ops submitted after that line
 *     must complete with an error, none with MCFX_OK, and all of them within
 *     15 s of the line (op_timeout_ms is 5000): a hang fails the run.
 *   two_hosts refused EP ADDR LEN
 *     one write to a target the provider must refuse (another PID
 *     namespace): it completes with MCFX_E_CONNECT within 15 s.
 *
 * Peer id 1 is EP (the resolver's only answer). Every wait is bounded;
 * messages go to stdout, one line each. */
#define _POSIX_C_SOURCE 200809L
#include <inttypes.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mooncake_flagcx.h"

#define MAX_STATUS 64
#define WINDOW 16
#define TRAFFIC_OP (64 * 1024)
#define OK_BEFORE_KILL 200
#define OPS_AFTER_KILL 64
#define BOUND_NS (15 * 1000000000ull)

static char g_peer[MCFX_MAX_ENDPOINT_LEN + 1];
static atomic_uint_fast64_t g_completed;
static atomic_uint_fast64_t g_by_status[MAX_STATUS];
/* Traffic mode: the first user_data submitted after the kill notice. */
static atomic_uint_fast64_t g_marker = UINT64_MAX;
static atomic_uint_fast64_t g_ok_after_marker, g_done_after_marker;
static atomic_uint_fast64_t g_last_done_ns;
/* Data mode: each op's status, by user_data (-1: not completed). */
static atomic_int *g_status;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void nap(void) {
  struct timespec ts = {0, 100000};
  nanosleep(&ts, NULL);
}

static void on_complete(void *ctx, uint64_t user_data, mcfx_status status) {
  (void)ctx;
  unsigned s = (unsigned)status < MAX_STATUS ? (unsigned)status : MAX_STATUS - 1;
  atomic_fetch_add(&g_by_status[s], 1);
  if (g_status != NULL) atomic_store(&g_status[user_data], (int)status);
  if (user_data >= atomic_load(&g_marker)) {
    if (status == MCFX_OK) atomic_fetch_add(&g_ok_after_marker, 1);
    atomic_fetch_add(&g_done_after_marker, 1);
    atomic_store(&g_last_done_ns, now_ns());
  }
  atomic_fetch_add(&g_completed, 1); /* last: waiters then see the rest */
}

static int32_t resolve(void *ctx, uint64_t peer_id, char *buf, size_t cap) {
  (void)ctx;
  if (peer_id != 1 || strlen(g_peer) >= cap) return -1;
  strcpy(buf, g_peer);
  return 0;
}

static mcfx_transport *create(void) {
  mcfx_config cfg;
  mcfx_config_init(&cfg, sizeof cfg);
  cfg.on_complete = on_complete;
  cfg.resolve = resolve;
  cfg.op_timeout_ms = 5000;
  cfg.connect_timeout_ms = 2000;
  mcfx_transport *t = NULL;
  if (mcfx_create(&cfg, &t) != MCFX_OK) {
    char msg[256];
    mcfx_last_error(msg, sizeof msg);
    printf("mcfx_create: %s\n", msg);
    return NULL;
  }
  return t;
}

static uint8_t *alloc_registered(mcfx_transport *t, size_t len) {
  uint8_t *p = aligned_alloc(4096, (len + 4095) / 4096 * 4096);
  if (p == NULL) return NULL;
  memset(p, 0, len);
  if (mcfx_register(t, p, len) != MCFX_OK) {
    char msg[256];
    mcfx_last_error(msg, sizeof msg);
    printf("mcfx_register: %s\n", msg);
    free(p);
    return NULL;
  }
  return p;
}

/* Word i of pattern `seed`: a hash of both, so misplaced bytes show. */
static uint64_t pattern_word(uint64_t seed, uint64_t i) {
  uint64_t x = seed * 0x100000001b3ull ^ i;
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

static void fill(uint8_t *p, size_t len, uint64_t seed) {
  for (size_t i = 0; i + 8 <= len; i += 8) {
    uint64_t w = pattern_word(seed, i / 8);
    memcpy(p + i, &w, 8);
  }
}

/* Index of the first byte that differs from pattern `seed`, or len. */
static size_t check(const uint8_t *p, size_t len, uint64_t seed) {
  for (size_t i = 0; i + 8 <= len; i += 8) {
    uint64_t w = pattern_word(seed, i / 8);
    if (memcmp(p + i, &w, 8) != 0) return i;
  }
  return len;
}

static int parse(int argc, char **argv, uint64_t *addr, uint64_t *len) {
  if (argc != 5 || strlen(argv[2]) >= sizeof g_peer) return -1;
  strcpy(g_peer, argv[2]);
  *addr = strtoull(argv[3], NULL, 0);
  *len = strtoull(argv[4], NULL, 0);
  return *addr == 0 || *len == 0 || *len % 8 != 0 ? -1 : 0;
}

static int run_target(int argc, char **argv) {
  if (argc != 4) return 2;
  size_t len = strtoull(argv[2], NULL, 0);
  unsigned seconds = (unsigned)strtoul(argv[3], NULL, 0);
  mcfx_transport *t = create();
  uint8_t *buf = t != NULL && len % 8 == 0 ? alloc_registered(t, len) : NULL;
  if (buf == NULL) return 1;
  fill(buf, len, 1);
  char ep[MCFX_MAX_ENDPOINT_LEN + 1];
  size_t n = 0;
  if (mcfx_local_endpoint(t, ep, sizeof ep, &n) != MCFX_OK) return 1;
  printf("ready endpoint=%s addr=%p len=%zu pid=%ld\n", ep, (void *)buf, len,
         (long)getpid());
  fflush(stdout);
  sleep(seconds);
  mcfx_destroy(t);
  return 0;
}

/* Submits one op per chunk of [0, len) (chunk sizes cycle over 4 KiB ..
 * 1 MiB), waits for all of them (bounded) and says whether all succeeded. */
static int move_all(mcfx_transport *t, uint32_t opcode, uint8_t *local,
                    uint64_t remote, uint64_t len, const char *what) {
  static const uint64_t sizes[] = {4096, 65536, 1048576, 200704, 8192};
  size_t count = 0;
  for (uint64_t off = 0, k = 0; off < len; k++) {
    uint64_t n = sizes[k % 5] < len - off ? sizes[k % 5] : len - off;
    off += n;
    count++;
  }
  mcfx_op *ops = calloc(count, sizeof *ops);
  g_status = malloc(count * sizeof *g_status);
  if (ops == NULL || g_status == NULL) return -1;
  for (size_t i = 0; i < count; i++) atomic_init(&g_status[i], -1);
  uint64_t off = 0;
  for (size_t k = 0; k < count; k++) {
    uint64_t n = sizes[k % 5] < len - off ? sizes[k % 5] : len - off;
    ops[k] = (mcfx_op){.opcode = opcode, .local_addr = local + off, .length = n,
                       .peer_id = 1, .remote_addr = remote + off, .user_data = k};
    off += n;
  }
  uint64_t base = atomic_load(&g_completed);
  size_t accepted = 0;
  mcfx_status st = mcfx_submit(t, ops, count, &accepted);
  if (st != MCFX_OK) {
    printf("%s: mcfx_submit: %s (accepted %zu of %zu)\n", what, mcfx_strerror(st),
           accepted, count);
    return -1;
  }
  uint64_t until = now_ns() + BOUND_NS;
  while (atomic_load(&g_completed) - base < count && now_ns() < until) nap();
  /* Ops still out may complete later: their buffers stay (we exit soon). */
  int all_done = atomic_load(&g_completed) - base == count;
  int rc = 0;
  for (size_t k = 0; k < count && rc == 0; k++) {
    int s = atomic_load(&g_status[k]);
    if (s != MCFX_OK) {
      printf("%s: op %zu (%" PRIu64 " bytes at +%" PRIu64 "): %s\n", what, k,
             ops[k].length, ops[k].remote_addr - remote,
             s < 0 ? "not completed within 15 s" : mcfx_strerror(s));
      rc = -1;
    }
  }
  if (!all_done) return -1;
  free(ops);
  free(g_status);
  g_status = NULL;
  return rc == 0 ? (int)count : -1;
}

static int run_data(int argc, char **argv) {
  uint64_t raddr, len;
  if (parse(argc, argv, &raddr, &len) != 0) return 2;
  mcfx_transport *t = create();
  if (t == NULL) return 1;
  uint8_t *src = alloc_registered(t, len), *got = alloc_registered(t, len);
  if (src == NULL || got == NULL) return 1;

  int reads = move_all(t, MCFX_OP_READ, got, raddr, len, "read");
  if (reads < 0) return 1;
  size_t bad = check(got, len, 1);
  if (bad != len) {
    printf("read: byte %zu differs from the target's pattern\n", bad);
    return 1;
  }
  fill(src, len, 2);
  int writes = move_all(t, MCFX_OP_WRITE, src, raddr, len, "write");
  if (writes < 0) return 1;
  memset(got, 0, len);
  int back = move_all(t, MCFX_OP_READ, got, raddr, len, "read back");
  if (back < 0) return 1;
  bad = check(got, len, 2);
  if (bad != len) {
    printf("read back: byte %zu differs from what was written\n", bad);
    return 1;
  }
  printf("data ok: read %" PRIu64 " bytes in %d ops, wrote them in %d ops, read them "
         "back in %d ops, every byte as expected\n", len, reads, writes, back);
  mcfx_destroy(t);
  return 0;
}

/* Whether stdin has the line "killed" (non-blocking). */
static int kill_notice(void) {
  struct pollfd p = {STDIN_FILENO, POLLIN, 0};
  if (poll(&p, 1, 0) != 1) return 0;
  char line[64];
  return fgets(line, sizeof line, stdin) != NULL && strncmp(line, "killed", 6) == 0;
}

static void print_statuses(void) {
  printf("statuses:");
  for (int s = 0; s < MAX_STATUS; s++) {
    uint64_t n = atomic_load(&g_by_status[s]);
    if (n != 0) printf(" %s=%" PRIu64, mcfx_strerror(s), n);
  }
  printf("\n");
}

static int run_traffic(int argc, char **argv) {
  uint64_t raddr, len;
  if (parse(argc, argv, &raddr, &len) != 0 || len < TRAFFIC_OP) return 2;
  mcfx_transport *t = create();
  if (t == NULL) return 1;
  uint8_t *src = alloc_registered(t, TRAFFIC_OP);
  if (src == NULL) return 1;
  fill(src, TRAFFIC_OP, 3);

  uint64_t slots = len / TRAFFIC_OP, seq = 0, marker = UINT64_MAX, marker_ns = 0;
  uint64_t start = now_ns();
  int announced = 0;
  for (;;) {
    uint64_t done = atomic_load(&g_completed);
    if (!announced) {
      uint64_t failed = 0;
      for (int st = 1; st < MAX_STATUS; st++) failed += atomic_load(&g_by_status[st]);
      if (failed != 0) {
        printf("FAIL: an op failed before the target was killed\n");
        print_statuses();
        return 1;
      }
      if (done >= OK_BEFORE_KILL) {
        printf("traffic ok\n");
        fflush(stdout);
        announced = 1;
      }
    }
    if (marker == UINT64_MAX && announced && kill_notice()) {
      marker = seq;
      marker_ns = now_ns();
      atomic_store(&g_marker, marker);
    }
    if (marker != UINT64_MAX && seq - marker == OPS_AFTER_KILL && done == seq) break;
    if (marker == UINT64_MAX && now_ns() - start > 3 * BOUND_NS) {
      printf("FAIL: no kill notice on stdin within 45 s\n");
      return 1;
    }
    if (marker != UINT64_MAX && now_ns() - marker_ns > BOUND_NS) {
      printf("FAIL (hang): %" PRIu64 " of the %d ops submitted after the kill did not "
             "complete within 15 s\n",
             (uint64_t)OPS_AFTER_KILL - atomic_load(&g_done_after_marker), OPS_AFTER_KILL);
      print_statuses();
      return 1;
    }
    int submitted = 0;
    while (seq - done < WINDOW && (marker == UINT64_MAX || seq - marker < OPS_AFTER_KILL)) {
      mcfx_op op = {.opcode = MCFX_OP_WRITE, .local_addr = src, .length = TRAFFIC_OP,
                    .peer_id = 1, .remote_addr = raddr + (seq % slots) * TRAFFIC_OP,
                    .user_data = seq};
      size_t accepted = 0;
      mcfx_status st = mcfx_submit(t, &op, 1, &accepted);
      if (st != MCFX_OK) {
        printf("FAIL: mcfx_submit: %s\n", mcfx_strerror(st));
        return 1;
      }
      seq++;
      submitted = 1;
    }
    if (!submitted) nap();
  }
  uint64_t ok_after = atomic_load(&g_ok_after_marker);
  uint64_t last = atomic_load(&g_last_done_ns);
  printf("after the kill: %d ops, %" PRIu64 " succeeded, all completed %.1f ms after "
         "the notice\n", OPS_AFTER_KILL, ok_after,
         last > marker_ns ? (double)(last - marker_ns) / 1e6 : 0.0);
  print_statuses();
  mcfx_destroy(t);
  if (ok_after != 0) {
    printf("FAIL: ops submitted after the target died reported MCFX_OK\n");
    return 1;
  }
  return 0;
}

static int run_refused(int argc, char **argv) {
  uint64_t raddr, len;
  if (parse(argc, argv, &raddr, &len) != 0) return 2;
  mcfx_transport *t = create();
  uint8_t *src = t != NULL ? alloc_registered(t, 4096) : NULL;
  if (src == NULL) return 1;
  g_status = malloc(sizeof *g_status);
  if (g_status == NULL) return 1;
  atomic_init(&g_status[0], -1);
  mcfx_op op = {.opcode = MCFX_OP_WRITE, .local_addr = src, .length = 4096,
                .peer_id = 1, .remote_addr = raddr, .user_data = 0};
  size_t accepted = 0;
  if (mcfx_submit(t, &op, 1, &accepted) != MCFX_OK) return 1;
  uint64_t until = now_ns() + BOUND_NS;
  while (atomic_load(&g_completed) == 0 && now_ns() < until) nap();
  int s = atomic_load(&g_status[0]);
  printf("write to a target in another PID namespace: %s\n",
         s < 0 ? "not completed within 15 s" : mcfx_strerror(s));
  mcfx_destroy(t);
  return s == MCFX_E_CONNECT ? 0 : 1;
}

int main(int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], "target") == 0) return run_target(argc, argv);
  if (argc >= 2 && strcmp(argv[1], "data") == 0) return run_data(argc, argv);
  if (argc >= 2 && strcmp(argv[1], "traffic") == 0) return run_traffic(argc, argv);
  if (argc >= 2 && strcmp(argv[1], "refused") == 0) return run_refused(argc, argv);
  fprintf(stderr, "usage: two_hosts target BYTES SECONDS | {data|traffic|refused} EP ADDR LEN\n");
  return 2;
}
