// Shared fixture of the C ABI tests: a transport driven through a
// mcfx_api_v1 table (from the linked library or from dlopen), with a
// completion log that proves each op completed exactly once.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "mooncake_flagcx.h"

namespace mcfx_test {

using Clock = std::chrono::steady_clock;
constexpr auto kLimit = std::chrono::seconds(60);

// Every completion, per user_data.
class Completions {
public:
  void record(uint64_t user_data, mcfx_status status) {
    std::lock_guard<std::mutex> lock(mu_);
    seen_[user_data].push_back(status);
    changed_.notify_all();
  }

  // Waits until `n` distinct ops completed (fails the test after kLimit).
  bool wait_for(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    return changed_.wait_for(lock, kLimit, [&] { return seen_.size() >= n; });
  }

  mcfx_status wait_one(uint64_t user_data) {
    std::unique_lock<std::mutex> lock(mu_);
    changed_.wait_for(lock, kLimit, [&] { return seen_.count(user_data) > 0; });
    auto it = seen_.find(user_data);
    if (it == seen_.end() || it->second.size() != 1) return MCFX_E_INTERNAL;
    return it->second[0];
  }

  // Status -> count; adds a test failure for any op completed twice.
  std::map<int, size_t> exactly_once() {
    std::lock_guard<std::mutex> lock(mu_);
    std::map<int, size_t> by_status;
    for (auto &kv : seen_) {
      EXPECT_EQ(kv.second.size(), 1u) << "op " << kv.first << " completed " << kv.second.size()
                                      << " times";
      by_status[kv.second.front()]++;
    }
    return by_status;
  }

  size_t count() {
    std::lock_guard<std::mutex> lock(mu_);
    return seen_.size();
  }

private:
  std::mutex mu_;
  std::condition_variable changed_;
  std::map<uint64_t, std::vector<mcfx_status>> seen_;
};

// Peer id -> endpoint for the resolver callback.
class Directory {
public:
  void insert(uint64_t peer, const std::string &endpoint) {
    std::lock_guard<std::mutex> lock(mu_);
    endpoints_[peer] = endpoint;
  }
  bool lookup(uint64_t peer, std::string *out) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = endpoints_.find(peer);
    if (it == endpoints_.end()) return false;
    *out = it->second;
    return true;
  }

private:
  std::mutex mu_;
  std::map<uint64_t, std::string> endpoints_;
};

inline void on_complete(void *ctx, uint64_t user_data, mcfx_status status) {
  static_cast<Completions *>(ctx)->record(user_data, status);
}

inline int32_t resolve(void *ctx, uint64_t peer, char *buf, size_t cap) {
  std::string ep;
  if (!static_cast<Directory *>(ctx)->lookup(peer, &ep) || ep.size() >= cap) return -1;
  std::memcpy(buf, ep.c_str(), ep.size() + 1);
  return 0;
}

// A page-aligned buffer.
struct Buffer {
  explicit Buffer(size_t n) : len(n) {
    void *p = nullptr;
    if (posix_memalign(&p, 4096, n) != 0) std::abort();
    std::memset(p, 0, n);
    data = static_cast<uint8_t *>(p);
  }
  ~Buffer() { std::free(data); }
  Buffer(const Buffer &) = delete;
  Buffer &operator=(const Buffer &) = delete;
  uint64_t addr() const { return reinterpret_cast<uintptr_t>(data); }
  void fill(uint64_t seed) {
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < len; ++i) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      data[i] = static_cast<uint8_t>(x);
    }
  }
  uint8_t *data;
  size_t len;
};

// One transport with its callback state, through an API table.
class Node {
public:
  explicit Node(const mcfx_api_v1 *api, void (*tweak)(mcfx_config *) = nullptr) : api_(api) {
    mcfx_config cfg;
    api_->config_init(&cfg, sizeof cfg);
    cfg.on_complete = on_complete;
    cfg.complete_ctx = &done;
    cfg.resolve = resolve;
    cfg.resolve_ctx = &dir;
    if (tweak) tweak(&cfg);
    status = api_->create(&cfg, &t);
    if (status != MCFX_OK) return;
    char buf[128];
    size_t len = 0;
    EXPECT_EQ(api_->local_endpoint(t, buf, sizeof buf, &len), MCFX_OK);
    endpoint.assign(buf, len);
  }
  ~Node() { destroy(); }
  Node(const Node &) = delete;
  Node &operator=(const Node &) = delete;

  mcfx_status destroy() {
    mcfx_transport *x = t;
    t = nullptr;
    return x ? api_->destroy(x) : MCFX_OK;
  }
  void knows(uint64_t peer, const Node &other) { dir.insert(peer, other.endpoint); }
  void reg(const Buffer &b) {
    ASSERT_EQ(api_->register_memory(t, b.data, b.len), MCFX_OK) << last_error();
  }
  mcfx_status submit(const std::vector<mcfx_op> &ops, size_t *accepted) {
    return api_->submit(t, ops.data(), ops.size(), accepted);
  }
  std::string last_error() const {
    char buf[512];
    api_->last_error(buf, sizeof buf);
    return buf;
  }

  const mcfx_api_v1 *api_;
  Completions done;
  Directory dir;
  mcfx_transport *t = nullptr;
  mcfx_status status = MCFX_E_INTERNAL;
  std::string endpoint;
};

inline mcfx_op make_op(uint32_t opcode, const Buffer &local, size_t off, uint64_t len,
                       uint64_t peer, uint64_t remote, uint64_t user_data) {
  mcfx_op op;
  std::memset(&op, 0, sizeof op);
  op.opcode = opcode;
  op.local_addr = local.data + off;
  op.length = len;
  op.peer_id = peer;
  op.remote_addr = remote;
  op.user_data = user_data;
  return op;
}

// The behaviour every implementation of the ABI must show, run by both the
// linked and the dlopen suites.
inline void check_write_read_integrity(const mcfx_api_v1 *api) {
  // Buffers first: destroyed last, after the transports that use them, even
  // when an assertion returns early with a transfer still running.
  const size_t kMax = 8 << 20;
  Buffer src(kMax), back(kMax), dst(kMax);
  Node a(api), b(api);
  ASSERT_EQ(a.status, MCFX_OK);
  ASSERT_EQ(b.status, MCFX_OK);
  a.knows(1, b);
  a.reg(src);
  a.reg(back);
  b.reg(dst);
  uint64_t ud = 0;
  for (size_t len : {size_t(1), size_t(4096), size_t(65537), kMax}) {
    src.fill(len);
    size_t accepted = 0;
    ASSERT_EQ(a.submit({make_op(MCFX_OP_WRITE, src, 0, len, 1, dst.addr(), ++ud)}, &accepted),
              MCFX_OK);
    ASSERT_EQ(a.done.wait_one(ud), MCFX_OK) << "write " << len;
    ASSERT_EQ(std::memcmp(src.data, dst.data, len), 0) << "write " << len;
    ASSERT_EQ(a.submit({make_op(MCFX_OP_READ, back, 0, len, 1, dst.addr(), ++ud)}, &accepted),
              MCFX_OK);
    ASSERT_EQ(a.done.wait_one(ud), MCFX_OK) << "read " << len;
    ASSERT_EQ(std::memcmp(src.data, back.data, len), 0) << "read " << len;
  }
  a.done.exactly_once();
}

} // namespace mcfx_test
