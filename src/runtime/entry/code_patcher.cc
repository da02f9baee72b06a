#include "runtime/entry/code_patcher.h"

#include <Zydis/Zydis.h>
#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <linux/membarrier.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <span>
#include <vector>

#include "common/bytes.h"
#include "runtime/entry/function_index.h"
#include "runtime/entry/raw_syscall.h"

extern "C" {
extern char scone_trampolines_begin[];
extern char scone_trampolines_end[];
void scone_syscall_stub();
void scone_child_stub();
}

namespace scone::runtime {
namespace {

constexpr size_t kJumpSize = 5;  // jmp rel32
constexpr uint8_t kInt3 = 0xcc;

// ---- the objects that may be patched ----------------------------------------------------

struct PatchableObject {
  uintptr_t text_begin;
  uintptr_t text_end;
  FunctionIndex functions;
  // The file it was loaded from (the loader's name for it, which lives as long as the object),
  // for plans handed to and from programs this one executes. Asked for only when a plan needs
  // it (Identify): a process that executes nothing, or whose plan names only the C library,
  // makes no stat of the others (the main program's, through /proc, is the slowest).
  const char* file;
  bool identified;
  uint64_t device;
  uint64_t inode;
};
constexpr int kMaxObjects = 64;
// Constant-initialized, as every global here: the runtime may start (from the early-open shims,
// for another library's constructor) before this library's own dynamic initializers run, which
// would then wipe what it set up.
constinit PatchableObject objects[kMaxObjects] = {};
int object_count = 0;
CodeRange own_range{0, 0};
bool own_range_only = false;  // LearnObject: find the runtime's own range, nothing else

const PatchableObject* ObjectOf(uintptr_t address) {
  for (int i = 0; i < object_count; ++i) {
    if (address >= objects[i].text_begin && address < objects[i].text_end) return &objects[i];
  }
  return nullptr;
}

int LearnObject(struct dl_phdr_info* info, size_t, void*) {
  uintptr_t text_begin = 0, text_end = 0, eh_frame_hdr = 0;
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)& ph = info->dlpi_phdr[i];
    if (ph.p_type == PT_LOAD && (ph.p_flags & PF_X)) {
      text_begin = info->dlpi_addr + ph.p_vaddr;
      text_end = text_begin + ph.p_memsz;
    }
    if (ph.p_type == PT_GNU_EH_FRAME) eh_frame_hdr = info->dlpi_addr + ph.p_vaddr;
  }
  if (text_begin == 0) return 0;
  auto self = reinterpret_cast<uintptr_t>(&scone_syscall_stub);
  if (self >= text_begin && self < text_end) {
    own_range = {text_begin, text_end};
    return 0;
  }
  if (own_range_only) return 0;
  const char* name = info->dlpi_name;
  if (name != nullptr && std::strstr(name, "linux-vdso") != nullptr) return 0;
  const char* file = name != nullptr && name[0] != '\0' ? name : "/proc/self/exe";
  if (object_count < kMaxObjects) {
    objects[object_count++] = {text_begin, text_end, FunctionIndex(eh_frame_hdr), file, false, 0, 0};
  }
  return 0;
}

// The object's file identity, asked for once. REQUIRES: the patch lock.
const PatchableObject& Identify(PatchableObject& object) {
  if (!object.identified) {
    struct stat st = {};
    if (RawSyscall(SYS_newfstatat, AT_FDCWD, Arg(object.file), Arg(&st), 0) != 0) st = {};
    object.device = st.st_dev;
    object.inode = st.st_ino;
    object.identified = true;
  }
  return object;
}

// The object loaded from the file (device, inode), or nullptr. The main program (objects[0])
// is asked last: plans name the C library's sites, and its stat goes through /proc.
// REQUIRES: the patch lock.
const PatchableObject* ObjectFromFile(uint64_t device, uint64_t inode) {
  for (int i = 1; i <= object_count; ++i) {
    const PatchableObject& o = Identify(objects[i % object_count]);
    if (o.device == device && o.inode == inode) return &o;
  }
  return nullptr;
}

// ---- decoding ---------------------------------------------------------------------------

