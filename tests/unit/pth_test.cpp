// Tests for the PyTorch .pth reader: the reference checkpoints in ../shared, and small zips and
// pickles built here byte by byte to check each refusal (unsafe globals, unknown opcodes,
// compressed or out-of-range entries, short storages, strided tensors) and its message.
#include <gmock/gmock.h>

#include <cmath>
#include <map>

#include "core/mapped_file.h"
#include "io/readers.h"
#include "io/tensor_map.h"
#include "rwkv/error.h"
#include "test_util.h"

namespace rwkv {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

const std::string kBadPath = "bad.pth";

// --- a tiny pickle writer -------------------------------------------------------------------

struct Pickle {
  std::string b;
  Pickle& op(uint8_t c) {
    b += char(c);
    return *this;
  }
  Pickle& raw(const std::string& s) {
    b += s;
    return *this;
  }
  Pickle& u32(uint32_t v) {
    for (int i = 0; i < 4; ++i) b += char(v >> (8 * i));
    return *this;
  }
  Pickle& str(const std::string& s) { return op('X').u32(uint32_t(s.size())).raw(s); }
  Pickle& integer(int64_t v) {
    if (v >= 0 && v < 256) return op('K').op(uint8_t(v));
    if (v >= INT32_MIN && v <= INT32_MAX) return op('J').u32(uint32_t(v));
    op(0x8a).op(8);
    for (int i = 0; i < 8; ++i) b += char(uint64_t(v) >> (8 * i));
    return *this;
  }
  Pickle& global(const std::string& module, const std::string& name) {
    return op('c').raw(module + "\n" + name + "\n");
  }
  Pickle& ints(const std::vector<int64_t>& v) {
    op('(');
    for (int64_t x : v) integer(x);
    return op('t');
  }
  // _rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict()), as torch writes it.
  Pickle& tensor(const std::string& type, const std::string& key, int64_t numel, int64_t offset,
                 const std::vector<int64_t>& size, const std::vector<int64_t>& stride) {
    global("torch._utils", "_rebuild_tensor_v2").op('(');
    op('(').str("storage").global("torch", type).str(key).str("cpu").integer(numel).op('t');
    op('Q').integer(offset).ints(size).ints(stride).op(0x89);
    global("collections", "OrderedDict").op(')').op('R');
    return op('t').op('R');
  }
  // Contiguous strides for `size`.
  static std::vector<int64_t> strides(const std::vector<int64_t>& size) {
    std::vector<int64_t> s(size.size());
    int64_t n = 1;
    for (size_t i = size.size(); i-- > 0;) s[i] = n, n *= size[i];
    return s;
  }
  Pickle& begin_dict() { return op(0x80).op(2).op('}').op('('); }
  Pickle& end_dict() { return op('u').op('.'); }
};

// --- a tiny stored-zip writer ---------------------------------------------------------------

uint32_t crc32(const std::string& s) {
  uint32_t c = 0xffffffff;
  for (unsigned char ch : s) {
    c ^= ch;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xedb88320 & (0u - (c & 1)));
  }
  return ~c;
}

struct Zip {
  std::vector<uint8_t> bytes;
  std::vector<size_t> local, central;  // where each entry's headers start

  void put(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) bytes.push_back(uint8_t(v >> (8 * i)));
  }
  void set(size_t at, uint64_t v, int n) {
    for (int i = 0; i < n; ++i) bytes[at + i] = uint8_t(v >> (8 * i));
  }
};

