// Minimal stand-in for Mooncake's include/topology.h. Transports receive a
// std::shared_ptr<Topology> in install(); the FlagCX adapter ignores it, so
// an empty class is all the declarations need.
#ifndef TOPOLOGY_H
#define TOPOLOGY_H

namespace mooncake {

class Topology {};

}  // namespace mooncake

#endif  // TOPOLOGY_H
