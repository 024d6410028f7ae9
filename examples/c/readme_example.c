/* Write 4 KiB from one transport to another (both in this process). */
#define _POSIX_C_SOURCE 200809L /* nanosleep */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "mooncake_flagcx.h"

static char endpoint_b[64];     /* what the resolver answers for peer 1 */
static atomic_int done = -1;    /* the op's status, once completed */

static void on_complete(void *ctx, uint64_t user_data, mcfx_status status) {
  (void)ctx, (void)user_data;
  atomic_store(&done, (int)status);
}

static int32_t resolve(void *ctx, uint64_t peer_id, char *buf, size_t cap) {
  (void)ctx;
  if (peer_id != 1 || strlen(endpoint_b) >= cap) return -1;
  strcpy(buf, endpoint_b);
  return 0;
}

static mcfx_transport *create(void) {
  mcfx_config cfg;
  mcfx_config_init(&cfg, sizeof cfg);
  cfg.on_complete = on_complete;
  cfg.resolve = resolve;
  mcfx_transport *t = NULL;
  if (mcfx_create(&cfg, &t) != MCFX_OK) {
    char msg[256];
    mcfx_last_error(msg, sizeof msg);
    fprintf(stderr, "mcfx_create: %s\n", msg);
  }
  return t;
}

int main(void) {
  static char src[4096], dst[4096];
  mcfx_transport *a = create(), *b = create();
  if (!a || !b) return 1;
  size_t len;
  mcfx_local_endpoint(b, endpoint_b, sizeof endpoint_b, &len);
  memset(src, 'x', sizeof src);
  if (mcfx_register(a, src, sizeof src) != MCFX_OK ||
      mcfx_register(b, dst, sizeof dst) != MCFX_OK)
    return 1;

  mcfx_op op = {
      .opcode = MCFX_OP_WRITE, .local_addr = src, .length = sizeof src,
      .peer_id = 1, .remote_addr = (uint64_t)(uintptr_t)dst, .user_data = 42};
  if (mcfx_submit(a, &op, 1, NULL) != MCFX_OK) return 1;

  struct timespec nap = {0, 100000};
  for (int i = 0; i < 100000 && atomic_load(&done) < 0; i++) nanosleep(&nap, NULL);
  int status = atomic_load(&done);
  printf("write: %s, data %s\n", mcfx_strerror(status),
         memcmp(src, dst, sizeof dst) == 0 ? "intact" : "corrupt");

  mcfx_destroy(a);
  mcfx_destroy(b);
  return status == MCFX_OK && memcmp(src, dst, sizeof dst) == 0 ? 0 : 1;
}
