// mooncake::FlagCxTransport over the mooncake-flagcx plugin (see the header
// for the overview and the environment variables).
//
// Threads that enter this file:
//   - the engine's threads: install, (un)register, submit, status, destructor;
//   - the plugin's progress thread: PluginCallbacks::onComplete;
//   - the plugin's connector threads: PluginCallbacks::resolve.
// The callbacks are noexcept C functions: nothing may unwind into the plugin.
#include "transport/flagcx_transport/flagcx_transport.h"

#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <thread>

#include "common.h"
#include "error.h"
#include "mooncake_flagcx.h"
#include "transfer_metadata.h"

// Mooncake logs through glog. The in-tree test build (minimal Mooncake
// declarations, no glog) defines MCFX_ADAPTER_STDERR_LOG to log to stderr.
#ifdef MCFX_ADAPTER_STDERR_LOG
#include <iostream>
#include <sstream>
namespace {
class StderrLogLine {
   public:
    explicit StderrLogLine(const char *severity) {
        line_ << severity << " flagcx_transport: ";
    }
    ~StderrLogLine() {
        line_ << '\n';
        std::cerr << line_.str() << std::flush;
    }
    std::ostream &stream() { return line_; }

   private:
    std::ostringstream line_;
};
}  // namespace
#define FCX_LOG(severity) StderrLogLine(#severity).stream()
#else
#include <glog/logging.h>
#define FCX_LOG(severity) LOG(severity)
#endif