struct Instruction {
  uintptr_t address;
  uint8_t length;
  bool is_syscall;
  bool relocatable;  // may run at another address unchanged
  bool is_branch;
  uintptr_t branch_target;  // for direct relative branches, else 0
};

const ZydisDecoder& Decoder() {
  static const ZydisDecoder decoder = [] {
    ZydisDecoder d;
    ZydisDecoderInit(&d, ZYDIS_MACHINE_MODE_LONG_64, ZYDIS_STACK_WIDTH_64);
    return d;
  }();
  return decoder;
}

bool Decode(uintptr_t address, uintptr_t limit, Instruction* out) {
  ZydisDecodedInstruction insn;
  if (address >= limit ||
      !ZYAN_SUCCESS(ZydisDecoderDecodeInstruction(&Decoder(), nullptr, reinterpret_cast<const void*>(address),
                                                  limit - address, &insn))) {
    return false;
  }
  out->address = address;
  out->length = insn.length;
  out->is_syscall = insn.mnemonic == ZYDIS_MNEMONIC_SYSCALL;
  ZydisInstructionCategory c = insn.meta.category;
  out->is_branch = c == ZYDIS_CATEGORY_CALL || c == ZYDIS_CATEGORY_COND_BR || c == ZYDIS_CATEGORY_UNCOND_BR ||
                   c == ZYDIS_CATEGORY_RET || c == ZYDIS_CATEGORY_SYSCALL || c == ZYDIS_CATEGORY_INTERRUPT ||
                   c == ZYDIS_CATEGORY_SYSTEM;
  bool relative = (insn.attributes & ZYDIS_ATTRIB_IS_RELATIVE) != 0;
  out->relocatable = !relative && !out->is_branch;
  out->branch_target = 0;
  if (relative && (c == ZYDIS_CATEGORY_CALL || c == ZYDIS_CATEGORY_COND_BR || c == ZYDIS_CATEGORY_UNCOND_BR) &&
      insn.raw.imm[0].is_relative) {
    out->branch_target = address + insn.length + static_cast<intptr_t>(insn.raw.imm[0].value.s);
  }
  return true;
}

// ---- writing code -----------------------------------------------------------------------

std::atomic_flag patch_lock = ATOMIC_FLAG_INIT;
// How often this thread holds the lock: a fork holds it around the patcher's own use.
__attribute__((tls_model("initial-exec"))) thread_local int patch_lock_depth = 0;
void LockPatching() {
  if (patch_lock_depth++ > 0) return;
  while (patch_lock.test_and_set(std::memory_order_acquire)) __builtin_ia32_pause();
}
void UnlockPatching() {
  if (--patch_lock_depth == 0) patch_lock.clear(std::memory_order_release);
}
struct PatchLock {
  PatchLock() { LockPatching(); }
  ~PatchLock() { UnlockPatching(); }
};

bool sync_core_available = false;
// glibc's own flag: true until the process first creates a thread.
const char* single_threaded = nullptr;

bool SingleThreaded() { return single_threaded != nullptr && *single_threaded != 0; }

// Makes every core running this process's threads execute a serializing instruction, so none
// runs a stale copy of code just written.
void SyncCores() {
  if (sync_core_available) RawSyscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE, 0, 0);
}

bool SetWritable(uintptr_t at, size_t n, bool writable) {
  uintptr_t first = at & ~uintptr_t{4095};
  uintptr_t last = (at + n + 4095) & ~uintptr_t{4095};
  int prot = PROT_READ | PROT_EXEC | (writable ? PROT_WRITE : 0);
  return RawSyscall(SYS_mprotect, static_cast<long>(first), static_cast<long>(last - first), prot) == 0;
}

void Store16(uintptr_t at, const uint8_t* bytes) {
  uint16_t v;
  std::memcpy(&v, bytes, 2);
  // One store instruction: atomic for other cores when it does not cross a cache line.
  __asm__ volatile("movw %1, %0" : "=m"(*reinterpret_cast<volatile uint16_t*>(at)) : "r"(v) : "memory");
}

