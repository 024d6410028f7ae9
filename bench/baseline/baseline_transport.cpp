// The baseline transport's core: the upstream C++ FlagCX transport (v3,
// Mooncake PR #2622), method for method. See baseline_transport.h for what
// "faithful" means here; comments marked "upstream:" say which upstream
// choice a line reproduces.

#include "baseline_transport.h"

#include <pthread.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <unordered_map>

namespace mcfx_baseline {

Result Fail(mcfx_status status, std::string message) {
  return Result{status, std::move(message)};
}

std::string Format(const char *fmt, ...) {
  char buf[512];
  va_list args;
  va_start(args, fmt);
  int n = std::vsnprintf(buf, sizeof buf, fmt, args);
  va_end(args);
  if (n < 0) return std::string("(unformattable message)");
  return std::string(buf, std::min(size_t(n), sizeof buf - 1));
}

void Log(const char *fmt, ...) {
  static const bool enabled = std::getenv("MCFX_LOG") != nullptr;
  if (!enabled) return;
  char buf[512];
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, args);
  va_end(args);
  std::fprintf(stderr, "mcfx_baseline: %s\n", buf);
}

namespace {

// Resolver output buffer; the Rust library passes the same size.
constexpr size_t kEndpointCap = 512;

// The checks the C ABI requires before anything is queued (upstream had none:
// Mooncake's callers were trusted). Same statuses and messages as the Rust
// library, so shared tests see one contract.
Result CheckOp(const mcfx_op &op, size_t i) {
  if (op.opcode != MCFX_OP_READ && op.opcode != MCFX_OP_WRITE)
    return Fail(MCFX_E_INVALID_ARGUMENT,
                Format("op %zu: unknown opcode %u", i, op.opcode));
  if (op.reserved != 0)
    return Fail(MCFX_E_INVALID_ARGUMENT,
                Format("op %zu: reserved field is not 0", i));
  if (op.length == 0)
    return Fail(MCFX_E_INVALID_ARGUMENT, Format("op %zu: zero length", i));
  const uintptr_t local = reinterpret_cast<uintptr_t>(op.local_addr);
  if (local == 0)
    return Fail(MCFX_E_INVALID_ARGUMENT,
                Format("op %zu: NULL local address", i));
  if (op.length > UINTPTR_MAX - local)
    return Fail(MCFX_E_OVERFLOW,
                Format("op %zu: local %#zx + length %llu overflows", i,
                       size_t(local), (unsigned long long)op.length));
  if (op.length > UINT64_MAX - op.remote_addr)
    return Fail(MCFX_E_OVERFLOW,
                Format("op %zu: remote %#llx + length %llu overflows", i,
                       (unsigned long long)op.remote_addr,
                       (unsigned long long)op.length));
  return {};
}

} // namespace

// ---- lifecycle ---------------------------------------------------------------

Transport::~Transport() {
  try {
    Shutdown();
  } catch (...) {
    // A destructor must not throw; Shutdown only locks and joins.
  }
}

Result Transport::Init(const Options &options) {
  options_ = options;
  // upstream install(): Create -> StartRpcServer -> GetMetadata.
  engine_ = flagcxP2pEngineCreate();
  if (engine_ == nullptr)
    return Fail(MCFX_E_FLAGCX,
                "flagcxP2pEngineCreate failed: no usable FlagCX device?");
  Result failed;
  if (options_.serve_peers && flagcxP2pEngineStartRpcServer(engine_) != 0) {
    failed = Fail(MCFX_E_FLAGCX, "flagcxP2pEngineStartRpcServer failed");
  } else {
    char *raw = nullptr;
    if (flagcxP2pEngineGetMetadata(engine_, &raw) != 0 || raw == nullptr) {
      failed = Fail(MCFX_E_FLAGCX, "flagcxP2pEngineGetMetadata failed");
    } else {
      // FlagCX allocates the string with new[] (upstream free()d it, a
      // mismatch; delete[] is what FlagCX documents).
      std::unique_ptr<char[]> metadata(raw);
      // upstream: "ip:port?gpu?notif_port" -> the GetConn session "ip:port".
      const char *q = std::strchr(metadata.get(), '?');
      endpoint_.assign(metadata.get(),
                       q ? size_t(q - metadata.get())
                         : std::strlen(metadata.get()));
      if (endpoint_.empty())
        failed = Fail(MCFX_E_FLAGCX,
                      Format("empty FlagCX endpoint in metadata \"%s\"",
                             metadata.get()));
    }
  }
  if (failed.ok()) {
    try {
      // upstream v3: one completion thread per transport.
      completion_thread_ = std::thread([this] { CompletionLoop(); });
      // Named so per-thread CPU accounting (the A/B bench) can say what it
      // counted; upstream's thread is unnamed. Failure to name is harmless.
      pthread_setname_np(completion_thread_.native_handle(), "cxx-completion");
    } catch (const std::exception &e) {
      failed = Fail(MCFX_E_INTERNAL,
                    Format("cannot start the completion thread: %s", e.what()));
    }
  }
  if (!failed.ok()) {
    // upstream returned -1 here and leaked the engine; we tear it down.
    Shutdown();
    return failed;
  }
  Log("engine up, endpoint=%s", endpoint_.c_str());
  return {};
}

