// Tests of mooncake::FlagCxTransport (the Mooncake adapter) built on the
// minimal Mooncake declarations (mooncake_min/).
//
// End to end against the real plugin (MCFX_TEST_PLUGIN_PATH, the Rust
// cdylib over the software FlagCX provider): two transports in this process,
// each installed as its own segment, with TransferMetadata objects sharing
// one in-process store, as two engines share a metadata server. Plugin
// loading and the submit edge cases use the fake plugins (fake_plugin.cpp).
//
// FlagCX registration is process-wide and destroying one FlagCX engine
// deregisters every region in the process, so each test destroys its
// transports together at its end. Every wait is bounded (kWaitLimit).
#include <dlfcn.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "error.h"
#include "mooncake_flagcx.h"
#include "transfer_metadata.h"
#include "transport/flagcx_transport/flagcx_transport.h"
#include "transport/transport.h"

namespace mooncake {

// The engine's side of Transport (its install and memory methods are
// private, for the engine: TransferEngineImpl is a friend of Transport).
class TransferEngineImpl {
   public:
    static int install(Transport &t, const std::string &name,
                       std::shared_ptr<TransferMetadata> meta) {
        std::string server_name = name;
        return t.install(server_name, std::move(meta), nullptr);
    }
    static int registerMemory(Transport &t, void *addr, size_t length) {
        return t.registerLocalMemory(addr, length, "cpu:0", true);
    }
    static int unregisterMemory(Transport &t, void *addr) {
        return t.unregisterLocalMemory(addr);
    }
    static int registerBatch(Transport &t,
                             const std::vector<Transport::BufferEntry> &list) {
        return t.registerLocalMemoryBatch(list, "cpu:0");
    }
    static int unregisterBatch(Transport &t, const std::vector<void *> &list) {
        return t.unregisterLocalMemoryBatch(list);
    }
    static std::string name(const Transport &t) { return t.getName(); }
};

namespace {

using Engine = TransferEngineImpl;
using Request = Transport::TransferRequest;
using StatusEnum = Transport::TransferStatusEnum;
using BatchID = Transport::BatchID;

constexpr auto kWaitLimit = std::chrono::seconds(60);

// Sets (or, with nullptr, unsets) an environment variable for one scope.
class ScopedEnv {
   public:
    ScopedEnv(const char *name, const char *value) : name_(name) {
        if (const char *old = std::getenv(name)) old_ = old, had_ = true;
        if (value)
            setenv(name, value, 1);
        else
            unsetenv(name);
    }
    ~ScopedEnv() {
        if (had_)
            setenv(name_.c_str(), old_.c_str(), 1);
        else
            unsetenv(name_.c_str());
    }
    ScopedEnv(const ScopedEnv &) = delete;
    ScopedEnv &operator=(const ScopedEnv &) = delete;

   private:
    std::string name_, old_;
    bool had_ = false;
};

// Page-aligned memory filled with a pattern.
class Buffer {
   public:
    explicit Buffer(size_t size, uint8_t seed = 0) : size_(size) {
        data_ = static_cast<uint8_t *>(std::aligned_alloc(4096, size));
        for (size_t i = 0; i < size; ++i)
            data_[i] = static_cast<uint8_t>(seed + i * 7 + (i >> 12));
    }
    ~Buffer() { std::free(data_); }
    Buffer(const Buffer &) = delete;
    Buffer &operator=(const Buffer &) = delete;

    uint8_t *data() const { return data_; }
    size_t size() const { return size_; }
    uint64_t addr(size_t offset = 0) const {
        return reinterpret_cast<uint64_t>(data_ + offset);
    }
    bool sameAs(const Buffer &other, size_t offset, size_t len) const {
        return std::memcmp(data_ + offset, other.data_ + offset, len) == 0;
    }

