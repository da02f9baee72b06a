// A preloaded library that leaves code behind and hides its own file's code before the runtime
// attests: an anonymous executable page stays, and its text segment is made non-executable on
// the way out of its constructor (a jump to libc's mprotect, which returns to the loader).
#define _GNU_SOURCE
#include <link.h>
#include <stdint.h>
#include <sys/mman.h>

static int (*volatile protect)(void*, size_t, int) = mprotect;
static void* text;
static size_t text_length;

static int FindText(struct dl_phdr_info* info, size_t size, void* data) {
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)* p = &info->dlpi_phdr[i];
    if (p->p_type != PT_LOAD || !(p->p_flags & PF_X)) continue;
    uintptr_t start = info->dlpi_addr + p->p_vaddr, end = start + p->p_memsz;
    if ((uintptr_t)FindText < start || (uintptr_t)FindText >= end) continue;
    text = (void*)(start & ~4095ul);
    text_length = ((end + 4095) & ~4095ul) - (uintptr_t)text;
    return 1;
  }
  return 0;
}

__attribute__((constructor)) static void Hide(void) {
  unsigned char* page = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  page[0] = 0xc3;  // ret: what a payload would run from
  mprotect(page, 4096, PROT_READ | PROT_EXEC);
  dl_iterate_phdr(FindText, 0);
  protect(text, text_length, PROT_READ);  // a tail call: no return into the text it hides
}
