// The nftables netlink layer: turns a Plan into one atomic kernel batch.
//
// Two halves, kept apart so the first can be tested without a kernel:
//   encode_*()  pure functions: Plan / set elements -> the bytes of one
//               nfnetlink batch plus a map from each message's sequence
//               number to the Plan object it creates (so a kernel error
//               names the rule or set it rejected);
//   NftSocket   the transport: one NETLINK_NETFILTER socket that sends a
//               batch with a single sendmsg, checks every ACK, and runs the
//               few queries the agent needs (generation id, counts,
//               counters).
//
// Atomic replacement (apply_plan): one batch
//   add table T (no-op if present); delete table T; add table T;
//   counters; sets; set elements; chains; rules
// guarded by NFNL_BATCH_GENID when the caller passes the generation it
// last read: if anybody committed in between, the kernel rejects the whole
// batch with ERESTART and nothing changes. Any rejected message likewise
// aborts the whole batch; the old ruleset stays in place.
//
// Error model: no exceptions. Operations return std::optional<ApplyError>
// (nullopt on success) or a value plus an optional ApplyError out-param.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tierwall/dataplane/address.h"
#include "tierwall/dataplane/nft/mnl_socket.h"
#include "tierwall/dataplane/nft/plan.h"
#include "tierwall/dataplane/ruleset.h"

struct mnl_socket;
struct nlmsghdr;

namespace tierwall::dataplane::nft {

// Why the kernel (or this layer) refused a change.
struct ApplyError {
  int err = 0;          // positive errno; ERESTART: concurrent ruleset change
  std::string message;  // one line for people: what, which object, why
  RuleId rule = 0;      // RuleDef::origin of the rejected rule; 0 otherwise
  std::string object;   // "rule fwd4#3", "set ep4", "chain fwd4", "batch", ...
};
using ApplyResult = std::optional<ApplyError>;  // nullopt: success

// The Plan object one batch message creates or deletes.
struct BatchObject {
  enum class Kind : std::uint8_t { Table, Counter, Set, Elements, Chain, Rule };
  Kind kind = Kind::Table;
  std::string name;       // table, counter, set or chain name
  std::string chain;      // Rule: its chain
  std::size_t index = 0;  // Rule: 1-based position in its chain; Elements: chunk
  RuleId rule = 0;        // Rule: RuleDef::origin

  // "rule fwd4#3", "set ep4", "elements of set ep4 (chunk 2)", ...
  [[nodiscard]] std::string describe() const;
};

// One nfnetlink batch (BATCH_BEGIN ... BATCH_END), ready for one sendmsg.
// Every message between begin and end requests an ACK and has an entry in
// `objects`; begin/end themselves are only acknowledged on failure.
struct EncodedBatch {
  std::vector<std::uint8_t> bytes;
  std::uint32_t begin_seq = 0;
  std::uint32_t end_seq = 0;
  std::map<std::uint32_t, BatchObject> objects;  // seq -> object
  std::size_t largest_message = 0;               // bytes, for the size contract
};

// Set elements never exceed this many bytes of element attributes per
// NEWSETELEM/DELSETELEM message (the nest length is a u16), so no message is
// larger than ~64 KiB however big the set.
inline constexpr std::size_t kMaxElementBytesPerMessage = 60 * 1024;

// One key of an interval set as the kernel stores it.
struct IntervalKey {
  std::vector<std::uint8_t> key;  // network byte order, 4 or 16 bytes
  bool end = false;               // NFT_SET_ELEM_INTERVAL_END
  bool open = false;              // range runs to the last address (nft's
                                  // "interval open" element userdata)
};

// The kernel keys of an interval set holding `prefixes`, encoded as nft
// 1.0.x does: prefixes are merged (overlapping and adjacent ones join), each
// range [lo, hi] becomes lo plus an interval-end key hi+1 (none when hi is
// the last address: lo is then marked open), and when the first range does
// not start at 0 a leading interval-end key 0 comes first. Sorted ascending.
// Prefixes of the other family are ignored. Pure.
std::vector<IntervalKey> interval_keys(std::span<const Cidr> prefixes, IpAddress::Family family);

// Checks what encode_plan() relies on: names fit the kernel's limits (255
// bytes), log prefixes fit (127 bytes), rules are small enough for one
// message, set members have the set's family and plain sets hold only
// addresses (host prefixes). Kernel-side checks (unknown chain, unknown set)
// are left to the kernel, which names the message. Pure.
ApplyResult validate_plan(const Plan& plan);

// The atomic-replacement batch of `plan` (see the file comment). Sequence
// numbers start at `first_seq`. With `genid` the batch carries
// NFNL_BATCH_GENID. Precondition: validate_plan(plan) succeeded. Pure.
EncodedBatch encode_plan(const Plan& plan, std::uint32_t first_seq,
                         std::optional<std::uint32_t> genid);

// DELSETELEM for `remove`, then NEWSETELEM for `add`, grouped per set, in
// one batch. For plain (non-interval) sets: an address is one key. Pure.
EncodedBatch encode_elements(std::string_view table, std::span<const Element> add,
                             std::span<const Element> remove, std::uint32_t first_seq,
                             std::optional<std::uint32_t> genid);

// A batch with the single message `delete table inet <table>`. Pure.
EncodedBatch encode_delete_table(std::string_view table, std::uint32_t first_seq);

// What the kernel holds for one table. `elements` counts kernel keys, so an
// interval set contributes its interval_keys() (ends included).
struct KernelCounts {
  std::size_t tables = 0;
  std::size_t chains = 0;
  std::size_t rules = 0;
  std::size_t sets = 0;
  std::size_t elements = 0;
  friend bool operator==(const KernelCounts&, const KernelCounts&) = default;
};

// The counts a successful apply_plan(plan) leaves in the kernel. Pure.
KernelCounts expected_counts(const Plan& plan);

// One ACK (NLMSG_ERROR) as received.
struct Ack {
  std::uint32_t seq = 0;
  int err = 0;              // positive errno; 0: success
  std::string ext_message;  // NLMSGERR_ATTR_MSG, when the kernel gave one
};

// Counter values: name -> (packets, bytes).
using CounterValues = std::map<std::string, std::pair<std::uint64_t, std::uint64_t>>;

// Size and duration of the last batch a socket sent.
struct BatchStats {
  std::size_t messages = 0;  // messages that requested an ACK
  std::size_t bytes = 0;
  double send_ms = 0;   // sendmsg (the kernel validates and commits inside)
  double total_ms = 0;  // encode + send + every ACK read
};

// A bound NETLINK_NETFILTER socket with a sequence counter.
//
// Threads: not thread-safe; use from one thread at a time. The socket lives
// in the network namespace of the thread that opened it, and every
// operation acts on that namespace whichever thread calls it later.
// Ownership: move-only; the destructor closes the socket.
// Blocking: every call blocks until the kernel has answered (ACKs of a
// batch arrive while sendmsg runs, so that is one round trip).
class NftSocket {
 public:
  // Opens and binds the socket (auto port id), enables extended and capped
  // ACKs, and raises the receive buffer (SO_RCVBUFFORCE when permitted).
  static std::optional<NftSocket> open(std::string* error = nullptr);

