// Python bindings of the LZW codec (module z2z_vllm._codec).
//
// Arguments are converted to int32 vectors while holding the GIL; every algorithmic call then
// runs with the GIL released. Conversions use the CPython API directly: pybind11's generic
// casters cost more per element than the codec itself.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "lzw.h"
#include "parallel.h"

namespace py = pybind11;
using z2z::Id;

namespace {

constexpr long long kMaxId = std::numeric_limits<Id>::max();

[[noreturn]] void out_of_range(const std::string& value, size_t position) {
  const bool negative = !value.empty() && value[0] == '-';
  throw py::value_error("id " + value + " at position " + std::to_string(position) +
                        (negative ? " is negative" : " is out of range (ids are < 2**31)"));
}

// Ints below 2**30 are one digit: reading it directly costs a fraction of PyLong_AsLongLong,
// which would otherwise be most of the work per id.
bool read_small_int(PyObject* item, Id& value) {
  if (!PyLong_CheckExact(item)) return false;
#if PY_VERSION_HEX >= 0x030C0000
  if (!PyUnstable_Long_IsCompact(reinterpret_cast<PyLongObject*>(item))) return false;
  const Py_ssize_t compact = PyUnstable_Long_CompactValue(reinterpret_cast<PyLongObject*>(item));
  if (compact < 0 || compact > kMaxId) return false;
  value = static_cast<Id>(compact);
#else
  const Py_ssize_t size = Py_SIZE(item);
  if (size != 0 && size != 1) return false;
  value = size == 0 ? 0 : static_cast<Id>(reinterpret_cast<PyLongObject*>(item)->ob_digit[0]);
#endif
  return true;
}

Id item_to_id(PyObject* item, size_t position) {
  Id small;
  if (read_small_int(item, small)) return small;
  if (PyBool_Check(item) || !PyLong_Check(item)) {
    // numpy integer scalars and other integer-likes implement __index__; floats and bools do not.
    PyObject* index = PyBool_Check(item) ? nullptr : PyNumber_Index(item);
    if (!index) {
      PyErr_Clear();
      throw py::type_error("id at position " + std::to_string(position) + " has type " +
                           Py_TYPE(item)->tp_name + ", expected int");
    }
    py::object owned = py::reinterpret_steal<py::object>(index);
    return item_to_id(index, position);
  }
  int overflow = 0;
  const long long value = PyLong_AsLongLongAndOverflow(item, &overflow);
  if (overflow || value < 0 || value > kMaxId) out_of_range(py::str(item).cast<std::string>(), position);
  return static_cast<Id>(value);
}

template <class T>
void copy_buffer_ids(const Py_buffer& view, std::vector<Id>& out) {
  const char* data = static_cast<const char*>(view.buf);
  const Py_ssize_t stride = view.strides ? view.strides[0] : view.itemsize;
  for (Py_ssize_t i = 0; i < view.shape[0]; ++i) {
    T value;
    std::memcpy(&value, data + i * stride, sizeof(T));
    if (value < 0 || static_cast<unsigned long long>(value) > static_cast<unsigned long long>(kMaxId))
      out_of_range(std::to_string(value), static_cast<size_t>(i));
    out[i] = static_cast<Id>(value);
  }
}

// 1-D integer arrays (numpy, array.array, memoryview): read in place, any integer dtype.
void read_buffer_ids(PyObject* obj, std::vector<Id>& out) {
  Py_buffer view;
  if (PyObject_GetBuffer(obj, &view, PyBUF_RECORDS_RO) != 0) throw py::error_already_set();
  std::unique_ptr<Py_buffer, void (*)(Py_buffer*)> release(&view, PyBuffer_Release);
  std::string format = view.format ? view.format : "B";
  if (!format.empty() && std::strchr("@=<", format[0])) format.erase(0, 1);
  if (view.ndim != 1)
    throw py::value_error("expected a 1-D sequence of ids, got an array with " +
                          std::to_string(view.ndim) + " dimensions");
  out.resize(view.shape[0]);
  if (format.size() == 1) {
    switch (format[0]) {
      case 'b': return copy_buffer_ids<int8_t>(view, out);
      case 'B': return copy_buffer_ids<uint8_t>(view, out);
      case 'h': return copy_buffer_ids<int16_t>(view, out);
      case 'H': return copy_buffer_ids<uint16_t>(view, out);
      case 'i': return copy_buffer_ids<int32_t>(view, out);
      case 'I': return copy_buffer_ids<uint32_t>(view, out);
      case 'l': case 'q':
        if (view.itemsize == 8) return copy_buffer_ids<int64_t>(view, out);
        return copy_buffer_ids<int32_t>(view, out);
      case 'L': case 'Q':
        if (view.itemsize == 8) return copy_buffer_ids<uint64_t>(view, out);
        return copy_buffer_ids<uint32_t>(view, out);
    }
  }
  throw py::type_error("expected integer ids, got an array of format '" +
                       std::string(view.format ? view.format : "") + "'");
}

// Accepts a list / tuple / other iterable of ints, or a 1-D integer array.
void read_ids(py::handle handle, std::vector<Id>& out) {
  PyObject* obj = handle.ptr();
  if (PyUnicode_Check(obj) || PyBytes_Check(obj) || PyByteArray_Check(obj))
    throw py::type_error(std::string("expected a sequence of int ids, got ") + Py_TYPE(obj)->tp_name);
  if (!PyList_Check(obj) && !PyTuple_Check(obj) && PyObject_CheckBuffer(obj))
    return read_buffer_ids(obj, out);
  PyObject* seq = PySequence_Fast(obj, "expected a sequence of int ids");
  if (!seq) {
    PyErr_Clear();
    throw py::type_error(std::string("expected a sequence of int ids, got ") + Py_TYPE(obj)->tp_name);
  }
  py::object owned = py::reinterpret_steal<py::object>(seq);
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
  PyObject** items = PySequence_Fast_ITEMS(seq);
  out.resize(n);
  for (Py_ssize_t i = 0; i < n; ++i) out[i] = item_to_id(items[i], static_cast<size_t>(i));
}

std::vector<std::vector<Id>> read_batch(py::handle batch) {
  PyObject* obj = batch.ptr();
  if (PyUnicode_Check(obj) || PyBytes_Check(obj))
    throw py::type_error("expected a batch (sequence of sequences of int ids)");
  py::object seq = py::reinterpret_steal<py::object>(PySequence_Fast(obj, "expected a batch"));
  if (!seq) {
    PyErr_Clear();
    throw py::type_error(std::string("expected a batch (sequence of sequences of int ids), got ") +
                         Py_TYPE(obj)->tp_name);
  }
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq.ptr());
  std::vector<std::vector<Id>> rows(n);
  for (Py_ssize_t i = 0; i < n; ++i) {
    try {
      read_ids(PySequence_Fast_GET_ITEM(seq.ptr(), i), rows[i]);
    } catch (py::value_error& e) {
      throw py::value_error("sequence " + std::to_string(i) + ": " + e.what());
    } catch (py::type_error& e) {
      throw py::type_error("sequence " + std::to_string(i) + ": " + e.what());
    }
  }
  return rows;
}

// Python int objects for every id of the codecs made so far (up to kMaxCached): creating an int
// costs more than the codec's work per id, so outputs share these. Used only under the GIL.
class IntObjects {
 public:
  static constexpr Id kMaxCached = 1 << 21;
  void reserve(Id end) {
    end = std::min(end, kMaxCached);
    while (static_cast<Id>(objects_.size()) < end) {
      PyObject* value = PyLong_FromLong(static_cast<long>(objects_.size()));
      if (!value) throw py::error_already_set();
      objects_.push_back(value);
    }
  }
  PyObject* get(Id id) const {
    if (id >= static_cast<Id>(objects_.size())) return PyLong_FromLong(id);
    Py_INCREF(objects_[id]);
    return objects_[id];
  }

