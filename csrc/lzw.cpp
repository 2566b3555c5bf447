#include "lzw.h"

#include <algorithm>
#include <limits>

namespace z2z {
namespace {

constexpr int64_t kMaxIdSpace = std::numeric_limits<Id>::max();

uint64_t mix(uint64_t h) {
  h ^= h >> 31;
  h *= 0x7fb5d329728ea185ULL;
  h ^= h >> 27;
  return h;
}

// FNV-style, so that appending one id to a buffer updates its hash in O(1).
constexpr uint64_t kHashSeed = 0xcbf29ce484222325ULL;
uint64_t hash_append(uint64_t h, Id token) {
  return (h ^ static_cast<uint32_t>(token)) * 0x100000001b3ULL;
}
uint64_t hash_content(const Id* begin, const Id* end) {
  uint64_t h = kHashSeed;
  for (const Id* p = begin; p != end; ++p) h = hash_append(h, *p);
  return h;
}

size_t power_of_two_at_least(size_t n) {
  size_t p = 16;
  while (p < n) p <<= 1;
  return p;
}

// The encoder's codebook is prefix-closed (every entry is a known code plus one base id), so
// it is a trie: (code of the buffer, next base id) -> code of the extended buffer.
class TrieTable {
 public:
  // Empty, with room for max_entries. Only the slots the previous use filled are cleared: a
  // search for the longest suffix that fits (fitting_suffix_start) starts many encodes that
  // stop after a few ids, and clearing a whole table sized for the input would dominate them.
  void reset(size_t max_entries) {
    for (size_t i : filled_) slots_[i] = Slot{kEmpty, 0};
    filled_.clear();
    const size_t capacity = power_of_two_at_least(2 * max_entries + 1);
    if (slots_.size() < capacity) slots_.resize(capacity, Slot{kEmpty, 0});
    mask_ = capacity - 1;
  }
  Id find(Id code, Id token) const {
    const uint64_t key = pack(code, token);
    for (size_t i = mix(key) & mask_;; i = (i + 1) & mask_) {
      if (slots_[i].key == key) return slots_[i].child;
      if (slots_[i].key == kEmpty) return -1;
    }
  }
  void insert(Id code, Id token, Id child) {
    const uint64_t key = pack(code, token);
    size_t i = mix(key) & mask_;
    while (slots_[i].key != kEmpty) i = (i + 1) & mask_;
    slots_[i] = Slot{key, child};
    filled_.push_back(i);
  }

 private:
  static constexpr uint64_t kEmpty = ~0ULL;
  static uint64_t pack(Id code, Id token) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(code)) << 32) | static_cast<uint32_t>(token);
  }
  struct Slot {
    uint64_t key;
    Id child;
  };
  std::vector<Slot> slots_;  // all empty but filled_; the first mask_ + 1 are in use
  std::vector<size_t> filled_;
  size_t mask_ = 0;
};

[[noreturn]] void fail_encode(Id id, size_t position, const Config& config) {
  throw InvalidIds("id " + std::to_string(id) + " at position " + std::to_string(position) +
                   " is not a base token id (expected 0 <= id < " +
                   std::to_string(config.vocab_size) + "); hypertoken ids cannot be encoded");
}

}  // namespace