  NftSocket(NftSocket&&) noexcept = default;
  NftSocket& operator=(NftSocket&&) noexcept = default;
  NftSocket(const NftSocket&) = delete;
  NftSocket& operator=(const NftSocket&) = delete;
  ~NftSocket() = default;

  // The ruleset generation id (NFT_MSG_GETGEN); pass it to apply_* to detect
  // concurrent writers. nullopt (and *error) when the query fails.
  std::optional<std::uint32_t> get_generation(ApplyError* error = nullptr);

  // Replaces table inet <plan.table> with `plan` atomically (see file
  // comment). With `expected_genid`, fails with err == ERESTART and message
  // "concurrent ruleset change detected ..." when the ruleset changed since.
  // On a kernel error nothing changed. On a transport error (ETIMEDOUT,
  // ENOBUFS: not expected, buffers are sized per batch) the outcome is
  // unknown: re-read the generation and apply again.
  ApplyResult apply_plan(const Plan& plan, std::optional<std::uint32_t> expected_genid);

  // Removes then adds set elements of table inet <table> in one batch.
  // Adding an element already present is a no-op; removing an absent one
  // fails the batch (ENOENT, naming the set). Plain sets only.
  ApplyResult apply_elements(const std::string& table, const std::vector<Element>& add,
                             const std::vector<Element>& remove,
                             std::optional<std::uint32_t> expected_genid);

  // Deletes table inet <table> and everything in it; a missing table is
  // success. Touches no other table.
  ApplyResult flush(const std::string& table);

  // Whether table inet <table> exists; false also when the query fails
  // (then *error says why).
  bool table_exists(const std::string& table, ApplyError* error = nullptr);

  // Dumps chains, rules, sets and every set's elements of table inet
  // <table>. All zero when the table does not exist. Cost: one dump per set.
  std::optional<KernelCounts> kernel_counts(const std::string& table, ApplyError* error = nullptr);

  // The named counters of table inet <table> (empty if none or on error).
  CounterValues read_counters(const std::string& table, ApplyError* error = nullptr);

  // Sends `batch` (one sendmsg, buffers sized to fit) and maps the first
  // kernel error back to its object. Used by the apply_* calls; encode with
  // first_seq = next_seq(0) — the counter then moves past batch.end_seq.
  ApplyResult send_batch(const EncodedBatch& batch);

  // --- Low-level transport, shared with conntrack.cc ---------------------

  // Allocates `n` consecutive sequence numbers; returns the first.
  std::uint32_t next_seq(std::uint32_t n = 1);

  // Sends `bytes` (one or more messages) in one sendmsg and reads ACKs
  // until `expected` of them arrived, or an error ACK arrived and the
  // socket is drained. Returns 0 or a positive errno of the transport
  // (EMSGSIZE, ENOBUFS, ETIMEDOUT, ...); kernel verdicts are in `acks`.
  int exchange(std::span<const std::uint8_t> bytes, std::size_t expected, std::vector<Ack>& acks);

  // Sends one request and calls `on_reply` for every reply message until
  // NLMSG_DONE (dumps) or its ACK (NLM_F_ACK is set for non-dumps). The
  // request's seq is assigned here. Returns 0 or a positive errno (EINTR:
  // the kernel flagged a dump as interrupted by a concurrent change; retry).
  using ReplyFn = std::function<void(const nlmsghdr*)>;
  int request(nlmsghdr* request, const ReplyFn& on_reply);

  [[nodiscard]] const BatchStats& last_batch() const { return last_batch_; }

  // The netlink port id the kernel assigned at bind: nftables change
  // notifications caused by this socket's commits carry it in nlmsg_pid.
  [[nodiscard]] std::uint32_t portid() const;

 private:
  explicit NftSocket(mnl_socket* socket);
  [[nodiscard]] int fd() const;
  void ensure_send_buffer(std::size_t bytes);
  void ensure_receive_buffer(std::size_t bytes);
  void drain();

  MnlSocketPtr socket_;
  std::uint32_t seq_ = 0;
  BatchStats last_batch_;
};

}  // namespace tierwall::dataplane::nft