   private:
    uint8_t *data_;
    size_t size_;
};

Request makeRequest(Request::OpCode opcode, void *source, uint64_t target_id,
                    uint64_t target_addr, size_t length) {
    Request r{};
    r.opcode = opcode;
    r.source = source;
    r.target_id = target_id;
    r.target_offset = target_addr;
    r.length = length;
    return r;
}

// What MultiTransport::submitTransfer does: a batch with one task per
// request, handed to the transport with submitTransferTask.
BatchID submitTasks(Transport &t, const std::vector<Request> &requests,
                    Status *status = nullptr) {
    const BatchID id = t.allocateBatchID(requests.size());
    auto &batch = Transport::toBatchDesc(id);
    batch.task_list.resize(requests.size());
    std::vector<Transport::TransferTask *> tasks;
    for (size_t i = 0; i < requests.size(); ++i) {
        auto &task = batch.task_list[i];
        task.batch_id = id;
        task.transport_ = &t;
        task.request = &requests[i];
        tasks.push_back(&task);
    }
    Status s = t.submitTransferTask(tasks);
    if (status) *status = s;
    return id;
}

Transport::TransferStatus statusOf(Transport &t, BatchID id, size_t task) {
    Transport::TransferStatus s{StatusEnum::INVALID, 0};
    EXPECT_TRUE(t.getTransferStatus(id, task, s).ok());
    return s;
}

// Polls every task until it leaves WAITING (or kWaitLimit passes); returns
// the final states.
std::vector<Transport::TransferStatus> waitAll(Transport &t, BatchID id) {
    const size_t n = Transport::toBatchDesc(id).task_list.size();
    std::vector<Transport::TransferStatus> out(n, {StatusEnum::WAITING, 0});
    const auto deadline = std::chrono::steady_clock::now() + kWaitLimit;
    for (size_t i = 0; i < n; ++i) {
        for (;;) {
            out[i] = statusOf(t, id, i);
            if (out[i].s != StatusEnum::WAITING) break;
            if (std::chrono::steady_clock::now() > deadline) {
                ADD_FAILURE() << "task " << i << " still waiting after "
                              << kWaitLimit.count() << " s";
                return out;
            }
            std::this_thread::sleep_for(std::chrono::microseconds(100));
        }
    }
    return out;
}

// ---- End to end, real plugin -------------------------------------------------

// FLAGCX_SW_KNOB_LATENCY_NS of flagcx_sw.h (the software provider's header).
constexpr int kSwKnobLatencyNs = 0;

// Sets a knob of the software provider that the loaded plugin uses
// (process-wide, like the FLAGCX_SW_* variables); false when the plugin is
// not loaded or its FlagCX is not the software provider.
bool setProviderKnob(int knob, uint64_t value) {
    void *lib = dlopen(MCFX_TEST_PLUGIN_PATH, RTLD_NOW | RTLD_NOLOAD);
    if (lib == nullptr) return false;
    // Found in the plugin's dependencies (libflagcx.so).
    auto set = reinterpret_cast<int (*)(int, uint64_t)>(
        dlsym(lib, "flagcxSwSetKnob"));
    const bool ok = set != nullptr && set(knob, value) == 0;
    dlclose(lib);
    return ok;
}

// Two transports, "seg_a" and "seg_b", whose TransferMetadata objects share
// one store. Tests call start() (optionally with a transfer latency, set on
// the software provider before the first transfer).
class AdapterEndToEnd : public ::testing::Test {
   protected:
    void start(uint64_t latency_ns = 0) {
        ScopedEnv plugin("MC_FLAGCX_PLUGIN", MCFX_TEST_PLUGIN_PATH);
        conn_ = std::string("adapter-test/") +
                ::testing::UnitTest::GetInstance()->current_test_info()->name();
        meta_a_ = std::make_shared<TransferMetadata>(conn_);
        meta_b_ = std::make_shared<TransferMetadata>(conn_);
        a_ = std::make_unique<FlagCxTransport>();
        b_ = std::make_unique<FlagCxTransport>();
        ASSERT_EQ(Engine::install(*a_, "seg_a", meta_a_), 0);
        ASSERT_EQ(Engine::install(*b_, "seg_b", meta_b_), 0);
        seg_b_ = meta_a_->getSegmentID("seg_b");
        ASSERT_NE(seg_b_, static_cast<uint64_t>(-1));
        if (latency_ns != 0) {
            ASSERT_TRUE(setProviderKnob(kSwKnobLatencyNs, latency_ns));
        }
    }

    // Destroys both transports (together: see the file comment).
    void stop() {
        a_.reset();
        b_.reset();
    }

    void TearDown() override { stop(); }

    void registerOn(Transport &t, const Buffer &buf) {
        ASSERT_EQ(Engine::registerMemory(t, buf.data(), buf.size()), 0);
    }

