// Engine lifecycle and the handshake server.
//
// Invariants:
// - Create binds the listener but starts no thread; until StartRpcServer the
//   kernel backlog accepts connections nobody answers (peers then time out,
//   as with real FlagCX).
// - The listener's address is the one the metadata publishes: 127.0.0.1, or
//   FLAGCX_SW_LISTEN_ADDR (a numeric IPv4 or IPv6 address of this host,
//   read at each Create). A value that cannot be bound and published (not
//   numeric, a wildcard, not this host's) fails Create: falling back to
//   loopback would publish an endpoint other hosts cannot reach.
// - At most one accept thread per engine; it serves one handshake at a time
//   and checks stopFlag at least every 100 ms, so StopAccept/Destroy return
//   promptly even while a peer stalls mid-handshake.
// - listenFd is closed only after the accept thread has been joined.
// - The server side needs only the process-global registry, never the
//   engine's connection cache.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include "internal.h"

namespace flagcx_sw {
namespace {

constexpr int kBacklog = 128;
constexpr const char *kListenAddrEnv = "FLAGCX_SW_LISTEN_ADDR";

// Where to listen: FLAGCX_SW_LISTEN_ADDR, or 127.0.0.1 when unset or empty.
// Fills *addr (port 0: ephemeral, like FlagCX) and *host (as published: the
// address's canonical text, IPv6 in brackets); false, with a line on stderr,
// for a value that cannot be published.
bool listenAddress(sockaddr_storage *addr, socklen_t *len, std::string *host) {
  const char *env = std::getenv(kListenAddrEnv);
  const char *text = env != nullptr && *env != '\0' ? env : "127.0.0.1";
  std::memset(addr, 0, sizeof *addr);
  auto *v4 = reinterpret_cast<sockaddr_in *>(addr);
  auto *v6 = reinterpret_cast<sockaddr_in6 *>(addr);
  char canon[INET6_ADDRSTRLEN];
  if (inet_pton(AF_INET, text, &v4->sin_addr) == 1 &&
      inet_ntop(AF_INET, &v4->sin_addr, canon, sizeof canon) != nullptr) {
    v4->sin_family = AF_INET;
    *len = sizeof *v4;
    *host = canon;
    if (v4->sin_addr.s_addr != htonl(INADDR_ANY)) return true;
  } else if (inet_pton(AF_INET6, text, &v6->sin6_addr) == 1 &&
             inet_ntop(AF_INET6, &v6->sin6_addr, canon, sizeof canon) != nullptr) {
    v6->sin6_family = AF_INET6;
    *len = sizeof *v6;
    *host = std::string("[") + canon + "]";
    if (!IN6_IS_ADDR_UNSPECIFIED(&v6->sin6_addr) &&
        !IN6_IS_ADDR_LINKLOCAL(&v6->sin6_addr))
      return true;
  } else {
    std::fprintf(stderr,
                 "[flagcx-sw] %s=%s is not a numeric IPv4 or IPv6 address\n",
                 kListenAddrEnv, text);
    return false;
  }
  std::fprintf(stderr,
               "[flagcx-sw] %s=%s cannot be published to peers (a wildcard "
               "or link-local address); give one of this host's addresses\n",
               kListenAddrEnv, text);
  return false;
}

int openListener(int *port, std::string *host) {
  sockaddr_storage a{};
  socklen_t len = 0;
  if (!listenAddress(&a, &len, host)) return -1;
  int fd = socket(a.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (bind(fd, reinterpret_cast<sockaddr *>(&a), len) != 0) {
    int err = errno;
    std::fprintf(stderr, "[flagcx-sw] cannot listen on %s: %s\n",
                 host->c_str(), std::strerror(err));
    close(fd);
    return -1;
  }
  if (listen(fd, kBacklog) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr *>(&a), &len) != 0) {
    close(fd);
    return -1;
  }
  *port = ntohs(a.ss_family == AF_INET
                    ? reinterpret_cast<sockaddr_in *>(&a)->sin_port
                    : reinterpret_cast<sockaddr_in6 *>(&a)->sin6_port);
  return fd;
}

// Hello in, snapshot of this process's MRs out. Any failure just drops the
// socket: a bad client must never take the server down.
void serveOne(Engine *e, int fd) {
  uint64_t deadline = nsFromNow(msToNs(knob(FLAGCX_SW_KNOB_CONNECT_TIMEOUT_MS)));
  pid_t peer = 0;
  std::vector<Region> ignored; // the initiator's regions; we never write to it
  if (recvHello(fd, deadline, &e->stopFlag, &peer, &ignored))
    sendHello(fd, deadline, &e->stopFlag);
}

void acceptLoop(Engine *e) {
  while (!e->stopFlag.load()) {
    int fd = accept4(e->listenFd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      try {
        serveOne(e, fd);
      } catch (...) {
        // e.g. bad_alloc building the snapshot: drop this peer, keep serving
      }
      close(fd);
      continue;
    }
    if (errno == EINVAL || errno == EBADF || errno == ENOTSOCK)
      break; // EINVAL: shutdown() by StopAccept
    // Nothing pending, an aborted peer or a transient shortage (EMFILE...):
    // wait, bounded so the stop flag is seen.
    pollfd p{e->listenFd, POLLIN, 0};
    poll(&p, 1, 100);
  }
}

} // namespace
} // namespace flagcx_sw

