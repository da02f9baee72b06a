// The Debian mirror this host's apt uses (the first `deb` source of Debian proper): base images
// are bootstrapped from it, since no image registry can be reached from these machines.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace scone::image {

// From the text of a deb822 .sources file or a one-line sources.list; "" if none names Debian.
std::string MirrorFromSources(std::string_view text);
// Looks through /etc/apt/sources.list and /etc/apt/sources.list.d/*.{list,sources}.
Result<std::string> HostDebianMirror();

}  // namespace scone::image
