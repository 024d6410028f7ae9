// Bounded socket I/O and the handshake message, shared by the accept thread
// (engine.cpp) and the connecting side (conn.cpp).
//
// Invariants:
// - Sockets are non-blocking; every wait is a poll() of at most kSliceMs, so
//   a deadline or a stop request is noticed promptly and nothing blocks
//   forever on a silent peer.
// - send() always uses MSG_NOSIGNAL: a vanished peer is an error, not SIGPIPE.
// - Both peers live on one machine (network namespaces may differ), so the
//   message uses native byte order.
// - A malformed hello (bad magic/version/pid, absurd count, short read) is
//   rejected as a whole; the caller only closes the socket.
// - Version 2 added the key table (keys.cpp): the sender's table fd in the
//   header, each region's slot and MR id.
// - Version 3 added the sender's locality: the machine's boot id and its PID
//   namespace. A hello from another machine or PID namespace is rejected:
//   its pid (and key table fd) would name some other process here, which
//   process_vm_{read,write}v would then write to, or the peer would be taken
//   for this very process. With FLAGCX_SW_LISTEN_ADDR the listener is
//   reachable from other network namespaces and hosts, where this matters.

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>

#include "internal.h"

namespace flagcx_sw {
namespace {

constexpr uint32_t kMagic = 0x46435357; // "FCSW"
constexpr uint32_t kVersion = 3;
constexpr uint32_t kMaxRegions = 1u << 20;
constexpr int kSliceMs = 100;
constexpr uint64_t kLocalityLogLimit = 10;

// Where a process lives: which machine (boot id) and which PID namespace.
// Two processes with equal values can name each other by pid.
struct Locality {
  char bootId[40];   // /proc/sys/kernel/random/boot_id, NUL-padded
  uint64_t pidNsDev; // stat("/proc/self/ns/pid")
  uint64_t pidNsIno;
};

Locality readLocality() {
  Locality l{};
  int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ssize_t n = read(fd, l.bootId, sizeof l.bootId - 1);
    close(fd);
    for (ssize_t i = 0; i < n; ++i)
      if (l.bootId[i] == '\n') l.bootId[i] = '\0';
  }
  struct stat st{};
  if (stat("/proc/self/ns/pid", &st) == 0) {
    l.pidNsDev = uint64_t(st.st_dev);
    l.pidNsIno = uint64_t(st.st_ino);
  }
  return l;
}

// This process's; the PID namespace of a process never changes (unshare and
// setns move its children only), so once is enough.
const Locality &locality() {
  static const Locality l = readLocality();
  return l;
}

std::atomic<uint64_t> g_foreignLogged{0};

struct WireHeader {
  uint32_t magic;
  uint32_t version;
  int32_t pid;
  uint32_t count;
  int32_t keyFd; // -1: no key table
  uint32_t reserved;
  Locality where;
};

struct WireRegion {
  uint64_t base;
  uint64_t size;
  uint32_t rkey;
  uint32_t slot;
  uint64_t id;
};
static_assert(sizeof(WireHeader) == 80 && sizeof(WireRegion) == 32,
              "wire layout has no padding surprises");

bool transferAll(int fd, char *buf, size_t len, bool out, uint64_t deadlineNs,
                 const std::atomic<bool> *stop) {
  while (len > 0) {
    ssize_t n = out ? send(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT)
                    : recv(fd, buf, len, MSG_DONTWAIT);
    if (n > 0) {
      buf += n;
      len -= size_t(n);
    } else if (n == 0) {
      return false; // orderly shutdown before the message was complete
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (!waitReady(fd, out ? POLLOUT : POLLIN, deadlineNs, stop))
        return false;
    } else if (errno != EINTR) {
      return false;
    }
  }
  return true;
}

} // namespace

uint64_t nowNs() {
  return uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(
                      std::chrono::steady_clock::now().time_since_epoch())
                      .count());
}

