// One decoding step of the policy (models/gpt.py: GPT.decode) in one call from Python.
//
// At one new token per row, PyTorch's eager step spends as long launching ~100 small
// operators and running 256 tiny attention products per layer (1x32 by 32xT each) as in
// its linears. Here the linears run on the kernels the eager step uses (ATen's addmm, or
// oneDNN where models/kernels.py chooses it), the attention over the KV cache is a plain
// loop per row and head, and nothing returns to Python between layers.
// Same float32 arithmetic up to the order of summation; tests/test_fused_decode.py holds
// it to the Python step. A bfloat16 policy (a bfloat16 sampler) runs the same step on bfloat16
// tensors, its attention summing in float32. `sample` runs models/sampling.py's loop around the steps.
// Built with OpenMP (models/fused_decode.py), so the attention loop's rows and heads are split across
// torch's threads; each (row, head) is summed by one thread alone, so the threads change no bit.
#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <atomic>
#include <cmath>
#include <limits>
#include <optional>
#include <tuple>
#include <vector>

namespace {

constexpr int64_t kTensorsPerBlock = 12;  // ln1 w b, qkv w b, proj w b, ln2 w b, up w b, down w b

// Ask for a cache row's cache lines before they are read. A (row, head) reads its keys, then its
// values, a few KB each, then jumps to the next (row, head); at B=64 the cache of all layers is ~16 MB,
// more than a core's share of L3 on a shared machine, and the hardware prefetcher, which starts over
// at each jump, left the loop waiting on memory (AMD Zen 4: ~40 ns a position against 14 when the cache
// is resident). So the values are asked for while the scores read the keys, and the next (row, head)'s
// keys while the values are summed. The new key and value a (row, head) writes at `at` sit in lines
// nothing has touched since the cache was made: their writes stalled the loop (a sixth of its time in
// a profile), so they are asked for, with intent to write, two (row, head)s ahead. The rows read are
// asked for into L2 (locality 2, `prefetcht1` on x86), not L1: 12-18% faster at B=256 in float32 on a
// Zen 4, the same in bfloat16 (bench/README). No arithmetic changes.
template <bool ForWrite = false, typename T>
inline void prefetch_row(const T* row, int64_t head_size) {
  const char* bytes = reinterpret_cast<const char*>(row);
  for (int64_t offset = 0; offset < head_size * static_cast<int64_t>(sizeof(T)); offset += 64) {
    __builtin_prefetch(bytes + offset, ForWrite ? 1 : 0, ForWrite ? 3 : 2);
  }
}

constexpr int64_t kWriteAhead = 2;  // in an A/B, 1 and 4 (row, head)s ahead gained less

// Write the new key and value of every (row, head) at position `at` of the cache, then attend:
// y[b, h] = softmax(q . K[0..at] / sqrt(hs) + bias[b, 0..at]) V[0..at]. Positions after `at`
// are not yet written, and the caller's bias is -inf there: they are skipped, not masked.
// T is float or bfloat16 (a bfloat16 policy's cache, read at half the bytes); the sums are float32.
template <typename T>
void attend(const T* qkv, T* keys, T* values, const T* bias, T* y, int64_t rows, int64_t heads, int64_t capacity,
            int64_t head_size, int64_t at) {
  const int64_t width = heads * head_size;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_size));
  at::parallel_for(0, rows * heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> weight(at + 1), q(head_size), out(head_size);
    for (int64_t rh = begin; rh < end; ++rh) {
      const int64_t row = rh / heads, head = rh % heads;
      const T* q_in = qkv + row * 3 * width + head * head_size;
      const T* k_new = q_in + width;
      const T* v_new = q_in + 2 * width;
      T* K = keys + rh * capacity * head_size;
      T* V = values + rh * capacity * head_size;
      if (rh + kWriteAhead < end) {
        const int64_t ahead = (rh + kWriteAhead) * capacity * head_size + at * head_size;
        prefetch_row<true>(keys + ahead, head_size);
        prefetch_row<true>(values + ahead, head_size);
      }
      for (int64_t d = 0; d < head_size; ++d) {
        q[d] = static_cast<float>(q_in[d]);
        K[at * head_size + d] = k_new[d];
        V[at * head_size + d] = v_new[d];
      }
      const T* row_bias = bias + row * capacity;
      float top = -std::numeric_limits<float>::infinity();
      for (int64_t t = 0; t <= at; ++t) {
        const T* k = K + t * head_size;
        prefetch_row(V + t * head_size, head_size);
        float dot = 0.f;
#pragma omp simd reduction(+ : dot)
        for (int64_t d = 0; d < head_size; ++d) dot += q[d] * static_cast<float>(k[d]);
        weight[t] = dot * scale + static_cast<float>(row_bias[t]);
        top = std::max(top, weight[t]);
      }
      for (int64_t d = 0; d < head_size; ++d) out[d] = 0.f;
      if (top != -std::numeric_limits<float>::infinity()) {  // else nothing to attend to
        float total = 0.f;
        for (int64_t t = 0; t <= at; ++t) {
          weight[t] = std::exp(weight[t] - top);
          total += weight[t];
        }
        const T* next_K = rh + 1 < end ? keys + (rh + 1) * capacity * head_size : nullptr;
        for (int64_t t = 0; t <= at; ++t) {
          const float p = weight[t] / total;
          const T* v = V + t * head_size;
          if (next_K != nullptr) prefetch_row(next_K + t * head_size, head_size);
#pragma omp simd
          for (int64_t d = 0; d < head_size; ++d) out[d] += p * static_cast<float>(v[d]);
        }
      }
      T* y_out = y + row * width + head * head_size;
      for (int64_t d = 0; d < head_size; ++d) y_out[d] = static_cast<T>(out[d]);
    }
  });
}

