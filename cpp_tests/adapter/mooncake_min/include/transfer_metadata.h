// Minimal stand-in for Mooncake's include/transfer_metadata.h.
//
// Declares the part of mooncake::TransferMetadata that the FlagCX adapter
// and its tests use, with Mooncake's names and signatures. The
// implementation (src/transfer_metadata.cpp) keeps segment descriptors in an
// in-process store: every TransferMetadata constructed with the same
// connection string sees the same store, the way Mooncake engines share a
// metadata server. Each instance keeps its own id <-> name table, with
// LOCAL_SEGMENT_ID for its own segment, as Mooncake does.
#ifndef TRANSFER_METADATA
#define TRANSFER_METADATA

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "common.h"
#include "topology.h"

namespace mooncake {

namespace detail {
struct MetadataStore;  // the shared in-process store (transfer_metadata.cpp)
}

class TransferMetadata {
   public:
    struct BufferDesc {
        std::string name;
        uint64_t addr;
        uint64_t length;
#ifdef ENABLE_MULTI_PROTOCOL
        std::string protocol;
#endif
    };

    using SegmentID = uint64_t;

    struct SegmentDesc {
        std::string name;
        std::string protocol;
        std::vector<BufferDesc> buffers;
        // The address peers use to reach the segment's transport; the FlagCX
        // transport stores its endpoint ("host:port") here.
        std::string rdma_server_name;
    };

    explicit TransferMetadata(const std::string &conn_string);
    ~TransferMetadata();

    std::shared_ptr<SegmentDesc> getSegmentDescByName(
        const std::string &segment_name, bool force_update = false);

    // The cached descriptor of a known id (LOCAL_SEGMENT_ID: this engine's
    // own); for other ids it is re-read from the store. Null when unknown.
    std::shared_ptr<SegmentDesc> getSegmentDescByID(SegmentID segment_id,
                                                    bool force_update = false);

    // Publishes the descriptor cached under `segment_id` to the store.
    int updateLocalSegmentDesc(SegmentID segment_id = LOCAL_SEGMENT_ID);

    int updateSegmentDesc(const std::string &segment_name,
                          const SegmentDesc &desc);

    // Reads a descriptor from the store (null when absent).
    std::shared_ptr<SegmentDesc> getSegmentDesc(
        const std::string &segment_name);

    // The id of a segment, assigning one on first use; (SegmentID)-1 when
    // the store has no such segment.
    SegmentID getSegmentID(const std::string &segment_name);

    // Removes a descriptor from the store.
    int removeSegmentDesc(const std::string &segment_name);

    int addLocalMemoryBuffer(const BufferDesc &buffer_desc,
                             bool update_metadata);

    int removeLocalMemoryBuffer(void *addr, bool update_metadata);

    int addLocalSegment(SegmentID segment_id, const std::string &segment_name,
                        std::shared_ptr<SegmentDesc> &&desc);

    int removeLocalSegment(const std::string &segment_name);

   private:
    std::shared_ptr<detail::MetadataStore> store_;
    std::mutex lock_;
    std::unordered_map<SegmentID, std::shared_ptr<SegmentDesc>> by_id_;
    std::unordered_map<std::string, SegmentID> id_of_name_;
    std::atomic<SegmentID> next_id_{LOCAL_SEGMENT_ID + 1};
};

// Test support for the in-process store (not part of Mooncake's API).
namespace testing {
// While set, reading `segment_name` from the store of `conn_string` throws
// std::runtime_error (a stand-in for a metadata back end failing with an
// exception, e.g. a JSON parse error).
void setSegmentReadThrows(const std::string &conn_string,
                          const std::string &segment_name, bool throws);
}  // namespace testing

}  // namespace mooncake

#endif  // TRANSFER_METADATA
