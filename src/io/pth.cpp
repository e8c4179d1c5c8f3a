// PyTorch `torch.save` checkpoints (BlinkDL's official RWKV `.pth`): a ZIP archive of stored
// entries holding `<prefix>/data.pkl`, a pickle of the state dict, and one raw little-endian
// storage per tensor under `<prefix>/data/<key>`. Tensors point into the mapped file.
//
// The pickle is read by a deliberately restricted unpickler. A pickle is a program: its GLOBAL
// and REDUCE opcodes import and call arbitrary Python functions, which is how a malicious
// checkpoint runs code under torch.load. This one only builds inert values: it knows the few
// opcodes a state dict uses, accepts only the globals a state dict names (OrderedDict, the tensor
// rebuild helpers, storage types), imports and calls nothing, never recurses, and bounds its
// stack, memo and object count. Every length and offset is checked before it is used.
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <deque>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "io/readers.h"
#include "rwkv/error.h"

namespace rwkv {

namespace {

constexpr size_t kMaxStack = size_t(1) << 20;
constexpr size_t kMaxObjects = size_t(1) << 22;  // a 10k-tensor state dict needs ~200k

// Names come from the file: keep error messages on one printable, bounded line.
std::string printable(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i == 200) return out + "...";
    unsigned char c = s[i];
    if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += char(c);
    }
  }
  return out;
}

