// One-sided transfers: argument checks, data movement, the task pool and the
// status calls. This is the hot path: no lock on poll except the small
// free-list mutex when an id retires, shared registry locks on submit, and no
// allocation in steady state.
//
// Invariants:
// - Bytes move synchronously in the submitting thread; a task only records
//   when the transfer may report done (LATENCY_NS), and whether it failed
//   or hangs. There is no provider thread.
// - NIC mode (NIC_GBPS != 0) moves no bytes at all: the same checks as copy
//   mode decide success, then the transfer books its length on the local
//   engine's link (one lock-free CAS) and reports done when the link would
//   have delivered it. Its submit path makes no system call except the
//   peer liveness check, at most once per millisecond per connection.
// - Task ids are (generation << 32) | slot index. A slot's generation grows
//   on every reuse starting at 1, so an id is never 0 and a stale id never
//   matches a live one.
// - Slot chunks are allocated on demand and never freed, so a poller may
//   dereference any slot index it has seen allocated, at any time.
// - A slot's task fields are written while it is off the free list and not
//   yet published (liveId == 0), then published with a release store of
//   liveId. Only the poller that took `pollers` from 0 while liveId == id
//   reads them, and it alone retires the slot.
// - Multi-iov transfers: every remote range is checked before any byte moves
//   (a bad key or range moves nothing); a copy failure afterwards (dead peer,
//   unmapped page) stops at that iov, earlier iovs may have landed, and the
//   whole transfer finishes FAILED.
// - Remote checks use the connection's snapshot (range + rkey), then whether
//   that registration is still live, before any byte of the transfer moves:
//   in-process in the registry itself (which also sees a base re-registered
//   in place with another size); cross-process with one acquire load per
//   entry from the peer's key table (keys.cpp), so an MR the peer
//   deregistered (or registered again: a new id and key) fails the op, in
//   copy and in NIC mode, even while its memory is still mapped. The check
//   and the copy are not atomic: a deregistration after the check does not
//   stop a copy already past it (as on RDMA for an operation in flight).
//   Cross-process, a size changed by re-registering a base in place is not
//   seen (the id stays): the snapshot's size applies.
// - FAIL_OP / HANG_OP transfers move no bytes. They, and transfers that fail
//   a check, do not use the modeled link.

#include <poll.h>
#include <signal.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>

#include "internal.h"

namespace flagcx_sw {
namespace {

constexpr uint32_t kChunkBits = 12;
constexpr uint32_t kChunkSlots = 1u << kChunkBits;
constexpr uint32_t kMaxChunks = 4096; // 16M live ids at most
constexpr size_t kCheckBatch = 64;    // iovs checked per registry lock
constexpr size_t kVmBatch = 256;      // iovecs per process_vm_* call
constexpr size_t kMaxPiece = size_t(1) << 30;
constexpr uint64_t kLivenessPeriodNs = 1000000; // NIC mode: 1 check per ms

std::atomic<uint64_t> g_outstanding{0};

struct Slot {
  std::atomic<uint64_t> liveId{0};
  std::atomic<uint32_t> lastGeneration{0};
  std::atomic<int> pollers{0};
  uint64_t readyNs = 0; // 0 = ready at once (skips the clock read)
  bool failed = false;
  bool hang = false;
};

// A wrapper type keeps the free list's vector instantiation hidden.
struct FreeSlot {
  uint32_t index;
};

class Pool {
public:
  Slot *at(uint32_t index) const {
    uint32_t chunk = index >> kChunkBits;
    if (chunk >= kMaxChunks) return nullptr;
    Slot *base = chunks_[chunk].load(std::memory_order_acquire);
    return base == nullptr ? nullptr : &base[index & (kChunkSlots - 1)];
  }

  bool take(uint32_t *index) {
    std::lock_guard<std::mutex> lock(mu_);
    if (free_.empty() && !grow()) return false;
    *index = free_.back().index;
    free_.pop_back();
    return true;
  }