 private:
  std::vector<PyObject*> objects_;  // never freed: they live as long as the module
};
IntObjects int_objects;

py::object to_python(const std::vector<Id>& ids, bool as_numpy) {
  if (as_numpy) {
    py::array_t<int64_t> array(static_cast<py::ssize_t>(ids.size()));
    std::copy(ids.begin(), ids.end(), array.mutable_data());
    return std::move(array);
  }
  PyObject* list = PyList_New(static_cast<Py_ssize_t>(ids.size()));
  if (!list) throw py::error_already_set();
  for (size_t i = 0; i < ids.size(); ++i) PyList_SET_ITEM(list, i, int_objects.get(ids[i]));
  return py::reinterpret_steal<py::object>(list);
}

py::tuple ids_tuple(const Id* ids, size_t size) {
  py::tuple tuple(size);
  for (size_t i = 0; i < size; ++i) PyTuple_SET_ITEM(tuple.ptr(), i, int_objects.get(ids[i]));
  return tuple;
}

py::tuple entry_tuple(const z2z::Decoder& decoder, Id index) {
  return ids_tuple(decoder.entry(index), decoder.entry_size(index));
}

py::dict codebook_dict(const z2z::Decoder& decoder) {
  py::dict dict;
  const Id vocab = decoder.config().vocab_size;
  for (Id i = 0; i < decoder.num_entries(); ++i) dict[py::int_(vocab + i)] = entry_tuple(decoder, i);
  return dict;
}

size_t default_threads(size_t sequences, size_t total_ids) {
  // Threads only pay off with enough work each (waking one costs a few microseconds).
  const size_t cores = std::max(1u, std::thread::hardware_concurrency());
  const size_t by_work = std::max<size_t>(1, total_ids / 16384);
  return std::max<size_t>(1, std::min({cores, sequences, by_work}));
}

// Runs fn(i) for i < n on `threads` threads; rethrows the error of the lowest failing index
// (a codec error naming its sequence).
template <class Fn>
void parallel_for(size_t n, size_t threads, Fn fn) {
  z2z::WorkerPool::instance().run(n, threads, [&](size_t i) {
    try {
      fn(i);
    } catch (const z2z::InvalidIds& e) {
      throw z2z::InvalidIds("sequence " + std::to_string(i) + ": " + e.what());
    }
  });
}

size_t thread_count(const py::object& num_threads, size_t sequences, size_t total_ids) {
  if (num_threads.is_none()) return default_threads(sequences, total_ids);
  const long long requested = num_threads.cast<long long>();
  if (requested < 1) throw py::value_error("num_threads must be >= 1, got " + std::to_string(requested));
  return static_cast<size_t>(requested);
}

size_t total_size(const std::vector<std::vector<Id>>& rows) {
  size_t total = 0;
  for (const auto& row : rows) total += row.size();
  return total;
}

class Codec;

// Thread safety: the decoder's state is read and written only while mutex_ is held, and only by
// C++ code that needs no GIL. Each call converts its ids into its own vector before taking the
// mutex and copies what it returns out of the decoder before building Python objects; the mutex
// is waited for with the GIL released. So calls are atomic, and no thread ever holds the mutex
// while waiting for the GIL (or the reverse).
class Decoder {
 public:
  Decoder(std::shared_ptr<const z2z::Config> config, py::object owner)
      : config_(std::move(config)), owner_(std::move(owner)), decoder_(*config_) {}
  Decoder(std::shared_ptr<const z2z::Config> config, py::object owner, z2z::Decoder state)
      : config_(std::move(config)), owner_(std::move(owner)), decoder_(std::move(state)) {}

  py::list feed(py::handle ids) {
    const std::vector<Id> input = read_one_or_many(ids);
    std::vector<Id> created, contents;
    std::vector<size_t> ends;
    locked([&] {
      decoder_.feed(input.data(), input.size(), nullptr, &created);
      for (Id id : created) {
        const Id index = id - config_->vocab_size;
        contents.insert(contents.end(), decoder_.entry(index), decoder_.entry(index) + decoder_.entry_size(index));
        ends.push_back(contents.size());
      }
    });
    py::list result(created.size());
    for (size_t i = 0, begin = 0; i < created.size(); begin = ends[i++])
      result[i] = py::make_tuple(created[i], ids_tuple(contents.data() + begin, ends[i] - begin));
    return result;
  }

  py::list encode_continuation(py::handle base_ids, size_t max_ids) {
    std::vector<Id> base;
    read_ids(base_ids, base);
    std::vector<Id> out;
    locked([&] { decoder_.encode_continuation(base.data(), base.size(), max_ids, out); });
    py::list result(out.size());
    for (size_t i = 0; i < out.size(); ++i) result[i] = py::int_(out[i]);
    return result;
  }

  py::object decode(py::handle ids, bool as_numpy) {
    const std::vector<Id> input = read_one_or_many(ids);
    std::vector<Id> out;
    locked([&] { decoder_.feed(input.data(), input.size(), &out, nullptr); });
    return to_python(out, as_numpy);
  }

  size_t position() {
    return locked([&] { return decoder_.position(); });
  }
  py::dict codebook() { return codebook_dict(snapshot()); }
  Id num_entries() {
    return locked([&] { return decoder_.num_entries(); });
  }
  py::tuple buffer() {
    const std::vector<Id> buffer = locked([&] { return decoder_.buffer(); });
    return ids_tuple(buffer.data(), buffer.size());
  }
  py::tuple known_at() {
    const z2z::Decoder state = snapshot();
    py::tuple out(state.num_entries());
    for (Id i = 0; i < state.num_entries(); ++i) out[i] = py::int_(state.known_at(i));
    return out;
  }
  py::object candidate() {
    std::vector<Id> content;
    Id next_id = 0;
    const bool valid = locked([&] {
      next_id = config_->vocab_size + decoder_.num_entries();
      return decoder_.candidate(content);
    });
    if (!valid) return py::none();
    return py::make_tuple(next_id, ids_tuple(content.data(), content.size()));
  }
  void reset() {
    locked([&] { decoder_.reset(); });
  }
  std::unique_ptr<Decoder> copy() { return std::make_unique<Decoder>(config_, owner_, snapshot()); }
  const py::object& owner() const { return owner_; }
  const z2z::Config* config() const { return config_.get(); }
  // For calls that advance many decoders at once (advance_requests): state() only while lock()
  // is held, and lock() never while waiting for the GIL.
  std::unique_lock<std::mutex> lock() { return std::unique_lock<std::mutex>(mutex_); }
  z2z::Decoder& state() { return decoder_; }

 private:
  static std::vector<Id> read_one_or_many(py::handle ids) {
    if (PyLong_Check(ids.ptr()) && !PyBool_Check(ids.ptr())) return {item_to_id(ids.ptr(), 0)};
    std::vector<Id> input;
    read_ids(ids, input);
    return input;
  }
  // fn() with the mutex held and the GIL released; fn must not touch Python objects.
  template <class Fn>
  auto locked(Fn fn) -> decltype(fn()) {
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(mutex_);
    return fn();
  }
  z2z::Decoder snapshot() {
    return locked([&]() -> z2z::Decoder { return decoder_; });
  }

  std::shared_ptr<const z2z::Config> config_;
  py::object owner_;  // the LZWCodec, for .codec
  z2z::Decoder decoder_;
  std::mutex mutex_;
};

// ---------------------------------------------------------------------------------------------
// One serving step over many requests' decoders: z2z_vllm.vllm.slots.HyperSlots.begin_step.

