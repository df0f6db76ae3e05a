#include "tierwall/flowlog/writer.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <fcntl.h>
#include <mutex>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>
#include <unordered_map>
#include <utility>
#include <vector>

#include "log_files.h"

#include "tierwall/flowlog/keys.h"

namespace tierwall::flowlog {

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::size_t kFlushBytes = 1U << 20;

std::int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string errno_text(const std::string& what) { return what + ": " + std::strerror(errno); }

bool pwrite_all(int fd, std::string_view data, std::size_t& written) {
  written = 0;
  while (written < data.size()) {
    const ssize_t n = ::write(fd, data.data() + written, data.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EIO;
      return false;
    }
    written += static_cast<std::size_t>(n);
  }
  return true;
}

bool foldable(const FlowRecord& r) {
  const auto* f = std::get_if<Flow>(&r.body);
  return f != nullptr && f->event == FlowEvent::Start &&
         (f->verdict == Verdict::Deny || f->verdict == Verdict::Audit);
}

void fold_key(const Flow& f, std::string& key) {
  key.clear();
  key += static_cast<char>(f.verdict);
  key += static_cast<char>(f.rule_kind);
  key += static_cast<char>(f.protocol);
  const bool icmp = f.protocol == kProtoIcmp || f.protocol == kProtoIcmpv6;
  const unsigned port = icmp ? f.icmp_type : f.dst.port;
  key.append(reinterpret_cast<const char*>(&port), sizeof port);
  key.append(reinterpret_cast<const char*>(&f.generation), sizeof f.generation);
  key += f.rule_name;
  key += '\0';
  key += f.src.ip;
  key += '\0';
  key += f.dst.ip;
}

// What recovery learned about one file's tail.
struct TailScan {
  std::uint64_t good_lines = 0;
  std::size_t good_end = 0;  // offset after the last good line
  bool have_last = false;
  std::uint64_t last_seq = 0;
  std::string last_hash;
  std::string torn;  // bytes after good_end
};

// Streams the file once, remembering where the last lines start; then walks
// back over lines that do not parse or verify (at most kMaxTorn bytes).
bool scan_tail(const std::string& path, TailScan& out, std::string* error) {
  detail::LineReader reader;
  if (!reader.open(path, error)) return false;
  constexpr std::size_t kRing = 256;
  std::array<std::size_t, kRing> starts{};  // start offset of line k % kRing
  std::uint64_t complete_lines = 0;
  std::size_t complete_end = 0;
  std::string_view line;
  bool complete = false;
  for (;;) {
    const std::size_t start = reader.offset();
    const auto st = reader.next(line, complete);
    if (st == detail::LineReader::Status::End) break;
    if (st == detail::LineReader::Status::Error) {
      if (error != nullptr) *error = "cannot read " + path;
      return false;
    }
    if (st == detail::LineReader::Status::Line && !complete) break;  // the torn part
    starts[complete_lines % kRing] = start;
    ++complete_lines;
    complete_end = reader.offset();
  }
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (error != nullptr) *error = errno_text("cannot open " + path);
    return false;
  }
  struct stat st {};
  ::fstat(fd, &st);
  const auto size = static_cast<std::size_t>(st.st_size);
  const auto read_range = [fd](std::size_t from, std::size_t to, std::string& into) {
    into.resize(to - from);
    std::size_t done = 0;
    while (done < into.size()) {
      const ssize_t n =
          ::pread(fd, into.data() + done, into.size() - done, static_cast<off_t>(from + done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      done += static_cast<std::size_t>(n);
    }
    return true;
  };
  Sha256 sha;
  std::size_t end = complete_end;
  std::uint64_t lines = complete_lines;
  std::string text;
  bool ok = true;
  while (lines > 0) {
    if (complete_lines - lines >= kRing || size - end > detail::kMaxTorn) {
      ok = false;
      if (error != nullptr) {
        *error = path + ": the tail does not verify over more than " +
                 std::to_string(detail::kMaxTorn) + " bytes; move the file aside";
      }
      break;
    }
    const std::size_t start = starts[(lines - 1) % kRing];
    if (!read_range(start, end - 1, text)) {
      ok = false;
      if (error != nullptr) *error = "cannot read " + path;
      break;
    }
    LineFields f;
    if (parse_frame(text, f) && hash_matches(f, sha)) {
      out.have_last = true;
      out.last_seq = f.seq;
      out.last_hash = std::string(f.hash);
      break;
    }
    end = start;
    --lines;
  }
  if (ok && size - end > detail::kMaxTorn) {
    ok = false;
    if (error != nullptr) *error = path + ": torn tail longer than 1 MiB; move the file aside";
  }
  if (ok) {
    out.good_lines = lines;
    out.good_end = end;
    ok = read_range(end, size, out.torn);
    if (!ok && error != nullptr) *error = "cannot read " + path;
  }
  ::close(fd);
  return ok;
}

}  // namespace

std::optional<FsyncPolicy> parse_fsync_policy(std::string_view text) {
  if (text == "none") return FsyncPolicy::None;
  if (text == "checkpoint") return FsyncPolicy::Checkpoint;
  if (text == "interval") return FsyncPolicy::Interval;
  if (text == "every-record") return FsyncPolicy::EveryRecord;
  return std::nullopt;
}

std::string_view to_string(FsyncPolicy p) {
  switch (p) {
    case FsyncPolicy::None:
      return "none";
    case FsyncPolicy::Checkpoint:
      return "checkpoint";
    case FsyncPolicy::Interval:
      return "interval";
    case FsyncPolicy::EveryRecord:
      return "every-record";
  }
  return "interval";
}

struct FlowLogWriter::Impl {
  Options opt;
  std::optional<SigningKey> key;
  std::optional<TornTail> recovered;

