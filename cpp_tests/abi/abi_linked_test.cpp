// The C ABI from C++, linked directly against libmooncake_flagcx.so.

#include <atomic>
#include <cstddef>
#include <thread>

#include "abi_fixture.h"

using namespace mcfx_test;

namespace {

const mcfx_api_v1 *api() { return mcfx_get_api_v1(); }

struct Pair {
  Pair() : a(api()), b(api()), src(1 << 20), dst(1 << 20) {
    a.knows(1, b);
    a.reg(src);
    b.reg(dst);
  }
  Node a, b;
  Buffer src, dst;
};

} // namespace

TEST(AbiLinked, VersionAndNameArePlainExports) {
  EXPECT_EQ(mcfx_abi_version(), static_cast<uint32_t>(MCFX_ABI_VERSION));
  EXPECT_STREQ(mcfx_impl_name(), "rust");
  EXPECT_STREQ(mcfx_strerror(MCFX_E_QUEUE_FULL), "submission queue is full");
  EXPECT_STREQ(mcfx_strerror(12345), "unknown status code");
  EXPECT_EQ(api()->abi_version, 1u);
  EXPECT_EQ(api()->struct_size, sizeof(mcfx_api_v1));
  EXPECT_EQ(api()->submit, &mcfx_submit);
}

TEST(AbiLinked, WriteAndReadKeepDataIntact) { check_write_read_integrity(api()); }

// The prefix rule: a bad op stops the call; the ops before it are queued and
// complete, *accepted is the bad op's index, the ops after it never run.
TEST(AbiLinked, ABadOpStopsTheCallAndOnlyThePrefixIsQueued) {
  Pair p;
  Buffer unregistered(64);
  const mcfx_op good = make_op(MCFX_OP_WRITE, p.src, 0, 64, 1, p.dst.addr(), 1);
  struct Case {
    mcfx_op op;
    mcfx_status want;
  } cases[] = {
      {make_op(MCFX_OP_WRITE, p.src, 0, 0, 1, p.dst.addr(), 2), MCFX_E_INVALID_ARGUMENT},
      {make_op(9, p.src, 0, 64, 1, p.dst.addr(), 2), MCFX_E_INVALID_ARGUMENT},
      {make_op(MCFX_OP_WRITE, unregistered, 0, 64, 1, p.dst.addr(), 2), MCFX_E_NOT_REGISTERED},
      {make_op(MCFX_OP_WRITE, p.src, (1 << 20) - 8, 64, 1, p.dst.addr(), 2),
       MCFX_E_NOT_REGISTERED},
      {make_op(MCFX_OP_WRITE, p.src, 0, 64, 1, UINT64_MAX - 8, 2), MCFX_E_OVERFLOW},
  };
  uint64_t ud = 100;
  size_t queued = 0;
  for (const Case &c : cases) {
    size_t accepted = 99;
    EXPECT_EQ(p.a.submit({c.op, good}, &accepted), c.want) << p.a.last_error();
    EXPECT_EQ(accepted, 0u);
    EXPECT_NE(p.a.last_error().find("op 0"), std::string::npos) << p.a.last_error();
    mcfx_op ops[4] = {good, good, c.op, good};
    ops[0].user_data = ud++;
    ops[1].user_data = ud++;
    ops[2].user_data = 9000;
    ops[3].user_data = 9001;
    EXPECT_EQ(p.a.submit({ops[0], ops[1], ops[2], ops[3]}, &accepted), c.want)
        << p.a.last_error();
    EXPECT_EQ(accepted, 2u);
    EXPECT_NE(p.a.last_error().find("op 2"), std::string::npos) << p.a.last_error();
    queued += 2;
    EXPECT_EQ(p.a.done.wait_one(ops[0].user_data), MCFX_OK);
    EXPECT_EQ(p.a.done.wait_one(ops[1].user_data), MCFX_OK);
  }
  ASSERT_TRUE(p.a.done.wait_for(queued));
  EXPECT_EQ(p.a.done.count(), queued) << "an op at or after a bad one completed";
  mcfx_stats s;
  std::memset(&s, 0, sizeof s);
  s.struct_size = sizeof s;
  ASSERT_EQ(mcfx_get_stats(p.a.t, &s), MCFX_OK);
  EXPECT_EQ(s.submitted, queued);
}

