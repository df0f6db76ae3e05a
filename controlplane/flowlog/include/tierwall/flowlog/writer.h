// FlowLogWriter: the hash-chained, signed, rotating flow-log writer of one
// node (format and guarantees: docs/flowlog.md).
//
// Producers (dataplane/event threads) call submit(), which never blocks on
// I/O: it moves the record into a bounded MPSC queue (a mutex-protected
// vector that the writer thread swaps out whole; the critical section is a
// move and a size check, no allocation in steady state, no syscall unless
// the writer sleeps). A full queue rejects the flow record and counts its
// events as lost; the writer thread then emits ONE `loss` record (source
// "queue", reason "queue full", the exact count) as soon as it runs: loss is
// never silent. Loss and policy records are always admitted (they are rare
// and their counts must not be lost in turn).
//
// The writer thread folds identical deny/audit flow starts (same verdict,
// rule, generation, proto, src ip, dst ip, dst port / icmp type) arriving
// within fold_window of the first one into that first record, whose count
// becomes the number of events (its time, src port and peer details stay the
// first event's); the record is written when the window closes. Allows and
// ends are never folded. sum(count of flow records) + lost == events
// submitted.
//
// It serializes, chains (SHA-256), appends with write(2) in batches, rotates
// by size or age (a closing checkpoint ends every rotated file; the next
// file continues the chain), writes signed checkpoints every
// checkpoint_every_records records or checkpoint_interval, at rotation, at
// open and at stop, and rewrites DIR/head.json (signed, atomic rename) at
// each of them. It emits `agent` start/stop records.
//
// Crash safety: open() finds the newest file; a torn tail (last line without
// "\n", or lines at the end that do not parse or verify) is truncated away
// and an `agent` "recovered" record carrying the torn bytes (base64) and
// their location is appended, chained from the last good record; seq and
// prev continue from it.
//
// Thread contract: open(), stop() and the destructor from one owner thread;
// submit() and stats() from any thread, concurrently.
// Costs: submit ~50-100 ns; the writer thread ~0.5 us per record (see
// docs/flowlog.md for measured figures); memory: the queue (capacity records)
// plus a 1 MiB output buffer plus the fold table.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "tierwall/flowlog/record.h"

namespace tierwall::flowlog {

// When the writer calls fdatasync(2) on the log file (head.json and new
// files are synced too unless None).
enum class FsyncPolicy : std::uint8_t {
  None,        // never: the page cache decides (a power loss loses the tail)
  Checkpoint,  // at every checkpoint, rotation and stop
  Interval,    // at most every fsync_interval while records arrive, and at checkpoints
  EveryRecord  // after every write(2) batch (no record waits longer than one batch)
};
std::optional<FsyncPolicy> parse_fsync_policy(std::string_view text);
std::string_view to_string(FsyncPolicy p);

struct WriterOptions {
  std::string dir;   // created (one level, 0750) when missing
  std::string node;  // the node name written into every record
  std::string key_path = "/var/lib/tierwall/flowlog.key";  // created when missing
  std::string version = "0.1.0";                           // written into agent records
  std::uint64_t rotate_bytes = 64ULL << 20;
  std::chrono::seconds rotate_age{3600};
  FsyncPolicy fsync = FsyncPolicy::Interval;
  std::chrono::milliseconds fsync_interval{1000};
  std::uint64_t checkpoint_every_records = 10000;
  std::chrono::milliseconds checkpoint_interval{10000};
  std::chrono::milliseconds fold_window{1000};  // 0: no folding
  std::size_t queue_capacity = 65536;
};

struct WriterStats {
  std::uint64_t records_written = 0;  // lines, all types
  std::uint64_t folded = 0;           // events merged into an earlier record
  std::uint64_t lost_queue = 0;       // events rejected by a full queue
  std::uint64_t bytes_written = 0;
  std::uint64_t files = 0;  // files created by this writer
  std::uint64_t checkpoints = 0;
  std::uint64_t last_seq = 0;
  std::string last_error;  // empty when no error happened
};

class FlowLogWriter {
 public:
  using Options = WriterOptions;

  FlowLogWriter();
  ~FlowLogWriter();  // stop()
  FlowLogWriter(const FlowLogWriter&) = delete;
  FlowLogWriter& operator=(const FlowLogWriter&) = delete;

  // Loads/creates the key, recovers the newest file, writes the recovered
  // (if any) and start records and a checkpoint, then starts the writer
  // thread. false (and why) when the log cannot be written.
  bool open(const Options& options, std::string* error);

  // Queues a record; never blocks on I/O. false when the record was not
  // accepted: queue full (counted as lost) or the writer is not running.
  bool submit(FlowRecord record);

  // Flushes folds and the queue, writes the stop record, a final checkpoint
  // and head.json, syncs (unless FsyncPolicy::None), joins. Idempotent.
  void stop();

  WriterStats stats() const;
  // The queue is at least 3/4 full: a producer that can wait (a kernel
  // socket buffer behind it) should hold back rather than have events
  // counted as lost. Any thread.
  [[nodiscard]] bool congested() const;

  // The torn tail open() recovered, if any (for the agent's log).
  std::optional<TornTail> recovered() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tierwall::flowlog