  // ---- shared with producers (mu) ----
  std::mutex mu;
  std::condition_variable cv;
  std::vector<FlowRecord> queue;
  bool accepting = false;
  bool stopping = false;
  std::atomic<std::uint64_t> lost_pending{0};
  std::atomic<std::uint64_t> lost_total{0};

  // ---- stats (any thread) ----
  std::atomic<std::uint64_t> st_records{0}, st_folded{0}, st_bytes{0}, st_files{0},
      st_checkpoints{0}, st_seq{0};
  mutable std::mutex err_mu;
  std::string last_error;

  // ---- writer thread only ----
  std::thread thread;
  Sha256 sha;
  std::uint64_t seq = 0;
  std::array<char, kHashHexLen> prev{};
  std::string out;  // serialized, not yet written
  int fd = -1;
  std::string file_name;
  std::uint64_t file_bytes = 0;  // written to the current file
  std::uint64_t file_lines = 0;  // lines in the current file, buffered ones included
  Clock::time_point file_opened;
  Clock::time_point now_steady;
  std::uint64_t since_checkpoint = 0;
  Clock::time_point last_checkpoint;
  bool dirty = false;             // written since the last fdatasync
  bool final_checkpoint = false;  // open, rotation, stop: head.json always follows
  Clock::time_point last_sync;

  struct FoldGroup {
    FlowRecord rec;
    std::string key;
    bool done = false;
  };
  std::deque<FoldGroup> folds;
  std::uint64_t fold_base = 0;  // absolute index of folds.front()
  std::unordered_map<std::string, std::uint64_t> fold_index;
  std::string key_scratch;

  void set_error(std::string message) {
    std::lock_guard lock(err_mu);
    last_error = std::move(message);
  }

  bool syncing() const { return opt.fsync != FsyncPolicy::None; }

  // ---- files ----