// Entry contents, concatenated; returned as one [N, W] array padded with -1.
struct Contents {
  std::vector<Id> tokens;
  std::vector<size_t> ends;
  void add(const Id* begin, size_t size) {
    tokens.insert(tokens.end(), begin, begin + size);
    ends.push_back(tokens.size());
  }
  void append(const Contents& other) {
    const size_t offset = tokens.size();
    tokens.insert(tokens.end(), other.tokens.begin(), other.tokens.end());
    for (size_t end : other.ends) ends.push_back(offset + end);
  }
  size_t width() const {
    size_t width = 0;
    for (size_t i = 0, begin = 0; i < ends.size(); begin = ends[i++]) width = std::max(width, ends[i] - begin);
    return width;
  }
  py::array_t<int32_t> padded(size_t width) const {
    py::array_t<int32_t> array({static_cast<py::ssize_t>(ends.size()), static_cast<py::ssize_t>(width)});
    int32_t* out = array.mutable_data();
    std::fill_n(out, array.size(), -1);
    for (size_t i = 0, begin = 0; i < ends.size(); begin = ends[i++])
      std::copy(tokens.begin() + begin, tokens.begin() + ends[i], out + i * width);
    return array;
  }
};

template <class T, class Out = T>
py::array_t<Out> to_array(const std::vector<T>& values) {
  py::array_t<Out> array(static_cast<py::ssize_t>(values.size()));
  std::copy(values.begin(), values.end(), array.mutable_data());
  return array;
}

using IdArray = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

// Brings the decoder of each request's slot to the end of its scheduled range (requests with
// host[r] false are only read: their first scheduled id). Request r's token list is row r of
// token_ids: positions before num_verified[r] hold its prompt and outputs, the positions from
// there to ends[r] its drafts. See LZWCodec.advance_requests.
py::dict advance_requests(const z2z::Config& config, const py::list& decoders, const IdArray& slots,
                          const py::array_t<int32_t, py::array::c_style | py::array::forcecast>& token_ids,
                          const IdArray& num_verified, const IdArray& begins, const IdArray& ends,
                          const py::array_t<bool, py::array::c_style | py::array::forcecast>& host) {
  const size_t n = static_cast<size_t>(slots.size());
  for (const auto& [name, size] : {std::pair{"num_verified", num_verified.size()}, std::pair{"begins", begins.size()},
                                   std::pair{"ends", ends.size()}, std::pair{"host", host.size()}})
    if (static_cast<size_t>(size) != n)
      throw py::value_error(std::string(name) + " needs one value per request: " + std::to_string(n) +
                            " slots, " + std::to_string(size) + " values");
  if (token_ids.ndim() != 2 || static_cast<size_t>(token_ids.shape(0)) < n)
    throw py::value_error("token_ids must be 2-D with a row per request (" + std::to_string(n) + ")");
  const int64_t row_length = token_ids.shape(1);
  struct Work {
    z2z::Decoder* decoder = nullptr;
    const Id* tokens = nullptr;  // the request's row of token_ids
    int64_t slot = 0, begin = 0, end = 0, start = 0, verified = 0, drafts = 0;
    size_t first_row = 0;
    bool replay = false;
  };
  std::vector<Work> work(n);
  std::vector<std::unique_lock<std::mutex>> locks;  // released before the GIL is taken back
  std::vector<uint8_t> taken(decoders.size(), 0);
  std::vector<int64_t> first_token(n), kept_entries(n, 0);
  size_t num_rows = 0, total_ids = 0;
  for (size_t r = 0; r < n; ++r) {
    Work& w = work[r];
    w.slot = slots.data()[r];
    w.begin = begins.data()[r];
    w.end = ends.data()[r];
    w.verified = num_verified.data()[r];
    w.tokens = token_ids.data() + r * row_length;
    const auto request = [r] { return "request " + std::to_string(r) + ": "; };  // built on errors only
    if (w.slot < 0 || w.slot >= static_cast<int64_t>(decoders.size()))
      throw py::value_error(request() + "slot " + std::to_string(w.slot) + " is not one of the " +
                            std::to_string(decoders.size()) + " decoders");
    if (taken[w.slot]++) throw py::value_error("slot " + std::to_string(w.slot) + " appears twice in one step");
    if (w.begin < 0 || w.begin > w.end || w.end > row_length || w.verified < 0 || w.verified > row_length)
      throw py::value_error(request() + "scheduled range " + std::to_string(w.begin) + " .. " + std::to_string(w.end) +
                            " and " + std::to_string(w.verified) + " verified ids must lie within its " +
                            std::to_string(row_length) + " token_ids");
    w.drafts = std::max<int64_t>(w.end - w.verified, 0);
    if (w.drafts && w.begin >= w.verified)
      throw py::value_error(request() + "the range " + std::to_string(w.begin) + " .. " + std::to_string(w.end) +
                            " holds only drafts: it must start before position " + std::to_string(w.verified));
    w.first_row = num_rows;
    num_rows += 1 + static_cast<size_t>(w.drafts);
    first_token[r] = w.begin < std::max(w.end, w.verified) ? w.tokens[w.begin] : -1;
    if (!host.data()[r]) continue;
    Decoder& decoder = decoders[w.slot].cast<Decoder&>();
    if (decoder.config() != &config)
      throw py::value_error("the decoder of slot " + std::to_string(w.slot) + " belongs to another codec");
    locks.push_back(decoder.lock());
    w.decoder = &decoder.state();
    // Read past the range: back to before the drafts that were read (speculative decoding),
    // or else replay from position 0 (recompute after preemption).
    if (static_cast<int64_t>(w.decoder->position()) > w.begin) w.replay = !w.decoder->rewind_to(w.begin);
    w.start = w.replay ? 0 : static_cast<int64_t>(w.decoder->position());
    kept_entries[r] = w.replay ? 0 : w.decoder->num_entries();
    total_ids += static_cast<size_t>(w.end - w.start);
  }

  // Requests split into contiguous chunks, one per thread, each with its own outputs, joined in
  // order: the decoders' tables are far apart in memory, so a decode step over many requests is
  // bound by cache misses, which threads overlap.
  struct Chunk {
    std::vector<int64_t> created_slot, created_index, read_slot, read_index;
    Contents created_contents, candidates, reads;
    size_t failed = SIZE_MAX;
    std::string error;
  };
  const Id vocab = config.vocab_size;
  std::vector<uint8_t> replayed(n, 0), has_candidate(num_rows, 0);
  std::vector<int64_t> num_entries(num_rows, 0);
  const size_t cores = std::max(1u, std::thread::hardware_concurrency());
  const size_t work_units = (8 * n + total_ids) / 4096;  // a request costs about 8 ids' work
  std::vector<Chunk> chunks(std::clamp<size_t>(work_units, 1, cores));
  {
    py::gil_scoped_release release;
    z2z::WorkerPool::instance().run(chunks.size(), chunks.size(), [&](size_t c) {
      Chunk& chunk = chunks[c];
      std::vector<Id> created, candidate;
      for (size_t r = c * n / chunks.size(); r < (c + 1) * n / chunks.size(); ++r) {
        const Work& w = work[r];
        if (!w.decoder) {
          for (int64_t row = 0; row <= w.drafts; ++row) chunk.candidates.add(nullptr, 0);
          continue;
        }
        z2z::Decoder& decoder = *w.decoder;
        if (w.replay) decoder.reset();
        replayed[r] = w.replay;
        created.clear();
        // Logits rows are the last 1 + drafts positions of the range: the ids before them are
        // read at once, these one by one, each row getting the codebook as it stands after its
        // position (a row whose position the decoder had read already gets it as it stands).
        const int64_t rows = 1 + w.drafts;
        int64_t read_end = std::max<int64_t>(w.end - rows, w.start);
        bool draft_refused = false;
        try {
          decoder.feed(w.tokens + w.start, static_cast<size_t>(read_end - w.start), nullptr, &created);
          for (int64_t position = w.end - rows, row = w.first_row; position < w.end; ++position, ++row) {
            if (w.drafts && static_cast<int64_t>(decoder.position()) == w.verified) decoder.set_rewind_point();
            if (position == static_cast<int64_t>(decoder.position()) && !draft_refused) {
              try {
                decoder.feed(w.tokens + read_end, 1, nullptr, &created);
                ++read_end;
              } catch (const z2z::InvalidIds&) {
                // A draft that cannot come next: its logit is -inf, so it is rejected, and the
                // rows after it (the codebook as it stands) are never used.
                if (position < w.verified) throw;
                draft_refused = true;
              }
            }
            num_entries[row] = decoder.num_entries();
            has_candidate[row] = decoder.candidate(candidate);
            chunk.candidates.add(candidate.data(), has_candidate[row] ? candidate.size() : 0);
          }
        } catch (const z2z::InvalidIds& e) {
          chunk.error = e.what();
          chunk.failed = r;
          return;
        }
        for (Id id : created) {
          chunk.created_slot.push_back(w.slot);
          chunk.created_index.push_back(id - vocab);
          chunk.created_contents.add(decoder.entry(id - vocab), decoder.entry_size(id - vocab));
        }
        for (int64_t position = w.begin; position < read_end; ++position) {
          const Id id = w.tokens[position];
          if (id < vocab) continue;
          chunk.read_slot.push_back(w.slot);
          chunk.read_index.push_back(id - vocab);
          chunk.reads.add(decoder.entry(id - vocab), decoder.entry_size(id - vocab));
        }
      }
    });
    locks.clear();
  }
  for (const Chunk& chunk : chunks)
    if (chunk.failed != SIZE_MAX) throw py::value_error("request " + std::to_string(chunk.failed) + ": " + chunk.error);
  Chunk joined = std::move(chunks[0]);
  for (size_t c = 1; c < chunks.size(); ++c) {
    for (auto [into, from] : {std::pair{&joined.created_slot, &chunks[c].created_slot},
                              std::pair{&joined.created_index, &chunks[c].created_index},
                              std::pair{&joined.read_slot, &chunks[c].read_slot},
                              std::pair{&joined.read_index, &chunks[c].read_index}})
      into->insert(into->end(), from->begin(), from->end());
    joined.created_contents.append(chunks[c].created_contents);
    joined.candidates.append(chunks[c].candidates);
    joined.reads.append(chunks[c].reads);
  }
  const size_t width = std::max<size_t>({1, joined.created_contents.width(), joined.candidates.width(), joined.reads.width()});
  py::dict result;
  result["first_token"] = to_array(first_token);
  result["replayed"] = to_array<uint8_t, bool>(replayed);
  result["kept_entries"] = to_array(kept_entries);
  result["num_entries"] = to_array(num_entries);
  result["created_slot"] = to_array(joined.created_slot);
  result["created_index"] = to_array(joined.created_index);
  result["created_content"] = joined.created_contents.padded(width);
  result["has_candidate"] = to_array<uint8_t, bool>(has_candidate);
  result["candidate"] = joined.candidates.padded(width);
  result["read_slot"] = to_array(joined.read_slot);
  result["read_index"] = to_array(joined.read_index);
  result["read_content"] = joined.reads.padded(width);
  return result;
}

