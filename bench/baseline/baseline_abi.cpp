// The mcfx_* C ABI of the baseline transport: the same exports, signatures
// and call-level contract as the Rust cdylib (include/mooncake_flagcx.h), so
// the two are interchangeable under LD_PRELOAD. Every export is thin: it
// checks pointers, converts the config, and runs the body in Guard(), which
// records the message of a failed call and turns any C++ exception into
// MCFX_E_INTERNAL (nothing unwinds into C).

#include <dlfcn.h>

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <iterator>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_set>
#include <utility>

#include "baseline_transport.h"

using mcfx_baseline::Fail;
using mcfx_baseline::Format;
using mcfx_baseline::Options;
using mcfx_baseline::Result;

namespace {

// ---- last error and the guard -------------------------------------------------

thread_local std::string t_last_error;

void SetLastError(const char *function, const char *prefix,
                  const char *message) noexcept {
  try {
    t_last_error.assign(function);
    t_last_error += ": ";
    t_last_error += prefix;
    t_last_error += message;
  } catch (...) {
    // Out of memory while reporting an error: keep whatever is there.
  }
}

template <typename Body>
mcfx_status Guard(const char *function, Body &&body) noexcept {
  try {
    Result r = body();
    if (r.ok()) return MCFX_OK;
    SetLastError(function, "", r.message.c_str());
    return r.status;
  } catch (const std::exception &e) {
    SetLastError(function, "internal error: ", e.what());
  } catch (...) {
    SetLastError(function, "internal error: ", "unknown C++ exception");
  }
  return MCFX_E_INTERNAL;
}

// Live handles, so destroying one twice is reported instead of freeing twice.
// Intentionally never freed: mcfx_destroy may run from static destructors.
std::mutex g_live_mu;
std::unordered_set<const mcfx_transport *> &Live() {
  static auto *live = new std::unordered_set<const mcfx_transport *>();
  return *live;
}

// ---- config ---------------------------------------------------------------------

// Everything up to `resolve_ctx` must be present (as in the Rust library).
constexpr size_t kMinConfigSize = offsetof(mcfx_config, queue_capacity);
constexpr uint32_t kMaxLogLevel = MCFX_LOG_TRACE;

// What mcfx_config_init writes: the defaults the header exports
// (MCFX_DEFAULT_*, from the Rust library's src/config.rs; baseline_test
// compares the two libraries' mcfx_config_init byte for byte). The baseline
// uses only op_timeout_ms and flags of them.
mcfx_config DefaultConfig() {
  mcfx_config c;
  std::memset(&c, 0, sizeof c);
  c.struct_size = sizeof c;
  c.abi_version = MCFX_ABI_VERSION;
  c.queue_capacity = MCFX_DEFAULT_QUEUE_CAPACITY;
  c.submit_wait_us = MCFX_DEFAULT_SUBMIT_WAIT_US;
  c.op_timeout_ms = MCFX_DEFAULT_OP_TIMEOUT_MS; // upstream's fixed deadline
  c.connect_timeout_ms = MCFX_DEFAULT_CONNECT_TIMEOUT_MS;
  c.spin_grace_us = MCFX_DEFAULT_SPIN_GRACE_US;
  c.max_batch = MCFX_DEFAULT_MAX_BATCH;
  c.max_slice_bytes = MCFX_DEFAULT_MAX_SLICE_BYTES;
  c.connect_threads = MCFX_DEFAULT_CONNECT_THREADS;
  c.shutdown_timeout_ms = MCFX_DEFAULT_SHUTDOWN_TIMEOUT_MS;
  c.log_level = MCFX_LOG_WARN;
  c.max_in_flight = MCFX_DEFAULT_MAX_IN_FLIGHT;
  c.max_regions = MCFX_DEFAULT_MAX_REGIONS;
  return c;
}

// Copies a caller's config of any (sufficient) size into a zero-filled one.
Result ReadConfig(const mcfx_config *config, mcfx_config *out) {
  if (config == nullptr) return Fail(MCFX_E_INVALID_ARGUMENT, "NULL config");
  uint32_t header[2];
  std::memcpy(header, config, sizeof header); // struct_size, abi_version
  const size_t size = header[0];
  const uint32_t version = header[1];
  if (version < 1 || version > MCFX_ABI_VERSION)
    return Fail(MCFX_E_BAD_CONFIG,
                Format("config abi_version %u, this library accepts 1..=%d",
                       version, MCFX_ABI_VERSION));
  if (size < kMinConfigSize)
    return Fail(MCFX_E_BAD_CONFIG,
                Format("config struct_size %zu is below the minimum %zu (use "
                       "mcfx_config_init)",
                       size, kMinConfigSize));
  // Whole fields only, as the Rust library: a size below the full struct
  // must end where a field ends.
#define MCFX_END(f) (offsetof(mcfx_config, f) + sizeof(((mcfx_config *)0)->f))
  static const size_t kFieldEnds[] = {
      MCFX_END(resolve_ctx), MCFX_END(queue_capacity), MCFX_END(submit_wait_us),
      MCFX_END(op_timeout_ms), MCFX_END(connect_timeout_ms),
      MCFX_END(spin_grace_us), MCFX_END(max_batch), MCFX_END(max_slice_bytes),
      MCFX_END(connect_threads), MCFX_END(shutdown_timeout_ms), MCFX_END(flags),
      MCFX_END(log_level), MCFX_END(log), MCFX_END(log_ctx),
      MCFX_END(max_in_flight), MCFX_END(max_regions)};
#undef MCFX_END
  const size_t n = std::min(size, sizeof *out);
  if (std::find(std::begin(kFieldEnds), std::end(kFieldEnds), n) ==
      std::end(kFieldEnds))
    return Fail(MCFX_E_BAD_CONFIG,
                Format("config struct_size %zu ends inside a field (it must be "
                       "sizeof(mcfx_config) of some header version; use "
                       "mcfx_config_init)",
                       size));
  std::memset(out, 0, sizeof *out);
  std::memcpy(out, config, n);
  return {};
}

// Checks the fields the Rust library checks (same statuses), then keeps what
// the baseline uses. Queue, batching, slicing, connector and shutdown
// settings belong to the Rust design; upstream had none of them. The log
// callback is ignored: upstream logged through glog, and so does nothing
// here (the Rust library implements mcfx_config.log).
Result ConvertConfig(const mcfx_config &c, Options *o) {
  if (c.on_complete == nullptr)
    return Fail(MCFX_E_INVALID_ARGUMENT, "config.on_complete is NULL");
  if (c.resolve == nullptr)
    return Fail(MCFX_E_INVALID_ARGUMENT, "config.resolve is NULL");
  // NO_PIN_ASLEEP: accepted and moot (the baseline's threads never pin).
  if ((c.flags & ~uint32_t(MCFX_FLAG_NO_SERVE | MCFX_FLAG_NO_PIN_ASLEEP)) != 0)
    return Fail(MCFX_E_BAD_CONFIG,
                Format("unknown config flags %#x", unsigned(c.flags)));
  if (c.log_level > kMaxLogLevel)
    return Fail(MCFX_E_BAD_CONFIG, Format("log_level %u is outside 1..=%u",
                                          c.log_level, kMaxLogLevel));
  // Every maximum the Rust library checks (zero means the default, so only
  // the upper bound can be broken), with its message.
  struct Max {
    const char *name;
    uint64_t value, max;
  };
  const Max maxima[] = {
      {"queue_capacity", c.queue_capacity, MCFX_MAX_QUEUE_CAPACITY},
      {"submit_wait_us", c.submit_wait_us, MCFX_MAX_SUBMIT_WAIT_US},
      {"op_timeout_ms", c.op_timeout_ms, MCFX_MAX_OP_TIMEOUT_MS},
      {"connect_timeout_ms", c.connect_timeout_ms, MCFX_MAX_CONNECT_TIMEOUT_MS},
      {"spin_grace_us", c.spin_grace_us, MCFX_MAX_SPIN_GRACE_US},
      {"max_batch", c.max_batch, MCFX_MAX_MAX_BATCH},
      {"max_slice_bytes", c.max_slice_bytes, MCFX_MAX_MAX_SLICE_BYTES},
      {"connect_threads", c.connect_threads, MCFX_MAX_CONNECT_THREADS},
      {"shutdown_timeout_ms", c.shutdown_timeout_ms, MCFX_MAX_SHUTDOWN_TIMEOUT_MS},
      {"max_in_flight", c.max_in_flight, MCFX_MAX_MAX_IN_FLIGHT},
      {"max_regions", c.max_regions, MCFX_MAX_MAX_REGIONS},
  };
  for (const Max &m : maxima)
    if (m.value > m.max)
      return Fail(MCFX_E_BAD_CONFIG,
                  Format("%s %llu is above its maximum %llu", m.name,
                         (unsigned long long)m.value, (unsigned long long)m.max));
  o->on_complete = c.on_complete;
  o->complete_ctx = c.complete_ctx;
  o->resolve = c.resolve;
  o->resolve_ctx = c.resolve_ctx;
  // upstream: a fixed 30 s deadline; op_timeout_ms overrides it when set
  // (zero: the default, as in every numeric field).
  o->op_timeout = std::chrono::milliseconds(
      c.op_timeout_ms != 0 ? c.op_timeout_ms : DefaultConfig().op_timeout_ms);
  o->serve_peers = (c.flags & MCFX_FLAG_NO_SERVE) == 0;
  return {};
}

Result InvalidIfNull(const void *p, const char *what) {
  if (p == nullptr) return Fail(MCFX_E_INVALID_ARGUMENT, what);
  return {};
}

#define MCFX_TRY(expr)                                                         \
  do {                                                                         \
    Result mcfx_try_result_ = (expr);                                          \
    if (!mcfx_try_result_.ok()) return mcfx_try_result_;                      \
  } while (0)

// Prefixes a batch element's index to its error message.
Result AtIndex(const char *what, size_t i, Result r) {
  if (!r.ok()) r.message = Format("%s %zu: ", what, i) + r.message;
  return r;
}

} // namespace

