// The extern "C" shim over FlagCX's C++ P2P API (see flagcx_shim.h).
//
// Compiled against whichever flagcx_p2p.h build.rs selects: the in-tree
// provider's or $FLAGCX_HOME/include. Vectors are passed as named lvalues, so
// this source compiles against every FlagCX vector signature (by value or by
// const reference); the object links only against the variant it saw.

#include "flagcx_shim.h"

#include <dlfcn.h>

#include <cstring>
#include <new>
#include <vector>

#include "flagcx_p2p.h"

static_assert(sizeof(fxs_desc) == sizeof(FlagcxP2pRdmaDesc),
              "fxs_desc mirrors FlagcxP2pRdmaDesc");
static_assert(offsetof(fxs_desc, rkey) == offsetof(FlagcxP2pRdmaDesc, rkey),
              "fxs_desc mirrors FlagcxP2pRdmaDesc");
static_assert(offsetof(fxs_desc, idx) == offsetof(FlagcxP2pRdmaDesc, idx),
              "fxs_desc mirrors FlagcxP2pRdmaDesc");

namespace {

FlagcxP2pEngine *as_engine(void *p) { return static_cast<FlagcxP2pEngine *>(p); }
FlagcxP2pConn *as_conn(void *p) { return static_cast<FlagcxP2pConn *>(p); }

// Runs `body`, turning any exception into FXS_EXCEPTION: nothing C++ may
// unwind into a C or Rust frame.
template <typename F> fxs_status guarded(F body) {
  try {
    return body();
  } catch (...) {
    return FXS_EXCEPTION;
  }
}

// The provider's failure-aware status call, when the loaded libflagcx has it.
using XferResultFn = int (*)(FlagcxP2pConn *, uint64_t);

XferResultFn xfer_result_fn() {
  // Resolved once; dlsym is thread-safe and the answer never changes.
  static const XferResultFn fn = reinterpret_cast<XferResultFn>(
      dlsym(RTLD_DEFAULT, "flagcxSwXferResult"));
  return fn;
}

// An entry list (fxs_list_*): the four argument vectors, always of equal
// length.
struct EntryList {
  std::vector<FlagcxP2pMr> mrs;
  std::vector<void *> locals;
  std::vector<size_t> sizes;
  std::vector<FlagcxP2pRdmaDesc> descs;

  void truncate(size_t n) {
    if (n >= mrs.size()) return;
    mrs.resize(n);
    locals.resize(n);
    sizes.resize(n);
    descs.resize(n);
  }
  void clear() {
    mrs.clear();
    locals.clear();
    sizes.clear();
    descs.clear();
  }
};

EntryList *as_list(void *p) { return static_cast<EntryList *>(p); }

// One vector call over a whole entry list, which is cleared afterwards.
template <typename Call>
fxs_status list_call(void *conn, void *list, uint64_t *id_out, Call call) {
  if (list == nullptr)
    return FXS_INVALID;
  EntryList &l = *as_list(list);
  if (conn == nullptr || id_out == nullptr) {
    l.clear(); // empty afterwards whatever the outcome (the header's promise)
    return FXS_INVALID;
  }
  const size_t n = l.mrs.size();
  if (n == 0 || n > static_cast<size_t>(INT32_MAX)) {
    l.clear();
    return FXS_INVALID;
  }
  const fxs_status st = guarded([&] {
    uint64_t id = 0;
    if (call(as_conn(conn), l, static_cast<int>(n), &id) != 0)
      return FXS_FLAGCX;
    *id_out = id;
    return FXS_OK;
  });
  l.clear();
  return st;
}

} // namespace