TEST(AbiLinked, NullArgumentsAreRefused) {
  mcfx_transport *t = nullptr;
  EXPECT_EQ(mcfx_create(nullptr, &t), MCFX_E_INVALID_ARGUMENT);
  EXPECT_EQ(mcfx_destroy(nullptr), MCFX_OK);
  EXPECT_EQ(mcfx_submit(nullptr, nullptr, 0, nullptr), MCFX_E_INVALID_ARGUMENT);
  EXPECT_EQ(mcfx_register(nullptr, nullptr, 1), MCFX_E_INVALID_ARGUMENT);
  EXPECT_EQ(mcfx_get_stats(nullptr, nullptr), MCFX_E_INVALID_ARGUMENT);
  uint64_t completed = 7;
  EXPECT_EQ(mcfx_progress(nullptr, &completed), MCFX_E_INVALID_ARGUMENT);
  EXPECT_EQ(completed, 0u);
  char msg[256];
  EXPECT_GT(mcfx_last_error(msg, sizeof msg), 0u);
  EXPECT_NE(std::string(msg).find("NULL"), std::string::npos) << msg;
}

TEST(AbiLinked, BadConfigIsRefused) {
  Node wrong_version(api(), [](mcfx_config *c) { c->abi_version = 7; });
  EXPECT_EQ(wrong_version.status, MCFX_E_BAD_CONFIG);
  Node too_small(api(), [](mcfx_config *c) { c->struct_size = 4; });
  EXPECT_EQ(too_small.status, MCFX_E_BAD_CONFIG);
  Node no_callback(api(), [](mcfx_config *c) { c->on_complete = nullptr; });
  EXPECT_EQ(no_callback.status, MCFX_E_INVALID_ARGUMENT);
}

TEST(AbiLinked, FourConcurrentSubmittersAllCompleteIntact) {
  Pair p;
  Buffer src(4 * 1000 * 256), dst(4 * 1000 * 256);
  p.a.reg(src);
  p.b.reg(dst);
  src.fill(3);
  std::vector<std::thread> threads;
  for (uint64_t t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (uint64_t i = 0; i < 1000; ++i) {
        size_t off = (t * 1000 + i) * 256;
        mcfx_op op = make_op(MCFX_OP_WRITE, src, off, 256, 1, dst.addr() + off, t * 1000 + i);
        size_t accepted = 0;
        while (mcfx_submit(p.a.t, &op, 1, &accepted) == MCFX_E_QUEUE_FULL) std::this_thread::yield();
        EXPECT_EQ(accepted, 1u);
      }
    });
  }
  for (auto &t : threads) t.join();
  ASSERT_TRUE(p.a.done.wait_for(4000));
  EXPECT_EQ(p.a.done.exactly_once()[MCFX_OK], 4000u);
  EXPECT_EQ(std::memcmp(src.data, dst.data, src.len), 0);
}

