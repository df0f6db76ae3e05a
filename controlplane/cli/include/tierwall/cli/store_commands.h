// tierctl commands against the cluster store (etcd): publish a policy for
// every node (`tierctl apply PATH --store URL`), show what the cluster
// holds, and set up etcd's users and roles. See docs/cluster.md.
//
// Exit codes as every tierctl command: 0 success; 1 the policy is invalid,
// etcd refused (permission, authentication, another publisher won the
// race); 2 usage (a bad URL, a missing password file); 3 etcd could not be
// reached (no endpoint answered, TLS failed).
// Results on `out` (one JSON document with -o json), diagnostics on `err`.
// Passwords never come from a command-line value: a file or the
// environment.
#pragma once

#include <chrono>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

namespace tierwall::cli {

struct StoreOptions {
  std::string endpoints;                    // --store URL[,URL...]
  std::string cluster = "default";          // --cluster
  std::string user;                         // --store-user
  std::string password_file;                // --store-password-file
  std::optional<std::string> password_env;  // $TIERWALL_STORE_PASSWORD, when set
  std::string ca_file;                      // --store-ca
  std::string cert_file;                    // --store-cert
  std::string key_file;                     // --store-key
  std::string output = "text";              // text | json
  std::string author;                       // --author; default: login@hostname
  std::chrono::milliseconds timeout{10'000};
};

// Validates PATHs as `tierctl validate` does (same loader, same
// FILE:LINE:COL diagnostics; nothing is written when there is an error),
// then publishes the documents and the meta in one guarded transaction.
int store_apply(const StoreOptions& options, const std::vector<std::string>& paths,
                std::ostream& out, std::ostream& err);

// The policy meta, its documents, the nodes and their endpoint counts.
int store_show(const StoreOptions& options, std::ostream& out, std::ostream& err);

struct InitAuthOptions {
  std::string root_password_file;    // required
  std::string author_user;           // optional: also create this author
  std::string author_password_file;  // required with author_user
};
// Creates the author role (and user), the root user, and enables auth.
int store_init_auth(const StoreOptions& options, const InitAuthOptions& init, std::ostream& out,
                    std::ostream& err);

// Creates role and user tierwall-node-NODE (password from the file); run
// as root (--store-user root).
int store_add_node(const StoreOptions& options, const std::string& node,
                   const std::string& password_file, std::ostream& out, std::ostream& err);

}  // namespace tierwall::cli
