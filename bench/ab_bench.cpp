// The A/B benchmark. Linked against the C++ baseline transport
// (libmcfx_baseline.so); run with LD_PRELOAD=libmooncake_flagcx.so, the same
// binary drives the Rust transport instead (the mcfx_* symbols are
// interposed). `--impl raw` skips the transports and calls FlagCX directly on
// the submitting thread: the floor both transports are measured against.
//
// Prints one JSON object per scenario on stdout:
//   {"scenario", "impl", "round", "ops", "p50_ns", "p99_ns", "p999_ns",
//    "ops_per_s", "bytes_per_s", "seconds", "nic_gbps", "link_utilization",
//    "cpu_ns_per_op", "process_cpu_ns_per_op", "busy_procs", "cpu_threads"}
// and, first, one {"scenario": "round_trip", "round_trip_ns", ...} line: the
// machine's cross-core round trip, measured once per process.
// scripts/ab.sh runs it alternately per implementation and aggregates.
//
// nic_* scenarios run on the software provider's modeled NIC (knobs
// NIC_GBPS / NIC_LATENCY_NS): no bytes move, a transfer completes when a link
// of that bandwidth and latency would have finished it. link_utilization is
// achieved bytes/s over the modeled bandwidth (null in copy mode).
// cpu_ns_per_op is the CPU time of every thread of this process except the
// bench's own (main and submitting/waiting threads) over the measured
// interval, divided by the measured ops: the transport's progress,
// completion and connector threads and the provider's threads, if any
// (cpu_threads lists them by name). Null for raw, which has no such threads.
// process_cpu_ns_per_op is the CPU time of the whole process (every thread,
// the bench's own included) over the same interval per op, for every
// implementation (raw too).
//
// Also (issues 19 and 22):
// - busy_* / busy2_*: the same beside nproc / 2 x nproc spinning child
//   processes (busy_procs), waiting threads that only spin;
// - kv_*: request scenarios (a KV cache per request, one submit, T threads
//   that poll), with "latency_of":"request", requests, requests_per_s,
//   requests_total, failed_requests, failed_ops, queue_full_waits,
//   submit_errors, ops_per_request, threads, peers, regions;
// - --scaling DIM:X: one point of a scaling curve (regions, peers, threads),
//   one line with "scaling", "x", ns_per_op, the VmRSS stages (rss_start,
//   rss_created, rss_registered, rss_connected) and register_ns.

#include <dirent.h>
#include <dlfcn.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "flagcx_p2p.h"
#include "flagcx_sw.h"
#include "mooncake_flagcx.h"

namespace {

using Clock = std::chrono::steady_clock;

uint64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

[[noreturn]] void die(const std::string &what) {
  std::fprintf(stderr, "mcfx_ab_bench: %s\n", what.c_str());
  std::exit(2);
}

inline void cpu_relax() { __builtin_ia32_pause(); }

// One turn of a caller that polls for its completions, as Mooncake's
// callers do through its getTransferStatus, which lets the transport run a
// progress pass on the polling thread (mcfx_progress: the Rust transport
// runs one unless its thread is running one; the C++ design has none and
// returns at once).
inline void poll_turn(mcfx_transport *t) {
  mcfx_progress(t, nullptr);
  cpu_relax();
}

// How a waiting caller waits: spin for up to 2 ms (every op but the 256 MiB
// ones finishes in that time), then nap. A long op's bytes are then not
// copied next to a sibling vCPU that spins for its whole duration (on this
// kind of VM that slowed the copy by ~7%, for any implementation).
inline void wait_a_little(uint64_t *since_ns) {
  // The clock is read once per 256 pauses: the loop stays almost nothing but
  // pause instructions, the least a waiting core can take from its sibling.
  static thread_local uint32_t spins = 0;
  if (*since_ns == 0) *since_ns = now_ns();
  if ((++spins & 255) != 0) {
    cpu_relax();
    return;
  }
  if (now_ns() - *since_ns >= 2000000) std::this_thread::sleep_for(std::chrono::microseconds(50));
}

// Buffers of 2 MiB and more are 2 MiB-aligned and asked to be backed by
// huge pages (this kind of machine has THP in madvise mode): whether a
// process happened to get them otherwise made big copies vary by +-20 %
// from one run to the next, for every implementation.
struct Buffer {
  explicit Buffer(size_t n) : len(n) {
    const size_t huge = size_t(2) << 20;
    void *p = nullptr;
    if (posix_memalign(&p, n >= huge ? huge : 4096, n) != 0) die("out of memory");
    if (n >= huge) madvise(p, n, MADV_HUGEPAGE);
    std::memset(p, 1, n);
    data = static_cast<char *>(p);
  }
  ~Buffer() { std::free(data); }
  uint64_t addr() const { return reinterpret_cast<uintptr_t>(data); }
  char *data;
  size_t len;
};

// Buffer slots per workload: ops rotate over them (64, or fewer for big ops
// so each buffer stays within 256 MiB).
size_t slots_for(size_t size) {
  return std::max<size_t>(1, std::min<size_t>(64, (256u << 20) / size));
}

// ---- results -----------------------------------------------------------------

struct Result {
  std::string scenario;
  uint64_t ops = 0;
  uint64_t bytes = 0;
  double seconds = 0;
  std::vector<uint64_t> lat; // ns, one per measured op
  double cpu_pct = -1;       // idle_cpu only: process CPU, % of one core
  uint64_t nic_gbps = 0;     // modeled link (0: copy mode)
  // Transport-thread CPU over the measured interval (transports only).
  bool has_cpu = false;
  uint64_t cpu_ns = 0;
  std::string cpu_threads; // JSON array: which threads were counted
  // CPU time of the whole process (every thread: the bench's submitting and
  // waiting threads too) over the measured interval; every implementation.
  bool has_proc_cpu = false;
  uint64_t proc_cpu_ns = 0;
  int busy = 0; // busy-loop processes running beside the scenario
  // Request scenarios (kv_*, scaling): `lat` holds one request time per
  // measured request (first submit call to the moment its waiting thread
  // saw every op of it completed); ops and bytes count their ops.
  bool requests_mode = false;
  uint64_t requests = 0;       // measured (completed in the window)
  uint64_t requests_total = 0; // issued, warm-up included
  uint64_t failed_requests = 0, failed_ops = 0, queue_full = 0, submit_errors = 0;
  uint64_t ops_per_request = 0;
  int threads = 1, peers = 1;
  uint64_t regions = 0; // registered regions, every side
  // Scaling points: which curve and where on it; resident memory (VmRSS)
  // before the transports existed, after they were created, after their
  // regions were registered, and after warm-up connected every peer.
  std::string scaling;
  uint64_t x = 0;
  uint64_t rss_start = 0, rss_created = 0, rss_registered = 0, rss_connected = 0;
  uint64_t register_ns = 0; // wall time of registering every region
  // FlagCX vector calls the initiator issued per op over the whole run
  // (mcfx_get_stats; every transport implementation counts them): how
  // well its ops were batched into calls. Negative when not measured.
  double calls_per_op = -1;
};

uint64_t percentile(std::vector<uint64_t> &v, double q) {
  if (v.empty()) return 0;
  size_t i = std::min(v.size() - 1, static_cast<size_t>(q * (v.size() - 1) + 0.5));
  std::nth_element(v.begin(), v.begin() + i, v.end());
  return v[i];
}

void print(Result &r, const char *impl, int round) {
  std::string extra;
  char buf[256];
  if (r.cpu_pct >= 0) {
    std::snprintf(buf, sizeof buf, ",\"cpu_pct\":%.3f", r.cpu_pct);
    extra += buf;
  } else {
    const double bps = r.seconds > 0 ? r.bytes / r.seconds : 0.0;
    std::snprintf(buf, sizeof buf, ",\"nic_gbps\":%llu", (unsigned long long)r.nic_gbps);
    extra += buf;
    if (r.nic_gbps > 0)
      std::snprintf(buf, sizeof buf, ",\"link_utilization\":%.4f", bps * 8 / (r.nic_gbps * 1e9));
    else
      std::snprintf(buf, sizeof buf, ",\"link_utilization\":null");
    extra += buf;
    if (r.has_cpu && r.ops > 0)
      std::snprintf(buf, sizeof buf, ",\"cpu_ns_per_op\":%.1f", double(r.cpu_ns) / r.ops);
    else
      std::snprintf(buf, sizeof buf, ",\"cpu_ns_per_op\":null");
    extra += buf;
    if (r.has_proc_cpu && r.ops > 0)
      std::snprintf(buf, sizeof buf, ",\"process_cpu_ns_per_op\":%.1f",
                    double(r.proc_cpu_ns) / r.ops);
    else
      std::snprintf(buf, sizeof buf, ",\"process_cpu_ns_per_op\":null");
    extra += buf;
    std::snprintf(buf, sizeof buf, ",\"busy_procs\":%d", r.busy);
    extra += buf;
    if (r.has_cpu) extra += ",\"cpu_threads\":" + r.cpu_threads;
  }
  if (r.requests_mode) {
    std::snprintf(buf, sizeof buf,
                  ",\"latency_of\":\"request\",\"requests\":%llu,\"requests_per_s\":%.1f,"
                  "\"requests_total\":%llu,\"failed_requests\":%llu,\"failed_ops\":%llu,"
                  "\"queue_full_waits\":%llu,\"submit_errors\":%llu",
                  (unsigned long long)r.requests, r.seconds > 0 ? r.requests / r.seconds : 0.0,
                  (unsigned long long)r.requests_total, (unsigned long long)r.failed_requests,
                  (unsigned long long)r.failed_ops, (unsigned long long)r.queue_full,
                  (unsigned long long)r.submit_errors);
    extra += buf;
    std::snprintf(buf, sizeof buf,
                  ",\"ops_per_request\":%llu,\"threads\":%d,\"peers\":%d,\"regions\":%llu",
                  (unsigned long long)r.ops_per_request, r.threads, r.peers,
                  (unsigned long long)r.regions);
    extra += buf;
  }
  if (r.calls_per_op >= 0) {
    std::snprintf(buf, sizeof buf, ",\"flagcx_calls_per_op\":%.4f", r.calls_per_op);
    extra += buf;
  }
  if (!r.scaling.empty()) {
    std::snprintf(buf, sizeof buf,
                  ",\"scaling\":\"%s\",\"x\":%llu,\"ns_per_op\":%.2f,\"rss_start\":%llu,"
                  "\"rss_created\":%llu,\"rss_registered\":%llu,\"rss_connected\":%llu,"
                  "\"register_ns\":%llu",
                  r.scaling.c_str(), (unsigned long long)r.x,
                  r.ops > 0 ? r.seconds * 1e9 / r.ops : 0.0, (unsigned long long)r.rss_start,
                  (unsigned long long)r.rss_created, (unsigned long long)r.rss_registered,
                  (unsigned long long)r.rss_connected, (unsigned long long)r.register_ns);
    extra += buf;
  }
  std::printf("{\"scenario\":\"%s\",\"impl\":\"%s\",\"round\":%d,\"ops\":%llu,"
              "\"p50_ns\":%llu,\"p99_ns\":%llu,\"p999_ns\":%llu,\"ops_per_s\":%.1f,"
              "\"bytes_per_s\":%.1f,\"seconds\":%.4f%s}\n",
              r.scenario.c_str(), impl, round, (unsigned long long)r.ops,
              (unsigned long long)percentile(r.lat, 0.50),
              (unsigned long long)percentile(r.lat, 0.99),
              (unsigned long long)percentile(r.lat, 0.999),
              r.seconds > 0 ? r.ops / r.seconds : 0.0, r.seconds > 0 ? r.bytes / r.seconds : 0.0,
              r.seconds, extra.c_str());
  std::fflush(stdout);
}

// ---- CPU time of the whole process, resident memory ---------------------------------

// CPU time of every thread of this process, live and exited, in ns: what
// getrusage(RUSAGE_SELF) adds up (user + system), at ns resolution. Other
// processes (the busy loops, flagcx-sw-peer) are not in it.
uint64_t process_cpu_ns() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return uint64_t(ts.tv_sec) * 1000000000u + ts.tv_nsec;
}

