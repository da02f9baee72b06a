#include "stack/stack_images.h"

#include <cctype>
#include <sstream>

#include "crypto/primitives.h"
#include "image/sconify.h"
#include "policy/session.h"

namespace scone::stack {
namespace {

constexpr char kSourceLabel[] = "scone.source-id";
constexpr char kRuntimeLabel[] = "scone.runtime";
constexpr const char* kServiceLabel = image::kSessionLabel;  // sconify's session, base64

Result<std::string> FromBase64(const std::string& text) {
  std::string out(text.size(), '\0');
  long n = crypto::Base64Decode(text, reinterpret_cast<uint8_t*>(out.data()));
  if (n < 0) return DataCorrupted("the label " + std::string(kServiceLabel) + " is not base64");
  out.resize(static_cast<size_t>(n));
  return out;
}

// The facts the session needs, from the session sconify wrote for the image.
Result<ServiceImage> FactsFromSession(const std::string& image, const std::string& session_yaml) {
  auto session = policy::Session::Parse(session_yaml);
  if (!session.ok())
    return session.status().Annotate("image " + image + "'s label " + kServiceLabel);
  if (session->services.size() != 1 || session->services[0].mrenclaves.size() != 1) {
    return DataCorrupted("image " + image + "'s label " + kServiceLabel +
                         " names no single service");
  }
  const policy::Service& s = session->services[0];
  ServiceImage facts;
  facts.image = image;
  facts.measurement = s.mrenclaves[0];
  std::istringstream words(s.command);
  for (std::string w; words >> w;) facts.command.push_back(w);
  for (const auto& kv : s.environment) facts.environment.push_back(kv);
  facts.pwd = s.pwd;
  if (const policy::Image* img = session->FindImage(s.image_name)) {
    for (const auto& f : img->injection_files) facts.injected.push_back({f.path, f.content});
  }
  return facts;
}

}  // namespace

std::string StackImageName(const std::string& stack, const std::string& service) {
  std::string name = "scone-stack/" + stack + "-" + service;
  for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return name;
}

Result<StackImage> ImageForService(const image::DockerClient& docker, const std::string& stack,
                                   const StackService& service, const std::string& runtime_library,
                                   const std::string& runtime_hash, bool quiet) {
  const std::string target = StackImageName(stack, service.name);
  const std::string source_id = docker.ImageId(service.image);
  if (source_id.empty())
    return NotFound("image " + service.image + " does not exist");  // (the caller names the service)
  if (docker.ImageExists(target)) {
    SCONE_ASSIGN_OR_RETURN(image::ImageConfig config, docker.Inspect(target));
    auto label = [&](const char* key) {
      auto it = config.labels.find(key);
      return it == config.labels.end() ? std::string() : it->second;
    };
    if (label(kSourceLabel) == source_id && label(kRuntimeLabel) == runtime_hash &&
        label(kStackLabel) == stack) {
      SCONE_ASSIGN_OR_RETURN(std::string yaml, FromBase64(label(kServiceLabel)));
      SCONE_ASSIGN_OR_RETURN(ServiceImage facts, FactsFromSession(target, yaml));
      return StackImage{facts, false};
    }
  }
  image::SconifyOptions o;
  o.from = service.image;
  o.to = target;
  o.service_name = service.name;
  o.session_name = stack;
  o.las_addr = kServiceLasPath;
  o.runtime_library = runtime_library;
  o.labels = {{kStackLabel, stack}, {kSourceLabel, source_id}, {kRuntimeLabel, runtime_hash}};
  o.session_label = true;  // the image's own settings only: no stack value, no secret
  SCONE_ASSIGN_OR_RETURN(image::SconifyResult r, image::Sconify(docker, o, quiet));
  SCONE_ASSIGN_OR_RETURN(ServiceImage facts, FactsFromSession(target, r.session_yaml));
  return StackImage{facts, true};
}

}  // namespace scone::stack