uint64_t nsFromNow(uint64_t ns) {
  uint64_t now = nowNs();
  return ns > UINT64_MAX - now ? UINT64_MAX : now + ns;
}

bool waitReady(int fd, short events, uint64_t deadlineNs,
               const std::atomic<bool> *stop) {
  for (;;) {
    if (stop != nullptr && stop->load()) return false;
    uint64_t now = nowNs();
    if (now >= deadlineNs) return false;
    uint64_t leftMs = (deadlineNs - now + 999999) / 1000000;
    pollfd p{fd, events, 0};
    int rc = poll(&p, 1, int(leftMs < kSliceMs ? leftMs : kSliceMs));
    if (rc > 0) return true; // errors surface in the following call
    if (rc < 0 && errno != EINTR) return false;
  }
}

bool sendAll(int fd, const void *buf, size_t len, uint64_t deadlineNs,
             const std::atomic<bool> *stop) {
  return transferAll(fd, static_cast<char *>(const_cast<void *>(buf)), len,
                     true, deadlineNs, stop);
}

bool recvAll(int fd, void *buf, size_t len, uint64_t deadlineNs,
             const std::atomic<bool> *stop) {
  return transferAll(fd, static_cast<char *>(buf), len, false, deadlineNs,
                     stop);
}

bool sendHello(int fd, uint64_t deadlineNs, const std::atomic<bool> *stop) {
  int keyFd = -1;
  std::vector<Region> regions = regSnapshot(&keyFd);
  if (regions.size() > kMaxRegions) regions.resize(kMaxRegions);
  std::vector<char> msg(sizeof(WireHeader) + regions.size() * sizeof(WireRegion));
  WireHeader h{kMagic,         kVersion, int32_t(getpid()), uint32_t(regions.size()),
               int32_t(keyFd), 0,        locality()};
  std::memcpy(msg.data(), &h, sizeof h);
  char *p = msg.data() + sizeof h;
  for (const Region &r : regions) {
    WireRegion w{r.base, r.size, r.rkey, r.slot, r.id};
    std::memcpy(p, &w, sizeof w);
    p += sizeof w;
  }
  return sendAll(fd, msg.data(), msg.size(), deadlineNs, stop);
}

bool recvHello(int fd, uint64_t deadlineNs, const std::atomic<bool> *stop,
               pid_t *pid, std::vector<Region> *regions, int *keyFd) {
  WireHeader h{};
  if (!recvAll(fd, &h, sizeof h, deadlineNs, stop)) return false;
  if (h.magic != kMagic || h.version != kVersion || h.pid <= 0 ||
      h.count > kMaxRegions)
    return false;
  const Locality &here = locality();
  if (std::memcmp(h.where.bootId, here.bootId, sizeof here.bootId) != 0 ||
      h.where.pidNsDev != here.pidNsDev || h.where.pidNsIno != here.pidNsIno) {
    if (g_foreignLogged.fetch_add(1, std::memory_order_relaxed) <
        kLocalityLogLimit)
      std::fprintf(stderr,
                   "[flagcx-sw] refusing a peer on another machine or in "
                   "another PID namespace: the software provider moves bytes "
                   "with process_vm_readv/writev, between processes of one "
                   "machine and one PID namespace\n");
    return false;
  }
  std::vector<WireRegion> wire(h.count);
  if (!recvAll(fd, wire.data(), wire.size() * sizeof(WireRegion), deadlineNs,
               stop))
    return false;
  regions->clear();
  regions->reserve(wire.size());
  for (const WireRegion &w : wire)
    if (w.size != 0 && w.rkey != 0 && w.id != 0)
      regions->push_back(Region{w.base, w.size, w.rkey, w.slot, w.id});
  *pid = pid_t(h.pid);
  if (keyFd != nullptr) *keyFd = h.keyFd;
  return true;
}

} // namespace flagcx_sw
