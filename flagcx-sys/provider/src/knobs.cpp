// Test knobs (from the environment, changeable at run time) and misuse
// accounting.
//
// Invariants:
// - Each environment variable is read once, at the first call that needs a
//   knob (a function-local static: no static-initialization-order issue).
// - FAIL_OP / HANG_OP = N select the transfer whose sequence number equals
//   "issued count when the knob was set" + N (from the environment: N); the
//   target is one atomic, so a concurrent submit sees the old or the new one.
// - Violation counters are constant-initialized atomics.

#include <cinttypes>
#include <cstdio>
#include <cstdlib>

#include "internal.h"

namespace flagcx_sw {
namespace {

// The knobs of flagcx_sw.h's enum, by number.
constexpr int kKnobCount = FLAGCX_SW_KNOB_COUNT;
static_assert(kKnobCount == 9, "a knob was added to flagcx_sw.h: update this table");

const char *const kEnvNames[kKnobCount] = {
    "FLAGCX_SW_LATENCY_NS",       "FLAGCX_SW_FAIL_OP",
    "FLAGCX_SW_HANG_OP",          "FLAGCX_SW_CONNECT_DELAY_MS",
    "FLAGCX_SW_REFUSE_CONNECT",   "FLAGCX_SW_CONNECT_TIMEOUT_MS",
    "FLAGCX_SW_NIC_GBPS",         "FLAGCX_SW_NIC_LATENCY_NS",
    "FLAGCX_SW_NEW_ID_ON_REREGISTER",
};
const uint64_t kDefaults[kKnobCount] = {0, 0, 0, 0, 0, 10000, 0, 0, 0};

const char *const kViolationNames[FLAGCX_SW_VIOLATION_KINDS] = {
    "REPEATED_POLL", "CONCURRENT_POLL", "UNKNOWN_POLL"};
constexpr uint64_t kViolationLogLimit = 10;

std::atomic<uint64_t> g_issued{0};
std::atomic<uint64_t> g_violations[FLAGCX_SW_VIOLATION_KINDS] = {};
std::atomic<uint64_t> g_violationsLogged{0};

struct Knobs {
  std::atomic<uint64_t> value[kKnobCount];
  // Absolute sequence numbers for FAIL_OP / HANG_OP; 0 = off.
  std::atomic<uint64_t> failTarget{0};
  std::atomic<uint64_t> hangTarget{0};

  Knobs() {
    for (int i = 0; i < kKnobCount; ++i)
      value[i].store(fromEnv(i), std::memory_order_relaxed);
    // The environment was "set" at process start: count from transfer 1,
    // even if a submit already took its sequence number before this ran.
    failTarget.store(value[FLAGCX_SW_KNOB_FAIL_OP].load());
    hangTarget.store(value[FLAGCX_SW_KNOB_HANG_OP].load());
  }

  static uint64_t fromEnv(int i) {
    const char *s = std::getenv(kEnvNames[i]);
    if (s == nullptr || *s == '\0') return kDefaults[i];
    char *end = nullptr;
    unsigned long long v = std::strtoull(s, &end, 0);
    if (*end != '\0') {
      std::fprintf(stderr, "[flagcx-sw] ignoring %s=%s (not a number)\n",
                   kEnvNames[i], s);
      return kDefaults[i];
    }
    return v;
  }

  void retarget(int which) {
    uint64_t n = value[which].load();
    uint64_t target = n == 0 ? 0 : g_issued.load() + n;
    (which == FLAGCX_SW_KNOB_FAIL_OP ? failTarget : hangTarget).store(target);
  }
};

Knobs &knobs() {
  static Knobs *k = new Knobs(); // never freed: usable until process exit
  return *k;
}

bool validKnob(int which) { return which >= 0 && which < kKnobCount; }

} // namespace

uint64_t knob(int which) {
  return validKnob(which) ? knobs().value[which].load(std::memory_order_relaxed)
                          : 0;
}

bool faultSelected(int which, uint64_t seq) {
  Knobs &k = knobs();
  auto &target = which == FLAGCX_SW_KNOB_FAIL_OP ? k.failTarget : k.hangTarget;
  return target.load(std::memory_order_relaxed) == seq;
}

std::atomic<uint64_t> &issuedCounter() { return g_issued; }

void recordViolation(int kind, uint64_t id) {
  g_violations[kind].fetch_add(1, std::memory_order_relaxed);
  // Log only the first few so a runaway poller cannot flood stderr.
  if (g_violationsLogged.fetch_add(1, std::memory_order_relaxed) <
      kViolationLogLimit)
    std::fprintf(stderr, "[flagcx-sw] violation %s: transfer id 0x%016" PRIx64
                         "\n", kViolationNames[kind], id);
}

} // namespace flagcx_sw

using namespace flagcx_sw;

extern "C" {

FLAGCX_SW_API int flagcxSwSetKnob(int which, uint64_t value) {
  try {
    if (!validKnob(which)) return -1;
    Knobs &k = knobs();
    k.value[which].store(value);
    if (which == FLAGCX_SW_KNOB_FAIL_OP || which == FLAGCX_SW_KNOB_HANG_OP)
      k.retarget(which);
    return 0;
  } catch (...) {
    return -1;
  }
}

FLAGCX_SW_API uint64_t flagcxSwGetKnob(int which) {
  try {
    return knob(which);
  } catch (...) {
    return 0;
  }
}

FLAGCX_SW_API uint64_t flagcxSwViolations(int kind) {
  if (kind < 0 || kind >= FLAGCX_SW_VIOLATION_KINDS) return 0;
  return g_violations[kind].load();
}

FLAGCX_SW_API uint64_t flagcxSwViolationsTotal(void) {
  uint64_t total = 0;
  for (auto &v : g_violations) total += v.load();
  return total;
}

FLAGCX_SW_API void flagcxSwResetViolations(void) {
  for (auto &v : g_violations) v.store(0);
  g_violationsLogged.store(0);
}

FLAGCX_SW_API uint64_t flagcxSwTransfersIssued(void) { return g_issued.load(); }

} // extern "C"
