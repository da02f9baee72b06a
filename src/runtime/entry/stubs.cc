// The entry's machine code: the stub every trampoline calls, the stub a new thread or process
// runs first, the restorer of the runtime's own signal handler, and the area trampolines are
// written into. All of it lies in the runtime's own text, the range Syscall User Dispatch lets
// through (the trampolines make some calls natively, see Action::kNative).
//
// The stubs behave like the `syscall` instruction they stand for: every register but rax (the
// result), rcx and r11 keeps its value, the vector registers included (code around a `syscall`
// may keep values in them).
#include <cstddef>

#include "runtime/entry/entry.h"

static_assert(sizeof(scone::runtime::SyscallFrame) == 80, "the stubs' frame layout");
static_assert(offsetof(scone::runtime::SyscallFrame, new_stack) == 56, "the stubs' frame layout");
static_assert(offsetof(scone::runtime::SyscallFrame, stack_pointer) == 64, "the stubs' frame layout");

#define SCONE_SAVE_XMM                                                                        \
  "movaps %xmm0, 0(%rsp)\n movaps %xmm1, 16(%rsp)\n movaps %xmm2, 32(%rsp)\n"                 \
  "movaps %xmm3, 48(%rsp)\n movaps %xmm4, 64(%rsp)\n movaps %xmm5, 80(%rsp)\n"                \
  "movaps %xmm6, 96(%rsp)\n movaps %xmm7, 112(%rsp)\n movaps %xmm8, 128(%rsp)\n"              \
  "movaps %xmm9, 144(%rsp)\n movaps %xmm10, 160(%rsp)\n movaps %xmm11, 176(%rsp)\n"           \
  "movaps %xmm12, 192(%rsp)\n movaps %xmm13, 208(%rsp)\n movaps %xmm14, 224(%rsp)\n"          \
  "movaps %xmm15, 240(%rsp)\n"
// The registers a system call takes its number and arguments in, kept in the frame after the
// vector registers (the SyscallFrame layout from offset 256).
#define SCONE_SAVE_ARGUMENTS                                                                  \
  "mov %rax, 256(%rsp)\n mov %rdi, 264(%rsp)\n mov %rsi, 272(%rsp)\n mov %rdx, 280(%rsp)\n"   \
  "mov %r10, 288(%rsp)\n mov %r8, 296(%rsp)\n mov %r9, 304(%rsp)\n"
#define SCONE_RESTORE_ARGUMENTS                                                               \
  "mov 264(%rsp), %rdi\n mov 272(%rsp), %rsi\n mov 280(%rsp), %rdx\n mov 288(%rsp), %r10\n"   \
  "mov 296(%rsp), %r8\n mov 304(%rsp), %r9\n"
#define SCONE_RESTORE_XMM                                                                     \
  "movaps 0(%rsp), %xmm0\n movaps 16(%rsp), %xmm1\n movaps 32(%rsp), %xmm2\n"                 \
  "movaps 48(%rsp), %xmm3\n movaps 64(%rsp), %xmm4\n movaps 80(%rsp), %xmm5\n"                \
  "movaps 96(%rsp), %xmm6\n movaps 112(%rsp), %xmm7\n movaps 128(%rsp), %xmm8\n"              \
  "movaps 144(%rsp), %xmm9\n movaps 160(%rsp), %xmm10\n movaps 176(%rsp), %xmm11\n"           \
  "movaps 192(%rsp), %xmm12\n movaps 208(%rsp), %xmm13\n movaps 224(%rsp), %xmm14\n"          \
  "movaps 240(%rsp), %xmm15\n"

// scone_syscall_stub: rax = number, rdi rsi rdx r10 r8 r9 = arguments (as for `syscall`),
// called by a trampoline after it stepped over the red zone (the program's stack pointer is
// rbp + 144 once the stub has pushed rbp).
// Returns rax = result and r11 = the Action; for kNative, rax and the argument registers hold
// the call to make; for kChildOnStack, rcx holds the new stack pointer.
// scone_child_stub: calls EnterNewThread, keeping every register.
// scone_signal_restorer: sa_restorer of the runtime's signal handlers.
__asm__(R"(
  .text
  .globl scone_syscall_stub
  .hidden scone_syscall_stub
  .type scone_syscall_stub, @function
scone_syscall_stub:
  .cfi_startproc
  push %rbp
  .cfi_def_cfa_offset 16
  .cfi_offset %rbp, -16
  mov %rsp, %rbp
  .cfi_def_cfa_register %rbp
  and $-16, %rsp
  sub $336, %rsp
)" SCONE_SAVE_XMM SCONE_SAVE_ARGUMENTS R"(
  movq $0, 312(%rsp)
  lea 144(%rbp), %rcx
  mov %rcx, 320(%rsp)
  lea 256(%rsp), %rdi
  call scone_dispatch_from_trampoline
  mov %rdx, %r11
  cmp $1, %r11
  jne 1f
  mov 256(%rsp), %rax
1:
)" SCONE_RESTORE_ARGUMENTS R"(
  mov 312(%rsp), %rcx
)" SCONE_RESTORE_XMM R"(
  mov %rbp, %rsp
  .cfi_def_cfa_register %rsp
  pop %rbp
  .cfi_def_cfa_offset 8
  ret
  .cfi_endproc
  .size scone_syscall_stub, .-scone_syscall_stub

  .globl scone_child_stub
  .hidden scone_child_stub
  .type scone_child_stub, @function
scone_child_stub:
  push %rbp
  mov %rsp, %rbp
  and $-16, %rsp
  sub $336, %rsp
)" SCONE_SAVE_XMM SCONE_SAVE_ARGUMENTS R"(
  mov %rcx, 312(%rsp)
  mov %r11, 320(%rsp)
  call scone_enter_new_thread
  mov 256(%rsp), %rax
)" SCONE_RESTORE_ARGUMENTS R"(
  mov 312(%rsp), %rcx
  mov 320(%rsp), %r11
)" SCONE_RESTORE_XMM R"(
  mov %rbp, %rsp
  pop %rbp
  ret
  .size scone_child_stub, .-scone_child_stub

  .globl scone_signal_restorer
  .hidden scone_signal_restorer
  .type scone_signal_restorer, @function
scone_signal_restorer:
  mov $15, %eax
  syscall
  hlt
  .size scone_signal_restorer, .-scone_signal_restorer

  .section .scone_trampolines, "ax", @progbits
  .balign 4096
  .globl scone_trampolines_begin
  .hidden scone_trampolines_begin
scone_trampolines_begin:
  .fill 262144, 1, 0xcc
  .globl scone_trampolines_end
  .hidden scone_trampolines_end
scone_trampolines_end:
  .text
)");
