// The baseline transport (libmcfx_baseline.so) through its C ABI, on the
// in-tree software FlagCX provider: two transports in one process, peer 0 is
// transport A and peer 1 transport B (via the resolver callback).
//
// FlagCX registrations, provider knobs and violation counters are
// process-wide, and destroying an engine deregisters every region in the
// process: each test creates its two transports, registers everything before
// the first transfer, and destroys both together at its end.

#include <dlfcn.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "flagcx_sw.h" // knob numbers only; the functions are found with dlsym
#include "mooncake_flagcx.h"

namespace {

constexpr auto kMaxWait = std::chrono::seconds(60);

// The software provider's controls, looked up at run time (absent with a real
// FlagCX, where these tests skip).
struct Provider {
  decltype(&flagcxSwSetKnob) set_knob;
  decltype(&flagcxSwViolationsTotal) violations;
  decltype(&flagcxSwResetViolations) reset_violations;

  static const Provider &Get() {
    static const Provider p{
        reinterpret_cast<decltype(&flagcxSwSetKnob)>(
            dlsym(RTLD_DEFAULT, "flagcxSwSetKnob")),
        reinterpret_cast<decltype(&flagcxSwViolationsTotal)>(
            dlsym(RTLD_DEFAULT, "flagcxSwViolationsTotal")),
        reinterpret_cast<decltype(&flagcxSwResetViolations)>(
            dlsym(RTLD_DEFAULT, "flagcxSwResetViolations"))};
    return p;
  }
  bool present() const { return set_knob && violations && reset_violations; }
  void ResetKnobs() const {
    for (int k : {FLAGCX_SW_KNOB_LATENCY_NS, FLAGCX_SW_KNOB_FAIL_OP,
                  FLAGCX_SW_KNOB_HANG_OP, FLAGCX_SW_KNOB_CONNECT_DELAY_MS,
                  FLAGCX_SW_KNOB_REFUSE_CONNECT})
      set_knob(k, 0);
    set_knob(FLAGCX_SW_KNOB_CONNECT_TIMEOUT_MS, 10000);
  }
};

// Every completion received, per user_data.
class Completions {
public:
  static void OnComplete(void *ctx, uint64_t user_data, mcfx_status status) {
    static_cast<Completions *>(ctx)->Record(user_data, status);
  }

  // Waits until `n` distinct ops completed (at most kMaxWait).
  bool WaitFor(size_t n) {
    std::unique_lock<std::mutex> lk(mu_);
    return cv_.wait_for(lk, kMaxWait, [&] { return seen_.size() >= n; });
  }
  // The op's status; -1 if it completed zero or several times.
  int Status(uint64_t user_data) {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = seen_.find(user_data);
    return it == seen_.end() || it->second.size() != 1 ? -1
                                                       : int(it->second[0]);
  }
  size_t Total() {
    std::lock_guard<std::mutex> lk(mu_);
    return total_;
  }
  // Callbacks that ran on the thread that created this object (the test's
  // thread, which also submits and destroys): the ABI says none may.
  size_t OnTestThread() {
    std::lock_guard<std::mutex> lk(mu_);
    return on_test_thread_;
  }

private:
  void Record(uint64_t user_data, mcfx_status status) {
    std::lock_guard<std::mutex> lk(mu_);
    seen_[user_data].push_back(status);
    ++total_;
    on_test_thread_ += std::this_thread::get_id() == test_thread_;
    cv_.notify_all();
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::map<uint64_t, std::vector<mcfx_status>> seen_;
  size_t total_ = 0;
  size_t on_test_thread_ = 0;
  const std::thread::id test_thread_ = std::this_thread::get_id();
};

// Peer id -> endpoint, for the resolver callback.
struct Peers {
  std::string endpoint[2];