namespace mooncake {

namespace {

constexpr char kPluginEnv[] = "MC_FLAGCX_PLUGIN";
constexpr char kPluginFileName[] = "libmooncake_flagcx.so";
constexpr char kPluginEntry[] = "mcfx_get_api_v1";
constexpr char kProtocol[] = "flagcx";

// True for the 1st, 2nd, 4th, 8th... event counted by `counter`: enough
// log lines to see a problem and how often it happens, without flooding
// the log (or slowing the plugin's threads) when a peer goes away.
bool worthLogging(std::atomic<uint64_t> &counter) {
    const uint64_t n = counter.fetch_add(1, std::memory_order_relaxed) + 1;
    return (n & (n - 1)) == 0;
}

// ---- Loading the plugin ----------------------------------------------------

struct Plugin {
    const mcfx_api_v1 *api = nullptr;
    std::string path;
    std::string origin;  // how the path was chosen
};

// The directory (with a trailing '/') of the shared object this code was
// linked into, e.g. Mooncake's libtransfer_engine.so; empty if unknown.
std::string directoryOfThisLibrary() {
    Dl_info info{};
    if (dladdr(reinterpret_cast<void *>(&directoryOfThisLibrary), &info) ==
            0 ||
        info.dli_fname == nullptr)
        return {};
    const char *slash = std::strrchr(info.dli_fname, '/');
    if (slash == nullptr) return {};
    return std::string(info.dli_fname, slash + 1);
}

// MC_FLAGCX_PLUGIN if set, else the plugin next to this library if there is
// one there, else the bare file name (found through the loader's path).
std::string pluginLocation(std::string &origin) {
    const char *env = std::getenv(kPluginEnv);
    if (env != nullptr && *env != '\0') {
        origin = std::string("from ") + kPluginEnv;
        return env;
    }
    const std::string dir = directoryOfThisLibrary();
    if (!dir.empty()) {
        std::string beside = dir + kPluginFileName;
        if (access(beside.c_str(), F_OK) == 0) {
            origin = "next to " + dir;
            return beside;
        }
    }
    origin = std::string("default; set ") + kPluginEnv + " to choose one";
    return kPluginFileName;
}

// Loads the plugin and checks its function table. A library that was
// loaded but rejected stays mapped: unloading code that may already have
// registered thread-local destructors is not safe, and this only happens on
// a failed install. An accepted plugin stays loaded for the process's life.
bool loadPlugin(Plugin &out, std::string &error) {
    std::string origin;
    const std::string path = pluginLocation(origin);
    const std::string where = path + " (" + origin + ")";

    dlerror();
    void *handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
        const char *why = dlerror();
        error = "cannot load the FlagCX plugin " + where + ": " +
                (why ? why : "unknown dlopen error");
        return false;
    }
    dlerror();
    void *entry = dlsym(handle, kPluginEntry);
    if (entry == nullptr) {
        const char *why = dlerror();
        error = where + " is not a mooncake-flagcx plugin: no " +
                kPluginEntry + " (" + (why ? why : "null symbol") + ")";
        return false;
    }
    using GetApi = const mcfx_api_v1 *(*)();
    const mcfx_api_v1 *api = reinterpret_cast<GetApi>(entry)();
    if (api == nullptr) {
        error = where + ": " + kPluginEntry + " returned no function table";
        return false;
    }
    // The v1 table says 1 in every plugin that exports it.
    if (api->abi_version != 1) {
        error = where + " implements ABI version " +
                std::to_string(api->abi_version) +
                "; this FlagCxTransport needs version 1";
        return false;
    }
    // The table only grows at the end: entries appended after the first v1
    // table (`capabilities`) are used only when struct_size covers them.
    constexpr size_t kFirstV1TableSize = offsetof(mcfx_api_v1, capabilities);
    if (api->struct_size < kFirstV1TableSize) {
        error = where + ": its function table has " +
                std::to_string(api->struct_size) + " bytes, expected at least " +
                std::to_string(kFirstV1TableSize);
        return false;
    }
    if (!api->impl_name || !api->strerror || !api->last_error ||
        !api->config_init || !api->create || !api->destroy || !api->local_endpoint ||
        !api->register_memory || !api->unregister_memory || !api->submit) {
        error = where + ": its function table has empty entries";
        return false;
    }
    out.api = api;
    out.path = path;
    out.origin = origin;
    return true;
}

// ---- Configuration from the environment ------------------------------------

struct EnvKnob {
    const char *name;
    uint32_t mcfx_config::*field;
};

constexpr EnvKnob kEnvKnobs[] = {
    {"MC_FLAGCX_QUEUE_CAPACITY", &mcfx_config::queue_capacity},
    {"MC_FLAGCX_MAX_IN_FLIGHT", &mcfx_config::max_in_flight},
    {"MC_FLAGCX_SUBMIT_WAIT_US", &mcfx_config::submit_wait_us},
    {"MC_FLAGCX_OP_TIMEOUT_MS", &mcfx_config::op_timeout_ms},
    {"MC_FLAGCX_CONNECT_TIMEOUT_MS", &mcfx_config::connect_timeout_ms},
    {"MC_FLAGCX_CONNECT_THREADS", &mcfx_config::connect_threads},
    {"MC_FLAGCX_SHUTDOWN_TIMEOUT_MS", &mcfx_config::shutdown_timeout_ms},
    {"MC_FLAGCX_SPIN_GRACE_US", &mcfx_config::spin_grace_us},
    {"MC_FLAGCX_LOG_LEVEL", &mcfx_config::log_level},
};

// A non-zero MC_FLAGCX_NO_PIN_ASLEEP sets MCFX_FLAG_NO_PIN_ASLEEP.
constexpr char kNoPinEnv[] = "MC_FLAGCX_NO_PIN_ASLEEP";

// submit_wait_us unless MC_FLAGCX_SUBMIT_WAIT_US says otherwise (the
// plugin's own default is 0, fail at once): a submit that finds the plugin's
// queue full, or max_in_flight ops in flight, waits asleep in the plugin up
// to this long per op for room, which the plugin's progress thread frees.
constexpr uint32_t kSubmitWaitUs = 1000;

// Between resubmits of ops the plugin refused as too many (after its own
// wait): a sleep from kMinPause, doubling up to kMaxPause, back to kMinPause
// whenever the plugin took some (see submitOps).
constexpr auto kMinPause = std::chrono::microseconds(20);
constexpr auto kMaxPause = std::chrono::milliseconds(1);

// A whole unsigned decimal number that fits in 32 bits.
bool parseU32(const char *text, uint32_t &out) {
    if (text == nullptr || *text < '0' || *text > '9') return false;
    errno = 0;
    char *end = nullptr;
    const unsigned long long value = std::strtoull(text, &end, 10);
    if (errno != 0 || *end != '\0' || value > UINT32_MAX) return false;
    out = static_cast<uint32_t>(value);
    return true;
}

// Fills the numeric knobs from the environment; a malformed value is an
// error (a typo must not silently fall back to a default).
bool applyEnvKnobs(mcfx_config &config, std::string &error) {
    for (const EnvKnob &knob : kEnvKnobs) {
        const char *text = std::getenv(knob.name);
        if (text == nullptr || *text == '\0') continue;
        uint32_t value = 0;
        if (!parseU32(text, value)) {
            error = std::string(knob.name) + "=\"" + text +
                    "\" is not a number from 0 to 4294967295";
            return false;
        }
        // 0 keeps the default config_init wrote.
        if (value != 0) config.*knob.field = value;
    }
    const char *no_pin = std::getenv(kNoPinEnv);
    if (no_pin != nullptr && *no_pin != '\0') {
        uint32_t value = 0;
        if (!parseU32(no_pin, value)) {
            error = std::string(kNoPinEnv) + "=\"" + no_pin + "\" is not 0 or 1";
            return false;
        }
        if (value != 0) config.flags |= MCFX_FLAG_NO_PIN_ASLEEP;
    }
    return true;
}

// ---- Mooncake side helpers -------------------------------------------------

int toMooncakeError(int32_t status) {
    switch (status) {
        case MCFX_E_INVALID_ARGUMENT:
        case MCFX_E_OVERFLOW:
            return ERR_INVALID_ARGUMENT;
        case MCFX_E_ALREADY_REGISTERED:
            return ERR_ADDRESS_OVERLAPPED;
        case MCFX_E_NOT_REGISTERED:
        case MCFX_E_NOT_FOUND:
            return ERR_ADDRESS_NOT_REGISTERED;
        default:
            return ERR_CONTEXT;
    }
}

// Whether a comma-separated protocol list (ENABLE_MULTI_PROTOCOL segments
// hold several) names `protocol`.
bool listsProtocol(const std::string &list, const char *protocol) {
    const size_t len = std::strlen(protocol);
    size_t start = 0;
    while (start <= list.size()) {
        size_t end = list.find(',', start);
        if (end == std::string::npos) end = list.size();
        if (end - start == len && list.compare(start, len, protocol) == 0)
            return true;
        start = end + 1;
    }
    return false;
}

// Scratch space of the submit path, reused per thread so that a submit
// does not allocate once the vectors have grown to the batch size.
struct SubmitScratch {
    std::vector<mcfx_op> ops;
    std::vector<Transport::Slice *> slices;
};

SubmitScratch &submitScratch() {
    thread_local SubmitScratch scratch;
    return scratch;
}

}  // namespace