// Replaces n bytes of code at `at` while other threads may run it: a thread reaching `at`
// meanwhile finds a jump to itself and waits. REQUIRES: the patch lock.
bool WriteLiveCode(uintptr_t at, const uint8_t* bytes, size_t n) {
  if (!SingleThreaded() && (at & 63) == 63) return false;  // the two-byte jump would cross a cache line
  if (!SetWritable(at, n, true)) return false;
  if (SingleThreaded()) {
    // The one thread is the one patching (in its SIGSYS handler): nothing runs this code now.
    std::memcpy(reinterpret_cast<void*>(at), bytes, n);
  } else if ((at & ~uintptr_t{7}) == ((at + n - 1) & ~uintptr_t{7})) {
    // Within one aligned 8-byte word: one atomic store.
    auto* word = reinterpret_cast<uint64_t*>(at & ~uintptr_t{7});
    uint64_t v = __atomic_load_n(word, __ATOMIC_RELAXED);
    std::memcpy(reinterpret_cast<uint8_t*>(&v) + (at & 7), bytes, n);
    __atomic_store_n(word, v, __ATOMIC_RELEASE);
  } else {
    static const uint8_t kSpin[2] = {0xeb, 0xfe};  // jmp .
    Store16(at, kSpin);
    SyncCores();
    std::memcpy(reinterpret_cast<void*>(at + 2), bytes + 2, n - 2);
    SyncCores();
    Store16(at, bytes);
  }
  if (!SingleThreaded()) SyncCores();
  SetWritable(at, n, false);
  return true;
}

// ---- trampolines ------------------------------------------------------------------------

uintptr_t trampoline_next = 0;
// At start-up the C library's text and the trampoline area are made writable once for all
// sites, not once per site.
bool bulk_writable = false;

class CodeBuffer {
 public:
  void Bytes(std::initializer_list<uint8_t> b) {
    for (uint8_t x : b) Byte(x);
  }
  void Byte(uint8_t b) {
    if (size_ < sizeof(buf_)) buf_[size_] = b;
    ++size_;
  }
  void Copy(uintptr_t from, size_t n) {
    for (size_t i = 0; i < n; ++i) Byte(reinterpret_cast<const uint8_t*>(from)[i]);
  }
  // A rel32 operand for an instruction ending right after it, reaching `target` from code that
  // will live at `base`.
  bool Rel32(uintptr_t base, uintptr_t target) {
    intptr_t rel = static_cast<intptr_t>(target) - static_cast<intptr_t>(base + size_ + 4);
    if (rel != static_cast<int32_t>(rel)) return false;
    auto r = static_cast<int32_t>(rel);
    for (int i = 0; i < 4; ++i) Byte(static_cast<uint8_t>(r >> (8 * i)));
    return true;
  }
  void PatchRel8(size_t at, size_t target) { buf_[at] = static_cast<uint8_t>(target - (at + 1)); }
  size_t size() const { return size_; }
  const uint8_t* data() const { return buf_; }
  bool overflowed() const { return size_ > sizeof(buf_); }

 private:
  uint8_t buf_[256];
  size_t size_ = 0;
};