    std::string conn_;
    std::shared_ptr<TransferMetadata> meta_a_, meta_b_;
    std::unique_ptr<FlagCxTransport> a_, b_;
    uint64_t seg_b_ = 0;
};

TEST_F(AdapterEndToEnd, WriteThenReadMovesTheBytes) {
    start();
    constexpr size_t kSize = 1 << 20, kTasks = 16, kChunk = kSize / kTasks;
    Buffer src(kSize, 1), back(kSize, 2), dst(kSize, 3);
    registerOn(*a_, src);
    registerOn(*a_, back);
    registerOn(*b_, dst);

    std::vector<Request> writes;
    for (size_t i = 0; i < kTasks; ++i)
        writes.push_back(makeRequest(Request::WRITE, src.data() + i * kChunk,
                                     seg_b_, dst.addr(i * kChunk), kChunk));
    Status submitted;
    BatchID wb = submitTasks(*a_, writes, &submitted);
    ASSERT_TRUE(submitted.ok()) << submitted.ToString();
    for (const auto &s : waitAll(*a_, wb)) {
        EXPECT_EQ(s.s, StatusEnum::COMPLETED);
        EXPECT_EQ(s.transferred_bytes, kChunk);
    }
    EXPECT_TRUE(src.sameAs(dst, 0, kSize));
    EXPECT_TRUE(a_->freeBatchID(wb).ok());

    std::vector<Request> reads;
    for (size_t i = 0; i < kTasks; ++i)
        reads.push_back(makeRequest(Request::READ, back.data() + i * kChunk,
                                    seg_b_, dst.addr(i * kChunk), kChunk));
    BatchID rb = submitTasks(*a_, reads);
    for (const auto &s : waitAll(*a_, rb)) EXPECT_EQ(s.s, StatusEnum::COMPLETED);
    EXPECT_TRUE(back.sameAs(src, 0, kSize));
    EXPECT_TRUE(a_->freeBatchID(rb).ok());
}

TEST_F(AdapterEndToEnd, ThrowingCompletionsDoNotStopOtherCompletions) {
    start();
    constexpr size_t kTasks = 16, kChunk = 4096;
    Buffer src(kTasks * kChunk, 1), dst(kTasks * kChunk, 3);
    registerOn(*a_, src);
    registerOn(*b_, dst);
    // The first three completions throw inside Slice::markSuccess, on the
    // plugin's progress thread; the adapter's noexcept trampoline must
    // swallow them and the thread must go on completing the rest.
    mooncake::testing::throwOnNextMarkSuccess(3);
    std::vector<Request> writes;
    for (size_t i = 0; i < kTasks; ++i)
        writes.push_back(makeRequest(Request::WRITE, src.data() + i * kChunk,
                                     seg_b_, dst.addr(i * kChunk), kChunk));
    BatchID id = submitTasks(*a_, writes);
    const auto deadline = std::chrono::steady_clock::now() + kWaitLimit;
    size_t completed = 0;
    while (std::chrono::steady_clock::now() < deadline) {
        completed = 0;
        for (size_t i = 0; i < kTasks; ++i)
            completed += statusOf(*a_, id, i).s == StatusEnum::COMPLETED;
        if (completed == kTasks - 3) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    // The three whose completion threw stay unreported (Mooncake's slice
    // timeout reports them); every other one completed.
    EXPECT_EQ(completed, kTasks - 3);
    // The progress thread is alive: a new batch completes normally.
    std::vector<Request> again = {makeRequest(
        Request::WRITE, src.data(), seg_b_, dst.addr(0), kChunk)};
    BatchID second = submitTasks(*a_, again);
    for (const auto &s : waitAll(*a_, second))
        EXPECT_EQ(s.s, StatusEnum::COMPLETED);
    EXPECT_TRUE(a_->freeBatchID(second).ok());
    // What Mooncake's slice timeout would do for the three: finish them, so
    // the batch can be freed.
    for (auto &task : Transport::toBatchDesc(id).task_list)
        task.is_finished = true;
    EXPECT_TRUE(a_->freeBatchID(id).ok());
}

TEST_F(AdapterEndToEnd, SubmitTransferAppendsTasksToTheBatch) {
    start();
    Buffer src(8192, 1), dst(8192, 2);
    registerOn(*a_, src);
    registerOn(*b_, dst);
    const BatchID id = a_->allocateBatchID(2);
    std::vector<Request> first{
        makeRequest(Request::WRITE, src.data(), seg_b_, dst.addr(), 4096)};
    std::vector<Request> second{makeRequest(
        Request::WRITE, src.data() + 4096, seg_b_, dst.addr(4096), 4096)};
    ASSERT_TRUE(a_->submitTransfer(id, first).ok());
    ASSERT_TRUE(a_->submitTransfer(id, second).ok());
    EXPECT_TRUE(a_->submitTransfer(id, first).IsTooManyRequests());
    auto states = waitAll(*a_, id);
    ASSERT_EQ(states.size(), 2u);
    for (const auto &s : states) EXPECT_EQ(s.s, StatusEnum::COMPLETED);
    EXPECT_TRUE(src.sameAs(dst, 0, 8192));
    EXPECT_TRUE(a_->freeBatchID(id).ok());
}

TEST_F(AdapterEndToEnd, UnregisteredRemoteRangeFailsOnlyThatTask) {
    start();
    Buffer src(8192, 1), dst(4096, 2), unregistered(4096, 3);
    registerOn(*a_, src);
    registerOn(*b_, dst);
    std::vector<Request> requests{
        makeRequest(Request::WRITE, src.data(), seg_b_, unregistered.addr(),
                    4096),
        makeRequest(Request::WRITE, src.data() + 4096, seg_b_, dst.addr(),
                    4096)};
    const BatchID id = submitTasks(*a_, requests);
    auto states = waitAll(*a_, id);
    EXPECT_EQ(states[0].s, StatusEnum::FAILED);
    EXPECT_EQ(states[0].transferred_bytes, 0u);
    EXPECT_EQ(states[1].s, StatusEnum::COMPLETED);
    EXPECT_EQ(std::memcmp(src.data() + 4096, dst.data(), 4096), 0);
    EXPECT_TRUE(a_->freeBatchID(id).ok());
}

TEST_F(AdapterEndToEnd, UnregisteredLocalBufferFailsOnlyThatTaskAtSubmit) {
    start();
    Buffer src(8192, 1), dst(8192, 2), stray(4096, 3);
    registerOn(*a_, src);
    registerOn(*b_, dst);
    // The plugin queues the op before the bad one and stops; the adapter
    // fails the bad one alone and resubmits the rest in one call.
    std::vector<Request> requests{
        makeRequest(Request::WRITE, src.data(), seg_b_, dst.addr(), 4096),
        makeRequest(Request::WRITE, stray.data(), seg_b_, dst.addr(4096),
                    4096),
        makeRequest(Request::WRITE, src.data() + 4096, seg_b_, dst.addr(4096),
                    4096)};
    const BatchID id = submitTasks(*a_, requests);
    // Failed at submit: already finished, without waiting.
    EXPECT_EQ(statusOf(*a_, id, 1).s, StatusEnum::FAILED);
    EXPECT_TRUE(Transport::toBatchDesc(id).task_list[1].is_finished);
    auto states = waitAll(*a_, id);
    EXPECT_EQ(states[0].s, StatusEnum::COMPLETED);
    EXPECT_EQ(states[1].s, StatusEnum::FAILED);
    EXPECT_EQ(states[2].s, StatusEnum::COMPLETED);
    EXPECT_TRUE(src.sameAs(dst, 0, 8192));
    EXPECT_TRUE(a_->freeBatchID(id).ok());
}

TEST_F(AdapterEndToEnd, UnknownSegmentFails) {
    start();
    Buffer src(4096, 1);
    registerOn(*a_, src);
    std::vector<Request> requests{
        makeRequest(Request::WRITE, src.data(), 4242, 0x10000, 4096)};
    const BatchID id = submitTasks(*a_, requests);
    EXPECT_EQ(waitAll(*a_, id)[0].s, StatusEnum::FAILED);
    EXPECT_TRUE(a_->freeBatchID(id).ok());
}

TEST_F(AdapterEndToEnd, ResolverExceptionFailsTheOpNotTheProcess) {
    start();
    Buffer src(4096, 1), dst(4096, 2);
    registerOn(*a_, src);
    registerOn(*b_, dst);
    // The first op to seg_b makes the plugin resolve it; the metadata
    // lookup throws inside the resolver callback.
    mooncake::testing::setSegmentReadThrows(conn_, "seg_b", true);
    std::vector<Request> requests{
        makeRequest(Request::WRITE, src.data(), seg_b_, dst.addr(), 4096)};
    const BatchID id = submitTasks(*a_, requests);
    EXPECT_EQ(waitAll(*a_, id)[0].s, StatusEnum::FAILED);
    mooncake::testing::setSegmentReadThrows(conn_, "seg_b", false);
    EXPECT_TRUE(a_->freeBatchID(id).ok());
}

TEST_F(AdapterEndToEnd, ZeroLengthRequestCompletesAtOnce) {
    start();
    Buffer src(4096, 1);
    registerOn(*a_, src);
    std::vector<Request> requests{
        makeRequest(Request::WRITE, src.data(), seg_b_, 0x10000, 0)};
    const BatchID id = submitTasks(*a_, requests);
    const auto s = statusOf(*a_, id, 0);
    EXPECT_EQ(s.s, StatusEnum::COMPLETED);
    EXPECT_EQ(s.transferred_bytes, 0u);
    EXPECT_TRUE(a_->freeBatchID(id).ok());
}

TEST_F(AdapterEndToEnd, TaskNeverSubmittedReportsFailedAndFinished) {
    start();
    // MultiTransport can assign a task to this transport and then stop
    // before submitting it: it must not read as COMPLETED, and the batch
    // must still be freeable.
    const BatchID id = a_->allocateBatchID(1);
    auto &batch = Transport::toBatchDesc(id);
    batch.task_list.resize(1);
    batch.task_list[0].transport_ = a_.get();
    EXPECT_EQ(statusOf(*a_, id, 0).s, StatusEnum::FAILED);
    Transport::TransferStatus s{};
    EXPECT_TRUE(a_->getTransferStatus(id, 1, s).IsInvalidArgument());
    EXPECT_TRUE(a_->freeBatchID(id).ok());
}

TEST_F(AdapterEndToEnd, PublishesSegmentAndBuffers) {
    start();
    EXPECT_EQ(Engine::name(*a_), "flagcx");
    auto desc = meta_a_->getSegmentDesc("seg_b");
    ASSERT_TRUE(desc);
    EXPECT_EQ(desc->name, "seg_b");
    EXPECT_EQ(desc->protocol, "flagcx");
    EXPECT_NE(desc->rdma_server_name.find(':'), std::string::npos)
        << desc->rdma_server_name;
    EXPECT_TRUE(desc->buffers.empty());

    Buffer one(4096), two(8192), three(4096);
    registerOn(*b_, one);
    ASSERT_EQ(Engine::registerBatch(*b_, {{two.data(), two.size()},
                                          {three.data(), three.size()}}),
              0);
    desc = meta_a_->getSegmentDesc("seg_b");
    ASSERT_EQ(desc->buffers.size(), 3u);
    EXPECT_EQ(desc->buffers[0].name, "seg_b");
    EXPECT_EQ(desc->buffers[0].addr, one.addr());
    EXPECT_EQ(desc->buffers[0].length, one.size());
    EXPECT_EQ(desc->buffers[1].addr, two.addr());
    EXPECT_EQ(desc->buffers[2].length, three.size());

    EXPECT_EQ(Engine::unregisterMemory(*b_, one.data()), 0);
    EXPECT_EQ(Engine::unregisterBatch(*b_, {two.data(), three.data()}), 0);
    EXPECT_TRUE(meta_a_->getSegmentDesc("seg_b")->buffers.empty());
    EXPECT_NE(Engine::unregisterMemory(*b_, one.data()), 0);

    stop();
    EXPECT_FALSE(meta_a_->getSegmentDesc("seg_a"));
    EXPECT_FALSE(meta_a_->getSegmentDesc("seg_b"));
}

TEST_F(AdapterEndToEnd, OverlappingRegistrationIsRefusedAndNotPublished) {
    start();
    Buffer buf(8192);
    registerOn(*b_, buf);
    EXPECT_EQ(Engine::registerMemory(*b_, buf.data() + 4096, 4096),
              ERR_ADDRESS_OVERLAPPED);
    EXPECT_EQ(meta_a_->getSegmentDesc("seg_b")->buffers.size(), 1u);
}

// Resets the software provider's process-wide latency knob after a test
// that raised it (if the plugin is still loaded; a fresh load starts from
// the environment).
void resetProviderLatency() { setProviderKnob(kSwKnobLatencyNs, 0); }

TEST_F(AdapterEndToEnd, GetTransferStatusNeverBlocks) {
    start(1000000000);  // every transfer takes 1 s
    Buffer src(4096, 1), dst(4096, 2);
    registerOn(*a_, src);
    registerOn(*b_, dst);
    std::vector<Request> requests{
        makeRequest(Request::WRITE, src.data(), seg_b_, dst.addr(), 4096)};
    const BatchID id = submitTasks(*a_, requests);
    // A status call that waited for the transfer would never answer
    // WAITING. No wall-clock bound: a loaded machine may stall any call.
    size_t waiting = 0;
    const auto deadline = std::chrono::steady_clock::now() + kWaitLimit;
    Transport::TransferStatus s{StatusEnum::WAITING, 0};
    while (s.s == StatusEnum::WAITING &&
           std::chrono::steady_clock::now() < deadline) {
        s = statusOf(*a_, id, 0);
        if (s.s == StatusEnum::WAITING) ++waiting;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    EXPECT_EQ(s.s, StatusEnum::COMPLETED);
    EXPECT_GE(waiting, 1u);  // it answered while the transfer ran
    EXPECT_TRUE(a_->freeBatchID(id).ok());
    stop();
    resetProviderLatency();
}

TEST_F(AdapterEndToEnd, UnregisterWaitsForOpsInFlight) {
    start(200000000);
    Buffer src(4096, 1), dst(4096, 2);
    registerOn(*a_, src);
    registerOn(*b_, dst);
    std::vector<Request> requests{
        makeRequest(Request::WRITE, src.data(), seg_b_, dst.addr(), 4096)};
    const BatchID id = submitTasks(*a_, requests);
    // The plugin reports the region busy while the op runs; unregister
    // waits for it instead of failing or pulling the memory from under it.
    EXPECT_EQ(Engine::unregisterMemory(*a_, src.data()), 0);
    EXPECT_EQ(waitAll(*a_, id)[0].s, StatusEnum::COMPLETED);
    EXPECT_TRUE(src.sameAs(dst, 0, 4096));
    EXPECT_TRUE(a_->freeBatchID(id).ok());
    stop();
    resetProviderLatency();
}

TEST_F(AdapterEndToEnd, DestroyMarksEveryOutstandingSlice) {
    {
        // Ops still inside FlagCX get 100 ms after destroy begins.
        ScopedEnv grace("MC_FLAGCX_SHUTDOWN_TIMEOUT_MS", "100");
        start(1000000000);  // every transfer takes 1 s
    }
    Buffer src(16384, 1), dst(16384, 2);
    registerOn(*a_, src);
    registerOn(*b_, dst);
    // Connect first, so the ops below reach FlagCX before the destroy.
    std::vector<Request> warm_up{
        makeRequest(Request::WRITE, src.data(), seg_b_, dst.addr(), 4096)};
    const BatchID warm = submitTasks(*a_, warm_up);
    ASSERT_EQ(waitAll(*a_, warm)[0].s, StatusEnum::COMPLETED);
    EXPECT_TRUE(a_->freeBatchID(warm).ok());

    std::vector<Request> requests;
    for (size_t i = 0; i < 4; ++i)
        requests.push_back(makeRequest(Request::WRITE, src.data() + i * 4096,
                                       seg_b_, dst.addr(i * 4096), 4096));
    const BatchID id = a_->allocateBatchID(requests.size());
    ASSERT_TRUE(a_->submitTransfer(id, requests).ok());
    // Queued or inside FlagCX by now: either way outstanding (1 s transfers)
    // and failed by the destroy below; no sleep to pick one.
    EXPECT_EQ(statusOf(*a_, id, 0).s, StatusEnum::WAITING);
    stop();  // destroy: every accepted op completes, canceled ones failed
    FlagCxTransport other;  // reads the batch after the others are gone
    for (size_t i = 0; i < requests.size(); ++i) {
        EXPECT_EQ(statusOf(other, id, i).s, StatusEnum::FAILED) << i;
        EXPECT_EQ(Transport::toBatchDesc(id).task_list[i].slice_count, 1u);
    }
    EXPECT_TRUE(other.freeBatchID(id).ok());
    resetProviderLatency();
}

TEST_F(AdapterEndToEnd, ABurstBeyondThePluginQueueFailsNoRequest) {
    // vLLM-shaped: 10 threads, each a request of 2 048 pages, at once, with
    // the plugin's default settings (a queue of 4 096 ops): the queue fills,
    // the adapter waits for room instead of failing requests.
    start();
    constexpr size_t kThreads = 10, kOps = 2048, kLen = 1024;
    constexpr size_t kPerThread = kOps * kLen;
    Buffer src(kThreads * kPerThread, 1), dst(kThreads * kPerThread, 2);
    registerOn(*a_, src);
    registerOn(*b_, dst);
    std::vector<size_t> failed(kThreads, 0), completed(kThreads, 0);
    std::vector<std::thread> threads;
    for (size_t t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
            std::vector<Request> requests;
            for (size_t i = 0; i < kOps; ++i) {
                const size_t off = t * kPerThread + i * kLen;
                requests.push_back(makeRequest(Request::WRITE, src.data() + off,
                                               seg_b_, dst.addr(off), kLen));
            }
            Status submitted;
            const BatchID id = submitTasks(*a_, requests, &submitted);
            EXPECT_TRUE(submitted.ok()) << submitted.ToString();
            for (const auto &s : waitAll(*a_, id)) {
                if (s.s == StatusEnum::COMPLETED) ++completed[t];
                if (s.s == StatusEnum::FAILED) ++failed[t];
            }
            EXPECT_TRUE(a_->freeBatchID(id).ok());
        });
    }
    for (auto &th : threads) th.join();
    for (size_t t = 0; t < kThreads; ++t) {
        EXPECT_EQ(failed[t], 0u) << "thread " << t;
        EXPECT_EQ(completed[t], kOps) << "thread " << t;
    }
    EXPECT_TRUE(src.sameAs(dst, 0, kThreads * kPerThread));
}

// ---- Plugin loading ----------------------------------------------------------

class AdapterPluginLoading : public ::testing::Test {
   protected:
    // Installs a fresh transport with MC_FLAGCX_PLUGIN=`plugin` (unset if
    // null); returns install's result and what it logged.
    int install(const char *plugin, std::string &log) {
        ScopedEnv env("MC_FLAGCX_PLUGIN", plugin);
        auto meta = std::make_shared<TransferMetadata>(
            std::string("adapter-loading/") +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
        transport_ = std::make_unique<FlagCxTransport>();
        ::testing::internal::CaptureStderr();
        const int rc = Engine::install(*transport_, "seg", meta);
        log = ::testing::internal::GetCapturedStderr();
        meta_ = meta;
        return rc;
    }
    void TearDown() override { transport_.reset(); }

    std::shared_ptr<TransferMetadata> meta_;
    std::unique_ptr<FlagCxTransport> transport_;
};

TEST_F(AdapterPluginLoading, MissingPluginFailsInstallWithItsPath) {
    std::string log;
    EXPECT_LT(install("/nonexistent/libmooncake_flagcx.so", log), 0);
    EXPECT_NE(log.find("/nonexistent/libmooncake_flagcx.so"),
              std::string::npos)
        << log;
    EXPECT_NE(log.find("MC_FLAGCX_PLUGIN"), std::string::npos) << log;
    EXPECT_FALSE(meta_->getSegmentDesc("seg"));  // nothing published

    // The transport stays usable as an object: calls fail cleanly.
    Buffer buf(4096);
    EXPECT_NE(Engine::registerMemory(*transport_, buf.data(), buf.size()), 0);
    std::vector<Request> requests{
        makeRequest(Request::WRITE, buf.data(), 1, 0x10000, 4096)};
    Status submitted;
    const BatchID id = submitTasks(*transport_, requests, &submitted);
    EXPECT_FALSE(submitted.ok());
    EXPECT_EQ(statusOf(*transport_, id, 0).s, StatusEnum::FAILED);
    EXPECT_TRUE(transport_->freeBatchID(id).ok());
}

TEST_F(AdapterPluginLoading, WrongAbiVersionIsRejected) {
    std::string log;
    EXPECT_LT(install(MCFX_TEST_FAKE_BAD_ABI, log), 0);
    EXPECT_NE(log.find("ABI version 2"), std::string::npos) << log;
}

TEST_F(AdapterPluginLoading, ShortFunctionTableIsRejected) {
    std::string log;
    EXPECT_LT(install(MCFX_TEST_FAKE_SHORT_TABLE, log), 0);
    EXPECT_NE(log.find("function table has"), std::string::npos) << log;
}

TEST_F(AdapterPluginLoading, LibraryWithoutEntryPointIsRejected) {
    std::string log;
    EXPECT_LT(install(MCFX_TEST_FAKE_NO_ENTRY, log), 0);
    EXPECT_NE(log.find("mcfx_get_api_v1"), std::string::npos) << log;
}

TEST_F(AdapterPluginLoading, MalformedKnobFailsInstall) {
    ScopedEnv knob("MC_FLAGCX_OP_TIMEOUT_MS", "30s");
    std::string log;
    EXPECT_LT(install(MCFX_TEST_PLUGIN_PATH, log), 0);
    EXPECT_NE(log.find("MC_FLAGCX_OP_TIMEOUT_MS"), std::string::npos) << log;
}

TEST_F(AdapterPluginLoading, SchedulingKnobsAreReadAndAccepted) {
    {
        // Read: a malformed value fails the install and names the knob.
        ScopedEnv grace("MC_FLAGCX_SPIN_GRACE_US", "1ms");
        std::string log;
        EXPECT_LT(install(MCFX_TEST_PLUGIN_PATH, log), 0);
        EXPECT_NE(log.find("MC_FLAGCX_SPIN_GRACE_US"), std::string::npos) << log;
    }
    {
        ScopedEnv pin("MC_FLAGCX_NO_PIN_ASLEEP", "yes");
        std::string log;
        EXPECT_LT(install(MCFX_TEST_PLUGIN_PATH, log), 0);
        EXPECT_NE(log.find("MC_FLAGCX_NO_PIN_ASLEEP"), std::string::npos) << log;
    }
    // Accepted: the real plugin takes the values (and the flag bit).
    ScopedEnv grace("MC_FLAGCX_SPIN_GRACE_US", "200");
    ScopedEnv pin("MC_FLAGCX_NO_PIN_ASLEEP", "1");
    std::string log;
    EXPECT_EQ(install(MCFX_TEST_PLUGIN_PATH, log), 0) << log;
}

TEST_F(AdapterPluginLoading, DefaultIsThePluginNextToTheAdapterLibrary) {
    // The build puts libmooncake_flagcx.so (a link to the real plugin) next
    // to the adapter's shared library.
    std::string log;
    ASSERT_EQ(install(nullptr, log), 0) << log;
    EXPECT_NE(log.find("next to"), std::string::npos) << log;
    auto desc = meta_->getSegmentDesc("seg");
    ASSERT_TRUE(desc);
    EXPECT_FALSE(desc->rdma_server_name.empty());
}

// ---- Submit edge cases, fake plugin ------------------------------------------

// One transport over the fake plugin, which accepts at most two ops per
// submit and completes ops only when told to.
class AdapterFakePlugin : public ::testing::Test {
   protected:
    void SetUp() override {
        ScopedEnv env("MC_FLAGCX_PLUGIN", MCFX_TEST_FAKE_PLUGIN);
        meta_ = std::make_shared<TransferMetadata>("adapter-fake");
        transport_ = std::make_unique<FlagCxTransport>();
        ASSERT_EQ(Engine::install(*transport_, "seg_fake", meta_), 0);
        void *lib = dlopen(MCFX_TEST_FAKE_PLUGIN, RTLD_NOW | RTLD_NOLOAD);
        ASSERT_NE(lib, nullptr);
        complete_ = reinterpret_cast<size_t (*)(int32_t)>(
            dlsym(lib, "fake_mcfx_complete_pending"));
        calls_ = reinterpret_cast<size_t (*)()>(
            dlsym(lib, "fake_mcfx_submit_calls"));
        set_limit_ = reinterpret_cast<size_t (*)(size_t)>(
            dlsym(lib, "fake_mcfx_set_accept_limit"));
        ASSERT_NE(complete_, nullptr);
        ASSERT_NE(calls_, nullptr);
        ASSERT_NE(set_limit_, nullptr);
        dlclose(lib);  // the adapter keeps its own reference
    }
    void TearDown() override { transport_.reset(); }

