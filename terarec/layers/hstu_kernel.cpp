// Fused CPU kernel of HSTU's pointwise causal attention, eq. (2): SiLU(Q K^T + rab) / n, forward
// and backward, the whole tile loop in one call per direction (terarec/layers/hstu_kernel.py
// builds it at first use and says when it applies).
//
// Per row (a padded sequence), query tile and key tile at or below the diagonal:
//   * the tile's bias is built once for all heads: the relative position weight w_p[i - j + n - 1]
//     plus the time weight w_t[bucket(t_query(i) - t_key(j))];
//   * per head, the products run on plain row-major operands: float in ATen's cpublas::brgemm
//     (oneDNN's micro-kernel), double in dgemm; Q, dO, V and the output are read and written in
//     place in their token-major (B, T, H, width) layout (leading dimension H * width), K and V
//     are copied transposed once per row, Q and dO once per query tile, and the key and value
//     gradients are accumulated transposed, (B, H, width, T), and returned as views;
//   * one pass over the tile does the epilogue: bias + SiLU + causal mask (forward), SiLU' x dW,
//     the mask and the per-tile bias gradient (backward); the bias gradient is added to the two
//     tables once per tile, after the heads.
// Backward recomputes the logits (as FlashAttention does): nothing T x T is kept. The heads of a
// tile run in parallel on torch's threads (at::parallel_for); the bias is shared between them.
//
// Time buckets are floor(ln(max(|gap|, 1)) / 0.301) capped, as terarec's time_buckets; to give
// exactly its buckets (its float32 log may round differently from this compiler's), a fast
// estimate is corrected against the gaps where each bucket starts, which the caller computes
// with time_buckets itself.
#include <ATen/Parallel.h>
#include <ATen/native/CPUBlas.h>
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

extern "C" {
// Fortran BLAS, as exported by libtorch_cpu (MKL in the x86 wheels): ATen's own cpublas calls it.
void dgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const double* alpha,
            const double* a, const int* lda, const double* b, const int* ldb, const double* beta, double* c,
            const int* ldc);
}