  bool create_file(std::int64_t first_time_us) {
    const std::string name = std::string(detail::kFilePrefix) + file_time(first_time_us) +
                             std::string(detail::kFileSuffix);
    const std::string path = detail::join(opt.dir, name);
    const int nfd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0640);
    if (nfd < 0) {
      set_error(errno_text("cannot create " + path));
      return false;
    }
    if (fd >= 0) ::close(fd);
    fd = nfd;
    file_name = name;
    file_bytes = 0;
    file_lines = 0;
    file_opened = now_steady;
    st_files.fetch_add(1, std::memory_order_relaxed);
    if (syncing()) {
      const int dfd = ::open(opt.dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (dfd >= 0) {
        ::fsync(dfd);
        ::close(dfd);
      }
    }
    return true;
  }

  // Writes the buffer; on failure keeps the unwritten rest for a retry.
  bool flush_output() {
    if (out.empty()) return true;
    if (fd < 0 && !create_file(now_us())) return false;
    std::size_t written = 0;
    const bool ok = pwrite_all(fd, out, written);
    file_bytes += written;
    st_bytes.fetch_add(written, std::memory_order_relaxed);
    if (written > 0) dirty = true;
    out.erase(0, written);
    if (!ok) set_error(errno_text("cannot write " + file_name));
    if (ok && opt.fsync == FsyncPolicy::EveryRecord) sync_now();
    return ok;
  }

  void sync_now() {
    if (fd >= 0 && dirty) {
      if (::fdatasync(fd) != 0) set_error(errno_text("fdatasync " + file_name));
      dirty = false;
    }
    last_sync = now_steady;
  }

  // ---- records ----

  void line_done() {
    ++seq;
    ++file_lines;
    ++since_checkpoint;
    st_records.fetch_add(1, std::memory_order_relaxed);
    st_seq.store(seq, std::memory_order_relaxed);
  }

  void maybe_rotate(std::int64_t time_us) {
    if (fd < 0) {
      create_file(time_us);
      return;
    }
    if (file_bytes + out.size() < opt.rotate_bytes && now_steady - file_opened < opt.rotate_age) {
      return;
    }
    // Names must grow (byte order = time order): a record no later than the
    // current file's first one waits for a later record to rotate.
    const std::string next =
        std::string(detail::kFilePrefix) + file_time(time_us) + std::string(detail::kFileSuffix);
    if (next <= file_name || file_lines == 0) return;
    final_checkpoint = true;
    checkpoint();
    final_checkpoint = false;
    if (!flush_output()) return;  // keep writing the old file until the disk recovers
    if (syncing()) sync_now();
    create_file(time_us);
  }

  void emit(const FlowRecord& r) {
    maybe_rotate(r.time_us);
    const std::size_t start = out.size();
    append_body(out, r, seq + 1, opt.node, std::string_view(prev.data(), prev.size()));
    finish_line(out, start, sha, prev);
    line_done();
    if (since_checkpoint >= opt.checkpoint_every_records) checkpoint();
    if (out.size() >= kFlushBytes) flush_output();
  }

  void checkpoint() {
    if (fd < 0) return;
    const std::int64_t t = now_us();
    const std::string_view prev_view(prev.data(), prev.size());
    Checkpoint c;
    c.key = key->id();
    c.signature = key->sign_hex(checkpoint_message(opt.node, seq + 1, prev_view));
    const std::size_t start = out.size();
    append_checkpoint_body(out, t, seq + 1, opt.node, c, prev_view);
    finish_line(out, start, sha, prev);
    line_done();
    since_checkpoint = 0;
    last_checkpoint = now_steady;
    st_checkpoints.fetch_add(1, std::memory_order_relaxed);
    if (!flush_output()) return;
    // head.json must never name a record the disk may not hold after a
    // power loss, so it is written after a sync. Interval syncs at most every
    // fsync_interval: head.json follows at that pace (every checkpoint stays
    // in the log, signed).
    if (opt.fsync == FsyncPolicy::Interval && now_steady - last_sync < opt.fsync_interval &&
        !final_checkpoint) {
      return;
    }
    if (syncing()) sync_now();
    write_head(t);
  }

