// The A/B benchmark. Linked against the C++ baseline transport
// (libmcfx_baseline.so); run with LD_PRELOAD=libmooncake_flagcx.so, the same
// binary drives the Rust transport instead (the mcfx_* symbols are
// interposed). `--impl raw` skips the transports and calls FlagCX directly on
// the submitting thread: the floor both transports are measured against.
//
// Prints one JSON object per scenario on stdout:
//   {"scenario", "impl", "round", "ops", "p50_ns", "p99_ns", "p999_ns",
//    "ops_per_s", "bytes_per_s", "nic_gbps", "link_utilization",
//    "cpu_ns_per_op", "cpu_threads"}
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

#include <dirent.h>
#include <dlfcn.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
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
};

uint64_t percentile(std::vector<uint64_t> &v, double q) {
  if (v.empty()) return 0;
  size_t i = std::min(v.size() - 1, static_cast<size_t>(q * (v.size() - 1) + 0.5));
  std::nth_element(v.begin(), v.begin() + i, v.end());
  return v[i];
}

void print(Result &r, const char *impl, int round) {
  std::string extra;
  char buf[128];
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
    if (r.has_cpu) extra += ",\"cpu_threads\":" + r.cpu_threads;
  }
  std::printf("{\"scenario\":\"%s\",\"impl\":\"%s\",\"round\":%d,\"ops\":%llu,"
              "\"p50_ns\":%llu,\"p99_ns\":%llu,\"p999_ns\":%llu,\"ops_per_s\":%.1f,"
              "\"bytes_per_s\":%.1f%s}\n",
              r.scenario.c_str(), impl, round, (unsigned long long)r.ops,
              (unsigned long long)percentile(r.lat, 0.50),
              (unsigned long long)percentile(r.lat, 0.99),
              (unsigned long long)percentile(r.lat, 0.999),
              r.seconds > 0 ? r.ops / r.seconds : 0.0, r.seconds > 0 ? r.bytes / r.seconds : 0.0,
              extra.c_str());
  std::fflush(stdout);
}

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