Config::Config(int64_t initial_vocab_size, int64_t max_codebook_size, int64_t max_subtokens,
               const std::vector<Id>& disabled_ids) {
  if (initial_vocab_size < 1)
    throw InvalidIds("initial_vocab_size must be >= 1, got " + std::to_string(initial_vocab_size));
  if (max_codebook_size < 0)
    throw InvalidIds("max_codebook_size must be >= 0, got " + std::to_string(max_codebook_size));
  if (max_subtokens < 1)
    throw InvalidIds("max_subtokens must be >= 1, got " + std::to_string(max_subtokens));
  if (initial_vocab_size + max_codebook_size > kMaxIdSpace)
    throw InvalidIds("initial_vocab_size + max_codebook_size must be < 2**31, got " +
                     std::to_string(initial_vocab_size + max_codebook_size));
  vocab_size = static_cast<Id>(initial_vocab_size);
  codebook_size = static_cast<Id>(max_codebook_size);
  // Longer entries than the id space can never be built; clamping keeps the int32 maths safe.
  this->max_subtokens = static_cast<Id>(std::min<int64_t>(max_subtokens, kMaxIdSpace));
  is_disabled.assign(vocab_size, 0);
  for (size_t i = 0; i < disabled_ids.size(); ++i) {
    const Id id = disabled_ids[i];
    if (id < 0 || id >= vocab_size)
      throw InvalidIds("disabled id " + std::to_string(id) + " at position " + std::to_string(i) +
                       " is not a base token id (expected 0 <= id < " +
                       std::to_string(vocab_size) + ")");
    is_disabled[id] = 1;
  }
}

namespace {

void check_base_ids(const Config& config, const Id* ids, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (ids[i] < 0 || ids[i] >= config.vocab_size) fail_encode(ids[i], i, config);
}

// LZW over base ids (checked by the caller): calls emit(id, number of base ids it stands for)
// for each output id in order, and stops as soon as emit returns false. Returns whether it ran
// to the end.
template <class Emit>
bool encode_each(const Config& config, const Id* ids, size_t n, Emit emit) {
  thread_local TrieTable trie;
  const Id vocab = config.vocab_size;
  const Id end_id = config.end_id();
  const Id max_len = config.max_subtokens;
  // At most one entry per input id, so the table is sized by the input, not by C.
  trie.reset(std::min<size_t>(n, static_cast<size_t>(config.codebook_size)));

  Id next_id = vocab;
  Id code = -1;  // code of the buffer; -1: empty
  Id length = 0;
  for (size_t i = 0; i < n; ++i) {
    const Id token = ids[i];
    if (config.is_disabled[token]) {
      if (code >= 0 && !emit(code, length)) return false;
      if (!emit(token, 1)) return false;
      code = -1;
      length = 0;
      continue;
    }
    if (code < 0) {
      code = token;
      length = 1;
    } else {
      const Id child = trie.find(code, token);
      if (child >= 0) {
        code = child;
        ++length;
      } else {
        if (next_id < end_id) trie.insert(code, token, next_id++);
        if (!emit(code, length)) return false;
        code = token;
        length = 1;
      }
    }
    if (length == max_len) {
      if (!emit(code, length)) return false;
      code = -1;
      length = 0;
    }
  }
  return code < 0 || emit(code, length);
}

}  // namespace

void encode(const Config& config, const Id* ids, size_t n, std::vector<Id>& out) {
  check_base_ids(config, ids, n);
  out.reserve(out.size() + n);
  encode_each(config, ids, n, [&](Id id, Id) {
    out.push_back(id);
    return true;
  });
}

size_t fitting_suffix_start(const Config& config, const Id* ids, size_t n, size_t max_length) {
  check_base_ids(config, ids, n);
  if (n <= max_length) return 0;
  // Compressed length is not monotone in the suffix length, so every start is tried, longest
  // suffix first. An output id stands for at most M base ids: no suffix longer than
  // M * max_length fits, and an encode stops once the ids it emitted plus the fewest that can
  // cover the rest exceed max_length.
  const size_t max_len = static_cast<size_t>(config.max_subtokens);
  const size_t shortest = n - max_length;  // max_length base ids always fit
  const size_t longest = max_length > n / max_len ? n : max_len * max_length;
  for (size_t start = n - longest; start < shortest; ++start) {
    const size_t total = n - start;
    size_t emitted = 0, covered = 0;
    const bool fits = encode_each(config, ids + start, total, [&](Id, Id length) {
      ++emitted;
      covered += static_cast<size_t>(length);
      return emitted + (total - covered + max_len - 1) / max_len <= max_length;
    });
    if (fits) return start;
  }
  return shortest;
}

