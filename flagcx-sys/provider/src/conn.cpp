// Connections: the handshake client, the per-engine cache, descriptors.
//
// Invariants:
// - A connection is immutable once returned: peer pid, same-process flag and
//   the peer's region snapshot (sorted by base). Memory the peer registers
//   later is unknown to it; only a new connection refreshes the snapshot.
// - The cache mutex is never held across a handshake; when two threads race
//   on one session, the first inserted connection wins and the other is freed.
// - Failed handshakes are not cached, so the next GetConn retries.
// - Every connection shares its engine's link (NIC mode) and, for a peer in
//   another process, holds a pidfd of it (when the kernel has pidfd_open),
//   closed with the connection.

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>

#include "internal.h"

namespace flagcx_sw {
namespace {

// Owns a socket for the duration of one handshake.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) close(fd);
  }
};

bool connectOne(const addrinfo *ai, uint64_t deadlineNs, Fd *out) {
  Fd s;
  s.fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                ai->ai_protocol);
  if (s.fd < 0) return false;
  if (connect(s.fd, ai->ai_addr, ai->ai_addrlen) != 0) {
    if (errno != EINPROGRESS) return false;
    if (!waitReady(s.fd, POLLOUT, deadlineNs, nullptr)) return false;
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(s.fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0)
      return false;
  }
  std::swap(out->fd, s.fd);
  return true;
}

// TCP connect (each resolved address in turn), then hello both ways, all
// within CONNECT_TIMEOUT_MS.
Conn *handshake(Link *link, const std::string &host,
                const std::string &port) {
  uint64_t delayMs = knob(FLAGCX_SW_KNOB_CONNECT_DELAY_MS);
  if (delayMs != 0)
    std::this_thread::sleep_for(std::chrono::milliseconds(delayMs));
  if (knob(FLAGCX_SW_KNOB_REFUSE_CONNECT) != 0) return nullptr;
  uint64_t deadline =
      nsFromNow(msToNs(knob(FLAGCX_SW_KNOB_CONNECT_TIMEOUT_MS)));

  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo *list = nullptr;
  if (getaddrinfo(host.c_str(), port.c_str(), &hints, &list) != 0)
    return nullptr;
  std::unique_ptr<addrinfo, void (*)(addrinfo *)> guard(list, freeaddrinfo);
  Fd s;
  for (const addrinfo *ai = list; ai != nullptr && s.fd < 0; ai = ai->ai_next)
    connectOne(ai, deadline, &s);
  if (s.fd < 0) return nullptr;

  auto conn = std::make_unique<Conn>();
  int keyFd = -1;
  if (!sendHello(s.fd, deadline, nullptr) ||
      !recvHello(s.fd, deadline, nullptr, &conn->peerPid, &conn->regions,
                 &keyFd))
    return nullptr;
  conn->sameProcess = conn->peerPid == getpid();
  // Cross-process: the peer's deregistrations must be visible (keys.cpp).
  if (!conn->sameProcess &&
      !keysAttach(&conn->peerKeys, conn->peerPid, keyFd, conn->regions))
    return nullptr;
  conn->link = linkRetain(link);
#ifdef SYS_pidfd_open
  if (!conn->sameProcess)
    conn->peerPidFd = int(syscall(SYS_pidfd_open, conn->peerPid, 0));
#endif
  std::sort(conn->regions.begin(), conn->regions.end(),
            [](const Region &a, const Region &b) { return a.base < b.base; });
  return conn.release();
}

bool validPort(const std::string &p) {
  if (p.empty() || p.size() > 5 ||
      !std::all_of(p.begin(), p.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return false;
  int v = std::stoi(p);
  return v > 0 && v <= 65535;
}

// "[v6]" -> "v6"; anything else unchanged.
std::string stripBrackets(const std::string &host) {
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    return host.substr(1, host.size() - 2);
  return host;
}

// "host:port" or "[v6]:port" -> a connection, or null.
Conn *connectSession(Link *link,
                     const std::string &session) {
  size_t colon = session.rfind(':');
  if (colon == std::string::npos || colon == 0) return nullptr;
  std::string host = session.substr(0, colon);
  std::string port = session.substr(colon + 1);
  if (host.front() == '[' && host.back() != ']') return nullptr;
  if (!validPort(port)) return nullptr;
  return handshake(link, stripBrackets(host), port);
}

} // namespace

Conn::~Conn() {
  if (peerPidFd >= 0) close(peerPidFd);
  linkRelease(link);
}

const Region *findRegion(const std::vector<Region> &regions, uint64_t addr,
                         uint64_t len, uint32_t rkey) {
  // Regions may overlap, so walk down from the last base <= addr. A hit is
  // almost always the first candidate; only a miss scans further.
  auto it = std::upper_bound(
      regions.begin(), regions.end(), addr,
      [](uint64_t a, const Region &r) { return a < r.base; });
  while (it != regions.begin()) {
    --it;
    if ((rkey == kAnyKey || it->rkey == rkey) &&
        contains(it->base, it->size, addr, len))
      return &*it;
  }
  return nullptr;
}

} // namespace flagcx_sw

using namespace flagcx_sw;

FLAGCX_SW_API FlagcxP2pConn *flagcxP2pEngineGetConn(FlagcxP2pEngine *h,
                                                    const char *session) {
  try {
    Engine *engine = impl(h);
    if (engine == nullptr || session == nullptr) return nullptr;
    std::string key(session);
    {
      std::lock_guard<std::mutex> lock(engine->cacheMu);
      auto it = engine->cache.find(key);
      if (it != engine->cache.end()) return handle(it->second);
    }
    std::unique_ptr<Conn> fresh(connectSession(engine->link, key));
    if (!fresh) return nullptr;
    std::lock_guard<std::mutex> lock(engine->cacheMu);
    auto ins = engine->cache.emplace(key, fresh.get());
    if (ins.second) fresh.release(); // else a racing thread won: ours is freed
    return handle(ins.first->second);
  } catch (...) {
    return nullptr;
  }
}

FLAGCX_SW_API FlagcxP2pConn *flagcxP2pEngineConnect(FlagcxP2pEngine *engine,
                                                    const char *ipAddr,
                                                    int /*remoteGpuIdx*/,
                                                    int remotePort,
                                                    bool /*sameProcess*/) {
  // sameProcess is ignored: the handshake learns the peer's pid, which is
  // the reliable way to pick the memcpy path.
  try {
    if (engine == nullptr || ipAddr == nullptr || remotePort <= 0 ||
        remotePort > 65535)
      return nullptr;
    char port[8];
    std::snprintf(port, sizeof port, "%d", remotePort);
    return handle(handshake(impl(engine)->link, stripBrackets(ipAddr), port));
  } catch (...) {
    return nullptr;
  }
}

FLAGCX_SW_API void flagcxP2pEngineConnDestroy(FlagcxP2pConn *conn) {
  delete impl(conn); // never throws; null is a no-op
}

FLAGCX_SW_API int flagcxP2pEngineMakeDesc(FlagcxP2pConn *conn,
                                          uint64_t remoteVa, uint32_t size,
                                          FlagcxP2pRdmaDesc *desc) {
  try {
    if (conn == nullptr || desc == nullptr) return -1;
    const Region *r = findRegion(impl(conn)->regions, remoteVa, size, kAnyKey);
    if (r == nullptr) return -1;
    std::memset(desc, 0, sizeof *desc);
    desc->addr = remoteVa;
    desc->size = size;
    desc->rkey = r->rkey;
    return 0;
  } catch (...) {
    return -1;
  }
}