uint64_t le(const uint8_t* p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// ---------------------------------------------------------------------------------------------
// ZIP

struct ZipEntry {
  uint64_t offset = 0;  // of the entry's data in the file
  uint64_t size = 0;
};

class ZipReader {
 public:
  ZipReader(std::span<const uint8_t> file, const std::string& path)
      : d_(file.data()), size_(file.size()), path_(path) {
    uint64_t eocd = find_eocd();
    uint64_t count = le(d_ + eocd + 10, 2);
    uint64_t cd_size = le(d_ + eocd + 12, 4);
    uint64_t cd_offset = le(d_ + eocd + 16, 4);
    if (eocd >= 20 && le(d_ + eocd - 20, 4) == 0x07064b50) {
      // ZIP64 end of central directory locator, then the record it points to.
      uint64_t z = le(d_ + eocd - 20 + 8, 8);
      if (z > eocd - 20 || eocd - 20 - z < 56)
        fail("zip64 end of central directory record points outside the file");
      if (le(d_ + z, 4) != 0x06064b50) fail("bad zip64 end of central directory signature");
      count = le(d_ + z + 32, 8);
      cd_size = le(d_ + z + 40, 8);
      cd_offset = le(d_ + z + 48, 8);
    }
    if (cd_offset > eocd || cd_size > eocd - cd_offset)
      fail("zip central directory points outside the file");
    if (count > cd_size / 46)
      fail("zip central directory is truncated (" + std::to_string(count) +
           " entries cannot fit in " + std::to_string(cd_size) + " bytes)");
    uint64_t pos = cd_offset, end = cd_offset + cd_size;
    for (uint64_t i = 0; i < count; ++i) pos = read_central_entry(pos, end, i);
  }

  const ZipEntry* find(const std::string& name) const {
    auto it = entries_.find(name);
    return it == entries_.end() ? nullptr : &it->second;
  }
  const std::vector<std::string>& names() const { return names_; }

 private:
  [[noreturn]] void fail(const std::string& what) const { throw Error(path_ + ": " + what); }

  uint64_t find_eocd() const {
    if (size_ < 22) fail("too small to be a zip archive (a .pth file is one)");
    // The record is 22 bytes plus a comment of at most 65535 bytes, at the very end.
    uint64_t lowest = size_ - 22 > 65535 ? size_ - 22 - 65535 : 0;
    for (uint64_t p = size_ - 22 + 1; p-- > lowest;)
      if (le(d_ + p, 4) == 0x06054b50 && p + 22 + le(d_ + p + 20, 2) == size_) return p;
    fail("no zip end of central directory record (not a zip archive, or truncated)");
  }

  uint64_t read_central_entry(uint64_t pos, uint64_t end, uint64_t index) {
    std::string where = "zip central directory entry " + std::to_string(index);
    if (end - pos < 46) fail(where + " is truncated");
    const uint8_t* q = d_ + pos;
    if (le(q, 4) != 0x02014b50) fail(where + " has a bad signature");
    uint64_t flags = le(q + 8, 2), method = le(q + 10, 2);
    uint64_t csize = le(q + 20, 4), usize = le(q + 24, 4);
    uint64_t name_len = le(q + 28, 2), extra_len = le(q + 30, 2), comment_len = le(q + 32, 2);
    uint64_t local = le(q + 42, 4);
    uint64_t total = 46 + name_len + extra_len + comment_len;
    if (total > end - pos) fail(where + " is truncated");
    std::string name(reinterpret_cast<const char*>(q + 46), name_len);
    std::string entry = "zip entry " + printable(name);

    // ZIP64 extra field: 64-bit values for exactly those fields saturated to 0xffffffff.
    const uint8_t* x = q + 46 + name_len;
    for (uint64_t xp = 0; xp + 4 <= extra_len;) {
      uint64_t id = le(x + xp, 2), len = le(x + xp + 2, 2);
      if (len > extra_len - xp - 4) fail(entry + " has a truncated extra field");
      if (id == 1) {
        uint64_t fp = xp + 4, fend = xp + 4 + len;
        for (uint64_t* field : {&usize, &csize, &local}) {
          if (*field != 0xffffffff) continue;
          if (fend - fp < 8) fail(entry + " has a truncated zip64 extra field");
          *field = le(x + fp, 8);
          fp += 8;
        }
      }
      xp += 4 + len;
    }

    if (method != 0)
      fail(entry + " is compressed (method " + std::to_string(method) +
           "); torch.save writes stored entries");
    if (flags & 1) fail(entry + " is encrypted");
    if (csize != usize)
      fail(entry + " is stored but its compressed size " + std::to_string(csize) +
           " differs from its size " + std::to_string(usize));
    if (local > size_ || size_ - local < 30) fail(entry + " points outside the file");
    if (le(d_ + local, 4) != 0x04034b50) fail(entry + " has a bad local header signature");
    uint64_t data = local + 30 + le(d_ + local + 26, 2) + le(d_ + local + 28, 2);
    if (data > size_ || csize > size_ - data) fail(entry + " points outside the file");
    if (!entries_.emplace(name, ZipEntry{data, csize}).second)
      fail("duplicate " + entry + " in the zip archive");
    names_.push_back(name);
    return pos + total;
  }

  const uint8_t* d_;
  uint64_t size_;
  const std::string& path_;
  std::unordered_map<std::string, ZipEntry> entries_;
  std::vector<std::string> names_;
};

// ---------------------------------------------------------------------------------------------
// Pickle values

enum class Kind : uint8_t {
  None,
  Bool,
  Int,
  Float,
  Str,
  Tuple,
  List,
  Dict,
  Global,
  Storage,
  Tensor
};
enum class Callable : uint8_t { OrderedDict, RebuildTensor, RebuildParameter, StorageType };

const char* kind_name(Kind k) {
  static const char* const names[] = {"None", "bool", "int",    "float",   "str",   "tuple",
                                      "list", "dict", "global", "storage", "tensor"};
  return names[int(k)];
}

struct StorageInfo {
  std::string type;            // "torch.FloatStorage"
  std::optional<DType> dtype;  // nullopt for a storage type this engine cannot use
  std::string key;
  const ZipEntry* entry = nullptr;
  int64_t numel = 0;
};

struct TensorInfo {
  const StorageInfo* storage = nullptr;
  int64_t offset = 0;
  std::vector<int64_t> size, stride;
};

struct Obj {
  Kind kind = Kind::None;
  Callable callable = Callable::OrderedDict;  // Global
  bool ordered = false;                       // Dict made by OrderedDict()
  int64_t i = 0;                              // Int, Bool
  double f = 0;                               // Float
  std::string s;                              // Str; Global: "module.name"
  std::vector<Obj*> items;                    // Tuple, List; Dict: key, value, key, value, ...
  std::optional<DType> dtype;                 // Global StorageType
  const StorageInfo* storage = nullptr;
  const TensorInfo* tensor = nullptr;
};

class Unpickler {
 public:
  Unpickler(std::span<const uint8_t> pickle, const ZipReader& zip, std::string prefix,
            const std::string& path)
      : p_(pickle.data()), n_(pickle.size()), zip_(zip), prefix_(std::move(prefix)), path_(path) {}

  // Runs the pickle to its STOP opcode and returns the value it built.
  Obj* run() {
    none_ = make(Kind::None);
    bool_[0] = make(Kind::Bool);
    bool_[1] = make(Kind::Bool);
    bool_[1]->i = 1;
    empty_tuple_ = make(Kind::Tuple);
    while (true) {
      if (pos_ >= n_) fail("data.pkl ends without a STOP opcode (truncated?)");
      op_at_ = pos_;
      uint8_t op = p_[pos_++];
      switch (op) {
        case 0x80: {  // PROTO
          uint64_t v = take(1);
          if (v < 2 || v > 5) fail("data.pkl uses pickle protocol " + std::to_string(v));
          break;
        }
        case 0x95:
          take(8);
          break;  // FRAME: a hint for buffered readers
        case '.':
          return pop();  // STOP
        case '(':        // MARK
          if (marks_.size() >= kMaxStack) fail("data.pkl nests too many MARKs");
          marks_.push_back(stack_.size());
          break;
        case '}':
          push(make(Kind::Dict));
          break;
        case ']':
          push(make(Kind::List));
          break;
        case ')':
          push(empty_tuple_);
          break;
        case 't':
          push(tuple(pop_mark()));
          break;
        case 0x85:
        case 0x86:
        case 0x87: {  // TUPLE1, TUPLE2, TUPLE3
          size_t k = op - 0x84;
          if (stack_.size() < floor() + k) fail(underflow());
          std::vector<Obj*> items(stack_.end() - k, stack_.end());
          stack_.resize(stack_.size() - k);
          push(tuple(std::move(items)));
          break;
        }
        case 'X':
          push_str(take(4));
          break;  // BINUNICODE
        case 0x8c:
          push_str(take(1));
          break;  // SHORT_BINUNICODE
        case 0x8d:
          push_str(take(8));
          break;  // BINUNICODE8
        case 'J':
          push_int(int32_t(uint32_t(take(4))));
          break;  // BININT
        case 'K':
          push_int(int64_t(take(1)));
          break;  // BININT1
        case 'M':
          push_int(int64_t(take(2)));
          break;      // BININT2
        case 0x8a: {  // LONG1
          uint64_t k = take(1);
          if (k > 8) fail("data.pkl has an integer too large for 64 bits" + at());
          uint64_t v = take(int(k));
          if (k > 0 && k < 8 && (v >> (8 * k - 1)) & 1) v |= ~uint64_t(0) << (8 * k);
          push_int(int64_t(v));
          break;
        }
        case 'N':
          push(none_);
          break;
        case 0x88:
          push(bool_[1]);
          break;
        case 0x89:
          push(bool_[0]);
          break;
        case 'G': {  // BINFLOAT: big-endian double
          need(8);
          uint64_t bits = 0;
          for (int i = 0; i < 8; ++i) bits = (bits << 8) | p_[pos_ + i];
          pos_ += 8;
          Obj* o = make(Kind::Float);
          std::memcpy(&o->f, &bits, 8);
          push(o);
          break;
        }
        case 'q':
          memo_put(take(1));
          break;  // BINPUT
        case 'r':
          memo_put(take(4));
          break;  // LONG_BINPUT
        case 0x94:
          memo_put(memo_.size());
          break;  // MEMOIZE
        case 'h':
          push(memo_get(take(1)));
          break;  // BINGET
        case 'j':
          push(memo_get(take(4)));
          break;     // LONG_BINGET
        case 'c': {  // GLOBAL
          std::string module = line();
          std::string name = line();
          push(global(module, name));
          break;
        }
        case 0x93: {  // STACK_GLOBAL
          Obj* name = pop();
          Obj* module = pop();
          if (module->kind != Kind::Str || name->kind != Kind::Str)
            fail("data.pkl STACK_GLOBAL needs two strings" + at());
          push(global(module->s, name->s));
          break;
        }
        case 'Q':
          push(persistent_load(pop()));
          break;     // BINPERSID
        case 'R': {  // REDUCE
          Obj* args = pop();
          Obj* fn = pop();
          push(reduce(fn, args));
          break;
        }
        case 'b': {  // BUILD: only the state of an OrderedDict (a state dict's _metadata)
          pop();
          if (top()->kind != Kind::Dict || !top()->ordered)
            fail("data.pkl BUILD on a " + std::string(kind_name(top()->kind)) +
                 "; only an OrderedDict's state is accepted" + at());
          break;
        }
        case 's': {  // SETITEM
          Obj* value = pop();
          Obj* key = pop();
          Obj* d = target(Kind::Dict);
          d->items.push_back(key);
          d->items.push_back(value);
          break;
        }
        case 'u': {  // SETITEMS
          std::vector<Obj*> items = pop_mark();
          if (items.size() % 2) fail("data.pkl SETITEMS with an odd number of items" + at());
          Obj* d = target(Kind::Dict);
          d->items.insert(d->items.end(), items.begin(), items.end());
          break;
        }
        case 'a': {  // APPEND
          Obj* value = pop();
          target(Kind::List)->items.push_back(value);
          break;
        }
        case 'e': {  // APPENDS
          std::vector<Obj*> items = pop_mark();
          Obj* l = target(Kind::List);
          l->items.insert(l->items.end(), items.begin(), items.end());
          break;
        }
        default: {
          char buf[8];
          std::snprintf(buf, sizeof buf, "0x%02x", op);
          fail(std::string("data.pkl uses pickle opcode ") + buf + at() +
               ", which a state dict never needs; refusing to load");
        }
      }
    }
  }

  [[noreturn]] void fail(const std::string& what) const { throw Error(path_ + ": " + what); }

 private:
  std::string at() const { return " at offset " + std::to_string(op_at_); }
  std::string underflow() const { return "data.pkl pops an empty stack" + at(); }

  void need(uint64_t k) const {
    if (k > n_ - pos_) fail("data.pkl is truncated" + at());
  }
  uint64_t take(int k) {
    need(uint64_t(k));
    uint64_t v = le(p_ + pos_, k);
    pos_ += k;
    return v;
  }
  std::string line() {
    const void* nl = std::memchr(p_ + pos_, '\n', n_ - pos_);
    if (!nl) fail("data.pkl has an unterminated GLOBAL" + at());
    size_t len = static_cast<const uint8_t*>(nl) - (p_ + pos_);
    std::string s(reinterpret_cast<const char*>(p_ + pos_), len);
    pos_ += len + 1;
    return s;
  }

  Obj* make(Kind kind) {
    if (objects_.size() >= kMaxObjects) fail("data.pkl builds too many objects");
    objects_.emplace_back();
    objects_.back().kind = kind;
    return &objects_.back();
  }
  Obj* tuple(std::vector<Obj*> items) {
    if (items.empty()) return empty_tuple_;
    Obj* o = make(Kind::Tuple);
    o->items = std::move(items);
    return o;
  }
  void push_str(uint64_t len) {
    need(len);
    Obj* o = make(Kind::Str);
    o->s.assign(reinterpret_cast<const char*>(p_ + pos_), len);
    pos_ += len;
    push(o);
  }
  void push_int(int64_t v) {
    Obj* o = make(Kind::Int);
    o->i = v;
    push(o);
  }

  // Items above the innermost MARK belong to it; pops never reach below it (as in CPython).
  size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
  void push(Obj* o) {
    if (stack_.size() >= kMaxStack) fail("data.pkl overflows the unpickler's stack" + at());
    stack_.push_back(o);
  }
  Obj* pop() {
    if (stack_.size() <= floor()) fail(underflow());
    Obj* o = stack_.back();
    stack_.pop_back();
    return o;
  }
  Obj* top() const {
    if (stack_.size() <= floor()) fail(underflow());
    return stack_.back();
  }
  std::vector<Obj*> pop_mark() {
    if (marks_.empty()) fail("data.pkl has no MARK to pop to" + at());
    std::vector<Obj*> items(stack_.begin() + marks_.back(), stack_.end());
    stack_.resize(marks_.back());
    marks_.pop_back();
    return items;
  }
  Obj* target(Kind kind) const {
    Obj* t = top();
    if (t->kind != kind) fail("data.pkl adds items to a " + std::string(kind_name(t->kind)) + at());
    return t;
  }

  void memo_put(uint64_t index) {
    Obj* o = top();
    if (memo_.size() >= kMaxObjects && !memo_.count(index)) fail("data.pkl memo is too large");
    memo_[index] = o;
  }
  Obj* memo_get(uint64_t index) const {
    auto it = memo_.find(index);
    if (it == memo_.end())
      fail("data.pkl reads memo slot " + std::to_string(index) + " before setting it" + at());
    return it->second;
  }

  Obj* global(const std::string& module, const std::string& name) {
    Obj* o = make(Kind::Global);
    o->s = module + "." + name;
    if (module == "collections" && name == "OrderedDict") {
      o->callable = Callable::OrderedDict;
    } else if (module == "torch._utils" && name == "_rebuild_tensor_v2") {
      o->callable = Callable::RebuildTensor;
    } else if (module == "torch._utils" && name == "_rebuild_parameter") {
      o->callable = Callable::RebuildParameter;
    } else if (module == "torch" && is_storage_name(name)) {
      // An inert marker naming the element type; calling it is refused in reduce().
      o->callable = Callable::StorageType;
      if (name == "FloatStorage") o->dtype = DType::F32;
      if (name == "HalfStorage") o->dtype = DType::F16;
      if (name == "BFloat16Storage") o->dtype = DType::BF16;
    } else {
      fail("pickle asks for global '" + printable(o->s) +
           "', which a state dict never needs; refusing to load");
    }
    return o;
  }
  static bool is_storage_name(const std::string& name) {
    std::string_view suffix = "Storage";
    if (name.size() <= suffix.size() || !name.ends_with(suffix)) return false;
    for (char c : name)
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') return false;
    return true;
  }

  // ('storage', storage_type, key, location, numel) -> the zip entry `<prefix>data/<key>`.
  Obj* persistent_load(Obj* pid) {
    const std::vector<Obj*>& t = pid->items;
    if (pid->kind != Kind::Tuple || t.size() != 5 || t[0]->kind != Kind::Str ||
        t[0]->s != "storage" || t[1]->kind != Kind::Global ||
        t[1]->callable != Callable::StorageType || t[2]->kind != Kind::Str ||
        t[4]->kind != Kind::Int || t[4]->i < 0)
      fail("data.pkl has a persistent id that is not ('storage', type, key, location, numel)" +
           at());
    StorageInfo& s = storages_.emplace_back();
    s.type = t[1]->s;
    s.dtype = t[1]->dtype;
    s.key = t[2]->s;
    s.numel = t[4]->i;
    std::string entry_name = prefix_ + "data/" + s.key;
    s.entry = zip_.find(entry_name);
    if (!s.entry)
      fail("storage " + printable(s.key) + " has no zip entry " + printable(entry_name));
    if (s.dtype) {
      uint64_t elem = *dtype_bytes(*s.dtype, 1);
      if (uint64_t(s.numel) > s.entry->size / elem)
        fail("storage " + printable(s.key) + " holds " + std::to_string(s.numel) + " " +
             std::string(dtype_name(*s.dtype)) + " elements but its zip entry has only " +
             std::to_string(s.entry->size) + " bytes");
    }
    Obj* o = make(Kind::Storage);
    o->storage = &s;
    return o;
  }

  static bool int_tuple(const Obj* o, std::vector<int64_t>& out) {
    if (o->kind != Kind::Tuple) return false;
    for (const Obj* v : o->items) {
      if (v->kind != Kind::Int) return false;
      out.push_back(v->i);
    }
    return true;
  }

  Obj* reduce(Obj* fn, Obj* args) {
    if (fn->kind != Kind::Global)
      fail("data.pkl calls a " + std::string(kind_name(fn->kind)) + at());
    if (args->kind != Kind::Tuple)
      fail("data.pkl calls " + printable(fn->s) + " with non-tuple arguments" + at());
    const std::vector<Obj*>& a = args->items;
    switch (fn->callable) {
      case Callable::OrderedDict: {
        if (!a.empty()) fail("data.pkl calls collections.OrderedDict with arguments" + at());
        Obj* d = make(Kind::Dict);
        d->ordered = true;
        return d;
      }
      case Callable::RebuildTensor: {
        TensorInfo info;
        if (a.size() < 4 || a[0]->kind != Kind::Storage || a[1]->kind != Kind::Int ||
            !int_tuple(a[2], info.size) || !int_tuple(a[3], info.stride))
          fail("data.pkl calls _rebuild_tensor_v2 without (storage, offset, size, stride)" + at());
        info.storage = a[0]->storage;
        info.offset = a[1]->i;
        Obj* o = make(Kind::Tensor);
        o->tensor = &tensors_.emplace_back(std::move(info));
        return o;
      }
      case Callable::RebuildParameter:
        if (a.empty() || a[0]->kind != Kind::Tensor)
          fail("data.pkl calls _rebuild_parameter without a tensor" + at());
        return a[0];
      case Callable::StorageType:
        break;
    }
    fail("data.pkl calls " + printable(fn->s) + ", which a state dict never does" + at());
  }

  const uint8_t* p_;
  size_t n_;
  size_t pos_ = 0, op_at_ = 0;
  const ZipReader& zip_;
  std::string prefix_;
  const std::string& path_;
  std::deque<Obj> objects_;  // owns every value; pointers stay valid, cycles are harmless
  std::deque<StorageInfo> storages_;
  std::deque<TensorInfo> tensors_;
  std::vector<Obj*> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, Obj*> memo_;
  Obj* none_ = nullptr;
  Obj* bool_[2] = {nullptr, nullptr};
  Obj* empty_tuple_ = nullptr;
};

// ---------------------------------------------------------------------------------------------
// State dict -> TensorMap

// A dict's str keys and values in Python order (a repeated key keeps its first place).
std::vector<std::pair<std::string, const Obj*>> dict_items(const Obj* d, const Unpickler& up) {
  std::vector<std::pair<std::string, const Obj*>> out;
  std::unordered_map<std::string, size_t> index;
  for (size_t i = 0; i + 1 < d->items.size(); i += 2) {
    const Obj* key = d->items[i];
    const Obj* value = d->items[i + 1];
    if (key->kind != Kind::Str) {
      if (value->kind == Kind::Tensor)
        up.fail("data.pkl has a tensor under a " + std::string(kind_name(key->kind)) +
                " key; a state dict's keys are strings");
      continue;
    }
    auto [it, fresh] = index.emplace(key->s, out.size());
    if (fresh) {
      out.emplace_back(key->s, value);
    } else {
      out[it->second].second = value;
    }
  }
  return out;
}

bool has_tensors(const std::vector<std::pair<std::string, const Obj*>>& items) {
  for (const auto& [name, value] : items)
    if (value->kind == Kind::Tensor) return true;
  return false;
}

Tensor make_tensor(const std::string& name, const TensorInfo& t, std::span<const uint8_t> file,
                   const Unpickler& up) {
  const StorageInfo& s = *t.storage;
  std::string what = "tensor " + printable(name);
  if (!s.dtype)
    up.fail(what + " has unsupported dtype " + printable(s.type) +
            " (only float32, float16 and bfloat16 are supported)");
  if (t.size.size() != t.stride.size())
    up.fail(what + " has size " + shape_string(t.size) + " but stride " + shape_string(t.stride));
  int64_t numel = 1;
  for (int64_t d : t.size)
    if (d < 0 || __builtin_mul_overflow(numel, d, &numel))
      up.fail(what + " has an impossible size " + shape_string(t.size));
  if (numel > 0) {
    int64_t expected = 1;
    for (size_t i = t.size.size(); i-- > 0;) {
      if (t.size[i] != 1 && t.stride[i] != expected)
        up.fail(what + " is not contiguous (size " + shape_string(t.size) + ", stride " +
                shape_string(t.stride) + ")");
      expected *= t.size[i];
    }
  }
  if (t.offset < 0 || t.offset > s.numel || numel > s.numel - t.offset)
    up.fail(what + " (offset " + std::to_string(t.offset) + ", " + std::to_string(numel) +
            " elements) runs past the end of storage " + printable(s.key) + " (" +
            std::to_string(s.numel) + " elements)");
  uint64_t elem = *dtype_bytes(*s.dtype, 1);
  Tensor out;
  out.dtype = *s.dtype;
  out.shape = t.size;
  out.data = file.data() + s.entry->offset + uint64_t(t.offset) * elem;
  out.nbytes = uint64_t(numel) * elem;
  return out;
}

}  // namespace

