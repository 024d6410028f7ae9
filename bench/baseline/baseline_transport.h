// The C++ baseline transport: Mooncake's upstream C++ FlagCX transport (v3,
// Mooncake PR #2622) re-expressed behind the mcfx_* C ABI, so the A/B
// benchmark can compare it with the Rust cdylib (LD_PRELOAD swaps one for the
// other).
//
// This is deliberately NOT a good design; it is the "before" picture and must
// stay faithful to upstream (neither smarter nor artificially slower):
// - submit runs on the caller thread under one submit mutex and calls FlagCX
//   itself; each call builds a fresh hash map of groups and fresh vectors;
// - one global mutex serializes every FlagCX request call (get-connection --
//   including the peer lookup, which may block --, vector write/read and
//   status polling);
// - one completion thread, woken by a condition variable, polls a pending
//   list it swaps out under a third mutex, spinning while anything is pending
//   and yielding every 64 passes;
// - FlagCX's bool status call is all it has, so a failed transfer completes
//   MCFX_OK; only a 30 s (op_timeout_ms) deadline turns into MCFX_E_TIMEOUT
//   (counted from the submit call, as the ABI says).
//
// Where the C ABI demands more than upstream did (argument checks, exactly one
// completion per accepted op, statistics, a last-error message), the extra
// work is done with the same primitives and kept off the per-op path where
// possible.

#ifndef MCFX_BASELINE_TRANSPORT_H_
#define MCFX_BASELINE_TRANSPORT_H_

// Every mcfx_* function the ABI header declares is exported with default
// visibility; everything else in this library is built hidden (and the
// version script keeps even libstdc++ template instances out of the dynamic
// symbol table), so an LD_PRELOADed implementation interposes cleanly.
#pragma GCC visibility push(default)
#include "mooncake_flagcx.h"
#pragma GCC visibility pop

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "flagcx_p2p.h"

namespace mcfx_baseline {

// The outcome of a call: MCFX_OK, or a status and a message for
// mcfx_last_error. (An empty std::string does not allocate, so the success
// path costs nothing.)
struct Result {
  mcfx_status status = MCFX_OK;
  std::string message;