// ---- exports ---------------------------------------------------------------------

uint32_t mcfx_abi_version(void) { return MCFX_ABI_VERSION; }

const char *mcfx_impl_name(void) { return "cpp"; }

const char *mcfx_strerror(int32_t status) {
  switch (status) {
  case MCFX_OK: return "success";
  case MCFX_E_INVALID_ARGUMENT: return "invalid argument";
  case MCFX_E_BAD_CONFIG: return "invalid transport configuration";
  case MCFX_E_NOT_REGISTERED: return "local memory is not registered";
  case MCFX_E_OVERFLOW: return "address plus length overflows";
  case MCFX_E_QUEUE_FULL: return "submission queue is full";
  case MCFX_E_SHUTTING_DOWN: return "transport is shutting down";
  case MCFX_E_BUSY: return "region has operations in flight";
  case MCFX_E_ALREADY_REGISTERED: return "memory is already registered";
  case MCFX_E_NOT_FOUND: return "no region is registered at this address";
  case MCFX_E_BUFFER_TOO_SMALL: return "buffer too small";
  case MCFX_E_FLAGCX: return "FlagCX call failed";
  case MCFX_E_RESOLVE: return "peer could not be resolved";
  case MCFX_E_CONNECT: return "could not connect to peer";
  case MCFX_E_REMOTE_RANGE: return "remote range is not registered by the peer";
  case MCFX_E_TRANSFER_FAILED: return "transfer failed";
  case MCFX_E_TIMEOUT: return "operation timed out";
  case MCFX_E_CANCELED: return "operation canceled";
  case MCFX_E_PANIC: return "internal panic (bug)";
  case MCFX_E_INTERNAL: return "internal error";
  case MCFX_E_NO_MEMORY: return "out of memory";
  case MCFX_E_TOO_MANY_REGIONS: return "too many registered regions (max_regions)";
  case MCFX_E_FORKED: return "handle belongs to the parent process (forked child)";
  case MCFX_E_WOULD_DEADLOCK:
    return "destroy would deadlock (transports destroying each other from callbacks)";
  default: return "unknown status code";
  }
}

