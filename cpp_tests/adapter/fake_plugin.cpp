// A scripted stand-in for the mooncake-flagcx plugin, for the adapter tests.
//
// Built several times with different definitions:
//   FAKE_ABI_VERSION     the abi_version its table reports (default: ours)
//   FAKE_TABLE_SIZE      the struct_size its table reports (default: full)
//   FAKE_NO_ENTRY        the table under another name: no mcfx_get_api_v1
// Its transport accepts at most FAKE_ACCEPT_LIMIT ops per submit (the rest:
// MCFX_E_QUEUE_FULL; the test can change the limit with
// fake_mcfx_set_accept_limit), takes an op of FAKE_BAD_LENGTH bytes for a bad op
// (MCFX_E_INVALID_ARGUMENT, the ABI's prefix rule: the ops before it are
// queued, *accepted is its index), counts its submit calls
// (fake_mcfx_submit_calls) and completes accepted ops only when the test calls
// fake_mcfx_complete_pending, or with MCFX_E_CANCELED on destroy. It moves
// no data and never calls the resolver.
#include <atomic>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "mooncake_flagcx.h"

#ifndef FAKE_ABI_VERSION
#define FAKE_ABI_VERSION MCFX_ABI_VERSION
#endif
#ifndef FAKE_TABLE_SIZE
#define FAKE_TABLE_SIZE sizeof(mcfx_api_v1)
#endif
#ifdef FAKE_NO_ENTRY
#define FAKE_ENTRY fake_mcfx_get_api
#else
#define FAKE_ENTRY mcfx_get_api_v1
#endif
#ifndef FAKE_ACCEPT_LIMIT
#define FAKE_ACCEPT_LIMIT 2
#endif
#ifndef FAKE_BAD_LENGTH
#define FAKE_BAD_LENGTH 13
#endif

struct mcfx_transport {
    mcfx_complete_fn on_complete;
    void *complete_ctx;
    std::vector<uint64_t> pending;  // user_data of accepted ops
};

namespace {

std::atomic<size_t> g_submit_calls{0};
std::atomic<size_t> g_accept_limit{FAKE_ACCEPT_LIMIT};
std::mutex g_lock;  // guards g_live and every transport's pending list
std::vector<mcfx_transport *> g_live;
thread_local std::string t_error;

mcfx_status failWith(mcfx_status status, const char *message) {
    t_error = message;
    return status;
}

const char *fakeImplName() { return "fake"; }

const char *fakeStrerror(int32_t status) {
    return status == MCFX_OK ? "ok" : "fake plugin error";
}

size_t fakeLastError(char *buf, size_t cap) {
    if (cap > 0) std::snprintf(buf, cap, "%s", t_error.c_str());
    return t_error.size();
}

void fakeConfigInit(mcfx_config *config, size_t size) {
    if (config == nullptr || size < sizeof(mcfx_config)) return;
    std::memset(config, 0, sizeof(mcfx_config));
    config->struct_size = sizeof(mcfx_config);
    config->abi_version = MCFX_ABI_VERSION;
    config->op_timeout_ms = 30000;  // config_init writes the defaults
}

mcfx_status fakeCreate(const mcfx_config *config, mcfx_transport **out) {
    if (config == nullptr || out == nullptr || config->on_complete == nullptr)
        return failWith(MCFX_E_INVALID_ARGUMENT, "create: missing argument");
    auto *transport = new mcfx_transport{config->on_complete,
                                         config->complete_ctx, {}};
    std::lock_guard<std::mutex> guard(g_lock);
    g_live.push_back(transport);
    *out = transport;
    return MCFX_OK;
}

mcfx_status fakeDestroy(mcfx_transport *transport) {
    if (transport == nullptr) return MCFX_OK;
    std::vector<uint64_t> pending;
    {
        std::lock_guard<std::mutex> guard(g_lock);
        for (auto it = g_live.begin(); it != g_live.end(); ++it) {
            if (*it == transport) {
                g_live.erase(it);
                break;
            }
        }
        pending.swap(transport->pending);
    }
    for (uint64_t user_data : pending)
        transport->on_complete(transport->complete_ctx, user_data,
                               MCFX_E_CANCELED);
    delete transport;
    return MCFX_OK;
}

mcfx_status fakeLocalEndpoint(const mcfx_transport *, char *buf, size_t cap,
                              size_t *len) {
    static const char kEndpoint[] = "127.0.0.1:9";
    *len = sizeof(kEndpoint) - 1;
    if (cap < sizeof(kEndpoint))
        return failWith(MCFX_E_BUFFER_TOO_SMALL, "endpoint buffer too small");
    std::memcpy(buf, kEndpoint, sizeof(kEndpoint));
    return MCFX_OK;
}

mcfx_status fakeRegister(mcfx_transport *, void *, size_t) { return MCFX_OK; }

mcfx_status fakeUnregister(mcfx_transport *, void *) { return MCFX_OK; }

mcfx_status fakeSubmit(mcfx_transport *transport, const mcfx_op *ops,
                       size_t count, size_t *accepted) {
    g_submit_calls.fetch_add(1);
    size_t take = 0;
    const size_t limit = g_accept_limit.load();
    {
        std::lock_guard<std::mutex> guard(g_lock);
        for (; take < count && take < limit; ++take) {
            if (ops[take].length == FAKE_BAD_LENGTH) break;
            transport->pending.push_back(ops[take].user_data);
        }
    }
    if (accepted) *accepted = take;
    if (take < count && ops[take].length == FAKE_BAD_LENGTH)
        return failWith(MCFX_E_INVALID_ARGUMENT, "fake bad op");
    if (take < count)
        return failWith(MCFX_E_QUEUE_FULL, "fake queue is full");
    return MCFX_OK;
}

}  // namespace

extern "C" {

__attribute__((visibility("default"))) const mcfx_api_v1 *FAKE_ENTRY(void) {
    static const mcfx_api_v1 table = {
        FAKE_ABI_VERSION,
        static_cast<uint32_t>(FAKE_TABLE_SIZE),
        fakeImplName,
        fakeStrerror,
        fakeLastError,
        fakeConfigInit,
        fakeCreate,
        fakeDestroy,
        fakeLocalEndpoint,
        fakeRegister,
        fakeUnregister,
        nullptr,  // register_batch
        nullptr,  // unregister_batch
        fakeSubmit,
        nullptr,  // get_stats
        nullptr,  // capabilities
        nullptr,  // progress
    };
    return &table;
}

// How many times submit was called, in this process.
__attribute__((visibility("default"))) size_t fake_mcfx_submit_calls(void) {
    return g_submit_calls.load();
}

// Sets how many ops a submit accepts at most (FAKE_ACCEPT_LIMIT at load);
// returns the previous limit.
__attribute__((visibility("default"))) size_t fake_mcfx_set_accept_limit(
    size_t limit) {
    return g_accept_limit.exchange(limit);
}

// Completes every pending op of every live fake transport with `status`,
// on the calling thread; returns how many it completed.
__attribute__((visibility("default"))) size_t fake_mcfx_complete_pending(
    int32_t status) {
    std::vector<std::pair<mcfx_transport *, uint64_t>> due;
    {
        std::lock_guard<std::mutex> guard(g_lock);
        for (mcfx_transport *transport : g_live) {
            for (uint64_t user_data : transport->pending)
                due.emplace_back(transport, user_data);
            transport->pending.clear();
        }
    }
    for (auto &[transport, user_data] : due)
        transport->on_complete(transport->complete_ctx, user_data,
                               static_cast<mcfx_status>(status));
    return due.size();
}

}  // extern "C"