// Emits the trampoline for a window: `pre` (the instructions before the syscall), the call
// through the entry, `post`, and a jump to `resume`. Returns its address (0 if it cannot be
// placed); *after_pre is where the call through the entry begins. REQUIRES: the patch lock.
uintptr_t EmitTrampoline(uintptr_t pre, size_t pre_size, uintptr_t post, size_t post_size, uintptr_t resume,
                         uintptr_t* after_pre) {
  if (trampoline_next == 0) trampoline_next = reinterpret_cast<uintptr_t>(scone_trampolines_begin);
  const uintptr_t base = trampoline_next;
  const auto stub = reinterpret_cast<uintptr_t>(&scone_syscall_stub);
  const auto child_stub = reinterpret_cast<uintptr_t>(&scone_child_stub);
  CodeBuffer c;
  bool ok = true;
  c.Copy(pre, pre_size);
  *after_pre = base + c.size();
  c.Bytes({0x48, 0x8d, 0x64, 0x24, 0x80});  // lea -0x80(%rsp),%rsp  (the red zone)
  c.Byte(0xe8);                             // call scone_syscall_stub
  ok &= c.Rel32(base, stub);
  c.Bytes({0x48, 0x8d, 0xa4, 0x24, 0x80, 0x00, 0x00, 0x00});  // lea 0x80(%rsp),%rsp
  c.Bytes({0x4d, 0x85, 0xdb});                                // test %r11,%r11
  c.Bytes({0x74, 0x00});                                      // je done
  size_t je_done = c.size() - 1;
  c.Bytes({0x49, 0x83, 0xfb, 0x02});  // cmp $2,%r11
  c.Bytes({0x74, 0x00});              // je switch
  size_t je_switch = c.size() - 1;
  c.Bytes({0x0f, 0x05});              // syscall (native, at the program's stack pointer)
  c.Bytes({0x48, 0x85, 0xc0});        // test %rax,%rax
  c.Bytes({0x75, 0x00});              // jne done
  size_t jne_done = c.size() - 1;
  c.Bytes({0x48, 0x8d, 0x64, 0x24, 0x80});  // child: lea -0x80(%rsp),%rsp
  c.Byte(0xe8);                             // call scone_child_stub
  ok &= c.Rel32(base, child_stub);
  c.Bytes({0x48, 0x8d, 0xa4, 0x24, 0x80, 0x00, 0x00, 0x00});  // lea 0x80(%rsp),%rsp
  c.Bytes({0xeb, 0x00});                                      // jmp done
  size_t jmp_done = c.size() - 1;
  size_t switch_at = c.size();
  c.Bytes({0x48, 0x89, 0xcc});  // mov %rcx,%rsp
  c.Bytes({0x31, 0xc0});        // xor %eax,%eax
  size_t done = c.size();
  c.Copy(post, post_size);
  c.Byte(0xe9);  // jmp resume
  ok &= c.Rel32(base, resume);
  if (!ok || c.overflowed()) return 0;
  c.PatchRel8(je_done, done);
  c.PatchRel8(je_switch, switch_at);
  c.PatchRel8(jne_done, done);
  c.PatchRel8(jmp_done, done);
  size_t total = (c.size() + 15) & ~size_t{15};
  if (base + total > reinterpret_cast<uintptr_t>(scone_trampolines_end)) return 0;
  if (!bulk_writable && !SetWritable(base, c.size(), true)) return 0;
  std::memcpy(reinterpret_cast<void*>(base), c.data(), c.size());
  if (!bulk_writable) SetWritable(base, c.size(), false);
  trampoline_next = base + total;
  return base;
}

// The bytes that replace a window: a jump to the trampoline, then int3 to its end.
bool JumpBytes(uintptr_t window, size_t window_size, uintptr_t trampoline, uint8_t* out) {
  intptr_t rel = static_cast<intptr_t>(trampoline) - static_cast<intptr_t>(window + kJumpSize);
  if (rel != static_cast<int32_t>(rel)) return false;
  auto r = static_cast<int32_t>(rel);
  out[0] = 0xe9;
  std::memcpy(out + 1, &r, 4);
  std::memset(out + kJumpSize, kInt3, window_size - kJumpSize);
  return true;
}

// ---- patches applied, for the programs this one executes ------------------------------------

// A patch as a program this one executes applies it again without decoding: the window's place
// in its object's text, where the `syscall` is in it (at `window_size`: right after it, kept),
// and the bytes it replaced (the new program's copy must hold the same).
struct AppliedPatch {
  uint16_t object;
  uint8_t window_size;
  uint8_t syscall_offset;
  uint32_t window_offset;
  uint8_t original[24];
};
constexpr int kMaxApplied = 2048;
constinit AppliedPatch applied[kMaxApplied] = {};
int applied_count = 0;

// REQUIRES: the patch lock.
void RecordPatch(const PatchableObject* object, uintptr_t window, size_t window_size, size_t syscall_offset,
                 const uint8_t* original) {
  if (applied_count == kMaxApplied || window_size > sizeof(AppliedPatch::original)) return;
  AppliedPatch& p = applied[applied_count++];
  p.object = static_cast<uint16_t>(object - objects);
  p.window_size = static_cast<uint8_t>(window_size);
  p.syscall_offset = static_cast<uint8_t>(syscall_offset);
  p.window_offset = static_cast<uint32_t>(window - object->text_begin);
  std::memcpy(p.original, original, window_size);
}