size_t mcfx_last_error(char *buf, size_t cap) {
  const std::string &message = t_last_error;
  if (buf != nullptr && cap > 0) {
    const size_t n = std::min(message.size(), cap - 1);
    std::memcpy(buf, message.data(), n);
    buf[n] = '\0';
  }
  return message.size();
}

void mcfx_config_init(struct mcfx_config *config, size_t size) {
  // Writes no more than the caller's struct, as the Rust library does.
  if (config == nullptr || size < 8) return;
  mcfx_config init = DefaultConfig();
  const size_t n = size < sizeof init ? size : sizeof init;
  init.struct_size = static_cast<uint32_t>(n);
  std::memcpy(config, &init, n);
}

mcfx_status mcfx_create(const struct mcfx_config *config,
                        struct mcfx_transport **out) {
  return Guard("mcfx_create", [&]() -> Result {
    MCFX_TRY(InvalidIfNull(out, "NULL out pointer"));
    *out = nullptr;
    mcfx_config c;
    MCFX_TRY(ReadConfig(config, &c));
    Options options;
    MCFX_TRY(ConvertConfig(c, &options));
    auto handle = std::make_unique<mcfx_transport>();
    MCFX_TRY(handle->impl.Init(options));
    {
      std::lock_guard<std::mutex> lk(g_live_mu);
      Live().insert(handle.get());
    }
    *out = handle.release();
    return {};
  });
}

