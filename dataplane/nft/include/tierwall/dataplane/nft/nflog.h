// NflogSource: the decisions that tierwall's rules log (deny, audit, logged
// allow; plan.h), read from one NFLOG group and turned into Start events,
// with every message the kernel dropped on the way accounted as Loss.
//
// Loss accounting. The socket asks for NFULNL_CFG_F_SEQ: the kernel numbers
// the messages of this group's instance 0, 1, 2, ... when it builds them, so
// a message dropped later (receive buffer full: the whole batch is freed and
// the reader gets ENOBUFS) leaves a gap. The next message that arrives makes
// the gap exact:
//   - after an ENOBUFS:  Loss{Nflog, Enobufs, count = gap}
//   - without one:       Loss{Nflog, SequenceGap, count = gap}
// An ENOBUFS that no message has followed yet is pending; finish() reports
// it as Loss{Enobufs, count 0, lower_bound} when the source is given up.
// So: Start events + Loss counts == the packets the rules logged (what
// their counters count), exactly, once a later message closed the gap.
// The kernel can also fail to allocate a message (GFP_ATOMIC, rate-limited
// "nf_log: ... alloc failure" in dmesg): such a message never gets a
// sequence number and cannot be seen by anyone.
//
// Batching: the kernel queues up to queue_threshold messages (or
// batch_bytes, or flush_timeout) into one datagram, which is what makes a
// high event rate cheap to read: one recv() per batch.
//
// Threads: not thread-safe; one thread polls fd() and calls drain(). The
// socket lives in the network namespace of the thread that opened it; one
// group has one reader per namespace (bind fails with EBUSY otherwise).
// Costs: drain() is one recv() per datagram into a buffer owned by the
// source and O(bytes) parsing; no allocation once warm. Ownership:
// move-only; the destructor closes the socket (which unbinds the group).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "tierwall/dataplane/nft/flow_events.h"
#include "tierwall/dataplane/nft/mnl_socket.h"

struct mnl_socket;

namespace tierwall::dataplane::nft {

class NflogSource {
 public:
  struct Config {
    std::uint16_t group = 100;  // Options::log_group
    // Bytes of each packet copied (NFULNL_COPY_PACKET): an IPv4 header with
    // options or an IPv6 header with a few extension headers, and the first
    // 8 bytes of TCP/UDP/ICMP.
    std::uint32_t copy_range = 128;
    // SO_RCVBUFFORCE (SO_RCVBUF without CAP_NET_ADMIN); the kernel doubles
    // it. 0 keeps the system default.
    int receive_buffer = 64 << 20;
    // Kernel-side batching (NFULA_CFG_QTHRESH / NFULA_CFG_NLBUFSIZ /
    // NFULA_CFG_TIMEOUT in 1/100 s). The timeout bounds the latency of a
    // lone event.
    std::uint32_t queue_threshold = 256;
    std::uint32_t batch_bytes = 128 * 1024;  // the kernel caps it at 128 KiB
    std::uint32_t flush_timeout_cs = 1;
    // Datagrams read per drain() at most (0: until the socket is empty).
    std::size_t max_datagrams_per_drain = 0;
  };

  struct Stats {
    std::uint64_t datagrams = 0;
    std::uint64_t messages = 0;     // packet messages parsed
    std::uint64_t events = 0;       // Start events emitted
    std::uint64_t foreign = 0;      // messages whose prefix is not tierwall's
    std::uint64_t malformed = 0;    // messages with unusable attributes/payload
    std::uint64_t enobufs = 0;      // recv() reported ENOBUFS
    std::uint64_t loss_events = 0;  // Loss events emitted
    std::uint64_t lost = 0;         // sum of their counts
    std::uint64_t reordered = 0;    // a sequence number went backwards (ignored)
    std::uint64_t truncated = 0;    // datagrams larger than the buffer
  };

  using Sink = std::function<void(const RawFlowEvent&)>;

  // Opens a NETLINK_NETFILTER socket in the calling thread's namespace,
  // binds `config.group` and configures it in one message. nullopt (and
  // *error) when the kernel refuses (EBUSY: another reader has the group).
  static std::optional<NflogSource> open(const Config& config, std::string* error = nullptr);

  NflogSource(NflogSource&&) noexcept = default;
  NflogSource& operator=(NflogSource&&) noexcept = default;
  NflogSource(const NflogSource&) = delete;
  NflogSource& operator=(const NflogSource&) = delete;
  ~NflogSource() = default;

  // Non-blocking; for poll(POLLIN).
  [[nodiscard]] int fd() const;
  // The receive buffer the kernel granted (SO_RCVBUF, already doubled).
  [[nodiscard]] int receive_buffer() const;

  // Reads available datagrams without blocking and calls `sink` for every
  // Start and Loss event, in order. Returns the number of events emitted.
  std::size_t drain(const Sink& sink);
  // Reports a pending ENOBUFS that no later message has sized
  // (Loss{count 0, lower_bound}). Call when giving up the source.
  void finish(const Sink& sink);

  [[nodiscard]] const Stats& stats() const { return stats_; }
  // The last socket error other than ENOBUFS/EAGAIN (0: none).
  [[nodiscard]] int last_error() const { return last_error_; }

 private:
  NflogSource(mnl_socket* socket, const Config& config);
  void account(const NflogMessage& m, WallClock::time_point now, const Sink& sink);
  void emit_loss(LossReason reason, std::uint64_t count, bool lower_bound,
                 WallClock::time_point now, const Sink& sink);

  MnlSocketPtr socket_;
  Config config_;
  std::vector<std::uint8_t> buffer_;
  std::vector<NflogMessage> parsed_;
  std::uint32_t expected_seq_ = 0;  // the instance numbers from 0 at bind
  bool enobufs_pending_ = false;
  int last_error_ = 0;
  Stats stats_;
};

}  // namespace tierwall::dataplane::nft
