// The A/B benchmark. Linked against the C++ baseline transport
// (libmcfx_baseline.so); run with LD_PRELOAD=libmooncake_flagcx.so, the same
// binary drives the Rust transport instead (the mcfx_* symbols are
// interposed). `--impl raw` skips the transports and calls FlagCX directly on
// the submitting thread: the floor both transports are measured against.
//
// Prints one JSON object per scenario on stdout:
//   {"scenario", "impl", "round", "ops", "p50_ns", "p99_ns", "p999_ns",
//    "ops_per_s", "bytes_per_s"}
// scripts/ab.sh runs it alternately per implementation and aggregates.

#include <dlfcn.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
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
};

uint64_t percentile(std::vector<uint64_t> &v, double q) {
  if (v.empty()) return 0;
  size_t i = std::min(v.size() - 1, static_cast<size_t>(q * (v.size() - 1) + 0.5));
  std::nth_element(v.begin(), v.begin() + i, v.end());
  return v[i];
}

void print(Result &r, const char *impl, int round) {
  char cpu[64] = "";
  if (r.cpu_pct >= 0) std::snprintf(cpu, sizeof cpu, ",\"cpu_pct\":%.3f", r.cpu_pct);
  std::printf("{\"scenario\":\"%s\",\"impl\":\"%s\",\"round\":%d,\"ops\":%llu,"
              "\"p50_ns\":%llu,\"p99_ns\":%llu,\"p999_ns\":%llu,\"ops_per_s\":%.1f,"
              "\"bytes_per_s\":%.1f%s}\n",
              r.scenario.c_str(), impl, round, (unsigned long long)r.ops,
              (unsigned long long)percentile(r.lat, 0.50),
              (unsigned long long)percentile(r.lat, 0.99),
              (unsigned long long)percentile(r.lat, 0.999),
              r.seconds > 0 ? r.ops / r.seconds : 0.0, r.seconds > 0 ? r.bytes / r.seconds : 0.0,
              cpu);
  std::fflush(stdout);
}

// ---- the software provider's knobs (absent with real FlagCX) --------------------

void set_latency_ns(uint64_t ns) {
  using SetKnob = int (*)(int, uint64_t);
  static auto set = reinterpret_cast<SetKnob>(dlsym(RTLD_DEFAULT, "flagcxSwSetKnob"));
  if (set) set(FLAGCX_SW_KNOB_LATENCY_NS, ns);
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
  auto lane_fn = [&](int lane) {
    const uint64_t base = lane * per_lane;
    std::vector<mcfx_op> ops(w.batch);
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
        // The last lane to warm up starts the clock; the lanes themselves
        // keep time, since the main thread may not get a core promptly.
        if (warmed.fetch_add(1) + 1 == w.lanes) t_begin_atomic.store(now_ns());
        while (warmed.load() < w.lanes) cpu_relax();
      }
    }
    uint64_t t = now_ns(), prev = t_end_atomic.load();
    while (prev < t && !t_end_atomic.compare_exchange_weak(prev, t)) {
    }
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
  const uint64_t total = w.warmup + w.ops;
  uint64_t t_begin = now_ns();
  for (uint64_t i = 0; i < total; i += w.batch) {
    if (i == w.warmup) t_begin = now_ns();
    uint64_t t0 = now_ns(), id = 0;
    // Same work per op as a transport: rotate over the slots, one
    // descriptor lookup per op.
    for (int k = 0; k < w.batch; ++k) {
      const size_t slot = (i + k) % slots;
      locals[k] = src.data + slot * w.size;
      if (flagcxP2pEngineMakeDesc(conn, remote + slot * w.size, w.size, &descs[k]) != 0)
        die("raw MakeDesc failed");
    }
    if (flagcxP2pEngineWriteVector(conn, mrs, locals, sizes, descs, w.batch, &id) != 0)
      die("raw WriteVector failed");
    uint64_t idle = 0;
    while (!flagcxP2pEngineXferStatus(conn, id)) wait_a_little(&idle);
    uint64_t dt = now_ns() - t0;
    if (i >= w.warmup)
      for (int k = 0; k < w.batch; ++k) r.lat.push_back(dt);
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
  Workload b;
  b.scenario = "batch64_4k";
  b.ops = n(64 * 1000);
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
  return v;
}

// Scenarios the raw (no transport) floor applies to: one submitting thread.
bool raw_applies(const Workload &w) { return w.lanes == 1 && w.peers == 1; }

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
  for (Workload &w : workloads(quick)) {
    if (only != "all" && only != w.scenario) continue;
    if (raw && !raw_applies(w)) continue;
    if (w.xproc && peer_bin.empty()) die("xproc scenarios need --peer-bin");
    set_latency_ns(w.scenario == "single_4k_wire2us" ? 2000 : 0);
    Result r = raw ? run_raw(w, peer_bin) : run_transport(w, peer_bin);
    set_latency_ns(0);
    print(r, impl.c_str(), round);
  }
  if (!raw && (only == "all" || only == "idle_cpu")) {
    Result r = run_idle(quick ? 0.5 : 2.0);
    print(r, impl.c_str(), round);
  }
  return 0;
}
