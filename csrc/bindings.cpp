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

  py::class_<Decoder>(m, "LZWDecoder", kDecoderDoc)
      .def("feed", &Decoder::feed, py::arg("ids"),
           "Reads ids (an int or a sequence); returns the entries they created, in order, as "
           "[(hypertoken id, base ids)].")
      .def("decode", &Decoder::decode, py::arg("ids"), py::kw_only(), py::arg("as_numpy") = false,
           "Reads ids like feed() and returns their base ids instead.")
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