// ---- Plugin callbacks ------------------------------------------------------

struct FlagCxTransport::PluginCallbacks {
    // Progress thread. user_data is the op's Slice; the Slice (and its task)
    // may be recycled as soon as it is marked, so it is not touched after.
    static void onComplete(void *ctx, uint64_t user_data,
                           mcfx_status status) noexcept {
        auto *self = static_cast<FlagCxTransport *>(ctx);
        auto *slice = reinterpret_cast<Slice *>(static_cast<uintptr_t>(user_data));
        if (slice == nullptr) return;
        try {
            // Pairs with the acquire fence in getTransferStatus: whoever
            // sees the task finished also sees the bytes FlagCX moved.
            std::atomic_thread_fence(std::memory_order_release);
            if (status == MCFX_OK) {
                slice->markSuccess();
                return;
            }
            if (worthLogging(self->failed_ops_)) {
                FCX_LOG(WARNING)
                    << "FlagCxTransport: "
                    << (slice->opcode == TransferRequest::READ ? "read"
                                                               : "write")
                    << " of " << slice->length << " bytes, segment "
                    << slice->target_id << " remote 0x" << std::hex
                    << slice->flagcx.dest_offset << std::dec
                    << " failed: " << self->api_->strerror(status) << " ("
                    << self->failed_ops_.load(std::memory_order_relaxed)
                    << " failed ops so far)";
            }
            slice->markFailed();
        } catch (...) {
            // Slice::mark* only update counters; with
            // USE_EVENT_DRIVEN_COMPLETION they also lock a mutex, which can
            // throw. Nothing can be recovered here, and unwinding into the
            // plugin would terminate the process.
        }
    }

    // Any plugin thread: one log line of the plugin, at most as verbose as
    // MC_FLAGCX_LOG_LEVEL (default: warnings).
    static void log(void *, mcfx_log_level level,
                    const char *message) noexcept {
        try {
            if (level == MCFX_LOG_ERROR)
                FCX_LOG(ERROR) << "mooncake-flagcx: " << message;
            else if (level == MCFX_LOG_WARN)
                FCX_LOG(WARNING) << "mooncake-flagcx: " << message;
            else
                FCX_LOG(INFO) << "mooncake-flagcx: " << message;
        } catch (...) {
            // Nothing may unwind into the plugin.
        }
    }