void Transport::Shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  {
    // Waits for a submit in progress; later ones see closing_.
    std::lock_guard<std::mutex> lk(submit_mu_);
    closing_.store(true);
  }
  {
    std::lock_guard<std::mutex> lk(pending_mu_);
    stop_ = true;
  }
  pending_cv_.notify_all();
  // The thread fails what is still pending before it exits (CancelPending);
  // without a thread (Init failed) nothing was ever submitted.
  if (completion_thread_.joinable()) completion_thread_.join();

  if (engine_ != nullptr) {
    // upstream: MrDestroy each registration, StopAccept, Destroy.
    {
      std::lock_guard<std::mutex> lk(reg_mu_);
      for (const Registration &r : regs_) flagcxP2pEngineMrDestroy(engine_, r.mr);
      regs_.clear();
    }
    flagcxP2pEngineStopAccept(engine_);
    flagcxP2pEngineDestroy(engine_);
    engine_ = nullptr;
  }
}

// ---- memory registration -----------------------------------------------------

Result Transport::Register(void *addr, size_t length) {
  const uintptr_t base = reinterpret_cast<uintptr_t>(addr);
  if (base == 0 || length == 0)
    return Fail(MCFX_E_INVALID_ARGUMENT,
                "register: NULL address or zero length");
  if (length > UINTPTR_MAX - base)
    return Fail(MCFX_E_OVERFLOW, Format("register: %#zx + %zu overflows",
                                        size_t(base), length));
  std::lock_guard<std::mutex> lk(reg_mu_);
  // Checked under reg_mu_: Shutdown sets closing_ before it deregisters
  // under reg_mu_ and destroys the engine, so a registration either sees it
  // or is deregistered with the rest.
  if (closing_.load())
    return Fail(MCFX_E_SHUTTING_DOWN, "register: transport is shutting down");
  // The ABI's overlap rule (upstream pushed blindly); registration is off the
  // hot path, so this scan does not touch the comparison.
  for (const Registration &r : regs_) {
    if (base < r.base + r.length && r.base < base + length)
      return Fail(MCFX_E_ALREADY_REGISTERED,
                  Format("register: [%#zx, +%zu) overlaps registered "
                         "[%#zx, +%zu)",
                         size_t(base), length, size_t(r.base), r.length));
  }
  regs_.reserve(regs_.size() + 1); // so the push below cannot lose an MR
  FlagcxP2pMr mr = 0;
  if (flagcxP2pEngineReg(engine_, base, length, mr) != 0)
    return Fail(MCFX_E_FLAGCX,
                Format("flagcxP2pEngineReg refused [%#zx, +%zu)",
                       size_t(base), length));
  // upstream: regs_.push_back({addr, length, mr}) under reg_mu_.
  regs_.push_back(Registration{base, length, mr});
  return {};
}

Result Transport::Unregister(void *addr) {
  const uintptr_t base = reinterpret_cast<uintptr_t>(addr);
  std::lock_guard<std::mutex> lk(reg_mu_);
  // upstream: linear search by base address, MrDestroy, erase. (Upstream did
  // not track ops in flight per region either, so MCFX_E_BUSY never occurs.)
  for (auto it = regs_.begin(); it != regs_.end(); ++it) {
    if (it->base == base) {
      if (engine_ != nullptr) flagcxP2pEngineMrDestroy(engine_, it->mr);
      regs_.erase(it);
      return {};
    }
  }
  return Fail(MCFX_E_NOT_FOUND,
              Format("unregister: no region starts at %#zx", size_t(base)));
}

