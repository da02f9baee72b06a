#include "image/image_measurement.h"

#include "image/root_path.h"

namespace scone::image {

Result<attest::ImageDescription> DescribeImageProgram(const std::string& root, const std::string& program,
                                                      const std::string& interpreter, const std::string& runtime,
                                                      const std::string& trace) {
  SCONE_ASSIGN_OR_RETURN(std::string program_file, ResolveInRoot(root, program));
  SCONE_ASSIGN_OR_RETURN(std::string interp_file, ResolveInRoot(root, interpreter));
  SCONE_ASSIGN_OR_RETURN(std::string runtime_file, ResolveInRoot(root, runtime));
  attest::ImageDescription d;
  d.runtime_version = SCONE_VERSION_STRING;
  d.settings = attest::RuntimeSettings();
  SCONE_ASSIGN_OR_RETURN(crypto::Hash exe_hash, attest::HashFile(program_file));
  d.files.push_back({attest::MeasuredFile::Kind::kExecutable, "main", exe_hash});
  SCONE_ASSIGN_OR_RETURN(std::vector<std::string> paths, attest::FilesInLoaderTrace(trace, program, " in the image"));
  for (const std::string& path : paths) {
    SCONE_ASSIGN_OR_RETURN(std::string file, ResolveInRoot(root, path));
    if (file == program_file) continue;
    using Kind = attest::MeasuredFile::Kind;
    Kind kind = file == interp_file ? Kind::kInterpreter : file == runtime_file ? Kind::kRuntime : Kind::kLibrary;
    SCONE_ASSIGN_OR_RETURN(attest::MeasuredFile f, attest::MeasureMappedFile(kind, file, path));
    d.files.push_back(std::move(f));
  }
  return d;
}

}  // namespace scone::image