mcfx_status mcfx_destroy(struct mcfx_transport *transport) {
  if (transport == nullptr) return MCFX_OK;
  return Guard("mcfx_destroy", [&]() -> Result {
    {
      std::lock_guard<std::mutex> lk(g_live_mu);
      if (Live().erase(transport) == 0)
        return Fail(MCFX_E_INVALID_ARGUMENT,
                    "not a live transport (destroyed twice?)");
    }
    delete transport; // ~Transport runs the upstream teardown
    return {};
  });
}

mcfx_status mcfx_local_endpoint(const struct mcfx_transport *transport,
                                char *buf, size_t cap, size_t *len) {
  return Guard("mcfx_local_endpoint", [&]() -> Result {
    MCFX_TRY(InvalidIfNull(transport, "NULL transport"));
    if (len == nullptr || (buf == nullptr && cap > 0))
      return Fail(MCFX_E_INVALID_ARGUMENT, "NULL buffer or length pointer");
    const std::string &ep = transport->impl.endpoint();
    *len = ep.size();
    if (ep.size() >= cap)
      return Fail(MCFX_E_BUFFER_TOO_SMALL,
                  Format("endpoint needs %zu bytes, buffer has %zu",
                         ep.size() + 1, cap));
    std::memcpy(buf, ep.c_str(), ep.size() + 1);
    return {};
  });
}

mcfx_status mcfx_register(struct mcfx_transport *transport, void *addr,
                          size_t length) {
  return Guard("mcfx_register", [&]() -> Result {
    MCFX_TRY(InvalidIfNull(transport, "NULL transport"));
    return transport->impl.Register(addr, length);
  });
}

mcfx_status mcfx_unregister(struct mcfx_transport *transport, void *addr) {
  return Guard("mcfx_unregister", [&]() -> Result {
    MCFX_TRY(InvalidIfNull(transport, "NULL transport"));
    return transport->impl.Unregister(addr);
  });
}

