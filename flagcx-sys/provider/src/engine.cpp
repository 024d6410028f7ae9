// Engine lifecycle and the handshake server.
//
// Invariants:
// - Create binds the loopback listener but starts no thread; until
//   StartRpcServer the kernel backlog accepts connections nobody answers
//   (peers then time out, as with real FlagCX).
// - At most one accept thread per engine; it serves one handshake at a time
//   and checks stopFlag at least every 100 ms, so StopAccept/Destroy return
//   promptly even while a peer stalls mid-handshake.
// - listenFd is closed only after the accept thread has been joined.
// - The server side needs only the process-global registry, never the
//   engine's connection cache.

#include <netinet/in.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <new>

#include "internal.h"

namespace flagcx_sw {
namespace {

constexpr int kBacklog = 128;

int openListener(int *port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0; // ephemeral, like FlagCX
  socklen_t len = sizeof a;
  if (bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0 ||
      listen(fd, kBacklog) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr *>(&a), &len) != 0) {
    close(fd);
    return -1;
  }
  *port = ntohs(a.sin_port);
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
    e->listenFd = openListener(&e->port);
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
    char buf[64];
    int n = std::snprintf(buf, sizeof buf, "127.0.0.1:%d?0?%d", engine->port,
                          engine->port);
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
