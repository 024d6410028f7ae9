// TransferMetadata for the minimal Mooncake declarations: an in-process
// metadata store shared by every instance with the same connection string
// (see include/transfer_metadata.h).
#include "transfer_metadata.h"

#include <map>
#include <set>
#include <stdexcept>

#include "error.h"

namespace mooncake {

// The "metadata server": published descriptors by segment name.
struct detail::MetadataStore {
    std::mutex lock;
    std::map<std::string, TransferMetadata::SegmentDesc> segments;
    std::set<std::string> throwing;  // see testing::setSegmentReadThrows
};

namespace {

std::shared_ptr<detail::MetadataStore> storeFor(
    const std::string &conn_string) {
    static std::mutex lock;
    static std::map<std::string, std::shared_ptr<detail::MetadataStore>>
        stores;
    std::lock_guard<std::mutex> guard(lock);
    auto &store = stores[conn_string];
    if (!store) store = std::make_shared<detail::MetadataStore>();
    return store;
}

}  // namespace

TransferMetadata::TransferMetadata(const std::string &conn_string)
    : store_(storeFor(conn_string)) {}

TransferMetadata::~TransferMetadata() = default;

std::shared_ptr<TransferMetadata::SegmentDesc>
TransferMetadata::getSegmentDesc(const std::string &segment_name) {
    std::lock_guard<std::mutex> guard(store_->lock);
    if (store_->throwing.count(segment_name))
        throw std::runtime_error("metadata store: cannot decode segment " +
                                 segment_name);
    auto it = store_->segments.find(segment_name);
    if (it == store_->segments.end()) return nullptr;
    return std::make_shared<SegmentDesc>(it->second);
}

int TransferMetadata::updateSegmentDesc(const std::string &segment_name,
                                        const SegmentDesc &desc) {
    std::lock_guard<std::mutex> guard(store_->lock);
    store_->segments[segment_name] = desc;
    return 0;
}

int TransferMetadata::removeSegmentDesc(const std::string &segment_name) {
    std::lock_guard<std::mutex> guard(store_->lock);
    store_->segments.erase(segment_name);
    return 0;
}

std::shared_ptr<TransferMetadata::SegmentDesc>
TransferMetadata::getSegmentDescByName(const std::string &segment_name,
                                       bool force_update) {
    (void)force_update;
    {
        std::lock_guard<std::mutex> guard(lock_);
        auto it = id_of_name_.find(segment_name);
        if (it != id_of_name_.end() && it->second == LOCAL_SEGMENT_ID)
            return by_id_[LOCAL_SEGMENT_ID];
    }
    SegmentID id = getSegmentID(segment_name);
    if (id == static_cast<SegmentID>(-1)) return nullptr;
    return getSegmentDescByID(id);
}

std::shared_ptr<TransferMetadata::SegmentDesc>
TransferMetadata::getSegmentDescByID(SegmentID segment_id, bool force_update) {
    (void)force_update;  // remote descriptors are always re-read
    std::string name;
    {
        std::lock_guard<std::mutex> guard(lock_);
        auto it = by_id_.find(segment_id);
        if (it == by_id_.end()) return nullptr;
        if (segment_id == LOCAL_SEGMENT_ID) return it->second;
        name = it->second->name;
    }
    auto fresh = getSegmentDesc(name);  // outside lock_: may throw
    if (!fresh) return nullptr;
    std::lock_guard<std::mutex> guard(lock_);
    by_id_[segment_id] = fresh;
    return fresh;
}

TransferMetadata::SegmentID TransferMetadata::getSegmentID(
    const std::string &segment_name) {
    {
        std::lock_guard<std::mutex> guard(lock_);
        auto it = id_of_name_.find(segment_name);
        if (it != id_of_name_.end()) return it->second;
    }
    auto desc = getSegmentDesc(segment_name);
    if (!desc) return static_cast<SegmentID>(-1);
    std::lock_guard<std::mutex> guard(lock_);
    auto it = id_of_name_.find(segment_name);
    if (it != id_of_name_.end()) return it->second;
    SegmentID id = next_id_.fetch_add(1);
    by_id_[id] = desc;
    id_of_name_[segment_name] = id;
    return id;
}

int TransferMetadata::updateLocalSegmentDesc(SegmentID segment_id) {
    std::shared_ptr<SegmentDesc> desc;
    {
        std::lock_guard<std::mutex> guard(lock_);
        auto it = by_id_.find(segment_id);
        if (it == by_id_.end() || !it->second) return ERR_METADATA;
        desc = it->second;
    }
    return updateSegmentDesc(desc->name, *desc);
}

int TransferMetadata::addLocalSegment(SegmentID segment_id,
                                      const std::string &segment_name,
                                      std::shared_ptr<SegmentDesc> &&desc) {
    std::lock_guard<std::mutex> guard(lock_);
    by_id_[segment_id] = std::move(desc);
    id_of_name_[segment_name] = segment_id;
    return 0;
}

int TransferMetadata::removeLocalSegment(const std::string &segment_name) {
    std::lock_guard<std::mutex> guard(lock_);
    auto it = id_of_name_.find(segment_name);
    if (it == id_of_name_.end()) return 0;
    by_id_.erase(it->second);
    id_of_name_.erase(it);
    return 0;
}

// Buffers change copy-on-write: readers holding the old descriptor keep a
// consistent snapshot.
int TransferMetadata::addLocalMemoryBuffer(const BufferDesc &buffer_desc,
                                           bool update_metadata) {
    {
        std::lock_guard<std::mutex> guard(lock_);
        auto it = by_id_.find(LOCAL_SEGMENT_ID);
        if (it == by_id_.end() || !it->second) return ERR_METADATA;
        auto copy = std::make_shared<SegmentDesc>(*it->second);
        copy->buffers.push_back(buffer_desc);
        it->second = std::move(copy);
    }
    return update_metadata ? updateLocalSegmentDesc() : 0;
}

int TransferMetadata::removeLocalMemoryBuffer(void *addr,
                                              bool update_metadata) {
    {
        std::lock_guard<std::mutex> guard(lock_);
        auto local = by_id_.find(LOCAL_SEGMENT_ID);
        if (local == by_id_.end() || !local->second)
            return ERR_ADDRESS_NOT_REGISTERED;
        auto copy = std::make_shared<SegmentDesc>(*local->second);
        auto &buffers = copy->buffers;
        auto it = buffers.begin();
        while (it != buffers.end() &&
               it->addr != reinterpret_cast<uint64_t>(addr))
            ++it;
        if (it == buffers.end()) return ERR_ADDRESS_NOT_REGISTERED;
        buffers.erase(it);
        local->second = std::move(copy);
    }
    return update_metadata ? updateLocalSegmentDesc() : 0;
}

namespace testing {

void setSegmentReadThrows(const std::string &conn_string,
                          const std::string &segment_name, bool throws) {
    auto store = storeFor(conn_string);
    std::lock_guard<std::mutex> guard(store->lock);
    if (throws)
        store->throwing.insert(segment_name);
    else
        store->throwing.erase(segment_name);
}

}  // namespace testing

}  // namespace mooncake