    // Connector thread (may block on the metadata store). Writes the
    // endpoint that peer's FlagCxTransport published into `buf`.
    static int32_t resolve(void *ctx, uint64_t peer_id, char *buf,
                           size_t cap) noexcept {
        auto *self = static_cast<FlagCxTransport *>(ctx);
        try {
            std::shared_ptr<SegmentDesc> desc;
            if (peer_id != LOCAL_SEGMENT_ID) {
                // Connections are made on first use and after failures:
                // re-read the descriptor, the peer may have restarted
                // elsewhere. Fall back to the cached copy if that fails.
                desc = self->metadata_->getSegmentDescByID(peer_id, true);
            }
            if (!desc) desc = self->metadata_->getSegmentDescByID(peer_id);
            std::string problem;
            if (!desc) {
                problem = "unknown segment";
            } else if (!listsProtocol(desc->protocol, kProtocol)) {
                problem = "segment " + desc->name + " uses protocol \"" +
                          desc->protocol + "\", not flagcx";
            } else if (desc->rdma_server_name.empty()) {
                problem = "segment " + desc->name +
                          " publishes no FlagCX endpoint";
            } else if (desc->rdma_server_name.size() >= cap) {
                problem = "endpoint of segment " + desc->name + " is too long";
            } else {
                const std::string &endpoint = desc->rdma_server_name;
                std::memcpy(buf, endpoint.c_str(), endpoint.size() + 1);
                return 0;
            }
            if (worthLogging(self->failed_resolves_))
                FCX_LOG(ERROR) << "FlagCxTransport: cannot resolve segment "
                               << peer_id << ": " << problem;
            return 1;
        } catch (const std::exception &e) {
            if (worthLogging(self->failed_resolves_))
                FCX_LOG(ERROR) << "FlagCxTransport: cannot resolve segment "
                               << peer_id << ": metadata lookup threw: "
                               << e.what();
        } catch (...) {
            if (worthLogging(self->failed_resolves_))
                FCX_LOG(ERROR) << "FlagCxTransport: cannot resolve segment "
                               << peer_id << ": metadata lookup threw";
        }
        return 1;
    }
};

// ---- Life cycle ------------------------------------------------------------

FlagCxTransport::FlagCxTransport() = default;

FlagCxTransport::~FlagCxTransport() {
    destroyPluginTransport();
    if (published_ && metadata_) {
        try {
            metadata_->removeSegmentDesc(local_server_name_);
        } catch (const std::exception &e) {
            FCX_LOG(WARNING) << "FlagCxTransport: cannot remove segment "
                             << local_server_name_ << ": " << e.what();
        } catch (...) {
        }
    }
}

void FlagCxTransport::destroyPluginTransport() {
    if (engine_ == nullptr) return;
    // Delivers one completion to every accepted op (canceled ones fail),
    // so no slice of ours is left unmarked, and no callback runs after it.
    const mcfx_status status = api_->destroy(engine_);
    engine_ = nullptr;
    if (status != MCFX_OK)
        FCX_LOG(WARNING) << "FlagCxTransport: destroying the plugin "
                            "transport: "
                         << api_->strerror(status);
}

std::string FlagCxTransport::pluginError() {
    char message[512];
    const size_t len = api_->last_error(message, sizeof(message));
    return len == 0 ? std::string("no details") : std::string(message);
}

int FlagCxTransport::install(std::string &local_server_name,
                             std::shared_ptr<TransferMetadata> meta,
                             std::shared_ptr<Topology> topo) {
    if (engine_ != nullptr) {
        FCX_LOG(ERROR) << "FlagCxTransport: already installed";
        return ERR_INVALID_ARGUMENT;
    }
    if (!meta) {
        FCX_LOG(ERROR) << "FlagCxTransport: install needs transfer metadata";
        return ERR_INVALID_ARGUMENT;
    }
    int rc = Transport::install(local_server_name, std::move(meta),
                                std::move(topo));
    if (rc != 0) return rc;

    rc = createPluginTransport();
    if (rc != 0) return rc;

    rc = publishLocalSegment();
    if (rc != 0) {
        FCX_LOG(ERROR) << "FlagCxTransport: cannot publish segment "
                       << local_server_name_
                       << "; check the metadata store (error " << rc << ")";
        destroyPluginTransport();
        return rc;
    }
    FCX_LOG(INFO) << "FlagCxTransport: segment " << local_server_name_
                  << " served at " << endpoint_;
    return 0;
}