  void write_head(std::int64_t t) {
    const std::string_view hash(prev.data(), prev.size());
    std::string h = "{\"seq\":" + std::to_string(seq) + ",\"hash\":\"";
    h += hash;
    h += "\",\"file\":";
    append_json_string(h, file_name);
    h += ",\"line\":" + std::to_string(file_lines) + ",\"time\":\"";
    append_time(h, t);
    h += "\",\"key\":\"" + key->id() + "\",\"signature\":\"";
    h += key->sign_hex(head_message(opt.node, seq, hash));
    h += "\",\"node\":";
    append_json_string(h, opt.node);
    h += "}\n";
    std::string why;
    if (!write_file_atomic(detail::join(opt.dir, detail::kHeadFile), h, 0640, syncing(), &why)) {
      set_error(why);
    }
  }

  void emit_loss() {
    const std::uint64_t lost = lost_pending.exchange(0, std::memory_order_relaxed);
    if (lost == 0) return;
    FlowRecord r;
    r.time_us = now_us();
    r.body = Loss{LossSource::Queue, "queue full", lost, false};
    emit(r);
  }

  // ---- folding ----

  void handle(FlowRecord& r) {
    if (opt.fold_window.count() <= 0 || !foldable(r)) {
      emit(r);
      return;
    }
    const auto& f = std::get<Flow>(r.body);
    fold_key(f, key_scratch);
    const std::int64_t window = opt.fold_window.count() * 1000;
    if (auto it = fold_index.find(key_scratch); it != fold_index.end()) {
      auto& g = folds[it->second - fold_base];
      if (r.time_us < g.rec.time_us + window) {
        std::get<Flow>(g.rec.body).count += f.count;
        st_folded.fetch_add(f.count, std::memory_order_relaxed);
        return;
      }
      emit(g.rec);  // its window closed: out of FIFO order, once
      g.done = true;
      fold_index.erase(it);
    }
    fold_index.emplace(key_scratch, fold_base + folds.size());
    folds.push_back(FoldGroup{std::move(r), key_scratch, false});
  }

  // Emits fold groups whose window closed before `now` (all when now < 0).
  void flush_folds(std::int64_t now) {
    const std::int64_t window = opt.fold_window.count() * 1000;
    while (!folds.empty()) {
      auto& g = folds.front();
      if (!g.done) {
        if (now >= 0 && g.rec.time_us + window > now) break;
        fold_index.erase(g.key);
        emit(g.rec);
      }
      folds.pop_front();
      ++fold_base;
    }
  }

  // ---- the thread ----

  Clock::duration next_wakeup() const {
    auto wait = std::chrono::duration_cast<Clock::duration>(std::chrono::milliseconds(100));
    if (!folds.empty()) {
      const std::int64_t due =
          folds.front().rec.time_us + opt.fold_window.count() * 1000 - now_us();
      wait = std::min(wait, std::chrono::duration_cast<Clock::duration>(
                                std::chrono::microseconds(std::max<std::int64_t>(due, 0))));
    }
    if (since_checkpoint > 0) {
      wait = std::min(wait, last_checkpoint + opt.checkpoint_interval - Clock::now());
    }
    if (dirty && opt.fsync == FsyncPolicy::Interval) {
      wait = std::min(wait, last_sync + opt.fsync_interval - Clock::now());
    }
    return std::max(wait, Clock::duration(std::chrono::milliseconds(1)));
  }

