// Extended attributes of what lies in a volume.
//
// The kernel would store their values as the program gives them, next to the ciphertext:
// unencrypted and unauthenticated (a hostile finding: `curl --xattr` keeps a download's URL,
// query and signature included, in user.xdg.origin.url; `cp -a`, `tar --xattrs` and
// `shutil.copy2` carry such values along). A volume keeps none: the user. and trusted.
// namespaces are not supported there (EOPNOTSUPP, as on a file system without them, which
// these programs expect), and attributes of theirs that the host planted are neither listed
// nor read. system. (ACLs) and security. (capabilities, labels) stay the kernel's: metadata
// that decides access, visible to the host like a file's mode.
#pragma once

#include "runtime/files/file_calls.h"

namespace scone::runtime::files {

// Linux 6.13's calls by a directory and a path, which glibc does not call yet (its headers here
// do not name them).
inline constexpr long kSetXattrAt = 463;
inline constexpr long kGetXattrAt = 464;
inline constexpr long kListXattrAt = 465;
inline constexpr long kRemoveXattrAt = 466;

// setxattr, getxattr, listxattr, removexattr in all their forms (path, l-, f-, *at): the
// result for a target in a protected region of a volume, kNotMine for the rest.
long XattrCall(Runtime& rt, long nr, const long* a);

}  // namespace scone::runtime::files