bool Transport::LookupMr(uintptr_t addr, uint64_t length,
                         FlagcxP2pMr *mr) const {
  // upstream resolveLocalMr(): lock reg_mu_ and scan every registration, per
  // slice. (Upstream compared `hit + length <= base + r.length` on pointers;
  // the same test is written here without overflow.)
  std::lock_guard<std::mutex> lk(reg_mu_);
  for (const Registration &r : regs_) {
    if (addr >= r.base && addr - r.base <= r.length &&
        length <= r.length - (addr - r.base)) {
      *mr = r.mr;
      return true;
    }
  }
  return false;
}

// ---- submit (caller thread) --------------------------------------------------

Result Transport::Submit(const mcfx_op *ops, size_t count, size_t *accepted) {
  *accepted = 0;
  // The ABI: an op's deadline counts from its submit call (upstream took it
  // after the vector call, which may come after a blocking handshake).
  const auto submitted = std::chrono::steady_clock::now();
  // upstream submitSlices(): the whole submit runs under submit_mu_.
  std::lock_guard<std::mutex> submit_lock(submit_mu_);
  if (closing_.load())
    return Fail(MCFX_E_SHUTTING_DOWN, "submit: transport is shutting down");
  if (count == 0) return {};

  // upstream: a fresh std::unordered_map of slice groups keyed by (target
  // segment, opcode), built on every call. One "slice" per op: upstream did
  // not split, whatever the length.
  // The ABI's prefix rule: ops are taken in order up to the first bad one;
  // the ones before it run, `*accepted` says how many, and the bad one's
  // error is returned.
  std::unordered_map<GroupKey, std::vector<GroupItem>, GroupKeyHash> groups;
  Result result;
  size_t n = 0;
  for (; n < count; ++n) {
    const mcfx_op &op = ops[n];
    result = CheckOp(op, n);
    if (!result.ok()) break;
    FlagcxP2pMr mr = 0;
    if (!LookupMr(reinterpret_cast<uintptr_t>(op.local_addr), op.length,
                  &mr)) {
      result = Fail(MCFX_E_NOT_REGISTERED,
                    Format("op %zu: local range [%p, +%llu) is not inside one "
                           "registered region",
                           n, op.local_addr, (unsigned long long)op.length));
      break;
    }
    groups[GroupKey{op.peer_id, op.opcode}].push_back(GroupItem{&op, mr});
  }
  *accepted = n;
  counters_.submitted.fetch_add(n, std::memory_order_relaxed);
  for (const auto &kv : groups) RunSliceGroup(kv.first, kv.second, submitted);
  return result;
}

mcfx_status Transport::ConnForPeer(uint64_t peer, FlagcxP2pConn **conn) {
  // upstream connForSegment(): called with flagcx_mu_ held; looks the peer's
  // endpoint up in Mooncake's metadata (here: the resolver callback, which
  // may block) and calls GetConn, whose first call per peer is a blocking
  // handshake. Every other FlagCX user of this transport waits meanwhile.
  char endpoint[kEndpointCap] = {};
  int32_t rc = -1;
  try {
    rc = options_.resolve(options_.resolve_ctx, peer, endpoint, sizeof endpoint);
  } catch (...) {
    rc = -1; // a C++ resolver must not throw; treat it as "unknown peer"
  }
  if (rc != 0 || std::memchr(endpoint, '\0', sizeof endpoint) == nullptr ||
      endpoint[0] == '\0') {
    counters_.connect_failures.fetch_add(1, std::memory_order_relaxed);
    Log("no endpoint for peer %llu (resolver returned %d)",
        (unsigned long long)peer, int(rc));
    return MCFX_E_RESOLVE;
  }
  *conn = flagcxP2pEngineGetConn(engine_, endpoint);
  if (*conn == nullptr) {
    counters_.connect_failures.fetch_add(1, std::memory_order_relaxed);
    Log("GetConn failed for peer %llu at %s", (unsigned long long)peer,
        endpoint);
    return MCFX_E_CONNECT;
  }
  return MCFX_OK;
}