// Threads that poll with the table's `progress` (as the Mooncake adapter's
// getTransferStatus does) run passes beside the progress thread: every op
// completes once, with its bytes, and the counts the calls report add up to
// no more than the ops.
TEST(AbiLinked, PollingThreadsRunProgressPassesAndEveryOpCompletesOnce) {
  ASSERT_GE(api()->struct_size, offsetof(mcfx_api_v1, progress) + sizeof(api()->progress));
  Pair p;
  constexpr uint64_t kThreads = 4, kOps = 1000, kLen = 256;
  Buffer src(kThreads * kOps * kLen), dst(kThreads * kOps * kLen);
  p.a.reg(src);
  p.b.reg(dst);
  src.fill(5);
  std::atomic<uint64_t> by_callers{0};
  std::vector<std::thread> threads;
  for (uint64_t t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (uint64_t i = 0; i < kOps; ++i) {
        const size_t off = (t * kOps + i) * kLen;
        mcfx_op op = make_op(MCFX_OP_WRITE, src, off, kLen, 1, dst.addr() + off, t * kOps + i);
        size_t accepted = 0;
        uint64_t n = 0;
        while (mcfx_submit(p.a.t, &op, 1, &accepted) == MCFX_E_QUEUE_FULL) {
          EXPECT_EQ(api()->progress(p.a.t, &n), MCFX_OK);
          by_callers += n;
        }
        EXPECT_EQ(accepted, 1u);
        EXPECT_EQ(api()->progress(p.a.t, &n), MCFX_OK);
        by_callers += n;
      }
    });
  }
  for (auto &t : threads) t.join();
  // Poll until everything completed (bounded by the fixture's limit).
  const auto until = Clock::now() + kLimit;
  while (p.a.done.count() < kThreads * kOps && Clock::now() < until) {
    uint64_t n = 0;
    EXPECT_EQ(api()->progress(p.a.t, &n), MCFX_OK);
    by_callers += n;
  }
  ASSERT_TRUE(p.a.done.wait_for(kThreads * kOps));
  EXPECT_EQ(p.a.done.exactly_once()[MCFX_OK], kThreads * kOps);
  EXPECT_LE(by_callers.load(), kThreads * kOps);
  EXPECT_EQ(std::memcmp(src.data, dst.data, src.len), 0);
}

TEST(AbiLinked, UnknownPeerCompletesWithResolveError) {
  Pair p;
  size_t accepted = 0;
  ASSERT_EQ(p.a.submit({make_op(MCFX_OP_WRITE, p.src, 0, 64, 42, p.dst.addr(), 1)}, &accepted),
            MCFX_OK);
  EXPECT_EQ(p.a.done.wait_one(1), MCFX_E_RESOLVE);
}

TEST(AbiLinked, RemoteRangeOutsidePeerMemoryCompletesWithRemoteRangeError) {
  Pair p;
  size_t accepted = 0;
  ASSERT_EQ(p.a.submit({make_op(MCFX_OP_WRITE, p.src, 0, 64, 1, p.dst.addr() + (1 << 20), 1)},
                       &accepted),
            MCFX_OK);
  EXPECT_EQ(p.a.done.wait_one(1), MCFX_E_REMOTE_RANGE);
}

TEST(AbiLinked, DestroyWithOpsInFlightCompletesEachOnce) {
  Pair p;
  std::vector<mcfx_op> ops;
  for (uint64_t i = 0; i < 3000; ++i)
    ops.push_back(make_op(MCFX_OP_WRITE, p.src, (i % 200) * 4096, 4096, 1,
                          p.dst.addr() + (i % 200) * 4096, i));
  size_t accepted = 0;
  ASSERT_EQ(p.a.submit(ops, &accepted), MCFX_OK);
  ASSERT_EQ(p.a.destroy(), MCFX_OK);
  EXPECT_EQ(p.a.done.count(), accepted);
  p.a.done.exactly_once();
  // A second destroy of the same (now freed) handle is not possible through
  // Node; NULL stays a no-op.
  EXPECT_EQ(mcfx_destroy(nullptr), MCFX_OK);
}

TEST(AbiLinked, DoubleUnregisterIsNotFound) {
  Pair p;
  Buffer extra(4096);
  p.a.reg(extra);
  EXPECT_EQ(mcfx_unregister(p.a.t, extra.data), MCFX_OK);
  EXPECT_EQ(mcfx_unregister(p.a.t, extra.data), MCFX_E_NOT_FOUND);
}