TensorMap read_pth(const Bytes& file, const std::string& path) {
  ZipReader zip(file.data, path);
  auto fail = [&](const std::string& what) { throw Error(path + ": " + what); };

  // torch.save names every entry `<archive name>/...`; data.pkl sits directly under it.
  std::string prefix;
  int found = 0;
  for (const std::string& name : zip.names()) {
    if (!name.ends_with("data.pkl")) continue;
    std::string_view dir = std::string_view(name).substr(0, name.size() - 8);
    if (dir.empty() || (dir.back() == '/' && dir.find('/') == dir.size() - 1)) {
      prefix = std::string(dir);
      ++found;
    }
  }
  if (found == 0) fail("zip archive has no data.pkl entry (not a torch.save checkpoint)");
  if (found > 1) fail("zip archive has several data.pkl entries");

  if (const ZipEntry* bo = zip.find(prefix + "byteorder")) {
    std::string order(reinterpret_cast<const char*>(file.data.data() + bo->offset),
                      std::min<uint64_t>(bo->size, 64));
    while (!order.empty() && (order.back() == '\n' || order.back() == '\r')) order.pop_back();
    if (order != "little")
      fail("checkpoint was saved with byteorder '" + printable(order) +
           "'; only little-endian checkpoints are supported");
  }

  const ZipEntry* pkl = zip.find(prefix + "data.pkl");
  Unpickler up(file.data.subspan(pkl->offset, pkl->size), zip, prefix, path);
  const Obj* root = up.run();
  if (root->kind != Kind::Dict)
    fail(std::string("data.pkl holds a ") + kind_name(root->kind) + ", not a dict of tensors");

  auto items = dict_items(root, up);
  if (!has_tensors(items)) {
    // A training checkpoint may wrap the state dict: {'state_dict': {...}, 'epoch': 3}.
    std::vector<std::pair<std::string, const Obj*>> inner;
    std::string keys;
    int wrapped = 0;
    for (const auto& [name, value] : items) {
      if (value->kind != Kind::Dict) continue;
      auto sub = dict_items(value, up);
      if (!has_tensors(sub)) continue;
      keys += (keys.empty() ? "'" : ", '") + printable(name) + "'";
      if (wrapped++ == 0) inner = std::move(sub);
    }
    if (wrapped == 0) fail("data.pkl holds no tensors");
    if (wrapped > 1)
      fail("data.pkl wraps several dicts of tensors (" + keys + "); cannot tell which to load");
    items = std::move(inner);
  }

  TensorMap map;
  map.path = path;
  map.format = "pth";
  for (const auto& [name, value] : items)
    if (value->kind == Kind::Tensor)
      map.add(name, make_tensor(name, *value->tensor, file.data, up));
  map.keep_alive(file);
  return map;
}

}  // namespace rwkv