// mapping.get(key, missing) for each key, as an array: the slot of each request of a step.
py::array_t<int64_t> lookup(const py::dict& mapping, const py::sequence& keys, int64_t missing) {
  const py::ssize_t n = static_cast<py::ssize_t>(keys.size());
  py::array_t<int64_t> values(n);
  int64_t* out = values.mutable_data();
  for (py::ssize_t i = 0; i < n; ++i) {
    py::object key = keys[i];
    PyObject* value = PyDict_GetItemWithError(mapping.ptr(), key.ptr());  // borrowed
    if (!value && PyErr_Occurred()) throw py::error_already_set();
    out[i] = value ? py::handle(value).cast<int64_t>() : missing;
  }
  return values;
}

// Open addressing with linear probing: slots of (hash, value), value -1 when empty.
struct HashSlot {
  uint64_t hash;
  int64_t value;
};

uint64_t hash_row(const int32_t* row, size_t length) {
  uint64_t h = 0x9e3779b97f4a7c15ULL ^ length;
  for (size_t i = 0; i < length; ++i) {
    h = (h ^ static_cast<uint32_t>(row[i])) * 0xff51afd7ed558ccdULL;
    h ^= h >> 32;
  }
  return h;
}

// The slot whose value has this hash and satisfies same(value), or the empty slot where it goes.
template <class Same>
size_t probe(const std::vector<HashSlot>& table, uint64_t hash, Same same) {
  const size_t mask = table.size() - 1;
  for (size_t i = hash & mask;; i = (i + 1) & mask) {
    if (table[i].value < 0 || (table[i].hash == hash && same(table[i].value))) return i;
  }
}

std::vector<HashSlot> empty_table(size_t entries) {
  size_t size = 16;
  while (size < 2 * entries) size <<= 1;
  return std::vector<HashSlot>(size, HashSlot{0, -1});
}

// The content-addressed row table of z2z_vllm.vllm.slots.RowTable: each row holds the content
// of one entry (up to `width` base ids; -1 padding ignored) or none, and a reference count (one
// per slot index entry naming it). Unreferenced rows stay findable by their content until they
// are reused, least recently released first (rows without content before them); when every
// row is referenced the table doubles. Contents are stored inline, so a look-up touches one
// hash slot and one key row.
class RowIndex {
 public:
  using Contents2D = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;
  using Rows = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

  RowIndex(long long capacity, long long width) {
    if (capacity < 1) throw py::value_error("capacity must be >= 1, got " + std::to_string(capacity));
    if (width < 1) throw py::value_error("width must be >= 1, got " + std::to_string(width));
    width_ = static_cast<size_t>(width);
    grow(static_cast<size_t>(capacity));
  }

  // (rows [N]: the row of each content, referenced once more per occurrence; fresh [K]: the
  // first occurrence of each content given a row this call, whose row the caller encodes).
  py::tuple acquire(const Contents2D& contents) {
    const auto [count, width] = shape(contents);
    py::array_t<int64_t> rows(count);
    std::vector<int64_t> fresh;
    const std::vector<size_t> lengths = content_lengths(contents);
    {
      py::gil_scoped_release release;
      acquire_into(contents, lengths, rows.mutable_data(), fresh);
    }
    return py::make_tuple(rows, to_array(fresh));
  }

  // One serving step's output rows in one call: acquire(entries), then the KwKwK candidates of
  // the requests with has_candidate looked up (not stored). Returns (rows [K] int32 of the
  // entries, fresh_rows [F] the rows given a content now, to_encode [F + U, width] int64: the
  // contents of those rows then of the U candidates not found, -1 padded to the longest,
  // cached [Cc] the requests whose candidate the table holds, cached_rows [Cc] its rows,
  // missing [U] the requests whose candidate is encoded).
  py::tuple acquire_step(const Contents2D& entries, const Contents2D& candidates,
                         const py::array_t<bool, py::array::c_style | py::array::forcecast>& has_candidate) {
    const auto [count, width] = shape(entries);
    const auto [requests, candidate_width] = shape(candidates);
    if (has_candidate.size() != requests)
      throw py::value_error("has_candidate needs one flag per candidate row: " + std::to_string(requests) +
                            " rows, " + std::to_string(has_candidate.size()) + " flags");
    const std::vector<size_t> lengths = content_lengths(entries), candidate_lengths = content_lengths(candidates);
    std::vector<int64_t> rows(count), fresh, cached, cached_rows, missing;
    size_t longest = 1;
    {
      py::gil_scoped_release release;
      acquire_into(entries, lengths, rows.data(), fresh);
      // After the entries: a candidate that is one of them is found in its row.
      const std::vector<uint64_t> hashes = hash_and_prefetch(candidates, candidate_lengths);
      for (py::ssize_t r = 0; r < requests; ++r) {
        if (!has_candidate.data()[r]) continue;
        const int32_t* candidate = candidates.data() + r * candidate_width;
        const int64_t row = table_[locate(hashes[r], candidate, candidate_lengths[r])].value;
        if (row >= 0) {
          cached.push_back(r);
          cached_rows.push_back(row);
        } else {
          missing.push_back(r);
          longest = std::max(longest, candidate_lengths[r]);
        }
      }
      for (int64_t f : fresh) longest = std::max(longest, lengths[f]);
    }
    const auto encoded = static_cast<py::ssize_t>(fresh.size() + missing.size());
    py::array_t<int64_t> to_encode({encoded, static_cast<py::ssize_t>(longest)});
    int64_t* out = to_encode.mutable_data();
    std::fill(out, out + to_encode.size(), -1);
    std::vector<int64_t> fresh_rows;
    for (size_t i = 0; i < fresh.size(); ++i, out += longest) {
      std::copy(entries.data() + fresh[i] * width, entries.data() + fresh[i] * width + lengths[fresh[i]], out);
      fresh_rows.push_back(rows[fresh[i]]);
    }
    for (size_t i = 0; i < missing.size(); ++i, out += longest) {
      const int32_t* row = candidates.data() + missing[i] * candidate_width;
      std::copy(row, row + candidate_lengths[missing[i]], out);
    }
    return py::make_tuple(to_array<int64_t, int32_t>(rows), to_array(fresh_rows), to_encode, to_array(cached),
                          to_array(cached_rows), to_array(missing));
  }