void Transport::RunSliceGroup(
    const GroupKey &key, const std::vector<GroupItem> &group,
    std::chrono::steady_clock::time_point submitted) {
  FlagcxP2pConn *conn = nullptr;
  mcfx_status conn_status;
  {
    // upstream: peer lookup + GetConn under the global flagcx_mu_.
    std::lock_guard<std::mutex> lk(flagcx_mu_);
    conn_status = ConnForPeer(key.peer, &conn);
  }
  if (conn_status != MCFX_OK) {
    // upstream: LOG(ERROR) and mark every slice of the group failed.
    std::vector<uint64_t> user_data;
    user_data.reserve(group.size());
    for (const GroupItem &item : group) user_data.push_back(item.op->user_data);
    FailOps(std::move(user_data), conn_status);
    return;
  }
  const bool is_write = key.opcode == MCFX_OP_WRITE;

  // upstream: four fresh vectors per group, reserved to the group's size.
  std::vector<FlagcxP2pMr> mrs;
  std::vector<void *> bufs;
  std::vector<size_t> sizes;
  std::vector<FlagcxP2pRdmaDesc> descs;
  mrs.reserve(group.size());
  bufs.reserve(group.size());
  sizes.reserve(group.size());
  descs.reserve(group.size());
  PendingTransfer transfer;
  transfer.user_data.reserve(group.size());
  std::vector<uint64_t> bad_range;

  for (const GroupItem &item : group) {
    const mcfx_op &op = *item.op;
    FlagcxP2pRdmaDesc desc{};
    // upstream: MakeDesc outside flagcx_mu_, the length cast to 32 bits
    // (silently truncating >= 4 GiB; FlagCX then validates only the first
    // length % 4 GiB bytes of the remote range).
    if (flagcxP2pEngineMakeDesc(conn, op.remote_addr,
                                static_cast<uint32_t>(op.length), &desc) != 0) {
      Log("MakeDesc failed for remote VA %#llx (peer %llu)",
          (unsigned long long)op.remote_addr, (unsigned long long)key.peer);
      // upstream failed the whole group here; the ABI promises a per-op
      // status (MCFX_E_REMOTE_RANGE), so only this op fails.
      bad_range.push_back(op.user_data);
      continue;
    }
    mrs.push_back(item.mr);
    bufs.push_back(op.local_addr);
    sizes.push_back(static_cast<size_t>(op.length));
    descs.push_back(desc);
    transfer.user_data.push_back(op.user_data);
    transfer.bytes += op.length;
  }
  if (!bad_range.empty()) FailOps(std::move(bad_range), MCFX_E_REMOTE_RANGE);
  if (mrs.empty()) return;

  uint64_t transfer_id = 0;
  int rc;
  {
    // upstream: one vector call per group, under flagcx_mu_. ReadVector takes
    // its vectors by value, so this copies all four (as upstream did).
    std::lock_guard<std::mutex> lk(flagcx_mu_);
    const int n = static_cast<int>(mrs.size());
    rc = is_write ? flagcxP2pEngineWriteVector(conn, mrs, bufs, sizes, descs,
                                               n, &transfer_id)
                  : flagcxP2pEngineReadVector(conn, mrs, bufs, sizes, descs, n,
                                              &transfer_id);
  }
  if (rc != 0) {
    Log("%s failed for %zu ops (peer %llu)",
        is_write ? "WriteVector" : "ReadVector", mrs.size(),
        (unsigned long long)key.peer);
    FailOps(std::move(transfer.user_data), MCFX_E_TRANSFER_FAILED);
    return;
  }
  counters_.flagcx_transfers.fetch_add(1, std::memory_order_relaxed);
  transfer.conn = conn;
  transfer.transfer_id = transfer_id;
  // upstream: deadline = now + 30 s, taken after the vector call; here from
  // the submit call, as the ABI says.
  transfer.deadline = submitted + options_.op_timeout;
  PushPending(std::move(transfer));
}

void Transport::FailOps(std::vector<uint64_t> user_data, mcfx_status status) {
  PendingTransfer failed;
  failed.user_data = std::move(user_data);
  failed.failed = status;
  PushPending(std::move(failed));
}

void Transport::PushPending(PendingTransfer &&transfer) {
  // upstream: push on pending_ under pending_mu_, then notify the condvar.
  {
    std::lock_guard<std::mutex> lk(pending_mu_);
    pending_.push_back(std::move(transfer));
  }
  pending_cv_.notify_one();
}

// ---- completion thread -------------------------------------------------------

void Transport::CompletionLoop() {
  uint64_t passes = 0;
  for (;;) {
    try {
      {
        // upstream: sleep on the condvar only while nothing is pending;
        // otherwise spin straight into the next poll pass.
        std::unique_lock<std::mutex> lk(pending_mu_);
        const bool idle = pending_.empty() && !stop_;
        pending_cv_.wait(lk, [this] { return stop_ || !pending_.empty(); });
        if (stop_) {
          lk.unlock();
          CancelPending();
          return;
        }
        if (idle) counters_.wakeups.fetch_add(1, std::memory_order_relaxed);
      }
      PollPendingTransfers();
      // upstream: std::this_thread::yield() every 64 polls.
      if (++passes % 64 == 0) std::this_thread::yield();
    } catch (const std::exception &e) {
      // Only allocation can throw here; never let it kill the process.
      Log("completion thread: %s", e.what());
    }
  }
}