// ---------------------------------------------------------------------------------------------
// EntryTable

void EntryTable::reset(size_t entries) {
  capacity_ = power_of_two_at_least(2 * entries + 1);
  if (slots_.size() < capacity_) slots_.resize(capacity_);
  clear();
}

void EntryTable::clear() {
  std::fill(slots_.begin(), slots_.begin() + capacity_, Slot{0, -1});
  used_ = 0;
}

size_t EntryTable::probe(uint64_t hash, const Id* content, size_t len, const std::vector<Id>& tokens,
                         const std::vector<uint32_t>& offsets) const {
  const size_t mask = capacity_ - 1;
  for (size_t i = mix(hash) & mask;; i = (i + 1) & mask) {
    const Slot& slot = slots_[i];
    if (slot.entry < 0) return i;
    if (slot.hash != hash) continue;
    const uint32_t begin = offsets[slot.entry];
    const uint32_t end = offsets[slot.entry + 1];
    if (end - begin == len && std::equal(content, content + len, tokens.begin() + begin)) return i;
  }
}

Id EntryTable::find(uint64_t hash, const Id* content, size_t len, const std::vector<Id>& tokens,
                    const std::vector<uint32_t>& offsets) const {
  if (capacity_ == 0) return -1;
  return slots_[probe(hash, content, len, tokens, offsets)].entry;
}

Id EntryTable::find_or_insert(uint64_t hash, const Id* content, size_t len, Id new_entry,
                              const std::vector<Id>& tokens, const std::vector<uint32_t>& offsets) {
  if (2 * (used_ + 1) > capacity_) grow();
  Slot& slot = slots_[probe(hash, content, len, tokens, offsets)];
  if (slot.entry >= 0) return slot.entry;
  slot = Slot{hash, new_entry};
  ++used_;
  return -1;
}

void EntryTable::erase(Id entry, uint64_t hash) {
  const size_t mask = capacity_ - 1;
  size_t hole = mix(hash) & mask;
  while (slots_[hole].entry != entry) hole = (hole + 1) & mask;
  // Moves back each later slot of the run that could not be found past the hole once it is empty.
  for (size_t next = (hole + 1) & mask; slots_[next].entry >= 0; next = (next + 1) & mask) {
    const size_t home = mix(slots_[next].hash) & mask;
    const bool home_after_hole = hole <= next ? (hole < home && home <= next) : (hole < home || home <= next);
    if (!home_after_hole) {
      slots_[hole] = slots_[next];
      hole = next;
    }
  }
  slots_[hole] = Slot{0, -1};
  --used_;
}

void EntryTable::grow() {
  const std::vector<Slot> old(slots_.begin(), slots_.begin() + capacity_);
  reset(capacity_ / 2 + 1);  // reset() sizes for 2 * entries + 1: twice the slots
  const size_t mask = capacity_ - 1;
  for (const Slot& slot : old) {
    if (slot.entry < 0) continue;
    size_t i = mix(slot.hash) & mask;
    while (slots_[i].entry >= 0) i = (i + 1) & mask;
    slots_[i] = slot;
    ++used_;
  }
}

// ---------------------------------------------------------------------------------------------
// Decoder

Decoder::Decoder(const Config& config, size_t expected_ids) { restart(config, expected_ids); }

void Decoder::restart(const Config& config, size_t expected_ids) {
  config_ = &config;
  position_ = 0;
  clear_buffer();
  // At most one entry per id read, so sizing by the input never over-allocates.
  const size_t entries = std::min<size_t>(expected_ids, config.codebook_size);
  table_.reset(std::max<size_t>(entries, 8));
  tokens_.clear();
  tokens_.reserve(entries * std::min<size_t>(config.max_subtokens, 4));
  offsets_.assign(1, 0);
  offsets_.reserve(entries + 1);
  known_at_.clear();
  known_at_.reserve(entries);
  rewind_.set = false;
  buffer_.reserve(std::min<Id>(config.max_subtokens, 64));
}