// VmRSS of this process in bytes (/proc/self/status), 0 if unreadable.
uint64_t vm_rss_bytes() {
  uint64_t kb = 0;
  if (FILE *f = std::fopen("/proc/self/status", "r")) {
    char line[256];
    while (std::fgets(line, sizeof line, f))
      if (std::sscanf(line, "VmRSS: %llu kB", reinterpret_cast<unsigned long long *>(&kb)) == 1)
        break;
    std::fclose(f);
  }
  return kb * 1024;
}

// ---- busy loops of other processes --------------------------------------------------

// busy_* scenarios: N child processes spin on the CPUs for the whole
// scenario, as other work on a loaded serving host would. Each child exits
// on its own at its deadline, when the bench dies (PR_SET_PDEATHSIG) and is
// killed and reaped when the scenario ends (or the bench exits through
// die()): none outlives the scenario.
std::vector<pid_t> g_busy_children;

void stop_busy_children() {
  for (pid_t p : g_busy_children) kill(p, SIGKILL);
  for (pid_t p : g_busy_children) {
    int st = 0;
    while (waitpid(p, &st, 0) < 0 && errno == EINTR) {
    }
  }
  g_busy_children.clear();
}

struct BusyLoad {
  // Forks `n` spinning children that exit by themselves after `max_seconds`.
  // Called at the start of a scenario, before its transports exist; the
  // children only spin and read the clock (nothing that is unsafe after
  // fork in a process with threads).
  BusyLoad(int n, double max_seconds) {
    static const bool hooked = (std::atexit(stop_busy_children), true);
    (void)hooked;
    const pid_t parent = getpid();
    const uint64_t deadline = now_ns() + uint64_t(max_seconds * 1e9);
    for (int i = 0; i < n; ++i) {
      std::fflush(stdout);
      const pid_t pid = fork();
      if (pid < 0) die("fork of a busy loop failed");
      if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(0);
        volatile uint64_t x = 1;
        for (;;) {
          for (int k = 0; k < (1 << 16); ++k) x = x * 6364136223846793005ULL + 1442695040888963407ULL;
          if (now_ns() >= deadline) _exit(0);
        }
      }
      g_busy_children.push_back(pid);
    }
  }
  ~BusyLoad() { stop_busy_children(); }
  BusyLoad(const BusyLoad &) = delete;
  BusyLoad &operator=(const BusyLoad &) = delete;
};

// ---- CPU time of the transport's threads -------------------------------------------

pid_t gettid_() { return static_cast<pid_t>(syscall(SYS_gettid)); }

// A thread's CPU clock from its tid (Linux: MAKE_THREAD_CPUCLOCK(tid,
// CPUCLOCK_SCHED), valid for any thread of this process). Unlike
// /proc/.../schedstat it includes the running slice up to now, which matters
// for a thread that spins while it is sampled.
bool thread_cpu_ns(pid_t tid, uint64_t *ns) {
  const clockid_t id = (~static_cast<clockid_t>(tid) << 3) | 6;
  timespec ts;
  if (clock_gettime(id, &ts) != 0) return false; // the thread has exited
  *ns = uint64_t(ts.tv_sec) * 1000000000u + ts.tv_nsec;
  return true;
}

// CPU time of every thread of this process except `own` (the bench's threads).
using CpuSample = std::map<pid_t, uint64_t>;

CpuSample sample_threads(const std::vector<pid_t> &own) {
  CpuSample s;
  DIR *d = opendir("/proc/self/task");
  if (!d) die("cannot list /proc/self/task");
  while (dirent *e = readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    const pid_t tid = static_cast<pid_t>(std::atoi(e->d_name));
    if (std::find(own.begin(), own.end(), tid) != own.end()) continue;
    uint64_t ns = 0;
    if (thread_cpu_ns(tid, &ns)) s[tid] = ns;
  }
  closedir(d);
  return s;
}

std::string thread_name(pid_t tid) {
  char path[64], name[64] = "";
  std::snprintf(path, sizeof path, "/proc/self/task/%d/comm", int(tid));
  if (FILE *f = std::fopen(path, "r")) {
    if (!std::fgets(name, sizeof name, f)) name[0] = 0;
    std::fclose(f);
  }
  std::string n(name);
  while (!n.empty() && (n.back() == '\n' || n.back() == ' ')) n.pop_back();
  for (char &c : n) // printed inside a JSON string
    if (c == '"' || c == '\\' || static_cast<unsigned char>(c) < 0x20) c = '_';
  // A thread nobody named carries the name of the thread that created it.
  if (n.empty() || n == "mcfx_ab_bench") return "unnamed";
  // mcfx-connect-3 -> mcfx-connect-N: one entry per kind of thread.
  size_t digits = n.size();
  while (digits > 0 && n[digits - 1] >= '0' && n[digits - 1] <= '9') --digits;
  if (digits < n.size() && digits > 0 && n[digits - 1] == '-') n = n.substr(0, digits) + "N";
  return n;
}

// Adds the CPU time between two samples to r (threads born in between count
// from zero; threads that exited in between are lost: none do in a scenario).
void account_cpu(Result &r, const CpuSample &before, const CpuSample &after) {
  std::map<std::string, std::pair<int, uint64_t>> by_name;
  uint64_t total = 0;
  for (const auto &kv : after) {
    auto b = before.find(kv.first);
    const uint64_t d = kv.second - (b == before.end() ? 0 : std::min(b->second, kv.second));
    auto &e = by_name[thread_name(kv.first)];
    e.first += 1;
    e.second += d;
    total += d;
  }
  std::string j = "[";
  for (const auto &kv : by_name) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "%s{\"name\":\"%s\",\"threads\":%d,\"ns\":%llu}",
                  j.size() > 1 ? "," : "", kv.first.c_str(), kv.second.first,
                  (unsigned long long)kv.second.second);
    j += buf;
  }
  r.has_cpu = true;
  r.cpu_ns = total;
  r.cpu_threads = j + "]";
}

// ---- the machine's cross-core round trip ---------------------------------------------

// Two threads pinned to two different CPUs pass a counter back and forth, one
// cache line each way, spinning on plain loads: the least any design with a
// progress thread pays to hand an op to another core and get its completion
// back. Returns the p50 of the round trip in ns, or -1 with fewer than 2 CPUs.
// Timed in groups of 16 round trips (a clock read is not free); bounded to
// 200 000 round trips and 300 ms.
double round_trip_ns(uint64_t *samples_out) {
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (sched_getaffinity(0, sizeof allowed, &allowed) != 0) return -1;
  int cpus[2], found = 0;
  for (int c = 0; c < CPU_SETSIZE && found < 2; ++c)
    if (CPU_ISSET(c, &allowed)) cpus[found++] = c;
  if (found < 2) return -1;
  struct alignas(128) Line { // 128: adjacent-line prefetch pairs 64-byte lines
    std::atomic<uint64_t> v{0};
  };
  static Line ping, pong;
  ping.v.store(0);
  pong.v.store(0);
  constexpr uint64_t kStop = ~uint64_t(0);
  constexpr int kGroup = 16;
  constexpr size_t kGroups = 200000 / kGroup;
  std::vector<uint64_t> per_rt;
  per_rt.reserve(kGroups);
  auto pin = [](std::thread &t, int cpu) {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    pthread_setaffinity_np(t.native_handle(), sizeof one, &one);
  };
  std::atomic<bool> pinned{false};
  std::thread echo([&] {
    while (!pinned.load()) std::this_thread::yield();
    uint64_t seen = 0;
    for (;;) {
      uint64_t v;
      // Relaxed is not enough to be a fair measure of a handoff that carries
      // data: acquire/release, as a queue would use.
      while ((v = ping.v.load(std::memory_order_acquire)) == seen) {
      }
      if (v == kStop) break;
      seen = v;
      pong.v.store(v, std::memory_order_release);
    }
  });
  std::thread lead([&] {
    while (!pinned.load()) std::this_thread::yield();
    const uint64_t start = now_ns();
    uint64_t i = 0;
    while (per_rt.size() < kGroups && now_ns() - start < 300000000) {
      const uint64_t t0 = now_ns();
      for (int k = 0; k < kGroup; ++k) {
        ++i;
        ping.v.store(i, std::memory_order_release);
        while (pong.v.load(std::memory_order_acquire) != i) {
        }
      }
      per_rt.push_back((now_ns() - t0) / kGroup);
    }
    ping.v.store(kStop, std::memory_order_release);
  });
  pin(echo, cpus[1]);
  pin(lead, cpus[0]);
  pinned.store(true);
  lead.join();
  echo.join();
  *samples_out = per_rt.size() * kGroup;
  return double(percentile(per_rt, 0.50));
}