    BatchID submit(size_t n) {
        requests_.clear();
        for (size_t i = 0; i < n; ++i)
            requests_.push_back(makeRequest(Request::WRITE, buf_.data(), 7,
                                            0x10000 + i * 64, 64));
        return submitTasks(*transport_, requests_);
    }

    Buffer buf_{4096};
    std::vector<Request> requests_;
    std::shared_ptr<TransferMetadata> meta_;
    std::unique_ptr<FlagCxTransport> transport_;
    size_t (*complete_)(int32_t) = nullptr;
    size_t (*calls_)() = nullptr;
    size_t (*set_limit_)(size_t) = nullptr;
};

TEST_F(AdapterFakePlugin, AFullPluginSlowsTheSubmitDownAndFailsNothing) {
    // The fake takes two ops per submit and refuses the rest with
    // MCFX_E_QUEUE_FULL: the adapter resubmits the rest until all are in.
    const size_t before = calls_();
    const BatchID id = submit(5);
    EXPECT_EQ(calls_() - before, 3u);
    for (size_t i = 0; i < 5; ++i)
        EXPECT_EQ(statusOf(*transport_, id, i).s, StatusEnum::WAITING) << i;
    EXPECT_EQ(complete_(MCFX_OK), 5u);
    for (size_t i = 0; i < 5; ++i)
        EXPECT_EQ(statusOf(*transport_, id, i).s, StatusEnum::COMPLETED) << i;
    EXPECT_EQ(statusOf(*transport_, id, 1).transferred_bytes, 64u);
    EXPECT_TRUE(transport_->freeBatchID(id).ok());
}

TEST_F(AdapterFakePlugin, OpsStillWithoutRoomAtTheirDeadlineFailWithoutSpinning) {
    // Reinstalled with a 200 ms op timeout; the fake then takes nothing.
    transport_.reset();
    {
        ScopedEnv env("MC_FLAGCX_PLUGIN", MCFX_TEST_FAKE_PLUGIN);
        ScopedEnv timeout("MC_FLAGCX_OP_TIMEOUT_MS", "200");
        transport_ = std::make_unique<FlagCxTransport>();
        ASSERT_EQ(Engine::install(*transport_, "seg_fake", meta_), 0);
    }
    const size_t limit = set_limit_(0);
    const size_t before = calls_();
    const auto t0 = std::chrono::steady_clock::now();
    const BatchID id = submit(3);
    const auto waited = std::chrono::steady_clock::now() - t0;
    const size_t calls = calls_() - before;
    set_limit_(limit);
    // It waited for room up to the deadline, then failed the ops.
    EXPECT_GE(waited, std::chrono::milliseconds(200));
    for (size_t i = 0; i < 3; ++i) {
        EXPECT_EQ(statusOf(*transport_, id, i).s, StatusEnum::FAILED) << i;
        EXPECT_TRUE(Transport::toBatchDesc(id).task_list[i].is_finished);
    }
    // Asleep between tries: sleeps of 20 us doubling to 1 ms make at most
    // about 200 tries in 200 ms (a busy machine only makes fewer).
    EXPECT_LE(calls, 220u);
    EXPECT_GE(calls, 2u);
    EXPECT_TRUE(transport_->freeBatchID(id).ok());
}

TEST_F(AdapterFakePlugin, ABadOpFailsAloneAndTheRestIsResubmittedInOneCall) {
    void *lib = dlopen(MCFX_TEST_FAKE_PLUGIN, RTLD_NOW | RTLD_NOLOAD);
    ASSERT_NE(lib, nullptr);
    auto calls = reinterpret_cast<size_t (*)()>(
        dlsym(lib, "fake_mcfx_submit_calls"));
    dlclose(lib);
    ASSERT_NE(calls, nullptr);
    // Ops 1 and 3 are bad (the fake's bad length): the adapter fails each
    // alone and resubmits what follows it in one call: 2 calls, not 4.
    requests_.clear();
    for (uint64_t len : {64, 13, 64, 13})
        requests_.push_back(makeRequest(Request::WRITE, buf_.data(), 7,
                                        0x10000 + requests_.size() * 64, len));
    const size_t before = calls();
    const BatchID id = submitTasks(*transport_, requests_);
    EXPECT_EQ(calls() - before, 2u);
    EXPECT_EQ(statusOf(*transport_, id, 0).s, StatusEnum::WAITING);
    EXPECT_EQ(statusOf(*transport_, id, 1).s, StatusEnum::FAILED);
    EXPECT_EQ(statusOf(*transport_, id, 2).s, StatusEnum::WAITING);
    EXPECT_EQ(statusOf(*transport_, id, 3).s, StatusEnum::FAILED);
    EXPECT_EQ(complete_(MCFX_OK), 2u);
    EXPECT_EQ(statusOf(*transport_, id, 0).s, StatusEnum::COMPLETED);
    EXPECT_EQ(statusOf(*transport_, id, 2).s, StatusEnum::COMPLETED);
    EXPECT_TRUE(transport_->freeBatchID(id).ok());
}

TEST_F(AdapterFakePlugin, AnyErrorStatusMarksTheSliceFailed) {
    const BatchID first = submit(2);
    EXPECT_EQ(complete_(MCFX_E_TIMEOUT), 2u);
    for (size_t i = 0; i < 2; ++i)
        EXPECT_EQ(statusOf(*transport_, first, i).s, StatusEnum::FAILED);
    const BatchID second = submit(1);
    EXPECT_EQ(complete_(12345), 1u);  // a code this adapter does not know
    EXPECT_EQ(statusOf(*transport_, second, 0).s, StatusEnum::FAILED);
    EXPECT_TRUE(transport_->freeBatchID(first).ok());
    EXPECT_TRUE(transport_->freeBatchID(second).ok());
}

TEST_F(AdapterFakePlugin, BatchIsBusyUntilEveryTaskFinished) {
    const BatchID id = submit(1);
    EXPECT_EQ(statusOf(*transport_, id, 0).s, StatusEnum::WAITING);
    EXPECT_FALSE(transport_->freeBatchID(id).ok());
    EXPECT_EQ(complete_(MCFX_OK), 1u);
    EXPECT_EQ(statusOf(*transport_, id, 0).s, StatusEnum::COMPLETED);
    EXPECT_TRUE(transport_->freeBatchID(id).ok());
}

TEST_F(AdapterFakePlugin, DestroyFailsPendingSlices) {
    const BatchID id = submit(2);
    transport_.reset();  // the plugin cancels both ops
    FlagCxTransport reader;
    EXPECT_EQ(statusOf(reader, id, 0).s, StatusEnum::FAILED);
    EXPECT_EQ(statusOf(reader, id, 1).s, StatusEnum::FAILED);
    EXPECT_TRUE(reader.freeBatchID(id).ok());
}

}  // namespace
}  // namespace mooncake