using namespace flagcx_sw;

FLAGCX_SW_API FlagcxP2pEngine *flagcxP2pEngineCreate() {
  try {
    // Cross-process peers move our bytes with process_vm_{read,write}v, which
    // Yama (ptrace_scope 1) only allows to our declared tracers.
    prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0);
    auto *e = new Engine();
    e->listenFd = openListener(&e->port, &e->host);
    if (e->listenFd < 0) {
      delete e;
      return nullptr;
    }
    e->link = new (std::nothrow) Link(nowNs());
    if (e->link == nullptr) {
      close(e->listenFd);
      delete e;
      return nullptr;
    }
    return handle(e);
  } catch (...) {
    return nullptr;
  }
}

FLAGCX_SW_API int flagcxP2pEngineStartRpcServer(FlagcxP2pEngine *h) {
  try {
    Engine *engine = impl(h);
    if (engine == nullptr) return -1;
    std::lock_guard<std::mutex> lock(engine->lifeMu);
    if (engine->stopped) return -1; // the listener is gone for good
    if (!engine->acceptThread.joinable())
      // A lambda (internal linkage) keeps std::thread's state type out of
      // the dynamic symbol table.
      engine->acceptThread = std::thread([engine] { acceptLoop(engine); });
    return 0;
  } catch (...) {
    return -1;
  }
}

FLAGCX_SW_API void flagcxP2pEngineStopAccept(FlagcxP2pEngine *h) {
  try {
    Engine *engine = impl(h);
    if (engine == nullptr) return;
    std::lock_guard<std::mutex> lock(engine->lifeMu);
    if (engine->stopped) return;
    engine->stopped = true;
    engine->stopFlag.store(true);
    shutdown(engine->listenFd, SHUT_RDWR); // wakes a poll()/accept() at once
    if (engine->acceptThread.joinable()) engine->acceptThread.join();
    close(engine->listenFd);
    engine->listenFd = -1;
  } catch (...) {
  }
}

FLAGCX_SW_API int flagcxP2pEngineGetRpcPort(FlagcxP2pEngine *h) {
  return h == nullptr ? -1 : impl(h)->port;
}

FLAGCX_SW_API int flagcxP2pEngineGetMetadata(FlagcxP2pEngine *h,
                                             char **metadataStr) {
  try {
    Engine *engine = impl(h);
    if (engine == nullptr || metadataStr == nullptr) return -1;
    char buf[96]; // "[" INET6_ADDRSTRLEN "]:65535?0?65535"
    int n = std::snprintf(buf, sizeof buf, "%s:%d?0?%d", engine->host.c_str(),
                          engine->port, engine->port);
    if (n < 0 || size_t(n) >= sizeof buf) return -1;
    char *out = new char[size_t(n) + 1];
    std::memcpy(out, buf, size_t(n) + 1);
    *metadataStr = out;
    return 0;
  } catch (...) {
    return -1;
  }
}

FLAGCX_SW_API void flagcxP2pEngineDestroy(FlagcxP2pEngine *h) {
  try {
    Engine *engine = impl(h);
    if (engine == nullptr) return;
    flagcxP2pEngineStopAccept(h);
    {
      std::lock_guard<std::mutex> lock(engine->cacheMu);
      for (auto &kv : engine->cache) delete kv.second;
      engine->cache.clear();
    }
    regClear(); // real FlagCX drops every MR of the process here
    linkRelease(engine->link); // connections made by Connect keep theirs
    delete engine;
  } catch (...) {
  }
}