namespace {

constexpr float kInverseBucketWidth = 1.0f / 0.301f;

// Row-major C (m x n) = A (m x k) B (k x n) (+ C when accumulating), plain operands. float runs
// oneDNN's batch-reduce GEMM micro-kernel through ATen's cpublas::brgemm (about 20% faster than
// sgemm on these tile shapes, measured on AVX-512), double runs dgemm.
inline void matmul(int m, int n, int k, const float* a, int lda, const float* b, int ldb, float* c, int ldc,
                   bool accumulate) {
  at::native::cpublas::brgemm(m, n, k, lda, ldb, ldc, accumulate, a, b, c, /*is_vnni=*/false);
}

inline void matmul(int m, int n, int k, const double* a, int lda, const double* b, int ldb, double* c, int ldc,
                   bool accumulate) {
  // BLAS is column-major, where a row-major array reads as its transpose: C^T = B^T A^T.
  const char plain = 'N';
  const double one = 1.0, beta = accumulate ? 1.0 : 0.0;
  dgemm_(&plain, &plain, &n, &m, &k, &one, b, &ldb, a, &lda, &beta, c, &ldc);
}

// (H, width, length) copy of `length` consecutive tokens of a token-major (B, T, H, width)
// tensor: the operand of the products that need it transposed (K and V for Q K^T and dO V^T, Q
// and dO for dK^T and dV^T).
template <typename T>
std::vector<T> heads_transposed(const T* row_tokens, int64_t length, int64_t heads, int64_t width) {
  std::vector<T> transposed(heads * width * length);
  constexpr int64_t kBlock = 32;  // tokens per block: the block's source rows stay in L1 cache
  for (int64_t t0 = 0; t0 < length; t0 += kBlock) {
    const int64_t t1 = std::min(t0 + kBlock, length);
    for (int64_t hw = 0; hw < heads * width; ++hw) {
      T* destination = transposed.data() + hw * length;
      for (int64_t t = t0; t < t1; ++t) destination[t] = row_tokens[t * heads * width + hw];
    }
  }
  return transposed;
}

// The call's shapes and tables, shared by forward and backward.
template <typename T>
struct Problem {
  int64_t batch, length, heads, qk_width, v_width, max_length, scale_length, query_tile, key_tile;
  const T* queries;         // (B, T, H, d_qk)
  const T* keys;            // (B, T, H, d_qk)
  const T* values;          // (B, T, H, d_v)
  const T* position_table;  // (2n - 1,) or null
  const T* time_table;      // (num_buckets,) or null
  const int64_t* query_times;  // (B, T) or null
  const int64_t* key_times;    // (B, T) or null
  const int64_t* bucket_starts;  // (num_buckets + 1,): the first |gap| of each bucket, then INT64_MAX
  int64_t num_buckets;
  std::vector<int64_t> row_lengths;
  std::vector<int64_t> time_ordered;  // per row: keys [0, time_ordered) have non-decreasing times
};

// How many keys of [k0, k1) query i sees (causal: keys k0 .. i).
inline int64_t visible_keys(int64_t i, int64_t k0, int64_t k1) {
  return std::max<int64_t>(0, std::min(k1, i + 1) - k0);
}

// Log-scale bucket of a gap (|gap| in seconds), exactly time_buckets': a float estimate, at most
// one bucket off, corrected against the first gap of each bucket.
inline int32_t bucket_of(int64_t gap, const int64_t* bucket_starts, int64_t num_buckets) {
  const float seconds = std::max(static_cast<float>(gap), 1.0f);
  int64_t bucket = std::min(static_cast<int64_t>(std::log(seconds) * kInverseBucketWidth), num_buckets - 1);
  bucket += gap >= bucket_starts[bucket + 1];
  bucket -= gap < bucket_starts[bucket];
  return static_cast<int32_t>(bucket);
}

// The time buckets of one tile as runs: per query, spans of keys [begin, end) (tile columns)
// that share a bucket. On time-ordered keys a query's gaps only grow towards older keys, so a
// query has a handful of runs, each found by bisection; other rows get one run per change of
// bucket.
struct TimeRuns {
  std::vector<int32_t> begin, end, bucket;
  std::vector<int32_t> first;  // runs of tile row r: [first[r], first[r + 1])
  std::vector<int32_t> scratch;

