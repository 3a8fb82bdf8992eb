// The CPU ops' caching allocator (see cpu_pool.h).
#include "common/cpu_pool.h"

#include <ATen/EmptyTensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <c10/core/Allocator.h>
#include <c10/core/impl/alloc_cpu.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <map>
#include <mutex>
#include <unordered_map>

namespace maven_fast {
namespace {

constexpr size_t kMinBytes = size_t(256) << 10;
constexpr size_t kPage = size_t(4) << 10;

size_t limit_from_env() {
  const char* v = std::getenv("MAVEN_FAST_CPU_POOL_MB");
  if (v == nullptr || *v == '\0') return size_t(512) << 20;
  char* end = nullptr;
  const long long mb = std::strtoll(v, &end, 10);
  TORCH_CHECK(end != v && *end == '\0' && mb >= 0,
              "MAVEN_FAST_CPU_POOL_MB must be a non-negative integer (MiB), got '", v, "'");
  return static_cast<size_t>(mb) << 20;
}

class Pool final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) override {
    const size_t want = (std::max<size_t>(n, 1) + kPage - 1) / kPage * kPage;
    void* p = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      // Best fit, wasting at most 1/8 of the block.
      auto it = free_.lower_bound(want);
      if (it != free_.end() && it->first <= want + want / 8) {
        p = it->second;
        live_[p] = it->first;
        cached_ -= it->first;
        in_use_ += it->first;
        free_.erase(it);
        ++hits_;
      }
    }
    if (p == nullptr) {
      p = c10::alloc_cpu(want);
      std::lock_guard<std::mutex> lock(mu_);
      live_[p] = want;
      in_use_ += want;
      ++misses_;
    }
    return {p, p, &Pool::release_raw, c10::Device(c10::DeviceType::CPU)};
  }

  c10::DeleterFnPtr raw_deleter() const override { return &Pool::release_raw; }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  static Pool& get() {
    static Pool* pool = new Pool();  // never destroyed: tensors may outlive static destructors
    return *pool;
  }

  CpuPoolInfo info() {
    std::lock_guard<std::mutex> lock(mu_);
    CpuPoolInfo i;
    i.cached_bytes = static_cast<int64_t>(cached_);
    i.in_use_bytes = static_cast<int64_t>(in_use_);
    i.limit_bytes = static_cast<int64_t>(limit_);
    i.hits = hits_;
    i.misses = misses_;
    return i;
  }

  void set_limit(size_t bytes) {
    std::multimap<size_t, void*> drop;
    {
      std::lock_guard<std::mutex> lock(mu_);
      limit_ = bytes;
      // Keep the smallest blocks, free the largest first.
      while (cached_ > limit_ && !free_.empty()) {
        auto it = std::prev(free_.end());
        cached_ -= it->first;
        drop.insert(*it);
        free_.erase(it);
      }
    }
    for (auto& [size, p] : drop) c10::free_cpu(p);
  }

  bool enabled() {
    std::lock_guard<std::mutex> lock(mu_);
    return limit_ > 0;
  }

 private:
  Pool() : limit_(limit_from_env()) {}

  static void release_raw(void* p) { get().release(p); }

  void release(void* p) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = live_.find(p);
      TORCH_INTERNAL_ASSERT(it != live_.end(), "maven_fast CPU pool: unknown block");
      const size_t size = it->second;
      live_.erase(it);
      in_use_ -= size;
      if (cached_ + size <= limit_) {
        free_.emplace(size, p);
        cached_ += size;
        return;
      }
    }
    c10::free_cpu(p);
  }

  std::mutex mu_;
  std::multimap<size_t, void*> free_;     // size -> block
  std::unordered_map<void*, size_t> live_;  // block -> size
  size_t cached_ = 0, in_use_ = 0, limit_ = 0;
  int64_t hits_ = 0, misses_ = 0;
};

}  // namespace

namespace {

struct Scratch {
  std::atomic<bool> busy{false};  // a tensor holds the block (no thread affinity, unlike a mutex)
  void* block = nullptr;
  size_t bytes = 0;

  static Scratch& get() {
    static Scratch* s = new Scratch();  // never destroyed, as the pool
    return *s;
  }
  bool acquire() { return !busy.exchange(true, std::memory_order_acquire); }
  void release() { busy.store(false, std::memory_order_release); }
  void free_block() {
    if (block) c10::free_cpu(block);
    block = nullptr;
    bytes = 0;
  }
};

}  // namespace

at::Tensor cpu_pool_scratch(int64_t numel, const at::TensorOptions& opts) {
  const size_t need = static_cast<size_t>(std::max<int64_t>(numel, 1)) * opts.dtype().itemsize();
  Scratch& s = Scratch::get();
  if (!s.acquire()) return cpu_pool_empty({numel}, opts);
  if (s.bytes < need) {
    s.free_block();
    s.block = c10::alloc_cpu(need);
    s.bytes = need;
  }
  return at::from_blob(s.block, {numel}, [](void*) { Scratch::get().release(); }, opts.device(at::kCPU));
}

at::Tensor cpu_pool_empty(at::IntArrayRef sizes, const at::TensorOptions& opts) {
  const auto dtype = c10::typeMetaToScalarType(opts.dtype());
  int64_t numel = 1;
  for (int64_t s : sizes) numel *= s;
  const size_t nbytes = static_cast<size_t>(numel) * c10::elementSize(dtype);
  if (opts.device().type() != c10::DeviceType::CPU || nbytes < kMinBytes ||
      (opts.has_layout() && opts.layout() != c10::kStrided) || opts.pinned_memory() ||
      !Pool::get().enabled()) {
    return at::empty(sizes, opts);
  }
  return at::detail::empty_generic(sizes, &Pool::get(), c10::DispatchKeySet(c10::DispatchKey::CPU),
                                   dtype, c10::MemoryFormat::Contiguous);
}

CpuPoolInfo cpu_pool_info() { return Pool::get().info(); }

void cpu_pool_release() {
  Scratch& s = Scratch::get();
  if (s.acquire()) {
    s.free_block();
    s.release();
  }
  Pool& p = Pool::get();
  const size_t limit = static_cast<size_t>(p.info().limit_bytes);
  p.set_limit(0);
  p.set_limit(limit);
}

void cpu_pool_set_limit(int64_t bytes) {
  TORCH_CHECK(bytes >= 0, "cpu_pool_set_limit: the limit must be >= 0 bytes, got ", bytes);
  Pool::get().set_limit(static_cast<size_t>(bytes));
}

}  // namespace maven_fast
