// Bounded socket I/O and the handshake message, shared by the accept thread
// (engine.cpp) and the connecting side (conn.cpp).
//
// Invariants:
// - Sockets are non-blocking; every wait is a poll() of at most kSliceMs, so
//   a deadline or a stop request is noticed promptly and nothing blocks
//   forever on a silent peer.
// - send() always uses MSG_NOSIGNAL: a vanished peer is an error, not SIGPIPE.
// - Both peers live on one host, so the message uses native byte order.
// - A malformed hello (bad magic/version/pid, absurd count, short read) is
//   rejected as a whole; the caller only closes the socket.
// - Version 2 added the key table (keys.cpp): the sender's table fd in the
//   header, each region's slot and MR id.

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "internal.h"

namespace flagcx_sw {
namespace {

constexpr uint32_t kMagic = 0x46435357; // "FCSW"
constexpr uint32_t kVersion = 2;
constexpr uint32_t kMaxRegions = 1u << 20;
constexpr int kSliceMs = 100;

struct WireHeader {
  uint32_t magic;
  uint32_t version;
  int32_t pid;
  uint32_t count;
  int32_t keyFd; // -1: no key table
  uint32_t reserved;
};

struct WireRegion {
  uint64_t base;
  uint64_t size;
  uint32_t rkey;
  uint32_t slot;
  uint64_t id;
};
static_assert(sizeof(WireHeader) == 24 && sizeof(WireRegion) == 32,
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
  WireHeader h{kMagic,     kVersion, int32_t(getpid()), uint32_t(regions.size()),
               int32_t(keyFd), 0};
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