  // `count` rows without content, referenced once each (rows the device writes blind).
  py::array_t<int64_t> reserve(long long count) {
    if (count < 0) throw py::value_error("count must be >= 0, got " + std::to_string(count));
    py::array_t<int64_t> rows(count);
    for (long long i = 0; i < count; ++i) rows.mutable_data()[i] = take();
    return rows;
  }

  // One reference less per row given (rows < 0 ignored); an unreferenced row becomes reusable.
  void release(const Rows& rows) {
    const int64_t* data = rows.data();
    for (py::ssize_t i = 0; i < rows.size(); ++i) {  // checked first: all or nothing
      if (data[i] >= static_cast<int64_t>(lengths_.size()))
        throw py::value_error("row " + std::to_string(data[i]) + " is out of range");
    }
    for (py::ssize_t i = 0; i < rows.size(); ++i) {
      if (data[i] >= 0 && references_[data[i]]-- == 0) {
        for (py::ssize_t j = 0; j <= i; ++j) if (data[j] >= 0) ++references_[data[j]];  // undone
        throw py::value_error("row " + std::to_string(data[i]) + " is not referenced");
      }
    }
    for (py::ssize_t i = 0; i < rows.size(); ++i) {
      const int64_t row = data[i];
      if (row < 0 || references_[row] != 0 || linked(row)) continue;
      if (lengths_[row] >= 0)
        push_back(row);  // cached: reused after the rows released before it
      else
        push_front(row);  // nothing cached: reused first
    }
  }

  // The row of each content, or -1 (references unchanged).
  py::array_t<int64_t> find(const Contents2D& contents) const {
    const auto [count, width] = shape(contents);
    py::array_t<int64_t> rows(count);
    std::vector<size_t> lengths(count);
    for (py::ssize_t r = 0; r < count; ++r) lengths[r] = content_length(contents.data() + r * width, width);
    py::gil_scoped_release release;
    const std::vector<uint64_t> hashes = hash_and_prefetch(contents, lengths);
    for (py::ssize_t r = 0; r < count; ++r)
      rows.mutable_data()[r] = table_[locate(hashes[r], contents.data() + r * width, lengths[r])].value;
    return rows;
  }

  py::array_t<int64_t> references(const Rows& rows) const {
    py::array_t<int64_t> out(rows.size());
    for (py::ssize_t i = 0; i < rows.size(); ++i) {
      const int64_t row = rows.data()[i];
      if (row < 0 || row >= static_cast<int64_t>(lengths_.size()))
        throw py::value_error("row " + std::to_string(row) + " is out of range");
      out.mutable_data()[i] = references_[row];
    }
    return out;
  }

  // Forgets every content (references stay): rows are found by content no more.
  void clear() {
    std::fill(table_.begin(), table_.end(), HashSlot{0, -1});
    std::fill(lengths_.begin(), lengths_.end(), -1);
  }
  size_t size() const {
    return static_cast<size_t>(std::count_if(lengths_.begin(), lengths_.end(), [](int64_t n) { return n >= 0; }));
  }
  size_t capacity() const { return lengths_.size(); }
  size_t num_referenced() const { return lengths_.size() - num_unreferenced_; }

 private:
  static std::pair<py::ssize_t, py::ssize_t> shape(const Contents2D& contents) {
    if (contents.ndim() != 2)
      throw py::value_error("expected contents of shape [N, W], got " + std::to_string(contents.ndim()) +
                            " dimensions");
    return {contents.shape(0), contents.shape(1)};
  }
  size_t content_length(const int32_t* row, py::ssize_t width) const {
    size_t length = 0;
    while (static_cast<py::ssize_t>(length) < width && row[length] >= 0) ++length;
    if (length > width_)
      throw z2z::InvalidIds("a content of " + std::to_string(length) + " ids is longer than the index's width " +
                            std::to_string(width_));
    return length;
  }
  const int32_t* key(size_t position) const { return keys_.data() + position * width_; }
  // Every row's length, checked before anything changes (all or nothing).
  std::vector<size_t> content_lengths(const Contents2D& contents) const {
    const py::ssize_t width = contents.shape(1);
    std::vector<size_t> lengths(contents.shape(0));
    for (size_t r = 0; r < lengths.size(); ++r) lengths[r] = content_length(contents.data() + r * width, width);
    return lengths;
  }
  // The row of each content into out, referenced once more; contents given a row now into fresh.
  void acquire_into(const Contents2D& contents, const std::vector<size_t>& lengths, int64_t* out,
                    std::vector<int64_t>& fresh) {
    const py::ssize_t width = contents.shape(1);
    const std::vector<uint64_t> hashes = hash_and_prefetch(contents, lengths);
    for (size_t r = 0; r < lengths.size(); ++r) {
      const int32_t* row = contents.data() + r * width;
      const size_t length = lengths[r];
      const uint64_t hash = hashes[r];
      int64_t position = table_[locate(hash, row, length)].value;
      if (position < 0) {
        position = take();
        std::copy(row, row + length, keys_.begin() + position * width_);
        lengths_[position] = static_cast<int64_t>(length);
        hashes_[position] = hash;
        table_[locate(hash, row, length)] = HashSlot{hash, position};  // take() may rehash
        fresh.push_back(static_cast<int64_t>(r));
      } else if (references_[position]++ == 0) {
        unlink(position);
      }
      out[r] = position;
    }
  }
  // The contents' hashes. Look-ups miss the cache (a big table, random contents): the loads of
  // each content's home slot, then of the row found there, are issued for all contents at once
  // rather than one miss after another.
  std::vector<uint64_t> hash_and_prefetch(const Contents2D& contents, const std::vector<size_t>& lengths) const {
    const py::ssize_t width = contents.shape(1);
    std::vector<uint64_t> hashes(lengths.size());
    const size_t mask = table_.size() - 1;
    for (size_t r = 0; r < lengths.size(); ++r) {
      hashes[r] = hash_row(contents.data() + r * width, lengths[r]);
      __builtin_prefetch(&table_[hashes[r] & mask]);
    }
    for (size_t r = 0; r < lengths.size(); ++r) {
      const int64_t home = table_[hashes[r] & mask].value;
      if (home < 0) continue;
      __builtin_prefetch(key(home));
      __builtin_prefetch(&lengths_[home]);
      __builtin_prefetch(&references_[home]);
    }
    return hashes;
  }
  size_t locate(uint64_t hash, const int32_t* row, size_t length) const {
    return probe(table_, hash, [&](int64_t position) {
      return lengths_[position] == static_cast<int64_t>(length) && std::equal(row, row + length, key(position));
    });
  }
  // The least recently released unreferenced row (its content forgotten), referenced once; the
  // table doubles first when every row is referenced.
  int64_t take() {
    if (head_ < 0) grow(2 * lengths_.size());
    const int64_t row = head_;
    unlink(row);
    if (lengths_[row] >= 0) {
      erase(locate(hashes_[row], key(row), lengths_[row]));
      lengths_[row] = -1;
    }
    references_[row] = 1;
    return row;
  }
  void grow(size_t capacity) {
    const size_t old = lengths_.size();
    keys_.resize(capacity * width_);
    lengths_.resize(capacity, -1);
    hashes_.resize(capacity);
    references_.resize(capacity, 0);
    previous_.resize(capacity, -1);
    next_.resize(capacity, -1);
    for (size_t row = capacity; row-- > old;) push_front(static_cast<int64_t>(row));  // row `old` first
    table_ = empty_table(capacity);
    for (size_t row = 0; row < old; ++row) {
      if (lengths_[row] >= 0)
        table_[locate(hashes_[row], key(row), lengths_[row])] = HashSlot{hashes_[row], static_cast<int64_t>(row)};
    }
  }
  // The unreferenced rows, a doubly linked list from head_ (reused next) to tail_.
  bool linked(int64_t row) const { return previous_[row] >= 0 || head_ == row; }
  void push_front(int64_t row) {
    previous_[row] = -1;
    next_[row] = head_;
    (head_ >= 0 ? previous_[head_] : tail_) = row;
    head_ = row;
    ++num_unreferenced_;
  }
  void push_back(int64_t row) {
    next_[row] = -1;
    previous_[row] = tail_;
    (tail_ >= 0 ? next_[tail_] : head_) = row;
    tail_ = row;
    ++num_unreferenced_;
  }
  void unlink(int64_t row) {
    (previous_[row] >= 0 ? next_[previous_[row]] : head_) = next_[row];
    (next_[row] >= 0 ? previous_[next_[row]] : tail_) = previous_[row];
    previous_[row] = next_[row] = -1;
    --num_unreferenced_;
  }
  // Backward-shift deletion: later slots of the probe run move up, so no search stops early.
  void erase(size_t i) {
    const size_t mask = table_.size() - 1;
    for (size_t j = i;;) {
      table_[i].value = -1;
      for (;;) {
        j = (j + 1) & mask;
        if (table_[j].value < 0) return;
        const size_t home = table_[j].hash & mask;
        if (i <= j ? (i < home && home <= j) : (i < home || home <= j)) continue;  // stays reachable
        break;
      }
      table_[i] = table_[j];
      i = j;
    }
  }
  size_t width_ = 0;
  std::vector<int32_t> keys_;         // [capacity, width]: the content of each row
  std::vector<int64_t> lengths_;      // its length, -1: no content
  std::vector<uint64_t> hashes_;
  std::vector<int64_t> references_;   // slot index entries naming the row
  std::vector<int64_t> previous_, next_;  // links of the unreferenced rows, -1 at either end
  int64_t head_ = -1, tail_ = -1;
  size_t num_unreferenced_ = 0;
  std::vector<HashSlot> table_;       // content -> row
};

