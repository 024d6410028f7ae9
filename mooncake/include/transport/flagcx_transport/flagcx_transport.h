// mooncake::FlagCxTransport backed by the mooncake-flagcx plugin.
//
// Drop-in replacement for Mooncake's FlagCX transport: same class, same file
// names, built by Mooncake's USE_FLAGCX option, constructed by
// MultiTransport for protocol "flagcx". Instead of driving FlagCX itself it
// loads libmooncake_flagcx.so (C ABI v1, mooncake_flagcx.h) at install time
// and forwards to it:
//
//   install              load the plugin, create its transport, publish this
//                        segment ("flagcx", endpoint in rdma_server_name)
//   register/unregister  plugin registration + the segment's buffer list
//   submitTransferTask   one Slice per task, all tasks in one plugin submit;
//                        a full plugin (its queue, or max_in_flight ops in
//                        flight) slows the call down, never fails its tasks
//   getTransferStatus    reads the task counters only (never calls FlagCX)
//
// Completions arrive on the plugin's progress thread and are turned into
// Slice::markSuccess / markFailed; the plugin asks for a peer's endpoint
// through a resolver callback, answered from Mooncake's metadata on one of
// the plugin's connector threads (never on the submit path).
//
// Environment:
//   MC_FLAGCX_PLUGIN               plugin path or file name (default:
//                                  libmooncake_flagcx.so next to the library
//                                  holding this class, else the loader path)
//   MC_FLAGCX_QUEUE_CAPACITY       plugin knobs, see mcfx_config; unset or 0
//   MC_FLAGCX_MAX_IN_FLIGHT        means the plugin's default (for
//   MC_FLAGCX_SUBMIT_WAIT_US       SUBMIT_WAIT_US: 1000 here)
//   MC_FLAGCX_OP_TIMEOUT_MS
//   MC_FLAGCX_CONNECT_TIMEOUT_MS
//   MC_FLAGCX_CONNECT_THREADS
//   MC_FLAGCX_SHUTDOWN_TIMEOUT_MS
//   MC_FLAGCX_LOG_LEVEL            plugin log lines passed to this log
//                                  (mcfx_log_level: 1 error .. 5 trace)
#ifndef FLAGCX_TRANSPORT_H_
#define FLAGCX_TRANSPORT_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "transfer_metadata.h"
#include "transport/transport.h"

// From mooncake_flagcx.h (included by the .cpp only).
struct mcfx_api_v1;
struct mcfx_transport;
struct mcfx_op;

namespace mooncake {

class FlagCxTransport : public Transport {
   public:
    FlagCxTransport();
    // Destroys the plugin transport (every submitted slice is marked before
    // that returns) and removes this segment's descriptor.
    ~FlagCxTransport() override;

    FlagCxTransport(const FlagCxTransport &) = delete;
    FlagCxTransport &operator=(const FlagCxTransport &) = delete;

    Status submitTransfer(
        BatchID batch_id,
        const std::vector<TransferRequest> &entries) override;

    Status submitTransferTask(
        const std::vector<TransferTask *> &task_list) override;

    Status getTransferStatus(BatchID batch_id, size_t task_id,
                             TransferStatus &status) override;

   private:
    // The plugin's C callbacks (defined in the .cpp).
    struct PluginCallbacks;

    int install(std::string &local_server_name,
                std::shared_ptr<TransferMetadata> meta,
                std::shared_ptr<Topology> topo) override;

    int registerLocalMemory(void *addr, size_t length,
                            const std::string &location,
                            bool remote_accessible,
                            bool update_metadata = true) override;

    int unregisterLocalMemory(void *addr,
                              bool update_metadata = true) override;

    int registerLocalMemoryBatch(const std::vector<BufferEntry> &buffer_list,
                                 const std::string &location) override;

    int unregisterLocalMemoryBatch(
        const std::vector<void *> &addr_list) override;

    const char *getName() const override { return "flagcx"; }

    int createPluginTransport();
    int publishLocalSegment();
    void logCapabilities() const;
    void destroyPluginTransport();
    // Hands `count` ops (ops[i] belongs to slices[i]) to the plugin; while
    // the plugin is full it waits and resubmits (until the ops' deadline);
    // an op the plugin refuses for a reason of its own, or still has no
    // room for at the deadline, has its slice marked failed at once.
    void submitOps(const mcfx_op *ops, Slice *const *slices, size_t count);
    void failAtSubmit(Slice *slice, const char *why);
    // Unregisters, waiting while the plugin reports ops in flight on the
    // region (bounded by the op timeout).
    int32_t unregisterWhenIdle(void *addr);
    std::string pluginError();

    const mcfx_api_v1 *api_ = nullptr;  // the plugin's function table
    // Whether the table has `progress` (a status check that finds its task
    // unfinished then runs a pass with it).
    bool has_progress_ = false;
    mcfx_transport *engine_ = nullptr;  // the plugin transport
    std::string plugin_path_;
    std::string endpoint_;               // "host:port" peers connect to
    uint32_t op_timeout_ms_ = 0;         // effective per-op deadline
    bool published_ = false;             // our segment descriptor is out
    // Failures seen, for rate-limited logging off the hot path.
    std::atomic<uint64_t> failed_ops_{0};
    std::atomic<uint64_t> failed_resolves_{0};
};

}  // namespace mooncake

#endif  // FLAGCX_TRANSPORT_H_
