// Shared internals of the software FlagCX provider. Nothing here is exported:
// the flagcx_sw namespace is hidden, so `nm -D` shows only the FlagCX API and
// the flagcxSw* extension.
//
// Invariants shared by all files:
// - Every exported function catches all exceptions and maps them to its
//   failure return; internal functions may throw (std::bad_alloc).
// - A connection's region snapshot is sorted by base and never changes after
//   the handshake, so the transfer path reads it without a lock.
// - A cross-process connection checks each remote entry's key against the
//   peer's key table (keys.cpp) right before it moves bytes.
// - Process-wide state lives in function-local statics that are never
//   destroyed, so calls racing with process exit cannot touch freed memory.

#ifndef FLAGCX_SW_INTERNAL_H_
#define FLAGCX_SW_INTERNAL_H_

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "flagcx_p2p.h"
#include "flagcx_sw.h"

#define FLAGCX_SW_API __attribute__((visibility("default")))

namespace flagcx_sw __attribute__((visibility("hidden"))) {

// One registered region as peers see it. `slot` is its word in the owner's
// key table (keys.cpp), which holds `id` (the MR id) while it is registered.
struct Region {
  uint64_t base;
  uint64_t size;
  uint32_t rkey;
  uint32_t slot;
  uint64_t id;
};

// [addr, addr + len) inside [base, base + size), without overflow.
inline bool contains(uint64_t base, uint64_t size, uint64_t addr,
                     uint64_t len) {
  return addr >= base && len <= size && addr - base <= size - len;
}

// The modeled NIC's link of one engine (NIC_GBPS mode): the time its last
// booked bit leaves, in ticks of 1/kLinkTicksPerNs ns counted from epochNs
// (fine enough that small transfers on a fast link are not rounded to whole
// nanoseconds; 2^64 ticks are 9 years). Owned jointly by the engine and every
// connection it made (a reference count, not std::shared_ptr, whose
// instances would land in the dynamic symbol table), so a connection that
// outlives its engine still has one.
constexpr uint64_t kLinkTicksPerNs = 64;
struct Link {
  explicit Link(uint64_t epoch) : epochNs(epoch) {}
  const uint64_t epochNs;
  std::atomic<uint32_t> refs{1}; // the creator's reference
  // Its own cache line: submitting threads CAS it, nothing else lives there.
  alignas(64) std::atomic<uint64_t> freeAtTicks{0};
};
inline Link *linkRetain(Link *l) {
  // Relaxed: taking a reference from one we already hold publishes nothing.
  if (l != nullptr) l->refs.fetch_add(1, std::memory_order_relaxed);
  return l;
}
inline void linkRelease(Link *l) {
  if (l != nullptr && l->refs.fetch_sub(1) == 1) delete l;
}

// A cross-process connection's read-only view of the peer's key table
// (keys.cpp): the words [0, slots) of it, unmapped with the connection.
struct PeerKeys {
  PeerKeys() = default;
  PeerKeys(const PeerKeys &) = delete;
  PeerKeys &operator=(const PeerKeys &) = delete;
  ~PeerKeys();
  const std::atomic<uint64_t> *words = nullptr;
  size_t bytes = 0;
  uint32_t slots = 0;
};

// Whether the registration the snapshot entry r was taken from is still
// live in the peer: one acquire load. Every snapshot slot is < slots
// (keysAttach), the bound check is defensive.
inline bool keyLive(const PeerKeys &k, const Region &r) {
  return r.slot < k.slots &&
         k.words[r.slot].load(std::memory_order_acquire) == r.id;
}

// The objects behind the API's opaque handles. They live in this hidden
// namespace (the public handle types stay incomplete) so that neither they
// nor the std templates instantiated over them leak into the dynamic symbol
// table.
struct Conn {
  Conn() = default;
  Conn(const Conn &) = delete;
  Conn &operator=(const Conn &) = delete;
  ~Conn();
  pid_t peerPid = 0;
  bool sameProcess = false; // memcpy instead of process_vm_{read,write}v
  std::vector<Region> regions; // peer snapshot, sorted by base
  Link *link = nullptr;        // the local engine's (NIC mode); a reference
  // NIC mode, cross-process: how a dead peer is noticed without
  // process_vm_*v (see peerAlive in transfer.cpp).
  int peerPidFd = -1; // pidfd of the peer; -1: fall back to kill(pid, 0)
  std::atomic<uint64_t> nextLivenessCheckNs{0};
  std::atomic<bool> peerGone{false}; // sticky
  PeerKeys peerKeys; // cross-process: the peer's key table (keys.cpp)
};

struct Engine {
  int listenFd = -1;
  int port = -1;
  std::string host; // the address bound and published (engine.cpp)
  std::mutex lifeMu; // serializes start/stop of the accept thread
  std::thread acceptThread;
  bool stopped = false; // under lifeMu: StopAccept ran, the listener is gone
  std::atomic<bool> stopFlag{false};
  std::mutex cacheMu;
  std::unordered_map<std::string, Conn *> cache;
  Link *link = nullptr; // a reference; set by Create, released by Destroy
};

inline Conn *impl(FlagcxP2pConn *c) { return reinterpret_cast<Conn *>(c); }
inline Engine *impl(FlagcxP2pEngine *e) {
  return reinterpret_cast<Engine *>(e);
}
inline FlagcxP2pConn *handle(Conn *c) {
  return reinterpret_cast<FlagcxP2pConn *>(c);
}
inline FlagcxP2pEngine *handle(Engine *e) {
  return reinterpret_cast<FlagcxP2pEngine *>(e);
}

// ---- knobs.cpp -------------------------------------------------------------
uint64_t knob(int which);
// True when the transfer with this 1-based process-wide sequence number was
// selected by FAIL_OP / HANG_OP.
bool faultSelected(int which, uint64_t seq);
void recordViolation(int kind, uint64_t id);
// Accepted transfers so far; FAIL_OP/HANG_OP count relative to it.
std::atomic<uint64_t> &issuedCounter();

// ---- registry.cpp ----------------------------------------------------------
int regAdd(uintptr_t addr, size_t size, FlagcxP2pMr *id);
void regRemove(FlagcxP2pMr id);
void regClear();
// The live MRs, and in *keyFd this process's key table fd (-1: none).
std::vector<Region> regSnapshot(int *keyFd);
// Every local iov [addrs[i], +sizes[i]) inside MR ids[i], one lock for all.
bool regCheckLocal(const FlagcxP2pMr *ids, void *const *addrs,
                   const size_t *sizes, size_t n);
// Every region (by base) still registered with the same rkey and covering
// [addrs[i], +lens[i]); used for in-process peers only.
bool regCheckLive(const Region *const *regions, const uint64_t *addrs,
                  const size_t *lens, size_t n);

// ---- net.cpp: bounded socket I/O and the handshake message -------------------
uint64_t nowNs(); // steady clock
// nowNs() + ns, saturating: huge knob values mean "never", not a wrap-around.
uint64_t nsFromNow(uint64_t ns);
inline uint64_t msToNs(uint64_t ms) {
  return ms > UINT64_MAX / 1000000 ? UINT64_MAX : ms * 1000000;
}
// Waits until fd is ready for `events`; false on deadline, stop or poll error.
bool waitReady(int fd, short events, uint64_t deadlineNs,
               const std::atomic<bool> *stop);
// Moves exactly len bytes on a non-blocking socket before deadlineNs; gives
// up early when *stop becomes true (stop may be null).
bool sendAll(int fd, const void *buf, size_t len, uint64_t deadlineNs,
             const std::atomic<bool> *stop);
bool recvAll(int fd, void *buf, size_t len, uint64_t deadlineNs,
             const std::atomic<bool> *stop);
// Both sides send a hello.
bool sendHello(int fd, uint64_t deadlineNs, const std::atomic<bool> *stop);
// Hello = {magic, version, pid, count, key table fd, locality, count x
// region}; *keyFd (when not null) gets the sender's key table fd, -1 for
// none. A hello from another machine or PID namespace is refused (false).
bool recvHello(int fd, uint64_t deadlineNs, const std::atomic<bool> *stop,
               pid_t *pid, std::vector<Region> *regions,
               int *keyFd = nullptr);

// ---- conn.cpp ----------------------------------------------------------------
// First region of the (sorted) snapshot that holds [addr, +len) and carries
// rkey (kAnyKey: any key); null when none does. Real rkeys are never 0.
constexpr uint32_t kAnyKey = 0;
const Region *findRegion(const std::vector<Region> &regions, uint64_t addr,
                         uint64_t len, uint32_t rkey);

// ---- keys.cpp: remote-key revocation across processes ---------------------
constexpr uint32_t kKeySlots = 1u << 22; // live MRs per process at most
// Owner side; callers hold the registry's exclusive lock.
// 0: this process's table is ready; 1: it was just made (first use, or the
// first since a fork): every live MR must be published into it; -1: no
// table (memfd_create or mmap failed).
int keysPrepare();
int keysFd(); // this process's table, -1 when it has none
bool keySlotTake(uint32_t *slot); // false when every slot is taken
void keySlotGive(uint32_t slot);  // never allocates
void keyPublish(uint32_t slot, uint64_t id);
void keyRevoke(uint32_t slot);
// Initiator side: maps the words of the peer's table (fd in process pid)
// that the snapshot's regions use; false (and a line on stderr) when it
// cannot. An empty snapshot maps nothing.
bool keysAttach(PeerKeys *k, pid_t pid, int fd,
                const std::vector<Region> &regions);

// ---- transfer.cpp ----------------------------------------------------------
int submit(bool write, Conn *conn, const std::vector<FlagcxP2pMr> &mrs,
           const std::vector<void *> &locals, const std::vector<size_t> &sizes,
           const std::vector<FlagcxP2pRdmaDesc> &descs, int numIovs,
           uint64_t *transferId);
int writeSync(Conn *conn, const std::vector<FlagcxP2pMr> &mrs,
              const std::vector<void *> &locals,
              const std::vector<size_t> &sizes,
              const std::vector<FlagcxP2pRdmaDesc> &descs);
// FLAGCX_SW_XFER_PENDING / DONE / FAILED.
int pollResult(Conn *conn, uint64_t id);

} // namespace flagcx_sw

#endif // FLAGCX_SW_INTERNAL_H_
