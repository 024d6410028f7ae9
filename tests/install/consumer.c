/* A program built against the installed mooncake-flagcx (scripts/install_check.sh
 * builds it with pkg-config and with the CMake package, then runs it): the
 * library and its SONAME must be found from the install tree alone, and
 * libflagcx.so through the plugin's RUNPATH (the software provider of an
 * install with --with-sw-flagcx) or the loader's path (a default install,
 * which holds no FlagCX). It prints which FlagCX it loaded. */
#include <stdio.h>
#include <string.h>

#include "mooncake_flagcx.h"

static void on_complete(void *ctx, uint64_t user_data, mcfx_status status) {
  (void)ctx, (void)user_data, (void)status;
}

static int32_t resolve(void *ctx, uint64_t peer_id, char *buf, size_t cap) {
  (void)ctx, (void)peer_id, (void)buf, (void)cap;
  return -1; /* no peers here */
}

int main(void) {
  if (mcfx_abi_version() != MCFX_ABI_VERSION) {
    fprintf(stderr, "ABI %u, header says %u\n", mcfx_abi_version(), MCFX_ABI_VERSION);
    return 1;
  }
  const mcfx_api_v1 *api = mcfx_get_api_v1();
  if (api == NULL || api->abi_version != MCFX_ABI_VERSION) {
    fprintf(stderr, "mcfx_get_api_v1: no v1 table\n");
    return 1;
  }
  /* A transport drives FlagCX: creating one loads libflagcx.so. */
  mcfx_config cfg;
  mcfx_config_init(&cfg, sizeof cfg);
  cfg.on_complete = on_complete;
  cfg.resolve = resolve;
  mcfx_transport *t = NULL;
  if (mcfx_create(&cfg, &t) != MCFX_OK) {
    char msg[256];
    mcfx_last_error(msg, sizeof msg);
    fprintf(stderr, "mcfx_create: %s\n", msg);
    return 1;
  }
  char endpoint[128];
  size_t len = 0;
  if (mcfx_local_endpoint(t, endpoint, sizeof endpoint, &len) != MCFX_OK || len == 0) {
    fprintf(stderr, "mcfx_local_endpoint failed\n");
    return 1;
  }
  printf("%s ABI v%u, endpoint %s, FlagCX: %s\n", mcfx_impl_name(), mcfx_abi_version(),
         endpoint,
         (mcfx_capabilities() & MCFX_CAP_SOFTWARE_PROVIDER) ? "the software provider"
                                                             : "a real FlagCX");
  mcfx_destroy(t);
  return 0;
}