void Decoder::fail(const std::string& what, Id id) const {
  throw InvalidIds("id " + std::to_string(id) + " at position " + std::to_string(position_) +
                   " " + what);
}

void Decoder::clear_buffer() {
  buffer_.clear();
  buffer_hash_ = kHashSeed;
}

void Decoder::set_buffer(const Id* begin, const Id* end) {
  buffer_.assign(begin, end);
  buffer_hash_ = hash_content(begin, end);
}

void Decoder::push_buffer(Id token) {
  buffer_.push_back(token);
  buffer_hash_ = hash_append(buffer_hash_, token);
}

bool Decoder::add_buffer_if_new(std::vector<Id>* created) {
  const Id index = num_entries();
  if (table_.find_or_insert(buffer_hash_, buffer_.data(), buffer_.size(), index, tokens_, offsets_) >= 0)
    return false;
  tokens_.insert(tokens_.end(), buffer_.begin(), buffer_.end());
  offsets_.push_back(static_cast<uint32_t>(tokens_.size()));
  known_at_.push_back(static_cast<int64_t>(position_));
  if (created) created->push_back(config_->vocab_size + index);
  return true;
}

void Decoder::step(Id id, std::vector<Id>* out, std::vector<Id>* created) {
  const Config& config = *config_;
  const Id vocab = config.vocab_size;
  const size_t max_len = static_cast<size_t>(config.max_subtokens);
  if (id >= 0 && config.disabled(id)) {
    clear_buffer();
    if (out) out->push_back(id);
    return;
  }
  if (id < 0 || id >= config.end_id())
    fail("is out of range (expected 0 <= id < " + std::to_string(config.end_id()) + ")", id);

  const Id next_id = vocab + num_entries();
  const Id* begin;
  const Id* end;
  if (id < vocab) {
    begin = &id;
    end = begin + 1;
  } else if (id < next_id) {
    // This step adds at most buffer + expansion ids to tokens_: reserve first so that the
    // expansion, read in place from tokens_, is not moved under us.
    const size_t size = entry_size(id - vocab);
    if (tokens_.capacity() - tokens_.size() < buffer_.size() + size)
      tokens_.reserve(2 * tokens_.capacity() + buffer_.size() + size);
    begin = entry(id - vocab);
    end = begin + size;
  } else {
    // The only undefined id a valid stream can hold is the entry this very id creates
    // (LZW's KwKwK case): the previous expansion plus its own first token.
    if (id != next_id)
      fail("is not a defined hypertoken (the next id to be defined is " +
               std::to_string(next_id) + ")",
           id);
    if (buffer_.empty())
      fail("is not a defined hypertoken and cannot be defined here: no previous token to "
           "extend (start of stream or after a disabled id)",
           id);
    if (buffer_.size() >= max_len)
      fail("is not a defined hypertoken and cannot be defined here: the previous token "
           "already holds max_subtokens base ids",
           id);
    push_buffer(buffer_.front());
    if (!add_buffer_if_new(created)) {
      buffer_.pop_back();
      buffer_hash_ = hash_content(buffer_.data(), buffer_.data() + buffer_.size());
      fail("is not a defined hypertoken: the entry it would define already exists", id);
    }
    if (out) out->insert(out->end(), buffer_.begin(), buffer_.end());
    return;
  }
  if (out) out->insert(out->end(), begin, end);

  // Replay the encoder over the decoded ids to create the entry the encoder made here.
  if (num_entries() == config.codebook_size) {
    clear_buffer();
    return;
  }
  if (buffer_.empty() || buffer_.size() == max_len) {
    set_buffer(begin, end);
    return;
  }
  for (const Id* p = begin; p != end; ++p) {
    push_buffer(*p);
    if (add_buffer_if_new(created)) {
      set_buffer(p, end);
      return;
    }
    if (buffer_.size() == max_len) {
      set_buffer(p + 1, end);
      return;
    }
  }
}

