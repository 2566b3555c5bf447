// LZW over base-token ids: the zip2zip hypertoken codec.
//
// Pure C++17, no Python: the bindings in bindings.cpp convert arguments, release the GIL and
// call into this file. Semantics match zip2zip-compression 0.3.4 on every valid input; invalid
// input throws InvalidIds (never a crash, never garbage). See z2z_vllm/codec/reference.py for
// the same algorithm written for reading.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace z2z {

using Id = int32_t;

// Bad ids or a bad configuration; the message names the offending value and position.
struct InvalidIds : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

struct Config {
  Config(int64_t initial_vocab_size, int64_t max_codebook_size, int64_t max_subtokens,
         const std::vector<Id>& disabled_ids);

  Id vocab_size;       // V: base ids are 0 .. V-1
  Id codebook_size;    // C: hypertoken ids are V .. V+C-1
  Id max_subtokens;    // M: longest entry, in base tokens
  std::vector<uint8_t> is_disabled;  // [V]; disabled ids are emitted alone and never merged

  Id end_id() const { return vocab_size + codebook_size; }
  bool disabled(Id id) const { return id < vocab_size && is_disabled[id]; }
};

// Compresses base ids into `out` (appended). Throws InvalidIds for ids outside 0 .. V-1.
void encode(const Config& config, const Id* ids, size_t n, std::vector<Id>& out);

// The smallest start such that ids[start..n) encodes to at most max_length ids: where to cut a
// sequence so that the most base ids fit. Throws InvalidIds like encode. Compressed length is
// not monotone in the start, so every start that could fit is tried: about (M - r) * L encodes
// of r * L ids each for L = max_length and compression ratio r (~0.2 s for L = 2048, M = 4).
size_t fitting_suffix_start(const Config& config, const Id* ids, size_t n, size_t max_length);

// Open-addressing hash set of codebook entries keyed by their content (up to M base ids).
// Content keys rather than (prefix code, token) pairs because the fault-tolerant decoder can
// create entries whose prefixes are not entries themselves.
class EntryTable {
 public:
  // Empty, with room for `entries` before growing; keeps the memory it has.
  void reset(size_t entries);
  void clear();
  // Index of the entry with this content; if there is none, records `new_entry` under it and
  // returns -1 (the caller then stores the content as entry `new_entry`).
  Id find_or_insert(uint64_t hash, const Id* content, size_t len, Id new_entry,
                    const std::vector<Id>& tokens, const std::vector<uint32_t>& offsets);
  // Index of the entry with this content, or -1.
  Id find(uint64_t hash, const Id* content, size_t len, const std::vector<Id>& tokens,
          const std::vector<uint32_t>& offsets) const;
  // Removes entry `entry`, recorded under `hash` (linear probing's backward-shift deletion:
  // every other entry stays findable).
  void erase(Id entry, uint64_t hash);

 private:
  struct Slot {
    uint64_t hash;
    Id entry;  // -1: empty
  };
  // The slot holding this content, or the empty slot where it belongs.
  size_t probe(uint64_t hash, const Id* content, size_t len, const std::vector<Id>& tokens,
               const std::vector<uint32_t>& offsets) const;
  void grow();
  std::vector<Slot> slots_;  // the first capacity_ are in use
  size_t capacity_ = 0;      // a power of two
  size_t used_ = 0;
};

// Incremental decoder: turns compressed ids into base ids and rebuilds the codebook the encoder
// built, lagging it by one id. One per sequence or request.
class Decoder {
 public:
  explicit Decoder(const Config& config, size_t expected_ids = 0);

  // Decodes `ids`, appending base ids to `out` and the ids of entries created to `created`
  // (either may be null). All or nothing: on InvalidIds the decoder and both outputs are left
  // exactly as they were.
  void feed(const Id* ids, size_t n, std::vector<Id>* out, std::vector<Id>* created);
  // Back to position 0 with an empty codebook, for `config` and about `expected_ids` ids;
  // keeps the memory it has, so that one decoder can serve many sequences.
  void restart(const Config& config, size_t expected_ids = 0);
  void reset() { restart(*config_, 0); }

  const Config& config() const { return *config_; }
  size_t position() const { return position_; }
  Id num_entries() const { return static_cast<Id>(offsets_.size()) - 1; }
  // Content of entry `index` (hypertoken id V + index).
  const Id* entry(Id index) const { return tokens_.data() + offsets_[index]; }
  size_t entry_size(Id index) const { return offsets_[index + 1] - offsets_[index]; }
  // Index of the compressed id whose reading created entry `index`.
  int64_t known_at(Id index) const { return known_at_[index]; }
  // Base ids the next entry starts with: the previous expansion and what merged since (empty
  // after a disabled id or with a full codebook); what a decoder copied elsewhere must carry.
  const std::vector<Id>& buffer() const { return buffer_; }
  // The one undefined id that may come next is V + num_entries(), naming the entry it creates
  // itself (LZW's KwKwK case): the buffer plus its first id. Writes that entry to `content` and
  // returns true when such an id would be valid now; returns false otherwise.
  bool candidate(std::vector<Id>& content) const;
  // Speculative decoding reads draft ids that may be rejected: the state before the first
  // draft is kept (set_rewind_point), and rewind_to(p) returns to it when the ids from
  // position p on changed, provided it was taken at or before p and at or before the current
  // position. Returns false (decoder unchanged) otherwise. reset() forgets the point.
  void set_rewind_point();
  bool rewind_to(size_t position);
  // Appends to `out` the ids an LZW encoder going on from here would emit for the base ids
  // `base` (at most `max_ids` of them): at each step the longest run that extends, one base id
  // at a time, through entries (or the KwKwK candidate), each read as it is emitted. The decoder
  // is left as it was (its rewind point included).
  void encode_continuation(const Id* base, size_t n, size_t max_ids, std::vector<Id>& out);

 private:
  void step(Id id, std::vector<Id>* out, std::vector<Id>* created);
  // Adds the buffer as a new entry unless it is one already; true if added.
  bool add_buffer_if_new(std::vector<Id>* created);
  void clear_buffer();
  void set_buffer(const Id* begin, const Id* end);
  void push_buffer(Id token);
  void truncate_entries(Id count);
  [[noreturn]] void fail(const std::string& what, Id id) const;

  const Config* config_;
  size_t position_ = 0;
  std::vector<Id> buffer_;   // previous expansion (+ tokens merged since), at most M ids
  uint64_t buffer_hash_ = 0;
  std::vector<Id> saved_buffer_;  // scratch: buffer_ before a feed, restored if it fails
  std::vector<Id> tokens_;   // entry contents, concatenated
  std::vector<uint32_t> offsets_{0};
  std::vector<int64_t> known_at_;
  EntryTable table_;
  struct RewindPoint {
    bool set = false;
    size_t position = 0;
    Id num_entries = 0;
    std::vector<Id> buffer;
    uint64_t buffer_hash = 0;
  } rewind_;
};

}  // namespace z2z