void Transport::CancelPending() {
  // upstream (destructor): mark every pending slice failed; the ids are
  // abandoned (FlagCX has no cancel). Groups that never reached FlagCX keep
  // their own status. This runs on the completion thread, after closing_
  // stopped new submits, so every callback runs on this thread, as the ABI
  // says, and none after mcfx_destroy returns.
  std::vector<PendingTransfer> left;
  {
    std::lock_guard<std::mutex> lk(pending_mu_);
    left.swap(pending_);
  }
  for (const PendingTransfer &p : left)
    Deliver(p, p.failed != MCFX_OK ? p.failed : MCFX_E_CANCELED);
}

void Transport::PollPendingTransfers() {
  // upstream pollPendingTransfers(): swap the list out, poll each id under
  // flagcx_mu_, complete or time out, put the rest back.
  std::vector<PendingTransfer> local;
  {
    std::lock_guard<std::mutex> lk(pending_mu_);
    local.swap(pending_);
  }
  if (local.empty()) return;

  std::vector<PendingTransfer> still_pending;
  const auto now = std::chrono::steady_clock::now();
  for (PendingTransfer &p : local) {
    if (p.failed != MCFX_OK) {
      Deliver(p, p.failed);
      continue;
    }
    bool done;
    {
      std::lock_guard<std::mutex> lk(flagcx_mu_);
      done = flagcxP2pEngineXferStatus(p.conn, p.transfer_id);
    }
    if (done) {
      // upstream: markSuccess() -- the bool cannot tell a failed transfer.
      Deliver(p, MCFX_OK);
    } else if (now > p.deadline) {
      // upstream: markFailed() after 30 s; the id is abandoned (FlagCX has
      // no cancel, so its task leaks inside FlagCX).
      Log("transfer timeout, tid=%llu", (unsigned long long)p.transfer_id);
      Deliver(p, MCFX_E_TIMEOUT);
    } else {
      still_pending.push_back(std::move(p));
    }
  }
  if (!still_pending.empty()) {
    std::lock_guard<std::mutex> lk(pending_mu_);
    for (PendingTransfer &p : still_pending) pending_.push_back(std::move(p));
  }
}

void Transport::Deliver(const PendingTransfer &transfer, mcfx_status status) {
  const uint64_t n = transfer.user_data.size();
  // Counters first, so a caller that saw its callback also sees the count.
  switch (status) {
  case MCFX_OK:
    counters_.completed.fetch_add(n, std::memory_order_relaxed);
    counters_.bytes.fetch_add(transfer.bytes, std::memory_order_relaxed);
    break;
  case MCFX_E_TIMEOUT:
    counters_.timed_out.fetch_add(n, std::memory_order_relaxed);
    break;
  case MCFX_E_CANCELED:
    counters_.canceled.fetch_add(n, std::memory_order_relaxed);
    break;
  default:
    counters_.failed.fetch_add(n, std::memory_order_relaxed);
    break;
  }
  for (uint64_t user_data : transfer.user_data) {
    try {
      options_.on_complete(options_.complete_ctx, user_data, status);
    } catch (...) {
      // The ABI forbids throwing callbacks; count it rather than terminate.
      counters_.callback_panics.fetch_add(1, std::memory_order_relaxed);
    }
  }
}

// ---- statistics --------------------------------------------------------------

void Transport::Snapshot(mcfx_stats *out) const {
  auto get = [](const std::atomic<uint64_t> &c) {
    return c.load(std::memory_order_relaxed);
  };
  std::memset(out, 0, sizeof *out);
  out->struct_size = sizeof *out;
  out->submitted = get(counters_.submitted);
  out->completed = get(counters_.completed);
  out->failed = get(counters_.failed);
  out->timed_out = get(counters_.timed_out);
  out->canceled = get(counters_.canceled);
  out->bytes = get(counters_.bytes);
  out->wakeups = get(counters_.wakeups);
  out->connect_failures = get(counters_.connect_failures);
  out->flagcx_transfers = get(counters_.flagcx_transfers);
  out->callback_panics = get(counters_.callback_panics);
  // queue_full, connects and reconnects stay 0: there is no queue, GetConn
  // does not say whether it connected or hit its cache, and upstream never
  // reconnects.
  const uint64_t done =
      out->completed + out->failed + out->timed_out + out->canceled;
  out->in_flight = out->submitted > done ? out->submitted - done : 0;
}

} // namespace mcfx_baseline