// ---- the software provider's knobs (absent with real FlagCX) --------------------

using SetKnob = int (*)(int, uint64_t);

SetKnob knob_setter() {
  static auto set = reinterpret_cast<SetKnob>(dlsym(RTLD_DEFAULT, "flagcxSwSetKnob"));
  return set;
}

void set_latency_ns(uint64_t ns) {
  if (SetKnob set = knob_setter()) set(FLAGCX_SW_KNOB_LATENCY_NS, ns);
}

// The modeled NIC (0 Gb/s: off, copy mode). nic_* scenarios mean nothing
// without it, so a FlagCX without the knobs (real FlagCX, an older provider)
// stops the run.
void set_nic(uint64_t gbps, uint64_t latency_ns) {
  SetKnob set = knob_setter();
  if (!set) die("nic scenarios need the software provider's modeled NIC (no flagcxSwSetKnob)");
  if (set(FLAGCX_SW_KNOB_NIC_GBPS, gbps) != 0 ||
      set(FLAGCX_SW_KNOB_NIC_LATENCY_NS, latency_ns) != 0)
    die("the loaded FlagCX provider has no modeled NIC (knobs NIC_GBPS/NIC_LATENCY_NS refused)");
}

// ---- a flagcx-sw-peer child process ----------------------------------------------

struct PeerProcess {
  explicit PeerProcess(const std::string &bin, size_t size) {
    int in[2], out[2];
    if (pipe(in) != 0 || pipe(out) != 0) die("pipe");
    pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
      dup2(in[0], 0);
      dup2(out[1], 1);
      close(in[1]);
      close(out[0]);
      std::string sz = std::to_string(size);
      execl(bin.c_str(), bin.c_str(), "--size", sz.c_str(), (char *)nullptr);
      _exit(127);
    }
    close(in[0]);
    close(out[1]);
    to = fdopen(in[1], "w");
    from = fdopen(out[0], "r");
    char line[512];
    if (!std::fgets(line, sizeof line, from)) die("flagcx-sw-peer did not start: " + bin);
    char ep[128];
    unsigned long long a = 0;
    if (std::sscanf(line, "ready endpoint=%127s addr=%llx", ep, &a) != 2)
      die(std::string("flagcx-sw-peer said: ") + line);
    endpoint = ep;
    addr = a;
  }
  ~PeerProcess() {
    std::fputs("exit\n", to);
    std::fclose(to);
    std::fclose(from);
    int st = 0;
    waitpid(pid, &st, 0);
  }
  pid_t pid;
  FILE *to, *from;
  std::string endpoint;
  uint64_t addr = 0;
};

// ---- the transport under test (baseline or, preloaded, Rust) ----------------------

// Per-op bookkeeping shared with the completion callback: submit time, and
// where to account the completion.
struct Ledger {
  explicit Ledger(size_t n) : submitted_at(n), lat(n), finished(n) {}
  std::vector<uint64_t> submitted_at;
  std::vector<uint64_t> lat;
  // Set (release) after lat[i] is written; the submitting lane reads it.
  std::vector<std::atomic<uint8_t>> finished;
  std::atomic<uint64_t> done{0};
  std::atomic<uint64_t> failed{0};
};

void on_complete(void *ctx, uint64_t user_data, mcfx_status status) {
  auto *l = static_cast<Ledger *>(ctx);
  l->lat[user_data] = now_ns() - l->submitted_at[user_data];
  if (status != MCFX_OK) l->failed.fetch_add(1, std::memory_order_relaxed);
  l->finished[user_data].store(1, std::memory_order_release);
  l->done.fetch_add(1, std::memory_order_release);
}

struct Directory {
  std::vector<std::string> endpoints; // index = peer id
};

int32_t resolve(void *ctx, uint64_t peer, char *buf, size_t cap) {
  auto *d = static_cast<Directory *>(ctx);
  if (peer >= d->endpoints.size() || d->endpoints[peer].size() >= cap) return -1;
  std::memcpy(buf, d->endpoints[peer].c_str(), d->endpoints[peer].size() + 1);
  return 0;
}

// Adjusts a transport's config before mcfx_create.
using ConfigTweak = std::function<void(mcfx_config &)>;

struct Transport {
  // The per-op scenarios: completions go to a Ledger; a queue of 8192.
  Transport(Ledger *ledger, Directory *dir)
      : Transport(on_complete, ledger, dir, [](mcfx_config &c) { c.queue_capacity = 8192; }) {}
  // Any completion callback; the config is mcfx_config_init's defaults
  // changed by `tweak`.
  Transport(mcfx_complete_fn fn, void *ctx, Directory *dir, const ConfigTweak &tweak) {
    mcfx_config c;
    mcfx_config_init(&c, sizeof c);
    c.on_complete = fn;
    c.complete_ctx = ctx;
    c.resolve = resolve;
    c.resolve_ctx = dir;
    if (tweak) tweak(c);
    // AB_MCFX_FLAGS: MCFX_FLAG_* bits for every transport of the run (e.g. 2,
    // MCFX_FLAG_NO_PIN_ASLEEP), to try a setting without changing the
    // defaults the reported runs use. The C++ baseline ignores flags.
    if (const char *f = std::getenv("AB_MCFX_FLAGS")) c.flags |= uint32_t(std::strtoul(f, nullptr, 0));
    if (mcfx_create(&c, &t) != MCFX_OK) die("mcfx_create failed");
    char buf[128];
    size_t len = 0;
    mcfx_local_endpoint(t, buf, sizeof buf, &len);
    endpoint.assign(buf, len);
  }
  ~Transport() { mcfx_destroy(t); }
  void reg(const Buffer &b) {
    if (mcfx_register(t, b.data, b.len) != MCFX_OK) die("mcfx_register failed");
  }
  mcfx_transport *t = nullptr;
  std::string endpoint;
};

struct Workload {
  std::string scenario;
  size_t size = 4096;    // bytes per op
  uint64_t ops = 10000;  // measured ops per lane
  uint64_t warmup = 1000;
  int lanes = 1;         // submitting threads
  int window = 1;        // ops in flight per lane
  int batch = 1;         // ops per submit call (== window when > 1)
  int peers = 1;         // target transports, round-robin
  bool xproc = false;    // target is a flagcx-sw-peer process
  uint64_t nic_gbps = 0; // modeled NIC link (0: copy mode)
  uint64_t nic_latency_ns = 0;
  int gap_us = 0;        // pause before each submit (bursty traffic)
  int busy = 0;          // busy-loop processes beside it (busy_*)
  // Waiting threads only spin (pause instruction), never nap: Mooncake's
  // callers poll their completions in a loop (busy_*).
  bool spin_wait = false;
  // Bound of the measured phase: lanes stop submitting after this long and
  // report the ops they finished. Every scenario has one (workloads());
  // only a host far slower than usual reaches it outside busy_*.
  double max_seconds = 0;
};