int FlagCxTransport::createPluginTransport() {
    Plugin plugin;
    std::string error;
    if (!loadPlugin(plugin, error)) {
        FCX_LOG(ERROR) << "FlagCxTransport: " << error;
        return ERR_CONTEXT;
    }
    api_ = plugin.api;
    plugin_path_ = plugin.path;

    // config_init writes the plugin's defaults, and no more than the struct
    // this adapter was compiled with.
    mcfx_config config;
    api_->config_init(&config, sizeof(config));
    config.on_complete = &PluginCallbacks::onComplete;
    config.complete_ctx = this;
    config.resolve = &PluginCallbacks::resolve;
    config.resolve_ctx = this;
    config.log = &PluginCallbacks::log;  // the plugin's logs into ours
    config.log_ctx = this;
    config.submit_wait_us = kSubmitWaitUs;
    if (!applyEnvKnobs(config, error)) {
        FCX_LOG(ERROR) << "FlagCxTransport: " << error;
        return ERR_INVALID_ARGUMENT;
    }
    op_timeout_ms_ = config.op_timeout_ms;

    mcfx_transport *engine = nullptr;
    const mcfx_status status = api_->create(&config, &engine);
    if (status != MCFX_OK || engine == nullptr) {
        FCX_LOG(ERROR) << "FlagCxTransport: the plugin " << plugin_path_
                       << " cannot create a transport: "
                       << api_->strerror(status) << ": " << pluginError();
        return ERR_CONTEXT;
    }
    engine_ = engine;

    char endpoint[MCFX_MAX_ENDPOINT_LEN + 1];
    size_t len = 0;
    const mcfx_status ep =
        api_->local_endpoint(engine_, endpoint, sizeof(endpoint), &len);
    if (ep != MCFX_OK) {
        FCX_LOG(ERROR) << "FlagCxTransport: no local endpoint: "
                       << api_->strerror(ep) << ": " << pluginError();
        destroyPluginTransport();
        return ERR_ENDPOINT;
    }
    endpoint_.assign(endpoint, len);
    FCX_LOG(INFO) << "FlagCxTransport: plugin " << plugin_path_ << " ("
                  << plugin.origin << "), implementation "
                  << api_->impl_name();
    logCapabilities();
    if (api_->struct_size >=
        offsetof(mcfx_api_v1, progress) + sizeof(api_->progress))
        has_progress_ = api_->progress != nullptr;
    return 0;
}

// Says in Mooncake's log what the loaded FlagCX cannot do: a production
// deployment must know when it runs on the software provider (a test
// double), or when a failed transfer would complete as a success.
void FlagCxTransport::logCapabilities() const {
    const bool has = api_->struct_size >= offsetof(mcfx_api_v1, capabilities) +
                                              sizeof(api_->capabilities) &&
                     api_->capabilities != nullptr;
    if (!has) {
        FCX_LOG(INFO) << "FlagCxTransport: the plugin does not report its "
                         "capabilities (an older plugin)";
        return;
    }
    const uint64_t caps = api_->capabilities();
    if (caps & MCFX_CAP_SOFTWARE_PROVIDER)
        FCX_LOG(WARNING) << "FlagCxTransport: the plugin runs on the software "
                            "FlagCX provider, a test double (no RDMA): not for "
                            "production";
    if (!(caps & MCFX_CAP_REPORTS_TRANSFER_FAILURES))
        FCX_LOG(WARNING) << "FlagCxTransport: this FlagCX cannot report failed "
                            "transfers: a transfer that fails completes as a "
                            "success (verify data end to end where it matters)";
}

// Publishes this engine's segment: protocol "flagcx" and, in
// rdma_server_name, the endpoint peers' resolvers hand to their plugin.
int FlagCxTransport::publishLocalSegment() {
    auto desc = std::make_shared<SegmentDesc>();
#ifdef ENABLE_MULTI_PROTOCOL
    // Keep what the engine's other transports already put in the segment.
    auto current = metadata_->getSegmentDescByID(LOCAL_SEGMENT_ID);
    if (current && current->name == local_server_name_) *desc = *current;
    if (!listsProtocol(desc->protocol, kProtocol)) {
        if (!desc->protocol.empty()) desc->protocol += ",";
        desc->protocol += kProtocol;
    }
#else
    desc->protocol = kProtocol;
#endif
    desc->name = local_server_name_;
    desc->rdma_server_name = endpoint_;
    int rc = metadata_->addLocalSegment(LOCAL_SEGMENT_ID, local_server_name_,
                                        std::move(desc));
    if (rc != 0) return rc;
    // From here on the descriptor is ours to remove, even if publishing it
    // fails half way.
    published_ = true;
    return metadata_->updateLocalSegmentDesc();
}

// ---- Memory ----------------------------------------------------------------

