// Splits independent work (sealing or opening many chunks) between the calling thread and one
// helper thread, so a large read or write uses a second core for its crypto.
//
// The helper is started on first use, with every signal blocked (signals stay with the
// program's own threads when this runs inside an unmodified program), and started again in a
// forked child, where it does not exist. Small jobs run inline.
//
// Thread-safety: any thread may call ParallelFor; jobs from different callers are serialized on
// the helper, and a caller whose job cannot be handed over runs all of it itself.
#pragma once

#include <cstddef>
#include <functional>

namespace scone {

// Calls fn(begin, end) over [0, count) in at most two parts. Returns when all parts are done.
// fn must be safe to run concurrently on disjoint ranges.
void ParallelFor(size_t count, size_t min_parallel_count,
                 const std::function<void(size_t, size_t)>& fn);

// Calls work(begin, end) over [0, count) in blocks of `block` items, on the calling thread and
// the helper, and consume(begin, end) on the calling thread over runs of finished blocks, in
// order, while later blocks are still being worked on (sealing overlaps writing). Returns when
// everything is consumed. work must be safe to run concurrently on disjoint ranges.
void ParallelPipeline(size_t count, size_t block, const std::function<void(size_t, size_t)>& work,
                      const std::function<void(size_t, size_t)>& consume);

// The reverse: produce(begin, end) over blocks in order on the calling thread (reading them),
// and work(begin, end) on each produced block, by the helper as soon as it is produced and by
// the calling thread once it has produced them all (reading overlaps opening).
void ParallelAfterInOrder(size_t count, size_t block,
                          const std::function<void(size_t, size_t)>& produce,
                          const std::function<void(size_t, size_t)>& work);

// Stops the helper thread now (it is otherwise stopped at exit): for programs that tear their
// libraries down before exit.
void StopParallelHelper();

// In a forked child, before anything else uses it: the helper thread is gone (it is started again
// when needed) and its lock may have been held by a thread that no longer exists. No allocation.
// Also done by a pthread_atfork child handler; the first of the two in a child does it.
void ResetParallelHelperInChild();

// Called first thing on the helper thread (the runtime marks its own threads with it).
void SetHelperThreadStartHook(void (*hook)());

// From now on no helper thread is started (one that runs goes on serving): a process that a
// signal ends commits without starting a thread while its other threads stop.
void StartNoMoreHelpers();

}  // namespace scone