  void run() {
    std::vector<FlowRecord> batch;
    batch.reserve(std::min<std::size_t>(opt.queue_capacity, 4096));
    for (;;) {
      bool stop = false;
      {
        std::unique_lock lock(mu);
        if (out.empty()) {
          cv.wait_for(lock, next_wakeup(), [this] { return stopping || !queue.empty(); });
          batch.swap(queue);
        }
        stop = stopping;
      }
      now_steady = Clock::now();
      if (!out.empty() && !flush_output()) {
        // The disk refuses (ENOSPC, EIO): keep the queue where it is, so a
        // full queue turns into counted loss, and retry.
        if (stop) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        continue;
      }
      for (auto& r : batch) handle(r);
      batch.clear();
      emit_loss();
      flush_folds(now_us());
      if (since_checkpoint > 0 && (since_checkpoint >= opt.checkpoint_every_records ||
                                   now_steady - last_checkpoint >= opt.checkpoint_interval)) {
        checkpoint();
      }
      flush_output();
      if (opt.fsync == FsyncPolicy::Interval && dirty &&
          now_steady - last_sync >= opt.fsync_interval) {
        sync_now();
      }
      if (stop) {
        std::lock_guard lock(mu);
        if (queue.empty()) break;
      }
    }
    finish();
  }

  void finish() {
    now_steady = Clock::now();
    flush_folds(-1);
    emit_loss();
    FlowRecord r;
    r.time_us = now_us();
    r.body = Agent{AgentEvent::Stop, opt.version, {}};
    emit(r);
    final_checkpoint = true;
    checkpoint();
    flush_output();
    if (syncing()) sync_now();
    if (fd >= 0) ::close(fd);
    fd = -1;
  }

  // ---- open ----

  bool recover(std::string* error) {
    std::vector<std::string> names;
    if (!detail::list_log_files(opt.dir, names, error)) return false;
    std::optional<TailScan> newest;
    std::string newest_name;
    while (!names.empty()) {
      const std::string path = detail::join(opt.dir, names.back());
      TailScan scan;
      if (!scan_tail(path, scan, error)) return false;
      if (scan.good_lines == 0 && scan.torn.empty() && !newest) {
        // A file created just before a crash, still empty: its name would
        // claim a first record it never got.
        ::unlink(path.c_str());
        names.pop_back();
        continue;
      }
      if (!newest) {
        newest = std::move(scan);
        newest_name = names.back();
        if (newest->have_last) break;
        names.pop_back();  // nothing good in it: the chain head is further back
        continue;
      }
      if (scan.have_last) {
        newest->have_last = true;
        newest->last_seq = scan.last_seq;
        newest->last_hash = scan.last_hash;
        break;
      }
      names.pop_back();
    }
    if (!newest) return true;  // a new log
    if (newest->have_last) {
      seq = newest->last_seq;
      std::copy(newest->last_hash.begin(), newest->last_hash.end(), prev.begin());
    }
    const std::string path = detail::join(opt.dir, newest_name);
    fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd < 0) {
      if (error != nullptr) *error = errno_text("cannot open " + path);
      return false;
    }
    if (!newest->torn.empty()) {
      if (::ftruncate(fd, static_cast<off_t>(newest->good_end)) != 0) {
        if (error != nullptr) *error = errno_text("cannot truncate " + path);
        return false;
      }
      recovered = TornTail{newest_name, newest->good_lines + 1, std::move(newest->torn)};
    }
    file_name = newest_name;
    file_bytes = newest->good_end;
    file_lines = newest->good_lines;
    file_opened = now_steady;
    return true;
  }