// Patches a window whose instructions are known: those before the `syscall` run first in the
// trampoline, then the call, then those after it (the window may end at the `syscall`, which
// then stays). REQUIRES: the patch lock; nothing runs the window's code (start-up).
bool PatchKnownWindow(const PatchableObject* object, uintptr_t window, size_t window_size, size_t syscall_offset) {
  const uintptr_t syscall_at = window + syscall_offset;
  const bool covers_syscall = syscall_offset < window_size;
  const uintptr_t window_end = window + window_size;
  uintptr_t after_pre;
  uintptr_t trampoline = EmitTrampoline(window, syscall_offset, syscall_at + 2,
                                        covers_syscall ? window_end - syscall_at - 2 : 0,
                                        covers_syscall ? window_end : syscall_at + 2, &after_pre);
  uint8_t original[32], bytes[32];
  if (trampoline == 0 || window_size > sizeof(bytes) || !JumpBytes(window, window_size, trampoline, bytes)) {
    return false;
  }
  std::memcpy(original, reinterpret_cast<const void*>(window), window_size);
  std::memcpy(reinterpret_cast<void*>(window), bytes, window_size);
  RecordPatch(object, window, window_size, syscall_offset, original);
  return true;
}

// ---- sites refused, remembered so the handler does not decode them again ----------------

constexpr int kRefusedSlots = 1024;
struct RefusedSite {
  uintptr_t site;
  long calls;  // caught by the handler since it was refused
};
constinit RefusedSite refused[kRefusedSlots] = {};
std::atomic<int> stat_start_up{0}, stat_later{0}, stat_refused{0};

// REQUIRES: the patch lock.
RefusedSite* FindRefused(uintptr_t site, bool insert) {
  for (int i = 0, h = static_cast<int>((site >> 1) % kRefusedSlots); i < kRefusedSlots; ++i) {
    RefusedSite& r = refused[(h + i) % kRefusedSlots];
    if (r.site == site) return &r;
    if (r.site == 0) {
      if (!insert) return nullptr;
      r.site = site;
      return &r;
    }
  }
  return nullptr;
}

bool IsRefused(uintptr_t site) {
  RefusedSite* r = FindRefused(site, false);
  if (r != nullptr) ++r->calls;
  return r != nullptr;
}

void Refuse(uintptr_t site) {
  stat_refused.fetch_add(1, std::memory_order_relaxed);
  if (RefusedSite* r = FindRefused(site, true)) r->calls = 1;
}

// ---- start-up: whole functions ----------------------------------------------------------

// The C library's wrappers whose `syscall` no single instruction before it can stand in for
// (read(2)'s number is set by a two-byte `xor`; futex calls by register moves), so only a
// whole-function analysis, before other threads run, can patch them. Every other site is
// patched when first caught (PatchTrapped): a process pays only for the calls it makes.
constexpr const char* kWrappersPatchedAtStartUp[] = {
    "read", "__read_nocancel", "pthread_mutex_trylock", "pthread_cond_wait", "pthread_cond_timedwait",
    "pthread_cond_clockwait", "pthread_cond_signal", "pthread_cond_broadcast", "pthread_rwlock_rdlock",
    "pthread_rwlock_wrlock", "pthread_rwlock_unlock", "pthread_rwlock_tryrdlock", "pthread_rwlock_timedrdlock",
    "pthread_rwlock_clockrdlock", "pthread_barrier_wait", "epoll_pwait", "epoll_pwait2", "sendto", "splice",
    "copy_file_range", "pselect", "recvmmsg", "posix_fallocate", "posix_fallocate64", "tcsetattr",
};

// Wrappers whose waits are in functions of their own the C library does not export: the
// functions they call directly are patched too. pthread_mutex_lock waits in __lll_lock_wait,
// a condition variable's waiters lock and leave in __condvar_release_lock and
// __condvar_cancel_waiting (futex numbers set by register moves): every contended lock of a
// threaded program (python3's interpreter lock) would otherwise be caught by the net, a signal
// each time.
constexpr const char* kCallersPatchedAtStartUp[] = {"pthread_mutex_lock",     "__lll_lock_wait_private",
                                                     "pthread_cond_wait",      "pthread_cond_timedwait",
                                                     "pthread_cond_clockwait", "pthread_cond_signal",
                                                     "pthread_cond_broadcast"};

