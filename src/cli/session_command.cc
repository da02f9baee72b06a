// `scone session create|update|show|ca|list|rm`: sessions on CAS, as this user (client identity under
// the state directory). Without --cas, the local CAS is used (started if needed).
#include <cstdio>

#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "cli/local_cas.h"
#include "os/file.h"
#include "policy/session.h"

namespace scone::cli {
namespace {

struct SessionArgs {
  std::string file;
  std::string name;
  std::string cas;
  std::string cas_cert;
};

Status Submit(const SessionArgs& a, bool update) {
  SCONE_ASSIGN_OR_RETURN(Bytes text, os::ReadWholeFile(a.file, 1 << 20));
  std::string body(text.begin(), text.end());
  // Checked here too, for a message that names the file.
  auto parsed = policy::Session::Parse(body);
  if (!parsed.ok()) return parsed.status().Annotate(a.file);
  if (update && !parsed->predecessor) {
    return InvalidArgument(a.file + ": an update names the current session's hash as predecessor "
                           "(printed by scone session show " + parsed->name + ")");
  }
  SCONE_ASSIGN_OR_RETURN(cas::CasEndpoint e, ResolveCas(a.cas, a.cas_cert));
  cas::Client client(e);
  SCONE_ASSIGN_OR_RETURN(cas::CasReply r, client.Post("/session", body, "application/yaml"));
  if (r.status != 200 && r.status != 201) return cas::ErrorFromReply(r);
  auto j = nlohmann::json::parse(r.body, nullptr, false);
  std::printf("%s session %s: hash %s\n", r.status == 201 ? "created" : "updated",
              parsed->name.c_str(), j.is_discarded() ? "?" : j.value("hash", "?").c_str());
  return Status::Ok();
}

Status Show(const SessionArgs& a) {
  SCONE_ASSIGN_OR_RETURN(cas::CasEndpoint e, ResolveCas(a.cas, a.cas_cert));
  cas::Client client(e);
  SCONE_ASSIGN_OR_RETURN(cas::CasReply r, client.Get("/session/" + a.name));
  if (r.status != 200) return cas::ErrorFromReply(r);
  std::fwrite(r.body.data(), 1, r.body.size(), stdout);
  std::fprintf(stderr, "scone: session %s hash %s\n", a.name.c_str(),
               ToHex(policy::Session::HashOf(r.body)).c_str());
  return Status::Ok();
}

// Deletes the session with its secrets and volume keys: data encrypted under them is gone.
Status Remove(const SessionArgs& a) {
  SCONE_ASSIGN_OR_RETURN(cas::CasEndpoint e, ResolveCas(a.cas, a.cas_cert));
  cas::Client client(e);
  SCONE_ASSIGN_OR_RETURN(cas::CasReply r, client.Delete("/session/" + a.name));
  if (r.status != 200) return cas::ErrorFromReply(r);
  std::printf("deleted session %s (its secrets and volume keys with it)\n", a.name.c_str());
  return Status::Ok();
}

Status List(const SessionArgs& a) {
  SCONE_ASSIGN_OR_RETURN(cas::CasEndpoint e, ResolveCas(a.cas, a.cas_cert));
  cas::Client client(e);
  SCONE_ASSIGN_OR_RETURN(cas::CasReply r, client.Get("/session"));
  if (r.status != 200) return cas::ErrorFromReply(r);
  auto j = nlohmann::json::parse(r.body, nullptr, false);
  if (j.is_discarded() || !j.contains("sessions")) return Internal("CAS sent an unreadable list");
  for (const auto& n : j["sessions"]) std::printf("%s\n", n.get<std::string>().c_str());
  return Status::Ok();
}

}  // namespace

Status PrintSessionCa(const std::string& cas, const std::string& cas_cert, const std::string& session) {
  SCONE_ASSIGN_OR_RETURN(cas::CasEndpoint e, ResolveCas(cas, cas_cert));
  cas::Client client(e);
  SCONE_ASSIGN_OR_RETURN(std::string pem, cas::FetchSessionCa(client, session));
  std::fwrite(pem.data(), 1, pem.size(), stdout);
  return Status::Ok();
}

void RegisterSessionCommands(CLI::App& app, Action& action) {
  auto args = std::make_shared<SessionArgs>();
  CLI::App* session = app.add_subcommand("session", "Sessions (policies) on CAS");
  session->require_subcommand(1);
  auto cas_options = [args](CLI::App* cmd) { AddCasOptions(cmd, &args->cas, &args->cas_cert); };
  CLI::App* create = session->add_subcommand("create", "Create a session from a YAML file");
  create->add_option("FILE", args->file, "Session file")->required();
  cas_options(create);
  create->callback([&action, args] { action = [args] { return Submit(*args, false); }; });
  CLI::App* update = session->add_subcommand("update", "Replace a session (FILE names its predecessor)");
  update->add_option("FILE", args->file, "Session file")->required();
  cas_options(update);
  update->callback([&action, args] { action = [args] { return Submit(*args, true); }; });
  CLI::App* show = session->add_subcommand("show", "Print a session as stored (its hash on stderr)");
  show->add_option("NAME", args->name, "Session name")->required();
  cas_options(show);
  show->callback([&action, args] { action = [args] { return Show(*args); }; });
  CLI::App* ca = session->add_subcommand("ca", "Print the certificate (PEM) of the CA that certifies the session's services");
  ca->add_option("NAME", args->name, "Session name")->required();
  cas_options(ca);
  ca->callback([&action, args] { action = [args] { return PrintSessionCa(args->cas, args->cas_cert, args->name); }; });
  CLI::App* list = session->add_subcommand("list", "Names of the sessions you may read");
  cas_options(list);
  list->callback([&action, args] { action = [args] { return List(*args); }; });
  CLI::App* rm = session->add_subcommand(
      "rm", "Delete a session with its secrets and volume keys (what was encrypted under them is lost)");
  rm->add_option("NAME", args->name, "Session name")->required();
  cas_options(rm);
  rm->callback([&action, args] { action = [args] { return Remove(*args); }; });
}

}  // namespace scone::cli