  static int32_t Resolve(void *ctx, uint64_t peer, char *buf, size_t cap) {
    auto *self = static_cast<Peers *>(ctx);
    if (peer > 1 || self->endpoint[peer].size() >= cap) return -1;
    std::memcpy(buf, self->endpoint[peer].c_str(),
                self->endpoint[peer].size() + 1);
    return 0;
  }
};

// A config with the defaults and these callbacks (completions to `done`,
// peers resolved by `peers`).
mcfx_config ConfigFor(Completions &done, Peers &peers) {
  mcfx_config cfg;
  mcfx_config_init(&cfg, sizeof cfg);
  cfg.on_complete = Completions::OnComplete;
  cfg.complete_ctx = &done;
  cfg.resolve = Peers::Resolve;
  cfg.resolve_ctx = &peers;
  return cfg;
}

mcfx_op Op(uint32_t opcode, void *local, uint64_t length, uint64_t peer,
           const void *remote, uint64_t user_data) {
  mcfx_op op{};
  op.opcode = opcode;
  op.local_addr = local;
  op.length = length;
  op.peer_id = peer;
  op.remote_addr = reinterpret_cast<uint64_t>(remote);
  op.user_data = user_data;
  return op;
}

void Fill(std::vector<uint8_t> &buf, uint8_t seed) {
  for (size_t i = 0; i < buf.size(); ++i) buf[i] = uint8_t(i * 131 + seed);
}

std::string LastError() {
  char msg[512];
  mcfx_last_error(msg, sizeof msg);
  return msg;
}

// ---- the ABI without a transport -----------------------------------------------

TEST(BaselineAbi, IdentifiesAsCppAndExportsTheV1Table) {
  EXPECT_STREQ(mcfx_impl_name(), "cpp");
  EXPECT_EQ(mcfx_abi_version(), 1u);
  const mcfx_api_v1 *api = mcfx_get_api_v1();
  ASSERT_NE(api, nullptr);
  EXPECT_EQ(api->abi_version, 1u);
  EXPECT_EQ(api->struct_size, sizeof(mcfx_api_v1));
  EXPECT_STREQ(api->impl_name(), "cpp");
  EXPECT_STREQ(api->strerror(MCFX_E_TIMEOUT), "operation timed out");
  EXPECT_STREQ(mcfx_strerror(12345), "unknown status code");
  mcfx_config cfg;
  std::memset(&cfg, 0xff, sizeof cfg);
  mcfx_config_init(&cfg, sizeof cfg);
  EXPECT_EQ(cfg.struct_size, sizeof cfg);
  EXPECT_EQ(cfg.abi_version, 1u);
  EXPECT_EQ(cfg.on_complete, nullptr);
  EXPECT_EQ(cfg.op_timeout_ms, 30000u); // the real defaults
  EXPECT_EQ(cfg.queue_capacity, uint32_t(MCFX_DEFAULT_QUEUE_CAPACITY));
  EXPECT_EQ(cfg.log_level, uint32_t(MCFX_LOG_WARN));
  EXPECT_EQ(cfg.log, nullptr);
  EXPECT_EQ(mcfx_destroy(nullptr), MCFX_OK);
}

#ifdef MCFX_RUST_LIB
// Interchangeable under LD_PRELOAD: both libraries' mcfx_config_init write
// the same bytes (the baseline's defaults mirror the Rust library's).
TEST(BaselineAbi, ConfigInitWritesTheSameDefaultsAsTheRustLibrary) {
  void *rust = dlopen(MCFX_RUST_LIB, RTLD_NOW | RTLD_LOCAL);
  ASSERT_NE(rust, nullptr) << dlerror();
  auto rust_init = reinterpret_cast<decltype(&mcfx_config_init)>(
      dlsym(rust, "mcfx_config_init"));
  ASSERT_NE(rust_init, nullptr);
  ASSERT_NE(rust_init, &mcfx_config_init) << "the Rust library, not ours";
  mcfx_config ours, theirs;
  std::memset(&ours, 0x5a, sizeof ours);
  std::memset(&theirs, 0xa5, sizeof theirs);
  mcfx_config_init(&ours, sizeof ours);
  rust_init(&theirs, sizeof theirs);
  EXPECT_EQ(std::memcmp(&ours, &theirs, sizeof ours), 0);
  dlclose(rust);
}

// The baseline checks what the Rust library checks: every config field at
// its maximum and one above, every struct_size, bad versions, flags and log
// levels get the same status from both libraries' mcfx_create.
TEST(BaselineAbi, BadConfigAnswersMatchTheRustLibrary) {
  void *rust = dlopen(MCFX_RUST_LIB, RTLD_NOW | RTLD_LOCAL);
  ASSERT_NE(rust, nullptr) << dlerror();
  auto rust_create = reinterpret_cast<decltype(&mcfx_create)>(
      dlsym(rust, "mcfx_create"));
  auto rust_destroy = reinterpret_cast<decltype(&mcfx_destroy)>(
      dlsym(rust, "mcfx_destroy"));
  ASSERT_NE(rust_create, nullptr);
  ASSERT_NE(rust_destroy, nullptr);
  Completions done;
  Peers peers;
  mcfx_config good = ConfigFor(done, peers);
  good.flags = MCFX_FLAG_NO_SERVE; // no RPC server per accepted row

  std::vector<std::pair<std::string, mcfx_config>> rows;
  auto add = [&](std::string name, auto mutate) {
    mcfx_config c = good;
    mutate(c);
    rows.emplace_back(std::move(name), c);
  };
#define MCFX_ROW(field, max)                                                   \
  add(#field " at max", [](mcfx_config &c) { c.field = (max); });              \
  add(#field " above max", [](mcfx_config &c) { c.field = (max) + 1; })
  MCFX_ROW(queue_capacity, MCFX_MAX_QUEUE_CAPACITY);
  MCFX_ROW(submit_wait_us, MCFX_MAX_SUBMIT_WAIT_US);
  MCFX_ROW(op_timeout_ms, MCFX_MAX_OP_TIMEOUT_MS);
  MCFX_ROW(connect_timeout_ms, MCFX_MAX_CONNECT_TIMEOUT_MS);
  MCFX_ROW(spin_grace_us, MCFX_MAX_SPIN_GRACE_US);
  MCFX_ROW(max_batch, MCFX_MAX_MAX_BATCH);
  MCFX_ROW(max_slice_bytes, MCFX_MAX_MAX_SLICE_BYTES);
  MCFX_ROW(connect_threads, 8u); // a valid count, then the real maximum:
  MCFX_ROW(connect_threads, MCFX_MAX_CONNECT_THREADS);
  MCFX_ROW(shutdown_timeout_ms, MCFX_MAX_SHUTDOWN_TIMEOUT_MS);
  MCFX_ROW(max_in_flight, MCFX_MAX_MAX_IN_FLIGHT);
  MCFX_ROW(max_regions, MCFX_MAX_MAX_REGIONS);
  MCFX_ROW(log_level, uint32_t(MCFX_LOG_TRACE));
#undef MCFX_ROW
  add("abi_version 0", [](mcfx_config &c) { c.abi_version = 0; });
  add("abi_version next", [](mcfx_config &c) { c.abi_version = MCFX_ABI_VERSION + 1; });
  add("unknown flag", [](mcfx_config &c) { c.flags |= 1u << 7; });
  for (uint32_t size = 0; size <= sizeof(mcfx_config) + 16; ++size)
    rows.emplace_back("struct_size " + std::to_string(size), good),
        rows.back().second.struct_size = size;

  for (auto &[name, cfg] : rows) {
    mcfx_transport *ours = nullptr, *theirs = nullptr;
    const mcfx_status a = mcfx_create(&cfg, &ours);
    const mcfx_status b = rust_create(&cfg, &theirs);
    EXPECT_EQ(a, b) << name;
    if (ours != nullptr) mcfx_destroy(ours);
    if (theirs != nullptr) rust_destroy(theirs);
  }
  dlclose(rust);
}
#endif

TEST(BaselineAbi, RejectsBadConfigsAndArguments) {
  Completions done;
  Peers peers;
  mcfx_config good = ConfigFor(done, peers);

  mcfx_transport *t = nullptr;
  EXPECT_EQ(mcfx_create(nullptr, &t), MCFX_E_INVALID_ARGUMENT);
  EXPECT_EQ(mcfx_create(&good, nullptr), MCFX_E_INVALID_ARGUMENT);
  struct Case {
    void (*mutate)(mcfx_config &);
    mcfx_status want;
  } cases[] = {
      {[](mcfx_config &c) { c.abi_version = 0; }, MCFX_E_BAD_CONFIG},
      {[](mcfx_config &c) { c.abi_version = MCFX_ABI_VERSION + 1; },
       MCFX_E_BAD_CONFIG},
      {[](mcfx_config &c) { c.struct_size = 8; }, MCFX_E_BAD_CONFIG},
      {[](mcfx_config &c) { c.on_complete = nullptr; }, MCFX_E_INVALID_ARGUMENT},
      {[](mcfx_config &c) { c.resolve = nullptr; }, MCFX_E_INVALID_ARGUMENT},
      {[](mcfx_config &c) { c.flags = 1u << 7; }, MCFX_E_BAD_CONFIG},
      {[](mcfx_config &c) { c.log_level = 6; }, MCFX_E_BAD_CONFIG},
  };
  for (const Case &c : cases) {
    mcfx_config cfg = good;
    c.mutate(cfg);
    t = reinterpret_cast<mcfx_transport *>(&cfg); // must be overwritten
    EXPECT_EQ(mcfx_create(&cfg, &t), c.want);
    EXPECT_EQ(t, nullptr);
  }
  // The last case's message, snprintf-style.
  const std::string msg = LastError();
  EXPECT_NE(msg.find("log_level"), std::string::npos) << msg;
  EXPECT_EQ(mcfx_last_error(nullptr, 0), msg.size());
  char tiny[4];
  EXPECT_EQ(mcfx_last_error(tiny, sizeof tiny), msg.size());
  EXPECT_EQ(std::strlen(tiny), 3u);

  mcfx_op op = Op(MCFX_OP_WRITE, tiny, 1, 1, nullptr, 1);
  size_t accepted = 99;
  EXPECT_EQ(mcfx_submit(nullptr, &op, 1, &accepted), MCFX_E_INVALID_ARGUMENT);
  EXPECT_EQ(accepted, 0u);
  EXPECT_EQ(done.Total(), 0u);
}

// ---- two transports in one process ---------------------------------------------

class BaselineTransport : public ::testing::Test {
protected:
  void SetUp() override {
    if (!Provider::Get().present())
      GTEST_SKIP() << "needs the software FlagCX provider";
    Provider::Get().ResetKnobs();
    Provider::Get().reset_violations();
  }

  void TearDown() override {
    DestroyBoth();
    EXPECT_EQ(done_.OnTestThread(), 0u) << "a callback ran on a caller thread";
    if (Provider::Get().present()) {
      EXPECT_EQ(Provider::Get().violations(), 0u) << "FlagCX misuse seen";
      Provider::Get().ResetKnobs();
    }
  }

  // Creates A (peer 0) and B (peer 1); the timeout applies to A.
  void Start(uint32_t op_timeout_ms = 0) {
    a_ = Create(op_timeout_ms);
    b_ = Create(0);
    ASSERT_NE(a_, nullptr);
    ASSERT_NE(b_, nullptr);
    peers_.endpoint[0] = Endpoint(a_);
    peers_.endpoint[1] = Endpoint(b_);
  }

  void DestroyBoth() {
    if (a_) {
      EXPECT_EQ(mcfx_destroy(a_), MCFX_OK);
    }
    if (b_) {
      EXPECT_EQ(mcfx_destroy(b_), MCFX_OK);
    }
    a_ = b_ = nullptr;
  }

  mcfx_transport *Create(uint32_t op_timeout_ms) {
    mcfx_config cfg = ConfigFor(done_, peers_);
    cfg.op_timeout_ms = op_timeout_ms;
    mcfx_transport *t = nullptr;
    EXPECT_EQ(mcfx_create(&cfg, &t), MCFX_OK) << LastError();
    return t;
  }

  static std::string Endpoint(const mcfx_transport *t) {
    char buf[128];
    size_t len = 0;
    EXPECT_EQ(mcfx_local_endpoint(t, buf, sizeof buf, &len), MCFX_OK);
    return std::string(buf, len);
  }

  void Register(mcfx_transport *t, std::vector<uint8_t> &buf) {
    ASSERT_EQ(mcfx_register(t, buf.data(), buf.size()), MCFX_OK) << LastError();
  }

  // Submits one op from A and waits for its completion status.
  int RunOne(const mcfx_op &op) {
    size_t accepted = 0;
    EXPECT_EQ(mcfx_submit(a_, &op, 1, &accepted), MCFX_OK) << LastError();
    EXPECT_EQ(accepted, 1u);
    // Distinct user_data per op in a test: wait for this one.
    auto until = std::chrono::steady_clock::now() + kMaxWait;
    while (done_.Status(op.user_data) < 0 &&
           std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    return done_.Status(op.user_data);
  }

  mcfx_stats Stats(const mcfx_transport *t) {
    mcfx_stats s{};
    s.struct_size = sizeof s;
    EXPECT_EQ(mcfx_get_stats(t, &s), MCFX_OK);
    return s;
  }

  Completions done_;
  Peers peers_;
  mcfx_transport *a_ = nullptr;
  mcfx_transport *b_ = nullptr;
};

TEST_F(BaselineTransport, WritesAndReads4KiBAnd1MiB) {
  Start();
  std::vector<uint8_t> src(1 << 20), back(1 << 20), dst(1 << 20, 0);
  Register(a_, src);
  Register(a_, back);
  Register(b_, dst);
  uint64_t user_data = 0, bytes = 0;
  for (size_t len : {size_t(4096), size_t(1) << 20}) {
    SCOPED_TRACE(len);
    Fill(src, uint8_t(len >> 10));
    std::fill(back.begin(), back.end(), 0);
    EXPECT_EQ(RunOne(Op(MCFX_OP_WRITE, src.data(), len, 1, dst.data(),
                        ++user_data)),
              MCFX_OK);
    EXPECT_EQ(std::memcmp(dst.data(), src.data(), len), 0);
    if (len < dst.size()) {
      EXPECT_EQ(dst[len], 0) << "wrote past the op";
    }
    EXPECT_EQ(RunOne(Op(MCFX_OP_READ, back.data(), len, 1, dst.data(),
                        ++user_data)),
              MCFX_OK);
    EXPECT_EQ(std::memcmp(back.data(), src.data(), len), 0);
    bytes += 2 * len;
  }
  const mcfx_stats s = Stats(a_);
  EXPECT_EQ(s.submitted, 4u);
  EXPECT_EQ(s.completed, 4u);
  EXPECT_EQ(s.failed + s.timed_out + s.canceled, 0u);
  EXPECT_EQ(s.bytes, bytes);
  EXPECT_EQ(s.in_flight, 0u);
  EXPECT_EQ(s.flagcx_transfers, 4u);
}

TEST_F(BaselineTransport, FourConcurrentSubmittersEachOpCompletesOnce) {
  Start();
  constexpr size_t kThreads = 4, kOps = 256, kLen = 4096, kBatch = 8;
  std::vector<uint8_t> src(kThreads * kOps * kLen), dst(src.size(), 0);
  Fill(src, 7);
  Register(a_, src);
  Register(b_, dst);
  std::atomic<int> submit_errors{0};
  std::vector<std::thread> threads;
  for (size_t t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (size_t i = 0; i < kOps; i += kBatch) {
        mcfx_op ops[kBatch];
        for (size_t j = 0; j < kBatch; ++j) {
          const size_t off = ((t * kOps) + i + j) * kLen;
          ops[j] = Op(MCFX_OP_WRITE, src.data() + off, kLen, 1,
                      dst.data() + off, t * kOps + i + j);
        }
        size_t accepted = 0;
        if (mcfx_submit(a_, ops, kBatch, &accepted) != MCFX_OK ||
            accepted != kBatch)
          ++submit_errors;
      }
    });
  }
  for (auto &th : threads) th.join();
  ASSERT_EQ(submit_errors.load(), 0);
  ASSERT_TRUE(done_.WaitFor(kThreads * kOps));
  for (uint64_t u = 0; u < kThreads * kOps; ++u)
    ASSERT_EQ(done_.Status(u), MCFX_OK) << "op " << u;
  EXPECT_EQ(done_.Total(), kThreads * kOps);
  EXPECT_EQ(std::memcmp(src.data(), dst.data(), src.size()), 0);
  EXPECT_EQ(Stats(a_).completed, kThreads * kOps);
}

TEST_F(BaselineTransport, BadOpStopsTheCallAndFailedOpsCompleteOnce) {
  Start();
  std::vector<uint8_t> src(8192), dst(8192), loose(64);
  Fill(src, 3);
  Register(a_, src);
  Register(b_, dst);
  EXPECT_EQ(mcfx_register(a_, src.data() + 16, 16), MCFX_E_ALREADY_REGISTERED);
  EXPECT_EQ(mcfx_unregister(a_, loose.data()), MCFX_E_NOT_FOUND);

  // The prefix rule: a bad op stops the call; the ops before it run,
  // `accepted` is the bad op's index, the ops after it do not run.
  mcfx_op bad_first[2] = {Op(MCFX_OP_WRITE, src.data(), 0, 1, dst.data(), 90),
                          Op(MCFX_OP_WRITE, src.data(), 64, 1, dst.data(), 91)};
  size_t accepted = 99;
  EXPECT_EQ(mcfx_submit(a_, bad_first, 2, &accepted), MCFX_E_INVALID_ARGUMENT);
  EXPECT_EQ(accepted, 0u);
  EXPECT_NE(LastError().find("op 0"), std::string::npos) << LastError();
  mcfx_op four[4] = {Op(MCFX_OP_WRITE, src.data(), 64, 1, dst.data(), 100),
                     Op(MCFX_OP_WRITE, src.data(), 64, 1, dst.data(), 101),
                     Op(MCFX_OP_WRITE, src.data(), 0, 1, dst.data(), 102),
                     Op(MCFX_OP_WRITE, src.data(), 64, 1, dst.data(), 103)};
  EXPECT_EQ(mcfx_submit(a_, four, 4, &accepted), MCFX_E_INVALID_ARGUMENT);
  EXPECT_EQ(accepted, 2u);
  EXPECT_NE(LastError().find("op 2"), std::string::npos) << LastError();
  ASSERT_TRUE(done_.WaitFor(2));
  EXPECT_EQ(done_.Status(100), MCFX_OK);
  EXPECT_EQ(done_.Status(101), MCFX_OK);
  four[2] = Op(MCFX_OP_WRITE, loose.data(), 64, 1, dst.data(), 102);
  four[0].user_data = 104;
  four[1].user_data = 105;
  EXPECT_EQ(mcfx_submit(a_, four, 4, &accepted), MCFX_E_NOT_REGISTERED);
  EXPECT_EQ(accepted, 2u);
  ASSERT_TRUE(done_.WaitFor(4));
  EXPECT_EQ(mcfx_submit(a_, nullptr, 1, &accepted), MCFX_E_INVALID_ARGUMENT);
  EXPECT_EQ(accepted, 0u);
  EXPECT_EQ(Stats(a_).submitted, 4u);
  EXPECT_EQ(done_.Total(), 4u) << "an op at or after a bad one ran";

  // Accepted ops that cannot run complete once with their error; a good op
  // in the same group still runs.
  EXPECT_EQ(RunOne(Op(MCFX_OP_WRITE, src.data(), 64, 7, dst.data(), 1)),
            MCFX_E_RESOLVE);
  mcfx_op group[2] = {
      Op(MCFX_OP_WRITE, src.data(), 64, 1, loose.data(), 2), // not B's memory
      Op(MCFX_OP_WRITE, src.data(), 64, 1, dst.data(), 3)};
  ASSERT_EQ(mcfx_submit(a_, group, 2, &accepted), MCFX_OK);
  ASSERT_TRUE(done_.WaitFor(7));
  EXPECT_EQ(done_.Status(2), MCFX_E_REMOTE_RANGE);
  EXPECT_EQ(done_.Status(3), MCFX_OK);
  EXPECT_EQ(done_.Total(), 7u);
  const mcfx_stats s = Stats(a_);
  EXPECT_EQ(s.submitted, 7u);
  EXPECT_EQ(s.failed, 2u);
  EXPECT_EQ(s.completed, 5u);

  char small[4];
  size_t len = 0;
  EXPECT_EQ(mcfx_local_endpoint(a_, small, sizeof small, &len),
            MCFX_E_BUFFER_TOO_SMALL);
  EXPECT_EQ(len, peers_.endpoint[0].size());
}

TEST_F(BaselineTransport, FailedTransferCompletesOkLikeUpstream) {
  // Real FlagCX's bool status call reports a failed transfer as done, and
  // upstream marked it a success; the baseline must do the same (only the
  // Rust transport uses the provider's failure-aware extension).
  Provider::Get().set_knob(FLAGCX_SW_KNOB_FAIL_OP, 1);
  Start();
  std::vector<uint8_t> src(4096), dst(4096);
  Register(a_, src);
  Register(b_, dst);
  EXPECT_EQ(RunOne(Op(MCFX_OP_WRITE, src.data(), 4096, 1, dst.data(), 1)),
            MCFX_OK);
}

TEST_F(BaselineTransport, HungTransferTimesOutAtTheOpTimeout) {
  Provider::Get().set_knob(FLAGCX_SW_KNOB_HANG_OP, 1);
  Start(/*op_timeout_ms=*/200);
  std::vector<uint8_t> src(4096), dst(4096);
  Register(a_, src);
  Register(b_, dst);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(RunOne(Op(MCFX_OP_WRITE, src.data(), 4096, 1, dst.data(), 1)),
            MCFX_E_TIMEOUT);
  EXPECT_GE(std::chrono::steady_clock::now() - t0,
            std::chrono::milliseconds(200));
  EXPECT_EQ(Stats(a_).timed_out, 1u);
}

TEST_F(BaselineTransport, DestroyWithOpsInFlightCompletesEachOpOnce) {
  // Transfers report done only after 2 s, so destroy (which cancels what is
  // pending at once) finds them pending even if this thread stalls.
  Provider::Get().set_knob(FLAGCX_SW_KNOB_LATENCY_NS, 2000000000);
  Start();
  constexpr size_t kOps = 64, kLen = 1024;
  std::vector<uint8_t> src(kOps * kLen), dst(kOps * kLen);
  Register(a_, src);
  Register(b_, dst);
  for (size_t i = 0; i < kOps; i += 8) {
    mcfx_op ops[8];
    for (size_t j = 0; j < 8; ++j)
      ops[j] = Op(MCFX_OP_WRITE, src.data() + (i + j) * kLen, kLen, 1,
                  dst.data() + (i + j) * kLen, i + j);
    ASSERT_EQ(mcfx_submit(a_, ops, 8, nullptr), MCFX_OK);
  }
  DestroyBoth();
  // Every op completed exactly once before destroy returned.
  EXPECT_EQ(done_.Total(), kOps);
  size_t canceled = 0;
  for (uint64_t u = 0; u < kOps; ++u) {
    const int s = done_.Status(u);
    EXPECT_TRUE(s == MCFX_OK || s == MCFX_E_CANCELED) << "op " << u << ": " << s;
    canceled += s == MCFX_E_CANCELED;
  }
  EXPECT_GT(canceled, 0u);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(done_.Total(), kOps) << "a callback ran after destroy returned";
}

} // namespace