// The functions `fn` calls or jumps to directly, within `object` (each a function's start).
std::vector<FunctionRange> DirectCallees(const PatchableObject* object, const FunctionRange& fn) {
  std::vector<FunctionRange> callees;
  for (uintptr_t at = fn.begin; at < fn.end;) {
    Instruction insn;
    if (!Decode(at, fn.end, &insn)) break;
    at += insn.length;
    const uintptr_t target = insn.branch_target;
    if (target == 0 || (target >= fn.begin && target < fn.end)) continue;  // not a call out
    FunctionRange callee;
    if (!object->functions.Find(target, &callee) || callee.begin != target) continue;
    if (std::none_of(callees.begin(), callees.end(), [&](const FunctionRange& c) { return c.begin == target; })) {
      callees.push_back(callee);
    }
  }
  return callees;
}

// Chooses the window for the `syscall` at insns[i]: at least five bytes of whole relocatable
// instructions around it, none but the first a branch target. Returns false if none fits.
bool ChooseWindow(const std::vector<Instruction>& insns, size_t i, const std::vector<uintptr_t>& targets,
                  size_t* first, size_t* last) {
  auto is_target = [&](uintptr_t a) { return std::binary_search(targets.begin(), targets.end(), a); };
  size_t best_size = SIZE_MAX;
  for (size_t before = 0; before <= 3 && before <= i; ++before) {
    for (size_t after = 0; after <= 3 && i + after < insns.size(); ++after) {
      size_t j = i - before, k = i + after, size = 0;
      bool ok = true;
      for (size_t m = j; m <= k && ok; ++m) {
        if (m != i && !insns[m].relocatable) ok = false;
        if (m != j && is_target(insns[m].address)) ok = false;
        size += insns[m].length;
      }
      if (ok && size >= kJumpSize && size < best_size) {
        best_size = size;
        *first = j;
        *last = k;
      }
    }
  }
  return best_size != SIZE_MAX;
}

int PatchFunction(const PatchableObject* object, uintptr_t begin, uintptr_t end) {
  std::vector<Instruction> insns;
  for (uintptr_t at = begin; at < end;) {
    Instruction insn;
    if (!Decode(at, end, &insn)) return 0;  // not code we understand: leave it to the net
    insns.push_back(insn);
    at += insn.length;
  }
  std::vector<uintptr_t> targets;
  for (const Instruction& insn : insns) {
    if (insn.branch_target != 0) targets.push_back(insn.branch_target);
  }
  std::sort(targets.begin(), targets.end());
  int patched = 0;
  for (size_t i = 0; i < insns.size(); ++i) {
    if (!insns[i].is_syscall) continue;
    size_t first, last;
    if (!ChooseWindow(insns, i, targets, &first, &last)) continue;
    uintptr_t window = insns[first].address;
    uintptr_t window_end = insns[last].address + insns[last].length;
    if (PatchKnownWindow(object, window, window_end - window, insns[i].address - window)) ++patched;
  }
  return patched;
}

}  // namespace

Bytes CodePatcher::Plan() {
  PatchLock lock;
  ByteWriter w;
  w.U32(static_cast<uint32_t>(applied_count));
  for (int i = 0; i < applied_count; ++i) {
    const AppliedPatch& p = applied[i];
    const PatchableObject& object = Identify(objects[p.object]);
    w.U64(object.device);
    w.U64(object.inode);
    w.U32(p.window_offset);
    w.U8(p.window_size);
    w.U8(p.syscall_offset);
    w.Raw(ByteSpan(p.original, p.window_size));
  }
  return w.Take();
}