// `location` and `remote_accessible` do not matter to FlagCX: every region
// is registered, since local buffers of ops must be registered too.
int FlagCxTransport::registerLocalMemory(void *addr, size_t length,
                                         const std::string &location,
                                         bool remote_accessible,
                                         bool update_metadata) {
    (void)location;
    (void)remote_accessible;
    if (engine_ == nullptr) {
        FCX_LOG(ERROR) << "FlagCxTransport: registerLocalMemory before "
                          "install";
        return ERR_INVALID_ARGUMENT;
    }
    const mcfx_status status = api_->register_memory(engine_, addr, length);
    if (status != MCFX_OK) {
        FCX_LOG(ERROR) << "FlagCxTransport: cannot register " << addr << " ("
                       << length << " bytes): " << api_->strerror(status)
                       << ": " << pluginError();
        return toMooncakeError(status);
    }
    BufferDesc buffer{};
    buffer.name = local_server_name_;
    buffer.addr = reinterpret_cast<uint64_t>(addr);
    buffer.length = length;
#ifdef ENABLE_MULTI_PROTOCOL
    buffer.protocol = kProtocol;
#endif
    const int rc = metadata_->addLocalMemoryBuffer(buffer, update_metadata);
    if (rc != 0) {
        // Keep the plugin and the published segment in agreement.
        FCX_LOG(ERROR) << "FlagCxTransport: cannot publish buffer " << addr
                       << " (error " << rc << "); registration undone";
        metadata_->removeLocalMemoryBuffer(addr, false);
        api_->unregister_memory(engine_, addr);
        return rc;
    }
    return 0;
}

int32_t FlagCxTransport::unregisterWhenIdle(void *addr) {
    // Ops always finish by their deadline, so waiting one op timeout (plus a
    // margin for the completion to be delivered) is enough.
    const auto deadline = std::chrono::steady_clock::now() +
                          std::chrono::milliseconds(op_timeout_ms_ + 1000);
    auto pause = std::chrono::microseconds(50);
    for (;;) {
        const mcfx_status status = api_->unregister_memory(engine_, addr);
        if (status != MCFX_E_BUSY ||
            std::chrono::steady_clock::now() >= deadline)
            return status;
        std::this_thread::sleep_for(pause);
        pause = std::min(pause * 2, std::chrono::microseconds(10000));
    }
}

int FlagCxTransport::unregisterLocalMemory(void *addr, bool update_metadata) {
    if (engine_ == nullptr) {
        FCX_LOG(ERROR) << "FlagCxTransport: unregisterLocalMemory before "
                          "install";
        return ERR_INVALID_ARGUMENT;
    }
    const int32_t status = unregisterWhenIdle(addr);
    if (status == MCFX_E_NOT_FOUND) {
        FCX_LOG(WARNING) << "FlagCxTransport: " << addr
                         << " was not registered with the plugin";
    } else if (status != MCFX_OK) {
        FCX_LOG(ERROR) << "FlagCxTransport: cannot unregister " << addr
                       << ": " << api_->strerror(status) << ": "
                       << pluginError();
        return toMooncakeError(status);
    }
    return metadata_->removeLocalMemoryBuffer(addr, update_metadata);
}

// All or nothing: on a failure the buffers registered by this call are
// unregistered again; the segment is published once at the end.
int FlagCxTransport::registerLocalMemoryBatch(
    const std::vector<BufferEntry> &buffer_list, const std::string &location) {
    for (size_t i = 0; i < buffer_list.size(); ++i) {
        const int rc = registerLocalMemory(buffer_list[i].addr,
                                           buffer_list[i].length, location,
                                           true, false);
        if (rc != 0) {
            for (size_t j = 0; j < i; ++j)
                unregisterLocalMemory(buffer_list[j].addr, false);
            return rc;
        }
    }
    return metadata_->updateLocalSegmentDesc();
}

// Unregisters every address it can; returns the first error, if any.
int FlagCxTransport::unregisterLocalMemoryBatch(
    const std::vector<void *> &addr_list) {
    int first_error = 0;
    for (void *addr : addr_list) {
        const int rc = unregisterLocalMemory(addr, false);
        if (rc != 0 && first_error == 0) first_error = rc;
    }
    if (engine_ == nullptr) return first_error;
    const int rc = metadata_->updateLocalSegmentDesc();
    return first_error != 0 ? first_error : rc;
}

// ---- Transfers -------------------------------------------------------------

Status FlagCxTransport::submitTransfer(
    BatchID batch_id, const std::vector<TransferRequest> &entries) {
    BatchDesc &batch = *reinterpret_cast<BatchDesc *>(batch_id);
    // task_list was reserved to batch_size: staying within it keeps the
    // tasks that slices in flight point to where they are.
    if (batch.task_list.size() + entries.size() > batch.batch_size)
        return Status::TooManyRequests(
            "FlagCxTransport: the batch has no room for " +
            std::to_string(entries.size()) + " more requests");
    const size_t first = batch.task_list.size();
    batch.task_list.resize(first + entries.size());
    std::vector<TransferTask *> tasks;
    tasks.reserve(entries.size());
    for (size_t i = 0; i < entries.size(); ++i) {
        TransferTask &task = batch.task_list[first + i];
        task.batch_id = batch_id;
        task.transport_ = this;
#ifdef USE_ASCEND_HETEROGENEOUS
        task.request = const_cast<TransferRequest *>(&entries[i]);
#else
        task.request = &entries[i];
#endif
        tasks.push_back(&task);
    }
    Status status = submitTransferTask(tasks);
    for (TransferTask *task : tasks) task->request = nullptr;  // dies with us
    return status;
}