// One sequence's codebook as codebook_arrays() reports it, flattened.
struct SequenceCodebook {
  std::vector<Id> entry_tokens, candidate_tokens;
  std::vector<uint32_t> entry_offsets{0}, candidate_offsets{0};
  std::vector<int32_t> known_at;
  size_t width = 1;  // longest entry or candidate
};

class Codec {
 public:
  Codec(long long initial_vocab_size, long long max_codebook_size, long long max_subtokens,
        py::object disabled_ids, py::object pad_token_id) {
    std::vector<Id> disabled;
    if (!disabled_ids.is_none()) {
      try {
        read_ids(disabled_ids, disabled);
      } catch (py::value_error& e) {
        throw py::value_error(std::string("disabled_ids: ") + e.what());
      }
    }
    std::sort(disabled.begin(), disabled.end());
    disabled.erase(std::unique(disabled.begin(), disabled.end()), disabled.end());
    disabled_ = disabled;
    if (!pad_token_id.is_none()) {
      if (!PyLong_Check(pad_token_id.ptr()) || PyBool_Check(pad_token_id.ptr()))
        throw py::type_error("pad_token_id must be an int or None");
      const long long pad = pad_token_id.cast<long long>();
      if (pad < 0 || pad >= initial_vocab_size)
        throw py::value_error("pad_token_id " + std::to_string(pad) +
                              " is not a base token id (expected 0 <= id < " +
                              std::to_string(initial_vocab_size) + ")" +
                              (pad >= initial_vocab_size && pad < initial_vocab_size + max_codebook_size
                                   ? ": it lies in the hypertoken range"
                                   : ""));
      // Padding is never merged: the reference treats the pad id as disabled too.
      disabled.push_back(static_cast<Id>(pad));
      pad_ = static_cast<Id>(pad);
    }
    config_ = std::make_shared<const z2z::Config>(initial_vocab_size, max_codebook_size,
                                                  max_subtokens, disabled);
    int_objects.reserve(config_->end_id());
  }

  py::object encode(py::handle ids, bool as_numpy) const {
    std::vector<Id> input, out;
    read_ids(ids, input);
    {
      py::gil_scoped_release release;
      z2z::encode(*config_, input.data(), input.size(), out);
    }
    return to_python(out, as_numpy);
  }

  py::object decode(py::handle ids, bool as_numpy) const {
    std::vector<Id> input, out;
    read_ids(ids, input);
    {
      py::gil_scoped_release release;
      decode_into(input, out);
    }
    return to_python(out, as_numpy);
  }

  size_t fitting_suffix_start(py::handle ids, long long max_length) const {
    if (max_length < 0) throw py::value_error("max_length must be >= 0, got " + std::to_string(max_length));
    std::vector<Id> input;
    read_ids(ids, input);
    py::gil_scoped_release release;
    return z2z::fitting_suffix_start(*config_, input.data(), input.size(), static_cast<size_t>(max_length));
  }

  py::list encode_batch(py::handle batch, py::object num_threads, bool as_numpy) const {
    return map_batch(batch, num_threads, as_numpy, [this](const std::vector<Id>& ids, std::vector<Id>& out) {
      z2z::encode(*config_, ids.data(), ids.size(), out);
    });
  }

  py::list decode_batch(py::handle batch, py::object num_threads, bool as_numpy) const {
    return map_batch(batch, num_threads, as_numpy, [this](const std::vector<Id>& ids, std::vector<Id>& out) {
      decode_into(ids, out);
    });
  }

  py::dict codebook(py::handle ids) const {
    std::vector<Id> input;
    read_ids(ids, input);
    z2z::Decoder decoder(*config_, input.size());
    {
      py::gil_scoped_release release;
      decoder.feed(input.data(), input.size(), nullptr, nullptr);
    }
    return codebook_dict(decoder);
  }