struct Transport {
  Transport(Ledger *ledger, Directory *dir) {
    mcfx_config c;
    mcfx_config_init(&c, sizeof c);
    c.on_complete = on_complete;
    c.complete_ctx = ledger;
    c.resolve = resolve;
    c.resolve_ctx = dir;
    c.queue_capacity = 8192;
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
};

// Runs a workload through mcfx_submit: each lane keeps `window` ops in
// flight, submitting `batch` at a time, until it sent warmup + ops.
Result run_transport(const Workload &w, const std::string &peer_bin) {
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
  std::atomic<int> lanes_done{0};
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
    uint64_t sent = 0, finished = 0, idle = 0;
    // Two phases: warm-up ops, then (once every lane is warm) measured ops.
    for (uint64_t end : {w.warmup, per_lane}) {
      while (finished < end) {
        // Count this lane's finished ops oldest-first: enough to bound how
        // many are in flight (an early finisher behind a slow one only
        // delays the next submit, never widens the window).
        while (finished < sent &&
               ledger.finished[base + finished].load(std::memory_order_acquire) != 0)
          ++finished;
        if (sent < end && sent - finished + w.batch <= static_cast<uint64_t>(w.window)) {
          int n = static_cast<int>(std::min<uint64_t>(w.batch, end - sent));
          if (w.gap_us > 0) std::this_thread::sleep_for(std::chrono::microseconds(w.gap_us));
          uint64_t t0 = now_ns();
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
        } else {
          wait_a_little(&idle);
        }
      }
      if (end == w.warmup) {
        // The last lane to warm up samples the transport's CPU clocks and
        // starts the clock; the lanes themselves keep time, since the main
        // thread may not get a core promptly.
        if (warmed.fetch_add(1) + 1 == w.lanes) {
          cpu_before = sample_threads(own);
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
    if (lanes_done.fetch_add(1) + 1 == w.lanes) cpu_after = sample_threads(own);
  };
  for (int l = 0; l < w.lanes; ++l) threads.emplace_back(lane_fn, l);
  while (ready.load() < w.lanes) std::this_thread::yield();
  go.store(true, std::memory_order_release);
  for (auto &t : threads) t.join();
  t_begin = t_begin_atomic.load();
  t_end = t_end_atomic.load();
  if (ledger.failed.load()) die("ops failed in " + w.scenario);

  Result r;
  r.scenario = w.scenario;
  for (int l = 0; l < w.lanes; ++l)
    for (uint64_t i = w.warmup; i < per_lane; ++i) r.lat.push_back(ledger.lat[l * per_lane + i]);
  // Throughput of the measured phase only.
  r.ops = w.ops * w.lanes;
  r.bytes = r.ops * w.size;
  r.seconds = (t_end - t_begin) / 1e9;
  r.nic_gbps = w.nic_gbps;
  account_cpu(r, cpu_before, cpu_after);
  return r;
}

// ---- raw FlagCX on the submitting thread -------------------------------------------

Result run_raw(const Workload &w, const std::string &peer_bin) {
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
  uint64_t t_begin = now_ns();
  // Two phases, as for a transport: warm-up ops, drained, then measured ops.
  uint64_t sent = 0, done = 0;
  for (uint64_t end : {w.warmup, total}) {
    if (end == total) t_begin = now_ns();
    while (done < end) {
      if (sent < end && sent - done < uint64_t(depth) * w.batch) {
        InFlight &f = ring[(sent / w.batch) % depth];
        if (w.gap_us > 0) std::this_thread::sleep_for(std::chrono::microseconds(w.gap_us));
        f.t0 = now_ns();
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
      while (!flagcxP2pEngineXferStatus(conn, f.id)) wait_a_little(&idle);
      uint64_t dt = now_ns() - f.t0;
      if (f.first >= w.warmup)
        for (int k = 0; k < w.batch; ++k) r.lat.push_back(dt);
      done += w.batch;
    }
  }
  r.seconds = (now_ns() - t_begin) / 1e9;
  r.ops = w.ops;
  r.bytes = w.ops * w.size;
  flagcxP2pEngineDestroy(a);
  if (b) flagcxP2pEngineDestroy(b);
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
  return v;
}

// Scenarios the raw (no transport) floor applies to: one submitting thread,
// one peer, whole batches in flight.
bool raw_applies(const Workload &w) {
  return w.lanes == 1 && w.peers == 1 && w.window % w.batch == 0;
}

} // namespace

int main(int argc, char **argv) {
  std::string impl_arg = "auto", only = "all", peer_bin;
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
    else die("unknown argument " + a);
  }
  const bool raw = impl_arg == "raw";
  const std::string impl = raw ? "raw" : mcfx_impl_name();
  if (!raw && impl_arg != "auto" && impl_arg != impl)
    die("expected implementation " + impl_arg + " but the loaded one is " + impl +
        " (LD_PRELOAD not applied?)");
  std::fprintf(stderr, "mcfx_ab_bench: implementation %s, round %d%s\n", impl.c_str(), round,
               quick ? " (quick)" : "");
  if (only == "all" || only == "round_trip") {
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
    if (only != "all" && only != w.scenario) continue;
    if (raw && !raw_applies(w)) continue;
    if (w.xproc && peer_bin.empty()) die("xproc scenarios need --peer-bin");
    set_latency_ns(w.scenario == "single_4k_wire2us" ? 2000 : 0);
    if (w.nic_gbps) set_nic(w.nic_gbps, w.nic_latency_ns);
    Result r = raw ? run_raw(w, peer_bin) : run_transport(w, peer_bin);
    if (w.nic_gbps) set_nic(0, 0);
    set_latency_ns(0);
    print(r, impl.c_str(), round);
  }
  if (!raw && (only == "all" || only == "idle_cpu")) {
    Result r = run_idle(quick ? 0.5 : 2.0);
    print(r, impl.c_str(), round);
  }
  return 0;
}
