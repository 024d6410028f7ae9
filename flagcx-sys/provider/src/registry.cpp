// The process-global memory-region registry (FlagCX registers per process,
// not per engine).
//
// Invariants:
// - By default at most one MR per base address; registering a known base
//   again returns its id (no refcount) and adopts the new size; its rkey
//   never changes. With FLAGCX_SW_NEW_ID_ON_REREGISTER set, registering a
//   known base makes another MR of it (a new id and rkey, the new size) and
//   leaves the earlier ones registered until their own ids are destroyed, as
//   ibv_reg_mr does for memory registered twice (a FlagCX built on it hands
//   out a new id per call); a transport that keeps a stale id or forgets one
//   then shows (the forgotten MR stays open to peers).
// - Ids come from one counter starting at 1 and are never reused, so an MR
//   that is destroyed and registered again gets a new id and a new rkey:
//   descriptors built for the old registration stop working.
// - rkeys are nonzero and mix in the pid, so two processes that register the
//   same id hand out different keys.
// - byId and byBase always describe the same set of MRs (one shared_mutex);
//   byBase lists a base's MRs oldest first, never an empty list.
// - Every MR in byId holds its own key-table slot whose word is its id
//   (keys.cpp): published before it can appear in a snapshot, revoked
//   before it leaves byId. The key functions run under the exclusive lock.

#include <unistd.h>

#include <shared_mutex>

#include "internal.h"