namespace {

// Applies a plan where this process's objects are the same files and hold the same bytes.
// Returns the number of sites patched. REQUIRES: the patch lock; start-up; `bulk_object`'s text
// writable already.
int ApplyPlan(ByteSpan plan, const PatchableObject* bulk_object) {
  bool writable[kMaxObjects] = {};
  if (bulk_object != nullptr) writable[bulk_object - objects] = true;  // the caller restores it
  ByteReader r(plan);
  uint32_t count;
  if (!r.U32(&count) || count > kMaxApplied) return 0;
  int patched = 0;
  for (uint32_t i = 0; i < count; ++i) {
    uint64_t device, inode;
    uint32_t offset;
    uint8_t size, syscall_offset, original[sizeof(AppliedPatch::original)];
    if (!r.U64(&device) || !r.U64(&inode) || !r.U32(&offset) || !r.U8(&size) || !r.U8(&syscall_offset) ||
        size < kJumpSize || size > sizeof(original) || syscall_offset > size ||
        !r.Raw(MutableByteSpan(original, size))) {
      return patched;  // malformed: the rest is decoded as usual
    }
    const PatchableObject* object = ObjectFromFile(device, inode);
    if (object == nullptr || offset + uint64_t{size} + 2 > object->text_end - object->text_begin) continue;
    const uintptr_t window = object->text_begin + offset;
    // The same bytes, and a `syscall` where the plan says.
    const auto* live = reinterpret_cast<const uint8_t*>(window);
    if (std::memcmp(live, original, size) != 0 || live[syscall_offset] != 0x0f || live[syscall_offset + 1] != 0x05) {
      continue;
    }
    // Each object's text is made writable once for all its sites (the C library's already is).
    const auto index = static_cast<size_t>(object - objects);
    if (!writable[index]) {
      if (!SetWritable(object->text_begin, object->text_end - object->text_begin, true)) continue;
      writable[index] = true;
    }
    if (PatchKnownWindow(object, window, size, syscall_offset)) ++patched;
  }
  for (int k = 0; k < object_count; ++k) {
    if (writable[k] && &objects[k] != bulk_object) SetWritable(objects[k].text_begin, objects[k].text_end - objects[k].text_begin, false);
  }
  return patched;
}

}  // namespace

int CodePatcher::PatchAtStartUp(ByteSpan plan) {
  PatchLock lock;
  (void)Decoder();  // made now: the SIGSYS handler decodes later, and must not initialize it
  object_count = 0;
  dl_iterate_phdr(LearnObject, nullptr);
  sync_core_available =
      RawSyscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE, 0, 0) == 0;
  void* libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
  if (libc == nullptr) return 0;
  single_threaded = static_cast<const char*>(dlsym(libc, "__libc_single_threaded"));
  const PatchableObject* libc_text = ObjectOf(reinterpret_cast<uintptr_t>(dlsym(libc, "read")));
  const auto trampolines = reinterpret_cast<uintptr_t>(scone_trampolines_begin);
  const size_t trampolines_size = scone_trampolines_end - scone_trampolines_begin;
  if (libc_text == nullptr ||
      !SetWritable(libc_text->text_begin, libc_text->text_end - libc_text->text_begin, true)) {
    dlclose(libc);
    return 0;
  }
  if (!SetWritable(trampolines, trampolines_size, true)) {
    SetWritable(libc_text->text_begin, libc_text->text_end - libc_text->text_begin, false);
    dlclose(libc);
    return 0;
  }
  bulk_writable = true;
  // A plan from the program that executed this one saves decoding what it decoded already.
  int patched = ApplyPlan(plan, libc_text);
  const bool from_plan = patched > 0;
  std::vector<uintptr_t> done;
  for (const char* name : from_plan ? std::span<const char* const>() : std::span(kWrappersPatchedAtStartUp)) {
    // The function's extent from the unwind table (a binary search; dladdr1 would walk the
    // whole symbol table for each).
    auto begin = reinterpret_cast<uintptr_t>(dlsym(libc, name));
    FunctionRange fn;
    if (begin == 0 || !libc_text->functions.Find(begin, &fn) || fn.begin != begin) continue;
    if (std::find(done.begin(), done.end(), begin) != done.end()) continue;  // an alias
    done.push_back(begin);
    patched += PatchFunction(libc_text, fn.begin, fn.end);
  }
  for (const char* name : from_plan ? std::span<const char* const>() : std::span(kCallersPatchedAtStartUp)) {
    auto begin = reinterpret_cast<uintptr_t>(dlsym(libc, name));
    FunctionRange fn;
    if (begin == 0 || !libc_text->functions.Find(begin, &fn) || fn.begin != begin) continue;
    // Two calls deep: a waiter that gives up its place (__condvar_cancel_waiting) releases the
    // condition variable's lock in a function of its own.
    std::vector<FunctionRange> callees = DirectCallees(libc_text, fn);
    for (size_t i = 0, first_level = callees.size(); i < first_level; ++i) {
      for (const FunctionRange& next : DirectCallees(libc_text, callees[i])) callees.push_back(next);
    }
    for (const FunctionRange& callee : callees) {
      if (std::find(done.begin(), done.end(), callee.begin) != done.end()) continue;
      done.push_back(callee.begin);
      patched += PatchFunction(libc_text, callee.begin, callee.end);
    }
  }
  bulk_writable = false;
  SetWritable(trampolines, trampolines_size, false);
  SetWritable(libc_text->text_begin, libc_text->text_end - libc_text->text_begin, false);
  dlclose(libc);
  stat_start_up.store(patched, std::memory_order_relaxed);
  return patched;
}

