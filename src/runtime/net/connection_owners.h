// Which process may use a TLS connection that a fork shared between processes.
//
// fork copies a connection's TLS state (keys, sequence numbers) into the child. If parent and
// child both sealed records with it, two records would go out under one key and one sequence
// number: a reused AES-GCM nonce, which leaks the XOR of the two plaintexts. So after a fork the
// first process to use the connection (read, write, handshake, shutdown) owns it for good; the
// others get EIO and a `scone:` line. The owner word lives in memory the processes share
// (anonymous MAP_SHARED pages mapped before the fork, which fork keeps shared).
//
// A slot counts the processes that hold the connection (the forking process and each child);
// the last to let go (close, exit) frees it for another connection. A process replaced by
// exec, killed, or a fork that failed lets go of nothing: its slot (8 bytes) stays taken.
// Thread-safety: all functions may be called concurrently, from any of the processes.
#pragma once

#include <atomic>
#include <cstdint>

namespace scone::runtime::sockets {

struct OwnerSlot {
  std::atomic<int32_t> owner;    // the owning process's pid, 0 while nobody used it since the fork
  std::atomic<int32_t> holders;  // processes holding the connection; 0: free
};

// A free slot, held once (by the calling process), no owner. nullptr when no page could be
// mapped. Allocates: call before a fork, never in a fresh child.
OwnerSlot* AllocateOwnerSlot();
// One more process holds the connection (the child about to be forked).
inline void HoldOwnerSlot(OwnerSlot* slot) { slot->holders.fetch_add(1, std::memory_order_acq_rel); }
// This process lets go of the connection.
inline void ReleaseOwnerSlot(OwnerSlot* slot) { slot->holders.fetch_sub(1, std::memory_order_acq_rel); }

}  // namespace scone::runtime::sockets