// Runs a workload through mcfx_submit: each lane keeps `window` ops in
// flight, submitting `batch` at a time, until it sent warmup + ops.
Result run_transport(const Workload &w, const std::string &peer_bin) {
  // busy_*: the other processes spin from before the transports exist
  // until the measured phase is over.
  std::unique_ptr<BusyLoad> busy;
  if (w.busy > 0) busy.reset(new BusyLoad(w.busy, 120));
  const uint64_t per_lane = w.warmup + w.ops;
  Ledger ledger(per_lane * w.lanes);
  Directory dir;
  dir.endpoints.resize(w.peers + 1);
  std::vector<std::unique_ptr<Transport>> targets;
  std::vector<std::unique_ptr<Buffer>> dst;
  std::unique_ptr<PeerProcess> proc;
  std::vector<uint64_t> remote(w.peers + 1);
  if (w.xproc) {
    proc.reset(new PeerProcess(peer_bin, w.size * slots_for(w.size)));
    dir.endpoints[1] = proc->endpoint;
    remote[1] = proc->addr;
  } else {
    for (int p = 1; p <= w.peers; ++p) {
      targets.emplace_back(new Transport(&ledger, &dir));
      dst.emplace_back(new Buffer(w.size * slots_for(w.size)));
      targets.back()->reg(*dst.back());
      dir.endpoints[p] = targets.back()->endpoint;
      remote[p] = dst.back()->addr();
    }
  }
  Transport init(&ledger, &dir);
  Buffer src(w.size * slots_for(w.size));
  init.reg(src);

  std::vector<std::thread> threads;
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  // A lane's ops carry user_data in [lane * per_lane, (lane + 1) * per_lane);
  // it counts its finished ops oldest-first, which is enough to bound how
  // many it has in flight (an early finisher behind a slow one only delays
  // the next submit, never lets the window grow).
  uint64_t t_begin = 0, t_end = 0;
  std::atomic<int> warmed{0};
  std::atomic<uint64_t> t_begin_atomic{0}, t_end_atomic{0};
  // The bench's own threads, left out of the CPU accounting: this (main)
  // thread and the lanes (each adds itself before `ready`).
  std::vector<pid_t> own(1 + w.lanes, 0);
  own[0] = gettid_();
  CpuSample cpu_before, cpu_after;
  uint64_t proc_before = 0, proc_after = 0;
  std::atomic<int> lanes_done{0};
  // Where each lane's measured ops end (per_lane, or fewer when the time
  // bound stopped it).
  std::vector<uint64_t> lane_end(w.lanes, per_lane);
  const uint64_t cap_ns = uint64_t(w.max_seconds * 1e9);
  auto lane_fn = [&](int lane) {
    const uint64_t base = lane * per_lane;
    std::vector<mcfx_op> ops(w.batch);
    own[1 + lane] = gettid_();
    {
      char name[16];
      std::snprintf(name, sizeof name, "ab-lane-%d", lane);
      pthread_setname_np(pthread_self(), name);
    }
    ready.fetch_add(1);
    while (!go.load(std::memory_order_acquire)) cpu_relax();
    uint64_t sent = 0, finished = 0, idle = 0, last_t0 = 0;
    // Two phases: warm-up ops, then (once every lane is warm) measured ops.
    for (int phase = 0; phase < 2; ++phase) {
      uint64_t end = phase == 0 ? w.warmup : per_lane;
      while (finished < end) {
        // Count this lane's finished ops oldest-first: enough to bound how
        // many are in flight (an early finisher behind a slow one only
        // delays the next submit, never widens the window).
        while (finished < sent &&
               ledger.finished[base + finished].load(std::memory_order_acquire) != 0)
          ++finished;
        if (sent < end && sent - finished + w.batch <= static_cast<uint64_t>(w.window)) {
          // The time bound, against the previous submit's timestamp (no
          // extra clock read per op).
          const uint64_t since = t_begin_atomic.load(std::memory_order_relaxed);
          if (phase == 1 && cap_ns > 0 && last_t0 > since && last_t0 - since > cap_ns) {
            end = sent; // time is up: finish what is in flight
            lane_end[lane] = end;
            continue;
          }
          int n = static_cast<int>(std::min<uint64_t>(w.batch, end - sent));
          if (w.gap_us > 0) std::this_thread::sleep_for(std::chrono::microseconds(w.gap_us));
          uint64_t t0 = now_ns();
          last_t0 = t0;
          for (int i = 0; i < n; ++i) {
            uint64_t ud = base + sent + i;
            int peer = 1 + static_cast<int>((sent + i) % w.peers);
            size_t slot = (sent + i) % slots_for(w.size);
            ledger.submitted_at[ud] = t0;
            mcfx_op &o = ops[i];
            std::memset(&o, 0, sizeof o);
            o.opcode = MCFX_OP_WRITE;
            o.local_addr = src.data + slot * w.size;
            o.length = w.size;
            o.peer_id = peer;
            o.remote_addr = remote[peer] + slot * w.size;
            o.user_data = ud;
          }
          size_t accepted = 0;
          mcfx_status st = mcfx_submit(init.t, ops.data(), n, &accepted);
          if (st != MCFX_OK && st != MCFX_E_QUEUE_FULL) die("mcfx_submit failed");
          sent += accepted;
          idle = 0;
        } else if (w.spin_wait) {
          poll_turn(init.t);
        } else {
          wait_a_little(&idle);
        }
      }
      if (phase == 0) {
        // The last lane to warm up samples the transport's CPU clocks and
        // starts the clock; the lanes themselves keep time, since the main
        // thread may not get a core promptly.
        if (warmed.fetch_add(1) + 1 == w.lanes) {
          cpu_before = sample_threads(own);
          proc_before = process_cpu_ns();
          t_begin_atomic.store(now_ns());
        }
        while (warmed.load() < w.lanes) cpu_relax();
      }
    }
    uint64_t t = now_ns(), prev = t_end_atomic.load();
    while (prev < t && !t_end_atomic.compare_exchange_weak(prev, t)) {
    }
    // The last lane to finish samples again, before the transport's threads
    // idle past the end of the measured interval.
    if (lanes_done.fetch_add(1) + 1 == w.lanes) {
      proc_after = process_cpu_ns();
      cpu_after = sample_threads(own);
    }
  };
  for (int l = 0; l < w.lanes; ++l) threads.emplace_back(lane_fn, l);
  while (ready.load() < w.lanes) std::this_thread::yield();
  go.store(true, std::memory_order_release);
  for (auto &t : threads) t.join();
  busy.reset();
  t_begin = t_begin_atomic.load();
  t_end = t_end_atomic.load();
  if (ledger.failed.load()) die("ops failed in " + w.scenario);

  Result r;
  r.scenario = w.scenario;
  r.ops = 0;
  for (int l = 0; l < w.lanes; ++l) {
    for (uint64_t i = w.warmup; i < lane_end[l]; ++i) r.lat.push_back(ledger.lat[l * per_lane + i]);
    r.ops += lane_end[l] - w.warmup;
  }
  // Throughput of the measured phase only.
  r.bytes = r.ops * w.size;
  r.seconds = (t_end - t_begin) / 1e9;
  r.nic_gbps = w.nic_gbps;
  r.busy = w.busy;
  account_cpu(r, cpu_before, cpu_after);
  r.has_proc_cpu = true;
  r.proc_cpu_ns = proc_after - proc_before;
  return r;
}

// ---- raw FlagCX on the submitting thread -------------------------------------------

Result run_raw(const Workload &w, const std::string &peer_bin) {
  std::unique_ptr<BusyLoad> busy;
  if (w.busy > 0) busy.reset(new BusyLoad(w.busy, 120));
  FlagcxP2pEngine *a = flagcxP2pEngineCreate();
  FlagcxP2pEngine *b = nullptr;
  if (!a) die("flagcxP2pEngineCreate failed");
  std::unique_ptr<PeerProcess> proc;
  std::unique_ptr<Buffer> dst;
  std::string endpoint;
  uint64_t remote = 0;
  if (w.xproc) {
    proc.reset(new PeerProcess(peer_bin, w.size * slots_for(w.size)));
    endpoint = proc->endpoint;
    remote = proc->addr;
  } else {
    b = flagcxP2pEngineCreate();
    flagcxP2pEngineStartRpcServer(b);
    dst.reset(new Buffer(w.size * slots_for(w.size)));
    FlagcxP2pMr mr = 0;
    flagcxP2pEngineReg(b, dst->addr(), dst->len, mr);
    endpoint = "127.0.0.1:" + std::to_string(flagcxP2pEngineGetRpcPort(b));
    remote = dst->addr();
  }
  Buffer src(w.size * slots_for(w.size));
  FlagcxP2pMr smr = 0;
  flagcxP2pEngineReg(a, src.addr(), src.len, smr);
  FlagcxP2pConn *conn = flagcxP2pEngineGetConn(a, endpoint.c_str());
  if (!conn) die("raw GetConn failed");
  std::vector<FlagcxP2pMr> mrs(w.batch, smr);
  std::vector<void *> locals(w.batch);
  std::vector<size_t> sizes(w.batch, w.size);
  std::vector<FlagcxP2pRdmaDesc> descs(w.batch);
  const size_t slots = slots_for(w.size);
  Result r;
  r.scenario = w.scenario;
  r.nic_gbps = w.nic_gbps;
  const uint64_t total = w.warmup + w.ops;
  // Up to `depth` vector calls in flight (window / batch; 1 in every
  // scenario but nic_window4x64_4k), polled oldest first: on a FIFO link the
  // oldest finishes first.
  const int depth = std::max(1, w.window / w.batch);
  struct InFlight {
    uint64_t id, t0, first;
  };
  std::vector<InFlight> ring(depth);
  uint64_t t_begin = now_ns(), proc_before = 0;
  const uint64_t cap_ns = uint64_t(w.max_seconds * 1e9);
  // Two phases, as for a transport: warm-up ops, drained, then measured ops.
  uint64_t sent = 0, done = 0, end = 0, last_t0 = 0;
  for (int phase = 0; phase < 2; ++phase) {
    end = phase == 0 ? w.warmup : total;
    if (phase == 1) {
      proc_before = process_cpu_ns();
      t_begin = now_ns();
    }
    while (done < end) {
      if (sent < end && sent - done < uint64_t(depth) * w.batch) {
        // The time bound, against the previous batch's timestamp.
        if (phase == 1 && cap_ns > 0 && last_t0 > t_begin && last_t0 - t_begin > cap_ns) {
          end = sent; // time is up: finish what is in flight
          continue;
        }
        InFlight &f = ring[(sent / w.batch) % depth];
        if (w.gap_us > 0) std::this_thread::sleep_for(std::chrono::microseconds(w.gap_us));
        f.t0 = now_ns();
        last_t0 = f.t0;
        f.first = sent;
        // Same work per op as a transport: rotate over the slots, one
        // descriptor lookup per op.
        for (int k = 0; k < w.batch; ++k) {
          const size_t slot = (sent + k) % slots;
          locals[k] = src.data + slot * w.size;
          if (flagcxP2pEngineMakeDesc(conn, remote + slot * w.size, w.size, &descs[k]) != 0)
            die("raw MakeDesc failed");
        }
        if (flagcxP2pEngineWriteVector(conn, mrs, locals, sizes, descs, w.batch, &f.id) != 0)
          die("raw WriteVector failed");
        sent += w.batch;
        if (sent - done < uint64_t(depth) * w.batch && sent < end) continue;
      }
      InFlight &f = ring[(done / w.batch) % depth];
      uint64_t idle = 0;
      while (!flagcxP2pEngineXferStatus(conn, f.id)) {
        if (w.spin_wait)
          cpu_relax();
        else
          wait_a_little(&idle);
      }
      uint64_t dt = now_ns() - f.t0;
      if (f.first >= w.warmup)
        for (int k = 0; k < w.batch; ++k) r.lat.push_back(dt);
      done += w.batch;
    }
  }
  r.seconds = (now_ns() - t_begin) / 1e9;
  r.has_proc_cpu = true;
  r.proc_cpu_ns = process_cpu_ns() - proc_before;
  busy.reset();
  r.ops = end - w.warmup;
  r.bytes = r.ops * w.size;
  r.busy = w.busy;
  flagcxP2pEngineDestroy(a);
  if (b) flagcxP2pEngineDestroy(b);
  return r;
}