  py::dict codebook_arrays(py::handle batch, py::object num_threads) const {
    const auto rows = read_batch(batch);
    std::vector<SequenceCodebook> books(rows.size());
    const size_t threads = thread_count(num_threads, rows.size(), total_size(rows));
    {
      py::gil_scoped_release release;
      parallel_for(rows.size(), threads, [&](size_t i) { books[i] = trace_codebook(rows[i]); });
    }
    size_t max_entries = 0, max_len = 0, width = 1;
    for (size_t i = 0; i < rows.size(); ++i) {
      max_entries = std::max<size_t>(max_entries, books[i].known_at.size());
      max_len = std::max(max_len, rows[i].size());
      width = std::max(width, books[i].width);
    }
    const py::ssize_t b = rows.size(), e = max_entries, t = max_len, w = width;
    py::array_t<int32_t> entries({b, e, w}), known_at({b, e}), candidates({b, t, w});
    std::fill_n(entries.mutable_data(), entries.size(), -1);
    std::fill_n(known_at.mutable_data(), known_at.size(), std::numeric_limits<int32_t>::max());
    std::fill_n(candidates.mutable_data(), candidates.size(), -1);
    auto entry_out = entries.mutable_unchecked<3>();
    auto known_out = known_at.mutable_unchecked<2>();
    auto candidate_out = candidates.mutable_unchecked<3>();
    for (py::ssize_t i = 0; i < b; ++i) {
      const SequenceCodebook& book = books[i];
      for (size_t k = 0; k < book.known_at.size(); ++k) {
        known_out(i, k) = book.known_at[k];
        for (uint32_t j = book.entry_offsets[k]; j < book.entry_offsets[k + 1]; ++j)
          entry_out(i, k, j - book.entry_offsets[k]) = book.entry_tokens[j];
      }
      for (size_t p = 0; p < rows[i].size(); ++p)
        for (uint32_t j = book.candidate_offsets[p]; j < book.candidate_offsets[p + 1]; ++j)
          candidate_out(i, p, j - book.candidate_offsets[p]) = book.candidate_tokens[j];
    }
    py::dict result;
    result["entries"] = entries;
    result["known_at"] = known_at;
    result["candidates"] = candidates;
    return result;
  }

  const std::shared_ptr<const z2z::Config>& config() const { return config_; }
  py::tuple disabled_ids() const {
    py::list ids;
    for (Id id : disabled_) ids.append(id);
    return py::tuple(ids);
  }
  py::object pad_token_id() const { return pad_ ? py::object(py::int_(*pad_)) : py::none(); }

 private:
  void decode_into(const std::vector<Id>& ids, std::vector<Id>& out) const {
    // One decoder per thread, restarted for each sequence: allocating its tables anew for every
    // sequence made batch calls contend in the allocator instead of scaling with threads.
    thread_local std::optional<z2z::Decoder> scratch;
    if (scratch)
      scratch->restart(*config_, ids.size());
    else
      scratch.emplace(*config_, ids.size());
    out.reserve(ids.size() * 2);
    scratch->feed(ids.data(), ids.size(), &out, nullptr);
  }

  // fn(ids, out) for every sequence of the batch, on worker threads without the GIL.
  template <class Fn>
  py::list map_batch(py::handle batch, py::object num_threads, bool as_numpy, Fn fn) const {
    const auto rows = read_batch(batch);
    std::vector<std::vector<Id>> outs(rows.size());
    const size_t threads = thread_count(num_threads, rows.size(), total_size(rows));
    {
      py::gil_scoped_release release;
      parallel_for(rows.size(), threads, [&](size_t i) {
        // Fill a local vector and move it in once: neighbouring outs[i] share cache lines, and
        // growing them in place from two threads made every push_back a cache-line transfer.
        std::vector<Id> out;
        fn(rows[i], out);
        outs[i] = std::move(out);
      });
    }
    py::list result(outs.size());
    for (size_t i = 0; i < outs.size(); ++i) result[i] = to_python(outs[i], as_numpy);
    return result;
  }

  SequenceCodebook trace_codebook(const std::vector<Id>& ids) const {
    SequenceCodebook book;
    z2z::Decoder decoder(*config_, ids.size());
    std::vector<Id> candidate;
    for (size_t p = 0; p < ids.size(); ++p) {
      decoder.feed(&ids[p], 1, nullptr, nullptr);
      if (decoder.candidate(candidate)) {
        book.candidate_tokens.insert(book.candidate_tokens.end(), candidate.begin(), candidate.end());
        book.width = std::max(book.width, candidate.size());
      }
      book.candidate_offsets.push_back(static_cast<uint32_t>(book.candidate_tokens.size()));
    }
    for (Id k = 0; k < decoder.num_entries(); ++k) {
      book.entry_tokens.insert(book.entry_tokens.end(), decoder.entry(k), decoder.entry(k) + decoder.entry_size(k));
      book.entry_offsets.push_back(static_cast<uint32_t>(book.entry_tokens.size()));
      book.known_at.push_back(static_cast<int32_t>(decoder.known_at(k)));
      book.width = std::max(book.width, decoder.entry_size(k));
    }
    return book;
  }

  std::shared_ptr<const z2z::Config> config_;
  std::vector<Id> disabled_;
  std::optional<Id> pad_;
};

constexpr const char* kCodecDoc = R"doc(LZW hypertoken codec over base-token ids (zip2zip).

Base ids are ``0 .. V-1``; hypertoken ids ``V .. V+C-1`` each stand for 2..M base ids and are
defined, in order, while a sequence is read. Disabled ids (and the pad id) are emitted alone,
flush the pending match and never enter an entry. A full codebook freezes.

Results are identical to zip2zip-compression 0.3.4 on every valid input. Unlike it, invalid
input raises ``ValueError`` (``TypeError`` for non-integers) naming the value and position:
undefined hypertoken ids, ids ``>= V+C`` or ``< 0``, hypertoken ids given to ``encode``, a pad
id outside ``0 .. V-1``, and invalid V, C or M. Every call releases the GIL.

Inputs: a sequence of ints or a 1-D integer array of any dtype (read in place, no copy of the
Python objects). Outputs: ``list[int]``, or ``numpy.ndarray[int64]`` with ``as_numpy=True``.
)doc";

constexpr const char* kDecoderDoc = R"doc(Incremental decoder for one sequence or request.

Feeding ids in any number of calls gives the same base ids and codebook as one
``LZWCodec.decode`` call over all of them. A call that raises leaves the decoder unchanged.
Safe to share between threads: each call is atomic (calls are serialized).
)doc";

}  // namespace