uintptr_t CodePatcher::PatchTrapped(uintptr_t site) {
  PatchLock lock;
  if (IsRefused(site)) return 0;
  const PatchableObject* object = ObjectOf(site);
  FunctionRange fn;
  if (object == nullptr) {
    Refuse(site);
    return 0;
  }
  if (!object->functions.Find(site, &fn)) {
    // glibc's clone wrappers end their unwind entry right before the `syscall` (the child's
    // stack is not the one it describes): the site is the first byte after a function's range.
    if (!object->functions.Find(site - 1, &fn) || fn.end != site) {
      Refuse(site);
      return 0;
    }
    fn.end = site + 2;
  }
  // Decode from the function's first instruction to the site: the instruction before it.
  Instruction prev{}, insn{};
  uintptr_t at = fn.begin;
  bool have_prev = false;
  while (at < site) {
    if (!Decode(at, fn.end, &insn)) break;
    prev = insn;
    have_prev = true;
    at += insn.length;
  }
  Instruction here;
  if (at != site || !have_prev || !Decode(site, fn.end, &here) || !here.is_syscall || !prev.relocatable ||
      prev.length < kJumpSize) {
    Refuse(site);
    return 0;
  }
  uintptr_t after_pre;
  uintptr_t trampoline = EmitTrampoline(prev.address, prev.length, 0, 0, site + 2, &after_pre);
  uint8_t bytes[16];
  uint8_t original[16];
  std::memcpy(original, reinterpret_cast<const void*>(prev.address), prev.length);
  if (trampoline == 0 || prev.length > sizeof(bytes) || !JumpBytes(prev.address, prev.length, trampoline, bytes) ||
      !WriteLiveCode(prev.address, bytes, prev.length)) {
    Refuse(site);
    return 0;
  }
  RecordPatch(object, prev.address, prev.length, prev.length, original);
  stat_later.fetch_add(1, std::memory_order_relaxed);
  return after_pre;
}

void CodePatcher::BeforeFork() { LockPatching(); }

void CodePatcher::AfterFork() { UnlockPatching(); }

CodePatcher::Stats CodePatcher::GetStats() {
  Stats stats = {stat_start_up.load(), stat_later.load(), stat_refused.load(), {}};
  PatchLock lock;
  for (const RefusedSite& r : refused) {
    if (r.site == 0) continue;
    // Keep the busiest few.
    auto* slot = std::min_element(std::begin(stats.busiest_refused), std::end(stats.busiest_refused),
                                  [](const auto& a, const auto& b) { return a.second < b.second; });
    if (r.calls > slot->second) *slot = {r.site, r.calls};
  }
  return stats;
}

CodeRange RuntimeCodeRange() {
  if (own_range.begin == 0) {
    PatchLock lock;
    own_range_only = true;
    dl_iterate_phdr(LearnObject, nullptr);
    own_range_only = false;
  }
  return own_range;
}

}  // namespace scone::runtime