mcfx_status mcfx_register_batch(struct mcfx_transport *transport,
                                const struct mcfx_region *regions,
                                size_t count) {
  // upstream registerLocalMemoryBatch(): registerLocalMemory() per buffer.
  return Guard("mcfx_register_batch", [&]() -> Result {
    MCFX_TRY(InvalidIfNull(transport, "NULL transport"));
    if (count > 0)
      MCFX_TRY(InvalidIfNull(regions, "NULL array with a non-zero count"));
    for (size_t i = 0; i < count; ++i)
      MCFX_TRY(AtIndex("region", i,
                       transport->impl.Register(regions[i].addr,
                                                regions[i].length)));
    return {};
  });
}

mcfx_status mcfx_unregister_batch(struct mcfx_transport *transport,
                                  void *const *addrs, size_t count) {
  return Guard("mcfx_unregister_batch", [&]() -> Result {
    MCFX_TRY(InvalidIfNull(transport, "NULL transport"));
    if (count > 0)
      MCFX_TRY(InvalidIfNull(addrs, "NULL array with a non-zero count"));
    for (size_t i = 0; i < count; ++i)
      MCFX_TRY(AtIndex("region", i, transport->impl.Unregister(addrs[i])));
    return {};
  });
}

mcfx_status mcfx_submit(struct mcfx_transport *transport,
                        const struct mcfx_op *ops, size_t count,
                        size_t *accepted) {
  size_t n = 0;
  const mcfx_status status = Guard("mcfx_submit", [&]() -> Result {
    MCFX_TRY(InvalidIfNull(transport, "NULL transport"));
    if (count > 0)
      MCFX_TRY(InvalidIfNull(ops, "NULL array with a non-zero count"));
    return transport->impl.Submit(ops, count, &n);
  });
  if (accepted != nullptr) *accepted = n;
  return status;
}

mcfx_status mcfx_get_stats(const struct mcfx_transport *transport,
                           struct mcfx_stats *out) {
  return Guard("mcfx_get_stats", [&]() -> Result {
    MCFX_TRY(InvalidIfNull(transport, "NULL transport"));
    MCFX_TRY(InvalidIfNull(out, "NULL stats pointer"));
    uint32_t size;
    std::memcpy(&size, out, sizeof size); // struct_size is the first field
    if (size < 8)
      return Fail(MCFX_E_INVALID_ARGUMENT, "stats struct_size is not set");
    mcfx_stats full;
    transport->impl.Snapshot(&full);
    const size_t n = std::min<size_t>(size, sizeof full);
    full.struct_size = uint32_t(n);
    std::memcpy(out, &full, n); // the caller asked for `size` bytes
    return {};
  });
}

// The C++ design cannot report a failed transfer (it completes such an op
// as a success, as upstream did); it says only which FlagCX is loaded.
uint64_t mcfx_capabilities(void) {
  return dlsym(RTLD_DEFAULT, "flagcxSwSetKnob") != nullptr
             ? uint64_t(MCFX_CAP_SOFTWARE_PROVIDER)
             : 0;
}

// The C++ design has no pass a caller could run: its callers already post
// their own ops, and its completion thread completes them. So a caller's
// progress call does nothing here (the A/B's polling loops call it for both
// designs alike).
mcfx_status mcfx_progress(struct mcfx_transport *transport, uint64_t *completed) {
  if (completed != nullptr) *completed = 0;
  return Guard("mcfx_progress", [&]() -> Result {
    MCFX_TRY(InvalidIfNull(transport, "NULL transport"));
    return {};
  });
}

namespace {
const mcfx_api_v1 kApiV1 = {
    1, // this table's version, not MCFX_ABI_VERSION: stays 1
    sizeof(mcfx_api_v1),
    mcfx_impl_name,
    mcfx_strerror,
    mcfx_last_error,
    mcfx_config_init,
    mcfx_create,
    mcfx_destroy,
    mcfx_local_endpoint,
    mcfx_register,
    mcfx_unregister,
    mcfx_register_batch,
    mcfx_unregister_batch,
    mcfx_submit,
    mcfx_get_stats,
    mcfx_capabilities,
    mcfx_progress,
};
} // namespace

const struct mcfx_api_v1 *mcfx_get_api_v1(void) { return &kApiV1; }
