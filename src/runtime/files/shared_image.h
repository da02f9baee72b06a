// A protected file's plaintext in memory that every process mapping the file shares: what makes
// MAP_SHARED mappings of protected files work (SQLite's WAL index, LMDB).
//
// The kernel's page cache holds the ciphertext, so it cannot be mapped. Instead the plaintext is
// loaded (authenticated chunk by chunk) into an anonymous memory file (memfd), which is mapped in
// its place; processes that map the same file get the same memory file from one another
// (image_broker.h), so a store by one is seen by the others at once, as through the page cache.
// While a process holds an image, its reads and writes of the file go through it too (coherent
// with the mappings, as the kernel's unified page cache is), and the image is sealed back into
// the protected file at msync, fsync, munmap, the last close and exit: every chunk that differs
// from the base (a store by any holder) or that this process wrote through a descriptor.
//
// A process that writes the file without mapping it writes the protected file, not the image.
// So a seal merges three ways, byte by byte, against the base (the file's content when the
// image last agreed with it: at making the image, and after each seal): a byte the image changed
// since the base goes into the file; a byte only the file changed goes into the image (the
// mappings see it from then on); where both changed, the image's stays (a store through a
// mapping and a write to the same byte raced). Without the base, a seal wrote the image's stale
// bytes over the other process's write. The base is a memory file too, and every holder of the
// image shares it, as they share the image: a base of its own per process fell behind at another
// holder's seal, and a store undone since then looked like another process's write and was put
// back. Seals of one volume's images run one at a time across processes (the volume's images
// lock), so that each merges against a settled file and base.
//
// The memory file lives in RAM only (never on disk, in no file system namespace); under the
// `sim` backend process memory is as exposed to root as it always is.
//
// Thread-safety: all methods may be called concurrently.
#pragma once

#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <set>

#include "common/bytes.h"
#include "common/status.h"
#include "fs/protected_file.h"
#include "fs/volume.h"
#include "os/file.h"

namespace scone::runtime {

class SharedImage {
 public:
  // A new image, empty until Load (its maker serves it first, so that a process whose
  // descriptors write the file meanwhile finds it). REQUIRES: the volume's images lock (`volume`
  // is the file's; it outlives the image).
  static Result<std::shared_ptr<SharedImage>> Create(fs::Volume* volume, std::shared_ptr<fs::ProtectedFile> file);
  // Fills a new image (and its base) from the file as other processes published it.
  // REQUIRES: the volume's images lock.
  Status Load();
  // The image another process handed over (its memory file, now this process's `memfd`), with
  // the holders' base (`holder_base`, now this process's too; -1: none, and one is made from the
  // file). The base tells the mappers' stores from writes other processes made to the file
  // without mapping it since (a base read from the file would take the image's stale bytes for
  // stores, and the next seal would write them over those writes); the image is brought up to
  // date with the file at once (a whole seal). REQUIRES: the volume's images lock.
  static Result<std::shared_ptr<SharedImage>> Adopt(fs::Volume* volume, std::shared_ptr<fs::ProtectedFile> file,
                                                    int memfd, int holder_base);
  SharedImage(const SharedImage&) = delete;
  SharedImage& operator=(const SharedImage&) = delete;

  int fd() const { return memory_.fd(); }
  int base_fd() const { return base_.fd(); }
  const std::shared_ptr<fs::ProtectedFile>& file() const { return file_; }

  Result<uint64_t> Size() const { return memory_.Size(); }
  Result<size_t> Read(uint64_t offset, MutableByteSpan out);
  // With `appended_at`: appends (atomically, across processes) and says where.
  Result<size_t> Write(uint64_t offset, ByteSpan data, uint64_t* appended_at);
  Status Truncate(uint64_t size);

  // Seals into the protected file what changed, whoever changed it (a store by any holder, as
  // fsync writes back every dirty page of the file): `durable` commits (fsync, msync), else
  // publishes to the other processes (munmap, close, exit). A store by a holder that died since
  // is sealed so too. Finding stores costs a comparison of the image with the base in memory;
  // only chunks that differ are decrypted and compared with the file.
  Status Seal(bool durable);
  // Whether the last seal failed (a full disk): the stores since the last good seal are only in
  // memory, and MappedFiles keeps the image until a seal succeeds.
  bool SealFailed() const { return seal_failed_.load(std::memory_order_acquire); }
  // Publishes what this process wrote through descriptors (not what it stored through
  // mappings): a write is in the protected file when it returns, as without an image, so that it
  // outlives this process whoever holds the image after it.
  Status PublishWrites();
  // Fork (MappedFiles): no seal or write of this process's is half done across it.
  void BeforeFork() { mu_.lock(); }
  void AfterFork() { mu_.unlock(); }

 private:
  // `memfd`, `basefd`: the runtime's own descriptors (files::KeepOwn), closed with the image.
  SharedImage(fs::Volume* volume, std::shared_ptr<fs::ProtectedFile> file, int memfd, int basefd)
      : volume_(volume),
        file_(std::move(file)),
        memory_(memfd, "the shared image of " + file_->path()),
        base_(basefd, "the base of the shared image of " + file_->path()) {}
  static Result<int> MemoryFile(const std::string& path);
  // The image of `memfd` with a new, empty base (`memfd` is closed if that fails).
  static Result<std::shared_ptr<SharedImage>> WithBase(fs::Volume* volume, std::shared_ptr<fs::ProtectedFile> file,
                                                       int memfd);
  // Copies the sealed file's content into each of `into` (sized to it).
  Status Fill(std::initializer_list<const os::File*> into);
  Result<const os::File*> Appending();
  void NoteWritten(uint64_t offset, size_t count);
  // What a seal compares with the file: the chunks this process wrote through descriptors;
  // those and every chunk whose image differs from the base (stores); every chunk (an image
  // just adopted, which processes may have written around before it was found).
  enum class Scope { kWritten, kStored, kAll };
  // Merges [first, last) chunks of the image, the base and the file (see above), writing what
  // changed into the file and the image; the base becomes the result. `stored_only`: batches
  // whose image equals the base are skipped without reading the file.
  Status SealChunks(uint64_t first, uint64_t last, uint64_t size, bool stored_only);
  // REQUIRES: mu_ and the volume's images lock.
  Status SealLocked(bool durable, Scope scope);
  // SealLocked under the volume's images lock; nothing for an unlinked file. REQUIRES: mu_.
  Status SealUnderImagesLock(bool durable, Scope scope);

  fs::Volume* const volume_;
  const std::shared_ptr<fs::ProtectedFile> file_;
  const os::File memory_;  // the memory file (through the shield's own system calls)
  const os::File base_;    // the base: a memory file every holder of the image shares
  os::File appending_;  // an O_APPEND open of the memory file, made on the first append
  std::mutex mu_;  // dirty_, appending_, and one seal at a time
  std::set<uint64_t> dirty_;  // chunks this process wrote through the image
  bool resized_ = false;
  std::atomic<bool> seal_failed_{false};
};

}  // namespace scone::runtime