  void clear() {
    begin.clear(), end.clear(), bucket.clear(), first.assign(1, 0);
  }
  void add(int32_t run_begin, int32_t run_end, int32_t run_bucket) {
    begin.push_back(run_begin), end.push_back(run_end), bucket.push_back(run_bucket);
  }
};

template <typename T>
void time_runs(const Problem<T>& p, int64_t row, int64_t i, int64_t k0, int64_t visible, TimeRuns& runs) {
  const int64_t query_time = p.query_times[row * p.length + i];
  const int64_t* key_times = p.key_times + row * p.length + k0;
  const int64_t* starts = p.bucket_starts;
  const bool ordered = visible == 0 || (k0 + visible <= p.time_ordered[row] && query_time >= key_times[visible - 1]);
  if (ordered) {  // gaps >= 0, not decreasing from the newest key (j = visible - 1) to the oldest
    int64_t end = visible;
    while (end > 0) {  // the run ending at `end`: its bucket from its newest key, its start by bisection
      const int32_t bucket = bucket_of(query_time - key_times[end - 1], starts, p.num_buckets);
      const int64_t next_start = starts[bucket + 1];
      int64_t low = 0, high = end - 1;  // the run starts at the first j in [low, high] with gap < next_start
      while (low < high) {
        const int64_t middle = low + (high - low) / 2;
        if (query_time - key_times[middle] < next_start) high = middle; else low = middle + 1;
      }
      runs.add(static_cast<int32_t>(low), static_cast<int32_t>(end), bucket);
      end = low;
    }
  } else {
    runs.scratch.resize(visible);
    for (int64_t j = 0; j < visible; ++j) {
      runs.scratch[j] = bucket_of(std::abs(query_time - key_times[j]), starts, p.num_buckets);
    }
    int32_t begin = 0;
    for (int64_t j = 1; j <= visible; ++j) {
      if (j == visible || runs.scratch[j] != runs.scratch[begin]) {
        runs.add(begin, static_cast<int32_t>(j), runs.scratch[begin]);
        begin = static_cast<int32_t>(j);
      }
    }
  }
  runs.first.push_back(static_cast<int32_t>(runs.begin.size()));
}

// The bias of one tile, (q1 - q0, k1 - k0) with leading dimension k1 - k0, and its time runs (when
// there is a time bias); entries above the diagonal are left as they are (masked later).
template <typename T>
void tile_bias(const Problem<T>& p, int64_t row, int64_t q0, int64_t q1, int64_t k0, int64_t k1, T* bias,
               TimeRuns& runs) {
  const int64_t bk = k1 - k0;
  runs.clear();
  for (int64_t i = q0; i < q1; ++i) {
    const int64_t visible = visible_keys(i, k0, k1);
    T* bias_row = bias + (i - q0) * bk;
    if (p.position_table != nullptr) {
      const T* diagonal = p.position_table + (i - k0 + p.max_length - 1);  // w_p[i - j + n - 1] = diagonal[-(j - k0)]
      for (int64_t j = 0; j < visible; ++j) bias_row[j] = diagonal[-j];
    } else {
      for (int64_t j = 0; j < visible; ++j) bias_row[j] = T(0);
    }
    if (p.time_table == nullptr) continue;
    time_runs(p, row, i, k0, visible, runs);
    for (int32_t r = runs.first[i - q0]; r < runs.first[i - q0 + 1]; ++r) {
      const T weight = p.time_table[runs.bucket[r]];
      for (int32_t j = runs.begin[r]; j < runs.end[r]; ++j) bias_row[j] += weight;
    }
  }
}

template <typename T>
T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

// One thread's tile buffers, (bq, bk) each: the heads of a tile run in parallel (at::parallel_for,
// torch's threads), each thread on its own buffers; with one thread they run in turn.
template <typename T>
struct ThreadBuffers {
  std::vector<T> logits, grad_logits, bias_grad;
  bool holds_bias_grad = false;  // bias_grad holds this tile's sum over the heads this thread ran

