// Minimal stand-in for Mooncake's include/transport/transport.h (branch
// feat/flagcx-support): the Transport base class and the task / slice /
// batch structures a transport works with. Names, nesting, member types and
// virtual signatures follow Mooncake's, so a transport written against this
// header compiles unchanged against the real one. Members that the FlagCX
// adapter does not touch are left out, and the layouts need not match
// Mooncake's (the adapter never passes these structures across its C ABI).
#ifndef TRANSPORT_H_
#define TRANSPORT_H_

#include <stddef.h>
#include <stdint.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/base/status.h"
#include "transfer_metadata.h"

namespace mooncake {

namespace testing {
// Test hook of the minimal declarations only (real Mooncake has no such
// thing): the next `n` Slice::markSuccess calls throw std::runtime_error
// before touching any counter.
void throwOnNextMarkSuccess(int n);
bool takeMarkSuccessThrow();
}  // namespace testing

class TransferMetadata;

// Return convention of the int methods: 0 on success, a negative ERR_* code
// on failure.
class Transport {
    friend class TransferEngine;
    friend class TransferEngineImpl;
    friend class MultiTransport;

   public:
    using SegmentID = uint64_t;
    using SegmentHandle = SegmentID;
    // A BatchDesc pointer carried as an integer.
    using BatchID = uint64_t;

    using BufferDesc = TransferMetadata::BufferDesc;
    using SegmentDesc = TransferMetadata::SegmentDesc;

    struct TransferRequest {
        enum OpCode { READ, WRITE };

        OpCode opcode;
        void *source;          // local address
        SegmentID target_id;   // the peer segment
        uint64_t target_offset;  // absolute address in the peer's memory
        size_t length;
        int advise_retry_cnt = 0;
        int transport_hint = 0;
    };

    enum TransferStatusEnum {
        WAITING,
        PENDING,
        INVALID,
        CANCELED,
        COMPLETED,
        TIMEOUT,
        FAILED
    };

    struct TransferStatus {
        TransferStatusEnum s;
        size_t transferred_bytes;
    };

    struct BatchDesc;
    struct TransferTask;

    static inline BatchDesc &toBatchDesc(BatchID id) {
        return *reinterpret_cast<BatchDesc *>(id);
    }

    // One unit of work of a task. Transports take slices from
    // getSliceCache() and report each exactly once with markSuccess() or
    // markFailed(), from any thread; the engine recycles them when the
    // batch is freed.
    struct Slice {
        enum SliceStatus { PENDING, POSTED, SUCCESS, TIMEOUT, FAILED };

        void *source_addr;
        size_t length;
        TransferRequest::OpCode opcode;
        SegmentID target_id;
        SliceStatus status;
        TransferTask *task;
        bool from_cache;

        union {
            struct {
                uint64_t dest_offset;
            } flagcx;
        };

        // Adds the slice's bytes and a success to its task's counters.
        void markSuccess() {
            if (testing::takeMarkSuccessThrow())
                throw std::runtime_error("test hook: markSuccess throws");
            status = Slice::SUCCESS;
            __atomic_fetch_add(&task->transferred_bytes, length,
                               __ATOMIC_RELAXED);
            __atomic_fetch_add(&task->success_slice_count, 1,
                               __ATOMIC_RELAXED);
        }

        // Adds a failure to its task's counters.
        void markFailed() {
            status = Slice::FAILED;
            __atomic_fetch_add(&task->failed_slice_count, 1, __ATOMIC_RELAXED);
        }

        volatile int64_t ts;  // post time (ns, getCurrentTimeInNano); 0: not
                              // posted
    };

    // A per-thread pool of Slice objects (allocate on the submitting thread,
    // give back wherever the task is destroyed).
    struct ThreadLocalSliceCache {
        ThreadLocalSliceCache() { free_.reserve(kLazyDeleteSliceCapacity); }
        ~ThreadLocalSliceCache() {
            for (Slice *slice : free_) delete slice;
        }

        Slice *allocate() {
            if (free_.empty()) {
                Slice *slice = new Slice();
                slice->from_cache = false;
                return slice;
            }
            Slice *slice = free_.back();
            free_.pop_back();
            slice->from_cache = true;
            return slice;
        }

        void deallocate(Slice *slice) {
            if (free_.size() >= kLazyDeleteSliceCapacity) {
                delete slice;
                return;
            }
            free_.push_back(slice);
        }

        const static size_t kLazyDeleteSliceCapacity = 4096;
        std::vector<Slice *> free_;
    };

    struct TransferTask {
        volatile uint64_t slice_count = 0;
        volatile uint64_t success_slice_count = 0;
        volatile uint64_t failed_slice_count = 0;
        volatile uint64_t transferred_bytes = 0;
        volatile bool is_finished = false;
        uint64_t total_bytes = 0;
        BatchID batch_id = 0;
        Transport *transport_ = nullptr;
        // The request this task runs; valid only while the submit call that
        // handed the task over runs.
        const TransferRequest *request = nullptr;
        std::vector<Slice *> slice_list;  // slices to recycle

        ~TransferTask() {
            for (Slice *slice : slice_list)
                Transport::getSliceCache().deallocate(slice);
        }
    };

    struct BatchDesc {
        BatchID id;
        size_t batch_size;
        std::vector<TransferTask> task_list;
        void *context;
        int64_t start_timestamp;
    };

   public:
    virtual ~Transport() {}

    // A batch for up to `batch_size` tasks; free it with freeBatchID once
    // every task is finished.
    virtual BatchID allocateBatchID(size_t batch_size);

    // BatchBusy while a task of the batch is not finished.
    virtual Status freeBatchID(BatchID batch_id);

    virtual Status submitTransfer(
        BatchID batch_id, const std::vector<TransferRequest> &entries) = 0;

    virtual Status submitTransferTask(
        const std::vector<TransferTask *> &task_list) {
        (void)task_list;
        return Status::NotImplemented(
            "Transport::submitTransferTask is not implemented");
    }

    virtual Status getTransferStatus(BatchID batch_id, size_t task_id,
                                     TransferStatus &status) = 0;

    std::shared_ptr<TransferMetadata> &meta() { return metadata_; }

    struct BufferEntry {
        void *addr;
        size_t length;
    };

   protected:
    // Stores the server name and the metadata handle.
    virtual int install(std::string &local_server_name,
                        std::shared_ptr<TransferMetadata> meta,
                        std::shared_ptr<Topology> topo);

    std::string local_server_name_;
    std::shared_ptr<TransferMetadata> metadata_;

    static ThreadLocalSliceCache &getSliceCache();

   private:
    virtual int registerLocalMemory(void *addr, size_t length,
                                    const std::string &location,
                                    bool remote_accessible,
                                    bool update_metadata = true) = 0;

    virtual int unregisterLocalMemory(void *addr,
                                      bool update_metadata = true) = 0;

    virtual int registerLocalMemoryBatch(
        const std::vector<BufferEntry> &buffer_list,
        const std::string &location) = 0;

    virtual int unregisterLocalMemoryBatch(
        const std::vector<void *> &addr_list) = 0;

    virtual const char *getName() const = 0;
};

}  // namespace mooncake

#endif  // TRANSPORT_H_