// x @ weight.T + bias, then (gelu) the exact GELU: on ATen's addmm (the BLAS `nn.Linear` calls), or
// on oneDNN's kernel with the GELU inside it, as models/kernels.py runs the eager step's linears.
torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias, bool gelu,
                     bool onednn) {
  if (!onednn) {
    auto y = at::addmm(bias, x, weight.t());
    return gelu ? at::gelu(y) : y;
  }
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("mkldnn::_linear_pointwise", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                                         c10::string_view, c10::List<std::optional<at::Scalar>>,
                                         std::optional<c10::string_view>)>();
  return op.call(x, weight, bias, gelu ? "gelu" : "none", c10::List<std::optional<at::Scalar>>(),
                 std::optional<c10::string_view>(gelu ? "none" : ""));
}

}  // namespace

// x (B, C): the new tokens' embeddings. blocks: kTensorsPerBlock tensors per layer, in order.
// keys, values (L, B, H, capacity, hs): the KV cache, written at position `at`. bias (B, capacity).
// onednn: the linears on oneDNN instead of addmm. Returns ln_f of the last block's output, (B, C).
torch::Tensor decode_step(torch::Tensor x, const std::vector<torch::Tensor>& blocks, torch::Tensor keys,
                          torch::Tensor values, torch::Tensor bias, int64_t at, torch::Tensor ln_f_weight,
                          torch::Tensor ln_f_bias, bool onednn) {
  const int64_t layers = keys.size(0), rows = keys.size(1), heads = keys.size(2);
  const int64_t capacity = keys.size(3), head_size = keys.size(4), width = heads * head_size;
  TORCH_CHECK(static_cast<int64_t>(blocks.size()) == kTensorsPerBlock * layers, "expected ", kTensorsPerBlock,
              " tensors per layer");
  TORCH_CHECK(x.dtype() == keys.dtype() && (x.dtype() == torch::kFloat32 || x.dtype() == torch::kBFloat16),
              "float32 or bfloat16, the cache's dtype");
  TORCH_CHECK(keys.is_contiguous() && values.is_contiguous() && bias.is_contiguous(), "contiguous cache and bias");
  TORCH_CHECK(x.size(0) == rows && x.size(1) == width && bias.size(0) == rows && bias.size(1) == capacity,
              "shapes of x, cache and bias disagree");
  TORCH_CHECK(0 <= at && at < capacity, "KV cache of ", capacity, " positions is full");
  auto attended = torch::empty({rows, width}, x.options());
  for (int64_t layer = 0; layer < layers; ++layer) {
    const torch::Tensor* p = blocks.data() + kTensorsPerBlock * layer;
    auto qkv = linear(at::layer_norm(x, {width}, p[0], p[1]), p[2], p[3], false, onednn);
    if (x.dtype() == torch::kBFloat16) {
      attend(qkv.data_ptr<at::BFloat16>(), keys[layer].data_ptr<at::BFloat16>(),
             values[layer].data_ptr<at::BFloat16>(), bias.data_ptr<at::BFloat16>(),
             attended.data_ptr<at::BFloat16>(), rows, heads, capacity, head_size, at);
    } else {
      attend(qkv.data_ptr<float>(), keys[layer].data_ptr<float>(), values[layer].data_ptr<float>(),
             bias.data_ptr<float>(), attended.data_ptr<float>(), rows, heads, capacity, head_size, at);
    }
    x = x + linear(attended, p[4], p[5], false, onednn);
    auto hidden = linear(at::layer_norm(x, {width}, p[6], p[7]), p[8], p[9], true, onednn);
    x = x + linear(hidden, p[10], p[11], false, onednn);
  }
  return at::layer_norm(x, {width}, ln_f_weight, ln_f_bias);
}

