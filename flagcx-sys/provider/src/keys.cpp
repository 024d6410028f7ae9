// Remote-key revocation across processes: the key table.
//
// On RDMA a registration has a key the peer learns at connect time, and
// deregistration invalidates it in the NIC: a later transfer through it
// fails at the target. Here the target runs no code per transfer, so it
// publishes the state of its keys in shared memory for initiators to check
// just before they copy:
//
// - Each process that registers memory owns one key table: a memfd of
//   kKeySlots 64-bit words, mapped shared. Every live MR holds one slot,
//   whose word is the MR's id (ids are never reused, never 0); a free slot
//   holds 0. Register: take a slot, store the id (release), then the MR may
//   appear in a snapshot. Deregister: store 0 (release), then free the slot.
//   A slot taken again later holds a different id, so a snapshot entry
//   (slot, id) matches only the registration it was taken from.
// - The handshake's hello carries the table's fd number and each region's
//   (slot, id). A cross-process initiator opens /proc/<pid>/fd/<fd>
//   read-only (the same ptrace access check as process_vm_readv, weaker
//   than process_vm_writev's), maps the words its snapshot uses, and before
//   each copy compares one word per entry (acquire load) with the id it
//   learned. A peer with regions whose table cannot be mapped fails the
//   connect: no silent unchecked writes.
// - In one process, connections check the registry itself (regCheckLive),
//   which also sees a size changed by re-registering a base in place.
// - The owner-side functions run under the registry's exclusive lock
//   (registry.cpp), which serializes them; nothing here takes a lock.
// - fork: the owner's mapping is MADV_DONTFORK, so a child never writes its
//   parent's table. The child's first registry call that publishes sees the
//   pid changed (keysPrepare returns 1) and builds a table of its own, into
//   which the registry republishes the MRs it inherited.
//
// The check and the copy are not atomic: a deregistration between an
// initiator's check and the end of its copy does not stop that copy (RDMA
// has the same window for an operation the NIC is already executing).

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "internal.h"

namespace flagcx_sw {
namespace {

static_assert(std::atomic<uint64_t>::is_always_lock_free,
              "key words are shared between processes");
static_assert(sizeof(std::atomic<uint64_t>) == sizeof(uint64_t),
              "a key word is a plain 64-bit word in the shared file");

constexpr size_t kTableBytes = size_t(kKeySlots) * sizeof(uint64_t);

// A wrapper type keeps the free list's vector instantiation hidden.
struct FreeKeySlot {
  uint32_t index;
};

struct KeyTable {
  pid_t owner = 0; // the process that made fd/words; 0 = none yet
  int fd = -1;
  std::atomic<uint64_t> *words = nullptr;
  std::vector<FreeKeySlot> free; // slots given back, reused first
  uint32_t next = 0;             // slots [next, kKeySlots) never taken
};

KeyTable &table() {
  static KeyTable *t = new KeyTable(); // never freed: see internal.h
  return *t;
}

size_t pageSize() {
  static const size_t page = size_t(sysconf(_SC_PAGESIZE));
  return page;
}

int memfdCreate(const char *name) {
#ifdef SYS_memfd_create
  return int(syscall(SYS_memfd_create, name, unsigned(MFD_CLOEXEC)));
#else
  errno = ENOSYS;
  return -1;
#endif
}

} // namespace

int keysPrepare() {
  KeyTable &t = table();
  pid_t self = getpid();
  if (t.owner == self) return 0;
  // First use in this process, or first since a fork: the inherited fd is
  // the parent's table (its mapping did not survive the fork).
  if (t.fd >= 0) close(t.fd);
  t.fd = -1;
  t.words = nullptr;
  t.owner = 0;
  int fd = memfdCreate("flagcx-sw-keys");
  if (fd < 0) return -1;
  void *p = MAP_FAILED;
  if (ftruncate(fd, off_t(kTableBytes)) == 0)
    p = mmap(nullptr, kTableBytes, PROT_READ | PROT_WRITE,
             MAP_SHARED | MAP_NORESERVE, fd, 0);
  if (p == MAP_FAILED) {
    close(fd);
    return -1;
  }
  madvise(p, kTableBytes, MADV_DONTFORK);
  t.fd = fd;
  t.words = static_cast<std::atomic<uint64_t> *>(p);
  t.owner = self;
  return 1;
}

int keysFd() {
  const KeyTable &t = table();
  return t.owner == getpid() ? t.fd : -1;
}

bool keySlotTake(uint32_t *slot) {
  KeyTable &t = table();
  if (!t.free.empty()) {
    *slot = t.free.back().index;
    t.free.pop_back();
    return true;
  }
  if (t.next == kKeySlots) return false;
  // Room for every slot that could come back, so keySlotGive never throws.
  if (t.free.capacity() <= t.next) t.free.reserve(size_t(t.next) * 2 + 64);
  *slot = t.next++;
  return true;
}

void keySlotGive(uint32_t slot) { table().free.push_back(FreeKeySlot{slot}); }

// Both are no-ops without a table (keysPrepare failed): then no snapshot
// of this process names a table, and peers refuse to connect.
void keyPublish(uint32_t slot, uint64_t id) {
  // Release: a peer that later reads this word through a snapshot taken
  // after the store sees it (the snapshot travels over a socket anyway).
  KeyTable &t = table();
  if (t.words != nullptr) t.words[slot].store(id, std::memory_order_release);
}

void keyRevoke(uint32_t slot) {
  KeyTable &t = table();
  if (t.words != nullptr) t.words[slot].store(0, std::memory_order_release);
}

PeerKeys::~PeerKeys() {
  if (words != nullptr) munmap(const_cast<std::atomic<uint64_t> *>(words), bytes);
}

bool keysAttach(PeerKeys *k, pid_t pid, int fd,
                const std::vector<Region> &regions) {
  if (regions.empty()) return true; // nothing to check (or to reach)
  uint32_t top = 0;
  for (const Region &r : regions) top = std::max(top, r.slot);
  if (fd < 0 || top >= kKeySlots) return false;
  size_t page = pageSize();
  size_t bytes = (size_t(top) + 1) * sizeof(uint64_t);
  bytes = (bytes + page - 1) / page * page;
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/fd/%d", int(pid), fd);
  int f = open(path, O_RDONLY | O_CLOEXEC);
  struct stat st{};
  void *p = MAP_FAILED;
  int err = errno;
  if (f >= 0 && fstat(f, &st) == 0) {
    if (size_t(st.st_size) >= bytes)
      p = mmap(nullptr, bytes, PROT_READ, MAP_SHARED, f, 0);
    err = p == MAP_FAILED && size_t(st.st_size) < bytes ? ERANGE : errno;
  }
  if (f >= 0) close(f);
  if (p == MAP_FAILED) {
    std::fprintf(stderr,
                 "[flagcx-sw] cannot map the key table of peer pid %d (%s: "
                 "%s): connect refused\n",
                 int(pid), path, std::strerror(err));
    return false;
  }
  k->words = static_cast<const std::atomic<uint64_t> *>(p);
  k->bytes = bytes;
  k->slots = uint32_t(bytes / sizeof(uint64_t));
  return true;
}

} // namespace flagcx_sw