// Hot path: per task one Slice from the thread's cache and one entry in the
// task's slice list; one plugin submit for the whole list (lock-free queue
// pushes, no syscall unless the progress thread sleeps).
Status FlagCxTransport::submitTransferTask(
    const std::vector<TransferTask *> &task_list) {
    SubmitScratch &scratch = submitScratch();
    scratch.ops.clear();
    scratch.slices.clear();
    const int64_t now = getCurrentTimeInNano();

    for (TransferTask *task : task_list) {
        if (task == nullptr) continue;
        const TransferRequest *request = task->request;
        Slice *slice = getSliceCache().allocate();
        slice->source_addr = request ? request->source : nullptr;
        slice->length = request ? request->length : 0;
        slice->opcode = request ? request->opcode : TransferRequest::READ;
        slice->target_id = request ? request->target_id : 0;
        slice->flagcx.dest_offset = request ? request->target_offset : 0;
        slice->task = task;
        slice->status = Slice::POSTED;
        slice->ts = now;
        task->total_bytes = slice->length;
        task->slice_list.push_back(slice);
        // One slice per task, counted before anything can complete it (the
        // event-driven completion build requires a final count by then).
        __atomic_add_fetch(&task->slice_count, 1, __ATOMIC_RELAXED);

        if (engine_ == nullptr) {
            failAtSubmit(slice, "the transport is not installed");
            continue;
        }
        if (request == nullptr) {
            failAtSubmit(slice, "the task has no request");
            continue;
        }
        if (request->opcode != TransferRequest::READ &&
            request->opcode != TransferRequest::WRITE) {
            failAtSubmit(slice, "unknown opcode");
            continue;
        }
        if (request->length == 0) {  // nothing to move
            slice->markSuccess();
            continue;
        }
        mcfx_op op;
        op.opcode = request->opcode == TransferRequest::READ ? MCFX_OP_READ
                                                             : MCFX_OP_WRITE;
        op.reserved = 0;
        op.local_addr = request->source;
        op.length = request->length;
        op.peer_id = request->target_id;
        op.remote_addr = request->target_offset;
        op.user_data = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(slice));
        scratch.ops.push_back(op);
        scratch.slices.push_back(slice);
    }

    if (!scratch.ops.empty())
        submitOps(scratch.ops.data(), scratch.slices.data(),
                  scratch.ops.size());
    if (engine_ == nullptr)
        return Status::InvalidArgument("FlagCxTransport is not installed");
    return Status::OK();
}

void FlagCxTransport::submitOps(const mcfx_op *ops, Slice *const *slices,
                                size_t count) {
    // The plugin takes ops in order and stops at the first it cannot
    // accept: the ops before it were queued and `accepted` says how many.
    // After a per-op error ops[accepted] is the bad op: fail it alone and
    // resubmit the rest in one call. MCFX_E_QUEUE_FULL (its queue is full,
    // or max_in_flight ops are in flight) is backpressure, not a failure:
    // the rest is resubmitted after a short sleep, until the ops' deadline
    // (op_timeout_ms after the first refusal; the plugin would fail them by
    // then anyway), so a burst larger than the plugin's bounds is slowed
    // down, never failed.
    using Clock = std::chrono::steady_clock;
    Clock::time_point deadline{};  // set at the first refusal
    std::chrono::microseconds pause = kMinPause;
    while (count > 0) {
        size_t accepted = 0;
        const mcfx_status status = api_->submit(engine_, ops, count, &accepted);
        if (status == MCFX_OK) return;
        if (accepted > count) accepted = count;
        if (status == MCFX_E_QUEUE_FULL) {
            ops += accepted;
            slices += accepted;
            count -= accepted;
            const auto now = Clock::now();
            if (deadline == Clock::time_point{})
                deadline = now + std::chrono::milliseconds(op_timeout_ms_);
            if (accepted > 0) pause = kMinPause;
            // Room is freed by completions: run a pass here if the plugin
            // lets callers (a no-op while its thread runs one), and retry
            // at once when it completed something.
            uint64_t completed = 0;
            if (has_progress_) api_->progress(engine_, &completed);
            if (completed > 0) continue;
            if (now < deadline) {
                std::this_thread::sleep_for(std::min<Clock::duration>(pause, deadline - now));
                pause = std::min<std::chrono::microseconds>(pause * 2, kMaxPause);
                continue;
            }
            if (worthLogging(failed_ops_))
                FCX_LOG(WARNING) << "FlagCxTransport: the plugin had no room for "
                                 << count << " ops within their deadline ("
                                 << op_timeout_ms_ << " ms); they fail: "
                                 << pluginError();
            for (size_t i = 0; i < count; ++i) failAtSubmit(slices[i], nullptr);
            return;
        }
        const std::string why = pluginError();
        const bool one_bad_op = status == MCFX_E_INVALID_ARGUMENT ||
                                status == MCFX_E_NOT_REGISTERED ||
                                status == MCFX_E_OVERFLOW;
        if (one_bad_op && accepted < count) {
            const std::string reason =
                std::string(api_->strerror(status)) + ": " + why;
            failAtSubmit(slices[accepted], reason.c_str());
            ops += accepted + 1;
            slices += accepted + 1;
            count -= accepted + 1;
            continue;
        }
        // Shutting down, or an error of the call itself.
        if (worthLogging(failed_ops_))
            FCX_LOG(WARNING) << "FlagCxTransport: the plugin accepted "
                             << accepted << " of " << count
                             << " ops; the rest fail: "
                             << api_->strerror(status) << ": " << why;
        for (size_t i = accepted; i < count; ++i)
            failAtSubmit(slices[i], nullptr);
        return;
    }
}