// Stored entries; with zip64 every size and offset goes through the ZIP64 records.
Zip make_zip(const std::vector<std::pair<std::string, std::string>>& files, bool zip64 = false) {
  Zip z;
  for (const auto& [name, data] : files) {
    z.local.push_back(z.bytes.size());
    z.put(0x04034b50, 4);
    z.put(20, 2), z.put(0, 2), z.put(0, 2), z.put(0, 4);
    z.put(crc32(data), 4), z.put(data.size(), 4), z.put(data.size(), 4);
    z.put(name.size(), 2), z.put(3, 2);  // 3 bytes of padding extra, as torch aligns data
    z.bytes.insert(z.bytes.end(), name.begin(), name.end());
    z.put(0xcafe, 2), z.put(0, 1);  // junk, but in-bounds extra; only its length matters
    z.bytes.insert(z.bytes.end(), data.begin(), data.end());
  }
  size_t cd = z.bytes.size();
  for (size_t i = 0; i < files.size(); ++i) {
    const auto& [name, data] = files[i];
    z.central.push_back(z.bytes.size());
    z.put(0x02014b50, 4);
    z.put(45, 2), z.put(45, 2), z.put(0, 2), z.put(0, 2), z.put(0, 4);
    z.put(crc32(data), 4);
    z.put(zip64 ? 0xffffffff : data.size(), 4), z.put(zip64 ? 0xffffffff : data.size(), 4);
    z.put(name.size(), 2), z.put(zip64 ? 28 : 0, 2), z.put(0, 2);
    z.put(0, 2), z.put(0, 2), z.put(0, 4);
    z.put(zip64 ? 0xffffffff : z.local[i], 4);
    z.bytes.insert(z.bytes.end(), name.begin(), name.end());
    if (zip64) {
      z.put(1, 2), z.put(24, 2);
      z.put(data.size(), 8), z.put(data.size(), 8), z.put(z.local[i], 8);
    }
  }
  size_t cd_size = z.bytes.size() - cd;
  if (zip64) {
    size_t eocd64 = z.bytes.size();
    z.put(0x06064b50, 4), z.put(44, 8), z.put(45, 2), z.put(45, 2), z.put(0, 4), z.put(0, 4);
    z.put(files.size(), 8), z.put(files.size(), 8), z.put(cd_size, 8), z.put(cd, 8);
    z.put(0x07064b50, 4), z.put(0, 4), z.put(eocd64, 8), z.put(1, 4);
  }
  z.put(0x06054b50, 4), z.put(0, 2), z.put(0, 2);
  z.put(zip64 ? 0xffff : files.size(), 2), z.put(zip64 ? 0xffff : files.size(), 2);
  z.put(zip64 ? 0xffffffff : cd_size, 4), z.put(zip64 ? 0xffffffff : cd, 4), z.put(0, 2);
  return z;
}

std::string floats(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4);
}

// A checkpoint laid out as torch.save does: archive/data.pkl, archive/data/<key>, version.
Zip checkpoint(const Pickle& pkl, const std::map<std::string, std::string>& storages = {},
               bool zip64 = false) {
  std::vector<std::pair<std::string, std::string>> files = {{"archive/data.pkl", pkl.b}};
  for (const auto& [key, data] : storages) files.emplace_back("archive/data/" + key, data);
  files.emplace_back("archive/version", "3\n");
  return make_zip(files, zip64);
}

// A one-tensor state dict {'w': float32 (2, 3)} with values 0..5 in storage '0'.
Pickle one_tensor_pickle(const std::string& type = "FloatStorage", int64_t numel = 6,
                         std::vector<int64_t> stride = {3, 1}) {
  Pickle p;
  p.begin_dict().str("w").tensor(type, "0", numel, 0, {2, 3}, stride).end_dict();
  return p;
}
const std::map<std::string, std::string> kSixFloats = {{"0", floats({0, 1, 2, 3, 4, 5})}};

Bytes bytes_of(std::vector<uint8_t> v) {
  auto owned = std::make_shared<std::vector<uint8_t>>(std::move(v));
  Bytes b;
  b.data = {owned->data(), owned->size()};
  b.owner = owned;
  return b;
}

