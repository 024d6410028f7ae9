/* A plugin from the future: its table says ABI version 99. Loaders must
 * refuse it before touching anything else. */
#include "mooncake_flagcx.h"

static const mcfx_api_v1 table = {.abi_version = 99, .struct_size = sizeof(mcfx_api_v1)};

const mcfx_api_v1 *mcfx_get_api_v1(void) { return &table; }