namespace {

// What the log callback of LogCallbackGetsTheFailedOpWarning received.
struct LogLines {
  std::mutex mu;
  std::condition_variable changed;
  std::vector<std::pair<mcfx_log_level, std::string>> lines;

  static void Log(void *ctx, mcfx_log_level level, const char *message) {
    auto *self = static_cast<LogLines *>(ctx);
    std::lock_guard<std::mutex> lock(self->mu);
    self->lines.emplace_back(level, message);
    self->changed.notify_all();
  }
  // Waits (at most kLimit) for a line containing `word`.
  bool wait_for(const std::string &word, mcfx_log_level *level) {
    std::unique_lock<std::mutex> lock(mu);
    return changed.wait_for(lock, kLimit, [&] {
      for (auto &l : lines) {
        if (l.second.find(word) != std::string::npos) {
          *level = l.first;
          return true;
        }
      }
      return false;
    });
  }
  size_t count() {
    std::lock_guard<std::mutex> lock(mu);
    return lines.size();
  }
};

LogLines g_log;

} // namespace

TEST(AbiLinked, LogCallbackGetsTheFailedOpWarning) {
  size_t after_destroy = 0;
  {
    Node a(api(), [](mcfx_config *c) {
      c->log = LogLines::Log;
      c->log_ctx = &g_log;
      c->log_level = MCFX_LOG_WARN;
    });
    ASSERT_EQ(a.status, MCFX_OK) << a.last_error();
    Buffer src(64);
    a.reg(src);
    size_t accepted = 0;
    // Peer 42 is unknown to the resolver: the op fails, with a warning.
    ASSERT_EQ(a.submit({make_op(MCFX_OP_WRITE, src, 0, 64, 42, 0x1000, 1)}, &accepted), MCFX_OK);
    EXPECT_EQ(a.done.wait_one(1), MCFX_E_RESOLVE);
    mcfx_log_level level = MCFX_LOG_TRACE;
    ASSERT_TRUE(g_log.wait_for("op failed", &level));
    EXPECT_EQ(level, MCFX_LOG_WARN);
    EXPECT_EQ(a.destroy(), MCFX_OK);
    after_destroy = g_log.count();
  }
  // Another transport's failure reaches no destroyed transport's callback.
  Node b(api());
  Buffer src(64);
  b.reg(src);
  size_t accepted = 0;
  ASSERT_EQ(b.submit({make_op(MCFX_OP_WRITE, src, 0, 64, 42, 0x1000, 2)}, &accepted), MCFX_OK);
  EXPECT_EQ(b.done.wait_one(2), MCFX_E_RESOLVE);
  EXPECT_EQ(b.destroy(), MCFX_OK);
  EXPECT_EQ(g_log.count(), after_destroy);
}

TEST(AbiLinked, ConfigInitWritesTheDefaultsAndAnOlderConfigStillWorks) {
  mcfx_config c;
  std::memset(&c, 0xff, sizeof c);
  mcfx_config_init(&c, sizeof c);
  EXPECT_EQ(c.struct_size, sizeof c);
  EXPECT_EQ(c.abi_version, uint32_t(MCFX_ABI_VERSION));
  EXPECT_EQ(c.queue_capacity, uint32_t(MCFX_DEFAULT_QUEUE_CAPACITY));
  EXPECT_EQ(c.op_timeout_ms, 30000u);
  EXPECT_EQ(c.connect_timeout_ms, 10000u);
  EXPECT_EQ(c.max_slice_bytes, uint64_t(1) << 30);
  EXPECT_EQ(c.log_level, uint32_t(MCFX_LOG_WARN));
  EXPECT_EQ(c.log, nullptr);
  // A caller of the first v1 layout (up to flags) and of version 1.
  Node old(api(), [](mcfx_config *c) {
    c->struct_size = offsetof(mcfx_config, log_level);
    c->abi_version = 1;
  });
  EXPECT_EQ(old.status, MCFX_OK) << old.last_error();
}