// ---- requests: kv_* scenarios and the scaling curves -----------------------------

// A request is one submit of many ops (a KV cache's pages, or a batch of 64)
// by one thread that then polls until all of them completed, as Mooncake's
// callers do (getTransferStatus loops, the Python sync calls); then the
// thread's next request. T threads do so at once.

// One op of a request, by region index (the runners turn it into addresses).
struct OpSpec {
  uint32_t lreg = 0; // initiator region
  uint64_t loff = 0; // offset in it
  uint32_t peer = 0; // target, 0-based
  uint32_t rreg = 0; // region of that target
  uint64_t roff = 0; // offset in it
  uint32_t len = 0;
};

struct Shape {
  std::string scenario;
  int threads = 1;
  int peers = 1;              // target transports (raw: target engines)
  uint32_t lregions = 1;      // regions on the initiator
  uint32_t rregions = 1;      // regions on each target
  size_t region_bytes = 4096; // each region
  uint32_t ops_per_request = 64;
  // Fills op i of thread t's request number `request` (0-based, warm-up
  // included).
  std::function<void(int t, uint64_t request, uint32_t i, OpSpec &)> op;
  uint64_t nic_gbps = 200, nic_latency_ns = 2000;
  int busy = 0;             // busy-loop processes beside it
  int warmup_requests = 2;  // per thread, before the measured window
  double seconds = 2.0;     // the measured window
  uint64_t max_requests = 100000; // per thread, measured
  bool quiet_targets = false; // targets get connect_threads = 1
};

// Anonymous memory that is never touched: NIC-mode scenarios move no bytes,
// so regions cost address space, not resident memory (and the scaling
// curves see only the transports' own resident bytes per region).
struct Mapping {
  explicit Mapping(size_t n) : len(std::max<size_t>(n, 4096)) {
    void *p = mmap(nullptr, len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) die("mmap of " + std::to_string(len) + " bytes failed");
    data = static_cast<char *>(p);
  }
  ~Mapping() { munmap(data, len); }
  Mapping(const Mapping &) = delete;
  Mapping &operator=(const Mapping &) = delete;
  char *data;
  size_t len;
};

// Completion counters of one requesting thread (its ops carry its index as
// user_data). `failed` is bumped before `done`, whose release publishes it.
struct alignas(128) RequestLane {
  std::atomic<uint64_t> done{0};
  std::atomic<uint64_t> failed{0};
};

void on_request_op(void *ctx, uint64_t lane, mcfx_status status) {
  RequestLane &l = static_cast<RequestLane *>(ctx)[lane];
  if (status != MCFX_OK) l.failed.fetch_add(1, std::memory_order_relaxed);
  l.done.fetch_add(1, std::memory_order_release);
}

// A request that did not finish in this long counts as failed and stops the
// scenario (ops time out at 30 s by default, so a transport reports long
// before this).
constexpr uint64_t kRequestGiveUpNs = 60ull * 1000000000;

struct RequestRecord {
  uint64_t end_ns, lat_ns, ops, bytes;
};

// What one requesting thread saw (written by that thread only).
struct LaneStats {
  std::vector<RequestRecord> measured;
  uint64_t requests = 0, failed_requests = 0, failed_ops = 0, queue_full = 0, submit_errors = 0;
};

// The measured window of a request scenario: opened by the last thread to
// finish its warm-up, closed by the first thread that finishes a request
// after `seconds` (or runs out of requests, or gives up on one). Each end
// samples the CPU clocks right at its timestamp; a request counts if it
// ended inside the window.
struct Window {
  Window(int lanes, double seconds) : lanes(lanes), length_ns(uint64_t(seconds * 1e9)) {}
  // Called by each thread after its warm-up; returns when all are warm.
  void arrive(const std::function<void()> &at_begin) {
    if (warmed.fetch_add(1) + 1 == lanes) {
      at_begin();
      t_begin.store(now_ns(), std::memory_order_release);
    }
    while (t_begin.load(std::memory_order_acquire) == 0) std::this_thread::yield();
  }
  // After each measured request: true when the thread should stop.
  bool over(bool force, const std::function<void()> &at_end) {
    if (closing.load(std::memory_order_acquire)) return true;
    if (!force && now_ns() - t_begin.load(std::memory_order_relaxed) < length_ns) return false;
    bool expected = false;
    if (closing.compare_exchange_strong(expected, true)) {
      t_end = now_ns();
      at_end();
    }
    return true;
  }
  const int lanes;
  const uint64_t length_ns;
  std::atomic<int> warmed{0};
  std::atomic<uint64_t> t_begin{0};
  std::atomic<bool> closing{false};
  uint64_t t_end = 0; // read after the threads joined
};

// Adds what the threads saw to r: requests that ended inside the window.
void collect(Result &r, const std::vector<LaneStats> &stats, const Window &win) {
  r.requests_mode = true;
  for (const LaneStats &st : stats) {
    r.requests_total += st.requests;
    r.failed_requests += st.failed_requests;
    r.failed_ops += st.failed_ops;
    r.queue_full += st.queue_full;
    r.submit_errors += st.submit_errors;
    for (const RequestRecord &q : st.measured) {
      if (q.end_ns > win.t_end) continue;
      r.lat.push_back(q.lat_ns);
      r.ops += q.ops;
      r.bytes += q.bytes;
      ++r.requests;
    }
  }
  r.seconds = (win.t_end - win.t_begin.load()) / 1e9;
}

void name_thread(const char *prefix, int i) {
  char name[16];
  std::snprintf(name, sizeof name, "%s%d", prefix, i);
  pthread_setname_np(pthread_self(), name);
}

// Runs a request shape through mcfx_submit (the C++ baseline, or Rust when
// preloaded). Transports use mcfx_config_init's defaults (a queue of 4096),
// except max_regions where a shape needs more regions than the default, and
// connect_threads = 1 on targets for `quiet_targets`. A submit refused with
// MCFX_E_QUEUE_FULL is retried for the rest of the request after a 10 us
// sleep (counted: queue_full_waits); any other refusal fails the rest of the
// request (counted, reported: never hidden).
// What a request scenario's result says of its shape (both implementations'
// runners and raw's alike).
void describe_shape(Result &r, const Shape &sh, uint64_t n) {
  r.nic_gbps = sh.nic_gbps;
  r.busy = sh.busy;
  r.threads = sh.threads;
  r.peers = sh.peers;
  r.ops_per_request = n;
  r.regions = sh.lregions + uint64_t(sh.peers) * sh.rregions;
}