// The error read_pth raises for `file`, or "" if it reads fine.
std::string read_error(const std::vector<uint8_t>& file) {
  try {
    read_pth(bytes_of(file), kBadPath);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

void expect_error(const std::vector<uint8_t>& file, const std::string& expected) {
  std::string msg = read_error(file);
  EXPECT_EQ(msg.rfind(kBadPath + ": ", 0), 0u) << msg;
  EXPECT_THAT(msg, HasSubstr(expected));
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
}

std::vector<float> values(const Tensor& t) { return to_f32(t); }

// --- the reference checkpoints --------------------------------------------------------------

fs::path models_dir() { return rwkv::test::shared_dir() / "testdata/reference/models"; }

TEST(PthReference, EveryCheckpointLoads) {
  RWKV_REQUIRE_SHARED();
  // Tensor counts as listed by Python's zipfile + pickletools (one BINPERSID per tensor).
  const std::map<std::string, size_t> counts = {
      {"rwkv4", 60}, {"rwkv5v1", 66}, {"rwkv5v2", 72}, {"rwkv6", 90}, {"rwkv7", 105}};
  int files = 0;
  for (const auto& [arch, count] : counts) {
    for (const char* kind : {"fp32", "bf16"}) {
      fs::path path = models_dir() / (arch + "-ref-" + kind + ".pth");
      SCOPED_TRACE(path.string());
      TensorMap m = read_tensor_map(path.string());
      ++files;
      EXPECT_EQ(m.format, "pth");
      EXPECT_EQ(m.path, path.string());
      EXPECT_EQ(m.size(), count);
      DType want = std::string(kind) == "fp32" ? DType::F32 : DType::BF16;
      for (const std::string& name : m.names()) {
        const Tensor& t = m.at(name);
        EXPECT_EQ(t.dtype, want) << name;
        EXPECT_EQ(t.nbytes, uint64_t(t.numel()) * (want == DType::F32 ? 4 : 2)) << name;
      }
      ASSERT_TRUE(m.contains("emb.weight"));
      EXPECT_EQ(m.names().front(), "emb.weight");  // pickle order
      EXPECT_EQ(m.at("emb.weight").shape, (std::vector<int64_t>{512, 128}));
    }
  }
  int on_disk = 0;
  for (const auto& e : fs::directory_iterator(models_dir()))
    on_disk += e.path().extension() == ".pth";
  EXPECT_EQ(files, on_disk) << "a reference .pth is not covered by this test";
}

TEST(PthReference, ShapesAndFirstValues) {
  RWKV_REQUIRE_SHARED();
  TensorMap m = read_tensor_map((models_dir() / "rwkv7-ref-fp32.pth").string());
  EXPECT_EQ(m.at("blocks.0.ln0.weight").shape, (std::vector<int64_t>{128}));
  std::vector<float> emb = values(m.at("emb.weight"));
  // First values as Python's struct.unpack shows them for archive entry data/0.
  EXPECT_FLOAT_EQ(emb[0], 0.17469748854637146f);
  EXPECT_FLOAT_EQ(emb[1], -0.41509494185447693f);
  EXPECT_FLOAT_EQ(emb[7], -0.023259032517671585f);
}

TEST(PthReference, Bf16IsFp32Rounded) {
  RWKV_REQUIRE_SHARED();
  for (const char* arch : {"rwkv4", "rwkv5v1", "rwkv5v2", "rwkv6", "rwkv7"}) {
    SCOPED_TRACE(arch);
    TensorMap f = read_tensor_map((models_dir() / (std::string(arch) + "-ref-fp32.pth")).string());
    TensorMap h = read_tensor_map((models_dir() / (std::string(arch) + "-ref-bf16.pth")).string());
    ASSERT_EQ(f.names(), h.names());
    for (const std::string& name : f.names()) {
      ASSERT_EQ(f.at(name).shape, h.at(name).shape) << name;
      std::vector<float> a = values(f.at(name)), b = values(h.at(name));
      for (size_t i = 0; i < a.size(); ++i)
        ASSERT_LE(std::fabs(a[i] - b[i]), std::ldexp(std::fabs(a[i]), -8) + 1e-30f)
            << name << "[" << i << "]";
    }
  }
}

TEST(PthReference, TruncatedFileIsAnError) {
  RWKV_REQUIRE_SHARED();
  std::vector<uint8_t> whole = rwkv::test::read_bytes(models_dir() / "rwkv4-ref-fp32.pth");
  fs::path path = rwkv::test::temp_dir() / "half.pth";
  rwkv::test::write_bytes(path, {whole.begin(), whole.begin() + whole.size() / 2});
  try {
    read_tensor_map(path.string());
    FAIL() << "a truncated checkpoint loaded";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr(path.string() + ": "));
    EXPECT_THAT(e.what(), HasSubstr("end of central directory"));
  }
  // Cut inside the central directory: the end record is kept but entries are missing.
  std::vector<uint8_t> cut(whole.begin(), whole.end() - 200);
  cut.insert(cut.end(), whole.end() - 22, whole.end());
  EXPECT_NE(read_error(cut), "");
}

// --- hand-built checkpoints -----------------------------------------------------------------

TEST(PthBuilt, OneTensorLoadsInPlace) {
  for (bool zip64 : {false, true}) {
    SCOPED_TRACE(zip64 ? "zip64" : "zip32");
    Bytes file = bytes_of(checkpoint(one_tensor_pickle(), kSixFloats, zip64).bytes);
    TensorMap m = read_pth(file, "x.pth");
    ASSERT_EQ(m.names(), std::vector<std::string>{"w"});
    const Tensor& t = m.at("w");
    EXPECT_EQ(t.dtype, DType::F32);
    EXPECT_EQ(t.shape, (std::vector<int64_t>{2, 3}));
    EXPECT_EQ(values(t), (std::vector<float>{0, 1, 2, 3, 4, 5}));
    EXPECT_GE(t.data, file.data.data());  // zero-copy: points into the file
    EXPECT_LE(t.data + t.nbytes, file.data.data() + file.data.size());
  }
}

TEST(PthBuilt, DtypesOffsetsParametersAndScalars) {
  Pickle p;
  p.begin_dict();
  p.str("half").tensor("HalfStorage", "h", 2, 0, {2}, {1});
  p.str("bf16").tensor("BFloat16Storage", "b", 2, 1, {}, {});  // scalar at storage offset 1
  // A view into the middle of a shared storage.
  p.str("tail").tensor("FloatStorage", "0", 6, 4, {2}, {1});
  // nn.Parameter: _rebuild_parameter(tensor, requires_grad, hooks).
  p.str("param").global("torch._utils", "_rebuild_parameter").op('(');
  p.tensor("FloatStorage", "0", 6, 0, {3, 1}, {1, 5}).op(0x88);
  p.global("collections", "OrderedDict").op(')').op('R').op('t').op('R');
  p.str("epoch").integer(7).str("lr").op('G').raw(std::string("\x3f\xf0\0\0\0\0\0\0", 8));
  p.end_dict();
  std::map<std::string, std::string> storages = kSixFloats;
  storages["h"] = std::string("\x00\x3c\x00\xc0", 4);  // 1.0, -2.0
  storages["b"] = std::string("\x80\x3f\x40\x40", 4);  // 1.0, 3.0
  TensorMap m = read_pth(bytes_of(checkpoint(p, storages).bytes), "x.pth");
  EXPECT_EQ(m.names(), (std::vector<std::string>{"half", "bf16", "tail", "param"}));
  EXPECT_EQ(m.at("half").dtype, DType::F16);
  EXPECT_EQ(values(m.at("half")), (std::vector<float>{1, -2}));
  EXPECT_EQ(m.at("bf16").dtype, DType::BF16);
  EXPECT_TRUE(m.at("bf16").shape.empty());
  EXPECT_EQ(values(m.at("bf16")), (std::vector<float>{3}));
  EXPECT_EQ(values(m.at("tail")), (std::vector<float>{4, 5}));
  EXPECT_EQ(m.at("param").shape, (std::vector<int64_t>{3, 1}));
  EXPECT_EQ(values(m.at("param")), (std::vector<float>{0, 1, 2}));
}

TEST(PthBuilt, UnwrapsOneNestedStateDict) {
  Pickle p;
  p.begin_dict().str("epoch").integer(3).str("state_dict").op('}').op('(');
  p.str("w").tensor("FloatStorage", "0", 6, 0, {6}, {1}).op('u').end_dict();
  TensorMap m = read_pth(bytes_of(checkpoint(p, kSixFloats).bytes), "x.pth");
  EXPECT_EQ(m.names(), std::vector<std::string>{"w"});

  Pickle two;
  two.begin_dict();
  for (const char* key : {"model", "ema"}) {
    two.str(key).op('}').op('(').str("w").tensor("FloatStorage", "0", 6, 0, {6}, {1}).op('u');
  }
  two.end_dict();
  expect_error(checkpoint(two, kSixFloats).bytes, "several dicts of tensors ('model', 'ema')");

  Pickle none;
  none.begin_dict().str("epoch").integer(3).end_dict();
  expect_error(checkpoint(none).bytes, "holds no tensors");
}

TEST(PthBuilt, OrderedDictWithMetadataBuild) {
  // state_dict() is an OrderedDict whose _metadata attribute comes back through BUILD.
  Pickle p;
  p.op(0x80).op(2).global("collections", "OrderedDict").op(')').op('R').op(0x94).op('(');
  p.str("w").tensor("FloatStorage", "0", 6, 0, {6}, {1}).op('u');
  p.op('}').str("_metadata").op('}').op('s').op('b').op('.');
  TensorMap m = read_pth(bytes_of(checkpoint(p, kSixFloats).bytes), "x.pth");
  EXPECT_EQ(m.names(), std::vector<std::string>{"w"});
}

TEST(PthBuilt, RefusesUnsafeGlobals) {
  Pickle p;
  p.op(0x80).op(2).global("os", "system").str("echo pwned").op(0x85).op('R').op('.');
  expect_error(checkpoint(p).bytes, "global 'os.system', which a state dict never needs");

  Pickle inside;  // hidden inside an otherwise ordinary state dict
  inside.begin_dict().str("w").tensor("FloatStorage", "0", 6, 0, {6}, {1});
  inside.str("x").global("builtins", "eval").str("1").op(0x85).op('R').end_dict();
  expect_error(checkpoint(inside, kSixFloats).bytes, "global 'builtins.eval'");

  Pickle stack;  // STACK_GLOBAL
  stack.op(0x80).op(4).op(0x8c).op(5).raw("posix").op(0x8c).op(6).raw("system").op(0x93);
  stack.op('.');
  expect_error(checkpoint(stack).bytes, "global 'posix.system'");

  Pickle call_storage;  // an allowed global is still never called unless a state dict would
  call_storage.op(0x80).op(2).global("torch", "FloatStorage").op(')').op('R').op('.');
  expect_error(checkpoint(call_storage).bytes, "calls torch.FloatStorage");
}

TEST(PthBuilt, RefusesUnknownOpcodes) {
  Pickle p;
  p.op(0x80).op(2).op('}').op('i').raw("os\nsystem\n").op('.');  // INST
  expect_error(checkpoint(p).bytes, "pickle opcode 0x69 at offset 3");
  Pickle q;
  q.op(0x80).op(2).op(0xff).op('.');
  expect_error(checkpoint(q).bytes, "pickle opcode 0xff at offset 2");
}

TEST(PthBuilt, EveryTruncatedPickleIsAnError) {
  const std::string full = one_tensor_pickle().b;
  for (size_t n = 0; n < full.size(); ++n) {
    Pickle p;
    p.b = full.substr(0, n);
    std::string msg = read_error(checkpoint(p, kSixFloats).bytes);
    EXPECT_THAT(msg, HasSubstr("data.pkl")) << "prefix " << n;
  }
}

TEST(PthBuilt, RefusesCompressedEntries) {
  Zip z = checkpoint(one_tensor_pickle(), kSixFloats);
  z.set(z.central[1] + 10, 8, 2);  // deflate
  z.set(z.local[1] + 8, 8, 2);
  expect_error(z.bytes,
               "entry archive/data/0 is compressed (method 8); torch.save writes stored entries");
}

TEST(PthBuilt, RefusesEntriesOutsideTheFile) {
  Zip base = checkpoint(one_tensor_pickle(), kSixFloats);
  Zip z = base;
  z.set(z.central[1] + 42, z.bytes.size() + 100, 4);  // local header offset
  expect_error(z.bytes, "zip entry archive/data/0 points outside the file");

  z = base;
  z.set(z.central[1] + 20, 1 << 30, 4);  // size
  z.set(z.central[1] + 24, 1 << 30, 4);
  expect_error(z.bytes, "zip entry archive/data/0 points outside the file");

  z = base;
  z.set(z.local[1] + 28, 0xffff, 2);  // local extra length runs past the end
  expect_error(z.bytes, "zip entry archive/data/0 points outside the file");

  z = base;
  z.set(z.local[1], 0x12345678, 4);
  expect_error(z.bytes, "zip entry archive/data/0 has a bad local header signature");

  z = base;
  z.set(z.bytes.size() - 6, z.bytes.size(), 4);  // central directory offset
  expect_error(z.bytes, "zip central directory points outside the file");

  expect_error({'P', 'K', 3, 4}, "too small to be a zip archive");
}

TEST(PthBuilt, RefusesShortStorages) {
  expect_error(checkpoint(one_tensor_pickle("FloatStorage", 7), kSixFloats).bytes,
               "storage 0 holds 7 F32 elements but its zip entry has only 24 bytes");
  Pickle p;  // a view running past its storage's end
  p.begin_dict().str("w").tensor("FloatStorage", "0", 6, 4, {3}, {1}).end_dict();
  expect_error(checkpoint(p, kSixFloats).bytes, "tensor w (offset 4, 3 elements) runs past");
  expect_error(checkpoint(one_tensor_pickle(), {}).bytes,
               "storage 0 has no zip entry archive/data/0");
}

TEST(PthBuilt, RefusesStridedTensorsAndOtherDtypes) {
  expect_error(checkpoint(one_tensor_pickle("FloatStorage", 6, {1, 2}), kSixFloats).bytes,
               "tensor w is not contiguous (size (2, 3), stride (1, 2))");
  expect_error(checkpoint(one_tensor_pickle("DoubleStorage", 3), kSixFloats).bytes,
               "tensor w has unsupported dtype torch.DoubleStorage");
}

TEST(PthBuilt, RefusesBigEndianCheckpoints) {
  Zip z = make_zip({{"archive/data.pkl", one_tensor_pickle().b},
                    {"archive/byteorder", "big"},
                    {"archive/data/0", kSixFloats.at("0")}});
  expect_error(z.bytes, "byteorder 'big'");
  z = make_zip({{"archive/data.pkl", one_tensor_pickle().b},
                {"archive/byteorder", "little"},
                {"archive/data/0", kSixFloats.at("0")}});
  EXPECT_EQ(read_error(z.bytes), "");
}

TEST(PthBuilt, CorruptedBytesNeverCrash) {
  const std::vector<uint8_t> good = checkpoint(one_tensor_pickle(), kSixFloats, true).bytes;
  for (size_t i = 0; i < good.size(); ++i) {
    for (uint8_t flip : {0x01, 0x80, 0xff}) {
      std::vector<uint8_t> bad = good;
      bad[i] ^= flip;
      std::string msg = read_error(bad);  // loads or throws rwkv::Error; never crashes
      if (!msg.empty()) {
        EXPECT_EQ(msg.rfind(kBadPath + ": ", 0), 0u) << msg;
      }
    }
  }
  for (size_t n = 0; n < good.size(); ++n)
    EXPECT_NE(read_error({good.begin(), good.begin() + n}), "") << "prefix " << n;
}

}  // namespace
}  // namespace rwkv