namespace flagcx_sw {
namespace {

// A hasher of our own keeps this map's template instantiation hidden
// (an all-builtin-types one would be exported as a weak symbol).
// One MR of a base. A type of ours, so the vector's template instances stay
// hidden like the maps' (a std::vector<uint64_t> one would be exported).
struct BaseMr {
  FlagcxP2pMr id;
};

constexpr int kKnobNewIdOnReregister = FLAGCX_SW_KNOB_NEW_ID_ON_REREGISTER;

struct BaseHash {
  size_t operator()(uint64_t base) const { return std::hash<uint64_t>()(base); }
};

struct Registry {
  std::shared_mutex mu;
  std::unordered_map<FlagcxP2pMr, Region> byId;
  std::unordered_map<uint64_t, std::vector<BaseMr>, BaseHash> byBase;
  FlagcxP2pMr nextId = 1;
};

Registry &registry() {
  static Registry *r = new Registry(); // never freed: see internal.h
  return *r;
}

uint32_t makeRkey(FlagcxP2pMr id) {
  // splitmix64 finalizer over (pid, id): cheap, well spread.
  uint64_t x = (uint64_t(uint32_t(getpid())) << 32) ^ id;
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  x ^= x >> 31;
  uint32_t key = uint32_t(x) ^ uint32_t(x >> 32);
  return key == 0 ? 1 : key;
}

// Makes sure this process has a key table; a new one (first use, or the
// first call since a fork) gets every MR the registry holds. Exclusive lock.
bool keysReady(Registry &r) {
  int k = keysPrepare();
  if (k == 1)
    for (const auto &kv : r.byId) keyPublish(kv.second.slot, kv.second.id);
  return k >= 0;
}

} // namespace

int regAdd(uintptr_t addr, size_t size, FlagcxP2pMr *id) {
  if (addr == 0 || size == 0) return -1;
  Registry &r = registry();
  std::unique_lock<std::shared_mutex> lock(r.mu);
  auto known = r.byBase.find(addr);
  if (known != r.byBase.end() && knob(kKnobNewIdOnReregister) == 0) {
    FlagcxP2pMr newest = known->second.back().id;
    r.byId[newest].size = size;
    *id = newest;
    return 0;
  }
  FlagcxP2pMr fresh = r.nextId;
  uint32_t slot = 0;
  if (!keysReady(r) || !keySlotTake(&slot)) return -1;
  try {
    r.byId.emplace(fresh, Region{addr, size, makeRkey(fresh), slot, fresh});
    std::vector<BaseMr> &mrs = r.byBase[addr];
    try {
      mrs.push_back(BaseMr{fresh});
    } catch (...) {
      if (mrs.empty()) r.byBase.erase(addr);
      throw;
    }
  } catch (...) {
    r.byId.erase(fresh); // keep the two maps consistent
    keySlotGive(slot);
    throw;
  }
  keyPublish(slot, fresh);
  r.nextId++;
  *id = fresh;
  return 0;
}

void regRemove(FlagcxP2pMr id) {
  Registry &r = registry();
  std::unique_lock<std::shared_mutex> lock(r.mu);
  auto it = r.byId.find(id);
  if (it == r.byId.end()) return;
  keysReady(r); // after a fork: revoke in this process's table
  keyRevoke(it->second.slot);
  keySlotGive(it->second.slot);
  auto base = r.byBase.find(it->second.base);
  if (base != r.byBase.end()) {
    std::vector<BaseMr> &mrs = base->second;
    for (auto m = mrs.begin(); m != mrs.end(); ++m) {
      if (m->id == id) {
        mrs.erase(m);
        break;
      }
    }
    if (mrs.empty()) r.byBase.erase(base);
  }
  r.byId.erase(it);
}

void regClear() {
  Registry &r = registry();
  std::unique_lock<std::shared_mutex> lock(r.mu);
  keysReady(r);
  for (const auto &kv : r.byId) {
    keyRevoke(kv.second.slot);
    keySlotGive(kv.second.slot);
  }
  r.byId.clear();
  r.byBase.clear();
}

std::vector<Region> regSnapshot(int *keyFd) {
  Registry &r = registry();
  // Exclusive: a process forked since its last registration makes its own
  // table here, so peers never learn the parent's. (A lock_guard: a
  // unique_lock here would put its unlock() in the dynamic symbol table.)
  std::lock_guard<std::shared_mutex> lock(r.mu);
  keysReady(r);
  *keyFd = keysFd();
  std::vector<Region> out;
  out.reserve(r.byId.size());
  for (const auto &kv : r.byId) out.push_back(kv.second);
  return out;
}

bool regCheckLocal(const FlagcxP2pMr *ids, void *const *addrs,
                   const size_t *sizes, size_t n) {
  Registry &r = registry();
  std::shared_lock<std::shared_mutex> lock(r.mu);
  for (size_t i = 0; i < n; ++i) {
    auto it = r.byId.find(ids[i]);
    if (it == r.byId.end() ||
        !contains(it->second.base, it->second.size,
                  reinterpret_cast<uintptr_t>(addrs[i]), sizes[i]))
      return false;
  }
  return true;
}

bool regCheckLive(const Region *const *regions, const uint64_t *addrs,
                  const size_t *lens, size_t n) {
  Registry &r = registry();
  std::shared_lock<std::shared_mutex> lock(r.mu);
  for (size_t i = 0; i < n; ++i) {
    auto base = r.byBase.find(regions[i]->base);
    if (base == r.byBase.end()) return false;
    bool live = false;
    for (const BaseMr &m : base->second) {
      const Region &mr = r.byId.find(m.id)->second;
      if (mr.rkey == regions[i]->rkey &&
          contains(mr.base, mr.size, addrs[i], lens[i])) {
        live = true;
        break;
      }
    }
    if (!live) return false;
  }
  return true;
}

} // namespace flagcx_sw

using namespace flagcx_sw;

FLAGCX_SW_API int flagcxP2pEngineReg(FlagcxP2pEngine *engine, uintptr_t data,
                                     size_t size, FlagcxP2pMr &mrId) {
  try {
    if (engine == nullptr) return -1;
    return regAdd(data, size, &mrId);
  } catch (...) {
    return -1;
  }
}

FLAGCX_SW_API void flagcxP2pEngineMrDestroy(FlagcxP2pEngine * /*engine*/,
                                            FlagcxP2pMr mr) {
  try {
    regRemove(mr); // the registry is process-wide: the engine does not matter
  } catch (...) {
  }
}