Result run_requests(const Shape &sh) {
  std::unique_ptr<BusyLoad> busy;
  if (sh.busy > 0) busy.reset(new BusyLoad(sh.busy, 120));
  const uint32_t n = sh.ops_per_request;
  std::vector<RequestLane> lanes(sh.threads);
  std::vector<LaneStats> stats(sh.threads);
  Directory dir;
  dir.endpoints.resize(sh.peers + 1);
  Result r;
  r.scenario = sh.scenario;
  r.rss_start = vm_rss_bytes();
  auto tweak_for = [&](uint32_t regions, bool target) {
    return [regions, target, &sh](mcfx_config &c) {
      if (regions + 64 > c.max_regions) c.max_regions = regions + 64;
      if (target && sh.quiet_targets) c.connect_threads = 1;
    };
  };
  // The memory outlives the transports that register it (declared first).
  Mapping lmap(size_t(sh.lregions) * sh.region_bytes);
  std::vector<std::unique_ptr<Mapping>> rmaps;
  for (int p = 0; p < sh.peers; ++p)
    rmaps.emplace_back(new Mapping(size_t(sh.rregions) * sh.region_bytes));
  std::vector<std::unique_ptr<Transport>> targets;
  for (int p = 1; p <= sh.peers; ++p) {
    targets.emplace_back(
        new Transport(on_request_op, lanes.data(), &dir, tweak_for(sh.rregions, true)));
    dir.endpoints[p] = targets.back()->endpoint;
  }
  Transport init(on_request_op, lanes.data(), &dir, tweak_for(sh.lregions, false));
  r.rss_created = vm_rss_bytes();
  // Every region registered separately (one mcfx_register_batch call per
  // transport, as Mooncake's batch_register_memory does).
  auto register_all = [&](mcfx_transport *t, char *base, uint32_t count) {
    std::vector<mcfx_region> regs(count);
    for (uint32_t i = 0; i < count; ++i) regs[i] = {base + size_t(i) * sh.region_bytes, sh.region_bytes};
    if (mcfx_register_batch(t, regs.data(), count) != MCFX_OK) {
      char msg[256];
      mcfx_last_error(msg, sizeof msg);
      die(std::string("mcfx_register_batch failed: ") + msg);
    }
  };
  const uint64_t reg0 = now_ns();
  for (int p = 0; p < sh.peers; ++p) register_all(targets[p]->t, rmaps[p]->data, sh.rregions);
  register_all(init.t, lmap.data, sh.lregions);
  r.register_ns = now_ns() - reg0;
  r.rss_registered = vm_rss_bytes();

  Window win(sh.threads, sh.seconds);
  std::vector<pid_t> own(1 + sh.threads, 0);
  own[0] = gettid_();
  CpuSample cpu_before, cpu_after;
  uint64_t proc_before = 0, proc_after = 0;
  auto at_begin = [&] {
    r.rss_connected = vm_rss_bytes(); // every peer connected in the warm-up
    cpu_before = sample_threads(own);
    proc_before = process_cpu_ns();
  };
  auto at_end = [&] {
    proc_after = process_cpu_ns();
    cpu_after = sample_threads(own);
  };
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  auto lane_fn = [&](int lane) {
    own[1 + lane] = gettid_();
    name_thread("ab-req-", lane);
    RequestLane &cl = lanes[lane];
    LaneStats &st = stats[lane];
    st.measured.reserve(std::min<uint64_t>(sh.max_requests, 1 << 12));
    std::vector<mcfx_op> ops(n);
    ready.fetch_add(1);
    while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
    uint64_t expected = 0; // ops of this thread accepted so far
    const uint64_t last = sh.warmup_requests + sh.max_requests;
    for (uint64_t q = 0; q < last; ++q) {
      const bool measuring = q >= uint64_t(sh.warmup_requests);
      if (q == uint64_t(sh.warmup_requests)) win.arrive(at_begin);
      uint64_t bytes = 0;
      for (uint32_t i = 0; i < n; ++i) {
        OpSpec s;
        sh.op(lane, q, i, s);
        mcfx_op &o = ops[i];
        std::memset(&o, 0, sizeof o);
        o.opcode = MCFX_OP_WRITE;
        o.local_addr = lmap.data + size_t(s.lreg) * sh.region_bytes + s.loff;
        o.length = s.len;
        o.peer_id = 1 + s.peer;
        o.remote_addr = reinterpret_cast<uintptr_t>(rmaps[s.peer]->data) +
                        uint64_t(s.rreg) * sh.region_bytes + s.roff;
        o.user_data = lane;
        bytes += s.len;
      }
      // Every earlier op of this thread completed: `failed` is settled.
      const uint64_t failed0 = cl.failed.load(std::memory_order_acquire);
      const uint64_t t0 = now_ns();
      size_t off = 0;
      uint64_t refused = 0;
      while (off < n) {
        size_t accepted = 0;
        const mcfx_status s = mcfx_submit(init.t, ops.data() + off, n - off, &accepted);
        off += accepted;
        expected += accepted;
        if (s == MCFX_OK) break;
        if (s == MCFX_E_QUEUE_FULL && now_ns() - t0 < kRequestGiveUpNs) {
          ++st.queue_full;
          // Make room where the transport lets the caller (as the adapter
          // does), else wait a little for it.
          uint64_t completed = 0;
          mcfx_progress(init.t, &completed);
          if (completed == 0) std::this_thread::sleep_for(std::chrono::microseconds(10));
          continue;
        }
        ++st.submit_errors;
        refused = n - off;
        break;
      }
      // Poll, as Mooncake's callers do: spin on this request's completions.
      bool gave_up = false;
      uint32_t spins = 0;
      while (cl.done.load(std::memory_order_acquire) < expected) {
        poll_turn(init.t);
        if ((++spins & 4095) == 0 && now_ns() - t0 > kRequestGiveUpNs) {
          gave_up = true;
          break;
        }
      }
      const uint64_t t1 = now_ns();
      const uint64_t failed = cl.failed.load(std::memory_order_acquire) - failed0 + refused;
      ++st.requests;
      if (failed > 0 || gave_up) {
        ++st.failed_requests;
        st.failed_ops += gave_up ? n : failed;
      }
      if (gave_up) {
        if (!measuring) win.arrive(at_begin); // let the others through the barrier
        win.over(true, at_end);
        break;
      }
      if (measuring) {
        const uint64_t done_ops = n - refused;
        st.measured.push_back({t1, t1 - t0, done_ops, bytes * done_ops / n});
        if (win.over(q + 1 == last, at_end)) break;
      }
    }
  };
  std::vector<std::thread> threads;
  for (int l = 0; l < sh.threads; ++l) threads.emplace_back(lane_fn, l);
  while (ready.load() < sh.threads) std::this_thread::yield();
  go.store(true, std::memory_order_release);
  for (auto &t : threads) t.join();
  busy.reset();
  collect(r, stats, win);
  describe_shape(r, sh, n);
  account_cpu(r, cpu_before, cpu_after);
  mcfx_stats st{};
  st.struct_size = sizeof st;
  if (mcfx_get_stats(init.t, &st) == MCFX_OK && st.submitted > 0)
    r.calls_per_op = double(st.flagcx_transfers) / double(st.submitted);
  r.has_proc_cpu = true;
  r.proc_cpu_ns = proc_after - proc_before;
  return r;
}

// The raw floor of a request shape: FlagCX called directly by the
// requesting threads (kv_*: one thread). A request's ops, grouped by peer,
// go out as WriteVector calls of up to 64 entries each (one descriptor
// lookup per op, as a transport does), all posted before the thread polls
// their transfer ids, oldest first, until every one is done.
Result run_requests_raw(const Shape &sh) {
  std::unique_ptr<BusyLoad> busy;
  if (sh.busy > 0) busy.reset(new BusyLoad(sh.busy, 120));
  constexpr uint32_t kVector = 64;
  const uint32_t n = sh.ops_per_request;
  std::vector<LaneStats> stats(sh.threads);
  Result r;
  r.scenario = sh.scenario;
  r.rss_start = vm_rss_bytes();
  FlagcxP2pEngine *a = flagcxP2pEngineCreate();
  if (!a) die("flagcxP2pEngineCreate failed");
  std::vector<FlagcxP2pEngine *> targets;
  std::vector<std::string> endpoints;
  for (int p = 0; p < sh.peers; ++p) {
    FlagcxP2pEngine *b = flagcxP2pEngineCreate();
    if (!b || flagcxP2pEngineStartRpcServer(b) != 0) die("raw target engine failed");
    targets.push_back(b);
    endpoints.push_back("127.0.0.1:" + std::to_string(flagcxP2pEngineGetRpcPort(b)));
  }
  r.rss_created = vm_rss_bytes();
  Mapping lmap(size_t(sh.lregions) * sh.region_bytes);
  std::vector<std::unique_ptr<Mapping>> rmaps;
  std::vector<FlagcxP2pMr> lmr(sh.lregions);
  std::vector<std::vector<FlagcxP2pMr>> rmr(sh.peers, std::vector<FlagcxP2pMr>(sh.rregions));
  const uint64_t reg0 = now_ns();
  for (uint32_t i = 0; i < sh.lregions; ++i)
    if (flagcxP2pEngineReg(a, reinterpret_cast<uintptr_t>(lmap.data) + size_t(i) * sh.region_bytes,
                           sh.region_bytes, lmr[i]) != 0)
      die("raw register failed");
  for (int p = 0; p < sh.peers; ++p) {
    rmaps.emplace_back(new Mapping(size_t(sh.rregions) * sh.region_bytes));
    for (uint32_t i = 0; i < sh.rregions; ++i)
      if (flagcxP2pEngineReg(targets[p],
                             reinterpret_cast<uintptr_t>(rmaps.back()->data) +
                                 size_t(i) * sh.region_bytes,
                             sh.region_bytes, rmr[p][i]) != 0)
        die("raw register failed");
  }
  r.register_ns = now_ns() - reg0;
  r.rss_registered = vm_rss_bytes();
  // Connections after the registrations (a connection knows the regions
  // its peer had when it was made); shared by the threads.
  std::vector<FlagcxP2pConn *> conns(sh.peers);
  for (int p = 0; p < sh.peers; ++p)
    if (!(conns[p] = flagcxP2pEngineGetConn(a, endpoints[p].c_str()))) die("raw GetConn failed");

  Window win(sh.threads, sh.seconds);
  uint64_t proc_before = 0, proc_after = 0;
  auto at_begin = [&] {
    r.rss_connected = vm_rss_bytes();
    proc_before = process_cpu_ns();
  };
  auto at_end = [&] { proc_after = process_cpu_ns(); };
  auto lane_fn = [&](int lane) {
    name_thread("ab-req-", lane);
    LaneStats &st = stats[lane];
    st.measured.reserve(std::min<uint64_t>(sh.max_requests, 1 << 12));
    std::vector<OpSpec> specs(n);
    std::vector<std::vector<uint32_t>> by_peer(sh.peers);
    std::vector<FlagcxP2pMr> mrs(kVector);
    std::vector<void *> locals(kVector);
    std::vector<size_t> sizes(kVector);
    std::vector<FlagcxP2pRdmaDesc> descs(kVector);
    struct Posted {
      FlagcxP2pConn *conn;
      uint64_t id;
    };
    std::vector<Posted> posted;
    posted.reserve(n);
    const uint64_t last = sh.warmup_requests + sh.max_requests;
    for (uint64_t q = 0; q < last; ++q) {
      const bool measuring = q >= uint64_t(sh.warmup_requests);
      if (q == uint64_t(sh.warmup_requests)) win.arrive(at_begin);
      uint64_t bytes = 0;
      for (auto &v : by_peer) v.clear();
      for (uint32_t i = 0; i < n; ++i) {
        sh.op(lane, q, i, specs[i]);
        by_peer[specs[i].peer].push_back(i);
        bytes += specs[i].len;
      }
      const uint64_t t0 = now_ns();
      posted.clear();
      for (int p = 0; p < sh.peers; ++p) {
        const std::vector<uint32_t> &idx = by_peer[p];
        for (size_t k0 = 0; k0 < idx.size(); k0 += kVector) {
          const int m = int(std::min<size_t>(kVector, idx.size() - k0));
          for (int k = 0; k < m; ++k) {
            const OpSpec &s = specs[idx[k0 + k]];
            mrs[k] = lmr[s.lreg];
            locals[k] = lmap.data + size_t(s.lreg) * sh.region_bytes + s.loff;
            sizes[k] = s.len;
            const uint64_t remote = reinterpret_cast<uintptr_t>(rmaps[p]->data) +
                                    uint64_t(s.rreg) * sh.region_bytes + s.roff;
            if (flagcxP2pEngineMakeDesc(conns[p], remote, s.len, &descs[k]) != 0)
              die("raw MakeDesc failed");
          }
          uint64_t id = 0;
          if (flagcxP2pEngineWriteVector(conns[p], mrs, locals, sizes, descs, m, &id) != 0)
            die("raw WriteVector failed");
          posted.push_back({conns[p], id});
        }
      }
      bool gave_up = false;
      for (const Posted &x : posted) {
        uint32_t spins = 0;
        while (!gave_up && !flagcxP2pEngineXferStatus(x.conn, x.id)) {
          cpu_relax();
          if ((++spins & 4095) == 0 && now_ns() - t0 > kRequestGiveUpNs) gave_up = true;
        }
      }
      const uint64_t t1 = now_ns();
      ++st.requests;
      if (gave_up) {
        ++st.failed_requests;
        st.failed_ops += n;
        if (!measuring) win.arrive(at_begin);
        win.over(true, at_end);
        break;
      }
      if (measuring) {
        st.measured.push_back({t1, t1 - t0, n, bytes});
        if (win.over(q + 1 == last, at_end)) break;
      }
    }
  };
  std::vector<std::thread> threads;
  for (int l = 0; l < sh.threads; ++l) threads.emplace_back(lane_fn, l);
  for (auto &t : threads) t.join();
  busy.reset();
  collect(r, stats, win);
  describe_shape(r, sh, n);
  r.has_proc_cpu = true;
  r.proc_cpu_ns = proc_after - proc_before;
  // A raw thread that gave up leaves ids it never saw finish: the engines
  // are then left to the process's exit rather than destroyed under them.
  bool clean = true;
  for (const LaneStats &st : stats) clean = clean && st.failed_requests == 0;
  if (clean) {
    for (FlagcxP2pMr mr : lmr) flagcxP2pEngineMrDestroy(a, mr);
    flagcxP2pEngineDestroy(a);
    for (int p = 0; p < sh.peers; ++p) {
      for (FlagcxP2pMr mr : rmr[p]) flagcxP2pEngineMrDestroy(targets[p], mr);
      flagcxP2pEngineStopAccept(targets[p]);
      flagcxP2pEngineDestroy(targets[p]);
    }
  }
  return r;
}