extern "C" {

void *fxs_list_create(void) {
  return new (std::nothrow) EntryList();
}

void fxs_list_destroy(void *list) { delete as_list(list); }

fxs_status fxs_list_push(void *list, void *conn, uint64_t mr, void *local,
                         uint32_t len, uint64_t remote_addr) {
  if (list == nullptr || conn == nullptr || local == nullptr || len == 0)
    return FXS_INVALID;
  EntryList &l = *as_list(list);
  const size_t n = l.mrs.size();
  const fxs_status st = guarded([&] {
    l.mrs.push_back(mr);
    l.locals.push_back(local);
    l.sizes.push_back(len);
    // Value-initialized (zeroed), then filled in place by FlagCX.
    l.descs.emplace_back();
    return flagcxP2pEngineMakeDesc(as_conn(conn), remote_addr, len,
                                   &l.descs.back()) == 0
               ? FXS_OK
               : FXS_FLAGCX;
  });
  // Shrinking never throws; a failed push_back leaves the vectors unequal.
  if (st != FXS_OK) l.truncate(n);
  return st;
}

void fxs_list_truncate(void *list, size_t n) {
  if (list != nullptr) as_list(list)->truncate(n);
}

fxs_status fxs_list_write(void *conn, void *list, uint64_t *id_out) {
  return list_call(conn, list, id_out, [](FlagcxP2pConn *c, EntryList &l,
                                          int count, uint64_t *id) {
    return flagcxP2pEngineWriteVector(c, l.mrs, l.locals, l.sizes, l.descs,
                                      count, id);
  });
}

fxs_status fxs_list_read(void *conn, void *list, uint64_t *id_out) {
  return list_call(conn, list, id_out, [](FlagcxP2pConn *c, EntryList &l,
                                          int count, uint64_t *id) {
    return flagcxP2pEngineReadVector(c, l.mrs, l.locals, l.sizes, l.descs,
                                     count, id);
  });
}

fxs_status fxs_engine_create(void **engine_out) {
  if (engine_out == nullptr) return FXS_INVALID;
  *engine_out = nullptr;
  return guarded([&] {
    FlagcxP2pEngine *e = flagcxP2pEngineCreate();
    if (e == nullptr) return FXS_FLAGCX;
    *engine_out = e;
    return FXS_OK;
  });
}

void fxs_engine_destroy(void *engine) {
  if (engine == nullptr) return;
  guarded([&] {
    flagcxP2pEngineDestroy(as_engine(engine));
    return FXS_OK;
  });
}

void fxs_engine_stop_accept(void *engine) {
  if (engine == nullptr) return;
  guarded([&] {
    flagcxP2pEngineStopAccept(as_engine(engine));
    return FXS_OK;
  });
}

fxs_status fxs_engine_start_rpc_server(void *engine) {
  if (engine == nullptr) return FXS_INVALID;
  return guarded([&] {
    return flagcxP2pEngineStartRpcServer(as_engine(engine)) == 0 ? FXS_OK
                                                                 : FXS_FLAGCX;
  });
}

int fxs_engine_rpc_port(void *engine) {
  if (engine == nullptr) return -1;
  int port = -1;
  guarded([&] {
    port = flagcxP2pEngineGetRpcPort(as_engine(engine));
    return FXS_OK;
  });
  return port;
}

fxs_status fxs_engine_metadata(void *engine, char *buf, size_t cap,
                               size_t *len) {
  if (engine == nullptr || len == nullptr || (buf == nullptr && cap != 0))
    return FXS_INVALID;
  *len = 0;
  return guarded([&] {
    char *md = nullptr;
    if (flagcxP2pEngineGetMetadata(as_engine(engine), &md) != 0 ||
        md == nullptr)
      return FXS_FLAGCX;
    const size_t n = std::strlen(md);
    *len = n;
    fxs_status st = FXS_INVALID;
    if (n < cap) {
      std::memcpy(buf, md, n + 1);
      st = FXS_OK;
    }
    delete[] md;
    return st;
  });
}

fxs_status fxs_connect(void *engine, const char *ip, int remote_gpu,
                       int remote_port, void **conn_out) {
  if (engine == nullptr || ip == nullptr || conn_out == nullptr ||
      remote_port <= 0 || remote_port > 65535)
    return FXS_INVALID;
  *conn_out = nullptr;
  return guarded([&] {
    FlagcxP2pConn *c =
        flagcxP2pEngineConnect(as_engine(engine), ip, remote_gpu, remote_port);
    if (c == nullptr) return FXS_FLAGCX;
    *conn_out = c;
    return FXS_OK;
  });
}

void fxs_conn_destroy(void *conn) {
  if (conn == nullptr) return;
  guarded([&] {
    flagcxP2pEngineConnDestroy(as_conn(conn));
    return FXS_OK;
  });
}

fxs_status fxs_reg(void *engine, uintptr_t addr, size_t len, uint64_t *mr_out) {
  if (engine == nullptr || addr == 0 || len == 0 || mr_out == nullptr)
    return FXS_INVALID;
  return guarded([&] {
    FlagcxP2pMr mr = 0;
    if (flagcxP2pEngineReg(as_engine(engine), addr, len, mr) != 0)
      return FXS_FLAGCX;
    *mr_out = mr;
    return FXS_OK;
  });
}

void fxs_mr_destroy(void *engine, uint64_t mr) {
  if (engine == nullptr) return;
  guarded([&] {
    flagcxP2pEngineMrDestroy(as_engine(engine), mr);
    return FXS_OK;
  });
}

fxs_status fxs_make_desc(void *conn, uint64_t remote_addr, uint32_t len,
                         fxs_desc *desc_out) {
  if (conn == nullptr || desc_out == nullptr || len == 0) return FXS_INVALID;
  return guarded([&] {
    FlagcxP2pRdmaDesc d;
    std::memset(&d, 0, sizeof d);
    if (flagcxP2pEngineMakeDesc(as_conn(conn), remote_addr, len, &d) != 0)
      return FXS_FLAGCX;
    std::memcpy(desc_out, &d, sizeof d);
    return FXS_OK;
  });
}

int fxs_poll(void *conn, uint64_t id) {
  if (conn == nullptr) return FXS_INVALID;
  int result = FXS_POLL_PENDING;
  const fxs_status st = guarded([&] {
    if (XferResultFn fn = xfer_result_fn()) {
      result = fn(as_conn(conn), id);
    } else {
      result = flagcxP2pEngineXferStatus(as_conn(conn), id) ? FXS_POLL_DONE
                                                             : FXS_POLL_PENDING;
    }
    return FXS_OK;
  });
  return st == FXS_OK ? result : st;
}

int fxs_reports_failures(void) { return xfer_result_fn() != nullptr ? 1 : 0; }

} // extern "C"