  bool ok() const { return status == MCFX_OK; }
};

Result Fail(mcfx_status status, std::string message);

// printf-style formatting into a std::string (error paths only).
std::string Format(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

// Writes a log line to stderr when MCFX_LOG is set (upstream used glog's
// LOG(ERROR)); silent otherwise, like the Rust library.
void Log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

// The settings the baseline uses; everything else in mcfx_config only exists
// for the Rust design and is validated, then ignored.
struct Options {
  mcfx_complete_fn on_complete = nullptr;
  void *complete_ctx = nullptr;
  mcfx_resolve_fn resolve = nullptr;
  void *resolve_ctx = nullptr;
  std::chrono::milliseconds op_timeout{30000};
  bool serve_peers = true;
};

class Transport {
public:
  Transport() = default;
  ~Transport();
  Transport(const Transport &) = delete;
  Transport &operator=(const Transport &) = delete;

  // Upstream install(): engine, RPC server, endpoint, completion thread. On
  // failure everything created so far is torn down again (upstream leaked the
  // engine here; a leak has no place in a benchmark baseline).
  Result Init(const Options &options);

  // Upstream ~FlagCxTransport(): stop accepting submits, stop the completion
  // thread, fail what is pending (MCFX_E_CANCELED), deregister, StopAccept,
  // Destroy. Idempotent.
  void Shutdown();

  const std::string &endpoint() const { return endpoint_; }

  Result Register(void *addr, size_t length);
  Result Unregister(void *addr);

  // Upstream submitTransferTask() + submitSlices(): everything on the caller
  // thread. Ops are taken in order up to the first bad one; `*accepted` is
  // how many ran (count on success; the bad op's index otherwise).
  Result Submit(const mcfx_op *ops, size_t count, size_t *accepted);

  // Fills every field of `out` (the caller copies the prefix it asked for).
  void Snapshot(mcfx_stats *out) const;

private:
  // Upstream kept {addr, length, mr} per registerLocalMemory() call in a
  // std::vector under reg_mu_, and searched it linearly per slice.
  struct Registration {
    uintptr_t base;
    size_t length;
    FlagcxP2pMr mr;
  };

  // Upstream grouped slices by (target segment, opcode).
  struct GroupKey {
    uint64_t peer;
    uint32_t opcode;
    bool operator==(const GroupKey &o) const {
      return peer == o.peer && opcode == o.opcode;
    }
  };
  struct GroupKeyHash {
    size_t operator()(const GroupKey &k) const {
      return std::hash<uint64_t>()(k.peer) ^ (size_t(k.opcode) << 1);
    }
  };
  // Upstream grouped Slice pointers and looked their MR up while building the
  // vectors. The ABI has to reject an unregistered op before anything is
  // queued, so the (same, linear) lookup happens while grouping and its
  // result travels with the op instead of being searched for twice.
  struct GroupItem {
    const mcfx_op *op;
    FlagcxP2pMr mr;
  };

  // Upstream's PendingTransfer {conn, transfer_id, slices, deadline}. The ops
  // are represented by their user_data. `failed` is for groups that never
  // reached FlagCX (resolve/connect/descriptor/submission failure): upstream
  // marked those slices failed right on the submitting thread; the ABI says
  // completions run on the completion thread, so they take the same list.
  struct PendingTransfer {
    FlagcxP2pConn *conn = nullptr;
    uint64_t transfer_id = 0;
    std::vector<uint64_t> user_data;
    uint64_t bytes = 0;
    std::chrono::steady_clock::time_point deadline;
    mcfx_status failed = MCFX_OK;
  };

  struct Counters {
    std::atomic<uint64_t> submitted{0};
    std::atomic<uint64_t> completed{0};
    std::atomic<uint64_t> failed{0};
    std::atomic<uint64_t> timed_out{0};
    std::atomic<uint64_t> canceled{0};
    std::atomic<uint64_t> bytes{0};
    std::atomic<uint64_t> wakeups{0};
    std::atomic<uint64_t> connect_failures{0};
    std::atomic<uint64_t> flagcx_transfers{0};
    std::atomic<uint64_t> callback_panics{0};
  };

  bool LookupMr(uintptr_t addr, uint64_t length, FlagcxP2pMr *mr) const;
  // `submitted`: when the submit call began (the ops' deadlines count from
  // it).
  void RunSliceGroup(const GroupKey &key, const std::vector<GroupItem> &group,
                     std::chrono::steady_clock::time_point submitted);
  mcfx_status ConnForPeer(uint64_t peer, FlagcxP2pConn **conn);
  void FailOps(std::vector<uint64_t> user_data, mcfx_status status);
  void PushPending(PendingTransfer &&transfer);
  void CompletionLoop();
  void CancelPending();
  void PollPendingTransfers();
  void Deliver(const PendingTransfer &transfer, mcfx_status status);

  Options options_;
  FlagcxP2pEngine *engine_ = nullptr;
  std::string endpoint_;

  // Held for the whole of every submit (upstream: submitSlices()).
  std::mutex submit_mu_;
  // Set under submit_mu_ by Shutdown: later submits get SHUTTING_DOWN.
  std::atomic<bool> closing_{false};
  // The one global lock around FlagCX request calls (upstream: flagcx_mu_).
  std::mutex flagcx_mu_;

  mutable std::mutex reg_mu_;
  std::vector<Registration> regs_;

  std::mutex pending_mu_;
  std::condition_variable pending_cv_;
  std::vector<PendingTransfer> pending_;
  bool stop_ = false; // guarded by pending_mu_

  std::thread completion_thread_;
  bool shut_down_ = false;

  Counters counters_;
};

} // namespace mcfx_baseline

// The opaque ABI handle.
struct mcfx_transport {
  mcfx_baseline::Transport impl;
};

#endif // MCFX_BASELINE_TRANSPORT_H_
