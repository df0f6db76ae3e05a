// A fixed-size array of trivially destructible T, cache-line aligned, and
// for 2 MiB or more aligned to 2 MiB and advised to the kernel as
// transparent-huge-page memory (madvise MADV_HUGEPAGE): large random-access
// tables (flow table, address hashes) then cost one TLB entry per 2 MiB, as
// DPDK's hugepage memory does. The advice is best effort (THP may be off).
//
// Thread contract: as a plain array. Costs: one allocation and one madvise
// at construction; element access is a plain index.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <new>
#include <sys/mman.h>
#include <type_traits>
#include <utility>

namespace tierwall::dataplane::dpdk::detail {

template <typename T>
class HugeArray {
  static_assert(std::is_trivially_destructible_v<T>);

 public:
  static constexpr std::size_t kHuge = std::size_t{2} << 20;

  HugeArray() = default;
  explicit HugeArray(std::size_t n) : size_(n) {
    const std::size_t bytes = n * sizeof(T);
    const std::size_t align = bytes >= kHuge ? kHuge : 64;
    const std::size_t rounded = (bytes + align - 1) / align * align;
    void* p = std::aligned_alloc(align, rounded == 0 ? align : rounded);
    if (p == nullptr) throw std::bad_alloc();  // construction only, like vector
    if (align == kHuge) (void)madvise(p, rounded, MADV_HUGEPAGE);
    data_ = static_cast<T*>(p);
    for (std::size_t i = 0; i < n; ++i) new (data_ + i) T{};
  }
  HugeArray(HugeArray&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  HugeArray& operator=(HugeArray&& o) noexcept {
    std::swap(data_, o.data_);
    std::swap(size_, o.size_);
    return *this;
  }
  HugeArray(const HugeArray&) = delete;
  HugeArray& operator=(const HugeArray&) = delete;
  ~HugeArray() { std::free(data_); }

  T& operator[](std::size_t i) { return data_[i]; }
  const T& operator[](std::size_t i) const { return data_[i]; }
  [[nodiscard]] std::size_t size() const { return size_; }
  T* begin() { return data_; }
  T* end() { return data_ + size_; }

 private:
  T* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace tierwall::dataplane::dpdk::detail