PYBIND11_MODULE(_codec, m) {
  m.doc() = "Native LZW hypertoken codec; the documented API is z2z_vllm.codec.";

  m.def("lookup", &lookup, py::arg("mapping"), py::arg("keys"), py::kw_only(), py::arg("missing") = -1,
        "[mapping.get(key, missing) for key in keys] as an int64 array (values must be ints).");
  py::class_<Codec>(m, "LZWCodec", kCodecDoc)
      .def(py::init<long long, long long, long long, py::object, py::object>(), py::kw_only(),
           py::arg("initial_vocab_size"), py::arg("max_codebook_size"), py::arg("max_subtokens"),
           py::arg("disabled_ids") = py::tuple(), py::arg("pad_token_id") = py::none())
      .def("encode", &Codec::encode, py::arg("ids"), py::kw_only(), py::arg("as_numpy") = false,
           "Compresses base ids into base and hypertoken ids.")
      .def("decode", &Codec::decode, py::arg("ids"), py::kw_only(), py::arg("as_numpy") = false,
           "Expands compressed ids into base ids.")
      .def("fitting_suffix_start", &Codec::fitting_suffix_start, py::arg("ids"), py::arg("max_length"),
           "The smallest start such that encode(ids[start:]) has at most max_length ids: where to "
           "cut base ids on the left so that the most of them fit.")
      .def("encode_batch", &Codec::encode_batch, py::arg("batch"), py::kw_only(),
           py::arg("num_threads") = py::none(), py::arg("as_numpy") = false,
           "encode() over many sequences on num_threads threads (None: by core count and work).")
      .def("decode_batch", &Codec::decode_batch, py::arg("batch"), py::kw_only(),
           py::arg("num_threads") = py::none(), py::arg("as_numpy") = false,
           "decode() over many sequences on num_threads threads (None: by core count and work).")
      .def("codebook", &Codec::codebook, py::arg("compressed_ids"),
           "The entries known after reading compressed_ids: {hypertoken id: base ids}.")
      .def("codebook_arrays", &Codec::codebook_arrays, py::arg("batch"), py::kw_only(),
           py::arg("num_threads") = py::none(), R"doc(Codebooks of a batch of compressed sequences as arrays, for scoring whole sequences.

Returns a dict of int32 numpy arrays (B sequences, E = most entries, T = longest sequence,
W = longest entry, at most M):

- ``entries`` [B, E, W]: base ids of hypertoken ``V + e`` (padded with -1);
- ``known_at`` [B, E]: position of the id whose reading created it (2**31-1 for padding), so
  entry e may be predicted after position t iff ``known_at <= t``;
- ``candidates`` [B, T, W]: after reading position t, the entry that id ``V + (entries known
  at t)`` would define if it came next (the KwKwK case), or all -1 where no such id is valid.
)doc")
      .def("advance_requests",
           [](const Codec& self, const py::list& decoders, const IdArray& slots,
              const py::array_t<int32_t, py::array::c_style | py::array::forcecast>& token_ids,
              const IdArray& num_verified, const IdArray& begins, const IdArray& ends,
              const py::array_t<bool, py::array::c_style | py::array::forcecast>& host) {
             return advance_requests(*self.config(), decoders, slots, token_ids, num_verified, begins, ends, host);
           },
           py::arg("decoders"), py::arg("slots"), py::arg("token_ids"), py::arg("num_verified"), py::arg("begins"),
           py::arg("ends"), py::arg("host"),
           R"doc(One serving step: advances each request's decoder to the end of its scheduled range.

``decoders``: this codec's LZWDecoders by slot. Per request r, in arrays of R values: ``slots``
(distinct), ``begins`` / ``ends`` (the positions scheduled), ``num_verified`` (the length of its
prompt and outputs) and ``host`` (bool: whether to advance its decoder; False: only its first
scheduled id is read). ``token_ids`` [>= R, L] int32: row r is request r's token list, its prompt
and outputs, then from ``num_verified`` to ``ends`` the draft ids of speculative decoding (vLLM's
``InputBatch.token_ids_cpu`` is laid out so).

Each request has 1 + drafts logits rows, its last positions (N rows in all, in request order);
each row reports the codebook as it stands after its position. A decoder that has read past
``begin`` returns to its state before the drafts it read, if it read them at or before ``begin``,
or else is reset and replays from position 0; it then reads from its position to ``end``. A
draft id that cannot come next (an undefined hypertoken) stops the reading there: the model
gives it probability 0, so it is rejected. Raises ValueError naming the first request with
invalid verified ids (its decoder may have rewound; other requests' decoders may have advanced)
or an invalid range. Many requests run on several threads. Returns a dict of numpy arrays (K
entries created, Q hypertokens read in the scheduled ranges, W = longest content, padded with
-1): ``first_token`` [R] (-1: none), ``replayed`` [R],
``kept_entries`` [R] (entries kept before reading: all, those before the drafts, or 0 on a
replay), ``num_entries`` [N], ``created_slot`` / ``created_index`` [K] and ``created_content`` [K,
W], ``has_candidate`` [N] and ``candidate`` [N, W] (the KwKwK entry, see LZWDecoder.candidate),
``read_slot`` / ``read_index`` [Q] and ``read_content`` [Q, W]. Values of requests not advanced
on the host are 0 / False / -1.
)doc")
      .def("decoder",
           [](py::object self) {
             return std::make_unique<Decoder>(self.cast<const Codec&>().config(), self);
           },
           "A new incremental decoder (LZWDecoder) at position 0.")
      .def_property_readonly("initial_vocab_size", [](const Codec& c) { return c.config()->vocab_size; })
      .def_property_readonly("max_codebook_size", [](const Codec& c) { return c.config()->codebook_size; })
      .def_property_readonly("max_subtokens", [](const Codec& c) { return c.config()->max_subtokens; })
      .def_property_readonly("disabled_ids", &Codec::disabled_ids,
                             "Disabled ids as given, sorted (the pad id is disabled too).")
      .def_property_readonly("pad_token_id", &Codec::pad_token_id)
      .def("__repr__", [](const Codec& c) {
        const auto& config = *c.config();
        return "LZWCodec(initial_vocab_size=" + std::to_string(config.vocab_size) +
               ", max_codebook_size=" + std::to_string(config.codebook_size) +
               ", max_subtokens=" + std::to_string(config.max_subtokens) + ")";
      });

  py::class_<RowIndex>(m, "RowIndex",
                       "Rows of a content-addressed table (contents of up to width base ids, -1 padding ignored) "
                       "with reference counts: unreferenced rows stay found by content until reused, least "
                       "recently released first; the table doubles when every row is referenced. Longer contents "
                       "raise ValueError.")
      .def(py::init<long long, long long>(), py::arg("capacity"), py::arg("width"))
      .def("acquire", &RowIndex::acquire, py::arg("contents"),
           "contents [N, W] -> (rows [N], each referenced once more per occurrence; fresh [K], the first "
           "occurrence of each content given a row in this call, in order: the rows to encode).")
      .def("acquire_step", &RowIndex::acquire_step, py::arg("entries"), py::arg("candidates"), py::arg("has_candidate"),
           "One serving step's output rows: acquire(entries), then candidates [R, W] with has_candidate [R] looked up, "
           "not stored. Returns (rows [K] int32, fresh_rows [F], to_encode [F + U, width] int64: the fresh rows' "
           "contents then the U candidates not found, cached [Cc] requests whose candidate is found, cached_rows [Cc], "
           "missing [U] requests whose candidate is encoded).")
      .def("reserve", &RowIndex::reserve, py::arg("count"), "count rows without content, referenced once each.")
      .def("release", &RowIndex::release, py::arg("rows"),
           "One reference less per row given (< 0 ignored); ValueError for an unreferenced row (nothing changes).")
      .def("find", &RowIndex::find, py::arg("contents"), "contents [N, W] -> rows [N], -1 where missing.")
      .def("references", &RowIndex::references, py::arg("rows"), "Reference counts of rows [N].")
      .def("clear", &RowIndex::clear, "Forgets every content (references stay).")
      .def("__len__", &RowIndex::size, "Rows holding a content.")
      .def_property_readonly("capacity", &RowIndex::capacity)
      .def_property_readonly("num_referenced", &RowIndex::num_referenced);

  py::class_<Decoder>(m, "LZWDecoder", kDecoderDoc)
      .def("feed", &Decoder::feed, py::arg("ids"),
           "Reads ids (an int or a sequence); returns the entries they created, in order, as "
           "[(hypertoken id, base ids)].")
      .def("decode", &Decoder::decode, py::arg("ids"), py::kw_only(), py::arg("as_numpy") = false,
           "Reads ids like feed() and returns their base ids instead.")
      .def("encode_continuation", &Decoder::encode_continuation, py::arg("base_ids"), py::kw_only(),
           py::arg("max_ids"),
           "The ids (at most max_ids) an LZW encoder going on from this decoder's state would emit for "
           "base_ids: greedy longest runs through the codebook as it grows; the decoder is unchanged.")
      .def("reset", &Decoder::reset, "Back to position 0 with an empty codebook.")
      .def("copy", &Decoder::copy, "An independent decoder in the same state.")
      .def("__copy__", &Decoder::copy)
      .def("__deepcopy__", [](Decoder& d, py::handle) { return d.copy(); }, py::arg("memo"))
      .def_property_readonly("position", &Decoder::position, "Number of ids read so far.")
      .def_property_readonly("codebook", &Decoder::codebook, "{hypertoken id: base ids} known now.")
      .def_property_readonly("num_entries", &Decoder::num_entries)
      .def_property_readonly("buffer", &Decoder::buffer,
                             "Base ids the next entry starts with: the previous expansion and the ids "
                             "merged since (empty after a disabled id or with a full codebook).")
      .def_property_readonly("known_at", &Decoder::known_at,
                             "Per entry, in order: the position of the id whose reading created it.")
      .def_property_readonly("candidate", &Decoder::candidate,
                             "(id, base ids) of the entry the next id may define by naming itself "
                             "(LZW's KwKwK case), or None where no undefined id is valid next.")
      .def_property_readonly("codec", &Decoder::owner, "The LZWCodec this decoder belongs to.");
}