  // Never allocates: capacity covers every slot ever created.
  void give(uint32_t index) {
    std::lock_guard<std::mutex> lock(mu_);
    free_.push_back(FreeSlot{index});
  }

private:
  bool grow() {
    if (used_ == kMaxChunks) return false;
    free_.reserve(size_t(used_ + 1) * kChunkSlots);
    Slot *chunk = new Slot[kChunkSlots];
    for (uint32_t i = kChunkSlots; i-- > 0;) // lowest index handed out first
      free_.push_back(FreeSlot{used_ * kChunkSlots + i});
    chunks_[used_].store(chunk, std::memory_order_release);
    used_++;
    return true;
  }

  std::mutex mu_;
  std::vector<FreeSlot> free_;
  uint32_t used_ = 0;
  std::atomic<Slot *> chunks_[kMaxChunks] = {};
};

Pool &pool() {
  static Pool *p = new Pool(); // never freed: see the invariants above
  return *p;
}

// Every remote iov lies in one snapshot region carrying its rkey, and that
// region is still registered (a deregistered MR must fail the op, as it
// would on a NIC): for an in-process peer in the registry, for another
// process in its key table.
bool checkRemote(const Conn &c, const std::vector<size_t> &sizes,
                 const std::vector<FlagcxP2pRdmaDesc> &descs, size_t n) {
  const Region *regions[kCheckBatch];
  uint64_t addrs[kCheckBatch];
  for (size_t first = 0; first < n; first += kCheckBatch) {
    size_t k = std::min(kCheckBatch, n - first);
    for (size_t j = 0; j < k; ++j) {
      const FlagcxP2pRdmaDesc &d = descs[first + j];
      if (d.rkey == kAnyKey) return false; // no MR has key 0
      regions[j] = findRegion(c.regions, d.addr, sizes[first + j], d.rkey);
      if (regions[j] == nullptr) return false;
      if (!c.sameProcess && !keyLive(c.peerKeys, *regions[j])) return false;
      addrs[j] = d.addr;
    }
    if (c.sameProcess && !regCheckLive(regions, addrs, &sizes[first], k))
      return false;
  }
  return true;
}

// Cross-process copy, cut into pieces of at most 1 GiB and batches of
// kVmBatch iovecs; a short count resumes where the kernel stopped.
bool vmCopy(bool write, pid_t pid, const std::vector<void *> &locals,
            const std::vector<size_t> &sizes,
            const std::vector<FlagcxP2pRdmaDesc> &descs, size_t n) {
  iovec loc[kVmBatch], rem[kVmBatch];
  size_t i = 0, off = 0; // cursor: iov i, byte off within it
  while (i < n) {
    size_t k = 0;
    for (size_t ii = i, oo = off; k < kVmBatch && ii < n; ++k) {
      size_t piece = std::min(sizes[ii] - oo, kMaxPiece);
      loc[k] = {static_cast<char *>(locals[ii]) + oo, piece};
      rem[k] = {reinterpret_cast<void *>(uintptr_t(descs[ii].addr + oo)), piece};
      oo += piece;
      if (oo == sizes[ii]) ++ii, oo = 0;
    }
    ssize_t got = write ? process_vm_writev(pid, loc, k, rem, k, 0)
                        : process_vm_readv(pid, loc, k, rem, k, 0);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return false; // ESRCH, EFAULT, EPERM, ...: the op failed
    for (size_t left = size_t(got); left > 0;) {
      size_t step = std::min(left, sizes[i] - off);
      left -= step;
      off += step;
      if (off == sizes[i]) ++i, off = 0;
    }
  }
  return true;
}

bool moveBytes(bool write, const Conn &c,
               const std::vector<void *> &locals,
               const std::vector<size_t> &sizes,
               const std::vector<FlagcxP2pRdmaDesc> &descs, size_t n) {
  if (!checkRemote(c, sizes, descs, n)) return false;
  if (!c.sameProcess) return vmCopy(write, c.peerPid, locals, sizes, descs, n);
  for (size_t i = 0; i < n; ++i) {
    void *remote = reinterpret_cast<void *>(uintptr_t(descs[i].addr));
    // memmove: in one process the two ranges may overlap.
    if (write)
      std::memmove(remote, locals[i], sizes[i]);
    else
      std::memmove(locals[i], remote, sizes[i]);
  }
  return true;
}

inline uint64_t satAdd(uint64_t a, uint64_t b) {
  return b > UINT64_MAX - a ? UINT64_MAX : a + b;
}

// NIC mode, cross-process: no process_vm_*v call tells us the peer died, so
// look at it directly, at most once per kLivenessPeriodNs per connection
// (one thread wins the CAS and checks; the others go on). A pidfd reports a
// peer that exited even while it is an unreaped zombie and cannot be fooled
// by pid reuse; without one, kill(pid, 0) is the fallback. Once seen dead, a
// peer stays dead.
bool peerAlive(Conn &c, uint64_t now) {
  // Relaxed (all three): independent flags/times; a stale read only delays
  // the check or the verdict by one period, it orders no other data.
  if (c.peerGone.load(std::memory_order_relaxed)) return false;
  uint64_t next = c.nextLivenessCheckNs.load(std::memory_order_relaxed);
  if (now < next ||
      !c.nextLivenessCheckNs.compare_exchange_strong(
          next, satAdd(now, kLivenessPeriodNs), std::memory_order_relaxed))
    return true;
  bool gone;
  if (c.peerPidFd >= 0) {
    pollfd p{c.peerPidFd, POLLIN, 0};
    gone = poll(&p, 1, 0) > 0; // readable (or POLLERR/POLLHUP) once it exited
  } else {
    gone = kill(c.peerPid, 0) != 0 && errno == ESRCH;
  }
  if (gone) c.peerGone.store(true, std::memory_order_relaxed);
  return !gone;
}

// Books `bytes` on the link at `now` (FIFO with everything booked before on
// this engine) and returns when its last bit has left, in steady-clock ns.
uint64_t linkBook(Link &l, uint64_t bytes, uint64_t gbps, uint64_t now) {
  // bytes * 8 bits / gbps = ns; in ticks, rounded up so the model is never
  // faster than the link. 64-bit math unless the product would overflow.
  uint64_t dur;
  constexpr uint64_t kBitTicks = 8 * kLinkTicksPerNs;
  if (bytes <= (UINT64_MAX - gbps) / kBitTicks) {
    dur = (bytes * kBitTicks + gbps - 1) / gbps;
  } else {
    unsigned __int128 d =
        ((unsigned __int128)bytes * kBitTicks + gbps - 1) / gbps;
    dur = d > UINT64_MAX ? UINT64_MAX : uint64_t(d);
  }
  uint64_t since = now > l.epochNs ? now - l.epochNs : 0;
  uint64_t nowTicks = since > UINT64_MAX / kLinkTicksPerNs
                          ? UINT64_MAX
                          : since * kLinkTicksPerNs;
  // Relaxed: the value is a time, not a guard for other data; the CAS alone
  // makes bookings from concurrent submitters line up one after another.
  uint64_t cur = l.freeAtTicks.load(std::memory_order_relaxed);
  uint64_t end;
  do {
    end = satAdd(std::max(cur, nowTicks), dur);
  } while (!l.freeAtTicks.compare_exchange_weak(
      cur, end, std::memory_order_relaxed, std::memory_order_relaxed));
  uint64_t endNs = end / kLinkTicksPerNs + (end % kLinkTicksPerNs != 0);
  return satAdd(l.epochNs, endNs);
}

// NIC mode: the checks of copy mode, then a booking instead of the copy.
// Returns the completion time, or 0 when the transfer fails.
uint64_t nicTransfer(Conn &c, const std::vector<size_t> &sizes,
                     const std::vector<FlagcxP2pRdmaDesc> &descs, size_t n,
                     uint64_t gbps, uint64_t now) {
  if (!checkRemote(c, sizes, descs, n)) return 0;
  if (!c.sameProcess && !peerAlive(c, now)) return 0;
  if (c.link == nullptr) return 0; // every handshake sets it; defensive
  uint64_t bytes = 0;
  for (size_t i = 0; i < n; ++i) bytes = satAdd(bytes, sizes[i]);
  return satAdd(linkBook(*c.link, bytes, gbps, now),
                knob(FLAGCX_SW_KNOB_NIC_LATENCY_NS));
}

bool validArgs(Conn *conn, const std::vector<FlagcxP2pMr> &mrs,
               const std::vector<void *> &locals,
               const std::vector<size_t> &sizes,
               const std::vector<FlagcxP2pRdmaDesc> &descs, int numIovs,
               uint64_t *transferId) {
  if (conn == nullptr || transferId == nullptr || numIovs <= 0) return false;
  size_t n = size_t(numIovs);
  if (mrs.size() < n || locals.size() < n || sizes.size() < n ||
      descs.size() < n)
    return false;
  if (std::find(sizes.begin(), sizes.begin() + n, size_t(0)) !=
      sizes.begin() + n)
    return false;
  return regCheckLocal(mrs.data(), locals.data(), sizes.data(), n);
}

// The id's slot no longer (or never) held it: classify the misuse.
int notLive(const Slot &s, uint64_t id) {
  bool seen = uint32_t(id >> 32) <= s.lastGeneration.load();
  recordViolation(seen ? FLAGCX_SW_VIOLATION_REPEATED_POLL
                       : FLAGCX_SW_VIOLATION_UNKNOWN_POLL,
                  id);
  return FLAGCX_SW_XFER_DONE;
}

} // namespace

int submit(bool write, Conn *conn, const std::vector<FlagcxP2pMr> &mrs,
           const std::vector<void *> &locals, const std::vector<size_t> &sizes,
           const std::vector<FlagcxP2pRdmaDesc> &descs, int numIovs,
           uint64_t *transferId) {
  if (!validArgs(conn, mrs, locals, sizes, descs, numIovs, transferId))
    return -1;
  uint32_t index = 0;
  if (!pool().take(&index)) return -1;
  Slot &s = *pool().at(index);
  uint64_t seq = issuedCounter().fetch_add(1) + 1;
  s.failed = false;
  s.hang = false;
  uint64_t gbps = knob(FLAGCX_SW_KNOB_NIC_GBPS);
  uint64_t latency = knob(FLAGCX_SW_KNOB_LATENCY_NS);
  uint64_t now = 0;   // read only when needed
  uint64_t ready = 0; // 0 = ready at once
  if (faultSelected(FLAGCX_SW_KNOB_FAIL_OP, seq)) {
    s.failed = true;
  } else if (faultSelected(FLAGCX_SW_KNOB_HANG_OP, seq)) {
    s.hang = true;
  } else if (gbps != 0) {
    now = nowNs();
    try {
      ready = nicTransfer(*conn, sizes, descs, size_t(numIovs), gbps, now);
    } catch (...) {
      ready = 0; // as in copy mode: report the failure, don't leak the id
    }
    s.failed = ready == 0;
  } else {
    try {
      s.failed = !moveBytes(write, *conn, locals, sizes, descs, size_t(numIovs));
    } catch (...) {
      s.failed = true; // the id is already counted: report, don't leak it
    }
  }
  if (latency != 0) {
    if (now == 0) now = nowNs();
    ready = std::max(ready, satAdd(now, latency));
  }
  s.readyNs = ready;
  uint32_t gen = s.lastGeneration.load() + 1;
  if (gen == 0) gen = 1; // ids are never 0, even after 2^32 reuses
  s.lastGeneration.store(gen);
  uint64_t id = (uint64_t(gen) << 32) | index;
  g_outstanding.fetch_add(1);
  s.liveId.store(id, std::memory_order_release);
  *transferId = id;
  return 0;
}

int pollResult(Conn *conn, uint64_t id) {
  if (conn == nullptr) return FLAGCX_SW_XFER_DONE;
  uint32_t index = uint32_t(id);
  Slot *s = uint32_t(id >> 32) == 0 ? nullptr : pool().at(index);
  if (s == nullptr) {
    recordViolation(FLAGCX_SW_VIOLATION_UNKNOWN_POLL, id);
    return FLAGCX_SW_XFER_DONE;
  }
  if (s->liveId.load(std::memory_order_acquire) != id) return notLive(*s, id);
  if (s->pollers.fetch_add(1, std::memory_order_acq_rel) != 0) {
    recordViolation(FLAGCX_SW_VIOLATION_CONCURRENT_POLL, id);
    s->pollers.fetch_sub(1, std::memory_order_acq_rel);
    return FLAGCX_SW_XFER_PENDING;
  }
  // A poller that retired this id between our first check and taking
  // `pollers` stored liveId = 0 before releasing `pollers`: re-check.
  if (s->liveId.load(std::memory_order_acquire) != id) {
    s->pollers.fetch_sub(1, std::memory_order_acq_rel);
    return notLive(*s, id);
  }
  if (s->hang || (s->readyNs != 0 && nowNs() < s->readyNs)) {
    s->pollers.fetch_sub(1, std::memory_order_acq_rel);
    return FLAGCX_SW_XFER_PENDING;
  }
  int result = s->failed ? FLAGCX_SW_XFER_FAILED : FLAGCX_SW_XFER_DONE;
  s->liveId.store(0, std::memory_order_release);
  s->pollers.fetch_sub(1, std::memory_order_acq_rel);
  g_outstanding.fetch_sub(1);
  pool().give(index);
  return result;
}

int writeSync(Conn *conn, const std::vector<FlagcxP2pMr> &mrs,
              const std::vector<void *> &locals,
              const std::vector<size_t> &sizes,
              const std::vector<FlagcxP2pRdmaDesc> &descs) {
  if (mrs.size() > size_t(INT_MAX)) return -1;
  uint64_t id = 0;
  if (submit(true, conn, mrs, locals, sizes, descs, int(mrs.size()), &id) != 0)
    return -1;
  // We are the id's only poller. A HANG_OP transfer blocks here forever, as
  // a lost completion would with real FlagCX.
  for (unsigned spins = 0;; ++spins) {
    int r = pollResult(conn, id);
    if (r != FLAGCX_SW_XFER_PENDING) return r == FLAGCX_SW_XFER_DONE ? 0 : -1;
    if (spins < 1000)
      std::this_thread::yield();
    else
      std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
}

} // namespace flagcx_sw

using namespace flagcx_sw;

FLAGCX_SW_API int flagcxP2pEngineWriteVector(
    FlagcxP2pConn *conn, const std::vector<FlagcxP2pMr> &mrIds,
    const std::vector<void *> &srcVec, const std::vector<size_t> &sizeVec,
    const std::vector<FlagcxP2pRdmaDesc> &descs, int numIovs,
    uint64_t *transferId, const std::vector<char *> & /*ipcBufs*/) {
  try {
    return submit(true, impl(conn), mrIds, srcVec, sizeVec, descs, numIovs,
                  transferId);
  } catch (...) {
    return -1;
  }
}

FLAGCX_SW_API int flagcxP2pEngineReadVector(
    FlagcxP2pConn *conn, std::vector<FlagcxP2pMr> mrIds,
    std::vector<void *> dstVec, std::vector<size_t> sizeVec,
    std::vector<FlagcxP2pRdmaDesc> descs, int numIovs, uint64_t *transferId,
    std::vector<char *> /*ipcBufs*/) {
  try {
    return submit(false, impl(conn), mrIds, dstVec, sizeVec, descs, numIovs,
                  transferId);
  } catch (...) {
    return -1;
  }
}

FLAGCX_SW_API int flagcxP2pEngineWriteVectorSync(
    FlagcxP2pConn *conn, const std::vector<FlagcxP2pMr> &mrIds,
    const std::vector<void *> &srcVec, const std::vector<size_t> &sizeVec,
    const std::vector<FlagcxP2pRdmaDesc> &descs) {
  try {
    return writeSync(impl(conn), mrIds, srcVec, sizeVec, descs);
  } catch (...) {
    return -1;
  }
}

FLAGCX_SW_API bool flagcxP2pEngineXferStatus(FlagcxP2pConn *conn,
                                             uint64_t transferId) {
  try {
    return pollResult(impl(conn), transferId) != FLAGCX_SW_XFER_PENDING;
  } catch (...) {
    return true;
  }
}

extern "C" {

FLAGCX_SW_API int flagcxSwXferResult(struct FlagcxP2pConn *conn,
                                     uint64_t transferId) {
  try {
    return pollResult(impl(conn), transferId);
  } catch (...) {
    return FLAGCX_SW_XFER_DONE;
  }
}

FLAGCX_SW_API uint64_t flagcxSwTransfersOutstanding(void) {
  return g_outstanding.load();
}

} // extern "C"
