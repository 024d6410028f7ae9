// Transport base-class members for the minimal Mooncake declarations.
#include "transport/transport.h"

#include "error.h"

#include <atomic>

namespace mooncake {

namespace testing {
namespace {
std::atomic<int> g_mark_success_throws{0};
}
void throwOnNextMarkSuccess(int n) { g_mark_success_throws.store(n); }
bool takeMarkSuccessThrow() {
    int n = g_mark_success_throws.load();
    while (n > 0 && !g_mark_success_throws.compare_exchange_weak(n, n - 1)) {
    }
    return n > 0;
}
}  // namespace testing

Transport::ThreadLocalSliceCache &Transport::getSliceCache() {
    thread_local ThreadLocalSliceCache cache;
    return cache;
}

Transport::BatchID Transport::allocateBatchID(size_t batch_size) {
    auto *batch = new BatchDesc();
    batch->id = reinterpret_cast<BatchID>(batch);
    batch->batch_size = batch_size;
    batch->task_list.reserve(batch_size);
    batch->context = nullptr;
    batch->start_timestamp = 0;
    return batch->id;
}

Status Transport::freeBatchID(BatchID batch_id) {
    BatchDesc *batch = &toBatchDesc(batch_id);
    for (const TransferTask &task : batch->task_list) {
        if (!task.is_finished)
            return Status::BatchBusy("a task of the batch is not finished");
    }
    delete batch;
    return Status::OK();
}

int Transport::install(std::string &local_server_name,
                       std::shared_ptr<TransferMetadata> meta,
                       std::shared_ptr<Topology> topo) {
    (void)topo;
    local_server_name_ = local_server_name;
    metadata_ = std::move(meta);
    return 0;
}

}  // namespace mooncake