// ---- idle CPU of the transport's threads -------------------------------------------

// Process CPU time while a transport sits idle after traffic: reported as the
// share of one core (ops_per_s carries the percentage, latencies are 0).
Result run_idle(double seconds) {
  Ledger ledger(1024);
  Directory dir;
  dir.endpoints.resize(2);
  Transport b(&ledger, &dir);
  dir.endpoints[1] = b.endpoint;
  Transport a(&ledger, &dir);
  Buffer src(4096), dst(4096);
  a.reg(src);
  b.reg(dst);
  for (uint64_t i = 0; i < 1000; ++i) {
    mcfx_op o;
    std::memset(&o, 0, sizeof o);
    o.opcode = MCFX_OP_WRITE;
    o.local_addr = src.data;
    o.length = 64;
    o.peer_id = 1;
    o.remote_addr = dst.addr();
    o.user_data = i;
    ledger.submitted_at[i] = now_ns();
    while (mcfx_submit(a.t, &o, 1, nullptr) != MCFX_OK) cpu_relax();
    while (ledger.done.load() <= i) cpu_relax();
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100)); // past any grace
  auto cpu = [] {
    rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_utime.tv_sec * 1e6 + u.ru_utime.tv_usec + u.ru_stime.tv_sec * 1e6 +
           u.ru_stime.tv_usec;
  };
  double c0 = cpu();
  uint64_t t0 = now_ns();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  double used_us = cpu() - c0;
  double wall_us = (now_ns() - t0) / 1e3;
  Result r;
  r.scenario = "idle_cpu";
  r.cpu_pct = 100.0 * used_us / wall_us;
  return r;
}

std::vector<Workload> workloads(bool quick) {
  auto n = [&](uint64_t full) { return quick ? std::max<uint64_t>(full / 10, 50) : full; };
  std::vector<Workload> v;
  auto single = [&](const char *name, size_t size, uint64_t ops) {
    Workload w;
    w.scenario = name;
    w.size = size;
    w.ops = n(ops);
    w.warmup = w.ops / 10 + 10;
    v.push_back(w);
  };
  single("single_64b", 64, 20000);
  single("single_4k", 4096, 20000);
  single("single_64k", 65536, 10000);
  single("single_1m", 1 << 20, 2000);
  single("single_4k_wire2us", 4096, 20000);
  // Bursty traffic: one 4 KiB op after each 200 us pause, so each op may
  // find the transport's threads asleep (waking one costs tens of us on a
  // VM). Its ops/s reflects the pauses; compare latencies.
  Workload g;
  g.scenario = "gap200us_4k";
  g.ops = n(2000);
  g.warmup = 100;
  g.gap_us = 200;
  v.push_back(g);
  Workload b;
  b.scenario = "batch64_4k";
  // Batch scenarios run 4 000 batches: at 4 M ops/s a thousand took 16 ms,
  // short enough for one scheduler hiccup to move the rate by 10 %.
  b.ops = n(64 * 4000);
  b.warmup = 64 * 20;
  b.window = b.batch = 64;
  v.push_back(b);
  Workload t;
  t.scenario = "threads4_4k";
  t.lanes = 4;
  t.window = 8;
  t.ops = n(20000);
  t.warmup = 500;
  v.push_back(t);
  Workload p;
  p.scenario = "peers4_4k";
  p.peers = 4;
  p.window = 16;
  p.ops = n(40000);
  p.warmup = 1000;
  v.push_back(p);
  Workload x;
  x.scenario = "xproc_4k";
  x.xproc = true;
  x.ops = n(20000);
  x.warmup = 1000;
  v.push_back(x);
  Workload bw;
  bw.scenario = "bw_256m";
  bw.size = 256 << 20;
  bw.ops = quick ? 3 : 24;
  bw.warmup = 1;
  v.push_back(bw);

  // On the modeled NIC: 200 Gb/s (25 GB/s), 2 us. Quick runs keep a fifth
  // of the ops (not a tenth): these measure rates and CPU per op, which
  // need a few thousand ops to settle.
  auto nic = [&](const char *name, size_t size, uint64_t ops, uint64_t warmup) {
    Workload w;
    w.scenario = name;
    w.size = size;
    w.ops = quick ? ops / 5 : ops;
    w.warmup = warmup;
    w.nic_gbps = 200;
    w.nic_latency_ns = 2000;
    return w;
  };
  v.push_back(nic("nic_single_4k", 4096, 20000, 1000));
  Workload nb = nic("nic_batch64_4k", 4096, 64 * 4000, 64 * 20);
  nb.window = nb.batch = 64;
  v.push_back(nb);
  Workload nb64 = nic("nic_batch64_64k", 65536, 64 * 500, 64 * 10);
  nb64.window = nb64.batch = 64;
  v.push_back(nb64);
  Workload nw = nic("nic_window4x64_4k", 4096, 64 * 8000, 64 * 40);
  nw.batch = 64;
  nw.window = 4 * 64;
  v.push_back(nw);
  // 16 peers: each submit carries one op for every peer, 4 submits in flight.
  Workload np = nic("nic_peers16_4k", 4096, 16 * 10000, 16 * 100);
  np.peers = 16;
  np.batch = 16;
  np.window = 64;
  v.push_back(np);
  // 4 submitting threads, 8 single-op submits in flight each (as threads4_4k).
  Workload nt = nic("nic_threads4_4k", 4096, 20000, 500);
  nt.lanes = 4;
  nt.window = 8;
  v.push_back(nt);

  // busy_* (busy2_*): single_4k, a batch of 16 and threads4_4k in copy mode,
  // with a busy loop of another process on every core (two per core), the
  // waiting threads spinning as Mooncake's callers do. Each measured phase
  // stops after 2 s (quick: 0.5 s) with the ops it finished. poll_*: the
  // same waiters on a quiet host (level 0: no busy loop), what a polling
  // host such as Mooncake's tebench sees there. Quick runs leave the second
  // level (busy2_*) out.
  const int cores = int(std::max(1u, std::thread::hardware_concurrency()));
  for (int level = 0; level <= (quick ? 1 : 2); ++level) {
    const std::string pre = level == 0 ? "poll_" : level == 1 ? "busy_" : "busy2_";
    auto busy = [&](const std::string &name) {
      Workload w;
      w.scenario = pre + name;
      w.busy = level * cores;
      w.spin_wait = true;
      w.max_seconds = quick ? 0.5 : 2.0;
      return w;
    };
    // More ops than any implementation finishes in the time bound (raw's
    // may finish them first); short warm-ups: C++ manages ~1k ops/s here.
    Workload bs = busy("single_4k");
    bs.ops = 500000;
    bs.warmup = 200;
    v.push_back(bs);
    Workload bb = busy("batch16_4k");
    bb.ops = 16 * 50000;
    bb.warmup = 16 * 20;
    bb.window = bb.batch = 16;
    v.push_back(bb);
    Workload bt = busy("threads4_4k");
    bt.lanes = 4;
    bt.window = 8;
    bt.ops = 200000;
    bt.warmup = 200;
    v.push_back(bt);
  }
  // The others finish their op counts in well under a second on a quiet
  // host (bw_256m and gap200us_4k in about half a second); the bound keeps
  // a run on a crowded host from taking many times as long.
  for (Workload &w : v)
    if (w.max_seconds == 0) w.max_seconds = quick ? 2.0 : 5.0;
  return v;
}