  explicit ThreadBuffers(int64_t size) : logits(size), grad_logits(size), bias_grad(size) {}
};

// Heads per task of a tile: one (the heads spread over the threads) on tiles big enough to
// repay the threads' start, all of them (one task, no threads) on small tiles.
inline int64_t head_grain(int64_t m, int64_t n, int64_t heads) {
  constexpr int64_t kParallelLogits = 64 * 64;
  return m * n >= kParallelLogits ? 1 : heads;
}

template <typename T>
std::vector<ThreadBuffers<T>> thread_buffers(int64_t size) {
  return std::vector<ThreadBuffers<T>>(at::get_num_threads(), ThreadBuffers<T>(size));
}

template <typename T>
void forward_rows(const Problem<T>& p, T* out) {
  const int64_t bq = p.query_tile, bk = p.key_tile, h_qk = p.heads * p.qk_width, h_v = p.heads * p.v_width;
  std::vector<T> bias(bq * bk);
  auto buffers = thread_buffers<T>(bq * bk);
  TimeRuns runs;
  for (int64_t row = 0; row < p.batch; ++row) {
    const int64_t length = p.row_lengths[row];
    const int64_t row_qk = row * p.length * h_qk, row_v = row * p.length * h_v;
    const std::vector<T> keys_t = heads_transposed(p.keys + row_qk, length, p.heads, p.qk_width);
    for (int64_t q0 = 0; q0 < length; q0 += bq) {
      const int64_t q1 = std::min(q0 + bq, length);
      const int m = static_cast<int>(q1 - q0);
      for (int64_t k0 = 0; k0 < q1; k0 += bk) {
        const int64_t k1 = std::min(k0 + bk, q1);
        const int n = static_cast<int>(k1 - k0);
        tile_bias(p, row, q0, q1, k0, k1, bias.data(), runs);
        at::parallel_for(0, p.heads, head_grain(m, n, p.heads), [&](int64_t first_head, int64_t end_head) {
          T* logits = buffers[at::get_thread_num()].logits.data();
          for (int64_t head = first_head; head < end_head; ++head) {
            const T* q = p.queries + row_qk + q0 * h_qk + head * p.qk_width;
            const T* k_t = keys_t.data() + head * p.qk_width * length + k0;  // (d_qk, n), leading dimension length
            matmul(m, n, p.qk_width, q, h_qk, k_t, length, logits, n, false);
            for (int64_t i = q0; i < q1; ++i) {  // SiLU(logits + bias), zero above the diagonal
              T* weights = logits + (i - q0) * n;
              const T* bias_row = bias.data() + (i - q0) * n;
              const int64_t visible = visible_keys(i, k0, k1);
              for (int64_t j = 0; j < visible; ++j) {
                const T x = weights[j] + bias_row[j];
                weights[j] = x * sigmoid(x);
              }
              for (int64_t j = visible; j < n; ++j) weights[j] = T(0);
            }
            const T* v = p.values + row_v + k0 * h_v + head * p.v_width;
            T* o = out + row_v + q0 * h_v + head * p.v_width;
            matmul(m, p.v_width, n, logits, n, v, h_v, o, h_v, true);
          }
        });
      }
    }
  }
}

template <typename T>
void backward_rows(const Problem<T>& p, const T* grad_out, T* grad_q, T* grad_k_t, T* grad_v_t, T* position_grad,
                   T* time_grad) {
  const int64_t bq = p.query_tile, bk = p.key_tile, h_qk = p.heads * p.qk_width, h_v = p.heads * p.v_width;
  std::vector<T> bias(bq * bk);
  auto buffers = thread_buffers<T>(bq * bk);
  TimeRuns runs;
  const bool wants_bias_grad = position_grad != nullptr || time_grad != nullptr;
  for (int64_t row = 0; row < p.batch; ++row) {
    const int64_t length = p.row_lengths[row];
    const int64_t row_qk = row * p.length * h_qk, row_v = row * p.length * h_v;
    const std::vector<T> keys_t = heads_transposed(p.keys + row_qk, length, p.heads, p.qk_width);
    const std::vector<T> values_t = heads_transposed(p.values + row_v, length, p.heads, p.v_width);
    for (int64_t q0 = 0; q0 < length; q0 += bq) {
      const int64_t q1 = std::min(q0 + bq, length);
      const int m = static_cast<int>(q1 - q0);
      const std::vector<T> queries_t = heads_transposed(p.queries + row_qk + q0 * h_qk, m, p.heads, p.qk_width);
      const std::vector<T> dout_t = heads_transposed(grad_out + row_v + q0 * h_v, m, p.heads, p.v_width);
      for (int64_t k0 = 0; k0 < q1; k0 += bk) {
        const int64_t k1 = std::min(k0 + bk, q1);
        const int n = static_cast<int>(k1 - k0);
        tile_bias(p, row, q0, q1, k0, k1, bias.data(), runs);
        at::parallel_for(0, p.heads, head_grain(m, n, p.heads), [&](int64_t first_head, int64_t end_head) {
          ThreadBuffers<T>& mine = buffers[at::get_thread_num()];
          T* logits = mine.logits.data();
          T* grad_logits = mine.grad_logits.data();
          for (int64_t head = first_head; head < end_head; ++head) {
            const int64_t qk_offset = head * p.qk_width, v_offset = head * p.v_width;
            const T* q = p.queries + row_qk + q0 * h_qk + qk_offset;
            const T* k = p.keys + row_qk + k0 * h_qk + qk_offset;
            const T* k_t = keys_t.data() + head * p.qk_width * length + k0;  // (d_qk, n), leading dimension length
            const T* v_t = values_t.data() + head * p.v_width * length + k0;  // (d_v, n)
            const T* dout = grad_out + row_v + q0 * h_v + v_offset;
            matmul(m, n, p.qk_width, q, h_qk, k_t, length, logits, n, false);
            // dW = dO V^T (the weights' gradient; dO is already divided by n)
            matmul(m, n, p.v_width, dout, h_v, v_t, length, grad_logits, n, false);
            const bool first = !mine.holds_bias_grad;
            for (int64_t i = q0; i < q1; ++i) {  // weights and the logits' gradient, in place
              T* weights = logits + (i - q0) * n;
              T* grad = grad_logits + (i - q0) * n;
              T* bias_grad_row = mine.bias_grad.data() + (i - q0) * n;
              const T* bias_row = bias.data() + (i - q0) * n;
              const int64_t visible = visible_keys(i, k0, k1);
              for (int64_t j = 0; j < visible; ++j) {
                const T x = weights[j] + bias_row[j];
                const T s = sigmoid(x);
                weights[j] = x * s;
                grad[j] *= s * (T(1) + x * (T(1) - s));  // SiLU'(x) = s (1 + x (1 - s))
              }
              for (int64_t j = visible; j < n; ++j) weights[j] = grad[j] = T(0);
              if (!wants_bias_grad) continue;
              if (first) {
                for (int64_t j = 0; j < visible; ++j) bias_grad_row[j] = grad[j];
              } else {
                for (int64_t j = 0; j < visible; ++j) bias_grad_row[j] += grad[j];
              }
            }
            mine.holds_bias_grad = wants_bias_grad;
            // dV^T += dO^T W and dK^T += Q^T dS: the key gradients are kept transposed, (B, H, width, T)
            T* dv_t = grad_v_t + ((row * p.heads + head) * p.v_width) * p.length + k0;
            matmul(p.v_width, n, m, dout_t.data() + head * p.v_width * m, m, logits, n, dv_t, p.length, true);
            T* dq = grad_q + row_qk + q0 * h_qk + qk_offset;
            matmul(m, p.qk_width, n, grad_logits, n, k, h_qk, dq, h_qk, true);
            T* dk_t = grad_k_t + ((row * p.heads + head) * p.qk_width) * p.length + k0;
            matmul(p.qk_width, n, m, queries_t.data() + head * p.qk_width * m, m, grad_logits, n, dk_t, p.length,
                   true);
          }
        });
        if (!wants_bias_grad) continue;
        T* bias_grad = nullptr;  // the sum over all heads: the first thread's buffer plus the others'
        for (ThreadBuffers<T>& thread : buffers) {
          if (!thread.holds_bias_grad) continue;
          thread.holds_bias_grad = false;
          if (bias_grad == nullptr) {
            bias_grad = thread.bias_grad.data();
            continue;
          }
          for (int64_t i = q0; i < q1; ++i) {
            const int64_t visible = visible_keys(i, k0, k1);
            for (int64_t j = 0; j < visible; ++j) bias_grad[(i - q0) * n + j] += thread.bias_grad[(i - q0) * n + j];
          }
        }
        for (int64_t i = q0; i < q1; ++i) {  // the tile's bias gradient into the two tables
          const T* bias_grad_row = bias_grad + (i - q0) * n;
          const int64_t visible = visible_keys(i, k0, k1);
          if (position_grad != nullptr) {
            T* diagonal = position_grad + (i - k0 + p.max_length - 1);
            for (int64_t j = 0; j < visible; ++j) diagonal[-j] += bias_grad_row[j];
          }
          if (time_grad != nullptr) {
            for (int32_t r = runs.first[i - q0]; r < runs.first[i - q0 + 1]; ++r) {
              T sum = T(0);
              for (int32_t j = runs.begin[r]; j < runs.end[r]; ++j) sum += bias_grad_row[j];
              time_grad[runs.bucket[r]] += sum;
            }
          }
        }
      }
    }
  }
}

template <typename T>
Problem<T> problem(const at::Tensor& queries, const at::Tensor& keys, const at::Tensor& values,
                   const c10::optional<at::Tensor>& position_table, const c10::optional<at::Tensor>& time_table,
                   const c10::optional<at::Tensor>& query_times, const c10::optional<at::Tensor>& key_times,
                   const c10::optional<at::Tensor>& bucket_starts, const std::vector<int64_t>& row_lengths,
                   int64_t max_length, int64_t scale_length, int64_t query_tile, int64_t key_tile) {
  TORCH_CHECK(queries.dim() == 4 && keys.sizes() == queries.sizes() && values.dim() == 4 &&
                  values.sizes().slice(0, 3) == queries.sizes().slice(0, 3),
              "hstu_kernel: queries and keys (B, T, H, d_qk) and values (B, T, H, d_v) of one shape, got ",
              queries.sizes(), ", ", keys.sizes(), ", ", values.sizes());
  TORCH_CHECK(queries.is_contiguous() && keys.is_contiguous() && values.is_contiguous(),
              "hstu_kernel: queries, keys and values must be contiguous");
  TORCH_CHECK(query_tile > 0 && key_tile > 0, "hstu_kernel: tiles of ", query_tile, " queries and ", key_tile,
              " keys: both must be positive");
  TORCH_CHECK(static_cast<int64_t>(row_lengths.size()) == queries.size(0), "hstu_kernel: ", row_lengths.size(),
              " row lengths for ", queries.size(0), " rows");
  Problem<T> p;
  p.batch = queries.size(0);
  p.length = queries.size(1);
  p.heads = queries.size(2);
  p.qk_width = queries.size(3);
  p.v_width = values.size(3);
  p.max_length = max_length;
  p.scale_length = scale_length;
  p.query_tile = query_tile;
  p.key_tile = key_tile;
  p.queries = queries.data_ptr<T>();
  p.keys = keys.data_ptr<T>();
  p.values = values.data_ptr<T>();
  p.position_table = nullptr;
  if (position_table.has_value()) {
    TORCH_CHECK(position_table->is_contiguous() && position_table->numel() == 2 * max_length - 1,
                "hstu_kernel: the position table must hold 2n - 1 = ", 2 * max_length - 1, " weights");
    p.position_table = position_table->data_ptr<T>();
  }
  p.time_table = nullptr;
  p.query_times = p.key_times = p.bucket_starts = nullptr;
  p.num_buckets = 0;
  if (time_table.has_value()) {
    TORCH_CHECK(query_times.has_value() && key_times.has_value() && bucket_starts.has_value(),
                "hstu_kernel: a time table needs query times, key times and bucket starts");
    TORCH_CHECK(time_table->is_contiguous() && bucket_starts->numel() == time_table->numel() + 1,
                "hstu_kernel: bucket starts must hold num_buckets + 1 gaps");
    TORCH_CHECK(query_times->sizes() == queries.sizes().slice(0, 2) && key_times->sizes() == queries.sizes().slice(0, 2) &&
                    query_times->is_contiguous() && key_times->is_contiguous(),
                "hstu_kernel: query and key times must be contiguous (B, T)");
    p.time_table = time_table->data_ptr<T>();
    p.query_times = query_times->data_ptr<int64_t>();
    p.key_times = key_times->data_ptr<int64_t>();
    p.bucket_starts = bucket_starts->data_ptr<int64_t>();
    p.num_buckets = time_table->numel();
  }
  p.row_lengths = row_lengths;
  if (p.time_table != nullptr) {
    for (int64_t row = 0; row < p.batch; ++row) {
      const int64_t* times = p.key_times + row * p.length;
      int64_t ordered = 1;
      while (ordered < p.length && times[ordered] >= times[ordered - 1]) ++ordered;
      p.time_ordered.push_back(ordered);
    }
  }
  for (int64_t length : row_lengths) {
    TORCH_CHECK(length >= 0 && length <= p.length && length <= max_length, "hstu_kernel: row length ", length,
                " outside 0 .. min(T ", p.length, ", n ", max_length, ")");
  }
  return p;
}

at::Tensor forward(const at::Tensor& queries, const at::Tensor& keys, const at::Tensor& values,
                   const c10::optional<at::Tensor>& position_table, const c10::optional<at::Tensor>& time_table,
                   const c10::optional<at::Tensor>& query_times, const c10::optional<at::Tensor>& key_times,
                   const c10::optional<at::Tensor>& bucket_starts, const std::vector<int64_t>& row_lengths,
                   int64_t max_length, int64_t scale_length, int64_t query_tile, int64_t key_tile) {
  at::Tensor out = at::zeros_like(values);
  AT_DISPATCH_FLOATING_TYPES(queries.scalar_type(), "hstu_kernel_forward", [&] {
    auto p = problem<scalar_t>(queries, keys, values, position_table, time_table, query_times, key_times,
                               bucket_starts, row_lengths, max_length, scale_length, query_tile, key_tile);
    forward_rows<scalar_t>(p, out.data_ptr<scalar_t>());
  });
  at::native::cpublas::brgemm_release(/*is_vnni=*/false);
  return out.div_(scale_length);  // the weights' 1 / n, once on the output rather than in the products
}

std::vector<at::Tensor> backward(const at::Tensor& grad_out, const at::Tensor& queries, const at::Tensor& keys,
                                 const at::Tensor& values, const c10::optional<at::Tensor>& position_table,
                                 const c10::optional<at::Tensor>& time_table,
                                 const c10::optional<at::Tensor>& query_times,
                                 const c10::optional<at::Tensor>& key_times,
                                 const c10::optional<at::Tensor>& bucket_starts,
                                 const std::vector<int64_t>& row_lengths, int64_t max_length, int64_t scale_length,
                                 int64_t query_tile, int64_t key_tile) {
  TORCH_CHECK(grad_out.sizes() == values.sizes() && grad_out.is_contiguous() &&
                  grad_out.scalar_type() == values.scalar_type(),
              "hstu_kernel: the output gradient must be contiguous and shaped as the values");
  const at::Tensor scaled_grad_out = grad_out / scale_length;  // the weights' 1 / n
  at::Tensor grad_q = at::zeros_like(queries);
  // The key and value gradients as (B, H, width, T), returned as (B, T, H, width) views.
  at::Tensor grad_k_t = at::zeros({keys.size(0), keys.size(2), keys.size(3), keys.size(1)}, keys.options());
  at::Tensor grad_v_t = at::zeros({values.size(0), values.size(2), values.size(3), values.size(1)}, values.options());
  at::Tensor position_grad = position_table.has_value() ? at::zeros_like(*position_table) : at::Tensor();
  at::Tensor time_grad = time_table.has_value() ? at::zeros_like(*time_table) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(queries.scalar_type(), "hstu_kernel_backward", [&] {
    auto p = problem<scalar_t>(queries, keys, values, position_table, time_table, query_times, key_times,
                               bucket_starts, row_lengths, max_length, scale_length, query_tile, key_tile);
    backward_rows<scalar_t>(p, scaled_grad_out.data_ptr<scalar_t>(), grad_q.data_ptr<scalar_t>(),
                            grad_k_t.data_ptr<scalar_t>(), grad_v_t.data_ptr<scalar_t>(),
                            position_grad.defined() ? position_grad.data_ptr<scalar_t>() : nullptr,
                            time_grad.defined() ? time_grad.data_ptr<scalar_t>() : nullptr);
  });
  at::native::cpublas::brgemm_release(/*is_vnni=*/false);
  return {grad_q, grad_k_t.permute({0, 3, 1, 2}), grad_v_t.permute({0, 3, 1, 2}), position_grad, time_grad};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "HSTU pointwise causal attention, forward (see hstu_kernel.cpp)");
  m.def("backward", &backward, "HSTU pointwise causal attention, backward (see hstu_kernel.cpp)");
}
