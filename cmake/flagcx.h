/*
 * flagcx.h: a placeholder installed by mooncake-flagcx, not FlagCX's header.
 *
 * Why it exists: Mooncake's build with USE_FLAGCX=ON (branch
 * feat/flagcx-support, mooncake-common/common.cmake) refuses to configure
 * unless $FLAGCX_HOME/include/flagcx.h exists, although its FlagCX transport
 * (and this project's adapter that replaces it) only includes flagcx_p2p.h.
 * The software FlagCX provider implements the P2P API alone (flagcx_p2p.h,
 * installed beside this file), so the provider's own FLAGCX_HOME tree
 * (<libdir>/mooncake_flagcx/sw-flagcx/, installed only with
 * scripts/install.sh --with-sw-flagcx or -DMCFX_INSTALL_SW_FLAGCX=ON) ships
 * this file to be accepted as FLAGCX_HOME. It is never installed into
 * <prefix>/include. It declares nothing: code that needs FlagCX's collective
 * API must use a real FlagCX.
 */
#ifndef MOONCAKE_FLAGCX_PLACEHOLDER_FLAGCX_H
#define MOONCAKE_FLAGCX_PLACEHOLDER_FLAGCX_H

#endif