// Marks a slice that never reached the plugin as failed (logging `why`
// unless it is null). Its task has this one slice, so the task is finished:
// say so, so the batch can be freed even if nobody asks for its status.
void FlagCxTransport::failAtSubmit(Slice *slice, const char *why) {
    if (why != nullptr && worthLogging(failed_ops_)) {
        FCX_LOG(WARNING) << "FlagCxTransport: op of " << slice->length
                         << " bytes to segment " << slice->target_id
                         << " fails: " << why;
    }
    TransferTask *task = slice->task;
    slice->markFailed();
    task->is_finished = true;
}

// Reads the task's counters. For an unfinished task it first lets the
// plugin run a progress pass on this thread, which may instead sleep (at
// most about 200 us, until one of this thread's ops completes) once the
// thread has polled for about 20 us and the CPUs are crowded: no lock is
// held here.
Status FlagCxTransport::getTransferStatus(BatchID batch_id, size_t task_id,
                                          TransferStatus &status) {
    BatchDesc &batch = *reinterpret_cast<BatchDesc *>(batch_id);
    if (task_id >= batch.task_list.size())
        return Status::InvalidArgument(
            "FlagCxTransport: task id " + std::to_string(task_id) +
            " is out of range");
    TransferTask &task = batch.task_list[task_id];
    const uint64_t slices = __atomic_load_n(&task.slice_count, __ATOMIC_RELAXED);
    uint64_t failed =
        __atomic_load_n(&task.failed_slice_count, __ATOMIC_RELAXED);
    uint64_t succeeded =
        __atomic_load_n(&task.success_slice_count, __ATOMIC_RELAXED);
    if (slices != 0 && succeeded + failed < slices && has_progress_ &&
        engine_ != nullptr) {
        // The caller polls for this task anyway: let it run the plugin's
        // progress pass (a no-op when another thread is running one), so
        // the ops do not wait for the plugin's thread to get a CPU while
        // the callers spin. Completions land on this thread.
        api_->progress(engine_, nullptr);
        failed = __atomic_load_n(&task.failed_slice_count, __ATOMIC_RELAXED);
        succeeded =
            __atomic_load_n(&task.success_slice_count, __ATOMIC_RELAXED);
    }

    if (slices == 0) {
        // Assigned to this transport but never submitted to it (e.g. the
        // engine's submit stopped early): it will never run.
        status.s = TransferStatusEnum::FAILED;
        task.is_finished = true;
    } else if (succeeded + failed >= slices) {
        // Pairs with the release fence in onComplete (see there).
        std::atomic_thread_fence(std::memory_order_acquire);
        status.s = failed != 0 ? TransferStatusEnum::FAILED
                               : TransferStatusEnum::COMPLETED;
        task.is_finished = true;
    } else {
        // A task has one slice, so a failure always finishes it; a task
        // with a slice still in the plugin must not be reported finished
        // (freeing the batch would free that slice).
        status.s = TransferStatusEnum::WAITING;
    }
    status.transferred_bytes =
        __atomic_load_n(&task.transferred_bytes, __ATOMIC_RELAXED);
    return Status::OK();
}

}  // namespace mooncake
