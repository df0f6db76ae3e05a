// The MAC learning table of the Bridge (port behind a MAC) and of the
// Overlay (peer VTEP behind a MAC): open addressing over 2^k slots keyed by
// the MAC, 16 probes, entries older than the ageing time treated as absent.
// A slot is never emptied: an aged one is reused in place, which keeps every
// probe sequence unbroken. Not thread-safe: one owner (a worker) at a time;
// no allocation after reset().
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

namespace tierwall::dataplane::dpdk {

// The table key of the 6-byte MAC at `p`; never 0 (0 marks an empty slot).
inline std::uint64_t mac_key(const std::uint8_t* p) {
  std::uint64_t k = 0;
  for (int i = 0; i < 6; ++i) k = (k << 8) | p[i];
  return k | (std::uint64_t{1} << 63);
}

template <typename Value>
class MacTable {
 public:
  enum class Learned : std::uint8_t {
    Refreshed,  // the key was there with this value and not aged: only its time moved
    Learned,    // a new key, a new value, or an aged entry renewed
    Full,       // no free or aged slot on the key's probe sequence: not learned
  };

  // At least `capacity` slots (rounded up to a power of two, 16 at least),
  // all empty.
  void reset(std::size_t capacity) {
    std::size_t cap = 16;
    while (cap < capacity) cap <<= 1;
    slots_.assign(cap, {});
    mask_ = cap - 1;
  }

  // The value learned for `key` within `ageing` of `now`; nullopt otherwise.
  [[nodiscard]] std::optional<Value> lookup(std::uint64_t key, std::uint64_t now,
                                            std::uint64_t ageing) const {
    std::size_t i = hash(key) & mask_;
    for (std::size_t n = 0; n < kProbes; ++n, i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.key == 0) return std::nullopt;
      if (s.key == key) {
        if (now - s.seen_ns <= ageing) return s.value;
        return std::nullopt;
      }
    }
    return std::nullopt;
  }

  Learned learn(std::uint64_t key, Value value, std::uint64_t now, std::uint64_t ageing) {
    std::size_t i = hash(key) & mask_;
    Slot* reuse = nullptr;
    for (std::size_t n = 0; n < kProbes; ++n, i = (i + 1) & mask_) {
      Slot& s = slots_[i];
      if (s.key == key) {
        const bool changed = s.value != value || now - s.seen_ns > ageing;
        s.value = value;
        s.seen_ns = now;
        return changed ? Learned::Learned : Learned::Refreshed;
      }
      if (s.key == 0) {
        if (reuse == nullptr) reuse = &s;
        break;  // the key is not further along the probe sequence
      }
      if (reuse == nullptr && now - s.seen_ns > ageing) reuse = &s;
    }
    if (reuse == nullptr) return Learned::Full;
    *reuse = Slot{key, now, value};
    return Learned::Learned;
  }

 private:
  static constexpr std::size_t kProbes = 16;

  struct Slot {
    std::uint64_t key = 0;  // 0: empty
    std::uint64_t seen_ns = 0;
    Value value{};
  };

  static std::uint64_t hash(std::uint64_t key) {
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdULL;
    key ^= key >> 33;
    return key;
  }

  std::vector<Slot> slots_;
  std::size_t mask_ = 0;
};

}  // namespace tierwall::dataplane::dpdk