// kv_*: one request is the KV cache of one finished prefill as vLLM's
// Mooncake connector sends it: `layers` layers, each its own registered
// region on the initiator and on the target (batch_register_memory), one op
// per page and layer (layer by layer), all in one submit
// (batch_transfer_sync_write), from `threads` threads at once (vLLM's pool
// of 10), each polling until its request completed. Thread t's pages are
// [t * pages, (t + 1) * pages) of every layer's region; with several peers,
// thread t sends to peer t % peers. Modeled NIC.
Shape kv_shape(const std::string &name, uint32_t layers, uint32_t page, uint32_t pages,
               int threads, int peers, int busy, bool quick) {
  Shape sh;
  sh.scenario = name;
  sh.threads = threads;
  sh.peers = peers;
  sh.lregions = sh.rregions = layers;
  // Sized for ten threads whatever the thread count (raw runs one).
  sh.region_bytes = size_t(10) * pages * page;
  sh.ops_per_request = layers * pages;
  sh.op = [pages, page, peers](int t, uint64_t, uint32_t i, OpSpec &s) {
    const uint32_t layer = i / pages, j = i % pages;
    s.lreg = s.rreg = layer;
    s.loff = s.roff = (uint64_t(t % 10) * pages + j) * page;
    s.peer = uint32_t(t % peers);
    s.len = page;
  };
  sh.busy = busy;
  sh.warmup_requests = 2;
  sh.seconds = quick ? 0.4 : 1.5;
  return sh;
}

std::vector<Shape> request_shapes(bool quick) {
  const int cores = int(std::max(1u, std::thread::hardware_concurrency()));
  std::vector<Shape> v;
  v.push_back(kv_shape("kv_gqa_32k", 80, 32 << 10, 16, 10, 1, 0, quick));
  v.push_back(kv_shape("kv_mla_72k", 61, 72 << 10, 8, 10, 1, 0, quick));
  v.push_back(kv_shape("kv_small_4k", 32, 4 << 10, 64, 10, 1, 0, quick));
  v.push_back(kv_shape("kv_peers8_32k", 80, 32 << 10, 16, 10, 8, 0, quick));
  v.push_back(kv_shape("busy_kv_gqa_32k", 80, 32 << 10, 16, 10, 1, cores, quick));
  v.push_back(kv_shape("busy_kv_small_4k", 32, 4 << 10, 64, 10, 1, cores, quick));
  if (!quick) { // the second level: full runs only
    v.push_back(kv_shape("busy2_kv_gqa_32k", 80, 32 << 10, 16, 10, 1, 2 * cores, quick));
    v.push_back(kv_shape("busy2_kv_small_4k", 32, 4 << 10, 64, 10, 1, 2 * cores, quick));
  }
  return v;
}

// The scaling curves: nic_batch64_4k traffic (one submit of 64 ops of 4 KiB,
// wait for all of them, next; modeled NIC) as one dimension grows:
// - regions: `x` regions of 4 KiB (one page, never touched) registered on
//   the initiator and `x` on the target; op k of the run uses region k % x
//   on both sides (every op a different region, round-robin);
// - regions_local, regions_remote: the same with `x` regions on one side
//   only and one on the other, to tell which side's lookups a growth comes
//   from (the initiator's: the transport's region tree and holds, FlagCX's
//   local key check; the target's: FlagCX's descriptor and remote checks);
// - peers: `x` target transports in this process (raw: `x` target engines),
//   op k goes to peer k % x; targets have connect_threads = 1;
// - threads: `x` submitting threads, one batch in flight each.
Shape scaling_shape(const std::string &dim, uint64_t x, bool quick) {
  Shape sh;
  sh.scenario = "scaling_" + dim;
  sh.ops_per_request = 64;
  sh.seconds = quick ? 0.3 : 0.5;
  sh.warmup_requests = 20;
  constexpr uint32_t kPage = 4096;
  if (dim == "regions" || dim == "regions_local" || dim == "regions_remote") {
    const bool local = dim != "regions_remote", remote = dim != "regions_local";
    sh.lregions = local ? uint32_t(x) : 1;
    sh.rregions = remote ? uint32_t(x) : 1;
    sh.region_bytes = kPage;
    sh.op = [x, local, remote](int, uint64_t q, uint32_t i, OpSpec &s) {
      const uint32_t reg = uint32_t((q * 64 + i) % x);
      s = {local ? reg : 0, 0, 0, remote ? reg : 0, 0, kPage};
    };
  } else if (dim == "peers") {
    sh.peers = int(x);
    sh.quiet_targets = true;
    sh.region_bytes = 64 * kPage;
    // Every peer connected in the warm-up.
    sh.warmup_requests = std::max<int>(20, int((x + 63) / 64) + 2);
    sh.op = [x](int, uint64_t q, uint32_t i, OpSpec &s) {
      s = {0, uint64_t(i) * kPage, uint32_t((q * 64 + i) % x), 0, uint64_t(i) * kPage, kPage};
    };
  } else if (dim == "threads") {
    sh.threads = int(x);
    sh.region_bytes = size_t(x) * 64 * kPage;
    sh.op = [](int t, uint64_t, uint32_t i, OpSpec &s) {
      const uint64_t off = (uint64_t(t) * 64 + i) * kPage;
      s = {0, off, 0, 0, off, kPage};
    };
  } else {
    die("unknown scaling dimension " + dim +
        " (regions, regions_local, regions_remote, peers, threads)");
  }
  return sh;
}

// Scenarios the raw (no transport) floor applies to: one submitting thread,
// one peer, whole batches in flight.
bool raw_applies(const Workload &w) {
  return w.lanes == 1 && w.peers == 1 && w.window % w.batch == 0;
}

} // namespace

int main(int argc, char **argv) {
  std::string impl_arg = "auto", only = "all", peer_bin, scaling;
  bool quick = false;
  int round = 0;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] {
      if (i + 1 >= argc) die("missing value after " + a);
      return std::string(argv[++i]);
    };
    if (a == "--impl") impl_arg = next();
    else if (a == "--scenario") only = next();
    else if (a == "--quick") quick = true;
    else if (a == "--round") round = std::atoi(next().c_str());
    else if (a == "--peer-bin") peer_bin = next();
    else if (a == "--scaling") scaling = next();
    else die("unknown argument " + a);
  }
  // --scenario: "all", one name or a comma-separated list of names.
  auto selected = [&](const std::string &name) {
    if (only == "all") return true;
    size_t pos = 0;
    while (pos <= only.size()) {
      size_t comma = only.find(',', pos);
      if (comma == std::string::npos) comma = only.size();
      if (only.compare(pos, comma - pos, name) == 0 && comma - pos == name.size()) return true;
      pos = comma + 1;
    }
    return false;
  };
  const bool raw = impl_arg == "raw";
  const std::string impl = raw ? "raw" : mcfx_impl_name();
  if (!raw && impl_arg != "auto" && impl_arg != impl)
    die("expected implementation " + impl_arg + " but the loaded one is " + impl +
        " (LD_PRELOAD not applied?)");
  std::fprintf(stderr, "mcfx_ab_bench: implementation %s, round %d%s\n", impl.c_str(), round,
               quick ? " (quick)" : "");
  // A watchdog per scenario: a run that hangs (a transfer that never
  // completes, a deadlock) is killed by SIGALRM's default action instead of
  // holding the run for ever; busy-loop children die with it
  // (PR_SET_PDEATHSIG). Every scenario takes seconds, a scaling point at
  // most a minute or two.
  auto watchdog = [](unsigned seconds) { alarm(seconds); };
  if (!scaling.empty()) {
    watchdog(900);
    // One point of a scaling curve per process (--scaling DIM:X), so the
    // resident-memory deltas start from a fresh process.
    const size_t colon = scaling.find(':');
    if (colon == std::string::npos) die("--scaling wants DIM:X, e.g. regions:4096");
    const std::string dim = scaling.substr(0, colon);
    const uint64_t x = std::strtoull(scaling.c_str() + colon + 1, nullptr, 10);
    if (x == 0) die("--scaling: X must be positive");
    Shape sh = scaling_shape(dim, x, quick);
    set_nic(sh.nic_gbps, sh.nic_latency_ns);
    Result r = raw ? run_requests_raw(sh) : run_requests(sh);
    set_nic(0, 0);
    r.scaling = dim;
    r.x = x;
    print(r, impl.c_str(), round);
    return 0;
  }
  if (selected("round_trip")) {
    uint64_t samples = 0;
    const double rt = round_trip_ns(&samples);
    if (rt >= 0)
      std::printf("{\"scenario\":\"round_trip\",\"impl\":\"%s\",\"round\":%d,"
                  "\"round_trip_ns\":%.1f,\"samples\":%llu}\n",
                  impl.c_str(), round, rt, (unsigned long long)samples);
    else
      std::printf("{\"scenario\":\"round_trip\",\"impl\":\"%s\",\"round\":%d,"
                  "\"round_trip_ns\":null,\"samples\":0}\n",
                  impl.c_str(), round);
    std::fflush(stdout);
  }
  for (Workload &w : workloads(quick)) {
    if (!selected(w.scenario)) continue;
    if (raw && !raw_applies(w)) continue;
    if (w.xproc && peer_bin.empty()) die("xproc scenarios need --peer-bin");
    set_latency_ns(w.scenario == "single_4k_wire2us" ? 2000 : 0);
    if (w.nic_gbps) set_nic(w.nic_gbps, w.nic_latency_ns);
    watchdog(300);
    Result r = raw ? run_raw(w, peer_bin) : run_transport(w, peer_bin);
    watchdog(0);
    if (w.nic_gbps) set_nic(0, 0);
    set_latency_ns(0);
    print(r, impl.c_str(), round);
  }
  for (Shape &sh : request_shapes(quick)) {
    if (!selected(sh.scenario)) continue;
    // Raw: one thread issuing each request (the floor of a single caller);
    // not for kv_peers8_32k, whose point is the peers.
    if (raw && sh.peers > 1) continue;
    if (raw) sh.threads = 1;
    set_nic(sh.nic_gbps, sh.nic_latency_ns);
    watchdog(300);
    Result r = raw ? run_requests_raw(sh) : run_requests(sh);
    watchdog(0);
    set_nic(0, 0);
    print(r, impl.c_str(), round);
  }
  if (!raw && selected("idle_cpu")) {
    Result r = run_idle(quick ? 0.5 : 2.0);
    print(r, impl.c_str(), round);
  }
  return 0;
}