  bool open(std::string* error) {
    const auto fail = [error](std::string m) {
      if (error != nullptr) *error = std::move(m);
      return false;
    };
    if (opt.dir.empty()) return fail("no log directory");
    if (opt.node.empty()) return fail("no node name");
    if (opt.queue_capacity == 0) return fail("queue_capacity must be > 0");
    if (::mkdir(opt.dir.c_str(), 0750) != 0 && errno != EEXIST) {
      return fail(errno_text("cannot create " + opt.dir));
    }
    std::string why;
    key = SigningKey::load_or_create(opt.key_path, &why);
    if (!key) return fail("flow-log key: " + why);
    const std::string pub = detail::join(opt.dir, detail::key_file_name(key->id()));
    if (::access(pub.c_str(), F_OK) != 0 &&
        !write_file_atomic(pub, key->public_key().pem(), 0644, syncing(), &why)) {
      return fail(why);
    }
    std::fill(prev.begin(), prev.end(), '0');
    now_steady = Clock::now();
    last_checkpoint = last_sync = now_steady;
    out.reserve(kFlushBytes + 65536);
    if (!recover(error)) return false;
    if (recovered) {
      FlowRecord r;
      r.time_us = now_us();
      r.body = Agent{AgentEvent::Recovered, opt.version, *recovered};
      emit(r);
    }
    FlowRecord start;
    start.time_us = now_us();
    start.body = Agent{AgentEvent::Start, opt.version, {}};
    emit(start);
    final_checkpoint = true;
    checkpoint();
    final_checkpoint = false;
    if (!out.empty() || fd < 0) {
      std::lock_guard lock(err_mu);
      return fail(last_error.empty() ? "cannot write the log" : last_error);
    }
    {
      std::lock_guard lock(mu);
      queue.reserve(std::min<std::size_t>(opt.queue_capacity, 4096));
      accepting = true;
      stopping = false;
    }
    thread = std::thread([this] { run(); });
    return true;
  }
};

FlowLogWriter::FlowLogWriter() = default;

FlowLogWriter::~FlowLogWriter() { stop(); }

bool FlowLogWriter::open(const Options& options, std::string* error) {
  if (impl_) {
    if (error != nullptr) *error = "already open";
    return false;
  }
  auto impl = std::make_unique<Impl>();
  impl->opt = options;
  if (!impl->open(error)) {
    if (impl->fd >= 0) ::close(impl->fd);
    return false;
  }
  impl_ = std::move(impl);
  return true;
}

bool FlowLogWriter::submit(FlowRecord record) {
  Impl* impl = impl_.get();
  if (impl == nullptr) return false;
  if (record.time_us == 0) record.time_us = now_us();
  const auto* flow = std::get_if<Flow>(&record.body);
  bool wake = false;
  {
    std::lock_guard lock(impl->mu);
    if (!impl->accepting) return false;
    if (flow != nullptr && impl->queue.size() >= impl->opt.queue_capacity) {
      const std::uint64_t n = std::max<std::uint64_t>(flow->count, 1);
      impl->lost_pending.fetch_add(n, std::memory_order_relaxed);
      impl->lost_total.fetch_add(n, std::memory_order_relaxed);
      return false;
    }
    wake = impl->queue.empty();
    impl->queue.push_back(std::move(record));
  }
  if (wake) impl->cv.notify_one();
  return true;
}

void FlowLogWriter::stop() {
  if (!impl_ || !impl_->thread.joinable()) return;
  {
    std::lock_guard lock(impl_->mu);
    impl_->accepting = false;
    impl_->stopping = true;
  }
  impl_->cv.notify_one();
  impl_->thread.join();
}

bool FlowLogWriter::congested() const {
  if (!impl_) return false;
  std::lock_guard lock(impl_->mu);
  return impl_->queue.size() * 4 >= impl_->opt.queue_capacity * 3;
}

WriterStats FlowLogWriter::stats() const {
  WriterStats s;
  if (!impl_) return s;
  const Impl& i = *impl_;
  s.records_written = i.st_records.load(std::memory_order_relaxed);
  s.folded = i.st_folded.load(std::memory_order_relaxed);
  s.lost_queue = i.lost_total.load(std::memory_order_relaxed);
  s.bytes_written = i.st_bytes.load(std::memory_order_relaxed);
  s.files = i.st_files.load(std::memory_order_relaxed);
  s.checkpoints = i.st_checkpoints.load(std::memory_order_relaxed);
  s.last_seq = i.st_seq.load(std::memory_order_relaxed);
  std::lock_guard lock(i.err_mu);
  s.last_error = i.last_error;
  return s;
}

std::optional<TornTail> FlowLogWriter::recovered() const {
  return impl_ ? impl_->recovered : std::nullopt;
}

}  // namespace tierwall::flowlog