namespace {

// models/sampling.py `_choose`, operator for operator (the same kernels, so the same actions and log-probs):
// logits (B, V) float32 -> actions (B,), their log-probs under the distribution sampled.
std::tuple<torch::Tensor, torch::Tensor> choose(torch::Tensor logits, double temperature, std::optional<int64_t> top_k,
                                                std::optional<at::Generator> generator) {
  if (temperature == 0) {
    auto logp = at::log_softmax(logits, -1);
    auto action = logits.argmax(-1);
    return {action, logp.gather(-1, action.unsqueeze(-1)).squeeze(-1)};
  }
  logits = logits / temperature;
  if (top_k.has_value() && *top_k < logits.size(-1)) {
    auto kth = std::get<0>(at::topk(logits, *top_k, -1)).narrow(-1, *top_k - 1, 1);
    logits = logits.masked_fill(logits < kth, -std::numeric_limits<double>::infinity());
  }
  auto logp = at::log_softmax(logits, -1);
  auto action = at::multinomial(logp.exp(), 1, false, generator).squeeze(-1);
  return {action, logp.gather(-1, action.unsqueeze(-1)).squeeze(-1)};
}

}  // namespace

// The loop of models/sampling.py `_sample` with a KV cache, from the state after the prompt to the last
// action: at one new token per row its ~25 small operators a step cost as much from Python as the step
// itself at B=1. Same operators in the same order (the Python loop is its reference), so the same actions.
// h (B, C): the state after the prompt. out, logprobs, action_mask (B, N) and bias (B, capacity) are
// written in place; position (B, 1) is each row's last position; length the cache's filled positions.
// Returns the columns filled (fewer than N when every row has ended), the decoding steps taken (the
// cache's new positions), the rows that ended and whether a row outgrew `max_len` (the caller raises).
std::tuple<int64_t, int64_t, torch::Tensor, bool> sample(
    torch::Tensor h, torch::Tensor tok_emb, torch::Tensor pos_emb, const std::vector<torch::Tensor>& blocks,
    torch::Tensor keys, torch::Tensor values, torch::Tensor bias, torch::Tensor position, int64_t length,
    torch::Tensor ln_f_weight, torch::Tensor ln_f_bias, bool onednn, torch::Tensor out, torch::Tensor logprobs,
    torch::Tensor action_mask, double temperature, std::optional<int64_t> top_k,
    std::optional<at::Generator> generator, int64_t eor_id, int64_t pad_id, int64_t width, int64_t overflow_from,
    int64_t max_len) {
  const int64_t columns = out.size(1);
  auto done = torch::zeros({out.size(0)}, out.options().dtype(torch::kBool));
  int64_t steps = 0;
  for (int64_t t = 0; t < columns; ++t) {
    auto [action, logp] = choose(at::mm(h, tok_emb.t()).to(torch::kFloat32), temperature, top_k, generator);
    auto active = done.logical_not();
    action = at::where(done, at::full_like(action, pad_id), action);
    out.select(1, t).copy_(action);
    logprobs.select(1, t).copy_(at::where(done, 0.0, logp));
    action_mask.select(1, t).copy_(active.to(torch::kLong));
    done = done.logical_or(action == eor_id);
    if (done.all().item<bool>()) return {t + 1, steps, done, false};
    bias.select(1, width + t).masked_fill_(active, 0.0);
    position = position + active.unsqueeze(1).to(torch::kLong);
    if (t >= overflow_from && position.max().item<int64_t>() >= max_len) return {t + 1, steps, done, true};
    if (t == columns - 1) break;  // no action follows the last one: its state is never read
    auto x = at::embedding(tok_emb, action) + at::embedding(pos_emb, position.squeeze(1));
    h = decode_step(x, blocks, keys, values, bias, length + steps, ln_f_weight, ln_f_bias, onednn);
    ++steps;
  }
  return {columns, steps, done, false};
}

// How many of torch's threads an ATen parallel_for over `items` runs on, as the attention loop's does:
// a build without OpenMP runs it on one thread whatever torch.set_num_threads says (a test's check).
int64_t parallel_threads(int64_t items) {
  std::atomic<int64_t> most{0};
  at::parallel_for(0, items, 1, [&](int64_t, int64_t) {
    const int64_t seen = at::get_thread_num() + 1;
    int64_t known = most.load();
    while (seen > known && !most.compare_exchange_weak(known, seen)) {
    }
  });
  return most.load();
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("decode_step", &decode_step, "One decoding step of the policy over its KV cache");
  m.def("sample", &sample, "The sampling loop over the KV cache, from the state after the prompt");
  m.def("parallel_threads", &parallel_threads, "Threads an ATen parallel_for of the extension runs on");
}