bool Decoder::candidate(std::vector<Id>& content) const {
  const Config& config = *config_;
  if (buffer_.empty() || buffer_.size() >= static_cast<size_t>(config.max_subtokens) ||
      num_entries() >= config.codebook_size)
    return false;
  content.assign(buffer_.begin(), buffer_.end());
  content.push_back(buffer_.front());
  const uint64_t hash = hash_append(buffer_hash_, buffer_.front());
  return table_.find(hash, content.data(), content.size(), tokens_, offsets_) < 0;
}

void Decoder::truncate_entries(Id count) {
  for (Id i = num_entries() - 1; i >= count; --i) table_.erase(i, hash_content(entry(i), entry(i) + entry_size(i)));
  tokens_.resize(offsets_[count]);
  offsets_.resize(count + 1);
  known_at_.resize(count);
}

void Decoder::set_rewind_point() {
  rewind_.set = true;
  rewind_.position = position_;
  rewind_.num_entries = num_entries();
  rewind_.buffer = buffer_;
  rewind_.buffer_hash = buffer_hash_;
}

bool Decoder::rewind_to(size_t position) {
  if (!rewind_.set || rewind_.position > position || rewind_.position > position_) return false;
  position_ = rewind_.position;
  buffer_ = rewind_.buffer;
  buffer_hash_ = rewind_.buffer_hash;
  if (num_entries() != rewind_.num_entries) truncate_entries(rewind_.num_entries);
  return true;
}

void Decoder::encode_continuation(const Id* base, size_t n, size_t max_ids, std::vector<Id>& out) {
  const Config& config = *config_;
  const size_t max_len = static_cast<size_t>(config.max_subtokens);
  const RewindPoint saved = rewind_;
  set_rewind_point();
  std::vector<Id> candidate_content;
  for (size_t p = 0, emitted = 0; p < n && emitted < max_ids; ++emitted) {
    Id id = base[p];
    size_t length = 1;
    if (id >= 0 && id < config.vocab_size && !config.disabled(id)) {
      const bool has_candidate = candidate(candidate_content);
      for (size_t l = 2; l <= max_len && p + l <= n; ++l) {
        const Id found = table_.find(hash_content(base + p, base + p + l), base + p, l, tokens_, offsets_);
        if (found >= 0) {
          id = config.vocab_size + found;
        } else if (has_candidate && candidate_content.size() == l &&
                   std::equal(candidate_content.begin(), candidate_content.end(), base + p)) {
          id = config.vocab_size + num_entries();
        } else {
          break;
        }
        length = l;
      }
    }
    try {
      step(id, nullptr, nullptr);
    } catch (const InvalidIds&) {
      break;  // an id outside the base vocabulary: nothing more to emit
    }
    ++position_;
    out.push_back(id);
    p += length;
  }
  rewind_to(rewind_.position);
  rewind_ = saved;
}

void Decoder::feed(const Id* ids, size_t n, std::vector<Id>* out, std::vector<Id>* created) {
  if (n == 1) {  // step() checks an id before changing anything: one id needs no snapshot
    step(ids[0], out, created);
    ++position_;
    return;
  }
  const size_t start_position = position_;
  const Id start_entries = num_entries();
  saved_buffer_ = buffer_;
  const uint64_t start_hash = buffer_hash_;
  const size_t start_out = out ? out->size() : 0;
  const size_t start_created = created ? created->size() : 0;
  try {
    for (size_t i = 0; i < n; ++i, ++position_) step(ids[i], out, created);
  } catch (const InvalidIds&) {
    position_ = start_position;
    buffer_ = saved_buffer_;
    buffer_hash_ = start_hash;
    if (num_entries() != start_entries) truncate_entries(start_entries);
    if (out) out->resize(start_out);
    if (created) created->resize(start_created);
    throw;
  }
}

}  // namespace z2z
